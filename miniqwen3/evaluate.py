"""Measuring a model: next-token loss with the router changed, accuracy against the thinking budget, whether a
reply follows the /think and /no_think flags, the steps of the budget counter, and timing. Used by the notebooks
and by scripts/evaluate_tiny.py alike.
"""
from __future__ import annotations

import time

import numpy as np


# --- loss ----------------------------------------------------------------------------------------

def mean_loss(model, sequences) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of the sequences."""
    total, count = 0.0, 0
    for ids in sequences:
        ids = np.asarray(ids)
        logits = model.logits(ids)[:-1].astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        total -= logp[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    return total / count


def loss_vs_top_k(model, sequences, ks) -> dict:
    """Mean loss with k experts per token at inference: k -> loss."""
    out = {}
    for k in ks:
        with model.routing(top_k=k):
            out[k] = mean_loss(model, sequences)
    return out


def expert_loads(model, sequences) -> dict:
    """Share of assignments per expert in every MoE layer over the sequences: layer -> [E]."""
    counts = 0
    for ids in sequences:
        _, trace = model.trace(ids)
        counts = counts + trace.expert_counts(model.config.num_experts)
    return {i: c / c.sum() for i, c in zip(model.config.moe_layers, counts)}


def loss_vs_dropped(model, sequences, loads: dict, counts, order: str = "most") -> dict:
    """Mean loss after removing, in every MoE layer, its n most used (order="most"), least used ("least")
    or n random experts ("random", seed 0): n -> loss. loads: from `expert_loads`."""
    rng = np.random.default_rng(0)
    out = {}
    for n in counts:
        drop = {}
        for i, load in loads.items():
            ranked = np.argsort(-load, kind="stable") if order == "most" else \
                np.argsort(load, kind="stable") if order == "least" else rng.permutation(len(load))
            drop[i] = [int(e) for e in ranked[:n]]
        with model.routing(drop=drop):
            out[n] = mean_loss(model, sequences)
    return out


# --- the thinking budget -------------------------------------------------------------------------

def budget_runs(model, prompt, budgets, max_new_tokens: int = 128, **options) -> dict:
    """Generations of one prompt at each thinking budget: budget (None = unlimited) -> GenerationResult.
    With deterministic decoding (temperature=0, or a seed) a run whose unlimited thinking is shorter than B never
    meets the budget, so it is the unlimited run token for token: that run is reused."""
    deterministic = options.get("temperature") == 0 or options.get("seed") is not None
    runs = {}
    if deterministic:
        runs[None] = model.generate(prompt, budget=None, max_new_tokens=max_new_tokens, **options)
    for b in budgets:
        if b not in runs:
            free = runs.get(None)
            reuse = free is not None and b is not None and free.thinking_tokens < b
            runs[b] = free if reuse else model.generate(prompt, budget=b, max_new_tokens=max_new_tokens, **options)
    return {b: runs[b] for b in budgets}


def accuracy_vs_budget(model, questions, expected, budgets, parse, max_new_tokens: int = 128, **options) -> dict:
    """Share of questions answered correctly at each budget: budget -> accuracy.
    questions: messages (or strings); expected: the right answers; parse: answer text -> value or None."""
    right = dict.fromkeys(budgets, 0)
    for q, want in zip(questions, expected):
        for b, r in budget_runs(model, q, budgets, max_new_tokens, **options).items():
            right[b] += parse(r.answer) == want
    return {b: n / len(questions) for b, n in right.items()}


def follows_flag(model, messages, want_thinking: bool, max_new_tokens: int = 128, **options) -> dict:
    """ThinkFollow for one conversation through the soft switch (the template as written, no enable_thinking: the
    model decides): the reply opens and closes the think block, and the block is non-empty for /think, empty for
    /no_think. want_thinking: the mode the last flag asks for (`miniqwen3.chat.resolve_thinking`)."""
    tok = model.tokenizer
    r = model.generate(messages, max_new_tokens=max_new_tokens, **options)
    opened = bool(r.token_ids) and r.token_ids[0] == tok.think_id and tok.end_think_id in r.token_ids
    thought = r.thinking.strip() != ""
    return {"opened": opened, "thought": thought, "followed": opened and thought == want_thinking, "result": r}


def budget_steps(model, messages, budget, **options) -> list[dict]:
    """Generate with the budget counter and record every step: the token, whether it was forced, its channel,
    the counter's N and state after it."""
    from .generate import stream
    g = stream(model, messages, budget=budget, **options)
    rows = []
    for piece in g:
        if piece.token_id < 0:
            continue
        c = g.counter
        rows.append({"step": len(rows), "id": piece.token_id, "token": model.tokenizer.decode([piece.token_id]),
                     "forced": piece.forced, "channel": piece.channel, "N": piece.thinking_tokens,
                     "state": c.state.value, "tripped": c.tripped})
    return rows


def eval_curves(report: dict) -> dict:
    """Accuracy-vs-budget curves per level from an EVAL.json report (`scripts/evaluate_tiny.py`:
    report["arithmetic"]["think"][budget name][level] in percent, budget names "0", "2", ..., "unlimited").
    -> {label: {budget (None = unlimited): accuracy in 0..1}}"""
    think = report["arithmetic"]["think"]
    levels = list(next(iter(think.values())))
    curves = {}
    for level in levels:
        label = "all levels" if level == "all" else f"level {level.lstrip('L')}"
        curves[label] = {None if name == "unlimited" else int(name): by_level[level] / 100
                         for name, by_level in think.items() if by_level.get(level) is not None}
    return curves


# --- timing --------------------------------------------------------------------------------------

def best_time(fn, *args, repeat: int = 3) -> float:
    """The fastest of `repeat` calls of fn(*args), in seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best
