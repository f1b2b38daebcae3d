#!/usr/bin/env python3
"""Benchmark the scikit-learn GP kernel with its exact gradient against scikit-ntk.

Two parts, each run in a fresh subprocess per row (so the peak RSS is that run's alone):

* kernel + gradient: ``NTKKernel(FullyConnected(3, "relu"), W_std=sqrt(2), b_std=0.1)(x,
  eval_gradient=True)`` (value (N, N) and the exact gradient (N, N, 2) in log W_std, log b_std)
  against scikit-ntk's ``NeuralTangentKernel(depth=3, bias=0.1)(x, eval_gradient=True)`` (the
  ReLU NTK, gradient (N, N, 1) in log bias), x = ``default_rng(0).standard_normal((N, 64))``;
  one call each after a warm-up on 8 points, best of ``--repeat``;
* ``GaussianProcessRegressor(kernel + WhiteKernel(), normalize_y=True).fit`` with its L-BFGS
  optimizer on scikit-learn's diabetes data (features standardized, 300 train / 142 test
  points, seed 0), for both kernels: time, fitted log marginal likelihood and test RMSE.

Example::

    PYTHONPATH=python python bench/bench_sklearn.py --sizes 2000 4000 --threads 2
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def kernel(library):
    if library == "ntkcore":
        import ntkcore
        from ntkcore.sklearn import NTKKernel

        return NTKKernel(ntkcore.FullyConnected(3, "relu"), W_std=2**0.5, b_std=0.1)
    from skntk import NeuralTangentKernel

    return NeuralTangentKernel(depth=3, bias=0.1)


def child_gradient(library, n, repeat):
    x = np.random.default_rng(0).standard_normal((n, 64))
    k = kernel(library)
    k(x[:8], eval_gradient=True)
    before = peak_rss_mb()
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        value, gradient = k(x, eval_gradient=True)
        best = min(best, time.perf_counter() - start)
        del value, gradient
    return {"time": best, "rss": peak_rss_mb(), "rss_increase": peak_rss_mb() - before}


def child_gp(library):
    from sklearn.datasets import load_diabetes
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, train_size=300, random_state=0)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    gp = GaussianProcessRegressor(kernel(library) + WhiteKernel(), normalize_y=True, random_state=0)
    start = time.perf_counter()
    gp.fit(xtr, ytr)
    elapsed = time.perf_counter() - start
    rmse = float(np.sqrt(np.mean((gp.predict(xte) - yte) ** 2)))
    return {"time": elapsed, "lml": float(gp.log_marginal_likelihood_value_), "rmse": rmse, "kernel": repr(gp.kernel_)}


def run_child(args, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, library, *rest = args.child
        result = child_gradient(library, int(rest[0]), int(rest[1])) if kind == "gradient" else child_gp(library)
        print(json.dumps(result))
        return

    print(f"threads {args.threads}; d = 64; depth 3 ReLU NTK; times: best of {args.repeat}\n")
    print("| N | scikit-ntk | ntkcore | speed-up | scikit-ntk peak RSS (+call) | ntkcore peak RSS (+call) | bound |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        rows = {
            lib: run_child(["gradient", lib, str(n), str(args.repeat)], args.threads) for lib in ("skntk", "ntkcore")
        }
        time.sleep(2)
        bound = 2 * n * n * 8 * 3 / 2**20 + 100
        s, c = rows["skntk"], rows["ntkcore"]
        print(
            f"| {n} | {s['time']:.3f} s | {c['time']:.3f} s | {s['time'] / c['time']:.1f}x | "
            f"{s['rss']:.0f} MB (+{s['rss_increase']:.0f}) | {c['rss']:.0f} MB (+{c['rss_increase']:.0f}) | "
            f"{bound:.0f} MB |"
        )
    print("\nGaussianProcessRegressor(kernel + WhiteKernel(), normalize_y=True).fit on diabetes")
    print("(300 train / 142 test points)\n")
    print("| kernel | fit time | log marginal likelihood | test RMSE | fitted kernel |")
    print("|---|---|---|---|---|")
    for lib in ("skntk", "ntkcore"):
        r = run_child(["gp", lib], args.threads)
        print(f"| {lib} | {r['time']:.2f} s | {r['lml']:.2f} | {r['rmse']:.2f} | `{r['kernel']}` |")


if __name__ == "__main__":
    main()
