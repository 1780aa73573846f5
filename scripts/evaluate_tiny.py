"""Evaluate the embedded tiny model with miniqwen3 itself; write EVAL.json (data) and EVAL.md (summary).

    python scripts/evaluate_tiny.py --model miniqwen3/data/tiny --corpus build/tiny/corpus

1. Held-out arithmetic, per level: accuracy in no-think mode (the template's empty think block) and in think
   mode at thinking budgets B in {0, 2, 4, 8, 16, 32, 64, unlimited} (the analogue of the budget-scaling
   figure of the Qwen3 report). Greedy decoding through `Model.generate`. A greedy run whose unlimited thinking
   is shorter than B never meets the budget, so it is the unlimited run, token for token; it is reused.
2. ThinkFollow: conversations (one to three turns, flags in user or system messages, changed between turns)
   rendered without the prefilled block (enable_thinking=True, as the soft switch is used): the reply follows
   the last flag when it opens <think> and the block is non-empty for /think, empty for /no_think.
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
from miniqwen3.evaluate import budget_runs, follows_flag  # noqa: E402
from miniqwen3.routing import routing_by_group, specialisation  # noqa: E402
from miniqwen3.corpus import (LANGUAGES, LEVELS, Conversation, conversation_segments, parse_answer,  # noqa: E402
                              read_jsonl)

BUDGETS = (0, 2, 4, 8, 16, 32, 64, None)


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


# --- 2. ThinkFollow ------------------------------------------------------------------------------

def think_follow(model, convs, max_new_tokens, log):
    rows = []
    for conv in convs:
        f = follows_flag(model, conv.messages[:-1], conv.thinking, max_new_tokens, temperature=0)
        rows.append({"want_thinking": conv.thinking, "opened": f["opened"], "thought": f["thought"],
                     "followed": f["followed"], "turns": sum(m["role"] == "user" for m in conv.messages),
                     "correct": parse_answer(f["result"].answer) == conv.problem.result})
    log(f"  think-follow {len(rows)} conversations")

    def rate(sel, key="followed"):
        xs = [r[key] for r in rows if sel(r)]
        return round(100 * float(np.mean(xs)), 1) if xs else None

    return {"n": len(rows), "followed": rate(lambda r: True),
            "followed_think": rate(lambda r: r["want_thinking"]),
            "followed_no_think": rate(lambda r: not r["want_thinking"]),
            "followed_single_turn": rate(lambda r: r["turns"] == 1),
            "followed_multi_turn": rate(lambda r: r["turns"] > 1),
            "well_formed_block": rate(lambda r: True, "opened"),
            "answer_correct": rate(lambda r: True, "correct")}


# --- 3. routing ----------------------------------------------------------------------------------

def tv(p, q):
    """Total variation distance per layer between two share tables [L, E] -> [L]."""
    return 0.5 * np.abs(p - q).sum(axis=-1)


def group_shares(g) -> dict:
    """name -> [L, E]: each group's share of the assignments per layer (from a `routing.GroupRouting`)."""
    per_layer = g.shares()                                            # layer -> [G, E]
    return {name: np.stack([per_layer[i][j] for i in g.layers]) for j, name in enumerate(g.names)}


def routing(model, corpus: Path, arith_convs, log, doc_tokens=256, max_docs_seqs=40):
    tok = model.tokenizer
    letters = regex.compile(r"\p{L}")
    domain_seqs = {"arithmetic": [], "prose": [], "code": []}
    for conv in arith_convs:
        domain_seqs["arithmetic"].append([i for text, _ in conversation_segments(conv) for i in tok.encode(text)])
    for kind in ("prose", "code"):
        for d in read_jsonl(corpus / f"eval_{kind}.jsonl"):
            text = d["text"]
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
    a, f, r = ev["arithmetic"], ev["think_follow"], ev["routing"]
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
        "(tokens; the stop sentence is forced when B is reached, then the model answers).",
        "",
        "| mode | " + " | ".join(lv) + " |",
        "|---|" + "---|" * len(lv),
        "| no-think | " + " | ".join(f"{a['no_think'][k]}" for k in lv) + " |",
    ]
    for b in a["think"]:
        lines.append(f"| think, B = {b} | " + " | ".join(f"{a['think'][b][k]}" for k in lv) + " |")
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
        f"## ThinkFollow: the reply follows the last /think or /no_think flag ({f['n']} held-out conversations)",
        "",
        "| all | /think | /no_think | single-turn | multi-turn | well-formed think block | answer correct |",
        "|---|---|---|---|---|---|---|",
        f"| {f['followed']} | {f['followed_think']} | {f['followed_no_think']} | {f['followed_single_turn']} | "
        f"{f['followed_multi_turn']} | {f['well_formed_block']} | {f['answer_correct']} |",
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
    arith = [Conversation.from_json(d) for d in read_jsonl(corpus / "eval_arith.jsonl")]
    per_level = {lv: [c for c in arith if c.problem.level == lv][:args.per_level] for lv in LEVELS}
    arith = [c for lv in LEVELS for c in per_level[lv]]
    flags = [Conversation.from_json(d) for d in read_jsonl(corpus / "eval_flags.jsonl")][:args.flags]
    log(f"model {model}; {len(arith)} arithmetic questions, {len(flags)} flag conversations")

    ev = {"model": str(Path(args.model)), "backend": args.backend, "decoding": "greedy",
          "budgets": [budget_name(b) for b in BUDGETS]}
    rows = arithmetic(model, arith, args.max_new_tokens, log)
    ev["arithmetic"] = summarize_arithmetic(rows)
    log("arithmetic: " + json.dumps({"no_think": ev["arithmetic"]["no_think"],
                                     "think_unlimited": ev["arithmetic"]["think"]["unlimited"]}))
    ev["think_follow"] = think_follow(model, flags, args.max_new_tokens, log)
    log("think-follow: " + json.dumps(ev["think_follow"]))
    routing_convs = [c for i, c in enumerate(arith) if i % max(1, len(arith) // args.routing_convs) == 0]
    ev["routing"] = routing(model, corpus, routing_convs[:args.routing_convs], log)
    log("routing: bits " + json.dumps(ev["routing"]["domain_bits"]) + " shuffled "
        + json.dumps(ev["routing"]["domain_bits_shuffled"]))
    ev["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out) if args.out else Path(args.model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "EVAL.json").write_text(json.dumps(ev, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "EVAL.md").write_text(markdown(ev), encoding="utf-8")
    log(f"wrote {out / 'EVAL.json'} and {out / 'EVAL.md'}")


if __name__ == "__main__":
    main()
