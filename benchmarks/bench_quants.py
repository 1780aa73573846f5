"""How fast the decode row kernels read each GGUF block type: G weights/s, one core and all cores.

    python benchmarks/bench_quants.py [--rows 4096] [--width 2048]

For each block type, a random [ROWS, WIDTH] weight (random bytes with sane fp16 scales) is multiplied by one
vector with `kernels.linear` (decode's path: `quants.rows_dot4`, row after row): "cache" repeats one matrix (it
stays in L2/L3), "RAM" goes once over 160 MiB of such matrices. Median of the repeats, in one process; prints
the CPU's SIMD flags. A result is checked against `quants.dequantize` first.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from miniqwen3 import kernels, quants

from bench_gguf import cpu_info

KINDS = ("Q4_K", "Q6_K", "Q8_0", "Q5_K", "Q4_0", "Q5_0")


def random_weight(kind: int, rows: int, width: int, rng) -> quants.QuantWeight:
    """Random blocks whose fp16 scales (d, dmin) are small normal numbers, not random bits (no inf or nan)."""
    n = rows * width // quants.BLOCK_WEIGHTS[kind]
    blocks = rng.integers(0, 256, (n, quants.BLOCK_BYTES[kind]), dtype=np.uint8)
    scales = (rng.standard_normal((n, 2)) * 0.002).astype(np.float16).view(np.uint8)
    at = {quants.Q4_K: slice(0, 4), quants.Q5_K: slice(0, 4), quants.Q6_K: slice(208, 210)}.get(kind, slice(0, 2))
    blocks[:, at] = scales[:, :at.stop - at.start]
    return quants.QuantWeight(blocks.reshape(rows, -1), kind)


def median_seconds(f, repeat: int) -> float:
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--width", type=int, default=2048)
    args = ap.parse_args()
    cores = numba.get_num_threads()
    print(f"SIMD: {' '.join(cpu_info()['simd_present'])}; {cores} threads; [{args.rows}, {args.width}] weights, one token")
    print(f"| type | bytes/weight | 1 core, cache | 1 core, RAM | {cores} cores, cache | {cores} cores, RAM |")
    print("|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.width)).astype(np.float32)
    for name in KINDS:
        kind = getattr(quants, name)
        w = random_weight(kind, args.rows, args.width, rng)
        expected = quants.dequantize(w) @ x[0]
        got = kernels.linear(x, w)[0]
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), name
        many = [w] + [random_weight(kind, args.rows, args.width, rng) for _ in range(max(1, 160 * 2**20 // w.nbytes) - 1)]
        n = args.rows * args.width
        row = [name, f"{w.nbytes / n:.4f}"]
        for threads in (1, cores):
            numba.set_num_threads(threads)
            cache = median_seconds(lambda: kernels.linear(x, w), 30)
            ram = median_seconds(lambda: [kernels.linear(x, m) for m in many], 3) / len(many)
            row += [f"{n / cache / 1e9:.1f}", f"{n / ram / 1e9:.1f}"]
        numba.set_num_threads(cores)
        print("| " + " | ".join([row[0], row[1], row[2], row[3], row[4], row[5]]) + " |", flush=True)


if __name__ == "__main__":
    main()
