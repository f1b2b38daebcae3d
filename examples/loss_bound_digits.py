"""Classification loss and its true-class-NTK bound over training, on digits.

Reproduces the dense half of Figs. 6-7 of "Understanding Neural Tangent Kernel" (sec. 6.2):
a ReLU MLP with two hidden layers of width n = 100, 1000, 3000 (NTK parameterization,
W_std = sqrt(2), b_std = 0.1, 10 outputs) is trained by full-batch gradient descent
(learning rate 0.5 / lambda_max of the infinite-width NTK) on the summed softmax
cross-entropy of 50 of the 500 training digits (``_digits.split``; a subset, so that the
(50 x 10)^2 full NTK can be formed at every record), for 400 steps.  Every 5 steps it
records lambda_min of the true-class NTK Theta~ (``ntkcore.training.true_class_ntk``) and
draws the measured loss next to the gradient-flow bound of docs/math/6-finite-width.md,

    L_t <= -(N/2) log(exp(-2 L_0 / N) + 2 eta lambda t),

with lambda the minimum of lambda_min(Theta~) over the recorded trajectory (the valid
constant) and with lambda_min(Theta~_0) at initialisation (not a valid constant in general:
Theta~ shrinks as the true-class probabilities approach 1), and the squared-loss form
L_0 exp(-eta lambda_min(Theta~_0) t).

    python examples/loss_bound_digits.py

Run time: 596 s (under 10 min) measured on 2 cores shared with other jobs (load average ~11);
it prints it.

Writes loss_bound_digits.png and loss_bound_digits.md beside this script.  The architecture
is a function (``_digits.mlp(2)``).  The CNN curves, same code path:

    python examples/loss_bound_digits.py --arch cnn

``_digits.cnn(2)`` (two Conv 3 x 3 SAME + ReLU layers of n = 10, 30, 100 channels,
GlobalAvgPool, Dense, 10 outputs) on the first 20 training digits for 100 steps (the numpy
training step of the CNN is far slower than the MLP's).  Writes loss_bound_digits_cnn.png and
loss_bound_digits_cnn.md.
"""

import time
from pathlib import Path

import numpy as np
from _digits import architecture_option, cnn, inputs, mlp, save_figure, split
from ntkcore import training

RECORD_EVERY = 5
# (architecture, widths or channels, training images, gradient-descent steps)
SETTINGS = {"mlp": (mlp(2), [100, 1000, 3000], 50, 400), "cnn": (cnn(2), [10, 30, 100], 20, 100)}
HERE = Path(__file__).resolve().parent


def run(architecture, width, x, labels, steps):
    net, arch = architecture(width)
    rate = 0.5 / np.linalg.eigvalsh(arch.ntk(x))[-1]
    lams = []

    def record(step, model):
        lams.append(np.linalg.eigvalsh(training.true_class_ntk(model, x, labels))[0])

    start = time.perf_counter()
    res = net.train(x, labels, rate, steps, loss="cross_entropy", record_every=RECORD_EVERY, callback=record)
    secs = time.perf_counter() - start
    t = np.arange(steps + 1)
    lams = np.asarray(lams)
    bounds = {
        "valid": training.cross_entropy_bound(res.loss[0], len(x), lams.min(), rate, t),
        "init": training.cross_entropy_bound(res.loss[0], len(x), lams[0], rate, t),
        "exp_init": res.loss[0] * np.exp(-rate * lams[0] * t),
    }
    return res, rate, lams, bounds, secs


def main():
    begin = time.perf_counter()
    architecture, widths, n_points, steps = SETTINGS[architecture_option(__doc__.splitlines()[0])]
    x, labels, _, _ = split()
    x, labels = inputs(x, architecture)[:n_points], labels[:n_points]
    runs = {w: run(architecture, w, x, labels, steps) for w in widths}

    lines = [
        f"# Cross-entropy loss and its bound, {architecture.name}, {n_points} digits, {steps} gradient-descent steps",
        "",
        "| width | learning rate | lambda_min(Theta~_0) | min over trajectory | loss t=0 -> T | valid bound at T "
        "| bound with lambda_0 at T | loss > bound(lambda_0) at some step | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w, (res, rate, lams, bounds, secs) in runs.items():
        violated = bool(np.any(res.loss > bounds["init"] + 1e-9))
        lines.append(
            f"| {w} | {rate:.3g} | {lams[0]:.3e} | {lams.min():.3e} | {res.loss[0]:.2f} -> {res.loss[-1]:.2f} "
            f"| {bounds['valid'][-1]:.2f} | {bounds['init'][-1]:.2f} | {'yes' if violated else 'no'} | {secs:.1f} |"
        )
        assert np.all(res.loss <= bounds["valid"] + 1e-6 * res.loss[0]), "measured loss above the valid bound"
    lines += [
        "",
        "Bound: L_t <= -(N/2) log(exp(-2 L_0/N) + 2 eta lambda t) (docs/math/6-finite-width.md), lambda = min of",
        f"lambda_min(Theta~) over the steps recorded every {RECORD_EVERY} (valid) or at t = 0 (not valid in general).",
        f"Run time of the training runs: {time.perf_counter() - begin:.0f} s (2 shared cores).",
    ]
    table = "\n".join(lines)
    print(table)
    (HERE / f"loss_bound_digits{architecture.suffix}.md").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(widths) + 1, figsize=(4.2 * (len(widths) + 1), 4))
    t = np.arange(steps + 1)
    for ax, (w, (res, _, _, bounds, _)) in zip(axes, runs.items()):
        ax.plot(t, res.loss, "k", label="measured loss")
        ax.plot(t, bounds["valid"], "C0--", label=r"bound, $\lambda = \min_t \lambda_{\min}(\tilde\Theta_t)$")
        ax.plot(t, bounds["init"], "C3:", label=r"bound, $\lambda_{\min}(\tilde\Theta_0)$")
        ax.plot(t, bounds["exp_init"], "C2-.", label=r"$L_0 e^{-\eta\lambda_{\min}(\tilde\Theta_0) t}$")
        ax.set(xlabel="gradient-descent step t", ylabel="summed cross-entropy", title=f"width {w}")
        ax.legend(fontsize=7)
    for w, (res, _, lams, _, _) in runs.items():
        axes[-1].plot(res.record_steps, lams / lams[0], marker=".", label=f"width {w}")
    axes[-1].set(
        xlabel="gradient-descent step t",
        ylabel=r"$\lambda_{\min}(\tilde\Theta_t) / \lambda_{\min}(\tilde\Theta_0)$",
        title="true-class NTK over training",
    )
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{architecture.name}, {n_points} digits, gradient descent on the cross-entropy")
    save_figure(fig, HERE / f"loss_bound_digits{architecture.suffix}.png", begin)


if __name__ == "__main__":
    main()
