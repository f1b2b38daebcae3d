"""Empirical NTK of a finite CNN with ntkcore.finite.Network: time and peak memory.

Network: three 3 x 3 SAME convolutions of C channels with ReLU, GlobalAvgPool, a Dense
readout of 10 outputs (NTK parameterization, W_std = sqrt(2), b_std = 0.1), on the first N
8 x 8 digits of ntkcore.datasets.load_digits (one channel), float32.  Each (C, output) runs
in a fresh subprocess so that its peak RSS (getrusage ru_maxrss) is its own.

    python bench/bench_empirical_cnn.py --n 500 --channels 64,256 --outputs trace,full
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(n: int, channels: int, output: str) -> dict:
    import ntkcore
    import numpy as np
    from ntkcore import datasets, finite
    from ntkcore import layers as L

    images, _ = datasets.load_digits()
    x = images[:n].reshape(n, 8, 8, 1).astype(np.float32)
    conv = [L.Conv((3, 3), padding="SAME", W_std=2**0.5, b_std=0.1), "relu"]
    net = ntkcore.serial(*conv, *conv, *conv, L.GlobalAvgPool(), L.Dense(W_std=1.0, b_std=0.1))
    network = finite.Network(net, channels, outputs=10, seed=0, input_shape=(8, 8, 1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    theta = network.ntk(x, output=output)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_params = sum(p.size for p in network.parameters)
    return {
        "n": n,
        "channels": channels,
        "output": output,
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "parameters": int(n_params),
        "theta_shape": list(theta.shape),
        "jacobian_gib_float32": n * 10 * n_params * 4 / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--channels", default="64,256")
    parser.add_argument("--outputs", default="trace,full")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    rows = []
    for channels in map(int, args.channels.split(",")):
        for output in args.outputs.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(args.n), str(channels), output],
                check=True,
                capture_output=True,
                text=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"N={row['n']} C={channels} {output}: {row['seconds']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB "
                f"(before {row['rss_before_mib']:.0f}), {row['parameters']} parameters, "
                f"a float32 Jacobian would take {row['jacobian_gib_float32']:.1f} GiB",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
