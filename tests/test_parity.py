"""miniqwen3 against transformers' logits and expert choices, from committed golden fixtures (no torch).

The fixtures were made by scripts/make_parity_fixtures.py with transformers (fp32, eager attention);
tests/test_parity_oracle.py runs the same cases against transformers live."""
from pathlib import Path

import numpy as np
import pytest

import miniqwen3

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.npz").is_file())
TOL = 1e-4


def check_against(model, expected, atol=TOL):
    ids = expected["ids"]
    trace = miniqwen3.RoutingTrace()
    logits = model.forward(ids, trace=trace)
    np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=atol)
    layers = sorted(int(k.removeprefix("experts_layer")) for k in expected.files if k.startswith("experts_layer"))
    assert trace.layers == layers
    for i in layers:
        # the same set of experts for every token (order within the top-k is not part of the result)
        np.testing.assert_array_equal(np.sort(trace.layer(i).experts, axis=1),
                                      np.sort(expected[f"experts_layer{i}"], axis=1))


def test_fixture_table_is_complete():
    assert len(CASES) == 10, CASES


@pytest.mark.parametrize("case", CASES)
def test_logits_and_experts_match_transformers(case):
    model = miniqwen3.load(FIXTURES / case)
    check_against(model, np.load(FIXTURES / case / "expected.npz"))


@pytest.mark.parametrize("case", ["dense_untied_gqa2", "moe_topk_norm", "moe_sparse_step2_mlp_only", "dense_yarn"])
def test_prefill_then_decode_equals_full_forward(case):
    model = miniqwen3.load(FIXTURES / case)
    ids = np.load(FIXTURES / case / "expected.npz")["ids"]
    full = model.logits(ids)
    cache = model.new_cache()
    pieces = [model.forward(ids[:10], cache)]
    pieces += [model.forward(ids[t:t + 1], cache) for t in range(10, len(ids))]
    assert cache.length == len(ids)
    np.testing.assert_allclose(np.concatenate(pieces), full, rtol=0, atol=1e-5)


def test_last_only_equals_last_row():
    model = miniqwen3.load(FIXTURES / "moe_topk_norm")
    ids = np.load(FIXTURES / "moe_topk_norm" / "expected.npz")["ids"]
    np.testing.assert_allclose(model.forward(ids, last_only=True)[0], model.logits(ids)[-1], atol=1e-6)


def test_cache_truncate_replays_a_prefix():
    model = miniqwen3.load(FIXTURES / "dense_untied_gqa2")
    ids = np.load(FIXTURES / "dense_untied_gqa2" / "expected.npz")["ids"]
    cache = model.new_cache()
    model.forward(ids, cache)
    cache.truncate(5)
    np.testing.assert_allclose(model.forward(ids[5:], cache), model.logits(ids)[5:], atol=1e-5)


def test_tied_model_shares_the_embedding():
    model = miniqwen3.load(FIXTURES / "dense_tied_gqa1")
    assert model.weights.lm_head is model.weights.embed_tokens


def test_bf16_weights_stay_bf16_in_memory():
    model = miniqwen3.load(FIXTURES / "moe_bf16_keys4x_yarn")
    w = model.weights
    assert w.embed_tokens.dtype == np.uint16                   # bf16 bits, not widened at load
    assert w.layers[0].mlp.gate_proj.dtype == np.uint16
    assert w.layers[0].mlp.gate_proj.shape == (8, 32, 48)      # [E, I, H]


def test_routing_trace_records_probabilities_and_weights():
    model = miniqwen3.load(FIXTURES / "moe_topk_norm")
    ids = np.load(FIXTURES / "moe_topk_norm" / "expected.npz")["ids"]
    _, trace = model.trace(ids)
    r = trace.layer(0)
    T, E, K = len(ids), 8, 2
    assert r.probs.shape == (T, E) and r.experts.shape == (T, K) and r.weights.shape == (T, K)
    np.testing.assert_allclose(r.probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(r.weights.sum(1), 1, atol=1e-5)           # norm_topk_prob
    top = np.take_along_axis(r.probs, r.experts, 1)
    assert (top[:, 0] >= top[:, 1]).all()                                # most probable first
    unchosen = r.probs.copy()
    np.put_along_axis(unchosen, r.experts, -1.0, axis=1)
    assert (top.min(axis=1) >= unchosen.max(axis=1)).all()               # the k largest probabilities
    np.testing.assert_array_equal(r.token_ids, ids)
    assert abs(trace.expert_load(0).sum() - 1) < 1e-12


def test_bad_ids_are_refused():
    model = miniqwen3.load(FIXTURES / "dense_untied_gqa2")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([1, 2, 160])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        model.logits([])
    with pytest.raises(ValueError, match="integers"):
        model.logits([1.5, 2.0])
