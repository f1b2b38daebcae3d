"""Extreme eigenvalues of NTK Gram matrices: ntkcore against scipy, in the same run.

NTK of a depth-3 ReLU network (W_std = sqrt(2), b_std = 0.1) on points uniform on the unit
sphere in d = 64.  Two parts, each of which rewrites its own section of the results file:

    python bench/bench_spectral.py dense [--sizes 1000 2000 4000]
        lambda_min: ntkcore.lambda_min vs scipy.linalg.eigh(K, subset_by_index=[0, 0]);
        top-10: ntkcore.eigsh(K, k=10) vs scipy.sparse.linalg.eigsh(K, k=10).
    python bench/bench_spectral.py large [--n 50000 --subset 5000]
        matrix-free top-10 of the N x N NTK (never stored): time and peak memory (ru_maxrss
        of a child process that does nothing else); the same call on the first `subset`
        points against a dense LAPACK eigendecomposition of their Gram matrix.

Writes bench/RESULTS_spectral.md (rendered from bench/RESULTS_spectral.json).  Run with the
extension built (PYTHONPATH=python) and scipy installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
JSON = HERE / "RESULTS_spectral.json"
MD = HERE / "RESULTS_spectral.md"


def points(n, d=64, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def network():
    import ntkcore

    return ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def machine():
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_dense(sizes, repeats):
    import ntkcore
    import scipy
    import scipy.linalg as sl
    import scipy.sparse.linalg as ssl
    from ntkcore._native import isa

    rows = []
    for n in sizes:
        theta = network().ntk(points(n))
        row = {"n": n}
        ours_min = min((timed(ntkcore.lambda_min, theta) for _ in range(repeats)), key=lambda r: r[1])
        ref_min = min(
            (timed(sl.eigh, theta, subset_by_index=[0, 0], eigvals_only=True) for _ in range(repeats)),
            key=lambda r: r[1],
        )
        row["lambda_min"] = {
            "ours_s": ours_min[1],
            "scipy_s": ref_min[1],
            "ours": ours_min[0],
            "scipy": float(ref_min[0][0]),
            "rel_diff": abs(ours_min[0] - float(ref_min[0][0])) / float(ref_min[0][0]),
        }
        ours_top = min((timed(ntkcore.eigsh, theta, k=10) for _ in range(repeats)), key=lambda r: r[1])
        ref_top = min((timed(ssl.eigsh, theta, k=10) for _ in range(repeats)), key=lambda r: r[1])
        (vals, vecs), (rvals, _) = ours_top[0], ref_top[0]
        norm = float(np.max(vals))
        row["top10"] = {
            "ours_s": ours_top[1],
            "scipy_s": ref_top[1],
            "max_rel_diff": float(np.max(np.abs(np.sort(vals) - np.sort(rvals))) / norm),
            "max_rel_residual": float(np.max(np.linalg.norm(theta @ vecs - vecs * vals, axis=0)) / norm),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "machine": machine(),
        "isa": isa,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "repeats": repeats,
        "rows": rows,
        "command": "python bench/bench_spectral.py " + " ".join(sys.argv[1:]),
    }


def child_large(n, k, threads):
    """In a fresh process: the matrix-free top-k of n points; prints JSON."""
    import ntkcore

    x = points(n)
    (vals, _vecs), seconds = timed(ntkcore.eigsh, network(), x, k=k, n_threads=threads)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"n": n, "seconds": seconds, "peak_bytes": peak, "values": vals.tolist()}))


def run_large(n, subset, k, threads):
    def child(m):
        cmd = [sys.executable, __file__, "child", "--n", str(m), "--k", str(k)]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ)
        return json.loads(out.stdout.strip().splitlines()[-1])

    small = child(subset)
    gram = network().ntk(points(subset))
    exact, lapack_s = timed(np.linalg.eigvalsh, gram)
    small["dense_values"] = exact[-k:].tolist()
    small["dense_s"] = lapack_s
    small["max_rel_diff"] = float(np.max(np.abs(np.array(small["values"]) - exact[-k:])) / exact[-1])
    print(json.dumps(small), flush=True)
    del gram
    big = child(n)
    print(json.dumps(big), flush=True)
    return {
        "machine": machine(),
        "k": k,
        "subset": small,
        "large": big,
        "command": "python bench/bench_spectral.py " + " ".join(sys.argv[1:]),
    }


def render(results):
    lines = [
        "# Extreme eigenvalues of NTK Gram matrices: ntkcore vs scipy",
        "",
        "NTK of a depth-3 ReLU network (W_std = sqrt(2), b_std = 0.1), inputs uniform on the unit",
        "sphere in d = 64, float64.  Produced by `bench/bench_spectral.py` (commands below); the raw",
        "numbers are in `RESULTS_spectral.json`.  Times are wall-clock seconds, best of the repeats,",
        "ntkcore and scipy run alternately in the same process on the same matrix.  ntkcore built",
        "as each section says (a `-DNTKCORE_NATIVE=ON` build has one module, reported as 'core variant",
        "baseline'); scipy uses OpenBLAS with its default threads (2 here).",
        "",
    ]
    dense = results.get("dense")
    if dense:
        m = dense["machine"]
        lines += [
            "## Dense Gram matrices",
            "",
            f"`{dense['command']}` ({m['date']}; {m['cores']} cores, load average {m['load_average_at_start']:.1f} "
            f"at start, shared machine; core variant {dense['isa']}, scipy {dense['scipy']}, numpy {dense['numpy']}).",
            "",
            "lambda_min: `ntkcore.lambda_min(K)` (Cholesky + block Lanczos on (K - sigma I)^-1, Rayleigh quotient) vs",
            "`scipy.linalg.eigh(K, subset_by_index=[0, 0], eigvals_only=True)`.",
            "",
            "| N | ntkcore s | scipy s | speed-up | lambda_min | rel. difference |",
            "|---|---|---|---|---|---|",
        ]
        for r in dense["rows"]:
            lm = r["lambda_min"]
            lines.append(
                f"| {r['n']} | {lm['ours_s']:.3f} | {lm['scipy_s']:.3f} | {lm['scipy_s'] / lm['ours_s']:.1f}x | "
                f"{lm['ours']:.12g} | {lm['rel_diff']:.1e} |"
            )
        lines += [
            "",
            "Top 10 eigenpairs: `ntkcore.eigsh(K, k=10)` (block Lanczos, tol 1e-10) vs "
            "`scipy.sparse.linalg.eigsh(K, k=10)` (ARPACK).",
            "",
            "| N | ntkcore s | scipy s | speed-up | max abs. eigenvalue difference / lambda_max "
            "| max residual / lambda_max |",
            "|---|---|---|---|---|---|",
        ]
        for r in dense["rows"]:
            t = r["top10"]
            lines.append(
                f"| {r['n']} | {t['ours_s']:.3f} | {t['scipy_s']:.3f} | {t['scipy_s'] / t['ours_s']:.1f}x | "
                f"{t['max_rel_diff']:.1e} | {t['max_rel_residual']:.1e} |"
            )
        lines.append("")
    large = results.get("large")
    if large:
        m, s, b = large["machine"], large["subset"], large["large"]
        lines += [
            "## Matrix-free top-10",
            "",
            f"`{large['command']}` ({m['date']}; {m['cores']} cores, load average "
            f"{m['load_average_at_start']:.1f} at start).  `ntkcore.eigsh(net, x, k={large['k']})`: the Gram "
            "matrix is evaluated tile by tile on every pass and never stored.  Peak memory is the",
            "maximum resident set of a child process that only loads numpy/ntkcore, makes x and solves.",
            "",
            "| N | time s | peak memory | note |",
            "|---|---|---|---|",
            f"| {s['n']} | {s['seconds']:.1f} | {s['peak_bytes'] / 2**20:.0f} MiB | vs LAPACK eigvalsh of the dense "
            f"Gram ({s['dense_s']:.1f} s): max abs. difference / lambda_max = {s['max_rel_diff']:.1e} |",
            f"| {b['n']} | {b['seconds']:.1f} ({b['seconds'] / 60:.1f} min) | {b['peak_bytes'] / 2**20:.0f} MiB | "
            f"lambda_max = {max(b['values']):.10g}, 10th = {min(b['values']):.10g} (a dense Gram would need "
            f"{b['n'] ** 2 * 8 / 2**30:.0f} GiB) |",
            "",
        ]
    lines += [
        "## Notes",
        "",
        "- lambda_min costs one single-precision Cholesky factorization of K (N^3 / 3 flops at twice",
        "  the double rate) that locates lambda_min to ~1e-2 in ~20 block solves, then one double",
        "  factorization of K - sigma I with sigma just below lambda_min and ~15 more block solves",
        "  (each solve streams the factor once, its panel products split over threads).  The bottom of",
        "  this NTK's spectrum is a near-continuum (lambda_2 / lambda_1 - 1 ~ 1e-3), so Lanczos on K^-1",
        "  alone needs ~120 passes for 1e-8.  LAPACK's eigh instead reduces K to tridiagonal form",
        "  (4/3 N^3 flops, half of them memory-bound).",
        "- Top-k passes read only the upper triangle of K (half the memory traffic of a GEMM with K).",
        "- Machine: shared by several developers; numbers move by tens of percent between runs.",
        "",
    ]
    MD.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("dense")
    d.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    d.add_argument("--repeats", type=int, default=2)
    lg = sub.add_parser("large")
    lg.add_argument("--n", type=int, default=50000)
    lg.add_argument("--subset", type=int, default=5000)
    lg.add_argument("--k", type=int, default=10)
    lg.add_argument("--threads", type=int, default=None)
    c = sub.add_parser("child")
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--k", type=int, default=10)
    c.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.mode == "child":
        child_large(args.n, args.k, args.threads)
        return
    results = json.loads(JSON.read_text()) if JSON.exists() else {}
    if args.mode == "dense":
        results["dense"] = run_dense(args.sizes, args.repeats)
    else:
        results["large"] = run_large(args.n, args.subset, args.k, args.threads)
    JSON.write_text(json.dumps(results, indent=1) + "\n")
    render(results)


if __name__ == "__main__":
    main()
