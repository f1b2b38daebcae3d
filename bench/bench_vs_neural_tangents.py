#!/usr/bin/env python3
"""Benchmark ntkcore against neural-tangents (NNGP + NTK Gram matrices of deep FC nets).

For every configuration (activation x N x depth) each library runs in its OWN fresh
subprocess, so the reported peak RSS belongs to that run alone:

* neural-tangents 0.6.5 in a separate virtual environment (``--nt-python``), float64
  (``jax_enable_x64``), ``kernel_fn(x, None, ("nngp", "ntk"))``, forced with
  ``block_until_ready``. A warm-up call on a tiny input of the same depth runs first.
* ntkcore in the current interpreter (``--ntkcore-python``, default ``sys.executable``):
  ``ntkcore.FullyConnected(depth, activation=..., W_std=..., b_std=...).kernels(
  x, dtype=np.float64, n_threads=T)``. If ntkcore cannot be imported its column says so.

Network (docs/math/1-parameterization.md, NTK parameterization): [Dense(W_std, b_std) -> act] * depth ->
Dense(1, W_std, b_std); relu: W_std = sqrt(2), b_std = 0.1; erf and tanh: W_std = 1.5,
b_std = 0.1.  tanh has no closed form: neural-tangents runs
``stax.ElementwiseNumerical(jnp.tanh, deg=--nt-deg)`` (default 25, its recommended degree),
ntkcore its Gauss-Hermite family at the automatic degree.

Error against a reference: the first 16 points' 16 x 16 block of each result is compared
with ``ntkcore.reference`` (plain numpy, docs/math/3-dual-maps.md closed forms; for tanh the literal
2-D Gauss-Hermite rule of docs/math/4-gauss-hermite.md at degree 350, itself accurate to ~1e-12 at the
variances met here), max |a - ref| / max |ref| over the
off-diagonal entries.
Inputs: ``np.random.default_rng(seed).standard_normal((N, 64))``, float64.

Each child reports the wall time of the kernel computation only (no imports, no input
generation), the CPU time it used (CPU/wall shows how many cores were really busy),
its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS just before the
computation (so ``peak - before`` is what the computation itself needed, provided the
peak happened during the computation, which it does for any non-tiny N). Children also
save the first 64 rows of both kernels; the parent prints max |a - b| / max |b|
between the libraries over OFF-diagonal entries (neural-tangents' float64 diagonal is
only ~1e-8 accurate, docs/math/3a-collinearity.md).

Thread limits (default ``--threads 2``): OMP/OPENBLAS/MKL_NUM_THREADS, ntkcore's
``n_threads``, and for XLA ``--xla_force_host_platform_device_count=1`` plus CPU affinity
restricted to ``--threads`` cores with ``os.sched_setaffinity`` before jax is imported
(XLA's CPU thread pools are sized from the schedulable CPUs; XLA has no thread-count flag
that covers all of its pools). A child is killed when it exceeds ``--timeout`` seconds or
``--max-rss-gb`` resident memory; its table cell then reads "failed: reason".

Creating the neural-tangents venv (outside the repository; tensorflow ~1.5 GB is pulled
in by neural-tangents and is expected; neural-tangents 0.6.5 imports only with exactly
these jax/jaxlib/tf2jax versions)::

    python3 -m venv /work/ntbench-venv
    nice -n 10 /work/ntbench-venv/bin/pip install --upgrade pip
    nice -n 10 /work/ntbench-venv/bin/pip install "neural-tangents==0.6.5" \
        "jax==0.5.3" "jaxlib==0.5.3" "tf2jax==0.3.7"

Examples::

    python bench/bench_vs_neural_tangents.py --sizes 1000 --depths 3 10
    python bench/bench_vs_neural_tangents.py --sizes 1000 4000 8000 --timeout 1800
    python bench/bench_vs_neural_tangents.py --libs nt --sizes 4000 --nt-mode jit
"""

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

D_IN = 64
PARAMS = {"relu": (math.sqrt(2.0), 0.1), "erf": (1.5, 0.1), "tanh": (1.5, 0.1)}
REFERENCE_ROWS = 16
REFERENCE_DEGREE = 350  # numpy's hermgauss overflows beyond ~350 nodes
ROWS_SAVED = 64
RESULT_TAG = "BENCH_RESULT_JSON:"


# --------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------


def _rss_now_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _n_threads_now():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child_nt(cfg, x, x_tiny):
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax

    if cfg["activation"] == "tanh":
        import jax.numpy as jnp

        act = stax.ElementwiseNumerical(jnp.tanh, deg=cfg["nt_deg"])
    else:
        act = {"relu": stax.Relu, "erf": stax.Erf}[cfg["activation"]]()
    w, b = cfg["W_std"], cfg["b_std"]
    layers = [stax.Dense(512, W_std=w, b_std=b), act] * cfg["depth"]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w, b_std=b))
    if cfg["nt_mode"] == "jit":
        kernel_fn = jax.jit(kernel_fn, static_argnames="get")

    def compute(inp):
        nngp, ntk = kernel_fn(inp, None, ("nngp", "ntk"))
        nngp.block_until_ready()
        ntk.block_until_ready()
        return nngp, ntk

    # warm-up / JIT of every layer type at this depth; XLA compiles per shape, so the
    # first call at the real N still compiles (~1 s), unless --warmup-full
    compute(x if cfg.get("warmup_full") else x_tiny)
    info = {"jax": jax.__version__, "devices": len(jax.devices())}

    return compute, (lambda res: tuple(np.asarray(k) for k in res)), info


def _child_ntkcore(cfg, x, x_tiny):
    import ntkcore
    import numpy as np

    net = ntkcore.FullyConnected(cfg["depth"], activation=cfg["activation"], W_std=cfg["W_std"], b_std=cfg["b_std"])

    def compute(inp):
        k = net.kernels(inp, dtype=np.float64, n_threads=cfg["threads"])
        return k.nngp, k.ntk

    compute(x if cfg.get("warmup_full") else x_tiny)  # warm-up (first-touch of any lazily built tables)
    info = {"ntkcore": getattr(ntkcore, "__version__", "?")}
    return compute, (lambda res: tuple(np.asarray(k) for k in res)), info


def child_main(cfg):
    out = {"ok": False}
    try:
        import numpy as np

        x = np.random.default_rng(cfg["seed"]).standard_normal((cfg["N"], D_IN))
        x_tiny = np.random.default_rng(cfg["seed"] + 1).standard_normal((8, D_IN))
        lib = cfg["lib"]
        try:
            setup = {"nt": _child_nt, "ntkcore": _child_ntkcore}[lib]
            compute, to_numpy, info = setup(cfg, x, x_tiny)
        except ImportError as e:
            out.update(error=f"import failed: {e}", import_error=True)
            print(RESULT_TAG + json.dumps(out), flush=True)
            return 3
        out.update(info)
        times, cpus = [], []
        rss_before = _rss_now_kb()
        for _ in range(cfg["repeats"]):
            res = None
            c0 = _cpu_s()
            t0 = time.perf_counter()
            res = compute(x)
            nngp, ntk = to_numpy(res)
            times.append(time.perf_counter() - t0)
            cpus.append(_cpu_s() - c0)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.update(
            ok=True,
            times=times,
            cpu=cpus,
            rss_before_kb=rss_before,
            peak_kb=peak_kb,
            threads_seen=_n_threads_now(),
            dtype=str(nngp.dtype),
            shape=list(nngp.shape),
        )
        if cfg.get("save"):
            np.save(cfg["save"] + "_nngp.npy", np.array(nngp[:ROWS_SAVED], dtype=np.float64))
            np.save(cfg["save"] + "_ntk.npy", np.array(ntk[:ROWS_SAVED], dtype=np.float64))
        out["finite"] = bool(np.isfinite(nngp).all() and np.isfinite(ntk).all())
    except MemoryError:
        out.update(error="MemoryError")
    except Exception as e:  # reported in the table, not a crash
        out.update(error=f"{type(e).__name__}: {e}"[:300])
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------


def _proc_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_env(threads):
    env = dict(os.environ)
    t = str(threads)
    for k in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ):
        env[k] = t
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"  # neural-tangents imports tensorflow
    env["TF_NUM_INTRAOP_THREADS"] = t
    env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def run_child(python, cfg, timeout, max_rss_kb, threads):
    cmd = [python, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    t0 = time.time()
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(threads),
            start_new_session=True,
            text=True,
        )
    except OSError as e:
        return {"ok": False, "error": f"cannot start {python}: {e.strerror}", "import_error": True}
    killed = None
    max_seen = 0
    # poll, so that runaway memory is stopped before it takes the machine down
    while proc.poll() is None:
        rss = _proc_rss_kb(proc.pid)
        max_seen = max(max_seen, rss)
        if rss > max_rss_kb:
            killed = f"RSS > {max_rss_kb / 2**20:.1f} GiB (killed)"
        elif time.time() - t0 > timeout:
            killed = f"timeout > {timeout:.0f} s (killed)"
        if killed:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    if killed:
        return {"ok": False, "error": killed}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    rc = proc.returncode
    if rc is not None and rc < 0:
        why = signal.Signals(-rc).name
        if -rc == signal.SIGKILL:
            why += " (likely out of memory)"
        return {"ok": False, "error": f"killed by {why}"}
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"ok": False, "error": f"exit {rc}: {tail[:200]}"}


def _fmt_time(r):
    if not r.get("ok"):
        return "failed: " + r.get("error", "?")
    ts = r["times"]
    s = f"{min(ts):.3f} s"
    if len(ts) > 1:
        s += f" (1st {ts[0]:.3f})"
    return s


def _fmt_mem(r):
    if not r.get("ok"):
        return "-"
    return f"{r['peak_kb'] / 2**20:.2f} GiB (+{(r['peak_kb'] - r['rss_before_kb']) / 2**20:.2f})"


def _ratio(a, b, key):
    if not (a.get("ok") and b.get("ok")):
        return "-"
    if key == "time":
        va, vb = min(a["times"]), min(b["times"])
        return f"{va / vb:.2f}x" if vb > 0 else "-"
    s = f"{a['peak_kb'] / b['peak_kb']:.2f}x" if b["peak_kb"] > 0 else "-"
    ia, ib = a["peak_kb"] - a["rss_before_kb"], b["peak_kb"] - b["rss_before_kb"]
    if ib > 0:
        s += f" (+: {ia / ib:.2f}x)"
    return s


def _rel_diff(prefix_a, prefix_b):
    import numpy as np

    worst = []
    for name in ("nngp", "ntk"):
        fa, fb = f"{prefix_a}_{name}.npy", f"{prefix_b}_{name}.npy"
        if not (os.path.exists(fa) and os.path.exists(fb)):
            return "-"
        a, b = np.load(fa), np.load(fb)
        off = np.ones(a.shape, dtype=bool)
        m = min(a.shape)
        off[np.arange(m), np.arange(m)] = False
        # The golden files' relerr: max |a - b| / max |b| (entries near zero would make an
        # elementwise ratio meaningless for erf, whose kernels change sign).
        worst.append(float(np.max(np.abs(a - b)[off]) / np.max(np.abs(b))))
    return f"{worst[0]:.1e} / {worst[1]:.1e}"


def _reference(act, depth, w, b, seed):
    """The reference kernels of the first REFERENCE_ROWS points (see the docstring)."""
    import ntkcore
    import numpy as np
    from ntkcore import reference

    x = np.random.default_rng(seed).standard_normal((REFERENCE_ROWS, D_IN))
    activation = ntkcore.activations.Numerical("tanh", deg=REFERENCE_DEGREE) if act == "tanh" else act
    return reference.kernels(ntkcore.FullyConnected(depth, activation, W_std=w, b_std=b), x)


def _reference_error(prefix, ref):
    import numpy as np

    worst = []
    for name in ("nngp", "ntk"):
        path = f"{prefix}_{name}.npy"
        if not os.path.exists(path):
            return "-"
        a = np.load(path)[:REFERENCE_ROWS, :REFERENCE_ROWS]
        want = getattr(ref, name)
        off = ~np.eye(REFERENCE_ROWS, dtype=bool)
        worst.append(float(np.max(np.abs(a - want)[off]) / np.max(np.abs(want))))
    return f"{worst[0]:.1e} / {worst[1]:.1e}"


def parent_main(args):
    libs = args.libs
    tmp = tempfile.mkdtemp(prefix="ntbench_")
    pythons = {"nt": args.nt_python, "ntkcore": args.ntkcore_python}
    if "nt" in libs and not os.path.exists(args.nt_python):
        print(f"# neural-tangents python not found: {args.nt_python} (see docstring)", file=sys.stderr)
    skip = {}
    rows = []
    print(
        f"# threads={args.threads} repeats={args.repeats} seed={args.seed} "
        f"nt_mode={args.nt_mode} warmup_full={args.warmup_full} d={D_IN} float64; times are min over repeats; "
        f"RSS = peak (+ increase over RSS before the computation)",
        flush=True,
    )
    try:
        for act in args.activations:
            w, b = PARAMS[act]
            for n in args.sizes:
                for depth in args.depths:
                    label = f"{act} N={n} L={depth}"
                    res = {}
                    for lib in ("nt", "ntkcore"):
                        if lib not in libs:
                            res[lib] = {"ok": False, "error": "not run"}
                            continue
                        if lib in skip:
                            res[lib] = {"ok": False, "error": skip[lib]}
                            continue
                        cfg = dict(
                            lib=lib,
                            activation=act,
                            N=n,
                            depth=depth,
                            W_std=w,
                            b_std=b,
                            seed=args.seed,
                            repeats=args.repeats,
                            threads=args.threads,
                            nt_mode=args.nt_mode,
                            nt_deg=args.nt_deg,
                            warmup_full=args.warmup_full,
                            save=os.path.join(tmp, f"{lib}_{act}_{n}_{depth}"),
                        )
                        # Let the kernel finish releasing the previous child's memory
                        # (gigabytes at large N) before timing the next one.
                        time.sleep(args.settle)
                        r = run_child(pythons[lib], cfg, args.timeout, int(args.max_rss_gb * 2**20), args.threads)
                        if r.get("import_error"):
                            skip[lib] = r["error"]
                            print(f"# skipping {lib}: {r['error']}", flush=True)
                        res[lib] = r
                        if args.verbose:
                            print(f"# {label} {lib}: {json.dumps(r)}", flush=True)
                    diff = "-"
                    if res["nt"].get("ok") and res["ntkcore"].get("ok"):
                        diff = _rel_diff(
                            os.path.join(tmp, f"ntkcore_{act}_{n}_{depth}"), os.path.join(tmp, f"nt_{act}_{n}_{depth}")
                        )
                    ref = _reference(act, depth, w, b, args.seed)
                    errors = [
                        _reference_error(os.path.join(tmp, f"{lib}_{act}_{n}_{depth}"), ref)
                        for lib in ("nt", "ntkcore")
                    ]
                    rows.append(
                        [
                            label,
                            _fmt_time(res["nt"]),
                            _fmt_time(res["ntkcore"]),
                            _ratio(res["nt"], res["ntkcore"], "time"),
                            _fmt_mem(res["nt"]),
                            _fmt_mem(res["ntkcore"]),
                            _ratio(res["nt"], res["ntkcore"], "mem"),
                            diff,
                            *errors,
                        ]
                    )
                    print(
                        f"# done {label}: NT {rows[-1][1]}, {rows[-1][4]}; ntkcore {rows[-1][2]}, {rows[-1][5]}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    header = [
        "config",
        "NT time",
        "ntkcore time",
        "speed (NT/ntkcore)",
        "NT peak RSS",
        "ntkcore peak RSS",
        "memory (NT/ntkcore) (+: of increments)",
        "rel diff off-diag (nngp / ntk)",
        "NT error vs reference (nngp / ntk)",
        "ntkcore error vs reference",
    ]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        cfg = json.loads(sys.argv[2])
        threads = cfg.get("threads", 2)
        try:  # must happen before jax/XLA create their thread pools
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) > threads:
                os.sched_setaffinity(0, cpus[:threads])
        except (AttributeError, OSError):
            pass
        sys.exit(child_main(cfg))

    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8000])
    p.add_argument("--depths", type=int, nargs="+", default=[3, 10])
    p.add_argument("--activations", nargs="+", default=["relu", "erf"], choices=sorted(PARAMS))
    p.add_argument("--libs", nargs="+", default=["nt", "ntkcore"], choices=["nt", "ntkcore"])
    p.add_argument("--repeats", type=int, default=1, help="timed calls per child (min is reported)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument(
        "--max-rss-gb", type=float, default=20.0, help="kill a child whose resident memory exceeds this (GiB)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait before each child (the machine settles after a large run)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--nt-deg", type=int, default=25, help="neural-tangents' Gauss-Hermite degree for tanh (ElementwiseNumerical)"
    )
    p.add_argument("--nt-python", default="/work/ntbench-venv/bin/python")
    p.add_argument("--ntkcore-python", default=sys.executable)
    p.add_argument(
        "--nt-mode",
        choices=["eager", "jit"],
        default="eager",
        help="call neural-tangents' kernel_fn as is (eager, as documented "
        "in its README) or wrapped in jax.jit(static_argnames='get')",
    )
    p.add_argument(
        "--warmup-full",
        action="store_true",
        help="warm up on the real input instead of a tiny one (excludes "
        "neural-tangents' per-shape XLA compilation from the timing; "
        "doubles the run time)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sys.exit(parent_main(p.parse_args()))


if __name__ == "__main__":
    main()
