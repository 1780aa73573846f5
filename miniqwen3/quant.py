"""An opt-in 8-bit weight format in the spirit of llama.cpp's Q8_0: int8 values in blocks of 32, one fp32
scale per block,

    scale = max(|w_block|) / 127,    q = round(w_block / scale) in [-127, 127],    w ~= q * scale

Decode reads every active weight once per token, so its speed is set by weight bytes: 1 byte per value plus
4 bytes of scale per 32 values (1.125 bytes) instead of bf16's 2. The error per value is at most
scale / 2 = max|w_block| / 254.

One difference from Q8_0: a block is 32 consecutive *rows* of one input column (Q8_0 takes 32 consecutive
values of a row). A dot product along a row then meets one scale per value, not one per 32 values, so
decode computes sum_j x[j] * scale[j] * q[j] in a single vectorised loop, with no partial sum to reduce
and rescale every 32 values; widening a row for prefill is one multiply per value. The quality is that of
Q8_0 (32 values per absmax scale); it also gives each input channel its own scales, where real checkpoints
have their outliers.

`Model.quantize("q8_0")` converts the big matrices; the router and the norms stay as stored.

A `Q8Weight` quacks like the arrays it replaces where the plain-NumPy reference looks at them: it has a
shape, `w[e]` picks expert e of a stacked [E, OUT, IN] weight, and `as_float32(w)` (which calls
`w.astype(np.float32)`) dequantizes it, so `ops` runs a quantized model unchanged. The Numba kernels read
`q` and `scales` directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32  # rows per scale, along the output axis; a last block may be shorter


@dataclass
class Q8Weight:
    """A weight [..., OUT, IN] as int8 blocks: w[..., o, j] ~= q[..., o, j] * scales[..., o // BLOCK, j]."""
    q: np.ndarray        # [..., OUT, IN] int8
    scales: np.ndarray   # [..., ceil(OUT / BLOCK), IN] float32

    def __post_init__(self):
        *lead, OUT, IN = self.q.shape
        expected = (*lead, -(-OUT // BLOCK), IN)
        if self.q.dtype != np.int8 or self.scales.dtype != np.float32 or self.scales.shape != expected:
            raise ValueError(f"Q8Weight: expected int8 q [..., OUT, IN] and float32 scales {list(expected)}, "
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
    n_blocks = -(-OUT // BLOCK)
    mats = w.reshape(-1, OUT, IN)
    q = np.empty(mats.shape, np.int8)
    scales = np.empty((mats.shape[0], n_blocks, IN), np.float32)
    step = max(BLOCK, rows_per_chunk - rows_per_chunk % BLOCK)
    for m in range(mats.shape[0]):
        for r0 in range(0, OUT, step):
            r1 = min(OUT, r0 + step)
            x = as_float32(mats[m, r0:r1])
            for b0 in range(0, r1 - r0, BLOCK):                      # one block of rows at a time
                block = x[b0:b0 + BLOCK]
                scale = (np.abs(block).max(axis=0) / np.float32(127)).astype(np.float32)   # [IN]
                inv = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale > 0)
                q[m, r0 + b0:r0 + b0 + len(block)] = np.rint(block * inv)              # |.| <= 127
                scales[m, (r0 + b0) // BLOCK] = scale
    return Q8Weight(q.reshape(w.shape), scales.reshape(*lead, n_blocks, IN))


def dequantize(w: Q8Weight) -> np.ndarray:
    """q * scale, as float32 [..., OUT, IN]."""
    OUT = w.q.shape[-2]
    return w.q.astype(np.float32) * np.repeat(w.scales, BLOCK, axis=-2)[..., :OUT, :]


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
