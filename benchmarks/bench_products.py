"""Prefill's matrix products side by side: GFLOP/s of x @ w.T for bf16 weights, three ways, in one process.

    python benchmarks/bench_products.py [--repeat 15]

- "OpenBLAS sgemm, fp32 weights": NumPy's matmul on weights already widened to fp32 (the bound of the fp32
  products' approach, which widens bf16 tiles and hands them to BLAS);
- "fp32 products": `kernels.linear` on bf16 weights and fp32 activations (`matmul_precision="fp32"`);
- "bf16 products": `kernels.linear` on bf16 activations (`matmul_precision="bf16"`: `bf16_products`, AVX512-BF16;
  what the default "auto" picks for bf16 weights on such a CPU).

Shapes: Qwen3-0.6B's MLP at a 512-token prompt (gate/up, down) and a Qwen3-30B-A3B expert's share of one
(32 tokens; 2048 -> 768 and 768 -> 2048), on all cores and on one. Median of the repeats; the bf16 result is
checked against an fp64 product of the same rounded values first. Prints the CPU's SIMD flags; writes
benchmarks/results/products.md.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from miniqwen3 import bf16_products, kernels
from miniqwen3.weights import as_float32, float32_to_bf16

from bench_gguf import cpu_info
from bench_quants import median_seconds

SHAPES = [("0.6B gate/up, 512 tokens", 512, 1024, 3072), ("0.6B down, 512 tokens", 512, 3072, 1024),
          ("30B-A3B expert gate/up, 32 tokens", 32, 2048, 768), ("30B-A3B expert down, 32 tokens", 32, 768, 2048)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "products.md")
    args = ap.parse_args()
    info = cpu_info()
    rng = np.random.default_rng(0)
    lines = [f"# Prefill products, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}", "",
             f"`python benchmarks/bench_products.py --repeat {args.repeat}`. {info['model']}, {info['cpus']} CPUs, "
             f"SIMD {' '.join(info['simd_present'])}; AVX512-BF16 kernels: "
             f"{'yes' if bf16_products.AVAILABLE else 'no (bf16 products computed in fp32)'}. GFLOP/s, median of "
             f"{args.repeat}.", "",
             "| product (tokens x in -> out) | cores | OpenBLAS sgemm, fp32 weights | fp32 products "
             "| bf16 products | bf16 / fp32 products |", "|---|---:|---:|---:|---:|---:|"]
    cores = numba.get_num_threads()
    for name, T, IN, OUT in SHAPES:
        x = rng.standard_normal((T, IN), np.float32)
        w = float32_to_bf16(rng.standard_normal((OUT, IN), np.float32))
        w32, xb = as_float32(w), float32_to_bf16(x)
        expected = as_float32(xb).astype(np.float64) @ as_float32(w).astype(np.float64).T
        got = kernels.linear(xb, w)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), name
        flop = 2 * T * IN * OUT
        for n in (cores, 1):
            numba.set_num_threads(n)
            with threadpool_limits(n):
                g = [flop / median_seconds(f, args.repeat) / 1e9
                     for f in (lambda: x @ w32.T, lambda: kernels.linear(x, w), lambda: kernels.linear(xb, w))]
            lines.append(f"| {name} ({T} x {IN} -> {OUT}) | {n} | {g[0]:.0f} | {g[1]:.0f} | {g[2]:.0f} | "
                         f"{g[2] / g[1]:.2f}x |")
            print(lines[-1], flush=True)
        numba.set_num_threads(cores)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
