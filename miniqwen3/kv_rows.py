"""Decode attention's two reads of a KV cache, each row read as the cache stores it (fp32, bf16 bits, or Q8_0
blocks) and widened in registers, never into a copy:

    key_dots:   p[i, s] = qs[i] . key s0 + s                          s < n
    value_sums: acc[i] += sum over s < n of p[i, s] * value s0 + s

for every query row i. The query rows share each key and value as it is read, KV_ROWS of them at a time: a decode
step's rows are the query heads that share one KV head (Qwen3-0.6B: 2, Qwen3-30B-A3B: 8).
A row is read CHUNK values at a time (one Q8_0 block; two 16-lane vectors), its Q8_0 scale applied once per
chunk. value_sums keeps its 2 x rows vectors of sums in registers over all n rows of a chunk, where a Numba loop
loaded and stored `acc` at every value row; key_dots keeps 2 x rows vectors over a key's chunks and adds their
lanes once per key.

In LLVM IR through Numba's `intrinsic`, as `tiles` and `quants`' row dots, one kernel per count of rows (1 to 4);
the NumPy pictures below are what NUMBA_DISABLE_JIT runs. tests/test_kernels.py checks both against float64
products with the widened rows."""
from __future__ import annotations

import llvmlite.binding
import llvmlite.ir as ir
import numba
import numpy as np
from numba.core import cgutils

from .ops import kv_as_float32
from .quants import _for_blocks, _load, _require_c_arrays

CHUNK = 32      # values of a row per step: one Q8_0 block, two vectors of 16 lanes
# query rows a call reads each row for, at most: 2 x 4 vectors of sums (and, in key_dots, 8 of the query) in
# AVX-512's 32 registers; without it a 16-lane vector is two of AVX2's 16, and 4 rows' sums alone would fill them
KV_ROWS = 4 if llvmlite.binding.get_host_cpu_features().get("avx512f", False) else 2

_F32 = ir.FloatType()
_F32x16 = ir.VectorType(_F32, 16)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_I16x16 = ir.VectorType(ir.IntType(16), 16)
_I8x16 = ir.VectorType(ir.IntType(8), 16)
_I64 = ir.IntType(64)
_KINDS = {numba.types.float32: "f32", numba.types.uint16: "bf16", numba.types.uint8: "q8_0"}


def key_dots(qs, ks, s0, n, p):
    """p[i, s] = qs[i] . key s0 + s, for every row i and s < n.
    qs: fp32 [R, D] (D a multiple of CHUNK), ks: one KV head's keys [S, D] fp32 or bf16 bits, or uint8
    [S, D / 32 * 34] Q8_0 blocks, p: fp32 [R, >= n]"""
    p[:, :n] = qs @ kv_as_float32(ks[s0:s0 + n]).T


def value_sums(p, vs, s0, n, acc):
    """acc[i] += sum over s < n of p[i, s] * value s0 + s, for every row i.
    p: fp32 [R, >= n], vs: one KV head's values as `key_dots`' ks, acc: fp32 [R, D]"""
    acc += p[:, :n] @ kv_as_float32(vs[s0:s0 + n])


# --- the IR ---------------------------------------------------------------------------------------

def _splat16(builder, value):
    one = builder.insert_element(ir.Constant(_F32x16, ir.Undefined), value, ir.IntType(32)(0))
    return builder.shuffle_vector(one, one, ir.Constant(_I32x16, [0] * 16))


def _fma(builder, a, b, c):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32x16, [_F32x16] * 3), "llvm.fma.v16f32")
    return builder.call(fn, [a, b, c])


def _chunk(kind, builder, row, c):
    """Values CHUNK * c .. CHUNK * c + 31 of the KV row at `row` (a pointer to its first element) as two
    <16 x float>: fp32 loaded, bf16 bits shifted into the top half of fp32, a Q8_0 block's int8 times its scale."""
    if kind == "q8_0":
        block = builder.gep(row, [builder.mul(c, _I64(34))])
        scale = _scale16(builder, block)
        return [builder.fmul(builder.sitofp(builder.sext(_load(builder, block, 2 + 16 * v, _I8x16, 1), _I32x16),
                                            _F32x16), scale, flags=("fast",)) for v in (0, 1)]
    first = builder.mul(c, _I64(CHUNK))
    if kind == "bf16":
        return [builder.bitcast(builder.shl(builder.zext(_load(builder, row, builder.add(first, _I64(16 * v)),
                                                               _I16x16, 2), _I32x16),
                                            ir.Constant(_I32x16, [16] * 16)), _F32x16) for v in (0, 1)]
    return [_load(builder, row, builder.add(first, _I64(16 * v)), _F32x16, 4) for v in (0, 1)]


def _scale16(builder, block):
    """A Q8_0 block's fp16 scale (its first two bytes) in all 16 lanes of a <16 x float>: the 16 bits loaded and
    broadcast, then widened (vpbroadcastw, vcvtph2ps). A scalar widened and then broadcast compiled to a vpinsrw
    into an accumulator's register, which chained every block onto the previous block's sums."""
    bits = builder.load(builder.bitcast(block, ir.IntType(16).as_pointer()), align=1)
    one = builder.insert_element(ir.Constant(_I16x16, ir.Undefined), bits, ir.IntType(32)(0))
    spread = builder.shuffle_vector(one, one, ir.Constant(_I32x16, [0] * 16))
    return builder.fpext(builder.bitcast(spread, ir.VectorType(ir.HalfType(), 16)), _F32x16)


def _lane_sum(builder, v):
    """v0 + ... + v15 of a <16 x float>: halves added four times."""
    width = 16
    while width > 1:
        width //= 2
        half = ir.VectorType(ir.IntType(32), width)
        v = builder.fadd(builder.shuffle_vector(v, v, ir.Constant(half, list(range(width)))),
                         builder.shuffle_vector(v, v, ir.Constant(half, list(range(width, 2 * width)))),
                         flags=("fast",))
    return builder.extract_element(v, ir.IntType(32)(0))


def _operands(context, builder, signature, args, rows):
    """A kernel's arguments (a, r0, kv, s0, n, b) as the IR uses them: pointers to rows r0 .. r0 + rows - 1 of a
    and of b, to KV row s0, the KV rows' stride (elements), n, and the widths of a's and b's rows."""
    (a, kv, b), (a_t, r0_t, kv_t, s0_t, n_t, b_t) = (args[0], args[2], args[5]), signature.args
    a, kv, b = (context.make_array(t)(context, builder, x) for t, x in ((a_t, a), (kv_t, kv), (b_t, b)))
    r0, s0, n = (context.cast(builder, args[i], signature.args[i], numba.types.int64) for i in (1, 3, 4))
    widths = [builder.extract_value(x.shape, 1) for x in (a, kv, b)]

    def rows_of(x, width):
        return [builder.gep(x.data, [builder.mul(builder.add(r0, _I64(i)), width)]) for i in range(rows)]
    first = builder.gep(kv.data, [builder.mul(s0, widths[1])])
    return rows_of(a, widths[0]), rows_of(b, widths[2]), first, widths[1], n, widths[0], widths[2]


def _key_dots_codegen(kind, rows):
    def codegen(context, builder, signature, args):
        q_rows, p_rows, first, stride, n, D, _ = _operands(context, builder, signature, args, rows)
        chunks = builder.sdiv(D, _I64(CHUNK))

        def one_key(s, _):
            row = builder.gep(first, [builder.mul(s, stride)])

            def one_chunk(c, sums):
                x = _chunk(kind, builder, row, c)
                at = builder.mul(c, _I64(CHUNK))
                return [_fma(builder, _load(builder, q_rows[i], builder.add(at, _I64(16 * v)), _F32x16, 4), x[v],
                             sums[2 * i + v]) for i in range(rows) for v in (0, 1)]
            sums = _for_blocks(builder, chunks, [ir.Constant(_F32x16, [0.0] * 16)] * (2 * rows), one_chunk)
            for i in range(rows):
                total = _lane_sum(builder, builder.fadd(sums[2 * i], sums[2 * i + 1], flags=("fast",)))
                builder.store(total, builder.gep(p_rows[i], [s]))
            return []
        _for_blocks(builder, n, [], one_key)
        return context.get_dummy_value()
    return codegen


def _value_sums_codegen(kind, rows):
    def codegen(context, builder, signature, args):
        p_rows, acc_rows, first, stride, n, _, D = _operands(context, builder, signature, args, rows)

        def one_chunk(c, _):
            at = builder.mul(c, _I64(CHUNK))
            where = [builder.bitcast(builder.gep(acc_rows[i], [builder.add(at, _I64(16 * v))]), _F32x16.as_pointer())
                     for i in range(rows) for v in (0, 1)]

            def one_value(s, sums):
                x = _chunk(kind, builder, builder.gep(first, [builder.mul(s, stride)]), c)
                weights = [_splat16(builder, builder.load(builder.gep(p_rows[i], [s]))) for i in range(rows)]
                return [_fma(builder, weights[i], x[v], sums[2 * i + v]) for i in range(rows) for v in (0, 1)]
            sums = _for_blocks(builder, n, [builder.load(w, align=4) for w in where], one_value)
            for w, total in zip(where, sums):
                builder.store(total, w, align=4)
            return []
        _for_blocks(builder, builder.sdiv(D, _I64(CHUNK)), [], one_chunk)
        return context.get_dummy_value()
    return codegen


def _intrinsic(codegen, kind, rows):
    def typer(typingctx, a, r0, kv, s0, n, b):
        dtype = next(t for t, k in _KINDS.items() if k == kind)
        _require_c_arrays(f"kv_rows ({kind})", (a, numba.types.float32), (kv, dtype), (b, numba.types.float32))
        return numba.types.void(a, r0, kv, s0, n, b), codegen(kind, rows)
    return numba.extending.intrinsic(typer)


_KEY_DOTS = {kind: [_intrinsic(_key_dots_codegen, kind, r) for r in range(1, 5)] for kind in _KINDS.values()}
_VALUE_SUMS = {kind: [_intrinsic(_value_sums_codegen, kind, r) for r in range(1, 5)] for kind in _KINDS.values()}


def _in_runs(kernels):
    """A compiled function that runs a kernel over `rows` query rows, KV_ROWS at a time, each run by the kernel of
    its count of rows (1 to 4)."""
    one, two, three, four = kernels

    @numba.njit(inline="always")
    def run(a, kv, s0, n, b, rows):
        for r0 in range(0, rows, KV_ROWS):
            count = min(KV_ROWS, rows - r0)
            if count == 1:
                one(a, r0, kv, s0, n, b)
            elif count == 2:
                two(a, r0, kv, s0, n, b)
            elif count == 3:
                three(a, r0, kv, s0, n, b)
            else:
                four(a, r0, kv, s0, n, b)
    return run


@numba.extending.overload(key_dots, inline="always")
def _key_dots_compiled(qs, ks, s0, n, p):
    run = _in_runs(_KEY_DOTS[_KINDS[ks.dtype]])
    return lambda qs, ks, s0, n, p: run(qs, ks, s0, n, p, qs.shape[0])


@numba.extending.overload(value_sums, inline="always")
def _value_sums_compiled(p, vs, s0, n, acc):
    run = _in_runs(_VALUE_SUMS[_KINDS[vs.dtype]])
    return lambda p, vs, s0, n, acc: run(p, vs, s0, n, acc, acc.shape[0])
