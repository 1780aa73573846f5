"""The Numba kernels against their plain-NumPy twins in `ops`, in every weight format (fp32, bf16, and GGUF's
block types), and the numba backend through the whole model against transformers' logits (the golden parity
fixtures). The block formats themselves are tested against gguf's dequantizer in test_quants.py.

Shapes are small and odd on purpose (rows not a multiple of the tile, keys spanning several blocks, experts
nobody chose); every kernel is compiled once per weight format and shared by the tests."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import miniqwen3
from miniqwen3 import kernels, ops
from miniqwen3 import quants
from miniqwen3.quants import QuantWeight
from miniqwen3.weights import as_float32, float32_to_bf16

from test_parity import CASES, FIXTURES, check_against

REPO = Path(__file__).resolve().parent.parent
rng = np.random.default_rng(1234)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def readonly(a):
    a = a.view()
    a.flags.writeable = False
    return a


BLOCK_TYPES = {"q8_0": quants.Q8_0, "q4_0": quants.Q4_0, "q5_0": quants.Q5_0, "q4_k": quants.Q4_K,
               "q5_k": quants.Q5_K, "q6_k": quants.Q6_K}


def weight(fmt, *shape):
    """A random weight in one of the formats the model holds: bf16 bits or fp32 (read-only, like the memory
    map), or GGUF blocks (random bytes with sane fp16 scales: every bit pattern of the quants occurs). A block
    type needs IN to be a whole number of its blocks (32 or 256 weights)."""
    if fmt in BLOCK_TYPES:
        kind = BLOCK_TYPES[fmt]
        *lead, OUT, IN = shape
        n = int(np.prod(shape)) // quants.BLOCK_WEIGHTS[kind]
        blocks = rng.integers(0, 256, (n, quants.BLOCK_BYTES[kind]), dtype=np.uint8)
        d = (rng.standard_normal((n, 2)) * 0.002).astype(np.float16).view(np.uint8)
        at = {quants.Q4_K: slice(0, 4), quants.Q5_K: slice(0, 4), quants.Q6_K: slice(208, 210)}.get(kind, slice(0, 2))
        blocks[:, at] = d[:, :at.stop - at.start]
        return QuantWeight(readonly(blocks.reshape(*lead, OUT, -1)), kind)
    w = randn(*shape, scale=0.1)
    if fmt == "bf16":
        return readonly(float32_to_bf16(w))
    return readonly(w)


FORMATS = ["bf16", "fp32", *BLOCK_TYPES]


def width(fmt, n):
    """An input width for a format: n itself for the plain types, else n rounded up to whole blocks."""
    block = quants.BLOCK_WEIGHTS[BLOCK_TYPES[fmt]] if fmt in BLOCK_TYPES else 1
    return -(-n // block) * block


@pytest.fixture(autouse=True)
def share_all_work(monkeypatch):
    """The shapes here are small, and small work runs on one thread (`kernels.threads_for`): share every
    kernel call over the cores instead, so the tests exercise the parallel regions."""
    monkeypatch.setattr(kernels, "SERIAL_WORK", 0)


def test_small_work_runs_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(kernels, "SERIAL_WORK", 2**20)
    import numba
    threads = numba.get_num_threads()
    with kernels.threads_for(2**20 - 1):
        assert numba.get_num_threads() == 1
        with kernels.threads_for(2**20):          # nested: large work keeps the setting it finds
            assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == threads
    with kernels.threads_for(2**20):
        assert numba.get_num_threads() == threads
    # own generator: the other tests' inputs stay as they were
    r = np.random.default_rng(7)
    x, w = r.standard_normal((3, 70), np.float32), float32_to_bf16(r.standard_normal((37, 70), np.float32))
    q, k, v = (r.standard_normal(shape, np.float32) for shape in [(5, 4, 16), (2, 105, 16), (2, 105, 16)])
    experts, gates = np.stack([r.permutation(6)[:2] for _ in range(4)]), r.random((4, 2), dtype=np.float32)
    gate_up = [float32_to_bf16(r.standard_normal((6, 24, 70), np.float32) * np.float32(0.1)) for _ in range(2)]
    down = float32_to_bf16(r.standard_normal((6, 70, 24), np.float32) * np.float32(0.1))
    # the one-thread path against the NumPy twins (the other tests check the shared path against them)
    args = {"linear": (x, w), "attention": (q, k, v, 100),
            "moe_experts": (x[[0, 1, 2, 0]], experts, gates, *gate_up, down)}
    for name, a in args.items():
        with kernels.threads_for(0):
            got = getattr(kernels, name)(*a)
        np.testing.assert_allclose(got, getattr(ops, name)(*a), rtol=0, atol=2e-5, err_msg=name)


def test_small_blas_calls_run_on_one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas")
    assert blas.lib_controllers, "NumPy's BLAS is not seen by threadpoolctl"
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):   # as on a 2-core machine, whatever this one has
        with ops.blas_threads_for(ops.BLAS_SERIAL_WORK - 1):
            assert all(lib.num_threads == 1 for lib in blas.lib_controllers)
        assert all(lib.num_threads == 2 for lib in blas.lib_controllers)
        with ops.blas_threads_for(ops.BLAS_SERIAL_WORK):
            assert all(lib.num_threads == 2 for lib in blas.lib_controllers)


# --- linear and SwiGLU ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 3, 9])
def test_linear_matches_reference(fmt, T):
    IN = width(fmt, 70)                 # 37 rows: two full tiles and a ragged one
    w = weight(fmt, 37, IN)
    x = randn(T, IN)
    expected = ops.linear(x, w)
    np.testing.assert_allclose(kernels.linear(x, w), expected, rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))


@pytest.mark.parametrize("fmt", ["bf16", "q8_0", "q4_k"])
@pytest.mark.parametrize("T", [1, 3])
def test_linears_reads_several_weights_in_one_call(fmt, T, monkeypatch):
    """q, k and v in one parallel region: 37 + 5 + 21 rows are 3 + 1 + 2 tiles, which two cores (or five
    made-up ones) share with runs that start and end inside a weight; each output must be its own product."""
    IN = width(fmt, 70)
    ws = [weight(fmt, n, IN) for n in (37, 5, 21)]
    x = randn(T, IN)
    calls = []
    tiles = kernels.linear_tiles
    monkeypatch.setattr(kernels, "linear_tiles", lambda *a: calls.append(a) or tiles(*a))
    for cores in (numba.get_num_threads(), 5):
        monkeypatch.setattr(numba, "get_num_threads", lambda cores=cores: cores)
        got = kernels.linears(x, ws)
        for g, w in zip(got, ws):
            expected = ops.linear(x, w)
            np.testing.assert_allclose(g, expected, rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))
    assert len(calls) == 2 and [a.shape[0] for a in calls[0][3:6]] == [37, 5, 21]
    # weights of two types (a GGUF's Q4_K q_proj beside a Q6_K v_proj): one product each, the same values
    mixed = [ws[0], weight("fp32", 9, IN)]
    for g, w in zip(kernels.linears(x, mixed), mixed):
        np.testing.assert_allclose(g, ops.linear(x, w), rtol=0, atol=2e-6 * max(1, np.abs(g).max()))


@pytest.mark.parametrize("fmt", ["bf16", "q4_k"])
def test_linear_widens_in_chunks_with_a_short_last_one(fmt, monkeypatch):
    """Prefill widens CHUNK_BYTES of rows at a time for BLAS: make that 40 rows, so 100 rows take three chunks
    and the last is short."""
    IN = width(fmt, 64)
    monkeypatch.setattr(kernels, "CHUNK_BYTES", 40 * 4 * IN)
    w, x = weight(fmt, 100, IN), randn(kernels.BLAS_TOKENS + 3, IN)
    expected = ops.linear(x, w)
    np.testing.assert_allclose(kernels.linear(x, w), expected, rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))


def test_linear_reads_bf16_exactly():
    # bf16 values that are small integers: the products and sums are exact in fp32, so any error is a bug
    w = readonly(float32_to_bf16(rng.integers(-8, 9, size=(19, 33)).astype(np.float32)))
    x = rng.integers(-4, 5, size=(6, 33)).astype(np.float32)
    np.testing.assert_array_equal(kernels.linear(x, w), x @ as_float32(w).T)


def test_linear_accepts_fp16_and_non_contiguous_activations():
    w = randn(21, 40, scale=0.1).astype(np.float16)
    x = randn(40, 5).T                   # a transposed view
    np.testing.assert_allclose(kernels.linear(x, w), ops.linear(x, w), rtol=0, atol=2e-6)


def test_a_weight_of_another_width_is_refused_before_any_kernel_reads_it():
    """The row kernels trust each row to hold as many weights as x has values: linear, swiglu and moe_experts
    refuse a mismatch with a message naming both, rather than read past the row."""
    rng = np.random.default_rng(5)
    w = quants.quantize_q8_0(rng.standard_normal((64, 256)).astype(np.float32))
    x = rng.standard_normal((1, 512)).astype(np.float32)
    with pytest.raises(ValueError, match=r"linear: a weight of shape \(64, 256\) takes rows of 256 values, the input has 512"):
        kernels.linear(x, w)
    g = rng.standard_normal((4, 32, 256)).astype(np.float32)
    d = rng.standard_normal((4, 256, 16)).astype(np.float32)                  # should be [4, 256, 32]
    with pytest.raises(ValueError, match="moe_experts: .* takes rows of 16 values, the input has 32"):
        kernels.moe_experts(x[:, :256], np.array([[0, 1]]), np.full((1, 2), 0.5, np.float32), g, g, d)
    with pytest.raises(ValueError, match="swiglu: .* takes rows of 16 values, the input has 32"):
        kernels.swiglu(x[:, :256], g[0], g[0], d[0])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 5, 20])          # decode kernels below 16 tokens, BLAS from 16 on
def test_swiglu_matches_reference(fmt, T):
    H, I = width(fmt, 40), width(fmt, 24)
    x = randn(T, H)
    g, u, d = weight(fmt, I, H), weight(fmt, I, H), weight(fmt, H, I)
    expected = ops.swiglu(x, g, u, d)
    np.testing.assert_allclose(kernels.swiglu(x, g, u, d), expected, rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))


# --- attention -----------------------------------------------------------------------------------

@pytest.mark.parametrize("NH,NKV", [(4, 2), (4, 4), (8, 1)])
@pytest.mark.parametrize("q_start,T", [(0, 37), (0, 1), (113, 1), (100, 13), (5, 150)])
@pytest.mark.parametrize("D", [16, 128])            # 128: every real Qwen3's head_dim, wider than a KEYS block
def test_attention_matches_reference(NH, NKV, q_start, T, D):
    # S up to 155 keys: several KEYS=64 blocks and a short last one; decode (T=1) reads a long cache
    S = q_start + T
    q, k, v = randn(T, NH, D, scale=2.0), randn(NKV, S, D, scale=2.0), randn(NKV, S, D)
    tol = 4e-6 * np.sqrt(D / 16)     # fp32 rounding of sums of D products and of S weighted values, in another order
    np.testing.assert_allclose(kernels.attention(q, k, v, q_start), ops.attention(q, k, v, q_start),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("q_start,T", [(0, 37), (113, 1)])
def test_attention_reads_no_position_after_the_last_query(q_start, T):
    # a KV cache passes its whole capacity: the rows after position q_start + T - 1 (nan here) are never read
    S, NH, NKV, D = q_start + T, 4, 2, 16
    q, k, v = randn(T, NH, D), randn(NKV, S + 70, D), randn(NKV, S + 70, D)
    expected = ops.attention(q, k[:, :S].copy(), v[:, :S].copy(), q_start)
    k[:, S:], v[:, S:] = np.nan, np.nan
    for attention in (ops.attention, kernels.attention):
        np.testing.assert_allclose(attention(q, k, v, q_start), expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("q_start,T", [(0, 37), (113, 1), (5, 150)])
def test_attention_reads_a_bf16_kv_cache(q_start, T):
    # keys and values as bf16 bits (a bf16 KV cache): the same as attention over their fp32 values
    S, NH, NKV, D = q_start + T, 8, 2, 128
    q, k, v = randn(T, NH, D, scale=2.0), float32_to_bf16(randn(NKV, S, D, scale=2.0)), float32_to_bf16(randn(NKV, S, D))
    expected = ops.attention(q, as_float32(k), as_float32(v), q_start)
    np.testing.assert_allclose(kernels.attention(q, k, v, q_start), expected, rtol=1.2e-5, atol=1.2e-5)  # as above, D = 128
    np.testing.assert_array_equal(ops.attention(q, k, v, q_start), expected)


@pytest.mark.parametrize("q_start,T", [(0, 37), (113, 1), (5, 150)])
def test_attention_reads_a_q8_0_kv_cache(q_start, T):
    # keys and values as rows of Q8_0 blocks (a q8_0 KV cache): the same as attention over their widened values
    S, NH, NKV, D = q_start + T, 8, 2, 128
    q = randn(T, NH, D, scale=2.0)
    k, v = (quants.quantize_q8_0(randn(NKV, S, D, scale=2.0)).data, quants.quantize_q8_0(randn(NKV, S, D)).data)
    assert k.shape == (NKV, S, D // 32 * 34) and k.dtype == np.uint8
    widened = [quants.dequantize_q8_0(a.reshape(-1, 34)).reshape(NKV, S, D) for a in (k, v)]
    expected = ops.attention(q, *widened, q_start)                        # (sums of 64 in another order)
    np.testing.assert_allclose(kernels.attention(q, k, v, q_start), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ops.attention(q, k, v, q_start), expected)


def test_exp_nonpositive_is_np_exp_to_fp32_rounding():
    # every fp32 spacing that matters: dense near 0, out to where e^x leaves the normal range, and -inf
    x = np.concatenate([-np.logspace(-8, np.log10(87), 20000), np.linspace(-87, 0, 20001), [0.0, -np.inf]])
    x = x.astype(np.float32)
    got = np.array([kernels.exp_nonpositive(v) for v in x], np.float32)
    want = np.exp(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=4e-7, atol=0)      # NumPy's own fp32 exp: 1.9e-7 off
    assert kernels.exp_nonpositive(np.float32(-87.5)) == 0 and kernels.exp_nonpositive(np.float32(-1000)) == 0


def test_attention_is_causal_and_stable_for_large_scores():
    # scores of +-1000: a naive exp overflows; the online softmax must not. The last key sees all.
    T, NH, NKV, D = 70, 2, 1, 8
    q, k, v = randn(T, NH, D, scale=30.0), randn(NKV, T, D, scale=30.0), randn(NKV, T, D)
    out = kernels.attention(q, k, v, 0)
    assert np.isfinite(out).all()
    # scores near 1000 carry fp32 rounding of ~1e-4 (summation order differs), which exp passes on
    np.testing.assert_allclose(out, ops.attention(q, k, v, 0), rtol=0, atol=1e-3)
    np.testing.assert_allclose(out[0], np.repeat(v[:, 0], NH, axis=0), atol=1e-6)   # token 0 sees only key 0


# --- mixture of experts --------------------------------------------------------------------------

def routing(T, E, K, used):
    """Distinct experts per token drawn from the first `used` experts (the rest stay idle), random weights."""
    experts = np.stack([rng.permutation(used)[:K] for _ in range(T)])
    weights = rng.random((T, K)).astype(np.float32)
    return experts, weights / weights.sum(1, keepdims=True)


def test_group_by_expert_is_a_stable_counting_sort():
    experts = np.array([[3, 1], [1, 0], [3, 2], [1, 3]])
    order, starts = kernels.group_by_expert(experts, 5)
    np.testing.assert_array_equal(starts, [0, 1, 4, 5, 8, 8])
    np.testing.assert_array_equal(order, [3, 1, 2, 6, 5, 0, 4, 7])  # pair = token*K + slot, token order kept
    np.testing.assert_array_equal(experts.ravel()[order], np.sort(experts.ravel()))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("T", [1, 2, 23])
@pytest.mark.parametrize("dispatch", ["whole experts", "tiles"])
def test_moe_experts_match_reference(fmt, T, dispatch, monkeypatch):
    # each core runs whole experts (`experts_whole`), or tiles of rows of every expert (`experts_gate_up/down`)
    monkeypatch.setattr(kernels, "EXPERTS_PER_THREAD", 0 if dispatch == "whole experts" else 10**6)
    E, K, H, I = 8, 3, width(fmt, 40), width(fmt, 24)
    experts, weights = routing(T, E, K, used=6)        # experts 6 and 7 get no tokens
    x = randn(T, H)
    g, u, d = weight(fmt, E, I, H), weight(fmt, E, I, H), weight(fmt, E, H, I)
    expected = ops.moe_experts(x, experts, weights, g, u, d)
    np.testing.assert_allclose(kernels.moe_experts(x, experts, weights, g, u, d), expected,
                               rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))


@pytest.mark.parametrize("dispatch", ["whole experts", "tiles"])
@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("gate, up, down", [("q4_k", "q6_k", "q6_k"), ("q6_k", "q4_k", "q4_k"), ("q4_k", "q4_k", "q8_0")])
def test_moe_experts_with_mixed_block_types_match_reference(gate, up, down, T, dispatch, monkeypatch):
    """As Q4_K_M mixes Q4_K and Q6_K: the one-token dots read what x_aux_rows prepared for the gate's and up's
    types (and the down's), and with 5 tokens some experts get one token (dotted) and some several (widened)."""
    monkeypatch.setattr(kernels, "EXPERTS_PER_THREAD", 0 if dispatch == "whole experts" else 10**6)
    E, K, H, I = 8, 3, 512, 256
    experts, weights = routing(T, E, K, used=6)
    x = randn(T, H)
    g, u, d = weight(gate, E, I, H), weight(up, E, I, H), weight(down, E, H, I)
    expected = ops.moe_experts(x, experts, weights, g, u, d)
    np.testing.assert_allclose(kernels.moe_experts(x, experts, weights, g, u, d), expected,
                               rtol=0, atol=2e-6 * max(1, np.abs(expected).max()))


# --- the whole model -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_numba_backend_matches_transformers(case):
    model = miniqwen3.load(FIXTURES / case, backend="numba")
    check_against(model, np.load(FIXTURES / case / "expected.npz"))


@pytest.mark.parametrize("case", ["moe_bf16_keys4x_yarn", "dense_gqa4_bf16"])
def test_numba_prefill_then_decode_equals_reference(case):
    fast = miniqwen3.load(FIXTURES / case, backend="numba")
    ids = np.load(FIXTURES / case / "expected.npz")["ids"]
    cache = fast.new_cache()
    pieces = [fast.forward(ids[:9], cache)] + [fast.forward(ids[t:t + 1], cache) for t in range(9, len(ids))]
    reference = miniqwen3.load(FIXTURES / case).logits(ids)
    np.testing.assert_allclose(np.concatenate(pieces), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["moe_bf16_keys4x_yarn", "dense_gqa4_bf16"])
def test_quantized_model_same_on_both_backends_and_close_to_bf16(case):
    ids = np.load(FIXTURES / case / "expected.npz")["ids"]
    exact = miniqwen3.load(FIXTURES / case).logits(ids)
    q_ref = miniqwen3.load(FIXTURES / case).quantize("q8_0")
    q_fast = miniqwen3.load(FIXTURES / case, backend="numba").quantize("q8_0")
    layer = q_fast.weights.layers[0]
    for w in (layer.self_attn.q_proj, layer.self_attn.o_proj, layer.mlp.up_proj, layer.mlp.down_proj,
              q_fast.weights.lm_head):
        # rows of whole 32-weight blocks are Q8_0; the others (hidden 48 here) stay as stored
        assert (isinstance(w, QuantWeight) and w.kind == quants.Q8_0) == (w.shape[-1] % 32 == 0)
    assert isinstance(layer.mlp.down_proj, QuantWeight)
    logits = q_fast.logits(ids)
    np.testing.assert_allclose(logits, q_ref.logits(ids), rtol=0, atol=1e-5)
    # 8 bits move the logits a little: each weight by up to 1/254 of its block's max (32 weights of a row)
    drift = np.linalg.norm(logits - exact) / np.linalg.norm(exact)
    assert 0 < drift < 0.05, drift
    with pytest.raises(ValueError, match="q4"):
        q_ref.quantize("q4")


def run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_kernels_run_as_plain_python_with_jit_disabled():
    # NUMBA_DISABLE_JIT=1: the kernels are the Python functions as written (prange is range), still correct
    out = run_python(f"""
import numba, numpy as np, miniqwen3
from miniqwen3 import kernels
assert numba.config.DISABLE_JIT and not hasattr(kernels.linear_tiles, "py_func")
case = {str(FIXTURES / "moe_bf16_keys4x_yarn")!r}
model = miniqwen3.load(case, backend="numba")
e = np.load(case + "/expected.npz")
ids = e["ids"][:10]
print(float(np.abs(model.logits(ids) - e["logits"][:10]).max()))
""", NUMBA_DISABLE_JIT="1")
    assert float(out) < 1e-4


def test_second_process_loads_compiled_kernels_from_the_cache():
    # a process that runs a bf16 MoE model, then another one: the second must find every kernel on disk
    code = f"""
import json, numpy as np, miniqwen3
from miniqwen3 import kernels
model = miniqwen3.load({str(FIXTURES / "moe_bf16_keys4x_yarn")!r}, backend="numba")
cache = model.new_cache()
model.forward(np.arange(5), cache)
model.forward(np.arange(1), cache)
stats = {{name: f.stats for name, f in vars(kernels).items() if hasattr(f, "stats")}}
print(json.dumps({{n: [sum(s.cache_hits.values()), sum(s.cache_misses.values())] for n, s in stats.items()}}))
"""
    run_python(code)
    second = json.loads(run_python(code).strip().splitlines()[-1])
    used = {name: hits for name, (hits, misses) in second.items() if hits or misses}
    assert {"linear_tiles", "attention_blocks"} <= set(used)
    assert {"experts_whole", "experts_gate_up", "experts_down"} & set(used)     # which depends on the cores
    assert all(misses == 0 for hits, misses in second.values()), second


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_bf16_kv_cache_holds_half_the_bytes_and_moves_the_logits_little(backend):
    case = FIXTURES / "moe_bf16_keys4x_yarn"
    model = miniqwen3.load(case, backend=backend)
    ids = np.load(case / "expected.npz")["ids"]
    logits, caches = {}, {}
    for dtype in ("fp32", "bf16"):
        cache = caches[dtype] = model.new_cache(dtype)
        logits[dtype] = np.concatenate([model.forward(ids[:9], cache)]
                                       + [model.forward(ids[t:t + 1], cache) for t in range(9, len(ids))])
    assert caches["bf16"].k[0].dtype == np.uint16 and caches["bf16"].k[0].nbytes * 2 == caches["fp32"].k[0].nbytes
    np.testing.assert_array_equal(caches["bf16"].values(0), float32_to_bf16(caches["fp32"].values(0)))
    drift = np.linalg.norm(logits["bf16"] - logits["fp32"]) / np.linalg.norm(logits["fp32"])
    assert 0 < drift < 1e-2, drift          # keys and values rounded to 8 significant bits
    if backend == "numba":                  # and the numba kernels read it as the NumPy reference does
        reference = miniqwen3.load(case, backend="numpy")
        cache = reference.new_cache("bf16")
        expected = np.concatenate([reference.forward(ids[:9], cache)]
                                  + [reference.forward(ids[t:t + 1], cache) for t in range(9, len(ids))])
        # not to 1e-5 as with fp32: a 1e-6 difference upstream (fp32 sums in another order) can flip the bf16
        # rounding of a stored key or value by one step (0.4%), which moved logits here by up to 1.6e-4
        np.testing.assert_allclose(logits["bf16"], expected, rtol=0, atol=1e-3)
        assert np.linalg.norm(logits["bf16"] - expected) / np.linalg.norm(expected) < 1e-4
    with pytest.raises(ValueError, match="KV cache dtype"):
        model.new_cache("int4")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_q8_0_kv_cache_holds_a_quarter_of_the_bytes_and_moves_the_logits_little(backend):
    model = miniqwen3.load(backend=backend)                  # the tiny model: head_dim 32, one Q8_0 block a row
    ids = np.array(model.tokenizer.encode("What is 4821 + 3976? Let me add the columns one by one."))
    logits, caches = {}, {}
    for dtype in ("fp32", "q8_0"):
        cache = caches[dtype] = model.new_cache(dtype)
        logits[dtype] = np.concatenate([model.forward(ids[:9], cache)]
                                       + [model.forward(ids[t:t + 1], cache) for t in range(9, len(ids))])
    assert caches["q8_0"].k[0].dtype == np.uint8 and caches["q8_0"].k[0].nbytes * 128 == caches["fp32"].k[0].nbytes * 34
    fp32_values = caches["fp32"].values(0)                   # [length, NKV, D]
    np.testing.assert_array_equal(caches["q8_0"].values(0), quants.dequantize_q8_0(
        quants.quantize_q8_0(fp32_values).data.reshape(-1, 34)).reshape(fp32_values.shape))
    # 8-bit values, a scale per 32: on this prompt 5.3% relative rms, 12 of 13 top-1 the same (bf16: 0.6%, 13)
    drift = np.linalg.norm(logits["q8_0"] - logits["fp32"]) / np.linalg.norm(logits["fp32"])
    assert 0 < drift < 0.1, drift
    assert (logits["q8_0"].argmax(-1) == logits["fp32"].argmax(-1)).mean() > 0.85
    if backend == "numba":                                   # the kernels read it as the NumPy reference does
        reference = miniqwen3.load(backend="numpy")
        cache = reference.new_cache("q8_0")
        expected = np.concatenate([reference.forward(ids[:9], cache)]
                                  + [reference.forward(ids[t:t + 1], cache) for t in range(9, len(ids))])
        np.testing.assert_allclose(logits["q8_0"], expected, rtol=0, atol=1e-4)


def test_a_q8_0_kv_cache_needs_whole_blocks_per_head():
    model = miniqwen3.load(FIXTURES / "moe_bf16_keys4x_yarn")        # head_dim 24
    with pytest.raises(ValueError, match="q8_0 KV cache needs head_dim a multiple of 32"):
        model.forward(np.arange(3), model.new_cache("q8_0"))


def test_the_default_backend_is_numba_from_50m_parameters():
    from miniqwen3.config import Qwen3Config
    from miniqwen3.model import NUMBA_FROM_PARAMETERS, default_backend
    configs = REPO / "miniqwen3" / "configs"
    assert default_backend(Qwen3Config.from_file(configs / "Qwen3-0.6B.json")) == "numba"
    assert default_backend(Qwen3Config.from_file(configs / "Qwen3-30B-A3B.json")) == "numba"
    assert default_backend(Qwen3Config.from_file(REPO / "miniqwen3" / "data" / "tiny" / "config.json")) == "numpy"
    assert miniqwen3.load(FIXTURES / "dense_gqa4_bf16").backend == "numpy"        # a few thousand parameters
    assert NUMBA_FROM_PARAMETERS == 50_000_000


def test_warm_up_says_when_it_compiles_and_is_quiet_when_the_cache_has_everything(monkeypatch, capsys):
    import io
    log = io.StringIO()
    monkeypatch.setattr(kernels, "_warm", set())
    monkeypatch.setattr(kernels, "compiled_on_disk", lambda bf16=False: False)      # as in a fresh install
    kernels.warm_up(log)
    said = log.getvalue()
    assert said.startswith("miniqwen3: compiling the Numba kernels, once (cached in ") and said.count("\n") == 1
    assert all(name in said for name in ("linear", "swiglu", "attention", "moe")) and "bf16 products" not in said
    if kernels.bf16_products.AVAILABLE:     # the kernels of bf16 activations: only for a model that uses them
        kernels.warm_up(log, bf16=True)
        said = log.getvalue().splitlines()
        assert len(said) == 2 and said[1].startswith("miniqwen3: compiling the Numba kernels of bf16 products")
    log = io.StringIO()
    kernels.warm_up(log)                    # once a process
    kernels.warm_up(log, bf16=True)
    monkeypatch.setattr(kernels, "_warm", set())
    monkeypatch.undo()
    assert kernels.compiled_on_disk()       # this process compiled or loaded every kernel: the disk has them
    assert kernels.compiled_on_disk(bf16=kernels.bf16_products.AVAILABLE)
    assert log.getvalue() == ""


def test_a_change_to_quants_py_alone_voids_the_kernels_compiled_code(tmp_path):
    # kernels.py's functions inline quants.py's row dots: Numba alone keys their disk cache on kernels.py only
    shutil.copytree(REPO / "miniqwen3", tmp_path / "miniqwen3", ignore=shutil.ignore_patterns("__pycache__", "data"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}

    def cached(compile_first):
        code = ("import numpy as np; from miniqwen3 import kernels; a = np.ones(8, np.float32); "
                + ("kernels.dot(a, a); " if compile_first else "")
                + "print(kernels.__file__, bool(kernels.dot._cache._cache_file._load_index()))")
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        where, found = done.stdout.split()[-2:]
        assert where.startswith(str(tmp_path))
        return found == "True"
    assert cached(True) and cached(False)       # compiled, then found by the next process
    with open(tmp_path / "miniqwen3" / "quants.py", "a") as f:
        f.write("\n# a change\n")
    assert not cached(False)


def test_an_empty_numba_cache_is_seen_as_cold(tmp_path):
    out = run_python("from miniqwen3 import kernels; print(kernels.compiled_on_disk())",
                     NUMBA_CACHE_DIR=str(tmp_path / "empty-numba-cache"))
    assert out.strip() == "False"


def test_a_read_only_install_caches_the_kernels_in_the_user_cache(tmp_path):
    # the package on a read-only file system (a read-only bind mount: needs root): Numba cannot write beside the
    # source, so the compiled kernels go to the user's cache folder ($XDG_CACHE_HOME/numba, ~/.cache/numba)
    mount = tmp_path / "ro" / "miniqwen3"
    mount.mkdir(parents=True)
    made = subprocess.run(["mount", "--bind", str(REPO / "miniqwen3"), str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({made.stderr.decode().strip()[:100]})")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        assert not os.access(mount, os.W_OK) or subprocess.run(["touch", str(mount / "x")]).returncode != 0
        code = ("import miniqwen3, json; from miniqwen3 import kernels; "
                "print(json.dumps([miniqwen3.__file__, kernels.compiled_on_disk(), kernels.linear_tiles._cache._cache_path]))")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(tmp_path / "ro"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                                     "NUMBA_CACHE_DIR": ""})
        assert result.returncode == 0, result.stderr[-2000:]
        where, cached, cache_path = json.loads(result.stdout.strip().splitlines()[-1])
        assert where.startswith(str(mount)) and not cached
        assert cache_path.startswith(str(tmp_path / "cache" / "numba")) and Path(cache_path).is_dir()
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("cache", ["fp32", "bf16", "q8_0"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8])       # runs of KV_ROWS rows, and a shorter last one
def test_kv_rows_read_each_cache_type_as_stored(cache, rows):
    # decode attention's key dots and value sums, compiled (LLVM IR) and as their NumPy pictures, against
    # products with the cache's widened rows; only the n keys s0..s0+n-1 are read, only p's first n columns written
    from miniqwen3 import kv_rows
    S, D, s0, n = 120, 64, 5, 37
    stored = {"fp32": lambda a: a, "bf16": float32_to_bf16, "q8_0": lambda a: quants.quantize_q8_0(a).data}[cache]
    ks, vs = stored(randn(S, D, scale=2.0)), stored(randn(S, D))
    widen = {"q8_0": lambda a: quants.dequantize_q8_0(a.reshape(-1, 34)).reshape(S, D)}.get(cache, as_float32)
    keys, values = widen(ks), widen(vs)
    qs, weights = randn(rows, D), np.abs(randn(rows, 64))
    p, acc = np.full((rows, 64), 7.0, np.float32), randn(rows, D)
    expected_p, expected_acc = p.copy(), acc.copy()
    expected_p[:, :n] = qs.astype(np.float64) @ keys[s0:s0 + n].T.astype(np.float64)
    expected_acc += weights[:, :n].astype(np.float64) @ values[s0:s0 + n].astype(np.float64)
    nan = {"fp32": np.float32(np.nan), "bf16": np.uint16(0x7FC0), "q8_0": np.uint8(0x7E)}[cache]   # q8_0: NaN scales
    for a in (ks, vs):
        a[:s0], a[s0 + n:] = nan, nan

    @numba.njit
    def both(qs, ks, vs, weights, p, acc):
        kv_rows.key_dots(qs, ks, s0, n, p)
        kv_rows.value_sums(weights, vs, s0, n, acc)
    for run in (both, both.py_func):
        p_run, acc_run = p.copy(), acc.copy()
        run(qs, ks, vs, weights, p_run, acc_run)
        np.testing.assert_allclose(p_run, expected_p, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(acc_run, expected_acc, rtol=1e-5, atol=1e-5)
