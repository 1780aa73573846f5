"""Prefill with OpenBLAS's threads spinning after each call, or not: the same GGUF model under three settings.

    python benchmarks/blas_spin.py FILE.gguf [--prompt 64] [--reps 2]

A prefill alternates OpenBLAS calls (the attention projections, many tokens) with Numba kernels (the experts).
OpenBLAS's threads spin for 2^OPENBLAS_THREAD_TIMEOUT cycles after a call (28 unless set) before they sleep,
holding cores the Numba threads want. Each setting runs in its own process (OpenBLAS reads the variable once,
when NumPy loads it): the model is loaded, one warm-up prefill reads its pages and compiles, then REPS timed
prefills of PROMPT random tokens on a fresh KV cache (logits of the last position). Prints the CPU flags, the
best and all times per setting, and the share spent in the Numba MoE kernel and in `kernels.linear`.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

SETTINGS = {
    "OpenBLAS default (spin 2^28 cycles)": {"OPENBLAS_THREAD_TIMEOUT": "28"},
    "OPENBLAS_THREAD_TIMEOUT=4 (miniqwen3 sets it)": {"OPENBLAS_THREAD_TIMEOUT": "4"},
    "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_THREAD_TIMEOUT": "4", "OPENBLAS_NUM_THREADS": "1"},
}


def worker(path: str, prompt: int, reps: int) -> dict:
    import time

    import numpy as np

    import miniqwen3
    from profile_decode import TimedKernels

    spent = collections.Counter()
    model = miniqwen3.load(path, backend="numba")
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, prompt)
    model.forward(ids, model.new_cache(), last_only=True)
    model.ops = TimedKernels(spent)
    times, shares = [], []
    for _ in range(reps):
        spent.clear()
        t = time.perf_counter()
        model.forward(ids, model.new_cache(), last_only=True)
        times.append(time.perf_counter() - t)
        shares.append({k: spent[k] / times[-1] for k in ("moe_experts", "linear")})
    return {"seconds": times, "shares": shares}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.file, args.prompt, args.reps)))
        return
    from bench_gguf import cpu_info
    print(f"{os.cpu_count()} CPUs, SIMD: {' '.join(cpu_info()['simd_present'])}; {args.file}, prefill {args.prompt} tokens, "
          f"best of {args.reps} after a warm-up")
    print("| setting | prefill s (best) | tok/s | all runs s | MoE kernel share | linear share |")
    print("|---|---:|---:|---|---:|---:|")
    for name, extra in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")} | extra
        done = subprocess.run([sys.executable, __file__, args.file, "--prompt", str(args.prompt), "--reps",
                               str(args.reps), "--worker"], capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        best = min(range(len(r["seconds"])), key=lambda i: r["seconds"][i])
        s, share = r["seconds"][best], r["shares"][best]
        print(f"| {name} | {s:.2f} | {args.prompt / s:.2f} | {', '.join(f'{t:.2f}' for t in r['seconds'])} | "
              f"{share['moe_experts']:.0%} | {share['linear']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
