"""The recording hook of `Model.forward` (what notebook 06 checks its hand-written layer against).

Recording must change nothing (logits bit for bit), and every recorded value must be what its name says: checked
with arithmetic written here (RMSNorm, softmax, top-k, residual sums, the output head) and, live, against the same
points inside transformers' Qwen3MoeForCausalLM (forward hooks on its modules)."""
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3.model import Recording

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "miniqwen3" / "data" / "tiny"
FIXTURES = Path(__file__).parent / "fixtures" / "parity"
PROMPT = "<|im_start|>user\nWhat is 457 + 385? /think<|im_end|>\n<|im_start|>assistant\n"

pytestmark = pytest.mark.skipif(not (TINY / "config.json").is_file(), reason="the embedded tiny model is not installed")


@pytest.fixture(scope="module")
def model():
    return miniqwen3.load()


@pytest.fixture(scope="module")
def ids(model):
    return np.array(model.tokenizer.encode(PROMPT))


def bf16(w):
    """bf16 bits (uint16) to float32, written out here."""
    w = np.asarray(w)
    return (w.astype(np.uint32) << 16).view(np.float32) if w.dtype == np.uint16 else w.astype(np.float32)


def rms(x, weight, eps):
    x = np.asarray(x, np.float64)
    return weight * x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)


def test_recording_changes_no_logits(model, ids):
    plain = model.forward(ids)
    rec = Recording()
    assert np.array_equal(model.forward(ids, record=rec), plain)             # bit for bit
    cache_a, cache_b = model.new_cache(), model.new_cache()
    a = [model.forward(ids[:-2], cache_a), model.forward(ids[-2:-1], cache_a), model.forward(ids[-1:], cache_a)]
    b = [model.forward(ids[:-2], cache_b, record=rec), model.forward(ids[-2:-1], cache_b, record=rec),
         model.forward(ids[-1:], cache_b, record=rec)]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert np.array_equal(cache_a.keys(0), cache_b.keys(0))
    assert len(rec.values[(0, "input")]) == 4                                # one copy per forward call


def test_recording_a_dense_model_changes_nothing():
    dense = miniqwen3.load(FIXTURES / "dense_untied_gqa2")
    ids = np.load(FIXTURES / "dense_untied_gqa2" / "expected.npz")["ids"]
    rec = Recording()
    assert np.array_equal(dense.forward(ids, record=rec), dense.forward(ids))
    c = dense.config
    assert (0, "router_logits") not in rec.values                            # a dense MLP has no router
    for i in range(c.num_hidden_layers):
        np.testing.assert_array_equal(rec.get("output", i), rec.get("attention_residual", i) + rec.get("mlp", i))


def test_recorded_values_are_what_they_say(model, ids):
    c, w = model.config, model.weights
    rec = Recording()
    logits = model.forward(ids, record=rec)
    eps = c.rms_norm_eps
    np.testing.assert_array_equal(rec.get("logits"), logits)
    # the output head: final-norm output times lm_head^T is the logits
    np.testing.assert_allclose(rec.get("norm").astype(np.float64) @ bf16(w.lm_head).T.astype(np.float64), logits,
                               rtol=0, atol=2e-5)
    last = c.num_hidden_layers - 1
    np.testing.assert_allclose(rec.get("norm"), rms(rec.get("output", last), w.norm, eps), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(rec.get("input", 0), bf16(w.embed_tokens)[ids])
    for i, layer in enumerate(w.layers):
        x = rec.get("input", i)
        if i:
            np.testing.assert_array_equal(x, rec.get("output", i - 1))
        np.testing.assert_allclose(rec.get("input_layernorm", i), rms(x, layer.input_layernorm, eps), atol=2e-5)
        h = rec.get("input_layernorm", i).astype(np.float64)
        T = len(ids)
        for name, proj, heads in (("q_proj", layer.self_attn.q_proj, c.num_attention_heads),
                                  ("k_proj", layer.self_attn.k_proj, c.num_key_value_heads),
                                  ("v_proj", layer.self_attn.v_proj, c.num_key_value_heads)):
            want = (h @ bf16(proj).T).reshape(T, heads, c.head_dim)
            np.testing.assert_allclose(rec.get(name, i), want, rtol=0, atol=1e-4)
        for raw, normed, weight in (("q_proj", "q_norm", layer.self_attn.q_norm),
                                    ("k_proj", "k_norm", layer.self_attn.k_norm)):
            np.testing.assert_allclose(rec.get(normed, i), rms(rec.get(raw, i), weight, eps), atol=2e-5)
        for before, after in (("q_norm", "q_rope"), ("k_norm", "k_rope")):
            # RoPE turns pairs of dimensions: position 0 is untouched, and every head keeps its length
            np.testing.assert_array_equal(rec.get(after, i)[0], rec.get(before, i)[0])
            np.testing.assert_allclose(np.linalg.norm(rec.get(after, i), axis=-1),
                                       np.linalg.norm(rec.get(before, i), axis=-1), rtol=1e-5)
        attn = rec.get("attention", i).reshape(T, -1).astype(np.float64)
        np.testing.assert_allclose(rec.get("o_proj", i), attn @ bf16(layer.self_attn.o_proj).T, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(rec.get("attention_residual", i), x + rec.get("o_proj", i))
        np.testing.assert_allclose(rec.get("post_attention_layernorm", i),
                                   rms(rec.get("attention_residual", i), layer.post_attention_layernorm, eps),
                                   atol=2e-5)
        np.testing.assert_array_equal(rec.get("output", i), rec.get("attention_residual", i) + rec.get("mlp", i))
        # the router: softmax over all experts, the K most probable, their probabilities renormalised
        z = rec.get("router_logits", i).astype(np.float64)
        probs = np.exp(z - z.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(rec.get("router_probs", i), probs, rtol=0, atol=1e-6)
        experts = rec.get("experts", i)
        top = np.sort(probs, axis=1)[:, ::-1][:, :c.num_experts_per_tok]
        np.testing.assert_allclose(np.take_along_axis(probs, experts, 1), top, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rec.get("expert_weights", i), top / top.sum(axis=1, keepdims=True), atol=1e-6)
        # the MoE output: sum over the chosen experts of weight * down(silu(gate x) * up x)
        m, hx = layer.mlp, rec.get("post_attention_layernorm", i).astype(np.float64)
        want = np.zeros_like(hx)
        for t in range(T):
            for e, g in zip(experts[t], rec.get("expert_weights", i)[t]):
                a, b = bf16(m.gate_proj[e]) @ hx[t], bf16(m.up_proj[e]) @ hx[t]
                want[t] += g * (bf16(m.down_proj[e]) @ (a / (1 + np.exp(-a)) * b))
        np.testing.assert_allclose(rec.get("mlp", i), want, rtol=0, atol=1e-4)


def test_a_missing_name_is_a_clear_error(model, ids):
    rec = Recording()
    model.forward(ids[:3], record=rec)
    with pytest.raises(KeyError, match="nothing recorded as 'q' in layer 0"):
        rec.get("q", 0)


@pytest.mark.oracle
def test_recorded_values_match_transformers(model, ids):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(TINY), dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    seen = {}

    def keep(key, pick=lambda out: out):
        def hook(module, args, out):
            seen[key] = pick(out).detach().numpy().reshape(len(ids), -1)
        return hook

    def keep_input(key):
        def hook(module, args):
            seen[key] = args[0].detach().numpy().reshape(len(ids), -1)
        return hook

    handles = []
    for i, layer in enumerate(hf.model.layers):
        a = layer.self_attn
        handles += [layer.input_layernorm.register_forward_hook(keep((i, "input_layernorm"))),
                    a.q_proj.register_forward_hook(keep((i, "q_proj"))),
                    a.k_proj.register_forward_hook(keep((i, "k_proj"))),
                    a.v_proj.register_forward_hook(keep((i, "v_proj"))),
                    a.q_norm.register_forward_hook(keep((i, "q_norm"))),
                    a.k_norm.register_forward_hook(keep((i, "k_norm"))),
                    a.o_proj.register_forward_pre_hook(keep_input((i, "attention"))),
                    a.o_proj.register_forward_hook(keep((i, "o_proj"))),
                    layer.post_attention_layernorm.register_forward_hook(keep((i, "post_attention_layernorm"))),
                    layer.mlp.gate.register_forward_hook(keep((i, "router_logits"), lambda out: out[0])),
                    layer.mlp.register_forward_hook(keep((i, "mlp")))]
    handles.append(hf.model.norm.register_forward_hook(keep((None, "norm"))))
    try:
        with torch.no_grad():
            out = hf(torch.tensor(ids[None]), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 11 * model.config.num_hidden_layers + 1
    rec = Recording()
    model.forward(ids, record=rec)
    for (layer, name), want in seen.items():
        np.testing.assert_allclose(rec.get(name, layer).reshape(len(ids), -1), want, rtol=0, atol=1e-4,
                                   err_msg=f"layer {layer} {name}")
    for i in range(model.config.num_hidden_layers):     # hidden_states[i]: the input of layer i
        np.testing.assert_allclose(rec.get("input", i), out.hidden_states[i][0].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(rec.get("logits"), out.logits[0].numpy(), rtol=0, atol=1e-4)
