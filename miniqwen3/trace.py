"""Routing trace: what the router of every MoE layer did for every token, recorded without touching
the model code (the model calls `record` when a trace is passed to `forward`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def expert_load(self, i: int) -> np.ndarray:
        """Fraction of (token, slot) assignments that went to each expert in layer i.  -> [E], sums to 1"""
        r = self.layer(i)
        counts = np.bincount(r.experts.ravel(), minlength=r.probs.shape[1])
        return counts / counts.sum()

    def clear(self) -> None:
        self.records.clear()
