"""The numbers behind the notebooks (viz) against closed forms and transformers, and the widgets moved by hand."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the notebooks extra is not installed")
pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed")

import miniqwen3  # noqa: E402
from miniqwen3 import balance, evaluate, ops, routing, viz, widgets  # noqa: E402
from miniqwen3.config import shipped_configs  # noqa: E402
from miniqwen3.cli import main as cli_main  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
MOE = FIXTURES / "moe_topk_norm"        # 3 MoE layers, 8 experts, top-2, norm_topk_prob, vocab 160, fp32


@pytest.fixture(scope="module")
def moe():
    return miniqwen3.load(MOE)


@pytest.fixture(scope="module")
def chat_moe(tmp_path_factory, qwen3_tokenizer_dir):
    """A 2-layer random Qwen3-MoE (8 experts, top-2) with the real Qwen3 vocabulary and tokenizer."""
    folder = tmp_path_factory.mktemp("chat_moe")
    raw = json.loads((Path(miniqwen3.__file__).parent / "configs" / "Qwen3-30B-A3B.json").read_text())
    raw.update(hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=8, num_experts_per_tok=2)
    (folder / "cfg.json").write_text(json.dumps(raw))
    assert cli_main(["init-random", str(folder / "cfg.json"), str(folder / "m"), "--dtype", "fp32"]) == 0
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(qwen3_tokenizer_dir) / f, folder / "m" / f)
    return miniqwen3.load(folder / "m")


IDS = np.array([3, 17, 42, 99, 5, 5, 120, 7, 64, 33, 2, 150])


# --- RoPE ----------------------------------------------------------------------------------------

def test_rope_scores_depend_only_on_the_distance():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=64), rng.normal(size=64)
    s = ops.rope_scores(q, k, np.arange(40), 64, 10_000.0)
    for d in range(-39, 40):
        diag = np.diagonal(s, offset=d)
        np.testing.assert_allclose(diag, diag[0], atol=2e-4 * np.abs(s).max())
    assert not np.allclose(s[0], s[0, 0])     # but it does depend on the distance


def test_rope_rotates_each_pair_by_position_times_frequency():
    # x = ones: the pair (x_i, x_{i+D/2}) = (1, 1) turns by a = m * inv_freq_i: (cos a - sin a, sin a + cos a)
    D, theta, m = 32, 10_000.0, 7
    r = ops.rope_rotate(np.ones(D), [m], D, theta)[0]
    a = m * theta ** (-np.arange(0, D, 2) / D)
    np.testing.assert_allclose(r[:D // 2], np.cos(a) - np.sin(a), atol=1e-5)
    np.testing.assert_allclose(r[D // 2:], np.sin(a) + np.cos(a), atol=1e-5)


def test_rope_decay_closed_form():
    d = np.array([0, 1, 10, 1000])
    inv = 10_000.0 ** (-np.arange(0, 64, 2) / 64)
    np.testing.assert_allclose(ops.rope_decay(64, 10_000.0, d), np.cos(d[:, None] * inv).mean(axis=1), atol=1e-5)
    # the same number as the RoPE score of q = k = ones, normalised by its value at distance 0
    s = ops.rope_scores(np.ones(64), np.ones(64), np.arange(11), 64, 10_000.0)
    np.testing.assert_allclose(s[10, 0] / s[0, 0], ops.rope_decay(64, 10_000.0, [10])[0], rtol=1e-5)


def test_rope_scores_at_distance_is_the_complex_rotation():
    """Pair i of q as the complex number q_i + i q_{i+D/2}, turned by d * inv_freq_i, dotted with k's pair:
    score(d) = sum_i Re(zq_i exp(i d w_i) conj(zk_i)) (the oracle); q = k = ones gives D * rope_decay; YaRN's
    attention factor a multiplies both vectors, so the score by a^2."""
    from miniqwen3.config import RopeScaling
    rng = np.random.default_rng(3)
    D, theta, d = 64, 1_000_000.0, np.array([0, 1, 5, 100, 4000])
    q, k = rng.normal(size=(6, D)), rng.normal(size=(6, D))
    w = theta ** (-np.arange(0, D, 2) / D)
    zq, zk = q[:, :D // 2] + 1j * q[:, D // 2:], k[:, :D // 2] + 1j * k[:, D // 2:]
    want = np.real(np.einsum("ni,ti,ni->nt", zq, np.exp(1j * d[:, None] * w[None]), np.conj(zk)))
    got = ops.rope_scores_at_distance(q, k, d, D, theta)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    ones = ops.rope_scores_at_distance(np.ones((1, D)), np.ones((1, D)), d, D, theta)[0]
    np.testing.assert_allclose(ones / D, ops.rope_decay(D, theta, d), atol=1e-5)
    yarn = RopeScaling("yarn", 4.0, 32_768)
    inv_freq, factor = ops.rope_frequencies(D, theta, yarn)
    assert factor == pytest.approx(0.1 * np.log(4.0) + 1)
    plain = np.real(np.einsum("ni,ti,ni->nt", zq, np.exp(1j * d[:, None] * inv_freq[None]), np.conj(zk)))
    np.testing.assert_allclose(ops.rope_scores_at_distance(q, k, d, D, theta, yarn), factor ** 2 * plain,
                               rtol=1e-4, atol=1e-3)


def test_interleaved_rope_is_the_complex_rotation_and_a_permutation_of_rotate_half():
    rng = np.random.default_rng(1)
    D, positions = 16, np.arange(9)
    inv = ops.rope_inv_freq(D, 10_000.0)
    x = rng.normal(size=(len(positions), D)).astype(np.float32)
    # Meta's Llama: view pairs (2i, 2i+1) as complex numbers and multiply by exp(i * m * inv_freq_i)
    z = (x[:, 0::2] + 1j * x[:, 1::2]) * np.exp(1j * positions[:, None] * inv[None, :])
    expected = np.stack([z.real, z.imag], axis=-1).reshape(len(positions), D)
    np.testing.assert_allclose(ops.apply_rope_interleaved(x, positions, inv), expected, atol=1e-5)
    order = ops.interleaved_order(D)
    assert list(order[:6]) == [0, 8, 1, 9, 2, 10]
    cos, sin = ops.rope_cos_sin(positions, inv)
    half_layout = ops.apply_rope(x[:, None, :], cos, sin)[:, 0, :]
    np.testing.assert_allclose(ops.apply_rope_interleaved(x[:, order], positions, inv), half_layout[:, order], atol=1e-5)


def test_rope_and_yarn_figures():
    fig = viz.rope_pairs_figure(10, 64, 10_000.0, pairs=(0, 31))
    assert "10.00 turns" not in fig.axes[1].get_title()
    assert f"{10 / (2 * np.pi):.2f} turns" in fig.axes[0].get_title()    # pair 0 turns at 1 radian per position
    assert viz.yarn_figure(4.0).axes[1].get_title().endswith("1.1386")
    assert viz.yarn_figure(4.0).axes[0].get_title().startswith("ramp: pairs < 23 keep, > 40")
    for fig in (viz.rope_wavelengths_figure(), viz.rope_decay_figure(max_distance=1000), viz.rope_layouts_figure(),
                viz.rope_scores_figure(np.eye(3))):
        assert fig._repr_png_()[:4] == b"\x89PNG"
    scores = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0], [2.0, 0.5, -1.0]])
    fig = viz.rope_score_spread_figure([1, 10, 100], {"a": scores})
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 0.0])     # the mean over pairs


# --- routing -------------------------------------------------------------------------------------

def test_routing_without_changes_is_the_model(moe):
    base = moe.logits(IDS)
    inputs = {}
    with moe.routing(inputs=inputs):
        np.testing.assert_array_equal(moe.logits(IDS), base)
    assert sorted(inputs) == [0, 1, 2] and inputs[0].shape == (len(IDS), 48)
    assert moe.routing_overrides == [] and "moe_block" not in vars(moe)   # the override is gone after the block


def test_nested_routing_overrides_compose_and_restore_exactly(moe):
    """Inner blocks see the union of the drops and their own k; leaving each block restores the model as it was
    before it, also when the block raises."""
    base, trace0 = moe.trace(IDS)
    with moe.routing(drop={0: [1]}):
        outer, trace1 = moe.trace(IDS)
        assert 1 not in trace1.layer(0).experts
        with moe.routing(top_k=3, drop={0: [2], 1: [4]}):
            _, trace2 = moe.trace(IDS)
            assert trace2.layer(0).experts.shape[1] == 3
            assert not np.isin(trace2.layer(0).experts, [1, 2]).any() and 4 not in trace2.layer(1).experts
            with pytest.raises(RuntimeError):
                with moe.routing(weights=lambda i, p, e, w: np.full_like(w, 1 / w.shape[1])):
                    _, trace3 = moe.trace(IDS)
                    np.testing.assert_allclose(trace3.layer(1).weights, 1 / 3)
                    raise RuntimeError("leaves the block")
            np.testing.assert_array_equal(moe.trace(IDS)[1].layer(1).weights, trace2.layer(1).weights)
        np.testing.assert_array_equal(moe.logits(IDS), outer)
        assert len(moe.routing_overrides) == 1
    np.testing.assert_array_equal(moe.logits(IDS), base)
    np.testing.assert_array_equal(moe.trace(IDS)[1].layer(0).experts, trace0.layer(0).experts)
    assert moe.routing_overrides == []


def transformers_logits(folder, ids, **config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                              **config).eval()
    with torch.no_grad():
        return model(torch.from_numpy(ids)[None]).logits[0].numpy()


@pytest.mark.oracle
@pytest.mark.parametrize("k", [1, 3, 8])
def test_top_k_at_inference_matches_transformers(moe, k):
    with moe.routing(top_k=k):
        ours = moe.logits(IDS)
    np.testing.assert_allclose(ours, transformers_logits(MOE, IDS, num_experts_per_tok=k), atol=1e-4)


@pytest.mark.oracle
def test_dropped_experts_match_a_checkpoint_without_them(moe, tmp_path):
    """Removing experts from the router's softmax is the model whose checkpoint lacks them: the oracle is
    transformers on a copy of the checkpoint with those experts (their router rows and weights) deleted."""
    st = pytest.importorskip("safetensors.numpy")
    drop = {0: [1, 6, 3], 1: [0, 2, 5], 2: [7, 4, 0]}     # a config has one expert count: 5 kept in every layer
    tensors = st.load_file(str(MOE / "model.safetensors"))
    raw = json.loads((MOE / "config.json").read_text())
    out = {}
    for name, t in tensors.items():
        parts = name.split(".")
        if ".mlp.experts." in name:
            layer, e = int(parts[2]), int(parts[5])
            if e in drop[layer]:
                continue
            keep = [x for x in range(8) if x not in drop[layer]]
            parts[5] = str(keep.index(e))
            out[".".join(parts)] = t
        elif name.endswith("mlp.gate.weight"):
            layer = int(parts[2])
            out[name] = np.ascontiguousarray(np.delete(t, drop[layer], axis=0))
        else:
            out[name] = t
    st.save_file(out, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    raw["num_local_experts"] = 5
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with moe.routing(drop=drop):
        ours = moe.logits(IDS)
    np.testing.assert_allclose(ours, transformers_logits(tmp_path, IDS), atol=1e-4)
    assert not np.allclose(ours, moe.logits(IDS), atol=1e-3)


def test_routing_refuses_to_drop_below_k(moe):
    with pytest.raises(ValueError, match="layer 0: dropping 7 of 8 experts leaves fewer than top_k=2"):
        with moe.routing(drop={0: list(range(7))}):
            pass


def test_router_step_is_the_traced_routing(moe):
    _, trace = moe.trace(IDS)
    inputs = routing.moe_inputs(moe, IDS)
    for layer, pos in [(0, 0), (1, 5), (2, 11)]:
        s = routing.router_step(moe, IDS, pos, layer, inputs)
        rec = trace.layer(layer)
        np.testing.assert_array_equal(s.experts, rec.experts[pos])
        np.testing.assert_allclose(s.weights, rec.weights[pos], rtol=1e-6)
        np.testing.assert_allclose(s.probs, rec.probs[pos], rtol=1e-6)
        assert s.weights.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(s.output, s.block_output, atol=1e-6)
    fig = viz.router_step_figure(s, "tok")
    assert "layer 2, position 11" in fig.get_suptitle()


def test_router_step_rejects_a_dense_layer():
    m = miniqwen3.load(FIXTURES / "moe_sparse_step2_mlp_only")
    with pytest.raises(ValueError, match="layer 0 is not a MoE layer"):
        routing.router_step(m, IDS[:4] % m.config.vocab_size, 0, 0)


def test_repeat_rates_closed_forms():
    first = np.array([[0, 0, 1, 1], [0, 1, 0, 1]])
    np.testing.assert_allclose(routing.repeat_rate(first), [2 / 3, 0])
    np.testing.assert_allclose(routing.chance_repeat_rate(first, 4), [0.5, 0.5])


@pytest.mark.oracle
def test_mean_loss_matches_transformers(moe):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoModelForCausalLM.from_pretrained(MOE, dtype=torch.float32, attn_implementation="eager")
    ids = torch.from_numpy(IDS)[None]
    with torch.no_grad():
        expected = float(ref(ids, labels=ids).loss)
    assert evaluate.mean_loss(moe, [IDS]) == pytest.approx(expected, rel=1e-5)


def test_loss_sweeps(moe):
    seqs = [IDS, IDS[::-1].copy()]
    base = evaluate.mean_loss(moe, seqs)
    assert evaluate.loss_vs_top_k(moe, seqs, [2])[2] == pytest.approx(base)
    loads = evaluate.expert_loads(moe, seqs)
    _, trace = moe.trace(IDS)
    for i in loads:
        assert loads[i].sum() == pytest.approx(1.0)
    dropped = evaluate.loss_vs_dropped(moe, seqs, loads, [0, 2], "most")
    assert dropped[0] == pytest.approx(base) and dropped[2] != pytest.approx(base)
    # the dropped experts are never chosen
    most = {i: list(np.argsort(-l, kind="stable")[:2]) for i, l in loads.items()}
    with moe.routing(drop=most):
        _, tr = moe.trace(IDS)
    for i in tr.layers:
        assert not np.isin(tr.layer(i).experts, most[i]).any()


def test_routing_by_group(moe):
    g = routing.routing_by_group(moe, {"a": [IDS[:6]], "b": [IDS[6:], IDS[:3]]})
    shares = g.shares()
    assert sorted(shares) == [0, 1, 2] and g.counts.shape == (3, 3, 8)
    np.testing.assert_allclose(shares[1].sum(axis=1), 1.0)
    assert g.first["b"][0].shape == (3, 6)
    _, trace = moe.trace(IDS[:6])
    np.testing.assert_allclose(shares[1][0], trace.expert_load(1))
    # dealt at random, group sizes kept (one sequence in a, two in b): some seed moves a sequence
    assert any(not np.allclose(g.shuffled_shares(seed)[0], shares[0]) for seed in range(5))
    assert len(viz.group_share_figure(shares, ["a", "b"]).axes) == 3


def test_routing_html_colours_every_token(moe):
    _, trace = moe.trace(IDS[:4])
    first = routing.first_choices(trace)
    h = viz.routing_html(["a", "b<", "\n", "d"], first, trace.layers, 8)
    assert h.count("<span") == 12 and "b&lt;" in h and "↵" in h
    assert f'title="expert {first[0][0]}"' in h


# --- the budget ----------------------------------------------------------------------------------

class ScriptedModel:
    """Stands in for a Model in `stream`: its logits always point at the next token of a script (the
    scripted tokens are consumed one per forward call, whether or not the counter forced something else)."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, list(script)
        self.config = type("C", (), {"vocab_size": tokenizer.vocab_size})()
        self.path = None

    def new_cache(self, dtype="fp32"):
        return None

    def forward(self, ids, cache=None, last_only=False):
        logits = np.zeros((1, self.config.vocab_size), np.float32)
        logits[0, self.script.pop(0)] = 10.0
        return logits


def test_budget_steps_walk_through(qwen3_tokenizer_dir):
    tok = miniqwen3.Tokenizer.from_file(qwen3_tokenizer_dir)
    words = tok.encode(" one two three four five six")
    model = ScriptedModel(tok, [tok.think_id] + words + [tok.end_think_id] + tok.encode("5") * 60 + [tok.im_end_id] * 40)
    rows = evaluate.budget_steps(model, "What is 2 + 3? /think", 4, temperature=0.0, max_new_tokens=60)
    assert rows[0]["id"] == tok.think_id and rows[0]["state"] == "thinking"
    assert [r["N"] for r in rows[1:5]] == [1, 2, 3, 4]
    assert rows[4]["state"] == "forcing" and rows[4]["tripped"]
    forced = [r for r in rows if r["forced"]]
    # a model that is not the embedded tiny one gets Qwen's stop text ("\n\n" first)
    assert "".join(r["token"] for r in forced) == miniqwen3.budget.QWEN_STOP_TEXT + "</think>\n\n"
    assert rows[-1]["channel"] == "answer" and rows[-1]["N"] == 4
    h = viz.budget_steps_html(rows)
    assert h.count("background:#ffd59e") == len(forced)
    strip = viz.budget_steps_strip(tok, rows)
    assert strip.count("#ffd59e") == len(forced) and "N = 4, tripped" in strip and f"{len(forced)} of them forced" in strip


def test_accuracy_vs_budget_counts_right_answers(chat_moe):
    answers = {}

    def parse(text):
        answers.setdefault("text", text)
        return text
    first = chat_moe.generate("What is 2 + 3?", budget=0, max_new_tokens=5, temperature=0.0).answer
    acc = evaluate.accuracy_vs_budget(chat_moe, ["What is 2 + 3?"] * 2, [first, "nope"], [0], parse,
                                 max_new_tokens=5, temperature=0.0)
    assert acc == {0: 0.5}
    fig = viz.accuracy_figure({"live": acc, "eval": {0: 0.1, 8: 0.5, None: 0.9}})
    assert fig.axes[0].get_ylabel() == "accuracy"


def test_eval_curves_read_the_evaluate_tiny_layout():
    report = {"arithmetic": {"think": {"0": {"L1": 50.0, "all": 25.0}, "8": {"L1": 100.0, "all": None},
                                       "unlimited": {"L1": 100.0, "all": 75.0}}}}
    assert evaluate.eval_curves(report) == {"level 1": {0: 0.5, 8: 1.0, None: 1.0}, "all levels": {0: 0.25, None: 0.75}}
    fig = viz.accuracy_figure(evaluate.eval_curves(report), levels={"no-think": 0.4})
    assert len(fig.axes[0].lines) == 3


# --- balance and kernels figures -----------------------------------------------------------------

def test_lab_and_load_figures():
    runs = [balance.train_router(m, steps=20) for m in balance.METHODS]
    fig = viz.lab_figure(runs, ["a", "b", "c", "d"])
    assert len(fig.axes) == 12 and fig.axes[0].get_title().startswith("none")
    loads = np.array([[0.5, 0.5], [1.0, 0.0]])
    fig = viz.load_history_figure(np.array([0, 10]), loads)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.0, 1.0])
    assert viz.load_bars_figure(np.full(4, 0.25))._repr_png_()[:4] == b"\x89PNG"


def test_online_softmax_is_softmax():
    rng = np.random.default_rng(2)
    s, v = rng.normal(size=37) * 3, rng.normal(size=(37, 5))
    out, history = ops.online_softmax(s, v, 8)
    np.testing.assert_allclose(out, ops.softmax(s) @ v, rtol=1e-10)
    assert len(history) == 5 and history[-1][0] == s.max()
    assert history[-1][1] == pytest.approx(np.exp(s - s.max()).sum())


def test_moe_token_by_token_is_moe_experts(moe):
    m = moe.weights.layers[0].mlp
    x = np.random.default_rng(3).normal(size=(6, 48)).astype(np.float32)
    _, experts, weights = ops.router(ops.linear(x, m.gate), 2, True)
    np.testing.assert_allclose(ops.moe_token_by_token(x, experts, weights, m.gate_proj, m.up_proj, m.down_proj),
                               ops.moe_experts(x, experts, weights, m.gate_proj, m.up_proj, m.down_proj), atol=1e-6)


def test_parameter_table_has_the_real_moe_counts():
    rows = {r["model"]: r for r in viz.parameter_rows(shipped_configs())}
    assert rows["Qwen3-235B-A22B"]["total"] / 1e9 == pytest.approx(235.09, abs=0.01)
    assert rows["Qwen3-235B-A22B"]["active"] / 1e9 == pytest.approx(22.19, abs=0.01)
    assert rows["Qwen3-30B-A3B"]["active"] / 1e9 == pytest.approx(3.35, abs=0.01)
    assert "235.09B" in viz.parameter_table(shipped_configs())


def test_token_html_marks_channels_and_forced(chat_moe):
    ids = chat_moe.tokenizer.encode("a b")
    h = viz.token_html(chat_moe.tokenizer, ids, ["thinking", "answer"], [False, True], [1, 2])
    assert "#e4e4e4" in h and "#ffd59e" in h and f"{ids[1]} · 2" in h and "·b" in h


# --- widgets -------------------------------------------------------------------------------------

def move(w, index, value):
    """Set the index-th control of an interactive panel and return the new result."""
    before = w.result
    w.children[index].value = value
    assert w.result is not before, "the panel did not redraw"
    return w.result


def test_panel_raises_when_the_first_call_fails():
    import ipywidgets
    with pytest.raises(ZeroDivisionError):
        widgets.panel(lambda x: 1 / x, x=ipywidgets.IntSlider(value=0, min=0, max=3))


def test_rope_and_yarn_widgets():
    w = widgets.rope_rotation()
    assert widgets.CHECK in w._dom_classes
    assert "position 50" in move(w, 0, 50).get_suptitle()
    assert "theta 1e+06" in move(w, 1, 1_000_000.0).get_suptitle()
    w = widgets.yarn()
    assert "x8" in move(w, 0, 8.0).axes[1].get_legend().get_texts()[1].get_text()


def test_routing_widgets(chat_moe):
    ids = chat_moe.tokenizer.encode("What is 12 + 35? Let me think.")
    w = widgets.router_step(chat_moe, ids)
    assert "position 3" in move(w, 0, 3).get_suptitle()
    assert "layer 1" in move(w, 1, 1).get_suptitle()
    w = widgets.routing_text(chat_moe, {"long": ids, "short": ids[:3]})
    assert move(w, 0, "short").count("<span") == 2 * 3
    w = widgets.top_k_loss(chat_moe, [ids])
    fig = move(w, 0, 4)
    assert "k = 4" in fig.axes[0].get_title() and len(fig.axes[0].lines[0].get_xdata()) == 2
    w = widgets.drop_experts(chat_moe, [ids], evaluate.expert_loads(chat_moe, [ids]))
    assert "3 most-used removed" in move(w, 0, 3).axes[0].get_title()
    assert "3 least-used removed" in move(w, 1, "least").axes[0].get_title()


def test_generation_widgets(chat_moe):
    # the reply prefilled with an open think block, so the counter runs on this random model: the slider's B
    # decides whether it trips within the 6 tokens
    w = widgets.budget(chat_moe, max_new_tokens=6, prefill="<think>\n")
    assert "N = 6, not tripped" in move(w, 0, 9)
    tripped = move(w, 0, 2)
    assert "tripped" in tripped and "not tripped" not in tripped and "#ffd59e" in tripped
    w = widgets.chat(chat_moe, max_new_tokens=4)
    assert "budget 7" in move(w, 2, 7)
    # the soft switch: /no_think is sent as text; the budget is still applied (this random model never thinks)
    assert "budget 7" in move(w, 1, "/no_think")


def test_balance_widgets():
    w = widgets.balance_lab(steps=15)
    assert widgets.CHECK in w._dom_classes
    fig = move(w, 1, 4)
    assert [a.get_title().split("\n")[0] for a in fig.axes[::3]] == list(balance.METHODS)
    w = widgets.load_history(np.arange(3), {0: np.full((3, 2), 0.5), 3: np.eye(2)[[0, 1, 0]]})
    assert move(w, 0, 3).get_suptitle() == "layer 3"


def test_attention_timing_widget():
    w = widgets.attention_timing()
    assert "S = 128" in move(w, 0, 128) and "max difference" in w.result


def test_repeat_vs_chance_pools_sequences_without_crossing_them():
    a, b = np.array([[0, 0, 0]]), np.array([[1, 1]])
    same, chance = routing.repeat_vs_chance([a, b], 2)
    np.testing.assert_allclose(same, [1.0])                 # the 0 -> 1 step between sequences is not a pair
    np.testing.assert_allclose(chance, [(3 / 5) ** 2 + (2 / 5) ** 2])


def test_expert_cache_panel_and_figures():
    """The cache panel (notebook 07's browser-check panel): moving C draws the simulated hit rate at C for every
    layer and policy; the dotted line is C / E; the pruning figure draws one line per series and panel."""
    from miniqwen3 import expert_cache
    rng = np.random.default_rng(0)
    needed = {i: np.array([rng.choice(8, 2, replace=False) for _ in range(40)]) for i in (0, 1)}
    prefetch = {1: needed[1]}                                   # perfect guesses for layer 1
    w = widgets.expert_cache(needed, 8, prefetch, lengths=[20, 20])
    assert widgets.CHECK in w._dom_classes
    fig = move(w, 0, 5)
    lru0 = fig.axes[0].lines[0]                                 # layer 0, LRU: the point at C = 5
    assert dict(zip(lru0.get_xdata(), lru0.get_ydata()))[5] == expert_cache.simulate(needed[0], 5, "lru").hit_rate
    labels = [line.get_label() for line in fig.axes[1].lines]
    assert "LRU + next-layer prefetch" in labels and "LRU + next-layer prefetch" not in \
        [line.get_label() for line in fig.axes[0].lines]
    prefetched = fig.axes[1].lines[labels.index("LRU + next-layer prefetch")]
    assert set(prefetched.get_ydata()) == {1.0}                # perfect guesses never miss
    uniform = fig.axes[0].lines[[line.get_label() for line in fig.axes[0].lines].index("C / E (uniform routing)")]
    np.testing.assert_allclose(uniform.get_ydata(), np.asarray(uniform.get_xdata()) / 8)
    rows = [{"series": s, "saved": x, "delta": d, "lo": d - 0.1, "hi": d + 0.1, "exact": 0.5, "exact_lo": 0.4,
             "exact_hi": 0.6} for s in ("least", "random") for x, d in ((0.0, 0.0), (0.1, 0.3))]
    fig = viz.pruning_figure(rows)
    assert [len(ax.lines) >= 2 for ax in fig.axes] == [True, True]


def test_auto_budget_panel_circles_the_three_choices_at_the_cost_allowed():
    """Notebook 08's browser-check panel on a table worked by hand: two short questions (8 tokens, right only when
    they think) and one long one (40 tokens, right only unlimited). At a mean of 6 tokens allowed, B = 8 for all
    costs 8 (too much), B = 0 gets 0 right; the probe (exact predictions) and the oracle finish both short ones."""
    from miniqwen3 import auto_budget
    budgets = [0, 8, 16, None]
    correct = np.array([[False, True, True, True], [False, True, True, True], [False, False, False, True]])
    spent = np.array([[0, 8, 8, 8], [0, 8, 8, 8], [0, 8, 16, 40]])
    w = widgets.auto_budget(correct, spent, budgets, predicted=[8, 8, 40], levels=[1, 1, 4], margin=0.0)
    assert widgets.CHECK in w._dom_classes
    fig = move(w, 0, 6)
    circled = [(line.get_xdata()[0], line.get_ydata()[0]) for line in fig.axes[0].lines if line.get_marker() == "o"
               and len(line.get_xdata()) == 1 and line.get_markersize() == 11]
    assert circled == [(0.0, 0.0), (16 / 3, 2 / 3), (16 / 3, 2 / 3)]   # fixed B = 0, the probe, the oracle
    assert auto_budget.scheduler_choice([8, 8, 40], budgets, 6).tolist() == [1, 1, 0]


def test_distill_results_draws_every_model_with_intervals_at_full_marks():
    """scripts/distill.py's report drawn: a bar per model and level, with Wilson intervals from evaluate.rate; a rate of
    n/n (whose interval's upper end can fall a rounding below 1) must draw, as it did not before."""
    def acc(flags):
        r = evaluate.rate(flags)
        return {f"L{lv}": r for lv in (1, 2, 3, 4)} | {"all": r}
    columns = ["no-think", "B=0", "unlimited"]
    models = {name: {"eval": {"accuracy": {c: acc(flags) for c in columns},
                              "think_follow": {"all": evaluate.rate(flags)}}} for name, flags in
              (("a", [True] * 60), ("b", [True, False] * 30))}
    models["a"]["cost"] = {"train_seconds": 60.0, "sample_seconds": 0.0, "teacher_seconds": 30.0}
    fig = viz.distill_results({"models": models, "columns": columns})
    ax_levels = fig.axes[0]
    assert len(fig.axes) == 3 and len(ax_levels.patches) == 2 * 4
    assert [t.get_text() for t in ax_levels.get_legend().get_texts()] == ["a (1.5 min)", "b"]
