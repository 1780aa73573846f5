"""Expert pruning (miniqwen3/pruning.py) on the small MoE parity fixture (3 MoE layers, 8 experts, top-2): the
least-used choice, the parameters removed against the arrays themselves, the reply-exact score against a greedy
generation, and a sweep whose pruned experts are never chosen."""
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3 import pruning

MOE = Path(__file__).parent / "fixtures" / "parity" / "moe_topk_norm"


@pytest.fixture(scope="module")
def moe():
    return miniqwen3.load(MOE)


def test_least_used_and_random():
    counts = {0: np.array([5, 0, 3, 0, 9]), 2: np.array([1, 1, 1, 0, 2])}
    assert pruning.least_used(counts, 2) == {0: [1, 3], 2: [0, 3]}        # ties go to the lower id
    r = pruning.random_experts(5, [0, 2], 3, seed=1)
    assert all(len(set(v)) == 3 and max(v) < 5 for v in r.values()) and r == pruning.random_experts(5, [0, 2], 3, 1)


def test_memory_saved_counts_the_dropped_arrays(moe):
    drop = {0: [1, 6], 2: [3]}
    mem = pruning.memory_saved(moe.config, drop)
    by_hand = 0
    for layer, experts in drop.items():
        m = moe.weights.layers[layer].mlp
        by_hand += sum(w[e].size for e in experts for w in (m.gate_proj, m.up_proj, m.down_proj)) + \
            sum(m.gate[e].size for e in experts)
    assert mem["parameters"] == by_hand
    stored = sum(a.size for a in _arrays(moe.weights))
    assert mem["total"] == stored and mem["share"] == pytest.approx(by_hand / stored)


def _arrays(obj, seen=None):
    """Every distinct weight array of the model (the tied head counted once)."""
    seen = set() if seen is None else seen
    if isinstance(obj, np.ndarray):
        if id(obj) not in seen:
            seen.add(id(obj))
            yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _arrays(x, seen)
    elif hasattr(obj, "__dict__"):
        for x in vars(obj).values():
            yield from _arrays(x, seen)


def test_reply_exact_is_greedy_decoding(moe):
    prompt = [3, 17, 42, 99, 5]
    ids = list(prompt)
    for _ in range(6):                                     # greedy continuation, one full forward per token
        ids.append(int(moe.logits(np.array(ids))[-1].argmax()))
    mask = np.array([False] * len(prompt) + [True] * 6)
    s = pruning.scores(moe, [np.array(ids)], [mask])
    assert s.exact.tolist() == [True]
    logits = moe.logits(np.array(ids))[:-1].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    want = -np.mean([logp[t - 1, ids[t]] for t in range(len(prompt), len(ids))])
    assert s.loss[0] == pytest.approx(want, rel=1e-6)
    other = list(ids)
    other[-3] = (other[-3] + 1) % moe.config.vocab_size    # one reply token that greedy would not write
    assert pruning.scores(moe, [np.array(other)], [mask]).exact.tolist() == [False]
    assert pruning.scores(moe, [np.array(other)], [np.r_[mask[:-3], False, False, False]]).exact.tolist() == [True]


def test_usage_and_sweep(moe):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, moe.config.vocab_size, 20) for _ in range(3)]
    masks = [np.arange(20) >= 5] * 3
    counts = pruning.usage(moe, seqs, masks)
    manual = sum(np.stack([np.bincount(moe.trace(s)[1].layer(i).experts[5:].ravel(), minlength=8)
                           for i in moe.config.moe_layers]) for s in seqs)
    np.testing.assert_array_equal(np.stack(list(counts.values())), manual)
    sweep = pruning.prune_sweep(moe, counts, {"random text": seqs}, [0, 3])
    np.testing.assert_allclose(sweep[0]["random text"].loss, pruning.scores(moe, seqs).loss)
    drop = sweep[3]["drop"]
    assert drop == pruning.least_used(counts, 3)
    with moe.routing(drop=drop):
        for s in seqs:
            _, trace = moe.trace(s)
            for i in moe.config.moe_layers:
                assert not set(trace.layer(i).experts.ravel()) & set(drop[i])
    assert not np.allclose(sweep[3]["random text"].loss, sweep[0]["random text"].loss)
