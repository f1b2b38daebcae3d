#!/usr/bin/env python3
"""Kernel regression beyond the Gram matrix: ntkcore.KernelRegression, pcg vs cholesky.

Problem (issue 14): d = 64 standard normal inputs (seed 0), FullyConnected(3, "relu",
W_std = sqrt(2), b_std = 0.1), NTK, y = sin(x @ w) + 0.1 noise with k outputs,
diag_reg = 1e-4 (relative to the mean diagonal), tol = 1e-6 unless given, 200 test points.

Each solver runs in a fresh subprocess (its peak RSS, getrusage ru_maxrss, is that run's
alone) and reports fit and predict times, iterations and residual; the parent prints the
relative difference of the predictions, max |pcg - cholesky| / max |cholesky|.  With
``--workers W`` the pcg run uses a distributed.LocalCluster of W worker processes
(threads_per_worker = --threads).

    PYTHONPATH=python python bench/bench_scale.py --n 20000 --threads 16
    PYTHONPATH=python python bench/bench_scale.py --n 100000 --solvers pcg --threads 16
    PYTHONPATH=python python bench/bench_scale.py --n 20000 --solvers pcg --workers 2 --threads 8
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

TAG = "BENCH_RESULT_JSON:"


def problem(n, d, k, n_test):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n + n_test, d))
    w = rng.standard_normal(d) / np.sqrt(d)
    y = np.stack([np.sin((j + 1) * (x @ w)) for j in range(k)], 1) + 0.1 * rng.standard_normal((n + n_test, k))
    return x[:n], y[:n], x[n:]


def child(args):
    import ntkcore

    x, y, x_test = problem(args.n, args.d, args.k, args.n_test)
    net = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)
    client = None
    if args.workers:
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
    model = ntkcore.KernelRegression(
        net,
        diag_reg=1e-4,
        solver=args.child,
        tol=args.tol,
        landmarks=args.landmarks,
        client=client,
        n_threads=args.threads,
    )
    start = time.perf_counter()
    model.fit(x, y)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    prediction = model.predict(x_test)
    predict = time.perf_counter() - start
    np.save(args.out, prediction)
    result = {
        "solver": args.child,
        "workers": args.workers,
        "fit_s": fit,
        "predict_s": predict,
        "iterations": model.iterations_,
        "residual": model.residual_,
        "landmarks": None if model.landmarks_ is None else len(model.landmarks_),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(TAG + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--landmarks", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--solvers", nargs="+", default=["cholesky", "pcg"], choices=["cholesky", "pcg"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"N = {args.n}, d = {args.d}, k = {args.k}, threads = {args.threads}, workers = {args.workers}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    predictions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for solver in args.solvers:
            out = os.path.join(tmp, f"{solver}.npy")
            cmd = [sys.executable, __file__, "--child", solver, "--out", out, *sys.argv[1:]]
            run = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((ln for ln in run.stdout.splitlines() if ln.startswith(TAG)), None)
            if line is None:
                print(f"{solver}: failed\n{run.stderr[-3000:]}")
                continue
            result = json.loads(line[len(TAG) :])
            predictions[solver] = np.load(out)
            print(json.dumps(result))
    if len(predictions) == 2:
        a, b = predictions["pcg"], predictions["cholesky"]
        print(f"max |pcg - cholesky| / max |cholesky| = {np.max(np.abs(a - b)) / np.max(np.abs(b)):.3g}")


if __name__ == "__main__":
    main()
