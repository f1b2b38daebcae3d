"""Relative change of the empirical NTK during gradient descent, widths 10 .. 2000.

Reproduces the width experiment of "Understanding Neural Tangent Kernel" on scikit-learn's
diabetes data: a ReLU network with two hidden layers of width n (NTK parameterization,
W_std = sqrt(2)) is trained by full-batch gradient descent on L = 1/2 ||f(X) - Y||^2
(learning rate 1 / lambda_max of the infinite-width NTK), and the relative change
||Theta_t - Theta_0||_F / ||Theta_0||_F of its empirical NTK on the training set is
recorded.  It shrinks like 1 / sqrt(width): the kernel freezes as the network widens
(docs/math/6-finite-width.md).

    pip install ".[examples]"; python examples/ntk_change_diabetes.py

Writes ntk_change_diabetes.png and ntk_change_diabetes.txt beside this script.
"""

import time
from pathlib import Path

import numpy as np
from _diabetes import ARCH, learning_rate, load
from ntkcore import finite

WIDTHS = [10, 30, 100, 300, 1000, 2000]
SEEDS = [0, 1, 2]
STEPS = 400
RECORD_EVERY = 20
HERE = Path(__file__).resolve().parent


def main():
    x, y = load()
    lr = learning_rate(x)
    curves, rows = {}, []
    for width in WIDTHS:
        start = time.perf_counter()
        runs = []
        for seed in SEEDS:
            net = finite.MLP([x.shape[1], width, width, 1], ARCH.activation, ARCH.W_std, ARCH.b_std, seed=seed)
            runs.append(net.train(x, y, lr, STEPS, record_every=RECORD_EVERY))
        change = np.mean([r.ntk_change for r in runs], axis=0)
        curves[width] = (runs[0].record_steps, change)
        final = [r.ntk_change[-1] for r in runs]
        loss_ratio = np.mean([r.loss[-1] / r.loss[0] for r in runs])
        rows.append((width, np.mean(final), np.std(final), loss_ratio, time.perf_counter() - start))

    lines = [
        f"# diabetes, N = {len(x)}, depth 2 ReLU, W_std = sqrt(2), b_std = 0, lr = {lr:.4g}, "
        f"{STEPS} steps, mean over seeds {SEEDS}",
        f"{'width':>6} {'change(T)':>12} {'std':>10} {'sqrt(w)*change':>15} {'loss_T/loss_0':>14} {'seconds':>8}",
    ]
    for width, mean, std, ratio, secs in rows:
        lines.append(f"{width:>6} {mean:>12.4e} {std:>10.2e} {width**0.5 * mean:>15.4f} {ratio:>14.4e} {secs:>8.1f}")
    lines.append("")
    lines.append("change(t) = ||Theta_t - Theta_0||_F / ||Theta_0||_F, mean over seeds")
    steps = curves[WIDTHS[0]][0]
    lines.append(f"{'step':>6} " + " ".join(f"{'n=' + str(w):>11}" for w in WIDTHS))
    for i, step in enumerate(steps):
        lines.append(f"{step:>6} " + " ".join(f"{curves[w][1][i]:>11.3e}" for w in WIDTHS))
    table = "\n".join(lines)
    print(table)
    (HERE / "ntk_change_diabetes.txt").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for width in WIDTHS:
        steps, change = curves[width]
        ax1.plot(steps[1:], change[1:], marker=".", label=f"width {width}")
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="gradient-descent step t",
        ylabel=r"$\|\Theta_t-\Theta_0\|_F / \|\Theta_0\|_F$",
        title="NTK change during training",
    )
    ax1.legend(fontsize=8)
    w = np.array([r[0] for r in rows], dtype=float)
    m = np.array([r[1] for r in rows])
    ax2.errorbar(w, m, yerr=[r[2] for r in rows], marker="o", capsize=3, label=f"after {STEPS} steps")
    ax2.plot(w, m[-1] * np.sqrt(w[-1] / w), "k--", label=r"$\propto 1/\sqrt{\mathrm{width}}$")
    ax2.set(xscale="log", yscale="log", xlabel="width", ylabel="relative NTK change", title="Change vs width")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "ntk_change_diabetes.png", dpi=120)


if __name__ == "__main__":
    main()
