"""bf16 products (`Model(matmul_precision="bf16")`, `miniqwen3.bf16_products`): activations rounded to bf16 meet
bf16 weights, sums in fp32. The oracle is torch: its own fp32 -> bf16 rounding and an fp32 matmul of the
rounded values, and a transformers model whose every nn.Linear rounds its input to bf16."""
import dataclasses

import numpy as np
import pytest

import miniqwen3
from miniqwen3 import bf16_products, kernels, ops
from miniqwen3.weights import as_float32, float32_to_bf16

torch = pytest.importorskip("torch")

needs_avx512_bf16 = pytest.mark.skipif(not bf16_products.AVAILABLE, reason="this CPU has no AVX512-BF16")


def bits(a: np.ndarray) -> np.ndarray:
    """torch's rounding of fp32 to bf16, as uint16 bits."""
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).bfloat16().view(torch.int16).numpy().view(np.uint16)


def torch_linear(x_bits, w_bits):
    """The oracle: both operands widened from bf16 by torch, multiplied in fp64."""
    wide = [torch.from_numpy(b.view(np.int16).copy()).view(torch.bfloat16).double() for b in (x_bits, w_bits)]
    return torch.nn.functional.linear(*wide).numpy()


def test_rounding_to_bf16_is_torchs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(10000, np.float32) * 10.0 ** rng.integers(-30, 30, 10000),
                        np.array([np.inf, -np.inf, 3.4e38, -0.0, 0.0, 1e-45], np.float32),
                        # ties: bf16's last bit even (rounds down) and odd (rounds up)
                        (np.array([0x3F808000, 0x3F818000, 0xBF808000], np.uint32)).view(np.float32)])
    np.testing.assert_array_equal(float32_to_bf16(x), bits(x))


SHAPES = [(16, 64, 8), (37, 128, 100), (200, 1024, 264), (1, 1024, 1000), (3, 96, 102), (16, 96, 3), (20, 33, 16)]


@pytest.mark.parametrize("backend", [ops, kernels], ids=["numpy", "numba"])
@pytest.mark.parametrize("T,IN,OUT", SHAPES)
def test_linear_equals_torch(backend, T, IN, OUT):
    """x @ w.T of bf16 activations (T, IN, OUT). Prefill runs the AVX512-BF16 kernel (rows of 8: OUT = 100 and 264
    end in a redone tile; tokens in vectors of 16 and 32); decode (T < 16) and OUT < 8 or an odd IN widen the
    rounded activations and multiply in fp32 (a bf16 decode kernel streamed rows no faster than that)."""
    rng = np.random.default_rng(T + IN + OUT)
    x, w = bits(rng.standard_normal((T, IN))), bits(rng.standard_normal((OUT, IN)))
    y = backend.linear(x, w)
    assert y.dtype == np.float32 and y.shape == (T, OUT)
    np.testing.assert_allclose(y, torch_linear(x, w), rtol=0, atol=2e-6 * np.sqrt(IN) * 4)


@needs_avx512_bf16
def test_kernel_path_is_taken_and_matches_its_numpy_picture(monkeypatch):
    """The IR micro kernel against `tiles.tile_sums`' NumPy picture of vdpbf16ps (what NUMBA_DISABLE_JIT runs), and
    `kernels.linear` really goes through it for a prefill of bf16 weights."""
    rng = np.random.default_rng(1)
    x, w = bits(rng.standard_normal((40, 256))), bits(rng.standard_normal((24, 256)))
    panel = np.empty((128, 48), np.uint32)
    bf16_products.pack_pairs.py_func(x.view(np.uint32), panel)
    compiled, picture = np.empty((40, 24), np.float32), np.empty((40, 24), np.float32)
    bf16_products.rows(w.view(np.uint32), 0, 3, panel, 40, compiled)
    bf16_products.rows.py_func(w.view(np.uint32), 0, 3, panel, 40, picture)
    np.testing.assert_allclose(compiled, picture, rtol=0, atol=1e-4)
    calls = []
    monkeypatch.setattr(bf16_products, "linear", lambda *a: calls.append(a) or picture)
    kernels.linear(x, w)
    kernels.linear(x[:3], w)                                      # decode: the row dots, widened x
    kernels.linear(as_float32(x), w)                              # fp32 activations: fp32 products
    assert len(calls) == 1


def torch_swiglu(x_bits, g, u, d):
    """down(round_bf16(silu(x @ g.T) * (x @ u.T))) with torch's rounding, fp64 sums."""
    h = torch.nn.functional.silu(torch.from_numpy(torch_linear(x_bits, g))) * torch.from_numpy(torch_linear(x_bits, u))
    return torch_linear(bits(h.float().numpy()), d)


@pytest.mark.parametrize("backend", [ops, kernels], ids=["numpy", "numba"])
@pytest.mark.parametrize("T", [2, 48])
def test_moe_experts_equal_torch(backend, T):
    """Prefill (48 tokens: `bf16_products.experts` where the CPU has AVX512-BF16) and decode (2), the hidden
    activations rounded to bf16 before down_proj."""
    rng = np.random.default_rng(T)
    E, K, H, I = 8, 3, 128, 48
    x = bits(rng.standard_normal((T, H)))
    g, u, d = (bits(rng.standard_normal(s) * 0.2) for s in ((E, I, H), (E, I, H), (E, H, I)))
    experts = np.stack([rng.choice(E, K, replace=False) for _ in range(T)])
    weights = rng.random((T, K)).astype(np.float32)
    expected = np.zeros((T, H))
    for t in range(T):
        for k in range(K):
            e = experts[t, k]
            expected[t] += weights[t, k] * torch_swiglu(x[t:t + 1], g[e], u[e], d[e])[0]
    got = backend.moe_experts(x, experts, weights, g, u, d)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    got = backend.swiglu(x, g[0], u[0], d[0])
    np.testing.assert_allclose(got, torch_swiglu(x, g[0], u[0], d[0]), rtol=0, atol=1e-4 * np.abs(got).max())


def test_without_avx512_bf16_the_same_values(monkeypatch):
    """A CPU without the instruction widens the rounded activations and multiplies in fp32: the same values."""
    rng = np.random.default_rng(2)
    x, w = bits(rng.standard_normal((64, 256))), bits(rng.standard_normal((40, 256)))
    monkeypatch.setattr(bf16_products, "AVAILABLE", False)
    np.testing.assert_allclose(kernels.linear(x, w), torch_linear(x, w), rtol=0, atol=1e-4)


def test_precision_is_checked():
    tiny = miniqwen3.load()
    with pytest.raises(ValueError, match="matmul_precision 'fp16'"):
        miniqwen3.Model(tiny.config, tiny.weights, matmul_precision="fp16")


def test_auto_precision_is_bf16_where_it_pays(monkeypatch):
    """The default "auto": bf16 products for bf16 weights on the Numba backend of a CPU with AVX512-BF16, in a
    model of NUMBA_FROM_PARAMETERS or more; fp32 on the NumPy reference, for fp32 weights, for small models and on
    a CPU without the instruction. Settled again by set_backend."""
    from miniqwen3 import model as model_module
    tiny = miniqwen3.load()                               # bf16 weights, 9M parameters: the NumPy backend
    assert tiny.weights.layers[0].self_attn.q_proj.dtype == np.uint16
    assert (tiny.matmul_precision_asked, tiny.matmul_precision) == ("auto", "fp32")
    monkeypatch.setattr(bf16_products, "AVAILABLE", True)
    assert miniqwen3.Model(tiny.config, tiny.weights, backend="numba").matmul_precision == "fp32"   # small
    monkeypatch.setattr(model_module, "NUMBA_FROM_PARAMETERS", 1)          # from here on, tiny counts as big
    cases = [(False, "fp32"), (True, "bf16")] if bf16_products.AVAILABLE else [(False, "fp32")]   # no kernels to warm
    for available, expected in cases:
        monkeypatch.setattr(bf16_products, "AVAILABLE", available)
        model = miniqwen3.Model(tiny.config, tiny.weights)                  # the Numba backend, as a big model's
        assert (model.backend, model.matmul_precision) == ("numba", expected)
        assert model.activations(np.ones((2, 4), np.float32)).dtype == (np.uint16 if available else np.float32)
        model.set_backend("numpy")
        assert model.matmul_precision == "fp32"
        assert miniqwen3.Model(tiny.config, tiny.weights, matmul_precision="fp32").matmul_precision == "fp32"
        assert miniqwen3.Model(tiny.config, tiny.weights, backend="numpy", matmul_precision="bf16"
                               ).matmul_precision == "bf16"
    monkeypatch.setattr(bf16_products, "AVAILABLE", True)
    layers = list(tiny.weights.layers)
    attn = dataclasses.replace(layers[0].self_attn, q_proj=as_float32(layers[0].self_attn.q_proj))
    layers[0] = dataclasses.replace(layers[0], self_attn=attn)
    fp32_weights = dataclasses.replace(tiny.weights, layers=layers)
    assert miniqwen3.Model(tiny.config, fp32_weights).matmul_precision == "fp32"


def sites(model, ids, cache=None):
    """Run model.forward(ids, cache) with a recording; -> {(layer, name): value} of every intermediate value."""
    rec = {}
    model.forward(ids, cache, record=lambda layer, **v: rec.update({(layer, k): np.array(x, copy=True)
                                                                     for k, x in v.items()}))
    return rec


def check_each_product(rec, product, layers, moe):
    """Every product site of a recorded forward pass against product(site, input fed to it): that input is the
    model's own recorded fp32 value, so both sides round the same numbers to bf16, and a rounding flip (a
    value an fp32 difference of 1e-7 moves past a bf16 rounding boundary, which layers after it would carry
    on) cannot happen between them. Sites: q, k, v, o projections, the MLP (its hidden activations are
    rounded inside), the router and the output head."""
    for i in range(layers):
        h, T = rec[(i, "input_layernorm")], rec[(i, "input_layernorm")].shape[0]
        pairs = [(rec[(i, f"{n}_proj")].reshape(T, -1), product(i, f"{n}_proj", h)) for n in "qkv"]
        pairs.append((rec[(i, "o_proj")], product(i, "o_proj", rec[(i, "attention")].reshape(T, -1))))
        h = rec[(i, "post_attention_layernorm")]
        if moe:
            pairs.append((rec[(i, "router_logits")], product(i, "router", h)))
            pairs.append((rec[(i, "mlp")], product(i, "experts", h, rec[(i, "experts")], rec[(i, "expert_weights")])))
        else:
            pairs.append((rec[(i, "mlp")], product(i, "mlp", h)))
        for got, expected in pairs[:-1]:          # the products of one matrix
            np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * max(1.0, np.abs(expected).max()))
        assert_close_but_for_flips(*pairs[-1])
    np.testing.assert_allclose(rec[(None, "logits")], product(None, "lm_head", rec[(None, "norm")]), rtol=0,
                               atol=2e-5 * max(1.0, np.abs(rec[(None, "logits")]).max()))


def assert_close_but_for_flips(got, expected):
    """An MLP site rounds its hidden activations inside, which each side computes in fp32 in its own order: a hidden
    value 1e-7 from a bf16 rounding boundary may round the other way, which moves that token's whole output row a
    little. So: every row equal to 2e-5 but at most a tenth of them (not one, when there is one row), and those
    within 1e-2 (a missing rounding moves every row; a wrong one, by more)."""
    scale = max(1.0, np.abs(expected).max())
    apart = np.abs(got - expected).max(axis=-1) > 2e-5 * scale           # [T]
    assert apart.sum() <= 0.1 * apart.size, f"{apart.sum()} of {apart.size} rows apart"
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-2 * scale)


def ops_product(model, bf16=True):
    """The site's product by the NumPy reference ops, its input rounded to bf16 as `Model.activations` does."""
    w = model.weights

    def product(i, site, x, *routing):
        x = float32_to_bf16(x) if bf16 else x
        if site == "lm_head":
            return ops.linear(x, w.lm_head)
        layer = w.layers[i]
        if site == "router":
            return ops.linear(x, layer.mlp.gate)
        if site == "experts":
            return ops.moe_experts(x, *routing, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
        if site == "mlp":
            return ops.swiglu(x, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
        return ops.linear(x, getattr(layer.self_attn, site))
    return product


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_tiny_model_rounds_every_product_input(backend):
    """The embedded MoE model in bf16 products, prefill (40 tokens) then decode steps: every product site equals
    the reference ops on bf16-rounded inputs, and differs from fp32 products (so the rounding is really there)."""
    model = miniqwen3.load(backend=backend, matmul_precision="bf16")
    ids = np.random.default_rng(3).integers(0, 1000, 44)
    cache = model.new_cache()
    layers = model.config.num_hidden_layers
    for chunk in (ids[:40], ids[40:41], ids[41:42]):
        rec = sites(model, chunk, cache)
        check_each_product(rec, ops_product(model), layers, moe=True)
    with pytest.raises(AssertionError):
        check_each_product(rec, ops_product(model, bf16=False), layers, moe=True)


@pytest.mark.oracle
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_model_equals_transformers_with_bf16_inputs(backend, tmp_path):
    """A dense bf16 checkpoint against transformers in fp32 whose every nn.Linear rounds its input to bf16:
    each product site (see `check_each_product`), fed the same input, gives transformers' module's output."""
    pytest.importorskip("transformers")
    from parity_cases import build_checkpoint, prompt_ids
    ref = build_checkpoint("dense_gqa4_bf16", tmp_path, seed=4)
    ids = prompt_ids(ref.config.vocab_size, n=40, seed=6)
    with torch.no_grad():
        fp32 = ref(torch.tensor(ids)[None]).logits[0].numpy()
    model = miniqwen3.load(tmp_path, backend=backend, matmul_precision="fp32")
    np.testing.assert_allclose(model.logits(ids), fp32, rtol=0, atol=1e-4)      # fp32: transformers' fp32
    rounding = [m.register_forward_pre_hook(lambda mod, args: (args[0].bfloat16().float(),))
                for m in ref.modules() if isinstance(m, torch.nn.Linear)]

    def product(i, site, x):
        module = ref.lm_head if site == "lm_head" else (
            ref.model.layers[i].mlp if site == "mlp" else getattr(ref.model.layers[i].self_attn, site))
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    model.matmul_precision = "bf16"
    rec = sites(model, ids)
    check_each_product(rec, product, model.config.num_hidden_layers, moe=False)
    for hook in rounding:
        hook.remove()
    with pytest.raises(AssertionError):          # the same sites against transformers' fp32 products
        check_each_product(rec, product, model.config.num_hidden_layers, moe=False)
