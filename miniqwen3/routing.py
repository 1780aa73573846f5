"""What the routers did: the routing trace, expert load, one token through a MoE layer step by step, routing
statistics of groups of sequences (domains, languages), and how much of a domain's routing is more than its tokens
(information with the token id held fixed; losses after removing experts, with bootstrap intervals).

The model records into a `RoutingTrace` when one is passed to `forward` (it calls `record` once per MoE layer
and call); routing is changed with `Model.routing(...)`. Everything here reads the model, none of it changes it
(`sequence_losses` runs under whatever overrides the caller has put in force). The routing math itself is
`ops.router`. Shape letters: see `miniqwen3.config` (L MoE layers traced,
N sequences, or tokens in `TokenRouting`; G groups; P (token, slot) pairs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import ops


# --- the trace -----------------------------------------------------------------------------------

class RouterDataAbsent(LookupError):
    """A view asked a routing trace for something its source did not record (e.g. router probabilities of a
    trace read from a serving engine, which returns expert ids only)."""


class Absent:
    """Stands in a `RouterRecord` for a field its source did not record. Any use of it as an array (its shape, an
    element, arithmetic, `np.asarray`) raises `RouterDataAbsent` with `why`, at the line that asked, instead of
    a TypeError from deep inside NumPy."""

    def __init__(self, field: str, why: str):
        self.field, self.why = field, why

    def _raise(self, *args, **kwargs):
        raise RouterDataAbsent(f"router {self.field} are absent from this trace: {self.why}")

    def __getattr__(self, name):
        if name.startswith("__") or name in ("field", "why"):
            raise AttributeError(name)
        self._raise()

    __array__ = __getitem__ = __len__ = __iter__ = _raise
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _raise
    __matmul__ = __rmatmul__ = __neg__ = __lt__ = __le__ = __gt__ = __ge__ = _raise

    def __repr__(self):
        return f"Absent({self.field!r}: {self.why})"


@dataclass
class RouterRecord:
    """One MoE layer in one forward call (or, for a trace read from a serving engine, one request).
    A field the source did not record is an `Absent`, which raises `RouterDataAbsent` when used."""
    layer: int
    positions: np.ndarray   # [T]
    token_ids: np.ndarray   # [T]
    logits: np.ndarray      # [T, E] router logits
    probs: np.ndarray       # [T, E] softmax over all experts
    experts: np.ndarray     # [T, K] chosen experts, most probable first
    weights: np.ndarray     # [T, K] their weights (renormalised when norm_topk_prob)


def _concatenate(values):
    """np.concatenate, or the first Absent when any of the values is one."""
    absent = [v for v in values if isinstance(v, Absent)]
    return absent[0] if absent else np.concatenate(values)


@dataclass
class RoutingTrace:
    """Router records of all MoE layers across forward calls (prefill, then each decoded token).
    n_experts: the number of experts per layer when the records cannot tell it (a trace of expert ids only);
    source: where the trace came from (a model's forward passes, or a serving engine's file)."""
    records: list[RouterRecord] = field(default_factory=list)
    n_experts: int | None = None
    source: str = "forward passes"

    @property
    def has_probabilities(self) -> bool:
        """False for a trace of expert ids only: router logits, probabilities and weights are `Absent`."""
        return not any(isinstance(r.probs, Absent) for r in self.records)

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
        return RouterRecord(i, *(_concatenate([getattr(r, f) for r in recs])
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
        return expert_load(r.experts, self.n_experts if self.n_experts is not None else r.probs.shape[1])

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


# --- domain or token? ----------------------------------------------------------------------------
# Domains differ in their tokens (arithmetic is digits and operators, code has keywords), so a router that looked only
# at the token id would still send each domain to experts of its own. These measures separate the two: the mutual
# information between domain and expert with the token id held fixed, and a baseline that keeps every token id's
# domain counts. Estimates are plug-in (from counts), each (token, slot) assignment one observation.

@dataclass
class TokenRouting:
    """Per-token routing of groups of sequences, from `token_routing`."""
    names: list             # group names
    layers: list            # the MoE layers traced
    group: np.ndarray       # [N] the group of each token (N tokens over all sequences)
    token_ids: np.ndarray   # [N]
    sequence: np.ndarray    # [N] which sequence it came from (numbered over all groups)
    experts: np.ndarray     # [L, N, K] chosen experts

    def pairs(self, j: int, keep: np.ndarray | None = None):
        """Layer index j's (group, token id, expert) of every (token, slot) assignment, over the tokens where
        keep [N] is true.  -> three [P] arrays"""
        keep = np.ones(len(self.group), bool) if keep is None else keep
        k = self.experts.shape[2]
        return (np.repeat(self.group[keep], k), np.repeat(self.token_ids[keep], k), self.experts[j][keep].ravel())

    def shared(self, min_groups: int = 2) -> np.ndarray:
        """[N] true for tokens whose id occurs in at least `min_groups` groups."""
        ids, inverse = np.unique(self.token_ids, return_inverse=True)
        seen = np.zeros((len(ids), len(self.names)), bool)
        seen[inverse, self.group] = True
        return seen.sum(axis=1)[inverse] >= min_groups


def token_routing(model, groups: dict) -> TokenRouting:
    """Trace every sequence of every group (name -> list of id sequences) and keep each token's experts."""
    c = model.config
    group, ids, seq, experts = [], [], [], []
    for g, seqs in enumerate(groups.values()):
        for s in seqs:
            _, trace = model.trace(s)
            experts.append(np.stack([trace.layer(i).experts for i in c.moe_layers]))    # [L, T, K]
            group.append(np.full(len(s), g))
            ids.append(np.asarray(s))
            seq.append(np.full(len(s), len(seq)))
    return TokenRouting(list(groups), c.moe_layers, np.concatenate(group), np.concatenate(ids),
                        np.concatenate(seq), np.concatenate(experts, axis=1))


def _entropy(*columns) -> float:
    """Plug-in entropy (bits) of the joint distribution of equal-length integer columns."""
    _, counts = np.unique(np.stack(columns), axis=1, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mutual_information(x, y) -> float:
    """I(X; Y) = H(X) + H(Y) - H(X, Y) in bits, from paired samples x, y: [P] ints."""
    return max(0.0, _entropy(x) + _entropy(y) - _entropy(x, y))


def conditional_mutual_information(x, y, z) -> float:
    """I(X; Y | Z) = H(X, Z) + H(Y, Z) - H(X, Y, Z) - H(Z) in bits: the information between x and y left when z is
    known, the average over the values of z of I(X; Y) among the samples with that z (weighted by their count).
    Values of z met with one x only add nothing.  x, y, z: [P] ints"""
    return max(0.0, _entropy(x, z) + _entropy(y, z) - _entropy(x, y, z) - _entropy(z))


def shuffle_within(labels, strata, rng: np.random.Generator) -> np.ndarray:
    """labels permuted at random among the samples of each stratum (e.g. domains among the occurrences of each
    token id): what the labels look like if they told nothing beyond the stratum.  labels, strata: [P]"""
    labels, strata = np.asarray(labels), np.asarray(strata)
    out = labels.copy()
    order = np.argsort(strata, kind="stable")
    bounds = np.flatnonzero(np.diff(strata[order])) + 1
    for block in np.split(order, bounds):
        out[block] = labels[rng.permutation(block)]
    return out


def domain_experts(share: np.ndarray, n: int) -> np.ndarray:
    """Per group, the n experts whose share in that group exceeds their mean share in the other groups the most.
    share: [G, E] (from `domain_expert_share`) -> [G, n]"""
    G = len(share)
    others = (share.sum(axis=0, keepdims=True) - share) / max(G - 1, 1)
    return np.argsort(-(share - others), axis=1, kind="stable")[:, :n]


def sequence_losses(model, sequences, masks=None) -> np.ndarray:
    """Mean next-token cross-entropy (nats) of each sequence, with the routing overrides in force, over the tokens
    t >= 1 where masks[n][t] is true (the tokens a model was trained to predict, e.g. a reply; all by default).
    sequences: N id arrays [T]; masks: N boolean arrays [T] or None  -> [N]"""
    out = []
    for n, ids in enumerate(sequences):
        ids = np.asarray(ids)
        nll = next_token_nll(model.logits(ids), ids)
        keep = np.ones(len(ids) - 1, bool) if masks is None else np.asarray(masks[n], bool)[1:]
        if not keep.any():
            raise ValueError(f"sequence {n}: its mask selects no predicted token")
        out.append(nll[keep].mean())
    return np.array(out)


def next_token_nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Cross-entropy (nats) of each next token: -log softmax(logits[t])[ids[t + 1]], in float64.
    logits: [T, V] of the sequence ids [T]  -> [T-1]"""
    z = logits[:-1].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(ids) - 1), np.asarray(ids)[1:]]


def bootstrap_interval(values, rounds: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of values [N] (resampling the N values)."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (rounds, len(values)))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))
