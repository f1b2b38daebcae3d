"""Relative NTK change during classification training against the width, on digits.

Reproduces the dense half of Figs. 3-4 of "Understanding Neural Tangent Kernel": a ReLU MLP
with two hidden layers of width n = 10 .. 1000 (NTK parameterization, W_std = sqrt(2),
b_std = 0.1, 10 outputs) is trained on 500 digits (``_digits.split``) with the summed
softmax cross-entropy, by full-batch gradient descent (learning rate 1 / lambda_max of the
infinite-width NTK of the training set) and by Adam (learning rate 1e-3, beta = (0.9, 0.999)),
for 200 steps each, and the relative change ||Theta_t - Theta_0||_F / ||Theta_0||_F of the
empirical NTK (``output="trace"``) on the first 100 training images is recorded every 10
steps (docs/math/6-finite-width.md).  Short training: 200 full-batch steps, one seed.

Under gradient descent the change shrinks with the width (the kernel freezes; the table
gives the log-log slope of the final change against the width); under Adam at a fixed
learning rate it does not, since Adam moves every parameter by about the
learning rate whatever its gradient, and in the NTK parameterization a hidden layer's output
then moves by O(sqrt(width) * learning rate).

    python examples/ntk_change_digits.py

Run time: 403 s measured on 2 cores shared with other jobs (load average ~11); it prints it.

Writes ntk_change_digits.png and ntk_change_digits.md beside this script.  The architecture
is a function (``_digits.mlp(2)``); a CNN built with ``ntkcore.finite.Network`` can be passed
to ``run`` the same way.
"""

import time
from pathlib import Path

import numpy as np
from _digits import mlp, save_figure, split

WIDTHS = [10, 30, 100, 300, 1000]
STEPS = 200
RECORD_EVERY = 10
ADAM_RATE = 1e-3
HERE = Path(__file__).resolve().parent


def run(architecture, widths, x, labels, probe):
    """{(optimizer, width): (TrainResult, seconds)} for one architecture."""
    out = {}
    for width in widths:
        for optimizer in ("gd", "adam"):
            net, arch = architecture(width)
            rate = 1.0 / np.linalg.eigvalsh(arch.ntk(x))[-1] if optimizer == "gd" else ADAM_RATE
            start = time.perf_counter()
            result = net.train(
                x,
                labels,
                rate,
                STEPS,
                loss="cross_entropy",
                optimizer=optimizer,
                record_every=RECORD_EVERY,
                probe=probe,
            )
            out[optimizer, width] = (result, rate, time.perf_counter() - start)
    return out


def main():
    begin = time.perf_counter()
    x, labels, _, _ = split()
    architecture = mlp(2)
    results = run(architecture, WIDTHS, x, labels, x[:100])

    lines = [
        f"# Relative NTK change, {architecture.name}, 500 digits, cross-entropy, {STEPS} full-batch steps",
        "",
        "| optimizer | learning rate | width | NTK change after training | train loss t=0 -> T "
        "| train accuracy T | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for (optimizer, width), (res, rate, secs) in results.items():
        lines.append(
            f"| {optimizer} | {rate:.3g} | {width} | {res.ntk_change[-1]:.4f} "
            f"| {res.loss[0]:.1f} -> {res.loss[-1]:.1f} | {res.accuracy[-1]:.3f} | {secs:.1f} |"
        )
    w = np.log(WIDTHS)
    for optimizer in ("gd", "adam"):
        slope = np.polyfit(w, np.log([results[optimizer, n][0].ntk_change[-1] for n in WIDTHS]), 1)[0]
        lines.append(f"\n{optimizer}: final NTK change ~ width^{slope:.2f} (least-squares slope over the widths)")
    lines += ["", "NTK change = ||Theta_t - Theta_0||_F / ||Theta_0||_F on the first 100 training images."]
    table = "\n".join(lines)
    print(table)
    (HERE / "ntk_change_digits.md").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, optimizer in zip(axes[:2], ("gd", "adam")):
        for width in WIDTHS:
            res = results[optimizer, width][0]
            ax.plot(res.record_steps, res.ntk_change, marker=".", label=f"width {width}")
        ax.set(
            yscale="log",
            xlabel="training step t",
            ylabel=r"$\|\Theta_t-\Theta_0\|_F / \|\Theta_0\|_F$",
            title=f"{'gradient descent' if optimizer == 'gd' else 'Adam'}, cross-entropy",
        )
        ax.legend(fontsize=8)
    w = np.array(WIDTHS, dtype=float)
    for optimizer, label in (("gd", "gradient descent"), ("adam", "Adam")):
        axes[2].plot(w, [results[optimizer, n][0].ntk_change[-1] for n in WIDTHS], marker="o", label=label)
    gd_last = results["gd", WIDTHS[-1]][0].ntk_change[-1]
    axes[2].plot(w, gd_last * np.sqrt(w[-1] / w), "k--", label=r"$\propto 1/\sqrt{\mathrm{width}}$")
    axes[2].plot(w, gd_last * w[-1] / w, "k:", label=r"$\propto 1/\mathrm{width}$")
    axes[2].set(
        xscale="log", yscale="log", xlabel="width", ylabel=f"NTK change after {STEPS} steps", title="Change vs width"
    )
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{architecture.name}, 500 digits")
    save_figure(fig, HERE / "ntk_change_digits.png", begin)


if __name__ == "__main__":
    main()
