"""An opt-in 8-bit weight format in the spirit of llama.cpp's Q8_0: int8 values in blocks of 32 along the
input axis, one scale per block.

    scale = max(|w_block|) / 127,    q = round(w_block / scale) in [-127, 127],    w ~= q * scale

Decode reads every active weight once per token, so its speed is set by weight bytes: 1 byte per value plus
4 bytes of fp32 scale per 32 values (1.125 bytes) instead of bf16's 2. The error per value is at most
scale / 2 = max|w_block| / 254. `Model.quantize("q8_0")` converts the big matrices; the router and the
norms stay as stored.

A `Q8Weight` quacks like the arrays it replaces where the plain-NumPy reference looks at them: it has a
shape, `w[e]` picks expert e of a stacked [E, OUT, IN] weight, and `as_float32(w)` (which calls
`w.astype(np.float32)`) dequantizes it, so `ops` runs a quantized model unchanged. The Numba kernels read
`q` and `scales` directly and widen one small tile at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32  # values per scale, along the input (last) axis; a last block may be shorter


@dataclass
class Q8Weight:
    """A weight [..., OUT, IN] as int8 blocks: w[..., o, j] ~= q[..., o, j] * scales[..., o, j // BLOCK]."""
    q: np.ndarray        # [..., OUT, IN] int8
    scales: np.ndarray   # [..., OUT, ceil(IN / BLOCK)] float32

    def __post_init__(self):
        blocks = -(-self.q.shape[-1] // BLOCK)
        if self.q.dtype != np.int8 or self.scales.dtype != np.float32 or \
                self.scales.shape != self.q.shape[:-1] + (blocks,):
            raise ValueError(f"Q8Weight: expected int8 q [..., OUT, IN] and float32 scales [..., OUT, {blocks}], "
                             f"got q {self.q.dtype} {self.q.shape}, scales {self.scales.dtype} {self.scales.shape}")

    dtype = np.dtype(np.int8)

    @property
    def shape(self) -> tuple:
        return self.q.shape

    @property
    def ndim(self) -> int:
        return self.q.ndim

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scales.nbytes

    def __getitem__(self, e) -> "Q8Weight":
        """Expert e of a stacked [E, OUT, IN] weight."""
        return Q8Weight(self.q[e], self.scales[e])

    def astype(self, dtype, copy=True) -> np.ndarray:
        """The dequantized weight (what `weights.as_float32` calls)."""
        if np.dtype(dtype) != np.float32:
            raise TypeError(f"Q8Weight dequantizes to float32 only, not {dtype}")
        return dequantize(self)

    def __repr__(self):
        return f"Q8Weight(shape={self.shape}, {self.nbytes / 2**20:.1f} MiB)"


def quantize(w: np.ndarray, rows_per_chunk: int = 4096) -> Q8Weight:
    """Q8 blocks of a weight [..., OUT, IN] (bf16 bits as uint16, fp16 or fp32), a chunk of rows at a time so
    that no full fp32 copy of a big matrix is made."""
    from .weights import as_float32
    *lead, OUT, IN = w.shape
    n_blocks = -(-IN // BLOCK)
    rows = w.reshape(-1, IN)
    q = np.empty(rows.shape, np.int8)
    scales = np.empty((rows.shape[0], n_blocks), np.float32)
    padded = np.zeros((min(rows_per_chunk, rows.shape[0]), n_blocks * BLOCK), np.float32)
    for r0 in range(0, rows.shape[0], rows_per_chunk):
        r1 = min(rows.shape[0], r0 + rows_per_chunk)
        x = padded[:r1 - r0]
        x[:, :IN] = as_float32(rows[r0:r1])
        blocks = x.reshape(r1 - r0, n_blocks, BLOCK)
        amax = np.abs(blocks).max(axis=-1)                                   # [rows, blocks]
        scale = (amax / np.float32(127)).astype(np.float32)
        inv = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale > 0)
        qb = np.rint(blocks * inv[..., None])                                # |qb| <= 127 by construction
        q[r0:r1] = qb.reshape(r1 - r0, -1)[:, :IN].astype(np.int8)
        scales[r0:r1] = scale
    return Q8Weight(q.reshape(w.shape), scales.reshape(*lead, OUT, n_blocks))


def dequantize(w: Q8Weight) -> np.ndarray:
    """q * scale, as float32 [..., OUT, IN]."""
    IN = w.q.shape[-1]
    scale = np.repeat(w.scales, BLOCK, axis=-1)[..., :IN]
    return w.q.astype(np.float32) * scale


def quantize_weights(weights, kind: str = "q8_0") -> None:
    """Replace the big matrices of `weights` (a `weights.Weights`) in place by Q8 blocks: the attention
    projections, the dense MLP, every expert, and the output head (a tied head gets its own quantized copy,
    the embedding table used for lookup stays as stored). Router and norms are left alone."""
    from .weights import MLPWeights, MoEWeights
    if kind != "q8_0":
        raise ValueError(f"quantize: unknown format {kind!r} (supported: 'q8_0')")
    for layer in weights.layers:
        a = layer.self_attn
        a.q_proj, a.k_proj, a.v_proj, a.o_proj = (_q8(m) for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
        if isinstance(layer.mlp, (MLPWeights, MoEWeights)):
            m = layer.mlp
            m.gate_proj, m.up_proj, m.down_proj = (_q8(t) for t in (m.gate_proj, m.up_proj, m.down_proj))
    weights.lm_head = _q8(weights.lm_head)


def _q8(w):
    return w if isinstance(w, Q8Weight) else quantize(w)
