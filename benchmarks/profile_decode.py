"""Where a decode step of the numba backend spends its time, and how fast a Numba loop can stream bf16 rows.

    python benchmarks/profile_decode.py [CHECKPOINT] [--q8] [--context 512] [--matmul-precision bf16]

CHECKPOINT (a folder or a GGUF file) defaults to benchmarks/out/qwen3-0.6b (written by bench_engine.py).
Prefills a CONTEXT-token prompt, then times decode steps, per op kind (linear, swiglu, attention, moe_experts;
the rest is NumPy glue), the output head alone, and for a bf16 head a Numba loop that only sums its rows (the
speed a row-by-row decode kernel can stream at).
"""
import argparse
import collections
import time
from pathlib import Path

import numba
import numpy as np
from numba import prange

import miniqwen3
from miniqwen3 import kernels, quants

from bench_gguf import cpu_info

REPO = Path(__file__).resolve().parent.parent


@kernels.parallel_jit
def sum_rows(w, out):
    """out[r] = sum of row r of w (bf16 bits, widened): the reading part of a decode kernel, and nothing else."""
    for r in prange(w.shape[0]):
        row = w[r]
        acc = np.float32(0)
        for j in range(row.size):
            acc += quants.bf16_as_f32(row[j])
        out[r] = acc


class TimedKernels:
    """The kernels module, with the time of every op call added to spent[name] (seconds)."""
    def __init__(self, spent):
        self.spent = spent

    def __getattr__(self, name):
        op = getattr(kernels, name)

        def timed(*a, **k):
            t = time.perf_counter()
            out = op(*a, **k)
            self.spent[name] += time.perf_counter() - t
            return out
        return timed


def seconds(f, repeat):
    f()
    t = time.perf_counter()
    for _ in range(repeat):
        f()
    return (time.perf_counter() - t) / repeat


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default=str(REPO / "benchmarks" / "out" / "qwen3-0.6b"))
    ap.add_argument("--q8", action="store_true", help="quantize to q8_0 first")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--context", type=int, default=512, help="prompt tokens before the timed decode steps")
    ap.add_argument("--matmul-precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = ap.parse_args()

    model = miniqwen3.load(args.checkpoint, backend="numba", matmul_precision=args.matmul_precision)
    if args.q8:
        model.quantize("q8_0")
    cache = model.new_cache()
    cache.reserve(model.config, args.context + 4 * args.steps + 8)
    model.forward(np.arange(100, 100 + args.context), cache, last_only=True)
    step = lambda: model.forward([5], cache, last_only=True)   # noqa: E731
    print(f"{model}, {'q8_0' if args.q8 else 'stored dtype'}, {model.matmul_precision} products, "
          f"{numba.get_num_threads()} threads, "
          f"context {args.context}, SIMD: {' '.join(cpu_info()['simd_present'])}")
    print(f"decode step: {seconds(step, args.steps) * 1e3:.1f} ms")

    spent = collections.Counter()
    model.ops = TimedKernels(spent)
    total = seconds(step, args.steps)
    spent = {k: v / (args.steps + 1) for k, v in spent.items()}   # seconds() makes one extra call
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:12s} {s * 1e3:6.1f} ms")
    print(f"  {'(glue)':12s} {(total - sum(spent.values())) * 1e3:6.1f} ms")
    model.ops = kernels

    head = model.weights.lm_head
    x = np.random.default_rng(0).standard_normal((1, model.config.hidden_size), np.float32)
    s = seconds(lambda: kernels.linear(x, head), 5)
    nbytes = head.nbytes
    print(f"output head alone: {s * 1e3:.1f} ms, {nbytes / s / 1e9:.1f} GB/s")
    if isinstance(head, np.ndarray) and head.dtype == np.uint16:
        out = np.empty(head.shape[0], np.float32)
        s = seconds(lambda: sum_rows(head, out), 5)
        print(f"Numba sum of the head's bf16 rows: {s * 1e3:.1f} ms, {head.nbytes / s / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
