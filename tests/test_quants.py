"""GGUF block formats (miniqwen3/quants.py) against gguf-py, llama.cpp's own Python package: its
`gguf.quants.dequantize` is the oracle for every block type, its `quantize` for Q8_0's bytes. The Numba kernels
are checked against the plain-NumPy dequantizers (which the first tests tie to gguf)."""
from pathlib import Path

import gguf
import gguf.quants
import numba
import numpy as np
import pytest

from miniqwen3 import quants as Q

BLOCK_KINDS = [Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
NAMES = {Q.Q8_0: "q8_0", Q.Q4_0: "q4_0", Q.Q5_0: "q5_0", Q.Q4_K: "q4_k", Q.Q5_K: "q5_k", Q.Q6_K: "q6_k"}
ids = [Q.TYPE_NAMES[k] for k in BLOCK_KINDS]


def random_blocks(kind, n, rng, scale=1e-2):
    """n blocks of random bytes, uint8 [n, BLOCK_BYTES], with the fp16 d (and dmin) set to finite values
    (normal * scale, some exactly zero): every bit pattern of the quants and scales occurs."""
    blocks = rng.integers(0, 256, (n, Q.BLOCK_BYTES[kind]), dtype=np.uint8)
    d = (rng.standard_normal((n, 2)) * scale).astype(np.float16)
    d[::17] = 0
    d_bytes = d.view(np.uint8)                                   # [n, 4]: d then dmin
    if kind in (Q.Q4_K, Q.Q5_K):
        blocks[:, 0:4] = d_bytes
    elif kind == Q.Q6_K:
        blocks[:, 208:210] = d_bytes[:, :2]                      # Q6_K keeps d last
    else:
        blocks[:, 0:2] = d_bytes[:, :2]
    return blocks


def random_rows(kind, OUT, IN, rng):
    """A random matrix [OUT, IN] of `kind` blocks: uint8 [OUT, ROW_BYTES]."""
    return random_blocks(kind, OUT * IN // Q.BLOCK_WEIGHTS[kind], rng).reshape(OUT, -1)


def gguf_dequantize(data, kind):
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType(kind))


# --- the tables agree with gguf ------------------------------------------------------------------

def test_type_codes_and_block_sizes_are_ggmls():
    for kind in BLOCK_KINDS:
        t = gguf.GGMLQuantizationType(kind)
        assert Q.TYPE_NAMES[kind] == t.name
        assert (Q.BLOCK_WEIGHTS[kind], Q.BLOCK_BYTES[kind]) == gguf.GGML_QUANT_SIZES[t]
    for code, name in Q.TYPE_NAMES.items():
        assert gguf.GGMLQuantizationType(code).name == name
    assert (Q.F32, Q.F16, Q.BF16) == (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                      gguf.GGMLQuantizationType.BF16)


# --- the NumPy dequantizers against gguf ---------------------------------------------------------

@pytest.mark.parametrize("kind", BLOCK_KINDS, ids=ids)
def test_dequantizer_matches_gguf_on_random_blocks(kind):
    rng = np.random.default_rng(kind)
    blocks = random_blocks(kind, 4096, rng)
    ours = Q.DEQUANTIZERS[kind](blocks)
    assert ours.dtype == np.float32 and ours.shape == (4096, Q.BLOCK_WEIGHTS[kind])
    np.testing.assert_array_equal(ours, gguf_dequantize(blocks, kind))


@pytest.mark.parametrize("kind", BLOCK_KINDS, ids=ids)
def test_dequantize_of_a_matrix_matches_gguf(kind):
    rng = np.random.default_rng(100 + kind)
    data = random_rows(kind, 24, 512, rng)
    w = Q.QuantWeight(data, kind)
    assert w.shape == (24, 512)
    np.testing.assert_array_equal(Q.dequantize(w), gguf_dequantize(data, kind))
    np.testing.assert_array_equal(Q.dequantize_blocks(data, kind), gguf_dequantize(data, kind))


@pytest.mark.parametrize("kind", BLOCK_KINDS, ids=ids)
def test_dequantizer_matches_gguf_on_blocks_gguf_quantized(kind):
    """Blocks as a quantizer writes them (realistic scales), where gguf-py can quantize the type."""
    rng = np.random.default_rng(200 + kind)
    x = rng.standard_normal((64, 1024)).astype(np.float32) * np.float32(0.05)
    x[rng.random(x.shape) < 0.01] *= 40                                     # a few outliers, as in real weights
    try:
        data = gguf.quants.quantize(x, gguf.GGMLQuantizationType(kind))
    except NotImplementedError:
        pytest.skip(f"gguf {gguf.__name__} cannot quantize {Q.TYPE_NAMES[kind]} (llama-quantize writes it); "
                    "its random blocks are checked above")
    ours = Q.dequantize(Q.QuantWeight(data, kind))
    np.testing.assert_array_equal(ours, gguf_dequantize(data, kind))
    assert np.abs(ours - x).max() < 0.3 * np.abs(x).max()                # and it is x, roughly


def test_dequantizers_read_the_documented_elements():
    """One hand-made Q4_K block: the picture in the docstring says which nibble is which element."""
    block = np.zeros((1, 144), np.uint8)
    block[0, 0:4] = np.array([1.0, 0.5], np.float16).view(np.uint8)    # d = 1, dmin = 0.5
    block[0, 4:16] = [1, 2, 3, 4, 5, 6, 7, 8, 0x21, 0x43, 0x65, 0x87]   # sc 0..3 = 1..4, m 0..3 = 5..8,
    block[0, 16 + 32 * 1 + 5] = 0x9A                                     # sc 4..7 = 1,3,5,7, m 4..7 = 2,4,6,8
    w = Q.dequantize_q4_k(block)[0]
    sc = [1, 2, 3, 4, 1, 3, 5, 7]
    m = [5, 6, 7, 8, 2, 4, 6, 8]
    expected = np.repeat([-0.5 * mi for mi in m], 32).astype(np.float32)
    expected[64 + 5] = sc[2] * 0xA - 0.5 * m[2]                         # chunk 1, low nibble: sub-block 2
    expected[96 + 5] = sc[3] * 0x9 - 0.5 * m[3]                         # chunk 1, high nibble: sub-block 3
    np.testing.assert_array_equal(w, expected)


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gguf"


def test_every_block_tensor_llama_cpp_wrote():
    """Every block-quantized tensor of the fixture GGUFs (written by llama.cpp's converter and llama-quantize:
    real K-quant blocks, which gguf-py cannot write): dequantize equals gguf's, bitwise, and the Numba dot of
    some rows equals the dequantized rows' dot."""
    files = sorted(FIXTURES.glob("dense-*.gguf")) + sorted(FIXTURES.glob("moe-*.gguf"))   # not the vocab
    if not files:
        pytest.skip(f"no GGUF fixtures in {FIXTURES}")
    rng = np.random.default_rng(9)
    seen = set()
    for path in files:
        for t in gguf.GGUFReader(path).tensors:
            kind = int(t.tensor_type)
            if kind not in Q.BLOCK_WEIGHTS:
                continue
            seen.add(kind)
            w = Q.QuantWeight(np.asarray(t.data), kind)
            assert w.shape == tuple(int(n) for n in reversed(t.shape)), (path.name, t.name)
            w32 = Q.dequantize(w)
            np.testing.assert_array_equal(w32, gguf_dequantize(t.data, kind), err_msg=f"{path.name} {t.name}")
            rows = w.data.reshape(-1, w.data.shape[-1])
            w32 = w32.reshape(rows.shape[0], -1)
            x = rng.standard_normal(w32.shape[1]).astype(np.float32)
            xaux = Q.x_aux(x)
            for r in rng.choice(rows.shape[0], 4, replace=False):
                assert relative_dot_error(Q.row_dot(kind, x, xaux, rows[r]), w32[r], x) < 1e-6, (path.name, t.name)
    assert seen == set(BLOCK_KINDS)


# --- QuantWeight ---------------------------------------------------------------------------------

def test_quantweight_shape_and_sizes():
    rng = np.random.default_rng(3)
    data = random_rows(Q.Q4_K, 3 * 8, 512, rng).reshape(3, 8, 2 * 144)
    w = Q.QuantWeight(data, np.int64(Q.Q4_K))
    assert w.shape == (3, 8, 512) and w.ndim == 3 and w.nbytes == 3 * 8 * 288 and w.dtype == np.uint8
    assert w.kind == Q.Q4_K and type(w.kind) is int
    assert "Q4_K" in repr(w)


@pytest.mark.parametrize("kind", [Q.Q8_0, Q.Q6_K], ids=["Q8_0", "Q6_K"])
def test_quantweight_indexes_experts_and_embedding_rows(kind):
    rng = np.random.default_rng(4)
    E, OUT, IN = 4, 6, 512
    experts = Q.QuantWeight(random_rows(kind, E * OUT, IN, rng).reshape(E, OUT, -1), kind)
    full = gguf_dequantize(experts.data, kind)                              # [E, OUT, IN]
    assert full.shape == (E, OUT, IN)
    assert experts[2].shape == (OUT, IN)
    np.testing.assert_array_equal(experts[2].astype(np.float32), full[2])
    np.testing.assert_array_equal(experts[1:3].astype(np.float32), full[1:3])
    np.testing.assert_array_equal(experts[3, 5].astype(np.float32), full[3, 5])   # one row: shape (IN,)

    table = Q.QuantWeight(random_rows(kind, 50, IN, rng), kind)             # an embedding table [V, H]
    tokens = np.array([7, 0, 49, 7])
    rows = table[tokens]
    assert isinstance(rows, Q.QuantWeight) and rows.shape == (4, IN)
    np.testing.assert_array_equal(rows.astype(np.float32), gguf_dequantize(table.data, kind)[tokens])


def test_quantweight_astype():
    rng = np.random.default_rng(5)
    w = Q.QuantWeight(random_rows(Q.Q5_K, 4, 256, rng), Q.Q5_K)
    f32 = w.astype(np.float32)
    assert f32.dtype == np.float32 and f32.shape == (4, 256)
    np.testing.assert_array_equal(f32, gguf_dequantize(w.data, Q.Q5_K))
    f16 = w.astype(np.float16)
    assert f16.dtype == np.float16
    np.testing.assert_array_equal(f16, f32.astype(np.float16))


def test_quantweight_refuses_an_index_into_the_blocks():
    w = Q.QuantWeight(np.zeros((4, 34), np.uint8), Q.Q8_0)
    with pytest.raises(Q.QuantError, match="leading axes"):
        w[0, 3]


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, name", [(10, "Q2_K"), (3, "Q4_1"), (Q.F16, "F16"), (Q.BF16, "BF16"), (99, "type 99")])
def test_unsupported_kind_is_refused_by_name(code, name):
    with pytest.raises(Q.QuantError, match=name) as info:
        Q.QuantWeight(np.zeros((2, 144), np.uint8), code)
    assert "Q4_K" in str(info.value)                                        # says what is supported
    w = Q.QuantWeight(np.zeros((2, 144), np.uint8), Q.Q4_K)
    w.kind = code
    with pytest.raises(Q.QuantError, match=name):
        Q.dequantize(w)


def test_plain_types_are_named_as_plain_arrays():
    with pytest.raises(Q.QuantError, match="F32.*plain array"):
        Q.check_block_kind(Q.F32)


def test_row_not_a_whole_number_of_blocks_is_refused():
    with pytest.raises(Q.QuantError, match=r"Q8_0: a row of 48 weights is not a whole number of 32-weight"):
        Q.quantize_q8_0(np.zeros((2, 48), np.float32))
    with pytest.raises(Q.QuantError, match="Q4_K: a row of 1000 weights .* 256-weight"):
        Q.row_bytes(Q.Q4_K, 1000)
    with pytest.raises(Q.QuantError,
                       match=r"Q4_K weight: expected uint8 rows of whole 144-byte blocks, got uint8 \(2, 100\)"):
        Q.QuantWeight(np.zeros((2, 100), np.uint8), Q.Q4_K)
    with pytest.raises(Q.QuantError, match="got int8"):
        Q.QuantWeight(np.zeros((2, 34), np.int8), Q.Q8_0)


# --- quantize_q8_0 against gguf's Q8_0 -----------------------------------------------------------

def q8_0_test_matrix(rng):
    """float32 [8, 256]: random rows, a block of zeros, tiny values, and halves (k + 0.5 with d = 1, so
    q = x exactly at a tie: C's roundf takes them away from zero, NumPy's round to even would not)."""
    x = rng.standard_normal((8, 256)).astype(np.float32)
    x[1, 0:32] = 0
    x[2, 0:32] *= np.float32(1e-30)
    x[3, 0:32] = np.concatenate([[127.0], np.arange(31) - 15.5]).astype(np.float32)
    x[4] *= 1e4
    return x


def test_quantize_q8_0_writes_ggufs_bytes():
    rng = np.random.default_rng(6)
    x = q8_0_test_matrix(rng)
    w = Q.quantize_q8_0(x)
    assert w.kind == Q.Q8_0 and w.shape == x.shape
    np.testing.assert_array_equal(w.data, gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0))
    tie_q = w.data[3, 2:34].view(np.int8)
    assert list(tie_q[[1, 16, 17, 19]]) == [-16, -1, 1, 3]                # -15.5, -0.5, 0.5, 2.5: away from 0


def test_quantize_q8_0_of_fp16_and_bf16_and_stacked_experts():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 128)).astype(np.float32)
    expected = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(Q.quantize_q8_0(x, rows_per_chunk=5).data, expected)   # chunks of rows
    f16 = x.astype(np.float16)
    np.testing.assert_array_equal(Q.quantize_q8_0(f16).data,
                                  gguf.quants.quantize(f16.astype(np.float32), gguf.GGMLQuantizationType.Q8_0))
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)                     # truncated to bf16 bits
    widened = (bf16.astype(np.uint32) << 16).view(np.float32)
    w = Q.quantize_q8_0(bf16)
    assert w.shape == (3, 4, 128)
    np.testing.assert_array_equal(w.data, gguf.quants.quantize(widened, gguf.GGMLQuantizationType.Q8_0))
    np.testing.assert_array_equal(w[1].astype(np.float32), gguf_dequantize(w.data, Q.Q8_0)[1])


# --- Numba kernels against the NumPy dequantizers ------------------------------------------------

def relative_dot_error(got, w, x):
    """|got - x . w| over sum |x * w| (the scale of a dot's rounding error), with x . w in float64."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    return np.abs(got - w64 @ x64) / (np.abs(w64) @ np.abs(x64))


@pytest.mark.parametrize("kind", BLOCK_KINDS, ids=ids)
def test_numba_kernels_match_numpy(kind):
    rng = np.random.default_rng(300 + kind)
    OUT, IN = 6, 35 * Q.BLOCK_WEIGHTS[kind] if Q.BLOCK_WEIGHTS[kind] == 32 else 5 * 256   # groups and a tail
    rows = random_rows(kind, OUT, IN, rng)
    w = Q.DEQUANTIZERS[kind](rows.reshape(-1, Q.BLOCK_BYTES[kind])).reshape(OUT, IN)
    x = rng.standard_normal(IN).astype(np.float32)
    xaux = Q.x_aux(x)
    np.testing.assert_allclose(xaux[:IN // 32], x.reshape(-1, 32).sum(axis=1), rtol=1e-5, atol=1e-5)
    name = NAMES[kind]
    widen, dot, dot4 = (getattr(Q, f"{f}_{name}") for f in ("widen", "dot", "dot4"))
    for r in range(OUT):
        out = np.full(IN, np.nan, np.float32)
        widen(rows[r], out)
        np.testing.assert_allclose(out, w[r], rtol=2e-7, atol=2e-7 * np.abs(w[r]).max())
        assert relative_dot_error(dot(x, xaux, rows[r]), w[r], x) < 1e-6
    y = np.full(OUT + 3, np.nan, np.float32)
    dot4(x, xaux, rows[0], rows[1], rows[2], rows[3], y, 2)
    assert np.isnan(y[[0, 1, 6, 7, 8]]).all()                              # only y[2:6] written
    assert relative_dot_error(y[2:6], w[:4], x).max() < 1e-6


def test_x_aux_has_the_sums_and_x_in_the_lane_orders_of_q4_k_and_q6_k():
    """x_aux(x): the 32-sums, then (for whole 256-weight blocks) x[256b + 64c + 32 (k % 2) + 4i + k // 2] / 16^k
    at 256b + 64c + 8k + i (16^6 for k = 7), which Q4_K's compiled dot multiplies nibble k of lane i with; x in
    Q6_K's order (x[32 quarter + 4i + j] / 256^j at 32 quarter + 8j + i); the sums over 16."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(2 * 256).astype(np.float32)
    aux = Q.x_aux(x)
    assert aux.shape == (2 * 8 + 2 * 2 * 256 + 2 * 16 + 512 + 512,) and Q.x_aux(x[:96]).shape == (3 + 96 + 96,)
    assert Q.x_aux(x[:48]).shape == (1 + 48,)                                 # 16 | IN, not 32: no Q8_0 part
    np.testing.assert_allclose(aux[-1024 - 32:-1024], x.reshape(-1, 16).sum(axis=1), rtol=1e-5, atol=1e-5)  # of 16
    assert np.array_equal(aux[-1024:-512], np.concatenate([x[0::2], x[1::2]]))  # BF16's order
    eight = aux[-512:].reshape(16, 4, 8)                                      # [b, j, i]: Q8_0's order, last
    for b, j, i in [(0, 0, 0), (3, 1, 7), (15, 3, 4)]:
        assert eight[b, j, i] == x[32 * b + 4 * i + j] * 2.0 ** -24
    six = aux[16 + 512:16 + 1024].reshape(16, 4, 8)                          # [quarter, j, i]: Q6_K's order
    for quarter, j, i in [(0, 0, 0), (5, 3, 7), (15, 2, 4)]:
        assert six[quarter, j, i] == x[32 * quarter + 4 * i + j] / 256.0 ** j
    lanes = aux[16:16 + 512].reshape(2, 4, 8, 8)                             # [b, c, k, i]: Q4_K's order
    for b, c, k, i in [(0, 0, 0, 0), (0, 1, 3, 5), (1, 3, 7, 7), (1, 2, 6, 2)]:
        assert lanes[b, c, k, i] == x[256 * b + 64 * c + 32 * (k % 2) + 4 * i + k // 2] / 16.0 ** min(k, 6)
    qs = np.arange(128, dtype=np.uint8).reshape(4, 8, 4)                     # byte 32c + 4i + j, in chunks
    lane_bits = qs.view("<u4").reshape(4, 8).astype(np.int64)                # [c, i]
    for k in range(8):                                                        # masked nibble k = q * 16^min(k, 6)
        masked = ((lane_bits >> 4) if k == 7 else lane_bits) & (15 << 4 * min(k, 6))
        q = (qs[:, :, k // 2] >> (4 * (k % 2))) & 15
        assert (masked == q.astype(np.int64) << 4 * min(k, 6)).all()


def test_x_aux_into_writes_only_the_parts_asked_for():
    x = np.random.default_rng(12).standard_normal(512).astype(np.float32)
    full = Q.x_aux(x)
    for q4, q6, bf16, q8 in [(True, False, False, False), (False, True, False, False), (False, False, True, False),
                             (False, False, False, True), (False, False, False, False)]:
        out = np.full_like(full, np.nan)
        Q.x_aux_into(x, out, q4, q6, bf16, q8)
        np.testing.assert_array_equal(out[:16], full[:16])                     # the 32-sums, always
        assert np.array_equal(out[16:528], full[16:528]) if q4 else np.isnan(out[16:528]).all()
        assert np.array_equal(out[528:-1024], full[528:-1024]) if q6 else np.isnan(out[528:-1024]).all()
        assert np.array_equal(out[-1024:-512], full[-1024:-512]) if bf16 else np.isnan(out[-1024:-512]).all()
        assert np.array_equal(out[-512:], full[-512:]) if q8 else np.isnan(out[-512:]).all()


def test_q8_0_lanes_masked_in_place_are_q_times_2_to_the_24():
    """What Q8_0's compiled dot computes of a lane: byte j shifted to the top (24 - 8j bits up) and masked,
    read as int32, is q_j * 2^24 with q_j's sign, for every byte value."""
    q = np.arange(-128, 128, dtype=np.int8).reshape(-1, 4)                   # every value, in each position
    lanes = q.view("<u4").reshape(-1).astype(np.int64)
    for j in range(4):
        top = ((lanes << (24 - 8 * j)) & 0xFF000000).astype(np.uint32).view(np.int32)
        assert (top == q[:, j].astype(np.int64) << 24).all()


@pytest.mark.parametrize("kind", [Q.Q4_K, Q.Q6_K], ids=["Q4_K", "Q6_K"])
def test_the_k_quant_row_dots_check_their_arguments(kind):
    x = np.ones(256, np.float32)
    dot = Q.dot_q4_k if kind == Q.Q4_K else Q.dot_q6_k
    with pytest.raises(ValueError, match="x_aux"):
        dot(x, x[:8].copy(), np.zeros(Q.BLOCK_BYTES[kind], np.uint8))       # only the sums, no lane part
    with pytest.raises(ValueError, match="x_aux"):
        dot(x, Q.x_aux(x), np.zeros(2 * Q.BLOCK_BYTES[kind], np.uint8))     # a row of 2 blocks for 256 values


def test_q4_k_row_dot_as_plain_numpy_and_compiled():
    """The Q4_K row dot is plain NumPy when called from Python (NUMBA_DISABLE_JIT, notebooks) and LLVM vector
    IR when compiled: both equal the dequantized row times x, for rows of 1 to 4 blocks (the IR's loop)."""
    rng = np.random.default_rng(12)
    row = random_rows(Q.Q4_K, 1, 4 * 256, rng)[0]                          # block 0 has d = dmin = 0
    w = Q.dequantize_q4_k(row.reshape(4, 144)).ravel()                       # [4 * 256]
    x = rng.standard_normal(4 * 256).astype(np.float32)
    compiled = numba.njit(lambda x, xaux, row: Q.q4_k_row_dot(x, xaux, row))
    assert Q.q4_k_row_dot(x[:256], Q.x_aux(x[:256]), row[:144]) == compiled(x[:256], Q.x_aux(x[:256]), row[:144]) == 0
    for b0, b1 in [(1, 2), (0, 2), (0, 3), (0, 4), (1, 4)]:               # rows of blocks b0..b1-1
        xn, rn, wn = x[256 * b0:256 * b1], row[144 * b0:144 * b1], w[256 * b0:256 * b1]
        assert relative_dot_error(Q.q4_k_row_dot(xn, Q.x_aux(xn), rn), wn, xn) < 1e-6
        assert relative_dot_error(compiled(xn, Q.x_aux(xn), rn), wn, xn) < 1e-6


def test_q6_k_row_dot_as_plain_numpy_and_compiled():
    """The same for Q6_K's row dot (compiled, it assembles the 6-bit values in registers)."""
    rng = np.random.default_rng(13)
    row = random_rows(Q.Q6_K, 1, 4 * 256, rng)[0]                          # block 0 has d = 0
    w = Q.dequantize_q6_k(row.reshape(4, 210)).ravel()                       # [4 * 256]
    x = rng.standard_normal(4 * 256).astype(np.float32)
    compiled = numba.njit(lambda x, xaux, row: Q.q6_k_row_dot(x, xaux, row))
    assert Q.q6_k_row_dot(x[:256], Q.x_aux(x[:256]), row[:210]) == compiled(x[:256], Q.x_aux(x[:256]), row[:210]) == 0
    for b0, b1 in [(1, 2), (0, 2), (0, 3), (0, 4), (1, 4)]:               # rows of blocks b0..b1-1
        xn, rn, wn = x[256 * b0:256 * b1], row[210 * b0:210 * b1], w[256 * b0:256 * b1]
        assert relative_dot_error(Q.q6_k_row_dot(xn, Q.x_aux(xn), rn), wn, xn) < 1e-6
        assert relative_dot_error(compiled(xn, Q.x_aux(xn), rn), wn, xn) < 1e-6



def plain_weights(rng, OUT, IN):
    """The plain types, as miniqwen3 holds them: fp32, fp16, bf16 bits (uint16), each with its fp32 values."""
    f32 = rng.standard_normal((OUT, IN)).astype(np.float32)
    f16 = f32.astype(np.float16)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)
    return [(f32, f32), (f16, f16.astype(np.float32)), (bf16, (bf16.astype(np.uint32) << 16).view(np.float32))]


def test_dispatchers_on_every_type():
    rng = np.random.default_rng(8)
    OUT, IN = 5, 512
    x = rng.standard_normal(IN).astype(np.float32)
    xaux = Q.x_aux(x)
    cases = [(Q.QuantWeight(random_rows(k, OUT, IN, rng), k), None) for k in BLOCK_KINDS] + plain_weights(rng, OUT, IN)
    seen = set()
    for w, w32 in cases:
        kind, rows = Q.row_view(w)
        w32 = Q.dequantize(w) if w32 is None else w32
        seen.add(kind)
        out = np.empty(IN, np.float32)
        Q.widen_row(kind, rows[4], out)
        np.testing.assert_allclose(out, w32[4], rtol=2e-7, atol=2e-7 * np.abs(w32[4]).max())
        assert relative_dot_error(Q.row_dot(kind, x, xaux, rows[1]), w32[1], x) < 1e-6
        y = np.full(6, np.nan, np.float32)
        Q.rows_dot4(kind, x, xaux, rows[1], rows[2], rows[3], rows[4], y, 1)
        assert np.isnan(y[[0, 5]]).all()
        assert relative_dot_error(y[1:5], w32[1:5], x).max() < 1e-6, Q.type_name(kind)
    assert seen == set(BLOCK_KINDS) | {Q.F32, Q.F16, Q.BF16}


def test_dispatchers_refuse_an_unknown_type():
    x = np.ones(32, np.float32)
    with pytest.raises(ValueError, match="unsupported GGML type"):
        Q.row_dot(10, x, Q.x_aux(x), np.zeros(84, np.uint8))
    with pytest.raises(ValueError, match="unsupported GGML type"):
        Q.widen_row(10, np.zeros(84, np.uint8), np.empty(32, np.float32))


def test_row_view_refuses_other_dtypes():
    with pytest.raises(Q.QuantError, match="float64"):
        Q.row_view(np.zeros((2, 32)))


def test_scalar_helpers_as_plain_python():
    """The helpers run as written without Numba (NUMBA_DISABLE_JIT, notebooks) and agree with the compiled
    versions."""
    values = np.array([1.5, -2.0, 6.1e-5, 65504.0], np.float16)
    row = values.view(np.uint8)
    assert [Q.fp16_at(row, 2 * i) for i in range(4)] == [np.float32(v) for v in values]
    assert [Q.f16_as_f32(b) for b in values.view(np.uint16)] == [np.float32(v) for v in values]
    assert Q.bf16_as_f32(np.uint16(0x3FC0)) == np.float32(1.5)
    assert (Q.shr32(np.uint8(0xB7), 4), Q.shl32(np.uint8(0xB7), 4)) == (0xB, 0xB70)
    assert Q.shr32(np.uint32(0x80000000), 31) == 1

    @numba.njit
    def compiled(row, bits, v):
        return fp16_at_twice(row) + (Q.f16_as_f32(bits), Q.bf16_as_f32(bits), Q.shr32(v, 4), Q.shl32(v, 4) & 0xFFFF)

    @numba.njit
    def fp16_at_twice(row):
        return Q.fp16_at(row, 0), Q.fp16_at(row, 6)

    got = compiled(row, np.uint16(0x3FC0), np.uint8(0xB7))
    assert got == (np.float32(1.5), np.float32(65504.0), np.float32(1.9375), np.float32(1.5), 0xB, 0xB70)
