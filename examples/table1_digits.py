"""Table 1 of "Convolutional Neural Tangent Kernel", extended, dense rows, on digits.

500 training and 500 test digits (``_digits.split``, fixed seed) stand in for the text's
MNIST subsets.  Rows: test accuracy of

- the trained MLP: 3 hidden ReLU layers of width 100 (NTK parameterization, W_std = sqrt(2),
  b_std = 0.1, 10 outputs), full-batch Adam (learning rate 1e-3) on the summed softmax
  cross-entropy for 1000 steps;
- kernel regression (gradient flow to t = infinity on one-hot targets minus 1/10, ridge
  1e-4 x mean diagonal, ``ntkcore.GradientFlow``) with
  - the analytic NTK_inf (``ntkcore.FullyConnected(3, "relu", ...).ntk``),
  - the Monte Carlo NTK_inf (``finite.monte_carlo_kernels``, width 1000, 10 networks),
  - the empirical NTK of the MLP at initialisation and after training;

with the time to compute each kernel on the 1000 points (train Gram and test-train block)
and the time to train.  The text reports on MNIST: trained MLP 0.848, NTK_inf 0.744, NTK of
the trained net 0.81.

    python examples/table1_digits.py

Run time: 168 s measured on 2 cores shared with other jobs; it prints it.

Writes table1_digits.md beside this script.  The architecture is a function
(``_digits.mlp(3)``).  The CNN rows, same code path:

    python examples/table1_digits.py --arch cnn

``_digits.cnn(2)``: two Conv 3 x 3 SAME layers of 32 channels with ReLU, GlobalAvgPool, Dense
(W_std = sqrt(2), b_std = 0.1, 10 outputs) on the 8 x 8 x 1 images; Adam at learning rate 1e-2
for 300 steps (the numpy training step of this CNN on 500 images is slower than the MLP's,
so 1000 steps do not fit in 10 minutes next to the kernels); the analytic CNTK_inf from
``ntkcore.serial(...).ntk``; the Monte Carlo CNTK_inf from 4 networks of 32 channels.  Writes
table1_digits_cnn.md.  Run time: see the file (printed).
"""

import time
from pathlib import Path

import numpy as np
from _digits import architecture_option, cnn, inputs, mlp, regression_accuracy, split
from ntkcore import finite

# (architecture, width or channels, Adam steps, Adam learning rate, Monte Carlo width, networks)
SETTINGS = {"mlp": (mlp(3), 100, 1000, 1e-3, 1000, 10), "cnn": (cnn(2), 32, 300, 1e-2, 32, 4)}
HERE = Path(__file__).resolve().parent


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def rows(settings, x, labels, x_test, labels_test):
    """[(method, test accuracy, kernel or training seconds)] for one architecture."""
    architecture, width, steps, rate, mc_width, mc_samples = settings
    kind = architecture.kind
    x, x_test = inputs(x, architecture), inputs(x_test, architecture)
    n = len(x)
    both = np.concatenate([x, x_test])
    net, arch = architecture(width)

    def kernel_row(name, kernel, secs):
        k = np.asarray(kernel, np.float64)
        return name, regression_accuracy(k[:n, :n], k[n:, :n], labels, labels_test), secs

    out = []
    k_init, secs = timed(lambda: net.ntk(both))
    init_row = kernel_row(f"empirical NTK of the {kind} at initialisation (width {width})", k_init, secs)
    result, secs = timed(
        lambda: net.train(x, labels, rate, steps, loss="cross_entropy", optimizer="adam", record_every=steps)
    )
    accuracy = float(np.mean(np.argmax(net.apply(x_test), axis=1) == labels_test))
    name = f"trained {kind} (width {width}, Adam {rate:g}, {steps} steps; train accuracy {result.accuracy[-1]:.3f})"
    out.append((name, accuracy, secs))
    k, secs = timed(lambda: arch.ntk(both))
    out.append(kernel_row(f"{kind}: NTK_inf, analytic (ntkcore)", k, secs))
    k, secs = timed(
        lambda: finite.monte_carlo_kernels(arch, both, width=mc_width, n_samples=mc_samples, n_outputs=1).ntk
    )
    out.append(kernel_row(f"{kind}: NTK_inf, Monte Carlo (width {mc_width}, {mc_samples} networks)", k, secs))
    out.append(init_row)
    k, secs = timed(lambda: net.ntk(both))
    out.append(kernel_row(f"empirical NTK of the trained {kind}", k, secs))
    return out


def main():
    begin = time.perf_counter()
    settings = SETTINGS[architecture_option(__doc__.splitlines()[0])]
    architecture = settings[0]
    x, labels, x_test, labels_test = split()
    table = [
        '# Table 1 of "Convolutional NTK", extended: 500 train / 500 test digits',
        "",
        f"Architecture: {architecture.name}, W_std = sqrt(2), b_std = 0.1.  Seconds: kernel on all 1000 points",
        f"(for the trained {architecture.kind}: the training).  Rows of the other architecture: "
        f"table1_digits{'_cnn' if architecture.kind == 'MLP' else ''}.md.",
        "",
        "| method | test accuracy | seconds |",
        "|---|---|---|",
    ]
    for name, accuracy, secs in rows(settings, x, labels, x_test, labels_test):
        table.append(f"| {name} | {accuracy:.3f} | {secs:.2f} |")
    table.append(f"\nRun time of the script: {time.perf_counter() - begin:.0f} s (2 shared cores).")
    text = "\n".join(table)
    print(text)
    (HERE / f"table1_digits{architecture.suffix}.md").write_text(text + "\n")
    print(f"run time: {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
