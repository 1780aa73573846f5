"""Measuring a model: next-token loss with the router changed, accuracy against the thinking budget, whether a
reply follows the /think and /no_think flags (ThinkFollow), the steps of the budget counter, intervals for
proportions, and timing. Used by the notebooks and by scripts/evaluate_tiny.py alike.
"""
from __future__ import annotations

import math
import random
import time

import numpy as np


# --- intervals -----------------------------------------------------------------------------------

Z95 = 1.959963984540054        # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion: the p with (p_hat - p)^2 <= z^2 p (1 - p) / n, i.e.

        centre = (p_hat + z^2 / 2n) / (1 + z^2 / n),  half = z / (1 + z^2 / n) * sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2).

    Unlike p_hat +- z sqrt(p_hat (1 - p_hat) / n) it stays inside [0, 1] and is not empty at 0 or n successes."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags) -> dict:
    """{"k", "n", "rate", "low", "high"} of a list of booleans: the share and its 95% Wilson interval."""
    k, n = int(sum(bool(f) for f in flags)), len(flags)
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n, "low": low, "high": high}


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


def switching_conversations(n: int = 200, seed: int = 2468) -> list:
    """ThinkFollow's conversations: held-out multi-turn dialogues (two or three user turns, the last question never
    in training) whose flags switch the mode at least once between turns, half ending in /think mode and half in
    /no_think mode. Made by the tiny model's own generator (`miniqwen3.corpus.sample_conversation`) with a seed of
    their own; the last message is the reference reply. Each conversation's `thinking` is the mode the last flag
    asks for (`miniqwen3.chat.resolve_thinking`)."""
    from .chat import resolve_thinking
    from .corpus import sample_conversation
    rng, out = random.Random(seed), []
    while len(out) < n:
        conv = sample_conversation(rng, held_out=True, cut_rate=0.0)
        users = [i for i, m in enumerate(conv.messages) if m["role"] == "user"]
        modes = {resolve_thinking(conv.messages[:i + 1]) for i in users}
        if len(users) >= 2 and len(modes) == 2 and conv.thinking == (len(out) % 2 == 0):
            out.append(conv)
    return out


def think_follow(model, convs, max_new_tokens: int = 128, **options) -> list[dict]:
    """`follows_flag` for each conversation (its reply left out), through the soft switch:
    one row per conversation with want_thinking, opened, thought, followed and the GenerationResult."""
    return [{"want_thinking": c.thinking,
             **follows_flag(model, c.messages[:-1], c.thinking, max_new_tokens, **options)} for c in convs]


def training_mix(convs) -> dict:
    """What the flags and the budget looked like in training conversations (`miniqwen3.corpus.Conversation`):
    shares of user turns with /think, /no_think or no flag, of conversations with a system prompt and with more than
    one user turn, of replies in thinking mode, of no-think replies with the empty block in the prompt (the hard
    switch) rather than written by the model, and of thinking replies cut by the budget stop sentence."""
    from .chat import thinking_flag
    users = [m["content"] for c in convs for m in c.messages if m["role"] == "user"]
    flags = [thinking_flag(u) for u in users]
    thinking = [c for c in convs if c.thinking]
    no_think = [c for c in convs if not c.thinking]
    return {"conversations": len(convs), "user_turns": len(users),
            "turn_think": flags.count(True) / len(users), "turn_no_think": flags.count(False) / len(users),
            "turn_no_flag": flags.count(None) / len(users),
            "system_prompt": sum(c.messages[0]["role"] == "system" for c in convs) / len(convs),
            "multi_turn": sum(sum(m["role"] == "user" for m in c.messages) > 1 for c in convs) / len(convs),
            "thinking_replies": len(thinking) / len(convs),
            "no_think_hard_switch": sum(c.hard_switch for c in no_think) / max(len(no_think), 1),
            "thinking_cut": sum(c.cut is not None for c in thinking) / max(len(thinking), 1)}


def budget_records(model, questions, expected, levels, budgets, parse, max_new_tokens: int = 160,
                   **options) -> list[dict]:
    """One row per question and budget: level, budget, correct, thinking tokens spent, tripped (greedy runs
    that never meet the budget are the unlimited run, reused: see `budget_runs`)."""
    rows = []
    for q, want, level in zip(questions, expected, levels):
        for b, r in budget_runs(model, q, budgets, max_new_tokens, **options).items():
            rows.append({"level": level, "budget": b, "correct": parse(r.answer) == want,
                         "spent": r.thinking_tokens, "tripped": r.budget_tripped})
    return rows


def budget_summary(rows, level=None) -> dict:
    """Per budget over `budget_records` rows (one level, or all): accuracy with its Wilson interval, the mean
    thinking tokens spent, and the share of runs the budget cut. budget -> {"k", "n", "rate", "low", "high",
    "spent", "cut"}."""
    out = {}
    for b in dict.fromkeys(r["budget"] for r in rows):
        sel = [r for r in rows if r["budget"] == b and (level is None or r["level"] == level)]
        if sel:
            out[b] = {**rate([r["correct"] for r in sel]), "spent": float(np.mean([r["spent"] for r in sel])),
                      "cut": float(np.mean([r["tripped"] for r in sel]))}
    return out


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
