"""Routing by domain with the token id controlled for (miniqwen3/routing.py, notebook 02 section 3): the information
measures against brute-force counts written out here and closed-form cases, the within-token shuffle, the choice of
domain experts, the bootstrap interval, and the per-token trace against the model's routing trace."""
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3 import routing

TINY = Path(miniqwen3.__file__).parent / "data" / "tiny" / "config.json"


def brute_mi(x, y):
    n = len(x)
    pxy, px, py = Counter(zip(x, y)), Counter(x), Counter(y)
    return sum(c / n * math.log2((c / n) / (px[a] / n * py[b] / n)) for (a, b), c in pxy.items())


def brute_cmi(x, y, z):
    total = 0.0
    for value, count in Counter(z).items():
        idx = [t for t in range(len(z)) if z[t] == value]
        total += count / len(z) * brute_mi([x[t] for t in idx], [y[t] for t in idx])
    return total


@pytest.mark.parametrize("seed", range(5))
def test_information_against_brute_force_counts(seed):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 7, 400)
    x = (z + rng.integers(0, 2, 400)) % 3                  # depends on z
    y = (x * 2 + z + rng.integers(0, 3, 400)) % 5          # depends on x and z
    assert routing.mutual_information(x, y) == pytest.approx(brute_mi(x.tolist(), y.tolist()), abs=1e-9)
    assert routing.conditional_mutual_information(x, y, z) == pytest.approx(
        brute_cmi(x.tolist(), y.tolist(), z.tolist()), abs=1e-9)


def test_information_closed_forms():
    x = np.repeat(np.arange(4), 25)
    z = np.tile(np.arange(5), 20)                           # independent of x, every pair 5 times
    assert routing.mutual_information(x, x) == pytest.approx(2.0)               # log2(4)
    assert routing.conditional_mutual_information(x, x, z) == pytest.approx(2.0)
    # the confound: the expert is a function of the token only, the domain decides which tokens occur
    domain = np.array([0] * 50 + [1] * 50)
    token = np.array([0] * 40 + [1] * 10 + [1] * 10 + [2] * 40)
    expert = np.minimum(token, 1)                           # token 0 -> expert 0, tokens 1 and 2 -> expert 1
    assert routing.mutual_information(domain, expert) > 0.2
    assert routing.conditional_mutual_information(domain, expert, token) == 0.0


def test_shuffle_within_keeps_each_stratum_and_shuffles():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 6, 300)
    labels = rng.integers(0, 3, 300)
    out = routing.shuffle_within(labels, strata, np.random.default_rng(1))
    assert Counter(zip(strata.tolist(), out.tolist())) == Counter(zip(strata.tolist(), labels.tolist()))
    assert (out != labels).any()
    # with the labels a function of the stratum, nothing can move
    fixed = strata % 2
    assert np.array_equal(routing.shuffle_within(fixed, strata, np.random.default_rng(2)), fixed)


def test_domain_experts_against_a_loop():
    rng = np.random.default_rng(3)
    share = rng.random((3, 8))
    share /= share.sum(axis=1, keepdims=True)
    got = routing.domain_experts(share, 2)
    for g in range(3):
        lift = [share[g, e] - np.mean([share[o, e] for o in range(3) if o != g]) for e in range(8)]
        assert sorted(got[g].tolist()) == sorted(np.argsort(lift)[::-1][:2].tolist())


def test_bootstrap_interval():
    assert routing.bootstrap_interval(np.full(10, 0.5)) == (0.5, 0.5)
    values = np.random.default_rng(4).normal(1.0, 2.0, 400)
    lo, hi = routing.bootstrap_interval(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))      # the normal-theory interval
    assert lo < values.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_shared_tokens_against_sets():
    tr = routing.TokenRouting(["a", "b", "c"], [0], np.array([0, 0, 1, 1, 2, 2]), np.array([5, 6, 5, 7, 7, 8]),
                              np.arange(6), np.zeros((1, 6, 2), int))
    by_group = {g: {t for t, gg in zip(tr.token_ids, tr.group) if gg == g} for g in range(3)}
    want = [sum(t in by_group[g] for g in range(3)) >= 2 for t in tr.token_ids]
    assert tr.shared().tolist() == want == [True, False, True, True, True, False]


@pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny model is not installed")
def test_token_routing_follows_the_trace():
    model = miniqwen3.load()
    tok = model.tokenizer
    groups = {"sums": [np.array(tok.encode("What is 12 + 30?")), np.array(tok.encode("9 + 9 = 18"))],
              "words": [np.array(tok.encode("The copy module makes shallow and deep copies."))]}
    tr = routing.token_routing(model, groups)
    assert tr.experts.shape == (len(model.config.moe_layers), tr.group.size, model.config.num_experts_per_tok)
    _, trace = model.trace(groups["words"][0])
    words = tr.group == 1
    for j, i in enumerate(tr.layers):
        assert np.array_equal(tr.experts[j][words], trace.layer(i).experts)
    g, t, e = tr.pairs(0)                               # one row per (token, slot)
    E = model.config.num_experts
    counts = np.zeros((2, E))
    np.add.at(counts, (g, e), 1)
    want = routing.domain_expert_share(tr.experts[0], tr.group, E, 2)
    assert np.allclose(counts / counts.sum(axis=1, keepdims=True), want)
    assert np.array_equal(t, np.repeat(tr.token_ids, tr.experts.shape[2]))


@pytest.mark.oracle
@pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny model is not installed")
def test_sequence_losses_against_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    model = miniqwen3.load()
    seqs = [np.array(model.tokenizer.encode("What is 12 + 30? 42")), np.array(model.tokenizer.encode("import copy"))]
    masks = [np.arange(len(seqs[0])) >= 5, None]
    masks[1] = np.ones(len(seqs[1]), bool)
    got = routing.sequence_losses(model, seqs, masks)
    for ids, mask, value in zip(seqs, masks, got):
        logits = torch.tensor(model.logits(ids)[:-1], dtype=torch.float64)
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none").numpy()
        assert value == pytest.approx(nll[mask[1:]].mean(), abs=1e-9)
    assert routing.sequence_losses(model, seqs)[1] == pytest.approx(got[1])
    with pytest.raises(ValueError, match="selects no predicted token"):
        routing.sequence_losses(model, seqs[:1], [np.zeros(len(seqs[0]), bool)])
