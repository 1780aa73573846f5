"""Expert caches: how often the experts a token needs are already in memory, for a cache of C experts per layer.

A MoE model whose experts do not all fit in fast memory keeps C of each layer's E experts there and loads the rest
on demand (Mixtral-offloading, Eliseev & Mazur 2023, arXiv 2312.17238: an LRU cache of experts per layer, and
speculative loading of the next layer's experts by applying that layer's router to the current hidden state).
This module simulates such caches on a routing trace, one layer at a time:

- the trace of one MoE layer is a sequence of steps, one per token, each the set of K experts the token needs
  (`steps(trace, layer)`); all K must be in memory together, so a cache holds C >= K experts;
- at a step, each needed expert that is cached is a hit, each other one a miss that loads it, evicting (when the
  cache is full) an expert the step does not need, chosen by the policy:
    LRU    the one used least recently (ties, i.e. used in the same step: the lower id);
    LFU    the one used least often since the trace began (ties: least recently used, then the lower id);
    Belady the one whose next use is farthest in the future (never used again first; ties: the lower id): the
           offline optimum (Belady 1966), which knows the future; no policy has fewer misses, and no real one
           gets there. `tests/test_expert_cache.py` checks it against every possible eviction sequence;
- prefetch: before a token reaches layer l, the experts its hidden state at the previous MoE layer would choose
  under layer l's router are loaded (LRU evictions); loads made ahead of time are counted apart from misses (they
  can overlap the previous layer's compute; a miss stalls it). Needs the model (`next_layer_guesses`).

The hit rate is hits / (K x steps). If tokens chose their K experts uniformly at random and independently of the
past, any cache that does not see the future would hit C/E of the time (the next step is independent of what the
cache holds): `uniform_hit_rate`, the line a policy has to beat by exploiting reuse.
Shape letters as in `miniqwen3.config`: T steps (tokens), K experts per token, E experts, C cache size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops, routing

POLICIES = ("lru", "lfu", "belady")


@dataclass
class CacheResult:
    """One simulation: per step, the needed experts that were cached (hits), loaded on demand (misses), and
    loaded ahead of the step by prefetching."""
    policy: str
    capacity: int
    hits: np.ndarray        # [T]
    misses: np.ndarray      # [T]
    prefetched: np.ndarray  # [T] loads made before the step (0 without prefetching)

    @property
    def hit_rate(self) -> float:
        return float(self.hits.sum() / max(self.hits.sum() + self.misses.sum(), 1))

    @property
    def loads(self) -> int:
        """Experts moved into the cache in all: misses plus prefetches (the bytes a cache size costs)."""
        return int(self.misses.sum() + self.prefetched.sum())


def steps(trace: routing.RoutingTrace, layer: int) -> np.ndarray:
    """The experts each token needs in one MoE layer, in the trace's order (forward calls or requests, one after
    the other).  -> [T, K]"""
    return np.asarray(trace.layer(layer).experts)


def batch_steps(trace: routing.RoutingTrace, layer: int) -> list[list[int]]:
    """One step per record of the layer (a forward call, or a request or forward pass of a serving trace): the
    union of the experts its tokens need, which must all be in memory for that batch. A cache then needs room for
    the largest union.  -> a list of expert-id lists (of different lengths)"""
    return [sorted(set(np.asarray(r.experts).ravel().tolist())) for r in trace.records if r.layer == layer]


def uniform_hit_rate(capacity: int, n_experts: int) -> float:
    """The hit rate of any non-clairvoyant cache of C experts when every token's K experts are a uniform random
    choice, independent of the past: C / E."""
    return capacity / n_experts


def simulate(needed, capacity: int, policy: str = "lru", prefetch=None) -> CacheResult:
    """Run a cache of `capacity` experts over the steps.  needed: [T, K] expert ids, or a list of T id lists of any
    lengths (`batch_steps`); prefetch: [T, K'] experts loaded before step t (LRU only; None: no prefetching)."""
    needed = [list(dict.fromkeys(int(e) for e in row)) for row in needed]
    if policy not in POLICIES:
        raise ValueError(f"policy {policy!r}: expected one of {POLICIES}")
    K = max((len(s) for s in needed), default=0)
    if capacity < K:
        raise ValueError(f"capacity {capacity}: a step needs {K} experts in memory at once")
    if prefetch is not None and policy != "lru":
        raise ValueError("prefetching is simulated with LRU evictions only")
    T = len(needed)
    next_use = _next_uses(needed) if policy == "belady" else None
    cache, last, count = set(), {}, {}
    hits, misses, pre = np.zeros(T, np.int64), np.zeros(T, np.int64), np.zeros(T, np.int64)

    def evict(t, keep):
        candidates = [e for e in cache if e not in keep]
        if policy == "lru":
            victim = min(candidates, key=lambda e: (last[e], e))
        elif policy == "lfu":
            victim = min(candidates, key=lambda e: (count.get(e, 0), last[e], e))
        else:
            victim = min(candidates, key=lambda e: (-next_use[t].get(e, T), e))
        cache.remove(victim)

    for t, need in enumerate(needed):
        if prefetch is not None:
            guess = list(dict.fromkeys(int(e) for e in prefetch[t]))[:capacity]
            for e in guess:
                if e not in cache:
                    if len(cache) >= capacity:
                        evict(t, set(guess))
                    cache.add(e)
                    pre[t] += 1
                last[e] = t - 0.5                   # loaded for this step: more recent than anything before it
        keep = set(need)
        for e in need:
            if e in cache:
                hits[t] += 1
            else:
                if len(cache) >= capacity:
                    evict(t, keep)
                cache.add(e)
                misses[t] += 1
        for e in need:
            last[e] = t
            count[e] = count.get(e, 0) + 1
    return CacheResult(policy, capacity, hits, misses, pre)


def _next_uses(needed: list) -> list[dict]:
    """next_use[t][e]: the first step after t that needs expert e (absent: never again)."""
    out, upcoming = [None] * len(needed), {}
    for t in range(len(needed) - 1, -1, -1):
        out[t] = dict(upcoming)
        for e in needed[t]:
            upcoming[e] = t
    return out


def hit_rates(needed, capacities, policies=POLICIES) -> dict:
    """policy -> {capacity: hit rate} over the same steps."""
    return {p: {c: simulate(needed, c, p).hit_rate for c in capacities} for p in policies}


def _per_sequence(result: CacheResult, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Hits and accesses of each sequence (lengths: their steps, in order)."""
    bounds = np.cumsum([0, *lengths])
    if bounds[-1] != len(result.hits) or not len(lengths):
        raise ValueError(f"lengths sum to {bounds[-1]}, the result has {len(result.hits)} steps")
    return (np.add.reduceat(result.hits, bounds[:-1]),
            np.add.reduceat(result.hits + result.misses, bounds[:-1]))


def hit_rate_interval(result: CacheResult, lengths, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the hit rate, resampling whole sequences (lengths: their steps, in order), since
    tokens of one sequence are not independent. The cache state carried from one sequence into the next is kept
    as simulated, so this is the spread over which texts were served, not over cache histories."""
    h, a = _per_sequence(result, lengths)
    pick = np.random.default_rng(seed).integers(0, len(h), (rounds, len(h)))
    rates = h[pick].sum(axis=1) / np.maximum(a[pick].sum(axis=1), 1)
    return float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))


def hit_rate_difference_interval(first: CacheResult, second: CacheResult, lengths, rounds: int = 2000,
                                 seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of first.hit_rate - second.hit_rate over the same steps, the same sequences resampled
    for both (paired)."""
    (h1, a1), (h2, a2) = _per_sequence(first, lengths), _per_sequence(second, lengths)
    pick = np.random.default_rng(seed).integers(0, len(h1), (rounds, len(h1)))
    d = h1[pick].sum(axis=1) / np.maximum(a1[pick].sum(axis=1), 1) - h2[pick].sum(axis=1) / np.maximum(a2[pick].sum(axis=1), 1)
    return float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def next_layer_guesses(model, ids, lag: int = 1) -> dict:
    """For every MoE layer after the first `lag`, the experts its router would choose from each token's input to
    the MoE layer `lag` places earlier (lag 1: the hidden state known one layer early, Mixtral-offloading's
    speculative loading; lag 0: the layer's own input, which gives the model's own choices):  layer -> [T, K]."""
    c = model.config
    inputs = routing.moe_inputs(model, ids)                       # layer -> x [T, H] entering its MoE block
    layers = c.moe_layers
    out = {}
    for prev, layer in zip(layers, layers[lag:]):
        logits = ops.linear(inputs[prev], model.weights.layers[layer].mlp.gate)      # [T, E]: layer's router, early x
        _, experts, _ = ops.router(logits, c.num_experts_per_tok, c.norm_topk_prob)
        out[layer] = experts
    return out


def guess_overlap(guess: np.ndarray, needed: np.ndarray) -> float:
    """Share of the needed experts that were guessed: mean over tokens of |guess & needed| / K."""
    return float(np.mean([len(set(g) & set(n)) / len(n) for g, n in zip(guess, needed)]))
