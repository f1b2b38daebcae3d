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
is a function (``_digits.mlp(2)``).  The CNN half, same code path:

    python examples/ntk_change_digits.py --arch cnn

``_digits.cnn(2)`` (two Conv 3 x 3 SAME + ReLU layers of n = 10 .. 300 channels, GlobalAvgPool,
Dense, 10 outputs) on a small subset: the first 20 training images (also the probe set), 40
full-batch steps recorded every 5.  1000 channels do not fit in 10 minutes on the loaded
2-core machine: the numpy training step of the second convolution grows like n^2.  Writes
ntk_change_digits_cnn.png and ntk_change_digits_cnn.md.
"""

import time
from pathlib import Path

import numpy as np
from _digits import architecture_option, cnn, inputs, mlp, save_figure, split

ADAM_RATE = 1e-3
# (architecture, widths or channels, training images, probe images, steps, record every)
SETTINGS = {
    "mlp": (mlp(2), [10, 30, 100, 300, 1000], 500, 100, 200, 10),
    "cnn": (cnn(2), [10, 30, 100, 300], 20, 20, 40, 5),
}
HERE = Path(__file__).resolve().parent


def run(architecture, widths, x, labels, probe, steps, record_every):
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
                steps,
                loss="cross_entropy",
                optimizer=optimizer,
                record_every=record_every,
                probe=probe,
            )
            out[optimizer, width] = (result, rate, time.perf_counter() - start)
    return out


def main():
    begin = time.perf_counter()
    architecture, widths, n_train, n_probe, steps, record_every = SETTINGS[architecture_option(__doc__.splitlines()[0])]
    x, labels, _, _ = split()
    x, labels = inputs(x, architecture)[:n_train], labels[:n_train]
    results = run(architecture, widths, x, labels, x[:n_probe], steps, record_every)

    lines = [
        f"# Relative NTK change, {architecture.name}, {n_train} digits, cross-entropy, {steps} full-batch steps",
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
    w = np.log(widths)
    for optimizer in ("gd", "adam"):
        slope = np.polyfit(w, np.log([results[optimizer, n][0].ntk_change[-1] for n in widths]), 1)[0]
        lines.append(f"\n{optimizer}: final NTK change ~ width^{slope:.2f} (least-squares slope over the widths)")
    lines += ["", f"NTK change = ||Theta_t - Theta_0||_F / ||Theta_0||_F on the first {n_probe} training images."]
    lines.append(f"Run time of the training runs: {time.perf_counter() - begin:.0f} s (2 shared cores).")
    table = "\n".join(lines)
    print(table)
    (HERE / f"ntk_change_digits{architecture.suffix}.md").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, optimizer in zip(axes[:2], ("gd", "adam")):
        for width in widths:
            res = results[optimizer, width][0]
            ax.plot(res.record_steps, res.ntk_change, marker=".", label=f"width {width}")
        ax.set(
            yscale="log",
            xlabel="training step t",
            ylabel=r"$\|\Theta_t-\Theta_0\|_F / \|\Theta_0\|_F$",
            title=f"{'gradient descent' if optimizer == 'gd' else 'Adam'}, cross-entropy",
        )
        ax.legend(fontsize=8)
    w = np.array(widths, dtype=float)
    for optimizer, label in (("gd", "gradient descent"), ("adam", "Adam")):
        axes[2].plot(w, [results[optimizer, n][0].ntk_change[-1] for n in widths], marker="o", label=label)
    gd_last = results["gd", widths[-1]][0].ntk_change[-1]
    axes[2].plot(w, gd_last * np.sqrt(w[-1] / w), "k--", label=r"$\propto 1/\sqrt{\mathrm{width}}$")
    axes[2].plot(w, gd_last * w[-1] / w, "k:", label=r"$\propto 1/\mathrm{width}$")
    axes[2].set(
        xscale="log", yscale="log", xlabel="width", ylabel=f"NTK change after {steps} steps", title="Change vs width"
    )
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{architecture.name}, {n_train} digits")
    save_figure(fig, HERE / f"ntk_change_digits{architecture.suffix}.png", begin)


if __name__ == "__main__":
    main()
