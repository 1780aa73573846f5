"""Evaluate the embedded tiny model with miniqwen3 itself; write EVAL.json (data) and EVAL.md (summary).

    python scripts/evaluate_tiny.py --model miniqwen3/data/tiny --corpus build/tiny/corpus

1. Held-out arithmetic, per level: accuracy in no-think mode (the hard switch: the template's empty think block)
   and in think mode at thinking budgets B in {0, 2, 4, 8, 16, 24, 32, 40, 48, 64, unlimited} (the analogue of the
   budget-scaling figure of the Qwen3 report), with 95% Wilson intervals; per question and budget, whether it was
   right, the thinking tokens spent and whether the budget cut (for accuracy against tokens actually spent).
   Greedy decoding through `Model.generate`. A greedy run whose unlimited thinking is shorter than B never meets
   the budget, so it is the unlimited run, token for token; it is reused.
2. ThinkFollow through the soft switch (the template as written, no enable_thinking: the model decides): the
   reply follows the last flag when it opens <think> and the block is non-empty for /think, empty for /no_think.
   On the report's kind of set, held-out multi-turn conversations whose flags switch the mode
   (`evaluate.switching_conversations`), and on the corpus' flag set (one to three turns, flags in user or
   system messages); beside it the hard switch (enable_thinking=False) on the same switching conversations.
3. Routing: per layer, the share of routing slots each expert receives on held-out arithmetic conversations,
   prose and code (per domain), and on the words of the questions in each language (per language); how far
   apart the distributions are (total variation distance), beside the distance between two halves of one
   domain (what sampling noise alone gives).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import regex

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import miniqwen3  # noqa: E402
from miniqwen3.chat import render_chat  # noqa: E402
from miniqwen3.evaluate import budget_runs, rate, switching_conversations, think_follow as follow_rows  # noqa: E402
from miniqwen3.routing import routing_by_group, specialisation  # noqa: E402
from miniqwen3.corpus import (LANGUAGES, LEVELS, Conversation, arithmetic_eval_set, code_documents,  # noqa: E402
                              conversation_segments, flag_eval_set, parse_answer, prose_documents, read_jsonl)

BUDGETS = (0, 2, 4, 8, 16, 24, 32, 40, 48, 64, None)


def budget_name(b):
    return "unlimited" if b is None else str(b)


# --- 1. arithmetic -------------------------------------------------------------------------------

def arithmetic(model, convs, max_new_tokens, log):
    """Per conversation: correct or not in no-think mode and at each budget, thinking tokens, tripped."""
    rows = []
    t0 = time.time()
    for n, conv in enumerate(convs):
        prompt, want = conv.messages[:-1], conv.problem.result
        row = {"level": conv.problem.level, "lang": conv.lang, "op": conv.problem.op}
        r = model.generate(prompt, enable_thinking=False, temperature=0, max_new_tokens=40)
        row["no_think"] = parse_answer(r.answer) == want
        runs = budget_runs(model, prompt, BUDGETS, max_new_tokens, enable_thinking=True, temperature=0)
        free = runs[None]
        row["thinking_tokens"] = free.thinking_tokens
        row["closed"] = free.finish_reason == "stop" and "</think>" not in free.answer
        for b, r in runs.items():
            row[f"B{budget_name(b)}"] = parse_answer(r.answer) == want
            row[f"tripped{budget_name(b)}"] = r.budget_tripped
            row[f"spent{budget_name(b)}"] = r.thinking_tokens
        if n < 3 or n % 100 == 0:
            row["example"] = {"prompt": prompt[-1]["content"], "level": conv.problem.level,
                              "thinking": free.thinking, "answer": free.answer}
        if n == len(convs) - 1:    # the last (hardest) question again, cut by a budget of 16
            r = model.generate(prompt, enable_thinking=True, budget=16, temperature=0, max_new_tokens=max_new_tokens)
            row["budget_example"] = {"prompt": prompt[-1]["content"], "level": conv.problem.level, "budget": 16,
                                     "thinking": r.thinking, "answer": r.answer, "correct": want}
        rows.append(row)
        if (n + 1) % 25 == 0:
            log(f"  arithmetic {n + 1}/{len(convs)} ({time.time() - t0:.0f}s)")
    return rows


def summarize_arithmetic(rows):
    def acc(key, sel):
        xs = [r[key] for r in rows if sel(r)]
        return round(100 * float(np.mean(xs)), 1) if xs else None

    levels = {f"L{lv}": (lambda r, lv=lv: r["level"] == lv) for lv in LEVELS}
    levels["all"] = lambda r: True
    out = {"n": {k: sum(1 for r in rows if s(r)) for k, s in levels.items()},
           "no_think": {k: acc("no_think", s) for k, s in levels.items()},
           "think": {budget_name(b): {k: acc(f"B{budget_name(b)}", s) for k, s in levels.items()} for b in BUDGETS},
           "tripped": {budget_name(b): {k: acc(f"tripped{budget_name(b)}", s) for k, s in levels.items()}
                       for b in BUDGETS},
           "think_interval": {budget_name(b): {k: interval([r[f"B{budget_name(b)}"] for r in rows if s(r)])
                                               for k, s in levels.items()} for b in BUDGETS},
           "per_question": {"budgets": [budget_name(b) for b in BUDGETS],
                            "level": [r["level"] for r in rows],
                            "no_think": [int(r["no_think"]) for r in rows],
                            "correct": [[int(r[f"B{budget_name(b)}"]) for b in BUDGETS] for r in rows],
                            "spent": [[r[f"spent{budget_name(b)}"] for b in BUDGETS] for r in rows],
                            "tripped": [[int(r[f"tripped{budget_name(b)}"]) for b in BUDGETS] for r in rows]},
           "thinking_tokens_unlimited": {k: round(float(np.mean([r["thinking_tokens"] for r in rows if s(r)])), 1)
                                         for k, s in levels.items()},
           "closed_think_block": {k: acc("closed", s) for k, s in levels.items()},
           "by_language": {lang: {"no_think": acc("no_think", lambda r, l=lang: r["lang"] == l),
                                  "think_unlimited": acc("Bunlimited", lambda r, l=lang: r["lang"] == l)}
                           for lang in LANGUAGES},
           "by_operation": {op: {"no_think": acc("no_think", lambda r, o=op: r["op"] == o),
                                 "think_unlimited": acc("Bunlimited", lambda r, o=op: r["op"] == o)}
                            for op in "+-*"},
           "examples": [r["example"] for r in rows if "example" in r],
           "budget_examples": [r["budget_example"] for r in rows if "budget_example" in r]}
    return out


def interval(flags) -> list:
    """[rate, low, high] in percent: the share and its 95% Wilson interval."""
    r = rate(flags)
    return [round(100 * r["rate"], 1), round(100 * r["low"], 1), round(100 * r["high"], 1)]


# --- 2. ThinkFollow ------------------------------------------------------------------------------

def think_follow(model, convs, max_new_tokens, log):
    """Through the soft switch (no enable_thinking); percentages, and [rate, low, high] Wilson intervals."""
    rows = []
    for conv, f in zip(convs, follow_rows(model, convs, max_new_tokens, temperature=0)):
        rows.append({"want_thinking": conv.thinking, "opened": f["opened"], "thought": f["thought"],
                     "followed": f["followed"], "turns": sum(m["role"] == "user" for m in conv.messages),
                     "correct": parse_answer(f["result"].answer) == conv.problem.result})
    log(f"  think-follow {len(rows)} conversations")

    def pct(sel, key="followed"):
        xs = [r[key] for r in rows if sel(r)]
        return round(100 * float(np.mean(xs)), 1) if xs else None

    return {"n": len(rows), "followed": pct(lambda r: True),
            "followed_interval": interval([r["followed"] for r in rows]),
            "followed_think": pct(lambda r: r["want_thinking"]),
            "followed_no_think": pct(lambda r: not r["want_thinking"]),
            "followed_single_turn": pct(lambda r: r["turns"] == 1),
            "followed_multi_turn": pct(lambda r: r["turns"] > 1),
            "well_formed_block": pct(lambda r: True, "opened"),
            "answer_correct": pct(lambda r: True, "correct")}


def hard_switch(model, convs, log):
    """The same conversations with enable_thinking=False: share of replies that thought (the template's empty
    block is in the prompt, so the flags cannot turn thinking on)."""
    thought = [model.generate(c.messages[:-1], enable_thinking=False, temperature=0, max_new_tokens=40).thinking_mode
               for c in convs]
    log(f"  hard switch {len(convs)} conversations")
    return {"n": len(convs), "thought": interval(thought),
            "thought_when_flag_says_think": interval([t for t, c in zip(thought, convs) if c.thinking])}


# --- 3. routing ----------------------------------------------------------------------------------

def tv(p, q):
    """Total variation distance per layer between two share tables [L, E] -> [L]."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


def group_shares(g) -> dict:
    """name -> [L, E]: each group's share of the assignments per layer (from a `routing.GroupRouting`)."""
    per_layer = g.shares()                                            # layer -> [G, E]
    return {name: np.stack([per_layer[i][j] for i in g.layers]) for j, name in enumerate(g.names)}


def eval_documents(corpus: Path, kind: str) -> list[str]:
    """The held-out prose or code texts: from the corpus folder when it was written, else made again (the
    corpus functions are deterministic for a given Python installation)."""
    path = corpus / f"eval_{kind}.jsonl"
    if path.is_file():
        return [d["text"] for d in read_jsonl(path)]
    return [text for _, text in (prose_documents if kind == "prose" else code_documents)(held_out=True)]


def routing(model, corpus: Path, arith_convs, log, doc_tokens=256, max_docs_seqs=40):
    tok = model.tokenizer
    letters = regex.compile(r"\p{L}")
    domain_seqs = {"arithmetic": [], "prose": [], "code": []}
    for conv in arith_convs:
        domain_seqs["arithmetic"].append([i for text, _ in conversation_segments(conv) for i in tok.encode(text)])
    for kind in ("prose", "code"):
        for text in eval_documents(corpus, kind):
            # long documents give several sequences, so that no single file dominates its domain
            for start in range(0, min(len(text), 4 * 4 * doc_tokens), 4 * doc_tokens):
                ids = tok.encode(text[start:start + 4 * doc_tokens])[:doc_tokens]
                if len(ids) >= 64 and len(domain_seqs[kind]) < max_docs_seqs:
                    domain_seqs[kind].append(ids)
    by_domain = routing_by_group(model, domain_seqs)
    domain = group_shares(by_domain)
    log(f"  routing: domains {', '.join(f'{k} {sum(len(s) for s in v)} tokens' for k, v in domain_seqs.items())}")

    # Per language: only the word tokens of the questions (digits, spaces, operators are shared by all).
    lang_ids, lang_keep, lang_tokens = {}, {}, {}
    prefix = len(tok.encode("<|im_start|>user\n"))
    for conv in arith_convs:
        ids = tok.encode(render_chat(conv.messages[:-1], add_generation_prompt=True))
        end = ids.index(tok.im_end_id)
        keep = np.zeros(len(ids), bool)
        for i in range(prefix, end):
            keep[i] = bool(letters.search(tok.decode([ids[i]])))
        if keep.any():
            lang_ids.setdefault(conv.lang, []).append(ids)
            lang_keep.setdefault(conv.lang, []).append(keep)
            lang_tokens[conv.lang] = lang_tokens.get(conv.lang, 0) + int(keep.sum())
    by_language = routing_by_group(model, lang_ids, lang_keep)
    language = group_shares(by_language)
    lang_mean = np.mean(list(language.values()), axis=0)

    layers = list(range(len(next(iter(domain.values())))))
    pairs = [("arithmetic", "prose"), ("arithmetic", "code"), ("prose", "code")]
    E = model.config.num_experts
    top = {k: [[[int(e), round(float(v[layer, e]), 3)] for e in np.argsort(-v[layer])[:3]] for layer in layers]
           for k, v in domain.items()}
    history = {}
    path = Path(model.path) / "training_history.npz"
    if path.is_file():
        h = np.load(path)
        if "domain_load" in h:
            first, last = h["domain_load"][0].astype(np.float64), h["domain_load"][-1].astype(np.float64)
            history = {"training_domain_bits_first_step": [round(specialisation(first[:, j]), 3) for j in layers],
                       "training_domain_bits_last_step": [round(specialisation(last[:, j]), 3) for j in layers],
                       "training_domain_steps": [int(h["domain_steps"][0]), int(h["domain_steps"][-1])]}
    return {
        **history,
        "layers": layers,
        "uniform_share": 1 / E,
        "domain_tokens": {k: sum(len(s) for s in v) for k, v in domain_seqs.items()},
        "domain_sequences": {k: len(v) for k, v in domain_seqs.items()},
        "domain_share": {k: np.round(v, 4).tolist() for k, v in domain.items()},
        "domain_bits": np.round(by_domain.bits(), 3).tolist(),
        "domain_bits_shuffled": np.round(by_domain.shuffled_bits(), 3).tolist(),
        "domain_tv": {f"{a} vs {b}": np.round(tv(domain[a], domain[b]), 3).tolist() for a, b in pairs},
        "domain_top_experts": top,
        "domain_max_share": {k: np.round(v.max(axis=-1), 3).tolist() for k, v in domain.items()},
        "language_tokens": lang_tokens,
        "language_share": {k: np.round(v, 4).tolist() for k, v in language.items()},
        "language_bits": np.round(by_language.bits(), 3).tolist(),
        "language_bits_shuffled": np.round(by_language.shuffled_bits(), 3).tolist(),
        "language_tv_from_mean": {k: np.round(tv(v, lang_mean), 3).tolist() for k, v in language.items()},
    }


# --- report --------------------------------------------------------------------------------------

def markdown(ev) -> str:
    a, f, sw, r = ev["arithmetic"], ev["think_follow"], ev["think_follow_switching"], ev["routing"]
    lv = [f"L{x}" for x in LEVELS] + ["all"]
    lines = [
        "# Evaluation of the embedded tiny Qwen3-MoE",
        "",
        f"Written by `scripts/evaluate_tiny.py` ({ev['seconds'] / 60:.0f} min, greedy decoding with miniqwen3, "
        f"backend {ev['backend']}). Numbers as measured; data in `EVAL.json`.",
        "",
        f"## Held-out arithmetic: accuracy (%) per level ({a['n']['L1']} questions per level, six languages)",
        "",
        "Levels: operand `a` has 1-4 digits (+, -, and * by one digit). Think mode at thinking budget B "
        "(tokens; the stop sentence is forced when B is reached, then the model answers); for all levels, the "
        "95% Wilson interval in brackets.",
        "",
        "| mode | " + " | ".join(lv) + " |",
        "|---|" + "---|" * len(lv),
        "| no-think | " + " | ".join(f"{a['no_think'][k]}" for k in lv) + " |",
    ]
    for b in a["think"]:
        ci = a["think_interval"][b]["all"]
        lines.append(f"| think, B = {b} | " + " | ".join(f"{a['think'][b][k]}" for k in lv[:-1])
                     + f" | {a['think'][b]['all']} [{ci[1]}, {ci[2]}] |")
    lines += [
        "",
        "Mean thinking tokens at unlimited budget: " + ", ".join(
            f"{k} {a['thinking_tokens_unlimited'][k]}" for k in lv) + ".",
        "Share of runs the budget cut (%), all levels: " + ", ".join(
            f"B={b} {a['tripped'][b]['all']}" for b in a["tripped"] if b != "unlimited") + ".",
        "",
        "By language (all levels): " + "; ".join(
            f"{k} no-think {v['no_think']} / think {v['think_unlimited']}" for k, v in a["by_language"].items()) + ".",
        "By operation: " + "; ".join(
            f"{k} no-think {v['no_think']} / think {v['think_unlimited']}" for k, v in a["by_operation"].items()) + ".",
        "",
        "## ThinkFollow through the soft switch: the reply follows the last /think or /no_think flag",
        "",
        "The prompt is the chat template as written (no enable_thinking; nothing prefilled): the model decides. "
        "Followed = the reply opens and closes the think block, non-empty for /think, empty for /no_think "
        "(% with the 95% Wilson interval). The report's ThinkFollow after stage 3 (thinking-mode fusion) is 88.7, "
        "on its own multi-turn dialogues; these are synthetic arithmetic dialogues from the generator the tiny "
        "model was trained on (`miniqwen3.corpus`), so they are in distribution.",
        "",
        "| set | conversations | followed | /think | /no_think | single-turn | multi-turn | well-formed block | answer correct |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in (("multi-turn, the flags switch the mode (`evaluate.switching_conversations`)", sw),
                    ("the corpus' flag set (`corpus.flag_eval_set`: 1-3 turns)", f)):
        fi = g["followed_interval"]
        lines.append(f"| {name} | {g['n']} | {fi[0]} [{fi[1]}, {fi[2]}] | {g['followed_think']} | "
                     f"{g['followed_no_think']} | {g['followed_single_turn']} | {g['followed_multi_turn']} | "
                     f"{g['well_formed_block']} | {g['answer_correct']} |")
    h = sw["hard_switch"]
    lines += [
        "",
        f"The hard switch (enable_thinking=False) on the same {h['n']} switching conversations: the reply thought in "
        f"{h['thought'][0]}% [{h['thought'][1]}, {h['thought'][2]}] of them, {h['thought_when_flag_says_think'][0]}% "
        "of those whose last flag is /think (the empty block is in the prompt, whatever the flags).",
        "",
        "## Routing: how differently domains and languages use the experts",
        "",
        "Per layer: the mutual information (bits) between a token's group and the experts it is routed to "
        "(`miniqwen3.balance.specialisation`; 0 = every group uses the experts alike, log2(groups) = disjoint "
        "experts), beside the same measure with the sequences dealt to the groups at random (the noise floor); "
        "and the total variation distance between the expert-share distributions of two domains (0 = identical, "
        "1 = disjoint).",
        "",
        "| measure | " + " | ".join(f"layer {x}" for x in r["layers"]) + " |",
        "|---|" + "---|" * len(r["layers"]),
        "| domains: bits | " + " | ".join(f"{x:.3f}" for x in r["domain_bits"]) + " |",
        "| domains: bits, shuffled | " + " | ".join(f"{x:.3f}" for x in r["domain_bits_shuffled"]) + " |",
    ]
    for k, v in r["domain_tv"].items():
        lines.append(f"| TV {k} | " + " | ".join(f"{x:.2f}" for x in v) + " |")
    if "training_domain_bits_first_step" in r:
        a0, a1 = r["training_domain_steps"]
        lines += [f"| domains: bits in training, step {a0} (initialisation) | "
                  + " | ".join(f"{x:.3f}" for x in r["training_domain_bits_first_step"]) + " |",
                  f"| domains: bits in training, step {a1} | "
                  + " | ".join(f"{x:.3f}" for x in r["training_domain_bits_last_step"]) + " |"]
    lines += [
        "| languages: bits | " + " | ".join(f"{x:.3f}" for x in r["language_bits"]) + " |",
        "| languages: bits, shuffled | " + " | ".join(f"{x:.3f}" for x in r["language_bits_shuffled"]) + " |",
    ]
    lines += ["", f"Domains measured on {', '.join(f'{k} {v} tokens' for k, v in r['domain_tokens'].items())}; "
              "languages on the word tokens of the held-out questions "
              f"({', '.join(f'{k} {v}' for k, v in r['language_tokens'].items())}).", "",
              f"Largest single-expert share per domain and layer (uniform: {r['uniform_share']:.3f}), "
              "and the top three experts per layer as e<expert>:<share>:", ""]
    for k, v in r["domain_top_experts"].items():
        lines.append(f"- {k}: max " + ", ".join(f"{x:.2f}" for x in r["domain_max_share"][k])
                     + "; " + "; ".join(f"layer {i} " + " ".join(f"e{e}:{s:.2f}" for e, s in t)
                                        for i, t in enumerate(v)))
    lines += ["", "Distance of each language's expert shares from the mean over languages (TV), per layer:", ""]
    lines.append("| language | tokens | " + " | ".join(f"layer {x}" for x in r["layers"]) + " |")
    lines.append("|---|---|" + "---|" * len(r["layers"]))
    for k, v in r["language_tv_from_mean"].items():
        lines.append(f"| {k} | {r['language_tokens'][k]} | " + " | ".join(f"{x:.2f}" for x in v) + " |")
    lines += ["", "## Examples (greedy, unlimited budget; one per level)", ""]
    shown = {}
    for e in a["examples"]:
        shown.setdefault(e.get("level"), e)
    for e in shown.values():
        lines += ["```", f"user: {e['prompt']}", "<think>", e["thinking"], "</think>", "", e["answer"], "```", ""]
    for e in a.get("budget_examples", []):
        lines += [f"With a thinking budget of {e['budget']} tokens (the correct result is {e['correct']}):", "",
                  "```", f"user: {e['prompt']}", "<think>", e["thinking"], "</think>", "", e["answer"], "```", ""]
    return "\n".join(lines) + "\n"


def compact_json(ev) -> str:
    """JSON with one key per line but every list of plain numbers or booleans on one line."""
    text = json.dumps(ev, indent=1, ensure_ascii=False)
    return regex.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + ", ".join(x.strip() for x in m[0][1:-1].split(",")) + "]"
                     if m[0][1:-1].strip() else "[]", text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "miniqwen3" / "data" / "tiny"))
    ap.add_argument("--corpus", default="build/tiny/corpus")
    ap.add_argument("--out", default=None, help="folder for EVAL.json and EVAL.md (default: the model folder)")
    ap.add_argument("--per-level", type=int, default=100)
    ap.add_argument("--flags", type=int, default=200)
    ap.add_argument("--routing-convs", type=int, default=240)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--backend", default="numba", choices=("numpy", "numba"))
    args = ap.parse_args(argv)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    model = miniqwen3.load(args.model, backend=args.backend)
    corpus = Path(args.corpus)
    # the evaluation sets: from the corpus folder when it was written, else made again (the same seeded sets)
    arith = ([Conversation.from_json(d) for d in read_jsonl(corpus / "eval_arith.jsonl")]
             if (corpus / "eval_arith.jsonl").is_file() else arithmetic_eval_set())
    per_level = {lv: [c for c in arith if c.problem.level == lv][:args.per_level] for lv in LEVELS}
    arith = [c for lv in LEVELS for c in per_level[lv]]
    flags = ([Conversation.from_json(d) for d in read_jsonl(corpus / "eval_flags.jsonl")]
             if (corpus / "eval_flags.jsonl").is_file() else flag_eval_set())[:args.flags]
    switching = switching_conversations(args.flags)
    log(f"model {model}; {len(arith)} arithmetic questions, {len(flags)} flag conversations")

    ev = {"model": str(Path(args.model)), "backend": args.backend, "decoding": "greedy",
          "budgets": [budget_name(b) for b in BUDGETS]}
    rows = arithmetic(model, arith, args.max_new_tokens, log)
    ev["arithmetic"] = summarize_arithmetic(rows)
    log("arithmetic: " + json.dumps({"no_think": ev["arithmetic"]["no_think"],
                                     "think_unlimited": ev["arithmetic"]["think"]["unlimited"]}))
    ev["think_follow_switching"] = think_follow(model, switching, args.max_new_tokens, log)
    ev["think_follow_switching"]["hard_switch"] = hard_switch(model, switching, log)
    log("think-follow, switching conversations: " + json.dumps(ev["think_follow_switching"]))
    ev["think_follow"] = think_follow(model, flags, args.max_new_tokens, log)
    log("think-follow: " + json.dumps(ev["think_follow"]))
    routing_convs = [c for i, c in enumerate(arith) if i % max(1, len(arith) // args.routing_convs) == 0]
    ev["routing"] = routing(model, corpus, routing_convs[:args.routing_convs], log)
    log("routing: bits " + json.dumps(ev["routing"]["domain_bits"]) + " shuffled "
        + json.dumps(ev["routing"]["domain_bits_shuffled"]))
    ev["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out) if args.out else Path(args.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "EVAL.json").write_text(compact_json(ev) + "\n", encoding="utf-8")
    (out / "EVAL.md").write_text(markdown(ev), encoding="utf-8")
    log(f"wrote {out / 'EVAL.json'} and {out / 'EVAL.md'}")


if __name__ == "__main__":
    main()
