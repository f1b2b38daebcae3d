#!/usr/bin/env python3
"""Benchmark ntkcore's CNTK (``ntkcore.serial``) against neural-tangents' stax on CPU.

Each library runs in its own fresh subprocess (so the peak RSS is that run's alone), float64
unless ``--dtype float32``, on the same thread count (OMP/OPENBLAS threads, ntkcore's
``n_threads``, and CPU affinity for XLA, as in bench_vs_neural_tangents.py):

* ntkcore: ``ntkcore.serial(*layers).kernels(x, dtype=..., n_threads=T)``;
* neural-tangents 0.6.5 in its own virtual environment (``--nt-python``, created as the
  docstring of bench_vs_neural_tangents.py says): ``kernel_fn(x, None, ("nngp", "ntk"))``,
  ``nt.batch(kernel_fn, batch_size=--nt-batch)`` when ``--nt-batch`` > 0, after a warm-up on 4
  inputs, forced with ``block_until_ready``.

Architectures (W_std = sqrt(2), b_std = 0.1 for every Conv and the Dense readout; ReLU):
  gap5     5 x [Conv(3 x 3, SAME), relu], GlobalAvgPool, Dense
  myrtle   2 x [Conv(3 x 3, SAME), relu], AvgPool(2, stride 2), Conv(3 x 3, SAME), relu,
           GlobalAvgPool, Dense
  flatten  2 x [Conv(3 x 3, SAME), relu], Flatten, Dense
Data: ``digits`` (the bundled 8 x 8 x 1 images, first N) or ``gauss16`` (16 x 16 x 3 standard
normal images, seed 0).  The parent prints time, peak RSS, the ratio and max |a - b| / max |b|
between the libraries' NTKs.

Example::

    python bench/bench_cnn.py --arch gap5 --data digits --n 100 200 --threads 2
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

TAG = "BENCH_RESULT_JSON:"


def layers_ntkcore(arch):
    from ntkcore import layers as L

    c = dict(padding="SAME", W_std=2**0.5, b_std=0.1)
    if arch == "gap5":
        body = [L.Conv((3, 3), **c), "relu"] * 5 + [L.GlobalAvgPool()]
    elif arch == "myrtle":
        body = [L.Conv((3, 3), **c), "relu"] * 2 + [
            L.AvgPool((2, 2), strides=(2, 2)),
            L.Conv((3, 3), **c),
            "relu",
            L.GlobalAvgPool(),
        ]
    else:
        body = [L.Conv((3, 3), **c), "relu"] * 2 + [L.Flatten()]
    return [*body, L.Dense(W_std=2**0.5, b_std=0.1)]


def layers_nt(arch):
    from neural_tangents import stax

    conv = lambda: stax.Conv(1, (3, 3), padding="SAME", W_std=2**0.5, b_std=0.1)  # noqa: E731
    if arch == "gap5":
        body = [conv(), stax.Relu()] * 5 + [stax.GlobalAvgPool()]
    elif arch == "myrtle":
        body = [conv(), stax.Relu()] * 2 + [
            stax.AvgPool((2, 2), strides=(2, 2)),
            conv(),
            stax.Relu(),
            stax.GlobalAvgPool(),
        ]
    else:
        body = [conv(), stax.Relu()] * 2 + [stax.Flatten()]
    return stax.serial(*body, stax.Dense(1, W_std=2**0.5, b_std=0.1))


def inputs(data, n):
    import numpy as np

    if data == "digits":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
        with np.load(
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "ntkcore", "data", "optdigits.npz")
        ) as f:
            images = f["images"].astype(np.float64) / 16.0
        return images[:n].reshape(-1, 8, 8, 1)
    return np.random.default_rng(0).standard_normal((n, 16, 16, 3))


def child(args):
    import numpy as np

    x = inputs(args.data, args.n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.lib == "ntkcore":
        import ntkcore

        net = ntkcore.serial(*layers_ntkcore(args.arch))
        start, cpu = time.perf_counter(), time.process_time()
        k = net.kernels(x, dtype=args.dtype, n_threads=args.threads)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        ntk = np.asarray(k.ntk, np.float64)
    else:
        import jax

        jax.config.update("jax_enable_x64", args.dtype == "float64")
        import neural_tangents as nt

        _, _, kernel_fn = layers_nt(args.arch)
        fn = nt.batch(kernel_fn, batch_size=args.nt_batch) if args.nt_batch > 0 else kernel_fn
        xj = jax.numpy.asarray(x, dtype=args.dtype)
        jax.block_until_ready(kernel_fn(xj[:4], None, ("nngp", "ntk")))
        start, cpu = time.perf_counter(), time.process_time()
        k = fn(xj, None, ("nngp", "ntk"))
        jax.block_until_ready(k)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        ntk = np.asarray(k.ntk, np.float64)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.save, ntk)
    print(TAG + json.dumps(dict(wall=wall, cpu=cpu, peak_mb=peak / 1024, before_mb=before / 1024)))


def run(lib, args, n, save):
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        OPENBLAS_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
    )
    python = sys.executable if lib == "ntkcore" else args.nt_python
    cmd = [
        python,
        os.path.abspath(__file__),
        "--child",
        lib,
        "--arch",
        args.arch,
        "--data",
        args.data,
        "--n",
        str(n),
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
        "--nt-batch",
        str(args.nt_batch),
        "--save",
        save,
    ]
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    try:
        out = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
    except subprocess.TimeoutExpired:
        return None, f"timeout {args.timeout} s"
    for line in out.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG) :]), None
    return None, (out.stderr.strip().splitlines() or ["failed"])[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["gap5", "myrtle", "flatten"], default="gap5")
    parser.add_argument("--data", choices=["digits", "gauss16"], default="digits")
    parser.add_argument("--n", type=int, nargs="+", default=[100])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--libs", nargs="+", default=["ntkcore", "nt"])
    parser.add_argument("--nt-python", default="/work/ntbench-venv/bin/python")
    parser.add_argument("--nt-batch", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--child", default=None)
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    if args.child:
        args.lib, args.n = args.child, args.n[0]
        child(args)
        return
    import numpy as np

    print(f"arch {args.arch}, data {args.data}, dtype {args.dtype}, threads {args.threads}, nt batch {args.nt_batch}")
    print("| N | library | time (s) | peak RSS (MB) | CPU/wall | speed-up | max rel. diff of NTK |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for lib in args.libs:
                save = os.path.join(tmp, f"{lib}.npy")
                res, err = run(lib, args, n, save)
                results[lib] = (res, err, np.load(save) if res else None)
            base = results.get("nt", (None, None, None))
            for lib, (res, err, ntk) in results.items():
                if res is None:
                    print(f"| {n} | {lib} | failed: {err} | | | | |")
                    continue
                ratio = f"{base[0]['wall'] / res['wall']:.1f}x" if base[0] and lib != "nt" else ""
                diff = ""
                if base[2] is not None and lib != "nt":
                    diff = f"{np.max(np.abs(ntk - base[2])) / np.max(np.abs(base[2])):.1e}"
                print(
                    f"| {n} | {lib} | {res['wall']:.3f} | {res['peak_mb']:.0f} | {res['cpu'] / res['wall']:.2f} | "
                    f"{ratio} | {diff} |"
                )


if __name__ == "__main__":
    main()
