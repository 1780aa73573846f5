"""What the routers did: the routing trace, expert load, one token through a MoE layer step by step, and
routing statistics of groups of sequences (domains, languages).

The model records into a `RoutingTrace` when one is passed to `forward` (it calls `record` once per MoE layer
and call); routing is changed with `Model.routing(...)`. Everything here reads the model, none of it changes it.
The routing math itself is `ops.router`. Shape letters: see `miniqwen3.config` (L MoE layers traced,
N sequences, G groups).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import ops


# --- the trace -----------------------------------------------------------------------------------

@dataclass
class RouterRecord:
    """One MoE layer in one forward call."""
    layer: int
    positions: np.ndarray   # [T]
    token_ids: np.ndarray   # [T]
    logits: np.ndarray      # [T, E] router logits
    probs: np.ndarray       # [T, E] softmax over all experts
    experts: np.ndarray     # [T, K] chosen experts, most probable first
    weights: np.ndarray     # [T, K] their weights (renormalised when norm_topk_prob)


@dataclass
class RoutingTrace:
    """Router records of all MoE layers across forward calls (prefill, then each decoded token)."""
    records: list[RouterRecord] = field(default_factory=list)

    def record(self, rec: RouterRecord) -> None:
        self.records.append(rec)

    @property
    def layers(self) -> list[int]:
        return sorted({r.layer for r in self.records})

    def layer(self, i: int) -> RouterRecord:
        """All tokens seen by MoE layer i, concatenated in call order."""
        recs = [r for r in self.records if r.layer == i]
        if not recs:
            raise KeyError(f"no routing recorded for layer {i} (MoE layers traced: {self.layers})")
        return RouterRecord(i, *(np.concatenate([getattr(r, f) for r in recs])
                                 for f in ("positions", "token_ids", "logits", "probs", "experts", "weights")))

    def expert_counts(self, n_experts: int, keep: np.ndarray | None = None) -> np.ndarray:
        """(token, slot) assignments per traced layer and expert, over the tokens where keep [T] is true
        (all by default).  -> [L, E]"""
        rows = []
        for i in self.layers:
            experts = self.layer(i).experts
            rows.append(np.bincount((experts if keep is None else experts[keep]).ravel(), minlength=n_experts))
        return np.array(rows, np.float64)

    def expert_load(self, i: int) -> np.ndarray:
        """Fraction of (token, slot) assignments that went to each expert in layer i.  -> [E], sums to 1"""
        r = self.layer(i)
        return expert_load(r.experts, r.probs.shape[1])

    def clear(self) -> None:
        self.records.clear()


def expert_load(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """Share of all (token, slot) assignments that went to each expert.  experts: [T, K] -> [E], sums to 1"""
    counts = np.bincount(np.asarray(experts).ravel(), minlength=n_experts).astype(np.float64)
    return counts / counts.sum()


def first_choices(trace: RoutingTrace, layers=None) -> np.ndarray:
    """The first-choice expert of every token in every traced MoE layer.  -> [L, T]"""
    layers = trace.layers if layers is None else layers
    return np.stack([trace.layer(i).experts[:, 0] for i in layers])


# --- one token, step by step ---------------------------------------------------------------------

def moe_inputs(model, ids) -> dict:
    """The input x [T, H] of every MoE layer (after post_attention_layernorm) for one sequence: layer -> x."""
    inputs = {}
    with model.routing(inputs=inputs):
        model.forward(ids)
    return inputs


@dataclass
class RouterStep:
    """One token through one MoE layer, every intermediate kept."""
    layer: int
    position: int
    x: np.ndarray               # [H] the token's hidden state entering the MoE block
    logits: np.ndarray          # [E] x @ gate^T
    probs: np.ndarray           # [E] softmax over all experts
    experts: np.ndarray         # [K] top-k of probs
    chosen_probs: np.ndarray    # [K] their probabilities
    weights: np.ndarray         # [K] renormalised to sum 1 (when norm_topk_prob)
    expert_outputs: np.ndarray  # [K, H] each chosen expert's SwiGLU output
    output: np.ndarray          # [H] sum_k weights_k * expert_outputs_k
    block_output: np.ndarray    # [H] the model's MoE block (ops.moe_experts) on the same token, for checking


def router_step(model, ids, position: int, layer: int, inputs: dict | None = None) -> RouterStep:
    """Take token `position` of `ids` through the router and experts of MoE layer `layer`, step by step,
    with ops' functions. Pass `inputs` from `moe_inputs(model, ids)` to avoid a forward pass per call."""
    c = model.config
    if not c.is_sparse_layer(layer):
        raise ValueError(f"layer {layer} is not a MoE layer (MoE layers: {c.moe_layers})")
    inputs = inputs if inputs is not None else moe_inputs(model, ids)
    m = model.weights.layers[layer].mlp
    x = inputs[layer][position]
    logits = ops.linear(x[None], m.gate)                                          # [1, E]
    probs, experts, weights = ops.router(logits, c.num_experts_per_tok, c.norm_topk_prob)
    probs, experts, weights = probs[0], experts[0], weights[0]
    outs = np.stack([ops.swiglu(x[None], m.gate_proj[e], m.up_proj[e], m.down_proj[e])[0] for e in experts])
    block = ops.moe_experts(x[None], experts[None], weights[None], m.gate_proj, m.up_proj, m.down_proj)[0]
    return RouterStep(layer, position, x, logits[0], probs, experts, probs[experts], weights, outs,
                      (weights[:, None] * outs).sum(axis=0), block)


# --- consecutive tokens --------------------------------------------------------------------------

def repeat_rate(first: np.ndarray) -> np.ndarray:
    """Per layer, how often a token's first-choice expert is the previous token's.  first: [L, T] -> [L]"""
    return (first[:, 1:] == first[:, :-1]).mean(axis=1)


def chance_repeat_rate(first: np.ndarray, n_experts: int) -> np.ndarray:
    """The same if tokens picked independently with the observed first-choice frequencies q: sum_e q_e^2."""
    q = np.stack([np.bincount(f, minlength=n_experts) / len(f) for f in first])
    return (q ** 2).sum(axis=1)


def repeat_vs_chance(firsts, n_experts: int):
    """Pooled over sequences (each [L, T] first choices): per layer, the observed rate at which a token keeps the
    previous token's first-choice expert, and the rate expected by chance from the pooled frequencies.  -> [L], [L]"""
    same = np.concatenate([f[:, 1:] == f[:, :-1] for f in firsts], axis=1).mean(axis=1)
    return same, chance_repeat_rate(np.concatenate(list(firsts), axis=1), n_experts)


# --- groups of sequences -------------------------------------------------------------------------

def domain_expert_share(experts: np.ndarray, groups: np.ndarray, n_experts: int, n_groups: int) -> np.ndarray:
    """share[g, i]: of the assignments made by tokens of group g, the fraction that went to expert i.
    experts: [T, K], groups: [T] ints -> [G, E], each row sums to 1 (rows of absent groups are 0)."""
    counts = np.zeros((n_groups, n_experts))
    np.add.at(counts, (np.repeat(groups, experts.shape[1]), np.asarray(experts).ravel()), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def specialisation(share: np.ndarray) -> float:
    """Mutual information (bits) between a token's group and the expert it picks, groups weighted equally:
    the mean KL divergence of each group's expert share from the average share. 0 when every group uses the
    experts in the same proportions; log2(G) when each group has experts of its own.  share: [G, E]"""
    share = share[share.sum(axis=1) > 0]
    avg = share.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(share > 0, share * np.log2(share / avg), 0.0)
    return max(0.0, float(terms.sum(axis=1).mean()))     # never -0.0 from rounding


@dataclass
class GroupRouting:
    """Routing of groups of sequences (e.g. one group per language or domain), from `routing_by_group`."""
    names: list             # group names
    layers: list            # the MoE layers traced
    counts: np.ndarray      # [N, L, E] assignments per sequence, layer and expert
    group: np.ndarray       # [N] the group of each sequence
    first: dict             # name -> list of [L, T] first-choice experts, one per sequence

    def shares(self, group=None) -> dict:
        """layer -> [G, E]: the share of each group's assignments that went to each expert."""
        group = self.group if group is None else group
        per_group = np.stack([self.counts[group == g].sum(axis=0) for g in range(len(self.names))])   # [G, L, E]
        per_group = per_group / np.maximum(per_group.sum(axis=2, keepdims=True), 1)
        return {i: per_group[:, j] for j, i in enumerate(self.layers)}

    def shuffled_shares(self, seed: int = 0) -> dict:
        """The same with the sequences dealt to the groups at random (group sizes kept): what the shares look
        like when routing does not depend on the group, with this many tokens. The baseline for `specialisation`."""
        return self.shares(np.random.default_rng(seed).permutation(self.group))

    def bits(self, group=None) -> np.ndarray:
        """Per layer, the mutual information (bits) between a token's group and its expert (`specialisation`).
        -> [L]"""
        return np.array([specialisation(s) for s in self.shares(group).values()])

    def shuffled_bits(self, rounds: int = 20, seed: int = 0) -> np.ndarray:
        """`bits` with the sequences dealt to the groups at random, averaged over rounds: what sampling noise
        alone gives.  -> [L]"""
        rng = np.random.default_rng(seed)
        return np.mean([self.bits(rng.permutation(self.group)) for _ in range(rounds)], axis=0)


def routing_by_group(model, groups: dict, keep: dict | None = None) -> GroupRouting:
    """Trace every sequence of every group.  groups: name -> list of id sequences; keep: name -> list of [T]
    boolean masks, one per sequence, of the tokens to count (all by default)."""
    c = model.config
    counts, group, first = [], [], {}
    for g, (name, seqs) in enumerate(groups.items()):
        first[name] = []
        masks = (keep or {}).get(name) or [None] * len(seqs)
        for ids, mask in zip(seqs, masks):
            _, trace = model.trace(ids)
            counts.append(trace.expert_counts(c.num_experts, mask))
            group.append(g)
            first[name].append(first_choices(trace, c.moe_layers))
    return GroupRouting(list(groups), c.moe_layers, np.array(counts, dtype=np.float64), np.array(group), first)
