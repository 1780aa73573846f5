"""Expert pruning: remove each MoE layer's least-used experts, counted on one split of texts, and measure what it
costs on another split, against the memory it saves.

The review of the Qwen3 report lists pruning among the "greener MoE" ideas (store and load fewer experts). Here a
pruned expert is one the router can never choose: its router logit is -inf before the softmax, so the softmax and
the top-k renormalise over the experts left, which is what deleting the expert's weights and its router row from
the checkpoint does (`Model.routing(drop=...)` and `ops.router(drop=...)`; `tests/test_viz_widgets.py` checks drop against
transformers on a copy of a checkpoint with those experts' router rows and weights deleted). The model is not
edited: the drop is in force inside the `with` block only.

Memory: each expert is a SwiGLU of 3 x H x moe_intermediate_size parameters (gate, up, down); the router row of a
pruned expert ([H]) goes too. `memory_saved` counts both against the model's total parameters (`sizes`).

Quality, on texts that played no part in choosing the experts:
- loss: mean next-token cross-entropy per sequence (over the reply tokens of a conversation, as in training);
- reply exact: whether the model's greedy choice is the reference token at every reply position, given the
  reference before it (one forward pass). By induction that is exactly "greedy decoding from the prompt writes the
  reference reply, reasoning and answer": a lower bound on answer accuracy (a reply that reasons differently but
  lands on the right number counts as wrong).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import routing
from .sizes import parameter_split, totals


def usage(model, sequences, masks=None) -> dict:
    """Assignments per expert in every MoE layer, over the tokens where masks[n] is true (all by default):
    layer -> [E] counts."""
    c = model.config
    counts = np.zeros((len(c.moe_layers), c.num_experts))
    for n, ids in enumerate(sequences):
        _, trace = model.trace(ids)
        counts += trace.expert_counts(c.num_experts, None if masks is None or masks[n] is None
                                      else np.asarray(masks[n], bool))
    return dict(zip(c.moe_layers, counts))


def least_used(counts: dict, n: int) -> dict:
    """Per layer, the n experts with the fewest assignments (ties: the lower id): layer -> [n] ids, for
    `model.routing(drop=...)`."""
    return {layer: sorted(int(e) for e in np.argsort(c, kind="stable")[:n]) for layer, c in counts.items()}


def random_experts(n_experts: int, layers, n: int, seed: int) -> dict:
    """n random experts per layer (a control for `least_used`)."""
    rng = np.random.default_rng(seed)
    return {layer: sorted(int(e) for e in rng.choice(n_experts, n, replace=False)) for layer in layers}


def memory_saved(config, drop: dict) -> dict:
    """Parameters removed by dropping the experts in `drop` (their SwiGLU weights and router rows), and their
    share of the model's total."""
    per_expert = 3 * config.hidden_size * config.moe_intermediate_size + config.hidden_size
    removed = per_expert * sum(len(set(v)) for v in drop.values())
    total = totals(parameter_split(config))["total"]
    return {"parameters": removed, "share": removed / total, "total": total}


@dataclass
class Scores:
    """Per evaluation sequence: mean loss (nats) over its scored tokens, and whether greedy decoding reproduces
    every scored token (see the module docstring)."""
    loss: np.ndarray    # [N]
    exact: np.ndarray   # [N] bool


def scores(model, sequences, masks=None) -> Scores:
    """Loss and reply-exactness of each sequence under the routing overrides in force.  sequences: N id arrays;
    masks: N boolean arrays [T] (the tokens to score, e.g. a reply) or None for all tokens after the first."""
    loss, exact = [], []
    for n, ids in enumerate(sequences):
        ids = np.asarray(ids)
        logits = model.logits(ids)                                           # [T, V]; row t predicts ids[t + 1]
        nll = routing.next_token_nll(logits, ids)
        keep = np.ones(len(ids) - 1, bool) if masks is None or masks[n] is None else np.asarray(masks[n], bool)[1:]
        if not keep.any():
            raise ValueError(f"sequence {n}: its mask selects no predicted token")
        loss.append(nll[keep].mean())
        exact.append(bool((logits[:-1].argmax(axis=1) == ids[1:])[keep].all()))
    return Scores(np.array(loss), np.array(exact))


def prune_sweep(model, counts: dict, evaluation: dict, ns, masks: dict | None = None, order: str = "least",
                seed: int = 0) -> dict:
    """For each n in ns, drop n experts per layer (the least used by `counts`, or random ones with order="random")
    and score every evaluation group: n -> {"drop": {layer: ids}, "memory": memory_saved(...),
    group -> Scores}. evaluation: group -> sequences; masks: group -> their masks (or None)."""
    c = model.config
    out = {}
    for n in ns:
        drop = least_used(counts, n) if order == "least" else random_experts(c.num_experts, c.moe_layers, n, seed)
        row = {"drop": drop, "memory": memory_saved(c, drop)}
        with model.routing(drop=drop):
            for name, seqs in evaluation.items():
                row[name] = scores(model, seqs, (masks or {}).get(name))
        out[n] = row
    return out
