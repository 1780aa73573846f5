"""Expert-cache simulation (miniqwen3/expert_cache.py): Belady against every possible eviction sequence on small
traces, LRU and LFU against cases worked by hand, Belady never below LRU or LFU, the C/E closed form on uniform
random routing, prefetching with perfect guesses, and the next-layer guesses against the model's own routing."""
import functools
import itertools
from pathlib import Path

import numpy as np
import pytest

from miniqwen3 import expert_cache as ec

TINY = Path(__file__).resolve().parent.parent / "miniqwen3" / "data" / "tiny" / "config.json"


def brute_force_min_misses(needed, capacity):
    """The fewest misses of any demand cache: at every step, every choice of which cached experts (not needed by
    the step) to evict for the step's misses, searched exhaustively."""
    needed = [frozenset(int(e) for e in row) for row in needed]

    @functools.lru_cache(maxsize=None)
    def best(t, cache):
        if t == len(needed):
            return 0
        need = needed[t]
        missing = need - cache
        overflow = len(cache) + len(missing) - capacity
        if overflow <= 0:
            return len(missing) + best(t + 1, cache | need)
        return len(missing) + min(best(t + 1, (cache - set(victims)) | need)
                                  for victims in itertools.combinations(sorted(cache - need), overflow))
    return best(0, frozenset())


def random_steps(rng, T, E, K):
    return np.array([rng.choice(E, K, replace=False) for _ in range(T)])


@pytest.mark.parametrize("seed", range(40))
def test_belady_is_the_optimum_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    E, K = int(rng.integers(3, 7)), int(rng.integers(1, 3))
    needed = random_steps(rng, int(rng.integers(4, 10)), E, K)
    capacity = int(rng.integers(K, E))
    result = ec.simulate(needed, capacity, "belady")
    assert int(result.misses.sum()) == brute_force_min_misses(needed, capacity)


@pytest.mark.parametrize("seed", range(10))
def test_belady_is_never_below_lru_or_lfu(seed):
    rng = np.random.default_rng(100 + seed)
    E, K = 12, 3
    needed = random_steps(rng, 200, E, K) if seed % 2 else np.array(
        [rng.choice(E, K, replace=False, p=np.r_[np.full(4, 0.2), np.full(8, 0.025)]) for _ in range(200)])
    for capacity in range(K, E + 1):
        rates = {p: ec.simulate(needed, capacity, p).hit_rate for p in ec.POLICIES}
        assert rates["belady"] >= rates["lru"] and rates["belady"] >= rates["lfu"], (capacity, rates)
    full = ec.simulate(needed, E, "lru")                 # every expert fits: only first uses miss
    assert full.misses.sum() == len(np.unique(needed))


def test_lru_and_lfu_by_hand():
    # one expert per token, cache of 2. 0 0 1 2 0:
    #   LRU: at 2 it evicts 0 (last used at step 1; 1 at step 2), so the final 0 misses: 1 hit.
    #   LFU: at 2 it evicts 1 (used once; 0 twice), so the final 0 hits: 2 hits. Belady: also evicts 1 (never again).
    seq = np.array([[0], [0], [1], [2], [0]])
    assert ec.simulate(seq, 2, "lru").hits.tolist() == [0, 1, 0, 0, 0]
    assert ec.simulate(seq, 2, "lfu").hits.tolist() == [0, 1, 0, 0, 1]
    assert ec.simulate(seq, 2, "belady").hits.tolist() == [0, 1, 0, 0, 1]
    # the cyclic worst case of LRU: 0 1 2 0 1 2 with room for 2: every access misses; Belady keeps one of them
    cyc = np.array([[0], [1], [2], [0], [1], [2]])
    assert ec.simulate(cyc, 2, "lru").hits.sum() == 0
    assert ec.simulate(cyc, 2, "belady").hits.tolist() == [0, 0, 0, 1, 0, 1]
    # two experts per token, room for 3: {0,1} {2,3} {0,1}. Step 1 loads 2, then 3 evicts 0 (0 and 1 were used in
    # the same step; the lower id goes first); step 2 hits 1 and loads 0 over 2 (tie with 3 again): 1 hit in 6.
    pairs = np.array([[0, 1], [2, 3], [0, 1]])
    r = ec.simulate(pairs, 3, "lru")
    assert (r.hits.tolist(), r.misses.tolist()) == ([0, 0, 1], [2, 2, 1])
    assert r.hit_rate == pytest.approx(1 / 6)


def test_uniform_routing_hits_c_over_e():
    rng = np.random.default_rng(7)
    E, K = 16, 2
    needed = random_steps(rng, 4000, E, K)
    for policy in ("lru", "lfu"):
        for capacity in (4, 8, 12):
            rate = ec.simulate(needed, capacity, policy).hit_rate
            assert abs(rate - ec.uniform_hit_rate(capacity, E)) < 0.03, (policy, capacity, rate)


def test_prefetch_with_perfect_guesses_never_misses():
    rng = np.random.default_rng(3)
    needed = random_steps(rng, 300, 10, 2)
    plain, perfect = ec.simulate(needed, 4, "lru"), ec.simulate(needed, 4, "lru", prefetch=needed)
    assert perfect.misses.sum() == 0 and perfect.hit_rate == 1.0
    assert perfect.prefetched.sum() == plain.misses.sum()          # the same loads, made ahead of time
    wrong = ec.simulate(needed, 4, "lru", prefetch=(needed + 5) % 10)   # guesses that are never right
    assert wrong.hit_rate < plain.hit_rate
    with pytest.raises(ValueError, match="capacity 1: a step needs 2"):
        ec.simulate(needed, 1, "lru")
    with pytest.raises(ValueError, match="LRU evictions only"):
        ec.simulate(needed, 4, "belady", prefetch=needed)


def test_hit_rate_interval():
    needed = np.array([[0], [1], [0], [1]] * 10)
    r = ec.simulate(needed, 2, "lru")
    lo, hi = ec.hit_rate_interval(r, [4] * 10)
    assert lo <= r.hit_rate <= hi
    # two sequences of 4 steps of expert 0: the first misses once (3/4), the second never (4/4); resampling the two
    # gives 3/4 (both first, a quarter of the rounds), 7/8 or 1: the interval runs from 0.75 to 1
    assert ec.hit_rate_interval(ec.simulate(np.array([[0]] * 8), 1, "lru"), [4, 4]) == (0.75, 1.0)
    with pytest.raises(ValueError, match="lengths sum to 5"):
        ec.hit_rate_interval(r, [5])
    # paired difference: the same resampled sequences for both. With room for 1, alternating 0 and 1 never hit, so
    # the difference is the first result's own rate on every resample: the same interval as hit_rate_interval's
    one = ec.simulate(needed, 1, "lru")
    assert one.hits.sum() == 0
    assert ec.hit_rate_difference_interval(r, one, [4] * 10) == pytest.approx(ec.hit_rate_interval(r, [4] * 10))
    lo, hi = ec.hit_rate_difference_interval(r, r, [4] * 10)
    assert lo == hi == 0.0


@pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny model is not installed")
def test_next_layer_guesses_use_the_right_router_and_input():
    import miniqwen3
    model = miniqwen3.load()
    ids = np.array(model.tokenizer.encode("What is 457 + 385? /think"))
    _, trace = model.trace(ids)
    own = ec.next_layer_guesses(model, ids, lag=0)            # each layer's router on its own input
    for layer in model.config.moe_layers:
        np.testing.assert_array_equal(own[layer], trace.layer(layer).experts)
    early = ec.next_layer_guesses(model, ids)
    assert sorted(early) == model.config.moe_layers[1:]
    overlap = ec.guess_overlap(early[1], trace.layer(1).experts)
    assert 0.0 <= overlap <= 1.0 and overlap != ec.guess_overlap(own[1], trace.layer(1).experts)


def test_batch_steps_need_the_union_of_a_batch():
    from miniqwen3.routing import RouterRecord, RoutingTrace
    trace = RoutingTrace(n_experts=6)
    for experts in ([[0, 1], [1, 2]], [[3, 4]], [[0, 2], [5, 0]]):      # three forward passes of one layer
        e = np.array(experts)
        trace.record(RouterRecord(0, np.arange(len(e)), np.arange(len(e)), None, None, e, None))
    steps = ec.batch_steps(trace, 0)
    assert steps == [[0, 1, 2], [3, 4], [0, 2, 5]]
    # room for 4: pass 2 loads 3, then 4 over 0 (0, 1, 2 were used in the same pass; the lower id goes); pass 3 hits
    # 2, loads 0 over 1 (least recent) and 5 over 3 (3 and 4 tie): 1 hit of 8
    r = ec.simulate(steps, 4, "lru")
    assert (r.hits.tolist(), r.misses.tolist()) == ([0, 0, 1], [3, 2, 2])
    with pytest.raises(ValueError, match="capacity 2: a step needs 3"):
        ec.simulate(steps, 2, "belady")
