"""GGUF's block formats (llama.cpp's quantized weights), read as stored.

A GGUF matrix [OUT, IN] of a block type keeps each row as IN / BLOCK_WEIGHTS blocks of BLOCK_BYTES bytes. A
block holds the weights as small integers and one or a few fp16 scales; a weight is

    Q8_0, Q4_0, Q5_0 (32 weights)     w = d * (q - offset)               offset 0, 8, 16
    Q4_K, Q5_K       (256 weights)    w = d * sc * q - dmin * m          sc, m: 6-bit, one pair per 32 weights
    Q6_K             (256 weights)    w = d * sc * (q - 32)              sc: int8, one per 16 weights

This module has, for every type, the picture of its block, a plain-NumPy dequantizer of an array of blocks
(the readable version, tested against `gguf.quants.dequantize`), and under "Numba kernels" the same formula
read the fast way: `widen_<type>` (a row of blocks to fp32, for prefill) and `dot_<type>` / `dot4_<type>` (x
dotted with one or four rows, each block read once and used in registers, for decode).

Inside miniqwen3 a block-quantized weight is a `QuantWeight`: its uint8 blocks (memory-mapped from the file)
and its type code. It has a shape like the arrays it stands beside, `w[e]` picks expert e of a stacked
[E, OUT, IN] weight (or `w[ids]` embedding rows), and `w.astype(np.float32)` dequantizes it, so the plain-NumPy
reference runs a GGUF model unchanged. F32, F16 and BF16 tensors need no blocks: they stay plain arrays
(fp32, fp16, bf16 as uint16 bits).

Bytes are little-endian, as in the file; an fp16 field is 2 bytes, `d` in the pictures.
"""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir
import numba
import numba.extending
import numpy as np

# --- type codes and sizes ------------------------------------------------------------------------

# GGML type codes (gguf.GGMLQuantizationType); the ones a miniqwen3 weight can have:
F32, F16, Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 6, 8, 12, 13, 14, 30

TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
    27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

QK_K = 256  # weights per K-quant super-block
BLOCK_WEIGHTS = {Q8_0: 32, Q4_0: 32, Q5_0: 32, Q4_K: QK_K, Q5_K: QK_K, Q6_K: QK_K}
BLOCK_BYTES = {Q8_0: 34, Q4_0: 18, Q5_0: 22, Q4_K: 144, Q5_K: 176, Q6_K: 210}


class QuantError(ValueError):
    """A block-quantized weight that cannot be used: names the type and what was expected."""


def type_name(kind: int) -> str:
    """'Q4_K' for 12; 'type 99' for a code GGML does not have."""
    return TYPE_NAMES.get(int(kind), f"type {int(kind)}")


def check_block_kind(kind: int) -> None:
    """Refuse a type that is not one of the block formats here (F32/F16/BF16 are plain arrays, not blocks)."""
    if int(kind) not in BLOCK_WEIGHTS:
        plain = " (a plain array in miniqwen3, not a QuantWeight)" if int(kind) in (F32, F16, BF16) else ""
        raise QuantError(f"GGML type {type_name(kind)}{plain} is not a supported block format; supported: "
                         + ", ".join(TYPE_NAMES[k] for k in BLOCK_WEIGHTS))


def row_bytes(kind: int, n_in: int) -> int:
    """Bytes of one row of IN weights: IN / BLOCK_WEIGHTS blocks of BLOCK_BYTES."""
    check_block_kind(kind)
    if n_in % BLOCK_WEIGHTS[kind]:
        raise QuantError(f"{type_name(kind)}: a row of {n_in} weights is not a whole number of "
                         f"{BLOCK_WEIGHTS[kind]}-weight blocks")
    return n_in // BLOCK_WEIGHTS[kind] * BLOCK_BYTES[kind]


# --- the weight ----------------------------------------------------------------------------------

@dataclass
class QuantWeight:
    """A weight [..., OUT, IN] stored as GGUF blocks along each row (memory-mapped, never dequantized whole)."""
    data: np.ndarray   # uint8 [..., OUT, ROW_BYTES], ROW_BYTES = IN // BLOCK_WEIGHTS[kind] * BLOCK_BYTES[kind]
    kind: int          # GGML type code: Q8_0, Q4_0, Q5_0, Q4_K, Q5_K or Q6_K

    def __post_init__(self):
        check_block_kind(self.kind)
        self.kind = int(self.kind)
        if self.data.dtype != np.uint8 or self.data.ndim < 1 or self.data.shape[-1] % BLOCK_BYTES[self.kind]:
            raise QuantError(f"{type_name(self.kind)} weight: expected uint8 rows of whole "
                             f"{BLOCK_BYTES[self.kind]}-byte blocks, got {self.data.dtype} {self.data.shape}")

    dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple:
        """(..., OUT, IN): the weight's shape, as if dequantized."""
        return (*self.data.shape[:-1], self.data.shape[-1] // BLOCK_BYTES[self.kind] * BLOCK_WEIGHTS[self.kind])

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def __getitem__(self, index) -> "QuantWeight":
        """Leading axes indexed as data[index] would be: expert e of [E, OUT, IN], rows `ids` of a table [V, H]."""
        n_index = len(index) if isinstance(index, tuple) else 1
        if n_index >= self.data.ndim:
            raise QuantError(f"{type_name(self.kind)} weight {self.shape}: index {index!r} reaches into the "
                             "blocks of a row; only the leading axes can be indexed")
        return QuantWeight(self.data[index], self.kind)

    def astype(self, dtype, copy=True) -> np.ndarray:
        """The dequantized weight in `dtype` (what `weights.as_float32` calls with np.float32)."""
        w = dequantize(self)
        return w if np.dtype(dtype) == np.float32 else w.astype(dtype)

    def __repr__(self):
        return f"QuantWeight({type_name(self.kind)}, shape={self.shape}, {self.nbytes / 2**20:.1f} MiB)"


def dequantize(w: QuantWeight) -> np.ndarray:
    """The weight as float32 [..., OUT, IN], block by block (plain NumPy, `DEQUANTIZERS`)."""
    check_block_kind(w.kind)
    blocks = np.ascontiguousarray(w.data).reshape(-1, BLOCK_BYTES[w.kind])
    return DEQUANTIZERS[w.kind](blocks).reshape(w.shape)


def dequantize_blocks(blocks: np.ndarray, kind: int) -> np.ndarray:
    """uint8 [..., n * BLOCK_BYTES] -> float32 [..., n * BLOCK_WEIGHTS] (any array of whole blocks)."""
    return dequantize(QuantWeight(np.asarray(blocks, dtype=np.uint8), kind))


def _fp16(field: np.ndarray) -> np.ndarray:
    """A 2-byte fp16 field of every block, uint8 [N, 2] -> float32 [N, 1]."""
    return np.ascontiguousarray(field).view(np.float16).astype(np.float32)


# --- the block formats, in plain NumPy -----------------------------------------------------------

def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0: uint8 [N, 34] -> float32 [N, 32], w = d * q.

        byte  0     2                                  34
              | d  | q[0] q[1] ...             q[31] |      d: fp16, q: int8, element j is q[j]
    """
    d = _fp16(blocks[:, 0:2])                        # [N, 1]
    q = blocks[:, 2:34].view(np.int8)                # [N, 32]
    return d * q


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0: uint8 [N, 18] -> float32 [N, 32], w = d * (q - 8), q in 0..15.

        byte  0     2                     18
              | d  | qs[0] ...     qs[15] |      qs[j] = (q[j + 16] << 4) | q[j]
                                                 low nibbles: elements 0..15, high nibbles: 16..31
    """
    d = _fp16(blocks[:, 0:2])                                      # [N, 1]
    qs = blocks[:, 2:18]                                           # [N, 16]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8)   # [N, 32]
    return d * (q - np.int8(8))


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """Q5_0: uint8 [N, 22] -> float32 [N, 32], w = d * (q - 16), q in 0..31.

        byte  0     2         6                     22
              | d  |   qh    | qs[0] ...     qs[15] |
        qh: uint32, bit j = 5th bit (value 16) of element j
        qs: as Q4_0, the low 4 bits: low nibbles elements 0..15, high nibbles 16..31
    """
    d = _fp16(blocks[:, 0:2])                                                  # [N, 1]
    qh = np.ascontiguousarray(blocks[:, 2:6]).view("<u4")                      # [N, 1]
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)       # [N, 32]
    qs = blocks[:, 6:22]                                                       # [N, 16]
    q = (np.concatenate([qs & 0x0F, qs >> 4], axis=1) | (high << 4)).astype(np.int8)
    return d * (q - np.int8(16))


def unpack_scales_k(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 6-bit scales and 8 6-bit mins of a Q4_K/Q5_K block, uint8 [N, 12] -> (sc [N, 8], m [N, 8]).

        byte    0..3          4..7          8..11
              |hh|sc0..3|  |hh|m0..3 |  |m4..7 lo|sc4..7 lo|       (bit 7 on the left)
                \\_ top 2 bits of sc4..7   \\_ top 2 bits of m4..7
        sub-blocks 0..3: sc = s[j] & 63, m = s[j + 4] & 63
        sub-blocks 4..7: sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,  m = (s[j + 4] >> 4) | (s[j] >> 6) << 4
    """
    lo_sc, lo_m, packed = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo_sc & 63, (packed & 15) | ((lo_sc >> 6) << 4)], axis=1)
    m = np.concatenate([lo_m & 63, (packed >> 4) | ((lo_m >> 6) << 4)], axis=1)
    return sc, m


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Q4_K: uint8 [N, 144] -> float32 [N, 256], w = d * sc * q - dmin * m, q in 0..15, per 32-weight
    sub-block s = 0..7 its own 6-bit scale sc[s] and min m[s].

        byte  0      2       4              16                                    144
              | d   | dmin  | scales[12]   | qs[0] ...                  qs[127] |
        scales: see `unpack_scales_k`
        qs: four chunks of 32 bytes, chunk c = 0..3 holds 64 weights:
            qs[32c + l] = (q[64c + 32 + l] << 4) | q[64c + l]
            low nibbles: sub-block 2c (elements 64c..64c+31), high nibbles: sub-block 2c+1
    """
    N = blocks.shape[0]
    d, dmin = _fp16(blocks[:, 0:2]), _fp16(blocks[:, 2:4])          # [N, 1]
    sc, m = unpack_scales_k(blocks[:, 4:16])                         # [N, 8]
    qs = blocks[:, 16:144].reshape(N, 4, 1, 32)                      # [N, chunk, 1, l]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(N, 8, 32)   # [N, sub-block, l]
    scale, shift = d * sc, dmin * m                                  # [N, 8]
    return (scale[:, :, None] * q - shift[:, :, None]).reshape(N, QK_K)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """Q5_K: uint8 [N, 176] -> float32 [N, 256], w = d * sc * q - dmin * m, q in 0..31: Q4_K plus a 5th bit.

        byte  0      2       4              16            48                      176
              | d   | dmin  | scales[12]   | qh[0..31]   | qs[0] ...   qs[127] |
        scales, qs: as Q4_K (the low 4 bits of each q)
        qh: bit s of qh[l] = 5th bit (value 16) of element l of sub-block s (element 32s + l)
    """
    N = blocks.shape[0]
    d, dmin = _fp16(blocks[:, 0:2]), _fp16(blocks[:, 2:4])          # [N, 1]
    sc, m = unpack_scales_k(blocks[:, 4:16])                         # [N, 8]
    qh = blocks[:, 16:48].reshape(N, 1, 32)                          # [N, 1, l]
    high = (qh >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1    # [N, sub-block, l]
    qs = blocks[:, 48:176].reshape(N, 4, 1, 32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(N, 8, 32) | (high << 4)
    scale, shift = d * sc, dmin * m                                  # [N, 8]
    return (scale[:, :, None] * q - shift[:, :, None]).reshape(N, QK_K)


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K: uint8 [N, 210] -> float32 [N, 256], w = d * sc * (q - 32), q in 0..63, an int8 scale sc per 16
    weights (element e has sc[e // 16]).

        byte  0                     128              192              208    210
              | ql[0] ... ql[127]   | qh[0] ... qh[63] | scales[16]     | d   |
        two halves h = 0, 1 of 128 weights; in half h (ql from 64h, qh from 32h), for l = 0..31:
            element 128h + l      = ql[l]      & 15  | (qh[l] >> 0 & 3) << 4
            element 128h + l + 32 = ql[l + 32] & 15  | (qh[l] >> 2 & 3) << 4
            element 128h + l + 64 = ql[l]      >> 4  | (qh[l] >> 4 & 3) << 4
            element 128h + l + 96 = ql[l + 32] >> 4  | (qh[l] >> 6 & 3) << 4
        (low 4 bits in ql, top 2 bits in qh; one qh byte holds the top bits of four elements 32 apart)
    """
    N = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(N, 2, 1, 2, 32)                    # [N, half, 1, ql part, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)               # [N, half, nibble, part, l]
    qh = blocks[:, 128:192].reshape(N, 2, 1, 1, 32)                  # [N, half, 1, 1, l]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 2, 2, 1)   # (nibble, part) -> shift
    q = (low | ((qh >> shifts) & 3) << 4).astype(np.int8).reshape(N, QK_K) - np.int8(32)
    sc = blocks[:, 192:208].view(np.int8)                            # [N, 16]
    d = _fp16(blocks[:, 208:210])                                    # [N, 1]
    scale = np.repeat(d * sc, 16, axis=1)                            # [N, 256]
    return scale * q


DEQUANTIZERS = {Q8_0: dequantize_q8_0, Q4_0: dequantize_q4_0, Q5_0: dequantize_q5_0,
                Q4_K: dequantize_q4_k, Q5_K: dequantize_q5_k, Q6_K: dequantize_q6_k}


# --- quantizing (Q8_0 only: the format llama.cpp's converter writes itself) ----------------------

def _widen(w: np.ndarray) -> np.ndarray:
    """float32 of a plain weight: bf16 bits (uint16) into the top half of an fp32; fp16/fp32 cast."""
    if w.dtype == np.uint16:
        return (w.astype(np.uint32) << 16).view(np.float32)
    return w.astype(np.float32)


def quantize_q8_0(w: np.ndarray, rows_per_chunk: int = 4096) -> QuantWeight:
    """Q8_0 blocks of a weight [..., OUT, IN] (float32, fp16, or bf16 bits as uint16), as llama.cpp writes them:
    per 32 weights d = max|w| / 127, q = round(w / d) (halves away from zero, w times the fp32 1/d), d stored
    as fp16. A chunk of rows at a time, so no fp32 copy of a big matrix is made."""
    IN = w.shape[-1]
    ROW_BYTES = row_bytes(Q8_0, IN)
    rows = w.reshape(-1, IN)
    out = np.empty((rows.shape[0], ROW_BYTES // 34, 34), np.uint8)
    for r0 in range(0, rows.shape[0], rows_per_chunk):
        x = _widen(rows[r0:r0 + rows_per_chunk]).reshape(-1, IN // 32, 32)       # [R, blocks, 32]
        d = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)              # [R, blocks, 1]
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
        scaled = x * inv
        a = np.abs(scaled)
        q = np.sign(scaled) * (np.floor(a) + (a - np.floor(a) >= 0.5))           # C's roundf; |q| <= 127
        out[r0:r0 + len(x), :, 0:2] = d.astype(np.float16).view(np.uint8)
        out[r0:r0 + len(x), :, 2:34] = q.astype(np.int8).view(np.uint8)
    return QuantWeight(out.reshape(*w.shape[:-1], ROW_BYTES), Q8_0)
