"""Empirical NTK of a finite MLP: ntkcore vs neural-tangents vs a torch Jacobian contraction.

Network: d = 64 inputs, three hidden ReLU layers of width 1024, one output, NTK
parameterization with W_std = sqrt(2), b_std = 0.1 (~2.2M parameters); float32; the NTK
Gram of N random points with itself (x2 = None), N in {256, 1000, 2000}.

Every (library, N) runs in a fresh subprocess of that library's interpreter and reports:
the first call (including JIT compilation for neural-tangents), the best of the following
calls, and the process's peak resident memory (getrusage ru_maxrss) together with the
resident memory just before the first call (interpreter, libraries, parameters, inputs).
All three libraries get the same parameters (drawn by ntkcore.finite.MLP(seed=0)) and the
driver checks that their NTKs agree.

    python bench/bench_empirical.py --ntkcore-python PY1 --nt-python PY2 --torch-python PY3

Each interpreter must import its library (ntkcore: this checkout's python/ is put on
PYTHONPATH).  Results go to stdout as a markdown table and to --json.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D, WIDTHS, W_STD, B_STD = 64, [1024, 1024, 1024], 2**0.5, 0.1
ROOT = Path(__file__).resolve().parent.parent


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_ntk_ntkcore(params):
    from ntkcore import finite

    net = finite.MLP([D, *WIDTHS, 1], "relu", W_std=W_STD, b_std=B_STD)
    net.parameters = [(params[f"w{m}"], params[f"b{m}"]) for m in range(len(WIDTHS) + 1)]
    return lambda x: net.ntk(x, dtype=np.float32)


def make_ntk_nt(params, implementation):
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    layers = []
    for w in WIDTHS:
        layers += [stax.Dense(w, W_std=W_STD, b_std=B_STD, parameterization="ntk"), stax.Relu()]
    layers += [stax.Dense(1, W_std=W_STD, b_std=B_STD, parameterization="ntk")]
    _, apply_fn, _ = stax.serial(*layers)
    # stax Dense params are (W of shape (n_in, n_out), b of shape (n_out,)); Relu has none.
    p, m = [], 0
    for layer in range(2 * len(WIDTHS) + 1):
        if layer % 2 == 0:
            p.append((jnp.asarray(params[f"w{m}"].T, jnp.float32), jnp.asarray(params[f"b{m}"], jnp.float32)))
            m += 1
        else:
            p.append(())
    impl = getattr(nt.NtkImplementation, implementation)
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=impl))
    return lambda x: np.asarray(jax.block_until_ready(fn(jnp.asarray(x), None, p)))


def make_ntk_torch(params):
    import torch
    from torch.func import jacrev, vmap

    torch.set_num_threads(os.cpu_count())
    layers = []
    for n_in, n_out in zip([D, *WIDTHS], [*WIDTHS, 1]):
        layers.append(torch.nn.Linear(n_in, n_out))
    names = {}
    for m, _lin in enumerate(layers):
        names[f"{m}.weight"] = torch.tensor(params[f"w{m}"], dtype=torch.float32)
        names[f"{m}.bias"] = torch.tensor(params[f"b{m}"], dtype=torch.float32)

    def f(p, x):
        h = x
        for m, n_in in enumerate([D, *WIDTHS]):
            h = (W_STD / n_in**0.5) * h @ p[f"{m}.weight"].T + B_STD * p[f"{m}.bias"]
            if m < len(WIDTHS):
                h = torch.relu(h)
        return h[..., 0]

    def ntk(x):
        x = torch.tensor(x)
        theta = torch.zeros(len(x), len(x))
        with torch.no_grad():
            # One parameter tensor at a time: J_p (N x |p|), theta += J_p J_p^T.
            for name in names:

                def f_one(q, xi, name=name):
                    return f({**names, name: q}, xi)

                j = vmap(jacrev(f_one), in_dims=(None, 0))(names[name], x).reshape(len(x), -1)
                theta += j @ j.T
                del j
        return theta.numpy()

    return ntk


def worker(args):
    params = dict(np.load(args.params))
    x = np.random.default_rng(1).standard_normal((args.n, D)).astype(np.float32)
    if args.lib == "ntkcore":
        ntk = make_ntk_ntkcore(params)
    elif args.lib.startswith("neural-tangents"):
        ntk = make_ntk_nt(params, args.lib.split(":")[1])
    else:
        ntk = make_ntk_torch(params)
    del params
    before = rss_mib()
    t0 = time.perf_counter()
    theta = ntk(x)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        theta = ntk(x)
        times.append(time.perf_counter() - t0)
    np.save(args.out, np.asarray(theta, dtype=np.float64))
    print(
        json.dumps(
            dict(
                lib=args.lib,
                n=args.n,
                first_s=first,
                best_s=min(times) if times else first,
                rss_before_mib=before,
                peak_mib=peak_mib(),
            )
        )
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--lib")
    ap.add_argument("--n", type=int)
    ap.add_argument("--params")
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ntkcore-python", default=sys.executable)
    ap.add_argument("--nt-python")
    ap.add_argument("--torch-python")
    ap.add_argument("--sizes", default="256,1000,2000")
    ap.add_argument("--nt-implementations", default="STRUCTURED_DERIVATIVES,NTK_VECTOR_PRODUCTS,JACOBIAN_CONTRACTION")
    ap.add_argument(
        "--max-jacobian-gib",
        type=float,
        default=6.0,
        help="skip a Jacobian-based run whose float32 Jacobian would exceed this "
        "(torch: one layer's; neural-tangents JACOBIAN_CONTRACTION: all of it)",
    )
    ap.add_argument(
        "--slow-repeats",
        type=int,
        default=0,
        help="repeats of the other libraries for N >= 1000 (their first call "
        "then stands for the best; it includes neural-tangents' JIT compilation)",
    )
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default="")
    ap.add_argument("--workdir", default="/tmp/bench_empirical")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)  # ntkcore.finite.MLP(seed=0)'s draw order
    params = {}
    for m, (n_in, n_out) in enumerate(zip([D, *WIDTHS], [*WIDTHS, 1])):
        params[f"w{m}"] = rng.standard_normal((n_out, n_in))
        params[f"b{m}"] = rng.standard_normal(n_out)
    np.savez(work / "params.npz", **params)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    jobs = [("ntkcore", args.ntkcore_python)]
    if args.nt_python:
        jobs += [(f"neural-tangents:{impl}", args.nt_python) for impl in args.nt_implementations.split(",")]
    if args.torch_python:
        jobs.append(("torch", args.torch_python))
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for lib, python in jobs:
            n_params = sum(a.size for a in params.values())
            jac_gib = {
                "torch": n * 1024 * 1024 * 4 / 2**30,
                "neural-tangents:JACOBIAN_CONTRACTION": n * n_params * 4 / 2**30,
            }.get(lib, 0.0)
            if jac_gib > args.max_jacobian_gib:
                results.append(dict(lib=lib, n=n, skipped=f"its Jacobian would need {jac_gib:.1f} GiB"))
                continue
            repeats = args.repeats if lib == "ntkcore" or n < 1000 else args.slow_repeats
            out = work / f"{lib.replace(':', '_')}_{n}.npy"
            cmd = [
                python,
                __file__,
                "--worker",
                "--lib",
                lib,
                "--n",
                str(n),
                "--params",
                str(work / "params.npz"),
                "--out",
                str(out),
                "--repeats",
                str(repeats),
            ]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                results.append(dict(lib=lib, n=n, skipped=f"timeout {args.timeout:.0f} s"))
                continue
            if proc.returncode != 0:
                errors = [line for line in proc.stderr.splitlines() if "Error" in line] or ["?"]
                results.append(dict(lib=lib, n=n, skipped=f"failed: {errors[-1].strip()}"))
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            ref = np.load(work / f"ntkcore_{n}.npy")
            res["max_rel_diff_vs_ntkcore"] = float(np.abs(np.load(out) - ref).max() / np.abs(ref).max())
            results.append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)
    lines = [
        "| N | library | first call (s) | best call (s) | RSS before (MiB) | peak RSS (MiB) "
        "| max rel. diff vs ntkcore |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['n']} | {r['lib']} | skipped: {r['skipped']} | | | | |")
        else:
            lines.append(
                f"| {r['n']} | {r['lib']} | {r['first_s']:.3f} | {r['best_s']:.3f} | "
                f"{r['rss_before_mib']:.0f} | {r['peak_mib']:.0f} | {r['max_rel_diff_vs_ntkcore']:.1e} |"
            )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
