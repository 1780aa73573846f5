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
import numba.core.cgutils
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


# --- Numba kernels -------------------------------------------------------------------------------
#
# The same formulas, read the fast way, one row of blocks at a time. A row is its bytes as stored: uint8
# [ROW_BYTES] (a C-contiguous row of `QuantWeight.data`; for the plain types, the row's bytes, see `row_view`).
#
#   widen_<type>(row, out)                 out [IN] = the row as fp32 (prefill widens a tile of rows once)
#   dot_<type>(x, [xaux,] row)             x [IN] . the row in fp32 (decode: each block read once, in registers)
#   dot4_<type>(x, [xaux,] r0..r3, y, c)   y[c + i] = x . r_i for four rows
#
# A dot sums x times the small integers q over a sub-block first and applies that sub-block's scale once
# (sum_j x_j * d * sc * q_j = d * sc * sum_j x_j * q_j): the inner loop is an int-to-float conversion and a
# multiply-add per weight, which LLVM vectorises, 8 weights an instruction. Several sub-blocks are summed
# in one loop (8 independent sums keep the FMA units busy; one sum per loop would wait on its own latency and
# pay a horizontal reduction per 32 weights). The offsets (Q4_0's -8, Q5_0's -16) and the K-quants' -dmin * m
# are a constant times the sum of x over 32 weights: `x_aux(x)` computes those once per x, for every row.
#
# Three things keep LLVM vectorising the inner loops (each was measured 2-4x slower without):
# - Numba computes integer expressions in 64 bits; LLVM narrows ands and ors back to 32-bit lanes, not
#   shifts. Shifts go through `shr32`/`shl32`, or are avoided: a high nibble is taken as v & 240 =
#   16 * (v >> 4), the 1/16 folded into its sub-block's scale (exactly: a power of two).
# - A loop over a constant 32 with a small body gets unrolled, and LLVM then vectorises the loop over blocks
#   instead, strided. The 32-weight formats work on groups of 4 blocks (2 for Q5_0), like the K-quants'
#   256-weight blocks, then on the last blocks one by one.
# - Loops over blocks count from 0 (`for g4 in range(nb // 4)`, not `range(0, nb, 4)`): LLVM then knows no
#   index is negative, and Numba's wraparound of negative indices does not block the vectoriser.
# Where the loop form still spends as much on reducing and scaling sums as on the products (Q4_K, Q6_K), a
# row's dot is written in LLVM's vector IR (`q4_k_row_dot`, `q6_k_row_dot`), each a plain-NumPy function
# when called from Python, as the other helpers here.
# Sums are reordered (fastmath), so results equal the NumPy dequantizer's to float32 rounding, not bitwise.

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
jit = numba.njit(cache=True, fastmath=FASTMATH)
inline_jit = numba.njit(cache=True, fastmath=FASTMATH, inline="always")   # small helpers of the loops
SIXTEENTH = np.float32(1 / 16)


def fp16_at(row, i):
    """The fp16 stored little-endian at row[i], row[i + 1], as fp32."""
    return np.float32(np.asarray(row[i:i + 2], dtype=np.uint8).view(np.float16)[0])


@numba.extending.overload(fp16_at)
def _fp16_at_compiled(row, i):
    # compiled: two bytes joined into 16 bits, reinterpreted as a half and widened (vcvtph2ps with F16C)
    return lambda row, i: _half_bits_as_f32(row[i] | (row[i + 1] << 8))


def _to_i32(builder, v):
    i32 = llvmlite.ir.IntType(32)
    return builder.trunc(v, i32) if v.type.width > 32 else builder.zext(v, i32) if v.type.width < 32 else v


@numba.extending.intrinsic
def _half_bits_as_f32(typingctx, bits):
    """The fp16 whose bit pattern is the low 16 bits of the integer `bits`, as fp32."""
    def codegen(context, builder, signature, args):
        v = builder.trunc(_to_i32(builder, args[0]), llvmlite.ir.IntType(16))
        return builder.fpext(builder.bitcast(v, llvmlite.ir.HalfType()), llvmlite.ir.FloatType())
    return numba.types.float32(bits), codegen


def f16_as_f32(bits):
    """One fp16 value, given as its 16 bits, as fp32."""
    return np.float32(np.array(bits, dtype=np.uint16).view(np.float16))


@numba.extending.overload(f16_as_f32)
def _f16_as_f32_compiled(bits):
    return lambda bits: _half_bits_as_f32(bits)


def bf16_as_f32(bits):
    """One bf16 value, given as its 16 bits, as fp32: the bits are the upper half of the fp32's bits."""
    return np.array(np.uint32(bits) << np.uint32(16), dtype=np.uint32).view(np.float32)[()]


@numba.extending.overload(bf16_as_f32)
def _bf16_as_f32_compiled(bits):
    return lambda bits: _uint32_bits_as_f32(np.uint32(bits) << np.uint32(16))


@numba.extending.intrinsic
def _uint32_bits_as_f32(typingctx, bits):
    """The fp32 whose bit pattern is the uint32 `bits` (a bitcast, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvmlite.ir.FloatType())
    return numba.types.float32(numba.types.uint32), codegen


def shr32(v, k):
    """v >> k for 0 <= v < 2**32, 0 <= k < 32, computed on 32 bits (vectorised 8 to an AVX2 register)."""
    return np.int64(int(v) >> int(k))


def shl32(v, k):
    """(v << k) mod 2**32 for 0 <= k < 32, computed on 32 bits (use only its low 31 bits)."""
    return np.int64((int(v) << int(k)) & 0xFFFFFFFF)


@numba.extending.overload(shr32)
def _shr32_compiled(v, k):
    return lambda v, k: _shift32(v, k, False)


@numba.extending.overload(shl32)
def _shl32_compiled(v, k):
    return lambda v, k: _shift32(v, k, True)


@numba.extending.intrinsic
def _shift32(typingctx, v, k, left):
    def codegen(context, builder, signature, args):
        a, b = _to_i32(builder, args[0]), _to_i32(builder, args[1])
        return builder.shl(a, b) if signature.args[2].literal_value else builder.lshr(a, b)
    if not isinstance(left, numba.types.BooleanLiteral):
        return None
    return numba.types.int32(v, k, left), codegen


@jit
def x_aux(x):
    """What the block dots need of x besides x itself, computed once per x for every row:
        [0, IN/32)                 sums of x over each 32 values: the offsets and K-quant mins of the dots
    and when IN is a whole number of 256-weight blocks (the K-quants), after them
        [IN/32, IN/32 + IN)        x in the order of Q4_K's dot (`q4_k_lane_order`)
        [IN/32 + IN, IN/32 + 2 IN) x in the order of Q6_K's dot (`q6_k_lane_order`)
        [.., + IN/16)              sums of x over each 16 values: Q6_K's offset of -32
    and when IN is a multiple of 16
        [.., + IN)                 x[0::2], then x[1::2]: the order of BF16's dot (`bf16_row_dot`)
    and when IN is a multiple of 32, last
        [.., + IN)                 x in the order and scale of Q8_0's dot (`q8_0_lane_order`)
    x: [IN] fp32 -> [x_aux_size(IN)] fp32"""
    out = np.empty(x_aux_size(x.size), np.float32)
    x_aux_into(x, out, True, True, True, True)
    return out


@jit
def x_aux_into(x, out, q4_k_lanes, q6_k_lanes, bf16_lanes=False, q8_0_lanes=False):
    """out = x_aux(x), with Q4_K's part only if q4_k_lanes, Q6_K's two only if q6_k_lanes, BF16's only if
    bf16_lanes and Q8_0's only if q8_0_lanes (the parts left out are not written: for rows that no dot of that
    type reads).  x: [IN], out: [x_aux_size(IN)]"""
    if q8_0_lanes and x.size % 32 == 0:
        q8_0_lane_order(x, out[q8_0_lanes_at(x.size):q8_0_lanes_at(x.size) + x.size])
    if bf16_lanes and x.size % 16 == 0:
        half, o = x.size // 2, bf16_lanes_at(x.size)
        for j in range(half):
            out[o + j] = x[2 * j]
            out[o + half + j] = x[2 * j + 1]
    n = x.size // 32
    for k in range(n):
        s = np.float32(0)
        for l in range(32):
            s += x[32 * k + l]
        out[k] = s
    if x.size % QK_K == 0:
        IN = x.size
        if q4_k_lanes:
            q4_k_lane_order(x, out[n:n + IN])
        if q6_k_lanes:
            q6_k_lane_order(x, out[n + IN:n + 2 * IN])
            for k in range(IN // 16):
                s = np.float32(0)
                for l in range(16):
                    s += x[16 * k + l]
                out[n + 2 * IN + k] = s


@jit
def x_aux_size(n_in):
    """The length of x_aux(x) for an x of n_in values."""
    return q8_0_lanes_at(n_in) + (n_in if n_in % 32 == 0 else 0)


@jit
def q8_0_lanes_at(n_in):
    """Where x in Q8_0's order starts in x_aux(x) (last)."""
    return bf16_lanes_at(n_in) + (n_in if n_in % 16 == 0 else 0)


@jit
def bf16_lanes_at(n_in):
    """Where x in BF16's order starts in x_aux(x) (after the sums and the K-quants' parts)."""
    return n_in // 32 + (2 * n_in + n_in // 16 if n_in % QK_K == 0 else 0)


@jit
def bf16_row_dot(x_even, x_odd, lanes):
    """x . a row of bf16 weights, read as 32-bit lanes of two weights each: weight 2j is the low half of lane j,
    weight 2j+1 the high half. Compiled, `bf16_as_f32` of each half is the lane masked in place or shifted up
    (LLVM folds the shifts): fp32 bit patterns of the weights themselves, so no lane is widened or moved
    (a widening shuffle per 8 weights held the dot at 12-14 GB/s on one core, this reads 17-18 from L3).
    x_even, x_odd: x[0::2], x[1::2] [IN / 2] (from x_aux), lanes: uint32 [IN / 2] -> fp32"""
    acc = np.float32(0)
    for j in range(lanes.size):
        v = lanes[j]
        acc += x_even[j] * bf16_as_f32(v & np.uint32(0xFFFF)) + x_odd[j] * bf16_as_f32(v >> np.uint32(16))
    return acc


@jit
def q4_k_lane_order(x, out):
    """x as Q4_K's dot reads it (`_q4_k_row_dot_ir`), which takes a chunk of 32 qs bytes as 8 lanes of 4 bytes
    and keeps nibble k (bits 4k..4k+3) of every lane in place with a mask, so that no byte is moved:
        out[256b + 64c + 8k + i] = x[256b + 64c + 32 (k % 2) + 4i + k // 2] / 16^k
    (nibble k of lane i of chunk c is weight 4i + k // 2 of sub-block 2c + k % 2; masked in place, it converts
    to q * 16^k, exactly, and the 1 / 16^k here cancels it, exactly: powers of two). Nibble 7 is shifted down
    4 bits before its mask, clear of the sign bit, so its x is divided by 16^6.
    x: [IN] fp32, IN a multiple of 256 -> out: [IN]"""
    for b in range(x.size // QK_K):
        for c in range(4):
            for k in range(8):
                scale = np.float32(1) / np.float32(1 << (4 * min(k, 6)))
                src, dst = QK_K * b + 64 * c + 32 * (k % 2) + k // 2, QK_K * b + 64 * c + 8 * k
                for i in range(8):
                    out[dst + i] = x[src + 4 * i] * scale


@jit
def q6_k_lane_order(x, out):
    """x as Q6_K's dot reads it (`_q6_k_row_dot_ir`). That dot builds the 6-bit values of a quarter (32
    elements, l = 4i + j) as 8 lanes of 4 bytes, value j of lane i in bits 8j..8j+5, and keeps value j of every
    lane in place with a mask: it converts to q * 256^j, exactly, and the 1 / 256^j here cancels it:
        out[32 quarter + 8j + i] = x[32 quarter + 4i + j] / 256^j
    x: [IN] fp32, IN a multiple of 256 -> out: [IN]"""
    for quarter in range(x.size // 32):
        for j in range(4):
            scale = np.float32(1) / np.float32(1 << (8 * j))
            for i in range(8):
                out[32 * quarter + 8 * j + i] = x[32 * quarter + 4 * i + j] * scale


@inline_jit
def scale_min_k(row, s, j):
    """6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block whose 12 scale bytes start at row[s],
    as fp32 (see `unpack_scales_k`)."""
    if j < 4:
        return np.float32(row[s + j] & 63), np.float32(row[s + j + 4] & 63)
    sc = (row[s + j + 4] & 15) | ((row[s + j - 4] >> 6) << 4)
    m = (row[s + j + 4] >> 4) | ((row[s + j] >> 6) << 4)
    return np.float32(sc), np.float32(m)


# Q8_0: 34 bytes | d | q[32] int8 |                                     w = d * q

@jit
def widen_q8_0(row, out):
    """row: uint8 [IN / 32 * 34] -> out: fp32 [IN]; four blocks a step, then the last ones."""
    nb = row.size // 34
    for g4 in range(nb // 4):
        g = 4 * g4
        o, xo = 34 * g + 2, 32 * g
        d0, d1, d2, d3 = fp16_at(row, o - 2), fp16_at(row, o + 32), fp16_at(row, o + 66), fp16_at(row, o + 100)
        for l in range(32):
            out[xo + l] = d0 * np.float32(np.int8(row[o + l]))
            out[xo + 32 + l] = d1 * np.float32(np.int8(row[o + 34 + l]))
            out[xo + 64 + l] = d2 * np.float32(np.int8(row[o + 68 + l]))
            out[xo + 96 + l] = d3 * np.float32(np.int8(row[o + 102 + l]))
    for b in range(nb - nb % 4, nb):
        o, d = 34 * b + 2, fp16_at(row, 34 * b)
        for l in range(32):
            out[32 * b + l] = d * np.float32(np.int8(row[o + l]))


@jit
def q8_0_lane_order(x, out):
    """x as Q8_0's dot reads it (`_q8_0_row_dot_ir`), which takes a block's 32 int8 weights as 8 lanes of 4
    bytes and moves byte j of every lane to the top of its lane (shifted up 24 - 8j bits, the bits below
    masked off), where it converts to q * 2^24, exactly, with its sign; the 2^-24 here cancels that, exactly:
        out[32 b + 8 j + i] = x[32 b + 4 i + j] * 2^-24
    x: [IN] fp32, IN a multiple of 32 -> out: [IN]"""
    scale = np.float32(2.0 ** -24)
    for b in range(x.size // 32):
        for j in range(4):
            for i in range(8):
                out[32 * b + 8 * j + i] = x[32 * b + 4 * i + j] * scale


@jit
def dot_q8_0(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x), row: uint8 [IN / 32 * 34] -> fp32 (`q8_0_row_dot`), the sizes checked."""
    if xaux.size != x_aux_size(x.size) or row.size // 34 * 32 != x.size:
        raise ValueError("dot_q8_0: xaux must be x_aux(x), and the row IN / 32 blocks")
    return q8_0_row_dot(x, xaux, row)


@jit
def dot4_q8_0(x, xaux, r0, r1, r2, r3, y, c):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q8_0`, one after the other (rows read in order, which the
    hardware prefetcher follows; x stays in L1)."""
    y[c], y[c + 1] = q8_0_row_dot(x, xaux, r0), q8_0_row_dot(x, xaux, r1)
    y[c + 2], y[c + 3] = q8_0_row_dot(x, xaux, r2), q8_0_row_dot(x, xaux, r3)


def q8_0_row_dot(x, xaux, row):
    """x . a row of Q8_0 blocks: sum over blocks of d * (x . q). Plain NumPy here; compiled, LLVM vector IR
    (`_q8_0_row_dot_ir`: 4 blocks a step, their sums scaled and added as a tree, then the last blocks), which
    reads x in the lane order that `x_aux` appends."""
    blocks = np.asarray(row).reshape(-1, 34)
    sums = (x.reshape(-1, 32) * blocks[:, 2:].view(np.int8)).sum(axis=1, keepdims=True)   # [B, 1]
    return np.float32((_fp16(blocks[:, 0:2]) * sums).sum())


@numba.extending.overload(q8_0_row_dot, jit_options={"fastmath": FASTMATH}, inline="always")
def _q8_0_row_dot_compiled(x, xaux, row):
    return lambda x, xaux, row: _q8_0_row_dot_ir(xaux, q8_0_lanes_at(x.size), row)   # unchecked (`dot_q8_0`)


# Why lanes: a byte-to-int32 shuffle per 8 weights (vpmovsxbd, on the two of this CPU's four vector pipes that
# also convert or multiply) held this dot at 9-11 G weights/s on one core, compute-bound even on rows in L1.
# A shift and a mask per byte position leave each weight where it is, as Q4_K's nibbles: 16-18 G weights/s,
# 1.55-1.74x (rows of 1024 and 3072, one core, A/B in one process), so that two cores keep up with memory.

@numba.extending.intrinsic
def _q8_0_row_dot_ir(typingctx, xaux, lanes_at, row):
    """`q8_0_row_dot` in LLVM vector IR; xaux: x_aux(x), C-contiguous fp32, with x in Q8_0's lane order from
    lanes_at on; row: C-contiguous uint8."""
    _require_c_arrays("q8_0_row_dot", (xaux, numba.types.float32), (row, numba.types.uint8))

    def codegen(context, builder, signature, args):
        (sp, _), (rp, row_bytes) = (_data(context, builder, t, a) for t, a in zip(signature.args[::2], args[::2]))
        xp = _at(builder, sp, context.cast(builder, args[1], signature.args[1], numba.types.int64))
        top = _vec(_I32x8, [-(1 << 24)] * 8)                    # 0xFF000000: the top byte of each lane

        def blocks(first, count, acc):
            """acc + the scaled sums of `count` blocks from block `first` (an i64 value), added as a tree."""
            terms = []
            for k in range(count):
                b = builder.add(first, llvmlite.ir.Constant(_I64, k))
                xb = _at(builder, xp, builder.mul(b, llvmlite.ir.Constant(_I64, 32)))
                rb = _at(builder, rp, builder.mul(b, llvmlite.ir.Constant(_I64, 34)))
                lanes = _load(builder, rb, 2, _I32x8, 1)
                p = []
                for j in range(4):   # byte j of each lane at the top of the lane: q * 2^24
                    v = lanes if j == 3 else builder.shl(lanes, _vec(_I32x8, [24 - 8 * j] * 8))
                    v = v if j == 0 else builder.and_(v, top)
                    p.append(_fmul(builder, _load(builder, xb, 8 * j, _F32x8, 4), builder.sitofp(v, _F32x8)))
                terms.append(_fmul(builder, _sum_tree(builder, p), _splat(builder, _load_fp16(builder, rb, 0))))
            return _fadd(builder, acc, _sum_tree(builder, terms))
        n_blocks = builder.udiv(row_bytes, llvmlite.ir.Constant(_I64, 34))
        four = llvmlite.ir.Constant(_I64, 4)
        acc, = _for_blocks(builder, builder.udiv(n_blocks, four), [_vec(_F32x8, [0.0] * 8)],
                           lambda g, state: [blocks(builder.mul(g, four), 4, state[0])])
        done = builder.mul(builder.udiv(n_blocks, four), four)
        acc, = _for_blocks(builder, builder.sub(n_blocks, done), [acc],
                           lambda b, state: [blocks(builder.add(done, b), 1, state[0])])
        return _horizontal_sum(builder, acc)
    return numba.types.float32(xaux, lanes_at, row), codegen


# Q4_0: 18 bytes | d | qs[16] |  element l: qs[l] & 15, element l + 16: qs[l] >> 4     w = d * (q - 8)

@jit
def widen_q4_0(row, out):
    """row: uint8 [IN / 32 * 18] -> out: fp32 [IN]; two blocks a step, then the last one."""
    nb = row.size // 18
    for g2 in range(nb // 2):
        g = 2 * g2
        o, xo = 18 * g + 2, 32 * g
        d0, d1 = fp16_at(row, o - 2), fp16_at(row, o + 16)
        e0, e1 = d0 * SIXTEENTH, d1 * SIXTEENTH
        for l in range(16):
            v0, v1 = row[o + l], row[o + 18 + l]
            out[xo + l] = d0 * np.float32(v0 & 15) - np.float32(8) * d0
            out[xo + 16 + l] = e0 * np.float32(v0 & 240) - np.float32(8) * d0
            out[xo + 32 + l] = d1 * np.float32(v1 & 15) - np.float32(8) * d1
            out[xo + 48 + l] = e1 * np.float32(v1 & 240) - np.float32(8) * d1
    for b in range(nb - nb % 2, nb):
        o, xo, d = 18 * b + 2, 32 * b, fp16_at(row, 18 * b)
        for l in range(16):
            out[xo + l] = d * np.float32(row[o + l] & 15) - np.float32(8) * d
            out[xo + 16 + l] = d * SIXTEENTH * np.float32(row[o + l] & 240) - np.float32(8) * d


@jit
def dot_q4_0(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x) (its sums over 32), row: uint8 [IN / 32 * 18] -> fp32
    per block b: d * (x_lo . lo + (x_hi . 16 hi) / 16 - 8 xaux[b]), four blocks a step."""
    nb = row.size // 18
    acc = np.float32(0)
    for g4 in range(nb // 4):
        g = 4 * g4
        o, xo = 18 * g + 2, 32 * g
        s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = np.float32(0)
        for l in range(16):
            v0, v1, v2, v3 = row[o + l], row[o + 18 + l], row[o + 36 + l], row[o + 54 + l]
            s0 += x[xo + l] * np.float32(v0 & 15)
            t0 += x[xo + 16 + l] * np.float32(v0 & 240)
            s1 += x[xo + 32 + l] * np.float32(v1 & 15)
            t1 += x[xo + 48 + l] * np.float32(v1 & 240)
            s2 += x[xo + 64 + l] * np.float32(v2 & 15)
            t2 += x[xo + 80 + l] * np.float32(v2 & 240)
            s3 += x[xo + 96 + l] * np.float32(v3 & 15)
            t3 += x[xo + 112 + l] * np.float32(v3 & 240)
        acc += (fp16_at(row, o - 2) * (s0 + SIXTEENTH * t0 - np.float32(8) * xaux[g])
                + fp16_at(row, o + 16) * (s1 + SIXTEENTH * t1 - np.float32(8) * xaux[g + 1])
                + fp16_at(row, o + 34) * (s2 + SIXTEENTH * t2 - np.float32(8) * xaux[g + 2])
                + fp16_at(row, o + 52) * (s3 + SIXTEENTH * t3 - np.float32(8) * xaux[g + 3]))
    for b in range(nb - nb % 4, nb):
        o, xo = 18 * b + 2, 32 * b
        s = t = np.float32(0)
        for l in range(16):
            s += x[xo + l] * np.float32(row[o + l] & 15)
            t += x[xo + 16 + l] * np.float32(row[o + l] & 240)
        acc += fp16_at(row, o - 2) * (s + SIXTEENTH * t - np.float32(8) * xaux[b])
    return acc


@jit
def dot4_q4_0(x, xaux, r0, r1, r2, r3, y, c):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q4_0`, one after the other (x stays in L1)."""
    y[c], y[c + 1] = dot_q4_0(x, xaux, r0), dot_q4_0(x, xaux, r1)
    y[c + 2], y[c + 3] = dot_q4_0(x, xaux, r2), dot_q4_0(x, xaux, r3)


# Q5_0: 22 bytes | d | qh u32 | qs[16] |  as Q4_0, plus bit j of qh = 16s of element j     w = d * (q - 16)

@inline_jit
def qh_q5_0(row, o):
    """The uint32 of 5th bits of the Q5_0 block at row[o] (bytes o + 2 .. o + 5, little-endian)."""
    return (np.uint32(row[o + 2]) | (np.uint32(row[o + 3]) << 8) | (np.uint32(row[o + 4]) << 16)
            | (np.uint32(row[o + 5]) << 24))


@jit
def widen_q5_0(row, out):
    """row: uint8 [IN / 32 * 22] -> out: fp32 [IN]"""
    for b in range(row.size // 22):
        o, xo = 22 * b, 32 * b
        d, qh = fp16_at(row, o), qh_q5_0(row, o)
        for l in range(16):
            v = row[o + 6 + l]
            out[xo + l] = d * np.float32((v & 15) | (shl32(shr32(qh, l), 4) & 16)) - np.float32(16) * d
            out[xo + 16 + l] = (d * SIXTEENTH * np.float32((v & 240) | (shl32(shr32(qh, l + 16), 8) & 256))
                                - np.float32(16) * d)


@jit
def dot_q5_0(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x) (its sums over 32), row: uint8 [IN / 32 * 22] -> fp32 (as `dot_q4_0`, two blocks
    a step: the 5th bits take a variable shift per weight)"""
    nb = row.size // 22
    acc = np.float32(0)
    for g2 in range(nb // 2):
        g = 2 * g2
        o, xo = 22 * g, 32 * g
        h0, h1 = qh_q5_0(row, o), qh_q5_0(row, o + 22)
        s0 = s1 = t0 = t1 = np.float32(0)
        for l in range(16):
            v0, v1 = row[o + 6 + l], row[o + 28 + l]
            s0 += x[xo + l] * np.float32((v0 & 15) | (shl32(shr32(h0, l), 4) & 16))
            t0 += x[xo + 16 + l] * np.float32((v0 & 240) | (shl32(shr32(h0, l + 16), 8) & 256))
            s1 += x[xo + 32 + l] * np.float32((v1 & 15) | (shl32(shr32(h1, l), 4) & 16))
            t1 += x[xo + 48 + l] * np.float32((v1 & 240) | (shl32(shr32(h1, l + 16), 8) & 256))
        acc += (fp16_at(row, o) * (s0 + SIXTEENTH * t0 - np.float32(16) * xaux[g])
                + fp16_at(row, o + 22) * (s1 + SIXTEENTH * t1 - np.float32(16) * xaux[g + 1]))
    for b in range(nb - nb % 2, nb):
        o, xo = 22 * b, 32 * b
        h = qh_q5_0(row, o)
        s = t = np.float32(0)
        for l in range(16):
            v = row[o + 6 + l]
            s += x[xo + l] * np.float32((v & 15) | (shl32(shr32(h, l), 4) & 16))
            t += x[xo + 16 + l] * np.float32((v & 240) | (shl32(shr32(h, l + 16), 8) & 256))
        acc += fp16_at(row, o) * (s + SIXTEENTH * t - np.float32(16) * xaux[b])
    return acc


@jit
def dot4_q5_0(x, xaux, r0, r1, r2, r3, y, c):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q5_0`, one after the other (x stays in L1)."""
    y[c], y[c + 1] = dot_q5_0(x, xaux, r0), dot_q5_0(x, xaux, r1)
    y[c + 2], y[c + 3] = dot_q5_0(x, xaux, r2), dot_q5_0(x, xaux, r3)


# Q4_K: 144 bytes | d | dmin | scales[12] | qs[128] |   sub-block s = 2c + (high nibble), c = chunk of 32 qs
#                                                       w = d * sc[s] * q - dmin * m[s]

@jit
def widen_q4_k(row, out):
    """row: uint8 [IN / 256 * 144] -> out: fp32 [IN] (`q4_k_row_widen`)"""
    q4_k_row_widen(row, out)


def q4_k_row_widen(row, out):
    """out = a row of Q4_K blocks as fp32: w = d * sc[s] * q - dmin * m[s]. Plain NumPy here; compiled, LLVM
    vector IR (`_q4_k_row_widen_ir`: 16 weights from 8 bytes, each a convert and a multiply-add)."""
    out[:] = dequantize_q4_k(np.asarray(row).reshape(-1, 144)).ravel()


@numba.extending.overload(q4_k_row_widen, jit_options={"fastmath": FASTMATH}, inline="always")
def _q4_k_row_widen_compiled(row, out):
    return lambda row, out: _q4_k_row_widen_ir(row, out)


@jit
def dot_q4_k(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x), row: uint8 [IN / 256 * 144] -> fp32 (`q4_k_row_dot`), the sizes checked
    (`rows_dot`, which the kernels call, does not check: they build xaux from x and check the widths once)."""
    if xaux.size != x_aux_size(x.size) or row.size // 144 * QK_K != x.size:
        raise ValueError("dot_q4_k: xaux must be x_aux(x), and the row IN / 256 blocks")
    return q4_k_row_dot(x, xaux, row)


def q4_k_row_dot(x, xaux, row):
    """x . a row of Q4_K blocks: per block d * sum_s sc[s] * (x . q over sub-block s) - dmin * sum_s m[s] * xaux[s].
    Plain NumPy here; compiled, it is written in LLVM's vector IR (`_q4_k_row_dot_ir`), which reads x in the
    lane order that `x_aux` appends."""
    blocks = np.asarray(row).reshape(-1, 144)
    sc, m = unpack_scales_k(blocks[:, 4:16])                                    # [B, 8]
    qs = blocks[:, 16:144].reshape(-1, 4, 1, 32)
    q = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(-1, 8, 32)         # [B, sub-block, l]
    sums = (x.reshape(-1, 8, 32) * q).sum(axis=2)                              # [B, 8]
    d, dmin = _fp16(blocks[:, 0:2]), _fp16(blocks[:, 2:4])                     # [B, 1]
    return np.float32((d * sc * sums).sum() - (dmin * m * xaux[:x.size // 32].reshape(-1, 8)).sum())


@numba.extending.overload(q4_k_row_dot, jit_options={"fastmath": FASTMATH}, inline="always")
def _q4_k_row_dot_compiled(x, xaux, row):
    return lambda x, xaux, row: _q4_k_row_dot_ir(xaux, row)     # unchecked: a raise here cost 20% (`dot_q4_k`)


# Why IR: LLVM vectorises the loop form of this dot (8 sub-block sums in one loop over 32, as
# `dot_q5_k_bytes`) but then reduces each of the 8 vector sums to a scalar and unpacks and applies the scales
# one by one, about as much work as the products themselves. Here the 8 sums of a block stay vectors: each is
# multiplied by its sub-block's scale d * sc[s] (broadcast from the vector of 8 scales, which byte shuffles
# unpack from the 12 bytes) into one running vector for the whole row, the mins times xaux into another, and
# the row ends with one horizontal sum. Measured 1.2x (rows of 2048) to 1.4x (rows of 768) a version that
# reduced each block to a scalar, itself 1.2-1.3x the loop form.
# The nibbles are not moved into lanes of their own (a byte-to-int32 shuffle per 8 bytes, on the two of this
# CPU's four vector pipes that also convert or multiply): each 32-bit lane of a 32-byte chunk stays where it
# is and a mask per nibble position keeps one nibble of it; x was put in the matching order and scale
# beforehand (`q4_k_lane_order`). Measured 1.15x (rows of 2048) and 1.3x (rows of 768) the shuffling version;
# llvm-mca -mcpu=znver3 on the loop: 51 cycles a block instead of 66.

_F32x8, _I32x8, _I8x8, _I8x16 = (llvmlite.ir.VectorType(t, n) for t, n in (
    (llvmlite.ir.FloatType(), 8), (llvmlite.ir.IntType(32), 8), (llvmlite.ir.IntType(8), 8),
    (llvmlite.ir.IntType(8), 16)))
_I64 = llvmlite.ir.IntType(64)
_FAST = ("fast",)


def _vec(ty, values):
    return llvmlite.ir.Constant(ty, list(values))


def _require_c_arrays(name, *arrays_and_dtypes):
    """Typing check of an IR kernel's arrays: C-contiguous with the given dtypes (it reads their memory)."""
    for a, dtype in arrays_and_dtypes:
        if not (isinstance(a, numba.types.Array) and a.dtype == dtype and a.layout == "C"):
            raise numba.core.errors.TypingError(f"{name} needs C-contiguous {dtype} arrays, got {a}")


def _data(context, builder, array_type, array):
    """(pointer to the first element, number of elements) of a Numba array argument."""
    a = context.make_array(array_type)(context, builder, array)
    return a.data, a.nitems


def _at(builder, base, offset):
    """base + offset elements; offset an int or an i64 value."""
    return builder.gep(base, [offset if isinstance(offset, llvmlite.ir.Value) else llvmlite.ir.Constant(_I64, offset)])


def _load(builder, base, offset, vector_type, align):
    """The vector_type at base + offset elements."""
    return builder.load(builder.bitcast(_at(builder, base, offset), vector_type.as_pointer()), align=align)


def _load_fp16(builder, base, offset):
    """The fp16 at the bytes base + offset, base + offset + 1, as a float."""
    half = builder.load(builder.bitcast(_at(builder, base, offset), llvmlite.ir.HalfType().as_pointer()), align=1)
    return builder.fpext(half, llvmlite.ir.FloatType())


def _fadd(builder, a, b):
    return builder.fadd(a, b, flags=_FAST)


def _fmul(builder, a, b):
    return builder.fmul(a, b, flags=_FAST)


def _sum_tree(builder, values):
    """(v0 + v1) + (v2 + v3) ...: a short chain of dependent adds."""
    while len(values) > 1:
        values = [_fadd(builder, values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _horizontal_sum(builder, v):
    """v0 + ... + v7 of a <8 x float>: halves added, then pairs."""
    four = llvmlite.ir.VectorType(llvmlite.ir.IntType(32), 4)
    h = _fadd(builder, builder.shuffle_vector(v, v, _vec(four, [0, 1, 2, 3])),
              builder.shuffle_vector(v, v, _vec(four, [4, 5, 6, 7])))
    h = _fadd(builder, h, builder.shuffle_vector(h, h, _vec(four, [2, 3, 0, 1])))
    h = _fadd(builder, h, builder.shuffle_vector(h, h, _vec(four, [1, 0, 3, 2])))
    return builder.extract_element(h, llvmlite.ir.Constant(llvmlite.ir.IntType(32), 0))


def _splat(builder, value):
    v = builder.insert_element(llvmlite.ir.Constant(_F32x8, llvmlite.ir.Undefined), value,
                               llvmlite.ir.Constant(llvmlite.ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, _vec(_I32x8, [0] * 8))


def _lane(builder, v, i):
    """Lane i of a <8 x float>, broadcast to all 8 lanes."""
    return builder.shuffle_vector(v, v, _vec(_I32x8, [i] * 8))


def _for_blocks(builder, n, state, body):
    """for b in range(n): state = body(b, state), in IR; state is a list of values carried from block to block.
    Returns the final state."""
    before = builder.block
    head, loop, done = (builder.append_basic_block(name) for name in ("blocks", "block", "blocks_done"))
    builder.branch(head)
    builder.position_at_end(head)
    b = builder.phi(_I64)
    b.add_incoming(llvmlite.ir.Constant(_I64, 0), before)
    carried = []
    for value in state:
        phi = builder.phi(value.type)
        phi.add_incoming(value, before)
        carried.append(phi)
    builder.cbranch(builder.icmp_signed("<", b, n), loop, done)
    builder.position_at_end(loop)
    new_state = body(b, carried)
    b.add_incoming(builder.add(b, llvmlite.ir.Constant(_I64, 1)), builder.block)
    for phi, value in zip(carried, new_state):
        phi.add_incoming(value, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return carried


PREFETCH_BYTES = 2048   # how far ahead of the block being dotted the row dots ask for the weights' bytes


def _prefetch(builder, base, offsets):
    """Ask for the cache lines at base + PREFETCH_BYTES + each offset (llvm.prefetch: a hint, which never
    faults): the hardware prefetcher stops at every 4 KiB page, and decode's rows run on across pages."""
    byte, i32 = llvmlite.ir.IntType(8).as_pointer(), llvmlite.ir.IntType(32)
    fn = numba.core.cgutils.get_or_insert_function(
        builder.module, llvmlite.ir.FunctionType(llvmlite.ir.VoidType(), [byte, i32, i32, i32]), "llvm.prefetch.p0")
    for o in offsets:       # read, keep in all cache levels, data
        builder.call(fn, [_at(builder, base, PREFETCH_BYTES + o), i32(0), i32(3), i32(1)])


def _scales_mins_k(builder, scales):
    """The 8 scales and 8 mins of a Q4_K/Q5_K block as two <8 x float>, from a <16 x i8> holding its 12 scale
    bytes first (`unpack_scales_k`'s picture, with byte shuffles)."""
    def pick(*idx):
        return builder.shuffle_vector(scales, scales, _vec(_I32x8, idx))

    def top2(*idx):                  # bits 6-7 of s[idx] moved to bits 4-5, for sub-blocks 4..7 only
        shifted = builder.shl(builder.lshr(pick(*idx), _vec(_I8x8, [6] * 8)), _vec(_I8x8, [4] * 8))
        return builder.and_(shifted, _vec(_I8x8, [0] * 4 + [48] * 4))
    sc = builder.or_(builder.and_(pick(0, 1, 2, 3, 8, 9, 10, 11), _vec(_I8x8, [63] * 4 + [15] * 4)),
                     top2(0, 1, 2, 3, 0, 1, 2, 3))
    m_low = builder.and_(pick(4, 5, 6, 7, 8, 9, 10, 11), _vec(_I8x8, [63] * 4 + [240] * 4))
    m = builder.or_(builder.lshr(m_low, _vec(_I8x8, [0] * 4 + [4] * 4)), top2(4, 5, 6, 7, 4, 5, 6, 7))
    return (builder.uitofp(builder.zext(sc, _I32x8), _F32x8), builder.uitofp(builder.zext(m, _I32x8), _F32x8))


@numba.extending.intrinsic
def _q4_k_row_dot_ir(typingctx, xaux, row):
    """`q4_k_row_dot` in LLVM vector IR; xaux: x_aux(x), C-contiguous fp32, row: C-contiguous uint8."""
    _require_c_arrays("q4_k_row_dot", (xaux, numba.types.float32), (row, numba.types.uint8))

    def codegen(context, builder, signature, args):
        (sp, _), (rp, row_bytes) = (_data(context, builder, t, a) for t, a in zip(signature.args, args))
        n_blocks = builder.udiv(row_bytes, llvmlite.ir.Constant(_I64, 144))
        xp = _at(builder, sp, builder.mul(n_blocks, llvmlite.ir.Constant(_I64, 8)))    # x in lane order
        masks = [_vec(_I32x8, [15 << 4 * min(k, 6)] * 8) for k in range(8)]
        four = _vec(_I32x8, [4] * 8)

        def block(b, acc):           # acc: sum of d * sc[s] * S_s and sum of dmin * m[s] * xaux[s], as vectors
            xb = _at(builder, xp, builder.mul(b, llvmlite.ir.Constant(_I64, 256)))
            rb = _at(builder, rp, builder.mul(b, llvmlite.ir.Constant(_I64, 144)))
            _prefetch(builder, rb, (0, 48, 96))
            sums = []                # sub-block 2c: the even nibbles of chunk c's lanes, 2c + 1: the odd ones
            for c in range(4):
                lanes = builder.load(builder.bitcast(_at(builder, rb, 16 + 32 * c), _I32x8.as_pointer()), align=1)
                p = []
                for k in range(8):   # nibble k of each lane, in place: q * 16^k (16^6 for k = 7)
                    v = builder.and_(lanes if k < 7 else builder.lshr(lanes, four), masks[k])
                    p.append(_fmul(builder, _load(builder, xb, 64 * c + 8 * k, _F32x8, 4), builder.sitofp(v, _F32x8)))
                sums += [_sum_tree(builder, p[0::2]), _sum_tree(builder, p[1::2])]
            sc, m = _scales_mins_k(builder, _load(builder, rb, 4, _I8x16, 1))   # 16 bytes from 4: inside the block
            d_sc = _fmul(builder, _splat(builder, _load_fp16(builder, rb, 0)), sc)
            dmin_m = _fmul(builder, _splat(builder, _load_fp16(builder, rb, 2)), m)
            # the 8 scaled sums added as a tree, then to the running sum: one dependent add a block, not 8
            scaled = _sum_tree(builder, [_fmul(builder, sums[s_], _lane(builder, d_sc, s_)) for s_ in range(8)])
            xs = _load(builder, _at(builder, sp, builder.mul(b, llvmlite.ir.Constant(_I64, 8))), 0, _F32x8, 4)
            return [_fadd(builder, acc[0], scaled), _fadd(builder, acc[1], _fmul(builder, dmin_m, xs))]
        zero = _vec(_F32x8, [0.0] * 8)
        scaled, mins = _for_blocks(builder, n_blocks, [zero, zero], block)
        return _horizontal_sum(builder, builder.fsub(scaled, mins, flags=_FAST))
    return numba.types.float32(xaux, row), codegen


@numba.extending.intrinsic
def _q4_k_row_widen_ir(typingctx, row, out):
    """`q4_k_row_widen` in LLVM vector IR; row: C-contiguous uint8, out: C-contiguous fp32."""
    _require_c_arrays("q4_k_row_widen", (row, numba.types.uint8), (out, numba.types.float32))

    def codegen(context, builder, signature, args):
        (rp, row_bytes), (op, _) = (_data(context, builder, t, a) for t, a in zip(signature.args, args))
        lo, hi = _vec(_I32x8, [15] * 8), _vec(_I32x8, [240] * 8)

        def block(b, state):
            ob = _at(builder, op, builder.mul(b, llvmlite.ir.Constant(_I64, 256)))
            rb = _at(builder, rp, builder.mul(b, llvmlite.ir.Constant(_I64, 144)))
            sc, m = _scales_mins_k(builder, _load(builder, rb, 4, _I8x16, 1))
            d_sc = _fmul(builder, _fmul(builder, _splat(builder, _load_fp16(builder, rb, 0)),
                                        _vec(_F32x8, [1.0, 1 / 16] * 4)), sc)
            dmin_m = _fmul(builder, _splat(builder, _load_fp16(builder, rb, 2)), m)
            for c in range(4):       # sub-block 2c: low nibbles of qs[32c:32c + 32], 2c + 1: high (times 16)
                a_lo, a_hi = _lane(builder, d_sc, 2 * c), _lane(builder, d_sc, 2 * c + 1)
                b_lo, b_hi = _lane(builder, dmin_m, 2 * c), _lane(builder, dmin_m, 2 * c + 1)
                for t in range(4):
                    v = builder.zext(_load(builder, rb, 16 + 32 * c + 8 * t, _I8x8, 1), _I32x8)
                    for mask, a, b_, e in ((lo, a_lo, b_lo, 64 * c + 8 * t), (hi, a_hi, b_hi, 64 * c + 32 + 8 * t)):
                        w = builder.fsub(_fmul(builder, a, builder.uitofp(builder.and_(v, mask), _F32x8)), b_,
                                         flags=_FAST)
                        builder.store(w, builder.bitcast(_at(builder, ob, e), _F32x8.as_pointer()), align=4)
            return state
        n_blocks = builder.udiv(row_bytes, llvmlite.ir.Constant(_I64, 144))
        _for_blocks(builder, n_blocks, [], block)
        return context.get_dummy_value()
    return numba.types.none(row, out), codegen


@jit
def dot4_q4_k(x, xaux, r0, r1, r2, r3, y, c):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q4_k`, one after the other (x stays in L1). Measured no
    faster: the four rows taking turns block by block; sharing each x load across four rows (4 x 8 sums, more
    than the 16 vector registers); in the loop form, one running sum per block or per four rows with the scales
    folded into x (a multiply per weight) or into q (32-bit products)."""
    y[c], y[c + 1] = q4_k_row_dot(x, xaux, r0), q4_k_row_dot(x, xaux, r1)
    y[c + 2], y[c + 3] = q4_k_row_dot(x, xaux, r2), q4_k_row_dot(x, xaux, r3)


@inline_jit
def k_block_sum(row, o, xaux, k, s0, s1, s2, s3, s4, s5, s6, s7):
    """A Q5_K block's share of a dot from its 8 sub-block sums s_s of x * q:
    d * sum_s sc[s] s_s - dmin * sum_s m[s] xaux[k + s]."""
    sc0, m0 = scale_min_k(row, o + 4, 0)
    sc1, m1 = scale_min_k(row, o + 4, 1)
    sc2, m2 = scale_min_k(row, o + 4, 2)
    sc3, m3 = scale_min_k(row, o + 4, 3)
    sc4, m4 = scale_min_k(row, o + 4, 4)
    sc5, m5 = scale_min_k(row, o + 4, 5)
    sc6, m6 = scale_min_k(row, o + 4, 6)
    sc7, m7 = scale_min_k(row, o + 4, 7)
    scaled = sc0 * s0 + sc1 * s1 + sc2 * s2 + sc3 * s3 + sc4 * s4 + sc5 * s5 + sc6 * s6 + sc7 * s7
    mins = (m0 * xaux[k] + m1 * xaux[k + 1] + m2 * xaux[k + 2] + m3 * xaux[k + 3] + m4 * xaux[k + 4]
            + m5 * xaux[k + 5] + m6 * xaux[k + 6] + m7 * xaux[k + 7])
    return fp16_at(row, o) * scaled - fp16_at(row, o + 2) * mins


# Q5_K: 176 bytes | d | dmin | scales[12] | qh[32] | qs[128] |   Q4_K plus bit s of qh[l] = 16s of element l
#                                                                 of sub-block s      w = d * sc[s] * q - dmin * m[s]

@jit
def widen_q5_k(row, out):
    """row: uint8 [IN / 256 * 176] -> out: fp32 [IN]"""
    for b in range(row.size // 176):
        o, xo = 176 * b, 256 * b
        d, dmin = fp16_at(row, o), fp16_at(row, o + 2)
        for c in range(4):
            sc0, m0 = scale_min_k(row, o + 4, 2 * c)
            sc1, m1 = scale_min_k(row, o + 4, 2 * c + 1)
            a0, a1, b0, b1 = d * sc0, d * sc1 * SIXTEENTH, dmin * m0, dmin * m1
            q, xa = o + 48 + 32 * c, xo + 64 * c
            for l in range(32):
                v, h = row[q + l], shr32(row[o + 16 + l], 2 * c)
                out[xa + l] = a0 * np.float32((v & 15) | (shl32(h, 4) & 16)) - b0
                out[xa + 32 + l] = a1 * np.float32((v & 240) | (shl32(h, 7) & 256)) - b1


@jit
def q5_k_bytes(row, q):
    """row: uint8 [IN / 256 * 176] -> q: uint8 [IN], the 5-bit values: low 4 bits from qs, the 5th from bit s
    of qh[l] for element l of sub-block s (the bit work on bytes, 32 a vector instruction, as `q6_k_bytes`)."""
    for b in range(row.size // 176):
        qh, qs, e = 176 * b + 16, 176 * b + 48, 256 * b
        for l in range(32):
            h = row[qh + l]
            v0, v1, v2, v3 = row[qs + l], row[qs + 32 + l], row[qs + 64 + l], row[qs + 96 + l]
            q[e + l], q[e + 32 + l] = (v0 & 15) | ((h & 1) << 4), (v0 >> 4) | ((h & 2) << 3)
            q[e + 64 + l], q[e + 96 + l] = (v1 & 15) | ((h & 4) << 2), (v1 >> 4) | ((h & 8) << 1)
            q[e + 128 + l], q[e + 160 + l] = (v2 & 15) | (h & 16), (v2 >> 4) | ((h & 32) >> 1)
            q[e + 192 + l], q[e + 224 + l] = (v3 & 15) | ((h & 64) >> 2), (v3 >> 4) | ((h & 128) >> 3)


@jit
def dot_q5_k(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x) (its sums over 32), row: uint8 [IN / 256 * 176] -> fp32 (as `dot_q4_k`, in two
    passes: the 5-bit values into a scratch row of bytes by `q5_k_bytes`, then 8 sub-block sums a block read
    from it; measured 1.2x faster than moving each 5th bit in the dot's loop)"""
    q = np.empty(x.size, np.uint8)
    q5_k_bytes(row, q)
    return dot_q5_k_bytes(x, xaux, row, q)


@jit
def dot_q5_k_bytes(x, xaux, row, q):
    """`dot_q5_k` of a row whose 5-bit values `q5_k_bytes` wrote into q: uint8 [IN]."""
    acc = np.float32(0)
    for b in range(row.size // 176):
        xo = 256 * b
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0)
        for l in range(32):
            e = xo + l
            s0 += x[e] * np.float32(q[e])
            s1 += x[e + 32] * np.float32(q[e + 32])
            s2 += x[e + 64] * np.float32(q[e + 64])
            s3 += x[e + 96] * np.float32(q[e + 96])
            s4 += x[e + 128] * np.float32(q[e + 128])
            s5 += x[e + 160] * np.float32(q[e + 160])
            s6 += x[e + 192] * np.float32(q[e + 192])
            s7 += x[e + 224] * np.float32(q[e + 224])
        acc += k_block_sum(row, 176 * b, xaux, 8 * b, s0, s1, s2, s3, s4, s5, s6, s7)
    return acc


@jit
def dot4_q5_k(x, xaux, r0, r1, r2, r3, y, c, scratch=None):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q5_k`, one after the other, in one scratch row (`scratch`,
    uint8 [>= IN], when the caller has one: an allocation costs as much as the bit work of a short row)."""
    q = np.empty(x.size, np.uint8) if scratch is None else scratch[:x.size]
    q5_k_bytes(r0, q)
    y[c] = dot_q5_k_bytes(x, xaux, r0, q)
    q5_k_bytes(r1, q)
    y[c + 1] = dot_q5_k_bytes(x, xaux, r1, q)
    q5_k_bytes(r2, q)
    y[c + 2] = dot_q5_k_bytes(x, xaux, r2, q)
    q5_k_bytes(r3, q)
    y[c + 3] = dot_q5_k_bytes(x, xaux, r3, q)


# Q6_K: 210 bytes | ql[128] | qh[64] | scales[16] int8 | d |   q = low 4 bits from ql, top 2 from qh
#                                                             w = d * sc[e // 16] * (q - 32)
# The bit work (nibbles and 2-bit pieces into 6-bit values) is done on whole 32-bit lanes, 32 values to a vector
# instruction. The dot does it in registers, in LLVM vector IR as `q4_k_row_dot` (16 sub-block sums kept as
# vectors, scaled into one running vector, one horizontal sum a row), and as there, each value stays in its
# lane (a mask, no byte-to-int32 shuffle) and x comes in the matching order (`q6_k_lane_order`): measured
# 1.7x (rows of 2048) and 1.9x (rows of 768) the version that assembled bytes and widened them with shuffles.
# Widening writes the row through a scratch row of q - 32 (`q6_k_bytes`).

@jit
def q6_k_bytes(row, q):
    """row: uint8 [IN / 256 * 210] -> q: int8 [IN], the 6-bit values minus 32. In half h of a block (ql from
    64h, qh from 32h) byte l gives elements l, l + 32, l + 64, l + 96."""
    for b in range(row.size // 210):
        for h in range(2):
            ql, qh, e = 210 * b + 64 * h, 210 * b + 128 + 32 * h, 256 * b + 128 * h
            for l in range(32):
                v0, v1, hi = row[ql + l], row[ql + 32 + l], row[qh + l]
                q[e + l] = int((v0 & 15) | ((hi & 3) << 4)) - 32
                q[e + 32 + l] = int((v1 & 15) | ((hi & 12) << 2)) - 32
                q[e + 64 + l] = int((v0 >> 4) | (hi & 48)) - 32
                q[e + 96 + l] = int((v1 >> 4) | ((hi >> 2) & 48)) - 32


@jit
def widen_q6_k(row, out):
    """row: uint8 [IN / 256 * 210] -> out: fp32 [IN], from a scratch row of q - 32 (`q6_k_row_widen`)"""
    q = np.empty(out.size, np.int8)
    q6_k_bytes(row, q)
    q6_k_row_widen(q, row, out)


def q6_k_row_widen(q, row, out):
    """out = a row of Q6_K blocks as fp32, w = (d * sc[j]) * (q - 32), the values minus 32 already in q
    (`q6_k_bytes`). Plain NumPy here; compiled, LLVM vector IR (`_q6_k_row_widen_ir`)."""
    blocks = np.asarray(row).reshape(-1, 210)
    scale = _fp16(blocks[:, 208:210]) * blocks[:, 192:208].view(np.int8)      # [B, 16]
    out[:] = (scale[:, :, None] * q.reshape(-1, 16, 16)).ravel()


@numba.extending.overload(q6_k_row_widen, jit_options={"fastmath": FASTMATH}, inline="always")
def _q6_k_row_widen_compiled(q, row, out):
    return lambda q, row, out: _q6_k_row_widen_ir(q, row, out)


@jit
def dot_q6_k(x, xaux, row):
    """x: [IN] fp32, xaux: x_aux(x), row: uint8 [IN / 256 * 210] -> fp32 (`q6_k_row_dot`), the sizes checked
    as in `dot_q4_k`."""
    if xaux.size != x_aux_size(x.size) or row.size // 210 * QK_K != x.size:
        raise ValueError("dot_q6_k: xaux must be x_aux(x), and the row IN / 256 blocks")
    return q6_k_row_dot(x, xaux, row)


@jit
def dot4_q6_k(x, xaux, r0, r1, r2, r3, y, c):
    """y[c + i] = x . r_i for i = 0..3: four `dot_q6_k`, one after the other (x stays in L1)."""
    y[c], y[c + 1] = q6_k_row_dot(x, xaux, r0), q6_k_row_dot(x, xaux, r1)
    y[c + 2], y[c + 3] = q6_k_row_dot(x, xaux, r2), q6_k_row_dot(x, xaux, r3)


def q6_k_row_dot(x, xaux, row):
    """x . a row of Q6_K blocks: per block d * sum_j sc[j] * (x . (q - 32) over sub-block j of 16). Plain NumPy
    here; compiled, LLVM vector IR (`_q6_k_row_dot_ir`), which reads x in the order that `x_aux` puts it in."""
    blocks = np.asarray(row).reshape(-1, 210)
    q = np.empty(blocks.shape[0] * QK_K, np.int8)
    q6_k_bytes(np.asarray(row), q)                                             # q - 32, element order
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)                   # [B, 16]
    sums = (x.reshape(-1, 16, 16) * q.reshape(-1, 16, 16)).sum(axis=2)         # [B, 16]
    return np.float32((_fp16(blocks[:, 208:210]) * sc * sums).sum())


@numba.extending.overload(q6_k_row_dot, jit_options={"fastmath": FASTMATH}, inline="always")
def _q6_k_row_dot_compiled(x, xaux, row):
    return lambda x, xaux, row: _q6_k_row_dot_ir(xaux, row)     # unchecked, as q4_k_row_dot (`dot_q6_k`)


@numba.extending.intrinsic
def _q6_k_row_widen_ir(typingctx, q, row, out):
    """`q6_k_row_widen` in LLVM vector IR; q: C-contiguous int8, row: C-contiguous uint8, out: fp32."""
    _require_c_arrays("q6_k_row_widen", (q, numba.types.int8), (row, numba.types.uint8), (out, numba.types.float32))

    def codegen(context, builder, signature, args):
        (qp, _), (rp, row_bytes), (op, _) = (_data(context, builder, t, a) for t, a in zip(signature.args, args))

        def block(b, state):
            e0 = builder.mul(b, llvmlite.ir.Constant(_I64, 256))
            qb, ob = _at(builder, qp, e0), _at(builder, op, e0)
            rb = _at(builder, rp, builder.mul(b, llvmlite.ir.Constant(_I64, 210)))
            scales = _load(builder, rb, 192, _I8x16, 1)
            d = _splat(builder, _load_fp16(builder, rb, 208))
            for h in range(2):                               # sub-blocks 8h .. 8h + 7
                sc = builder.shuffle_vector(scales, scales, _vec(_I32x8, range(8 * h, 8 * h + 8)))
                d_sc = _fmul(builder, d, builder.sitofp(builder.sext(sc, _I32x8), _F32x8))
                for j in range(8):
                    for u in range(2):                       # 8 weights of sub-block 8h + j
                        e = 128 * h + 16 * j + 8 * u
                        qf = builder.sitofp(builder.sext(_load(builder, qb, e, _I8x8, 1), _I32x8), _F32x8)
                        w = _fmul(builder, _lane(builder, d_sc, j), qf)
                        builder.store(w, builder.bitcast(_at(builder, ob, e), _F32x8.as_pointer()), align=4)
            return state
        n_blocks = builder.udiv(row_bytes, llvmlite.ir.Constant(_I64, 210))
        _for_blocks(builder, n_blocks, [], block)
        return context.get_dummy_value()
    return numba.types.none(q, row, out), codegen


@numba.extending.intrinsic
def _q6_k_row_dot_ir(typingctx, xaux, row):
    """`q6_k_row_dot` in LLVM vector IR; xaux: x_aux(x), C-contiguous fp32, row: C-contiguous uint8.
    A quarter of a half block (32 elements 128h + 32p + l, l = 4i + j) is assembled as 8 lanes of 4 bytes, its
    6-bit values in place (bits 8j..8j+5 of lane i, the picture of `dequantize_q6_k` done on whole lanes), then
    a mask per byte position keeps value j of every lane: q * 256^j, multiplied with x in `q6_k_lane_order`.
    The offset -32 is applied per sub-block of 16, from the sums of x over 16 in xaux."""
    _require_c_arrays("q6_k_row_dot", (xaux, numba.types.float32), (row, numba.types.uint8))

    def codegen(context, builder, signature, args):
        (ap, _), (rp, row_bytes) = (_data(context, builder, t, a) for t, a in zip(signature.args, args))
        n_blocks = builder.udiv(row_bytes, llvmlite.ir.Constant(_I64, 210))
        n_in = builder.mul(n_blocks, llvmlite.ir.Constant(_I64, 256))
        xp = _at(builder, ap, builder.add(builder.mul(n_blocks, llvmlite.ir.Constant(_I64, 8)), n_in))
        sp = _at(builder, xp, n_in)                                       # sums of x over 16

        def each(v):
            return _vec(_I32x8, [v] * 8)

        def lanes_at(rb, offset):
            return builder.load(builder.bitcast(_at(builder, rb, offset), _I32x8.as_pointer()), align=1)

        def block(b, state):
            acc, offsets = state     # sum of d * sc[j] * (x . q) over sub-blocks j, and of d * sc[j] * xsum16[j]
            xb = _at(builder, xp, builder.mul(b, llvmlite.ir.Constant(_I64, 256)))
            rb = _at(builder, rp, builder.mul(b, llvmlite.ir.Constant(_I64, 210)))
            _prefetch(builder, rb, (0, 56, 112, 168))
            scales = _load(builder, rb, 192, _I8x16, 1)
            d = _splat(builder, _load_fp16(builder, rb, 208))
            terms, d_scs = [], []
            for h in range(2):                               # half h: elements 128h .. 128h + 127
                ql0, ql1, qh = lanes_at(rb, 64 * h), lanes_at(rb, 64 * h + 32), lanes_at(rb, 128 + 32 * h)
                low, top = each(0x0F0F0F0F), each(0x30303030)
                quarters = [                                 # elements 128h + 32p + l, value j of lane i
                    builder.or_(builder.and_(ql0, low), builder.and_(builder.shl(qh, each(4)), top)),
                    builder.or_(builder.and_(ql1, low), builder.and_(builder.shl(qh, each(2)), top)),
                    builder.or_(builder.and_(builder.lshr(ql0, each(4)), low), builder.and_(qh, top)),
                    builder.or_(builder.and_(builder.lshr(ql1, each(4)), low),
                                builder.and_(builder.lshr(qh, each(2)), top))]
                sc = builder.shuffle_vector(scales, scales, _vec(_I32x8, range(8 * h, 8 * h + 8)))
                d_sc = _fmul(builder, d, builder.sitofp(builder.sext(sc, _I32x8), _F32x8))
                d_scs.append(d_sc)
                for p, q in enumerate(quarters):
                    prods = [_fmul(builder, _load(builder, xb, 128 * h + 32 * p + 8 * j, _F32x8, 4),
                                   builder.sitofp(builder.and_(q, each(0x3F << 8 * j)), _F32x8)) for j in range(4)]
                    # lanes 0-3 are elements l < 16 (sub-block 8h + 2p), lanes 4-7 the next sub-block
                    pair = builder.shuffle_vector(d_sc, d_sc, _vec(_I32x8, [2 * p] * 4 + [2 * p + 1] * 4))
                    terms.append(_fmul(builder, _sum_tree(builder, prods), pair))
            x16 = _at(builder, sp, builder.mul(b, llvmlite.ir.Constant(_I64, 16)))
            o = _fadd(builder, _fmul(builder, d_scs[0], _load(builder, x16, 0, _F32x8, 4)),
                      _fmul(builder, d_scs[1], _load(builder, x16, 8, _F32x8, 4)))
            return [_fadd(builder, acc, _sum_tree(builder, terms)), _fadd(builder, offsets, o)]
        zero = _vec(_F32x8, [0.0] * 8)
        acc, offsets = _for_blocks(builder, n_blocks, [zero, zero], block)
        return _horizontal_sum(builder, builder.fsub(acc, _fmul(builder, offsets, _vec(_F32x8, [32.0] * 8)),
                                                     flags=_FAST))
    return numba.types.float32(xaux, row), codegen


# --- dispatch on the type code -------------------------------------------------------------------
#
# One compiled function for every type: a row is always its stored bytes (uint8), so the kernels that call
# these compile once. The plain types are here too: F32 (4 bytes a value), F16, BF16 (2 bytes, as bits).

def row_view(w) -> tuple[int, np.ndarray]:
    """(type code, uint8 [..., OUT, ROW_BYTES]): a weight's rows as the bytes these kernels read.
    w: QuantWeight, or a plain array [..., OUT, IN] of fp32, fp16 or bf16 bits (uint16)."""
    if isinstance(w, QuantWeight):
        return w.kind, w.data
    kinds = {np.dtype(np.float32): F32, np.dtype(np.float16): F16, np.dtype(np.uint16): BF16}
    if w.dtype not in kinds:
        raise QuantError(f"row_view: a plain weight must be float32, float16 or bf16 bits (uint16), not {w.dtype}")
    w = np.ascontiguousarray(w)
    return kinds[w.dtype], w.view(np.uint8)


@jit
def widen_row(kind, row, out):
    """out [IN] = the row as fp32. kind: GGML type code, row: its bytes uint8 [ROW_BYTES] (C-contiguous)."""
    if kind == Q4_K:
        widen_q4_k(row, out)
    elif kind == Q6_K:
        widen_q6_k(row, out)
    elif kind == Q8_0:
        widen_q8_0(row, out)
    elif kind == Q5_K:
        widen_q5_k(row, out)
    elif kind == Q4_0:
        widen_q4_0(row, out)
    elif kind == Q5_0:
        widen_q5_0(row, out)
    elif kind == BF16:
        bits = row.view(np.uint16)
        for j in range(out.size):
            out[j] = bf16_as_f32(bits[j])
    elif kind == F16:
        bits = row.view(np.uint16)
        for j in range(out.size):
            out[j] = f16_as_f32(bits[j])
    elif kind == F32:
        out[:] = row.view(np.float32)
    else:
        raise ValueError("widen_row: unsupported GGML type code")


@jit
def row_dot(kind, x, xaux, row):
    """x . the row, fp32. x: [IN] fp32, xaux: x_aux(x), row: bytes uint8 [ROW_BYTES]."""
    if kind == Q4_K:
        return dot_q4_k(x, xaux, row)
    if kind == Q6_K:
        return dot_q6_k(x, xaux, row)
    if kind == Q8_0:
        return dot_q8_0(x, xaux, row)
    if kind == Q5_K:
        return dot_q5_k(x, xaux, row)
    if kind == Q4_0:
        return dot_q4_0(x, xaux, row)
    if kind == Q5_0:
        return dot_q5_0(x, xaux, row)
    acc = np.float32(0)
    if kind == BF16:
        bits = row.view(np.uint16)
        for j in range(x.size):
            acc += x[j] * bf16_as_f32(bits[j])
    elif kind == F16:
        bits = row.view(np.uint16)
        for j in range(x.size):
            acc += x[j] * f16_as_f32(bits[j])
    elif kind == F32:
        w = row.view(np.float32)
        for j in range(x.size):
            acc += x[j] * w[j]
    else:
        raise ValueError("row_dot: unsupported GGML type code")
    return acc


@jit
def rows_dot(kind, x, xaux, w, r0, r1, y, c, scratch=None):
    """y[c + r - r0] = x . w[r] for the rows r0..r1-1 of w: one type dispatch for all of them. Q4_K, Q6_K, Q8_0
    and BF16 loop over the rows around their row dot (1.2-1.3x calling `rows_dot4` four rows at a time, whose
    arguments cost as much as the branch); the other types go four rows at a time, then one by one.
    x: [IN] fp32, xaux: x_aux(x), w: uint8 [OUT, ROW_BYTES] of type `kind`, y: fp32 [>= c + r1 - r0],
    scratch: as for rows_dot4"""
    if kind == Q4_K:
        for r in range(r0, r1):
            y[c + r - r0] = q4_k_row_dot(x, xaux, w[r])
    elif kind == Q6_K:
        for r in range(r0, r1):
            y[c + r - r0] = q6_k_row_dot(x, xaux, w[r])
    elif kind == Q8_0:
        for r in range(r0, r1):
            y[c + r - r0] = q8_0_row_dot(x, xaux, w[r])
    elif kind == BF16 and x.size % 16 == 0:
        half, o = x.size // 2, bf16_lanes_at(x.size)
        x_even, x_odd = xaux[o:o + half], xaux[o + half:o + 2 * half]
        lanes = w.view(np.uint32)          # once: a view per row cost 10% of an output head's time
        for r in range(r0, r1):
            y[c + r - r0] = bf16_row_dot(x_even, x_odd, lanes[r])
    else:
        r4 = r0 + (r1 - r0) // 4 * 4
        for r in range(r0, r4, 4):
            rows_dot4(kind, x, xaux, w[r], w[r + 1], w[r + 2], w[r + 3], y, c + r - r0, scratch)
        for r in range(r4, r1):
            y[c + r - r0] = row_dot(kind, x, xaux, w[r])


@jit
def rows_dot4(kind, x, xaux, r0, r1, r2, r3, y, c, scratch=None):
    """y[c + i] = x . r_i for i = 0..3. x: [IN] fp32, xaux: x_aux(x), r_i: bytes uint8 [ROW_BYTES],
    y: fp32 [>= c + 4], scratch: None or uint8 [>= IN] that Q5_K may use instead of allocating"""
    if kind == Q4_K:
        dot4_q4_k(x, xaux, r0, r1, r2, r3, y, c)
    elif kind == Q6_K:
        dot4_q6_k(x, xaux, r0, r1, r2, r3, y, c)
    elif kind == Q8_0:
        dot4_q8_0(x, xaux, r0, r1, r2, r3, y, c)
    elif kind == Q5_K:
        dot4_q5_k(x, xaux, r0, r1, r2, r3, y, c, scratch)
    elif kind == Q4_0:
        dot4_q4_0(x, xaux, r0, r1, r2, r3, y, c)
    elif kind == Q5_0:
        dot4_q5_0(x, xaux, r0, r1, r2, r3, y, c)
    elif kind == BF16:
        b0, b1, b2, b3 = r0.view(np.uint16), r1.view(np.uint16), r2.view(np.uint16), r3.view(np.uint16)
        a0 = a1 = a2 = a3 = np.float32(0)
        for j in range(x.size):
            u = x[j]
            a0 += u * bf16_as_f32(b0[j]); a1 += u * bf16_as_f32(b1[j])   # noqa: E702
            a2 += u * bf16_as_f32(b2[j]); a3 += u * bf16_as_f32(b3[j])   # noqa: E702
        y[c], y[c + 1], y[c + 2], y[c + 3] = a0, a1, a2, a3
    else:
        y[c], y[c + 1] = row_dot(kind, x, xaux, r0), row_dot(kind, x, xaux, r1)
        y[c + 2], y[c + 3] = row_dot(kind, x, xaux, r2), row_dot(kind, x, xaux, r3)
