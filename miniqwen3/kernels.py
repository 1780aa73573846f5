"""Numba twins of the hot ops in `ops`: `linear`, `linears`, `swiglu`, `attention`, `moe_experts`, with the same names,
arguments and results (to float32 rounding). `Model.set_backend("numba")` swaps them in.

Four ideas make them fast on a CPU:

- Weights stay as stored (fp32, bf16 bits, or GGUF blocks: Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K) and are widened
  to fp32 where they are used, never as a whole matrix (let alone all experts). Every weight reaches the kernels
  the same way: a GGML type code and its rows as bytes (`quants.row_view`); `quants` reads one row of any type.
  Prefill (many tokens) is compute-bound: a tile of weight rows is widened once into a scratch buffer that
  stays in cache and multiplied with every token (`project`, `matmul_nt`), or a chunk of rows is widened and
  handed to BLAS. Decode (one token) reads each weight once, row after row, widened in registers and used at
  once (`quants.rows_dot`); the Q4_K and Q6_K dots ask for the bytes 2 KiB ahead (the hardware prefetcher
  stops at each 4 KiB page). Work is split over the cores by tiles of rows
  (`prange`), or by whole experts when a MoE block has enough of them.
- Attention streams over blocks of keys with an online softmax, so the T x S score matrix never exists. Decode
  reads each cached key and value as stored (fp32, bf16, Q8_0), widened in registers (`kv_rows`).
- The MoE block sorts its (token, slot) pairs by expert, so each chosen expert's weights are read once per call.
- Few parallel regions, and no thread that spins while another needs its core: small work runs on the calling
  thread (`threads_for`), Numba's OpenMP threads spin only briefly (GOMP_SPINCOUNT, below) and so do
  OpenBLAS's (OPENBLAS_THREAD_TIMEOUT, set in miniqwen3/__init__.py).

The public twins come first in each section, their helpers after them. Every function here is plain Python
over arrays: with NUMBA_DISABLE_JIT=1 it runs as written (slowly), and a notebook can step through it.
Compiled code is cached on disk (cache=True), so only the first process pays the compile time. Speeds are
measured in benchmarks/ (bench_engine.py, bench_gguf.py, bench_quants.py, profile_decode.py, blas_spin.py), not
quoted here.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time

# Numba's OpenMP threads spin-wait after a parallel region (GNU OpenMP: 300,000 spins by default), and so do
# OpenBLAS's threads after a BLAS call: on two cores each side's spinning threads take the cores the other side
# needs, which made a prefill 3x slower. A short spin lets BLAS run; long enough (10,000: a decode's regions
# follow each other within tens of microseconds) that decode's threads are still awake for the next region
# (Qwen3-0.6B decode 1.08-1.09x over 1,000, BLAS prefill 0.97x: benchmarks/README.md). Set before Numba loads the
# OpenMP runtime; a value set by the user wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402

from . import bf16_products, kv_rows, quants, tiles  # noqa: E402
from .kv_rows import CHUNK, key_dots, value_sums  # noqa: E402
from .ops import blas_threads_for, kv_as_float32  # noqa: E402
from .quants import (BF16, Q4_K, Q6_K, Q8_0, bf16_as_f32, row_view, rows_dot, widen_q8_0, widen_row,  # noqa: E402
                     x_aux_into, x_aux_size, _uint32_bits_as_f32)
from .tiles import F32_ROWS, TOKENS, tile_sums  # noqa: E402
from .weights import as_float32, float32_to_bf16  # noqa: E402

# Sums may be reordered (that is what lets LLVM vectorise a dot product); inf and nan keep their meaning,
# which the masked softmax relies on.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
jit = numba.njit(cache=True, fastmath=FASTMATH)
parallel_jit = numba.njit(cache=True, fastmath=FASTMATH, parallel=True)
inline_jit = numba.njit(cache=True, fastmath=FASTMATH, inline="always")   # small helpers of the loops

ROWS = 16         # weight rows per work item of the tile kernels: a [16, IN] fp32 tile stays in L2
BLAS_TOKENS = 16  # from this many tokens on, `linear` hands widened chunks to BLAS
TILE_TOKENS = 2   # from this many tokens on, `project` widens a tile of rows once and multiplies (`matmul_nt`)
CHUNK_BYTES = 32 * 2**20  # fp32 rows widened per BLAS call: whole matrices, except an output head
KEYS = 64         # keys per attention block
QUERY_ROWS = 32   # query rows (tokens x heads sharing a KV head) per attention task
TILE_TOKENS_ATTENTION = 16  # from this many query tokens on, attention multiplies by tiles against transposed keys
MATMUL_ROWS = 16  # from this many query rows on, a value block is transposed and multiplied (`matmul_nt`)
EXPERTS_PER_THREAD = 2  # from this many chosen experts per core on, each core runs whole experts (`experts_whole`)
SERIAL_WORK = 2**20  # multiply-adds below which a kernel runs on the calling thread alone (`threads_for`)


# --- linear and SwiGLU ---------------------------------------------------------------------------

def linear(x: np.ndarray, w) -> np.ndarray:
    """x @ w.T, no bias.  x: [T, IN] fp32, or bf16 bits (uint16: bf16 products, `Model.matmul_precision`),
    w: [OUT, IN] fp32 / fp16 / bf16 bits / QuantWeight -> [T, OUT]

    Few tokens (decode): `linear_tiles`, bound by reading the weights. Many tokens (prefill): bound by
    arithmetic, where BLAS's matmul is faster than anything written here, so widen up to CHUNK_BYTES of rows
    at a time into an fp32 buffer and hand them to BLAS with all the tokens (few, large calls: every parallel
    region costs a synchronisation of the threads). bf16 activations meeting bf16 weights in a prefill run
    AVX512-BF16's products where the CPU has them (`bf16_products`); elsewhere they are widened (exactly) and
    go the fp32 way."""
    check_width("linear", w, x.shape[1])
    if x.dtype == np.uint16:
        if bf16_products_fit(x.shape[0], w):
            with threads_for(x.shape[0] * w.shape[0] * w.shape[1]):
                return bf16_products.linear(x, weight_rows(w)[1], numba.get_num_threads())
        x = as_float32(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] >= BLAS_TOKENS and isinstance(w, np.ndarray) and w.dtype == np.float32:
        with blas_threads_for(x.shape[0] * w.shape[0] * w.shape[1]):
            return x @ w.T
    if x.shape[0] < BLAS_TOKENS:
        return products_by_tiles(x, [weight_rows(w)])[0]
    kind, rows = weight_rows(w)
    (T, IN), OUT = x.shape, rows.shape[0]
    out = np.empty((T, OUT), np.float32)
    n = max(ROWS, CHUNK_BYTES // (4 * IN))
    chunk = scratch(min(OUT, n) * IN).reshape(-1, IN)
    for r0 in range(0, OUT, n):
        r1 = min(OUT, r0 + n)
        with threads_for((r1 - r0) * IN):
            widen_chunk(kind, rows, r0, r1, chunk)
        with blas_threads_for(T * (r1 - r0) * IN):
            if r1 - r0 == OUT:
                np.matmul(x, chunk.T, out=out)
            else:
                out[:, r0:r1] = x @ chunk[:r1 - r0].T
    return out


def linears(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ w.T for w in weights]: one input, several weights (a layer's q_proj, k_proj and v_proj).
    x: [T, IN] as for `linear`, weights: up to 3 of [OUT_i, IN] -> [[T, OUT_i], ...]

    Decode (few tokens): weights of one type are read in one parallel region, from one widened input, their
    tiles of rows shared out over the cores together (`linear_tiles`): for Qwen3-0.6B's q, k and v that is 8 MB
    split evenly instead of 4 + 2 + 2 MB in three regions (benchmarks/README.md). Otherwise one `linear` each."""
    weights = list(weights)
    views = [weight_rows(w) for w in weights]
    if x.shape[0] >= BLAS_TOKENS or len({kind for kind, _ in views}) > 1 or not 1 <= len(weights) <= 3:
        return [linear(x, w) for w in weights]
    for w in weights:
        check_width("linears", w, x.shape[1])
    return products_by_tiles(x, views)


def products_by_tiles(x: np.ndarray, views) -> list[np.ndarray]:
    """x @ w.T for 1 to 3 weights of one type, given as `weight_rows` views, in one call of `linear_tiles`
    (absent weights: 0 rows).  x: [T, IN] fp32 or bf16 bits (widened here, once), T < BLAS_TOKENS"""
    x = np.ascontiguousarray(as_float32(x), dtype=np.float32)
    T, IN = x.shape
    kind, rows = zip(*views)
    outs = [np.empty((T, r.shape[0]), np.float32) for r in rows]
    none, nothing = rows[0][:0], np.empty((T, 0), np.float32)
    w3 = list(rows) + [none] * (3 - len(rows))
    o3 = outs + [nothing] * (3 - len(rows))
    with threads_for(T * sum(r.shape[0] for r in rows) * IN):
        linear_tiles(x, x_aux_rows(x, one_group(T), kind[0], kind[0]), kind[0], w3[0], w3[1], w3[2],
                     o3[0], o3[1], o3[2], numba.get_num_threads())
    return outs


_scratch = np.empty(0, np.float32)


def scratch(n: int) -> np.ndarray:
    """n fp32 values of a buffer kept between calls: a fresh 32 MiB array would cost a page fault per 4 KiB
    page on every call (the kernel zeroes each page on first touch), which is as slow as the widening itself."""
    global _scratch
    if _scratch.size < n:
        _scratch = np.empty(n, np.float32)
    return _scratch[:n]


def swiglu(x: np.ndarray, gate_proj, up_proj, down_proj) -> np.ndarray:
    """The SwiGLU MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).  x: [T, H] -> [T, H]
    Prefill: three `linear`s (BLAS). Decode: the one-expert case of the MoE kernels below, which read a
    row of gate_proj and of up_proj together and apply silu at once.
    x may be bf16 bits (bf16 products): then the hidden activations are rounded to bf16 before down_proj."""
    check_width("swiglu", gate_proj, x.shape[1])
    check_width("swiglu", up_proj, x.shape[1])
    check_width("swiglu", down_proj, gate_proj.shape[-2])
    bf16 = x.dtype == np.uint16
    if x.shape[0] >= BLAS_TOKENS:
        g = linear(x, gate_proj)
        u = linear(x, up_proj)
        with threads_for(16 * g.size):       # an exp and a division: about 16 multiply-adds
            silu_times_rows(g, u)
        return linear(float32_to_bf16(g) if bf16 else g, down_proj)
    x = np.ascontiguousarray(as_float32(x), dtype=np.float32)
    (kg, g), (ku, u), (kd, d) = (weight_rows(w[None]) for w in (gate_proj, up_proj, down_proj))
    starts = one_group(x.shape[0])                         # every token in the group of "expert" 0
    h = np.empty((x.shape[0], g.shape[1]), np.float32)
    out = np.empty_like(x)
    with threads_for(3 * x.shape[0] * g.shape[1] * x.shape[1]):
        experts_gate_up(x, x_aux_rows(x, starts, kg, ku), starts, kg, g, ku, u, h)
        if bf16:
            round_to_bf16(h)
        experts_down(h, x_aux_rows(h, starts, kd, kd), starts, kd, d, out)
    return out


def bf16_products_fit(tokens: int, *weights) -> bool:
    """Whether bf16 activations meet these weights in `bf16_products`' kernels: a prefill (BLAS_TOKENS or more),
    bf16 weights with an even row width and at least its ROWS rows, on a CPU with AVX512-BF16."""
    return (bf16_products.AVAILABLE and tokens >= BLAS_TOKENS
            and all(isinstance(w, np.ndarray) and w.dtype == np.uint16 and w.shape[-1] % 2 == 0
                    and w.shape[-2] >= bf16_products.ROWS for w in weights))


@jit
def round_to_bf16(h):
    """h rounded to bf16 (nearest, ties to even) in place, kept as fp32.  h: C-contiguous fp32 [N, M]"""
    bits = h.view(np.uint32)
    for i in range(bits.shape[0]):
        for j in range(bits.shape[1]):
            bits[i, j] = bf16_products.rounded_high_half(bits[i, j])


@parallel_jit
def linear_tiles(x, xaux, kind, w0, w1, w2, out0, out1, out2, cores):
    """out_i = x @ w_i.T for three weights of one type (0 rows: absent), by tiles of ROWS weight rows (see
    `project`): the tiles of all three, in order, cut into one run of consecutive tiles per core (Numba's
    static schedule), each run with one scratch tile (a tile allocated per step cost 2-18% in decode, four runs).
    x: [T, IN] fp32, xaux: x_aux_rows(x, ...), w_i: [OUT_i, ROW_BYTES] rows of type `kind`, out_i: [T, OUT_i],
    cores: numba.get_num_threads() (asked inside, it would keep the kernel from the disk cache)"""
    n0, n1, n2 = n_tiles(w0), n_tiles(w1), n_tiles(w2)
    n_runs = min(cores, n0 + n1 + n2)
    for run in prange(n_runs):
        tile = np.empty((tile_rows(x.shape[0]), x.shape[1]), np.float32)
        first, last = run * (n0 + n1 + n2) // n_runs, (run + 1) * (n0 + n1 + n2) // n_runs
        project_tiles(x, xaux, kind, w0, out0, first, last, tile)
        project_tiles(x, xaux, kind, w1, out1, first - n0, last - n0, tile)
        project_tiles(x, xaux, kind, w2, out2, first - n0 - n1, last - n0 - n1, tile)


@jit
def n_tiles(w):
    """Tiles of ROWS rows (the last one may be shorter) in a weight [OUT, ROW_BYTES]."""
    return (w.shape[0] + ROWS - 1) // ROWS


@jit
def project_tiles(x, xaux, kind, w, out, first, last, tile):
    """out[:, rows] = x @ w[rows].T for the rows of w's tiles first..last-1 (clipped to the tiles w has).
    Decode: those rows in one go (a call per tile cost 10% of a head); else tile after tile."""
    OUT = w.shape[0]
    first, last = max(first, 0), min(last, n_tiles(w))
    if first >= last:
        return
    if x.shape[0] < TILE_TOKENS:
        project(x, xaux, kind, w, first * ROWS, min(OUT, last * ROWS), out, first * ROWS, tile)
        return
    for i in range(first, last):
        r0 = i * ROWS
        project(x, xaux, kind, w, r0, min(OUT, r0 + ROWS), out, r0, tile)


@parallel_jit
def widen_chunk(kind, w, r0, r1, out):
    """out[:r1 - r0] = rows r0..r1-1 of w as fp32, rows spread over the cores."""
    for r in prange(r0, r1):
        widen_row(kind, w[r], out[r - r0])


@parallel_jit
def silu_times_rows(g, u):
    """silu(g) * u in place in g, rows spread over the cores."""
    for t in prange(g.shape[0]):
        silu_times(g[t:t + 1], u[t:t + 1])


# --- attention -----------------------------------------------------------------------------------

def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int) -> np.ndarray:
    """Causal grouped-query attention, streaming over blocks of KEYS keys with an online softmax:
    per query row keep the running max m, the sum l of exp(score - m) and acc = sum exp(score - m) v; a new
    block with a larger max rescales l and acc by exp(m_old - m_new). Output acc / l.
    q: [T, NH, D] at positions q_start..q_start+T-1; k, v: [NKV, S, D] (KV heads first, as `model.KVCache`
    holds them; S >= q_start + T, a cache's whole capacity: the positions after q_start + T are not read), fp32
    or bf16 bits (uint16: a bf16 KV cache), or rows of Q8_0 blocks (uint8 [NKV, S, D / 32 * 34]: a q8_0 KV
    cache), widened a block of keys at a time as read -> [T, NH, D]
    Prefill (T > 1) and decode (T = 1, reading the KV cache) are the same loop.
    Prefill (T >= TILE_TOKENS_ATTENTION) multiplies by tiles (`tiles.tile_sums`) against the keys transposed once per call
    (`keys_transposed`); decode reads the cache in place."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    k, v = (np.ascontiguousarray(a, dtype=a.dtype if a.dtype in (np.uint16, np.uint8) else np.float32) for a in (k, v))
    out = np.empty_like(q)
    T, NH, D = q.shape
    work = 2 * T * (q_start + T) * NH * D
    with threads_for(work):
        if T >= TILE_TOKENS_ATTENTION and D % 16 == 0:
            kt = np.empty((k.shape[0], D, -(-(q_start + T) // KEYS) * KEYS), np.float32)
            keys_transposed(k, q_start + T, kt)
        else:
            kt = np.empty((0, 0, 0), np.float32)
        attention_blocks(q, k, v, q_start, out, kt)
    return out


@parallel_jit
def keys_transposed(k, seen, kt):
    """kt[h, d, s] = key s of KV head h, widened to fp32, for s < seen; zero after.
    k: [NKV, S, D] as a KV cache holds it, kt: fp32 [NKV, D, >= seen]"""
    D = kt.shape[1]
    for h in prange(kt.shape[0]):
        row = np.empty(D, np.float32)
        for s in range(seen):
            widen_kv_row(k[h, s], row)
            for d in range(D):
                kt[h, d, s] = row[d]
        for d in range(D):
            for s in range(seen, kt.shape[2]):
                kt[h, d, s] = 0


@parallel_jit
def attention_blocks(q, k, v, q_start, out, kt):
    """Causal GQA attention with an online softmax (see `attention`), one task per KV head and run of
    tokens, tasks spread over the cores.  q: [T, NH, D], k/v: [NKV, S, D] (C-contiguous), out: [T, NH, D],
    kt: `keys_transposed` [NKV, D, S'] for a product by tiles, or [0, 0, 0]"""
    T, NH, D = q.shape
    NKV = k.shape[0]
    tokens = max(1, QUERY_ROWS // (NH // NKV))      # tokens per task
    n_runs = (T + tokens - 1) // tokens
    for task in prange(NKV * n_runs):
        t0 = (task % n_runs) * tokens
        attention_task(q, k, v, q_start, task // n_runs, t0, min(T, t0 + tokens), out, kt)


@jit
def attention_task(q, k, v, q_start, kv, t0, t1, out, kt):
    """Attention of the tokens t0..t1-1 for the query heads that share KV head kv. Its query rows are those
    tokens times those heads, scores against one block of KEYS keys at a time: by tiles when kt holds the keys
    transposed and there are F32_ROWS rows or more, else `matmul_nt` and `add_value_block`."""
    NH, D = q.shape[1], q.shape[2]
    group = NH // k.shape[0]
    rows = (t1 - t0) * group                    # row i: token t0 + i // group, head kv * group + i % group
    by_tiles = kt.shape[0] > 0 and rows >= F32_ROWS
    tile = np.empty((F32_ROWS, TOKENS), np.float32)
    scale = np.float32(1.0 / math.sqrt(D))
    qs = np.empty((rows, D), np.float32)
    for i in range(rows):
        for d in range(D):
            qs[i, d] = q[t0 + i // group, kv * group + i % group, d] * scale
    m = np.full(rows, -np.inf, np.float32)      # running max of each row's scores
    l = np.zeros(rows, np.float32)              # running sum of exp(score - m)
    acc = np.zeros((rows, D), np.float32)       # running sum of exp(score - m) * v
    p = np.zeros((rows, KEYS), np.float32)      # a block's scores, then their exp
    keys, values_t = np.empty((KEYS, D), np.float32), np.empty((D, KEYS), np.float32)
    pv = np.empty((rows, D), np.float32)
    seen = q_start + t1                         # keys 0..seen-1 are visible to some row of this task
    for s0 in range(0, seen, KEYS):
        n = min(KEYS, seen - s0)
        if by_tiles:
            scores_by_tiles(qs, kt[kv], s0, n, p, tile)
        else:
            key_scores(qs, k, kv, s0, n, keys, p)
        for i in range(rows):
            newest = q_start + t0 + i // group  # causal: this row sees keys 0..newest
            m_new = m[i]
            for s in range(n):
                if s0 + s > newest:
                    p[i, s] = -np.inf
                elif p[i, s] > m_new:
                    m_new = p[i, s]
            # m_new is finite: every row sees key 0, which is in the first block
            rescale = exp_nonpositive(m[i] - m_new)
            total = np.float32(0)
            for s in range(n):
                e = exp_nonpositive(p[i, s] - m_new)
                p[i, s] = e
                total += e
            for s in range(n, KEYS):
                p[i, s] = 0
            l[i] = l[i] * rescale + total
            m[i] = m_new
            for d in range(D):
                acc[i, d] *= rescale
        if by_tiles:
            add_values_by_tiles(p, kv_block(v, kv, s0, n, keys), tile, acc)
        else:
            add_value_block(p, v, kv, s0, n, keys, values_t, pv, acc)
    for i in range(rows):
        for d in range(D):
            out[t0 + i // group, kv * group + i % group, d] = acc[i, d] / l[i]


# e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts, so that n ln 2 is exact for |n| < 2^9)
LOG2_E = np.float32(1.4426950408889634)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)


@inline_jit
def exp_nonpositive(x):
    """e^x in fp32 for x <= 0 (a score minus its running maximum; -inf gives 0) in a few multiply-adds that LLVM
    vectorises. np.exp compiles to a call per value unless Intel's SVML library is installed, and a decode step at
    4096 tokens of context takes 1.8 million of them.
    e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2; e^r by its Taylor series to r^7 (the first term
    left out, r^8 / 8!, is below 5e-9 of the sum); 2^n written into the exponent bits. Below -87 (e^x < 2^-125,
    near the smallest normal fp32) it returns 0. tests/test_kernels.py checks it against np.exp."""
    if not x >= np.float32(-87.0):
        return np.float32(0.0)
    n = np.floor(x * LOG2_E + np.float32(0.5))
    r = (x - n * LN2_HIGH) - n * LN2_LOW
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(1 / 2) + r * (np.float32(1 / 6) + r * (
        np.float32(1 / 24) + r * (np.float32(1 / 120) + r * (np.float32(1 / 720) + r * np.float32(1 / 5040)))))))
    return p * two_to_the(n)


def two_to_the(n):
    """2^n in fp32 for a whole number -126 <= n <= 127: n + 127 written into the exponent bits."""
    return np.float32(2.0) ** np.float32(n)


@numba.extending.overload(two_to_the)
def _two_to_the_compiled(n):
    return lambda n: _uint32_bits_as_f32(np.uint32(np.int32(n) + np.int32(127)) << np.uint32(23))


@jit
def scores_by_tiles(qs, kt, s0, n, p, tile):
    """p[i, s] = qs[i] . key s0 + s for the n keys of a block, by tiles of F32_ROWS query rows x TOKENS keys (a
    last tile of rows starts at rows - F32_ROWS and redoes some).  qs: [rows >= F32_ROWS, D],
    kt: [D, >= s0 + KEYS] the KV head's keys transposed, p: [rows, KEYS], tile: [F32_ROWS, TOKENS] scratch"""
    rows = qs.shape[0]
    for i in range(0, rows, F32_ROWS):
        r0 = min(i, rows - F32_ROWS)
        for c in range(0, n, TOKENS):
            m = min(TOKENS, n - c)
            tile_sums(qs, r0, kt, s0 + c, tile, F32_ROWS, 2 if m > 16 else 1)
            for r in range(i - r0, F32_ROWS):
                for j in range(m):
                    p[r0 + r, c + j] = tile[r, j]


@jit
def add_values_by_tiles(p, values, tile, acc):
    """acc[i] += sum_s p[i, s] * values[s] over a block's n keys, by tiles of F32_ROWS rows x TOKENS of D
    (a last tile of rows starts at rows - F32_ROWS; only its new rows are added).
    p: [rows >= F32_ROWS, >= n], values: fp32 [n, D] (D a multiple of 16), acc: [rows, D]"""
    rows, D = acc.shape
    for i in range(0, rows, F32_ROWS):
        r0 = min(i, rows - F32_ROWS)
        for d0 in range(0, D, TOKENS):
            m = min(TOKENS, D - d0)
            tile_sums(p, r0, values, d0, tile, F32_ROWS, 2 if m > 16 else 1)
            for r in range(i - r0, F32_ROWS):
                for j in range(m):
                    acc[r0 + r, d0 + j] += tile[r, j]


@jit
def key_scores(qs, k, kv, s0, n, keys, p):
    """p[i, s] = qs[i] . k[kv, s0 + s] for the n keys of a block: each key read as stored and dotted with several
    query rows at once (`kv_rows.key_dots`); heads of a size that is not a multiple of kv_rows.CHUNK (fp32 and
    bf16 caches only) by `key_block_scores`."""
    if qs.shape[1] % CHUNK == 0:
        key_dots(qs, k[kv], s0, n, p)
    else:
        key_block_scores(qs, k, kv, s0, n, keys, p)


@jit
def key_block_scores(qs, k, kv, s0, n, keys, p):
    """p[i, s] = qs[i] . k[kv, s0 + s] for the n keys of a block: the keys as a contiguous fp32 block (fp32 keys
    are one already; bf16 and q8_0 ones are widened into `keys`), multiplied by `matmul_nt`, which reads each key
    once for two query rows."""
    matmul_nt(qs, kv_block(k, kv, s0, n, keys), p, 0)


def kv_block(k, kv, s0, n, keys):
    """Keys (or values) s0..s0+n-1 of KV head kv as fp32 [n, D]: a view of k when it is fp32, else widened into
    keys [>= n, D]."""
    return kv_as_float32(k[kv, s0:s0 + n])


@numba.extending.overload(kv_block)
def _kv_block_compiled(k, kv, s0, n, keys):
    if k.dtype == numba.types.float32:      # chosen when the kernel is compiled: no copy, no test at run time
        return lambda k, kv, s0, n, keys: k[kv, s0:s0 + n]

    def widen(k, kv, s0, n, keys):
        for s in range(n):
            widen_kv_row(k[kv, s0 + s], keys[s])
        return keys[:n]
    return widen


@jit
def add_value_block(p, v, kv, s0, n, keys, values_t, pv, acc):
    """acc[i] += sum_s p[i, s] * v[kv, s0 + s] over the n keys of a block.
    Many query rows: transpose the values into `values_t` [D, KEYS] (zero-padded), so that p @ v is a
    `matmul_nt`; a few (decode): each value row read as stored and added to several query rows' sums held in
    registers (`kv_rows.value_sums`), or, for heads of a size that is not a multiple of kv_rows.CHUNK (fp32
    and bf16 caches only), each row of the block (read in place, or widened into `keys` [KEYS, D]) added,
    scaled, to every query row."""
    rows, D = acc.shape
    if rows < MATMUL_ROWS and D % CHUNK == 0:
        value_sums(p, v[kv], s0, n, acc)
    elif rows < MATMUL_ROWS:
        block = kv_block(v, kv, s0, n, keys)
        for s in range(n):
            for i in range(rows):
                weight = p[i, s]
                for d in range(D):
                    acc[i, d] += weight * block[s, d]
    else:
        value = pv[0]                   # [D] scratch, until the product below
        for s in range(n):
            widen_kv_row(v[kv, s0 + s], value)
            for d in range(D):
                values_t[d, s] = value[d]
        for d in range(D):
            for s in range(n, values_t.shape[1]):
                values_t[d, s] = 0
        matmul_nt(p, values_t, pv, 0)
        for i in range(rows):
            for d in range(D):
                acc[i, d] += pv[i, d]


# --- mixture of experts --------------------------------------------------------------------------

def moe_experts(x: np.ndarray, experts: np.ndarray, weights: np.ndarray, gate_proj, up_proj,
                down_proj) -> np.ndarray:
    """Weighted sum of the chosen experts' SwiGLU outputs, dispatched by expert:
    sort the (token, slot) pairs by expert (counting sort), gather each expert's tokens into one contiguous
    group, run the expert's SwiGLU on the group (tile by tile, widening each weight tile once), then add
    the weighted results back to their tokens. Only the chosen experts' weights are read.
    x: [T, H] fp32 or bf16 bits (bf16 products: the hidden activations are rounded to bf16 before down_proj;
    a prefill with bf16 experts runs `bf16_products.experts` where the CPU has AVX512-BF16),
    experts/weights: [T, K], gate_proj/up_proj: [E, I, H], down_proj: [E, H, I] -> [T, H]"""
    T, K = experts.shape
    check_width("moe_experts", gate_proj, x.shape[1])
    check_width("moe_experts", up_proj, x.shape[1])
    check_width("moe_experts", down_proj, gate_proj.shape[-2])
    (kg, g), (ku, u), (kd, d) = weight_rows(gate_proj), weight_rows(up_proj), weight_rows(down_proj)
    E, I, H = g.shape[0], g.shape[1], x.shape[1]
    order, starts = group_by_expert(np.ascontiguousarray(experts, dtype=np.int64), E)
    ys = np.empty((T * K, H), np.float32)
    out = np.empty((T, H), np.float32)
    bf16 = x.dtype == np.uint16
    if bf16 and bf16_products_fit(T, gate_proj, up_proj, down_proj):
        x32 = np.ascontiguousarray(x).view(np.uint32)[order // K]          # [P, H / 2] grouped by expert
        with threads_for(3 * T * K * I * H):
            bf16_products.experts(x32, starts, g.view(np.uint32), u.view(np.uint32), d.view(np.uint32), ys)
        combine_slots(ys, order, np.ascontiguousarray(weights, dtype=np.float32), out)
        return out
    xs = np.ascontiguousarray(as_float32(x), dtype=np.float32)[order // K]  # [P, H] grouped by expert
    with threads_for(3 * T * K * I * H):
        if np.count_nonzero(starts[1:] > starts[:-1]) >= EXPERTS_PER_THREAD * numba.get_num_threads():
            experts_whole(xs, x_aux_rows(xs, starts, kg, ku), starts, kg, g, ku, u, kd, d, ys, bf16)
        else:
            h = np.empty((T * K, I), np.float32)
            experts_gate_up(xs, x_aux_rows(xs, starts, kg, ku), starts, kg, g, ku, u, h)
            if bf16:
                round_to_bf16(h)
            experts_down(h, x_aux_rows(h, starts, kd, kd), starts, kd, d, ys)
    combine_slots(ys, order, np.ascontiguousarray(weights, dtype=np.float32), out)
    return out


@jit
def group_by_expert(experts, n_experts):
    """Counting sort of the (token, slot) pairs by expert.
    experts: [T, K] -> order [P] (pair index token*K + slot, grouped by expert, in token order within a
    group), starts [E+1] (expert e's pairs are order[starts[e]:starts[e+1]])"""
    flat = experts.ravel()
    counts = np.zeros(n_experts + 1, np.int64)
    for p in range(flat.size):
        counts[flat[p] + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    order = np.empty(flat.size, np.int64)
    for p in range(flat.size):
        e = flat[p]
        order[fill[e]] = p
        fill[e] += 1
    return order, starts


@parallel_jit
def experts_whole(xs, xaux, starts, gate_kind, gate_proj, up_kind, up_proj, down_kind, down_proj, ys, round_hidden):
    """ys[group of e] = expert e's SwiGLU of xs[group], one work item per expert with tokens: a core runs an
    expert's gate/up and then its down projection on the hidden rows it has just made (still in its cache), so
    the whole MoE block is one parallel region. Used when there are enough experts to share out evenly.
    xs: [P, H] token rows grouped by expert, xaux: x_aux_rows(xs, starts, ...), gate/up_proj: [E, I, ROW_BYTES],
    down_proj: [E, H, ROW_BYTES], ys: [P, H], round_hidden: round the hidden activations to bf16 (bf16 products)"""
    active = np.nonzero(starts[1:] > starts[:-1])[0]
    for i in prange(active.size):
        e = active[i]
        g0, g1 = starts[e], starts[e + 1]
        expert_swiglu(xs[g0:g1], xaux[g0:g1], gate_kind, gate_proj[e], up_kind, up_proj[e], down_kind,
                      down_proj[e], ys[g0:g1], round_hidden)


@jit
def expert_swiglu(x, xaux, gate_kind, gate_proj, up_kind, up_proj, down_kind, down_proj, y, round_hidden):
    """y = down_proj(silu(gate_proj(x)) * up_proj(x)) for one expert, ROWS rows of a projection at a time.
    x: [N, H], xaux: x_aux_rows(x, ...), gate/up_proj: [I, ROW_BYTES], down_proj: [H, ROW_BYTES], y: [N, H]"""
    (N, H), I = x.shape, gate_proj.shape[0]
    h = np.empty((N, I), np.float32)
    g = np.empty((N, ROWS), np.float32)
    u = np.empty((N, ROWS), np.float32)
    tile = np.empty((tile_rows(N), H), np.float32)
    for r0 in range(0, I, ROWS):
        gate_up_rows(x, xaux, gate_kind, gate_proj, up_kind, up_proj, r0, min(I, r0 + ROWS), g, u, tile, h)
    if round_hidden:
        round_to_bf16(h)
    haux = x_aux_rows(h, np.array([0, N], np.int64), down_kind, down_kind)
    tile = np.empty((tile_rows(N), I), np.float32)
    for r0 in range(0, H, ROWS):
        project(h, haux, down_kind, down_proj, r0, min(H, r0 + ROWS), y, r0, tile)


@parallel_jit
def experts_gate_up(xs, xaux, starts, gate_kind, gate_proj, up_kind, up_proj, h):
    """h[group of e] = silu(xs[group] @ gate_proj[e].T) * (xs[group] @ up_proj[e].T) for every expert with
    tokens; the work items are (expert, tile of ROWS rows), spread over the cores.
    xs: [P, H] token rows grouped by expert, xaux: x_aux_rows(xs, starts, ...), gate/up_proj: [E, I, ROW_BYTES], h: [P, I]"""
    I, H = gate_proj.shape[1], xs.shape[1]
    active = np.nonzero(starts[1:] > starts[:-1])[0]
    n_tiles = (I + ROWS - 1) // ROWS
    for item in prange(active.size * n_tiles):
        e = active[item // n_tiles]
        r0 = (item % n_tiles) * ROWS
        r1 = min(I, r0 + ROWS)
        g0, g1 = starts[e], starts[e + 1]
        gate_up_rows(xs[g0:g1], xaux[g0:g1], gate_kind, gate_proj[e], up_kind, up_proj[e], r0, r1,
                     np.empty((g1 - g0, r1 - r0), np.float32), np.empty((g1 - g0, r1 - r0), np.float32),
                     np.empty((tile_rows(g1 - g0), H), np.float32), h[g0:g1])


@jit
def gate_up_rows(x, xaux, gate_kind, gate_proj, up_kind, up_proj, r0, r1, g, u, tile, h):
    """h[:, r0:r1] = silu(x @ gate_proj[r0:r1].T) * (x @ up_proj[r0:r1].T), through the scratch g, u [N, >= r1 - r0]
    and `project`'s tile.  x: [N, H], xaux: x_aux_rows(x, ...), gate/up_proj: [I, ROW_BYTES], h: [N, I]"""
    n = r1 - r0
    project(x, xaux, gate_kind, gate_proj, r0, r1, g, 0, tile)
    project(x, xaux, up_kind, up_proj, r0, r1, u, 0, tile)
    silu_times(g[:, :n], u[:, :n])
    h[:, r0:r1] = g[:, :n]


@parallel_jit
def experts_down(h, haux, starts, down_kind, down_proj, ys):
    """ys[group of e] = h[group] @ down_proj[e].T; work items are (expert, tile of ROWS output rows).
    h: [P, I], haux: x_aux_rows(h, starts, ...), down_proj: [E, H, ROW_BYTES], ys: [P, H]"""
    H, I = down_proj.shape[1], h.shape[1]
    active = np.nonzero(starts[1:] > starts[:-1])[0]
    n_tiles = (H + ROWS - 1) // ROWS
    for item in prange(active.size * n_tiles):
        e = active[item // n_tiles]
        r0 = (item % n_tiles) * ROWS
        r1 = min(H, r0 + ROWS)
        g0, g1 = starts[e], starts[e + 1]
        project(h[g0:g1], haux[g0:g1], down_kind, down_proj[e], r0, r1, ys[g0:g1], r0,
                np.empty((tile_rows(g1 - g0), I), np.float32))


@jit
def combine_slots(ys, order, weights, out):
    """out[t] = sum over slots k of weights[t, k] * (expert output of pair t*K + k), slot order.
    ys: [P, H] in expert-grouped order, order: [P], weights: [T, K], out: [T, H]"""
    T, K = weights.shape
    where = np.empty(order.size, np.int64)    # where[pair] = its row in ys
    for p in range(order.size):
        where[order[p]] = p
    for t in range(T):
        for j in range(out.shape[1]):
            out[t, j] = 0
        for k in range(K):
            row = where[t * K + k]
            wk = weights[t, k]
            for j in range(out.shape[1]):
                out[t, j] += wk * ys[row, j]


# --- compiling ------------------------------------------------------------------------------------

_warm = set()      # the parts made ready in this process: "kernels", "bf16 products"


def warm_up(log=sys.stderr, bf16: bool = False) -> None:
    """Make every kernel a forward pass calls ready, once a process: load it from Numba's disk cache, or compile
    it when the cache has none for this source and machine (76-136 s on this project's 2-core machine;
    `compiled_on_disk`). bf16: also the kernels of bf16 activations (`Model(matmul_precision="bf16")`),
    which are compiled only for the models that use them, on CPUs that have AVX512-BF16.
    A compile says so on `log`, with a progress line. Small made-up inputs run every path: one token and
    BLAS_TOKENS tokens through `linear` and `swiglu`, attention with and without a KV cache (fp32, bf16 and q8_0),
    and both dispatches of `moe_experts`. The weights' types need no inputs of their own: a weight reaches
    the kernels as a type code and bytes, so one compile serves them all."""
    part = "bf16 products" if bf16 and bf16_products.AVAILABLE else "kernels"
    if part != "kernels":
        warm_up(log)
    if part in _warm or numba.config.DISABLE_JIT:
        return
    cold = not compiled_on_disk(part == "bf16 products")
    t0 = time.perf_counter()
    if cold:
        print(f"miniqwen3: compiling the Numba kernels{' of bf16 products' if part != 'kernels' else ''}, once "
              f"(cached in {linear_tiles._cache._cache_path}):", end="", file=log, flush=True)
    rng = np.random.default_rng(0)
    H, I, E, NH, NKV, D = 64, 32, 8, 4, 2, 32

    def normal(*shape):
        return rng.standard_normal(shape, np.float32)
    gate, down = float32_to_bf16(normal(E, I, H)), float32_to_bf16(normal(E, H, I))
    steps = {
        "linear": lambda T: linear(normal(T, H), gate[0]),
        "swiglu": lambda T: swiglu(normal(T, H), gate[0], gate[0], down[0]),
        "attention": lambda T: [attention(normal(T, NH, D), kv, kv, 0)
                                for kv in (normal(NKV, T, D), float32_to_bf16(normal(NKV, T, D)),
                                           quants.quantize_q8_0(normal(NKV, T, D)).data)],
        "moe": lambda T: [moe_experts(normal(T, H), rng.integers(0, n, (T, 2)), np.ones((T, 2), np.float32),
                                      gate, gate, down) for n in (2, E)],
    }
    bf16_steps = {
        "bf16 products": lambda T: [linear(float32_to_bf16(normal(T, H)), gate[0]),
                                    swiglu(float32_to_bf16(normal(T, H)), gate[0], gate[0], down[0]),
                                    moe_experts(float32_to_bf16(normal(T, H)), rng.integers(0, E, (T, 2)),
                                                np.ones((T, 2), np.float32), gate, gate, down)],
    }
    for name, step in (steps if part == "kernels" else bf16_steps).items():
        for T in (1, BLAS_TOKENS):
            step(T)
        if cold:
            print(f" {name}", end="", file=log, flush=True)
    if cold:
        print(f", {time.perf_counter() - t0:.0f} s", file=log, flush=True)
    _warm.add(part)


def compiled_on_disk(bf16: bool = False) -> bool:
    """Whether Numba's disk cache holds compiled code of this source for every kernel called from Python
    (Numba's index of a function is void when its source file changed); bf16: those of bf16 products."""
    kernels = ((bf16_products.pack_pairs, bf16_products.rows_parallel, bf16_products.experts, round_to_bf16) if bf16
               else (linear_tiles, widen_chunk, silu_times_rows, attention_blocks, keys_transposed, group_by_expert,
                     experts_whole, experts_gate_up, experts_down, combine_slots, x_aux_rows))
    for f in kernels:
        try:
            if not f._cache._cache_file._load_index():
                return False
        except Exception:       # no index file, an unreadable one, or a Numba whose internals moved: compile
            return False
    return True


# --- building blocks shared by the sections ------------------------------------------------------

def check_width(op: str, w, n: int) -> None:
    """The kernels read n values of x for every weight row, and trust each row to hold n weights (a check in
    the row dots' loop cost them 20%): a weight [..., OUT, IN] with IN != n is refused here, once a call."""
    if w.shape[-1] != n:
        raise ValueError(f"{op}: a weight of shape {tuple(w.shape)} takes rows of {w.shape[-1]} values, "
                         f"the input has {n}")


def weight_rows(w) -> tuple[int, np.ndarray]:
    """A weight as the kernels read it: (GGML type code, rows as bytes uint8 [..., OUT, ROW_BYTES]).
    A read-only view, so that memory-mapped and in-memory weights share one compiled kernel."""
    kind, rows = row_view(w)
    rows = rows.view()
    rows.flags.writeable = False
    return kind, rows


@jit
def x_aux_rows(x, starts, kind_a, kind_b):
    """quants.x_aux of the rows that `project` dots one token at a time: those of the groups
    starts[g]..starts[g + 1] - 1 with fewer than TILE_TOKENS rows, with the lane orders that weights of type
    kind_a or kind_b read. Rows of bigger groups are widened as tiles, which read none of it: theirs are left
    unwritten (filling them cost 66 ms for the 4096 rows of a 512-token MoE prefill, every layer).
    x: [N, IN], starts: [G + 1] -> [N, x_aux_size(IN)]"""
    out = np.empty((x.shape[0], x_aux_size(x.shape[1])), np.float32)
    q4_k, q6_k = kind_a == Q4_K or kind_b == Q4_K, kind_a == Q6_K or kind_b == Q6_K
    bf16, q8_0 = kind_a == BF16 or kind_b == BF16, kind_a == Q8_0 or kind_b == Q8_0
    for g in range(starts.size - 1):
        if starts[g + 1] - starts[g] < TILE_TOKENS:
            for t in range(starts[g], starts[g + 1]):
                x_aux_into(x[t], out[t], q4_k, q6_k, bf16, q8_0)
    return out


def one_group(n: int) -> np.ndarray:
    """`starts` of n rows that form one group: [0, n]."""
    return np.array([0, n], np.int64)


@jit
def project(x, xaux, kind, w, r0, r1, y, c0, tile):
    """y[t, c0 + r - r0] = x[t] . w[r] for the weight rows r0..r1-1 and every token t.
    Two tokens or more (prefill; an expert's group of tokens): widen the rows once into `tile` [>= r1 - r0, IN]
    and multiply (`matmul_nt`): widening a row costs about what one dot product with it costs, so it pays from
    two tokens on. One token (decode): row after row, widening in registers (`quants.rows_dot`); the
    bytes of tile[0] are the scratch row that Q5_K's dot needs.
    x: [N, IN] fp32, xaux: x_aux_rows(x, ...), w: [OUT, ROW_BYTES] of type `kind`, y: [N, >= c0 + r1 - r0]"""
    if x.shape[0] >= TILE_TOKENS:
        for r in range(r0, r1):
            widen_row(kind, w[r], tile[r - r0])
        matmul_nt(x, tile[:r1 - r0], y, c0)
    else:
        scratch = tile[0].view(np.uint8)           # 4 * IN bytes, IN needed
        for t in range(x.shape[0]):
            rows_dot(kind, x[t], xaux[t], w, r0, r1, y[t], c0, scratch)


@jit
def tile_rows(tokens):
    """Rows of the scratch tile `project` needs: ROWS for two tokens or more, one for decode (a scratch row)."""
    return ROWS if tokens >= TILE_TOKENS else 1


@jit
def matmul_nt(x, w, y, c0):
    """y[t, c0 + r] = x[t] . w[r] for every row t of x and r of w (that is, x @ w.T), in fp32.
    Two rows of x meet four rows of w at a time: 8 running sums, each value loaded feeds 2 or 4 of them. (Four
    by four needs 16 vector sums plus the loaded values, more than AVX2's 16 registers: benchmarks/README.md.)
    x: [N, IN], w: [R, IN], y: [N, >= c0 + R]"""
    N, IN = x.shape
    R = w.shape[0]
    N2, R4 = N - N % 2, R - R % 4
    for t in range(0, N2, 2):
        x0, x1 = x[t], x[t + 1]
        for r in range(0, R4, 4):
            w0, w1, w2, w3 = w[r], w[r + 1], w[r + 2], w[r + 3]
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0)
            for j in range(IN):
                v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                u = x0[j]
                a00 += u * v0; a01 += u * v1; a02 += u * v2; a03 += u * v3   # noqa: E702
                u = x1[j]
                a10 += u * v0; a11 += u * v1; a12 += u * v2; a13 += u * v3   # noqa: E702
            c = c0 + r
            y[t, c], y[t, c + 1], y[t, c + 2], y[t, c + 3] = a00, a01, a02, a03
            y[t + 1, c], y[t + 1, c + 1], y[t + 1, c + 2], y[t + 1, c + 3] = a10, a11, a12, a13
        for r in range(R4, R):   # the last rows of w
            y[t, c0 + r] = dot(x0, w[r])
            y[t + 1, c0 + r] = dot(x1, w[r])
    for t in range(N2, N):       # the last token (when N is odd)
        for r in range(R):
            y[t, c0 + r] = dot(x[t], w[r])


@jit
def dot(a, b):
    """sum_j a[j] * b[j] in fp32 (vectorised: fastmath lets the sum be split across SIMD lanes)."""
    acc = np.float32(0)
    for j in range(a.size):
        acc += a[j] * b[j]
    return acc


def widen_kv_row(row, out):
    """out [D] fp32 = one key or value row as a KV cache holds it: fp32 [D], bf16 bits uint16 [D], or Q8_0
    blocks uint8 [D / 32 * 34]."""
    out[:] = kv_as_float32(row)


@numba.extending.overload(widen_kv_row)
def _widen_kv_row_compiled(row, out):
    if row.dtype == numba.types.uint8:      # chosen when the kernel is compiled: no test at run time
        return lambda row, out: widen_q8_0(row, out)
    if row.dtype == numba.types.uint16:
        def widen_bf16(row, out):
            for d in range(out.size):
                out[d] = bf16_as_f32(row[d])
        return widen_bf16

    def copy(row, out):
        for d in range(out.size):
            out[d] = row[d]
    return copy


@jit
def silu_times(g, u):
    """silu(g) * u = g * sigmoid(g) * u, in place in g."""
    for t in range(g.shape[0]):
        for j in range(g.shape[1]):
            gj = g[t, j]
            g[t, j] = gj / (np.float32(1) + np.exp(-gj)) * u[t, j]


@contextlib.contextmanager
def threads_for(work: int):
    """Run the kernels called inside on the calling thread alone when their work (multiply-adds) is below
    SERIAL_WORK. Every parallel region synchronises the threads: some microseconds on an idle machine, but a
    scheduler time slice (several ms) when another process keeps the other core busy, which a decode step of
    the tiny model (~20 regions of a few microseconds of work each) would pay twenty times over."""
    if work >= SERIAL_WORK:
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


# --- the disk cache's key ------------------------------------------------------------------------

def source_stamp(paths) -> str:
    """sha256 of the files' bytes, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def stamp_caches(modules) -> str:
    """Key the disk cache of every compiled function of `modules` on all their sources together.
    Numba keys a function's cache on its own file alone, but the kernels here inline code of quants.py (the row
    dots, the lane orders of x_aux): after a change to quants.py only (a `git pull` into an editable install),
    they would load the old compiled code, with the old layouts. Returns the stamp."""
    stamp = source_stamp([m.__file__ for m in modules])
    for m in modules:
        for f in vars(m).values():
            cache_file = getattr(getattr(f, "_cache", None), "_cache_file", None)
            if isinstance(f, numba.core.dispatcher.Dispatcher) and cache_file is not None:
                cache_file._source_stamp = stamp
    return stamp


SOURCE_STAMP = stamp_caches([sys.modules[__name__], quants, bf16_products, tiles, kv_rows])
