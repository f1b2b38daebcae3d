"""``python -m ntkcore``: NNGP and NTK kernel regression on the bundled digits data.

Computes the train and test Gram matrices of a deep fully-connected network, fits the
infinite-width predictors (kernel regression on one-hot targets, i.e. gradient flow to
t = infinity for the NTK and the Bayesian posterior mean for the NNGP) and prints timings
and test accuracy, then the extreme eigenvalues of the NTK train Gram and the bound
exp(-2 lambda_min t) ||r0||^2 on the squared train residual of gradient flow (docs/math/5-gram-dynamics.md).
Last, the convolutional NTK (CNTK) of a small CNN (two 3 x 3 SAME ReLU convolutions,
GlobalAvgPool, Dense) on the same images as 8 x 8 x 1, on a subset of the same split (the
CNTK costs O(P^2) = 4096 times more per pair), next to the fully-connected kernels on that
subset.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import FullyConnected, condition_number, lambda_max, lambda_min, layers, loss_bound, loss_curve, serial
from ._native import isa
from .datasets import load_digits


def kernel_regression_accuracy(k_train, k_test_train, y_train, labels_test, diag_reg):
    """Test accuracy of the kernel regressor with targets one-hot minus 1/10."""
    targets = np.eye(10)[y_train] - 0.1
    reg = diag_reg * np.mean(np.diag(k_train))
    coef = np.linalg.solve(k_train + reg * np.eye(len(k_train)), targets)
    predicted = np.argmax(k_test_train @ coef, axis=1)
    return float(np.mean(predicted == labels_test))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntkcore", description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--W-std", type=float, default=2.0**0.5)
    parser.add_argument("--b-std", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--diag-reg", type=float, default=1e-4, help="relative ridge (x mean diagonal)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cnn-subset", type=int, default=200, help="train and test images for the CNTK comparison (0: skip it)"
    )
    args = parser.parse_args(argv)

    images, labels = load_digits()
    if not 10 <= args.n_train < len(images):
        parser.error(f"--n-train must be in [10, {len(images) - 1}]")
    if args.cnn_subset < 0:
        parser.error(f"--cnn-subset must be >= 0 (0 skips the CNTK comparison), got {args.cnn_subset}")
    order = np.random.default_rng(args.seed).permutation(len(images))
    train, test = order[: args.n_train], order[args.n_train :]
    x_train, x_test = images[train], images[test]

    net = FullyConnected(args.depth, args.activation, W_std=args.W_std, b_std=args.b_std)
    print(
        f"{net}\ndata: UCI optical digits, {len(train)} train / {len(test)} test, d = 64; "
        f"dtype {args.dtype}, core variant {isa}"
    )
    start = time.perf_counter()
    k_train = net.kernels(x_train, dtype=args.dtype, n_threads=args.threads)
    t_train = time.perf_counter() - start
    start = time.perf_counter()
    k_test = net.kernels(x_test, x_train, dtype=args.dtype, n_threads=args.threads)
    t_test = time.perf_counter() - start
    print(
        f"train Gram {k_train.ntk.shape}: {t_train:.3f} s; test-train Gram {k_test.ntk.shape}: "
        f"{t_test:.3f} s (NNGP and NTK together)"
    )

    for name in ("nngp", "ntk"):
        acc = kernel_regression_accuracy(
            np.asarray(getattr(k_train, name), np.float64),
            np.asarray(getattr(k_test, name), np.float64),
            labels[train],
            labels[test],
            args.diag_reg,
        )
        print(f"{name.upper():>4} kernel regression test accuracy: {acc:.4f}")

    theta = np.asarray(k_train.ntk, np.float64)
    start = time.perf_counter()
    lo, hi, cond = lambda_min(theta), lambda_max(theta), condition_number(theta)
    t_spec = time.perf_counter() - start
    print(
        f"NTK train Gram: lambda_min = {lo:.6g}, lambda_max = {hi:.6g}, condition number = {cond:.6g} ({t_spec:.3f} s)"
    )
    r0 = -(np.eye(10)[labels[train]] - 0.1)  # f_0 = 0, one-hot targets minus 1/10
    times = np.array([0.0, 1.0 / hi, 100.0 / hi, 1.0 / lo, 5.0 / lo])
    bound = loss_bound(theta, r0, times)
    exact = loss_curve(theta, r0, times)
    print("gradient flow (eta = 1), squared train residual ||r_t||^2 vs exp(-2 lambda_min t) ||r0||^2:")
    for ti, e, b in zip(times, exact, bound):
        print(f"  t = {ti:9.4g}: {e:10.5g} <= {b:10.5g}")

    m = min(args.cnn_subset, len(train), len(test))
    if m > 0:
        conv = dict(padding="SAME", W_std=args.W_std, b_std=args.b_std)
        cnn = serial(
            layers.Conv((3, 3), **conv),
            args.activation,
            layers.Conv((3, 3), **conv),
            args.activation,
            layers.GlobalAvgPool(),
            layers.Dense(W_std=args.W_std, b_std=args.b_std),
        )
        print(f"\nCNTK vs fully-connected kernels on the first {m} train and {m} test images of the split:")
        for name, model, shape in (("fully-connected", net, (-1, 64)), ("CNN-GAP", cnn, (-1, 8, 8, 1))):
            a, b = x_train[:m].reshape(shape), x_test[:m].reshape(shape)
            start = time.perf_counter()
            kt = model.kernels(a, dtype=args.dtype, n_threads=args.threads)
            ks = model.kernels(b, a, dtype=args.dtype, n_threads=args.threads)
            elapsed = time.perf_counter() - start
            acc = [
                kernel_regression_accuracy(
                    np.asarray(getattr(kt, k), np.float64),
                    np.asarray(getattr(ks, k), np.float64),
                    labels[train[:m]],
                    labels[test[:m]],
                    args.diag_reg,
                )
                for k in ("nngp", "ntk")
            ]
            print(f"  {name:>15}: NNGP accuracy {acc[0]:.4f}, NTK accuracy {acc[1]:.4f} ({elapsed:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
