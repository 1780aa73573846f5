"""The micro kernel of the compute-bound products: a tile of sums held in vector registers.

    tile[i, j] = sum over k < K of a[r0 + i, k] * panel[k, n0 + j]      i < rows, j < 16 * vectors

`a` is row-major [M, LDA] (its rows are read one value at a time and broadcast to all lanes); `panel` is
[K, NP], each of its rows a run of columns that fills whole vectors (16 lanes). Each step k broadcasts `rows`
values of a and loads `vectors` vectors of the panel: rows x vectors multiply-adds, no horizontal sums. A
sum of two dot products (x @ w.T) is this with the right operand laid out column-major, which is why
`bf16_products` packs the tokens into a panel and `kernels.attention` transposes the keys once.

Two arithmetics, one loop:
- "f32": fp32 a and panel, one fused multiply-add a lane (llvm.fma). On a CPU with AVX-512 a tile is 8 rows x 2
  vectors (16 of the 32 registers); without it, 16-lane vectors are two AVX2 registers each, and the tile is
  2 rows x 2 vectors (8 of 16 registers), so nothing spills.
- "bf16": uint32 a and panel, each value a pair of bf16 (low half first); a lane adds the products of both
  pairs' halves in fp32: AVX512-BF16's vdpbf16ps (llvm.x86.avx512bf16.dpbf16ps.512), twice the multiply-adds of
  an fp32 FMA. Only compiled on CPUs that have it (`bf16_products.AVAILABLE`).

In LLVM IR through Numba's `intrinsic`, as `quants`' row dots are: Numba's loops do not keep a tile in
registers. `tile_sums` is the NumPy picture of both, which NUMBA_DISABLE_JIT runs."""
from __future__ import annotations

import llvmlite.binding
import llvmlite.ir as ir
import numba
import numpy as np
from numba.core import cgutils

from .quants import _require_c_arrays

TOKENS = 32     # columns of a tile: two vectors of 16 lanes (a tile asked for one vector fills the first 16)
F32_ROWS = 8 if llvmlite.binding.get_host_cpu_features().get("avx512f", False) else 2
BF16_ROWS = 8   # AVX512-BF16 comes with AVX-512's 32 registers


class _BFloat(ir.types.Type):
    """LLVM's bfloat, which llvmlite's IR builder does not name."""
    def _to_string(self):
        return "bfloat"

    def __eq__(self, other):
        return isinstance(other, _BFloat)

    def __hash__(self):
        return hash("bfloat")


_F32 = ir.FloatType()
_F32x16 = ir.VectorType(_F32, 16)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_BF16x32 = ir.VectorType(_BFloat(), 32)
_I64 = ir.IntType(64)


def _codegen(kind, rows, vectors):
    """The IR of a tile of `rows` x `vectors` vectors in arithmetic `kind` ("f32" or "bf16")."""
    lanes = _F32x16 if kind == "f32" else _I32x16

    def codegen(context, builder, signature, args):
        (a, r0, panel, n0, tile), types = args, signature.args
        a, panel, tile = (context.make_array(t)(context, builder, x) for t, x in zip(types[::2], (a, panel, tile)))
        lda = builder.extract_value(a.shape, 1)
        depth = builder.extract_value(panel.shape, 0)
        np_ = builder.extract_value(panel.shape, 1)
        if kind == "f32":
            op = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32x16, [_F32x16] * 3),
                                                "llvm.fma.v16f32")
        else:
            op = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32x16, [_F32x16, _BF16x32, _BF16x32]),
                                                "llvm.x86.avx512bf16.dpbf16ps.512")
        a_rows = [builder.gep(a.data, [builder.mul(builder.add(r0, _I64(i)), lda)]) for i in range(rows)]
        first = builder.gep(panel.data, [n0])
        before = builder.block
        head, body, done = (builder.append_basic_block(n) for n in ("k", "step", "k_done"))
        builder.branch(head)
        builder.position_at_end(head)
        k = builder.phi(_I64)
        k.add_incoming(_I64(0), before)
        sums = []
        for _ in range(rows * vectors):
            s = builder.phi(_F32x16)
            s.add_incoming(ir.Constant(_F32x16, [0.0] * 16), before)
            sums.append(s)
        builder.cbranch(builder.icmp_signed("<", k, depth), body, done)
        builder.position_at_end(body)
        at = builder.gep(first, [builder.mul(k, np_)])
        cols = [builder.load(builder.bitcast(builder.gep(at, [_I64(16 * v)]), lanes.as_pointer()), align=4)
                for v in range(vectors)]
        new = []
        for i in range(rows):
            one = builder.insert_element(ir.Constant(lanes, ir.Undefined), builder.load(builder.gep(a_rows[i], [k])),
                                         ir.IntType(32)(0))
            spread = builder.shuffle_vector(one, one, ir.Constant(_I32x16, [0] * 16))
            for v in range(vectors):
                if kind == "f32":
                    new.append(builder.call(op, [spread, cols[v], sums[i * vectors + v]]))
                else:
                    new.append(builder.call(op, [sums[i * vectors + v], builder.bitcast(spread, _BF16x32),
                                                 builder.bitcast(cols[v], _BF16x32)]))
        k.add_incoming(builder.add(k, _I64(1)), builder.block)
        for s, value in zip(sums, new):
            s.add_incoming(value, builder.block)
        builder.branch(head)
        builder.position_at_end(done)
        for i in range(rows):
            for v in range(vectors):
                out = builder.gep(tile.data, [_I64(i * TOKENS + 16 * v)])
                builder.store(sums[i * vectors + v], builder.bitcast(out, _F32x16.as_pointer()), align=4)
        return context.get_dummy_value()
    return codegen


def _intrinsic(kind, rows, vectors):
    dtype = numba.types.float32 if kind == "f32" else numba.types.uint32

    def typer(typingctx, a, r0, panel, n0, tile):
        _require_c_arrays(f"tile_sums ({kind})", (a, dtype), (panel, dtype), (tile, numba.types.float32))
        return numba.types.void(a, r0, panel, n0, tile), _codegen(kind, rows, vectors)
    return numba.extending.intrinsic(typer)


def as_pairs(u32: np.ndarray) -> np.ndarray:
    """uint32 [...] of bf16 pairs -> fp32 [..., 2] (low half first)."""
    return np.stack([u32 << np.uint32(16), u32 & np.uint32(0xFFFF0000)], -1).view(np.float32)


def tile_sums(a, r0, panel, n0, tile, rows, vectors):
    """tile[i, j] = sum over k of a[r0 + i, k] * panel[k, n0 + j] for i < rows, j < 16 * vectors, k < K (the
    panel's rows); fp32 a and panel, or uint32 bf16 pairs (a pair's two products added).
    a: [M, >= K], panel: [K, NP], tile: fp32 [>= rows, TOKENS]"""
    K, n = panel.shape[0], 16 * vectors
    left, right = a[r0:r0 + rows, :K], panel[:, n0:n0 + n]
    if a.dtype == np.uint32:
        tile[:rows, :n] = np.einsum("ikp,knp->in", as_pairs(left), as_pairs(right))
    else:
        tile[:rows, :n] = left @ right


_F32_TILES = {v: _intrinsic("f32", F32_ROWS, v) for v in (1, 2)}
_BF16_TILES = {v: _intrinsic("bf16", BF16_ROWS, v) for v in (1, 2)}


@numba.extending.overload(tile_sums, inline="always")
def _tile_sums_compiled(a, r0, panel, n0, tile, rows, vectors):
    """Numba's `tile_sums`: the IR kernel of the arrays' type; `rows` must be F32_ROWS or BF16_ROWS."""
    one, two = (_BF16_TILES if a.dtype == numba.types.uint32 else _F32_TILES).values()

    def pick(a, r0, panel, n0, tile, rows, vectors):
        if vectors == 2:
            two(a, r0, panel, n0, tile)
        else:
            one(a, r0, panel, n0, tile)
    return pick
