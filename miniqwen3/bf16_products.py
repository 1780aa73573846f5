"""Matrix products of bf16 weights with activations rounded to bf16, summed in fp32: the arithmetic of
llama.cpp's bf16 matmul, of a transformers model in bf16 and of torch's "medium" matmul precision, run on
AVX512-BF16's vdpbf16ps. `Model(matmul_precision="bf16")` chooses it, and so does the default "auto" for bf16
weights on the Numba backend where this CPU has AVX512-BF16 (`model.auto_matmul_precision`).

Why: a prefill is bound by arithmetic. In fp32 one 512-bit FMA does 16 multiply-adds; vdpbf16ps does 32 (each
of its 16 fp32 lanes adds the products of a pair of bf16 values), so a core's peak doubles. The products of
two bf16 values are exact in fp32, so rounding the activations (8 bits of mantissa, 2^-9 relative) is the only
loss; tests/test_bf16_products.py checks the results against torch's own bf16 rounding and an fp32 matmul.

The picture: a weight row of IN bf16 values is IN / 2 pairs, read as uint32 (`w32`, [OUT, K2], K2 = IN / 2,
no copy). The tokens' activations are packed pair-major into a `panel` [K2, NP] (panel[k, n] = the pair k of
token n; NP a multiple of 16, zero past the last token), so that 16 tokens' pairs k are one vector. The micro
kernel (`tiles.tile_sums`, in LLVM IR) keeps an [8 rows x 32 tokens] tile of sums in 16 vector registers; each
step k broadcasts a row's pair to all lanes and meets 2 vectors of the panel: 16 vdpbf16ps per 2 loads.
Weights are read as stored (memory-mapped files stay so), so a MoE expert with 30 tokens needs no copy of
its weights. Its sums go through a small tile to y (y[token, row]: the tile is transposed on the way).

Only CPUs with AVX512-BF16 run the kernels here (`AVAILABLE`); elsewhere `kernels` rounds the activations the
same way and multiplies in fp32, which gives the same values (to the order of the sums)."""
from __future__ import annotations

import llvmlite.binding
import numba
import numpy as np
from numba import prange

from .quants import FASTMATH
from .tiles import BF16_ROWS as ROWS, TOKENS, tile_sums

jit = numba.njit(cache=True, fastmath=FASTMATH)
parallel_jit = numba.njit(cache=True, fastmath=FASTMATH, parallel=True)

BLOCK = 128     # tokens whose panel columns a core reuses for all its rows (an [IN / 2, 128] block fits L2)


def host_has_avx512_bf16() -> bool:
    """Numba compiles for this machine's CPU unless NUMBA_CPU_NAME says otherwise (a portable cache, which
    could not hold this instruction)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    return bool(llvmlite.binding.get_host_cpu_features().get("avx512bf16", False))


AVAILABLE = host_has_avx512_bf16()


# --- products ------------------------------------------------------------------------------------

def linear(x: np.ndarray, w: np.ndarray, cores: int) -> np.ndarray:
    """x @ w.T of bf16 activations and bf16 weights, fp32 sums.
    x: [T, IN] bf16 bits (uint16), w: [OUT, IN] bf16 bits (read-only views welcome), IN even, OUT >= ROWS
    -> [T, OUT] fp32"""
    T, IN = x.shape
    panel = np.empty((IN // 2, -(-T // 16) * 16), np.uint32)
    pack_pairs(np.ascontiguousarray(x).view(np.uint32), panel)
    y = np.empty((T, w.shape[0]), np.float32)
    rows_parallel(w.view(np.uint32), panel, T, y, cores)
    return y


@parallel_jit
def pack_pairs(x32, panel):
    """panel[k, n] = x32[n, k] (token n's bf16 pair k), zero for n past the last token.
    x32: uint32 [T, K2], panel: uint32 [K2, NP >= T]"""
    T = x32.shape[0]
    for k in prange(panel.shape[0]):
        for n in range(T):
            panel[k, n] = x32[n, k]
        for n in range(T, panel.shape[1]):
            panel[k, n] = 0


@numba.njit(cache=True, inline="always")
def rounded_high_half(bits):
    """The fp32 bits `bits` (uint32) rounded to bf16, nearest with ties to even, left in the high half (the low
    half zero): `weights.float32_to_bf16` for one value, shifted back up."""
    return (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)


@jit
def pack_rounded(h, panel):
    """panel[k, n] = the pair (h[n, 2k], h[n, 2k + 1]) rounded to bf16 (nearest, ties to even), low half first;
    zero past the last token.  h: fp32 [T, 2 K2], panel: uint32 [K2, NP >= T]"""
    bits = h.view(np.uint32)
    for n in range(h.shape[0]):
        for k in range(panel.shape[0]):
            panel[k, n] = (rounded_high_half(bits[n, 2 * k]) >> np.uint32(16)) | rounded_high_half(bits[n, 2 * k + 1])
    for k in range(panel.shape[0]):
        for n in range(h.shape[0], panel.shape[1]):
            panel[k, n] = 0


@parallel_jit
def rows_parallel(w32, panel, T, y, cores):
    """y[:T] = panel's tokens times every row of w32, the row tiles cut into one run per core.
    w32: uint32 [OUT, K2], panel: uint32 [K2, NP], y: fp32 [>= T, OUT]"""
    n_tiles = -(-w32.shape[0] // ROWS)
    n_runs = min(cores, n_tiles)
    for run in prange(n_runs):
        rows(w32, run * n_tiles // n_runs, (run + 1) * n_tiles // n_runs, panel, T, y)


@jit
def rows(w32, tile0, tile1, panel, T, y):
    """y[t, r] = token t . row r for the rows of tiles tile0..tile1-1 (ROWS rows each; the last tile of a
    matrix whose OUT is not a multiple of ROWS starts at OUT - ROWS and redoes some rows) and tokens t < T,
    BLOCK tokens at a time.  w32: uint32 [OUT >= ROWS, K2], panel: uint32 [K2, NP], y: fp32 [>= T, OUT]"""
    tile = np.empty((ROWS, TOKENS), np.float32)
    OUT = w32.shape[0]
    for b0 in range(0, T, BLOCK):
        b1 = min(T, b0 + BLOCK)
        for i in range(tile0, tile1):
            r0 = min(i * ROWS, OUT - ROWS)
            for n0 in range(b0, b1, TOKENS):
                n = min(TOKENS, b1 - n0)
                tile_sums(w32, r0, panel, n0, tile, ROWS, 2 if n > 16 else 1)
                for t in range(n):
                    for r in range(ROWS):
                        y[n0 + t, r0 + r] = tile[r, t]


# --- the experts of a MoE block ------------------------------------------------------------------

@parallel_jit
def experts(x32, starts, gate32, up32, down32, ys):
    """ys[group of e] = expert e's SwiGLU of its tokens, in bf16 products: silu(x @ gate.T) * (x @ up.T) is
    rounded to bf16 before down_proj, as every product's input is. One work item per expert with tokens.
    x32: uint32 [P, H / 2] token rows grouped by expert (bf16 pairs), starts: [E + 1],
    gate32/up32: uint32 [E, I, H / 2], down32: uint32 [E, H, I / 2], ys: fp32 [P, H]"""
    active = np.nonzero(starts[1:] > starts[:-1])[0]
    I, H2 = gate32.shape[1], x32.shape[1]
    for j in prange(active.size):
        e = active[j]
        g0, g1 = starts[e], starts[e + 1]
        n = g1 - g0
        width = -(-n // 16) * 16
        panel = np.zeros((H2, width), np.uint32)
        for k in range(H2):
            for t in range(n):
                panel[k, t] = x32[g0 + t, k]
        g = np.empty((n, I), np.float32)
        u = np.empty((n, I), np.float32)
        tiles = -(-I // ROWS)
        rows(gate32[e], 0, tiles, panel, n, g)
        rows(up32[e], 0, tiles, panel, n, u)
        for t in range(n):
            for c in range(I):
                gc = g[t, c]
                g[t, c] = gc / (np.float32(1) + np.exp(-gc)) * u[t, c]
        hidden = np.empty((I // 2, width), np.uint32)
        pack_rounded(g, hidden)
        rows(down32[e], 0, -(-down32.shape[1] // ROWS), hidden, n, ys[g0:g1])
