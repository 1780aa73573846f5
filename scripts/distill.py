"""Strong-to-weak distillation, reproduced small: four dense students of the embedded tiny Qwen3-MoE, trained for
the same number of student tokens, then evaluated with the tiny model's own suite. One command:

    python scripts/distill.py --out docs/distill            # 53 min on 2 cores here

The Qwen3 report (arXiv 2505.09388, section 4.5) trains its small models (0.6B to 14B) by distilling the large
ones instead of running RL on them: first off-policy (the student learns from the teacher's outputs and logits
on text it did not write), then on-policy (the student samples, the teacher scores every token of the samples,
the student minimises the KL), and reports that on-policy distillation beats RL at about a tenth of the GPU
hours. Here the teacher is `miniqwen3/data/tiny` (Qwen3-MoE, 4 layers, 32 experts top-4) and every student is
the same dense Qwen3 (`miniqwen3.student.student_config`), from the same seed and the same initial weights:

  (1) baseline     next-token cross-entropy on the corpus' replies (`distill.cross_entropy`), N student tokens;
  (2) off-policy   forward KL to the teacher's top-k logits stored for the same corpus sequences
                   (`distill.forward_kl_topk`, Hinton et al. 2015, arXiv 1503.02531), N student tokens;
  (3) off+on       (2) for the first half of the N tokens, then on-policy: the student samples a reply to a corpus
                   prompt (the conversation up to the assistant turn, at temperature tau), the teacher runs on
                   prompt + sample, and the student minimises the reverse KL KL(q || p) at every sampled position
                   (`distill.reverse_kl`: the full-vocabulary per-token reverse KL of GKD, Agarwal et al. 2024,
                   arXiv 2306.13649, and MiniLLM, Gu et al. 2024, arXiv 2306.08543; `--on-policy-loss sampled`
                   uses the one-sample estimate and its score-function gradient, `distill.reverse_kl_sampled`);
  (4) baseline+    (1) given more tokens, so that its measured wall time equals the most expensive distillation
                   run's (teacher passes and sampling included): the same compute spent on plain training.

The network runs in torch (fp32, transformers' Qwen3ForCausalLM, AdamW); the loss and its gradient at the logits
come from the package's NumPy losses (`miniqwen3.distill`), handed back with `logits.backward(grad)`. The
learning rate follows the tokens seen (warmup, then cosine), so runs of equal tokens see the same schedule.

Cost per run: student tokens (every token of the student's training forward passes), tokens the student sampled,
teacher forward tokens, and wall seconds split into student training, sampling and teacher passes. The teacher's
top-k logits are computed once per training batch and stored; a run is charged the teacher time of the batches
it uses. Training data: the tiny model's own generator (`corpus.sample_conversation`, seed 0: the conversations
the teacher was trained on, in its order); arithmetic conversations only (the evaluation's domain), loss on the
replies only (`corpus.conversation_segments`).

Evaluation of each student (and of the teacher, for reference), greedy, with miniqwen3 on the exported bf16
checkpoint: held-out arithmetic (`corpus.arithmetic_eval_set`) per level in no-think mode (the hard switch) and in
think mode at thinking budgets B (`evaluate.budget_runs`), with 95% Wilson intervals; ThinkFollow through the soft
switch on held-out multi-turn conversations whose flags switch the mode (`evaluate.switching_conversations`,
`evaluate.think_follow`); and the share of replies with no budget that write the budget stop sentence anyway.
Written to OUT/results.json, OUT/results.md and a chart (`--chart`, default
docs/img/distill.png); every student is exported to build/distill/<run> and the best one (all-levels accuracy at
unlimited budget, then ThinkFollow) to `--ship` (default miniqwen3/data/tiny-student).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

# As scripts/train_tiny.py: OpenMP threads that spin while a sibling is descheduled make every step slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import miniqwen3  # noqa: E402
from miniqwen3 import distill  # noqa: E402
from miniqwen3.budget import STOP_TEXT  # noqa: E402
from miniqwen3.corpus import arithmetic_eval_set, conversation_segments, parse_answer, sample_conversation  # noqa: E402
from miniqwen3.evaluate import budget_runs, rate, switching_conversations, think_follow  # noqa: E402
from miniqwen3.student import TINY, student_config  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
from train_tiny import pad_right  # noqa: E402  the teacher's batches, padded the same way

RUNS = ("baseline", "off-policy", "off+on-policy", "baseline, same compute")
BUDGETS = (0, 16, 32, 64, None)           # thinking budgets evaluated (None: unlimited)


# --- data ---------------------------------------------------------------------------------------

class Corpus:
    """Conversations of the tiny model's generator, tokenized piece by piece as the teacher was trained:
    `next()` -> (ids [T] int64, trained [T] bool, prompt length) in a fixed order (seed)."""

    def __init__(self, tokenizer, seed: int):
        self.tok, self.rng = tokenizer, random.Random(seed)

    def next(self):
        conv = sample_conversation(self.rng)
        ids, trained = [], []
        for text, is_trained in conversation_segments(conv):
            e = self.tok.encode(text, add_special_tokens=False).ids
            ids += e
            trained += [is_trained] * len(e)
        prompt = trained.index(True)
        return np.array(ids, np.int64), np.array(trained, bool), prompt


class Batches:
    """The training batches of the corpus, step by step, identical for every run: step i always holds the same
    conversations (about `tokens` tokens), so runs that stop at the same token count saw the same text. A step is
    a list of micro-batches of conversations of similar length (padded together: less padding to compute)."""

    def __init__(self, tokenizer, seed: int, tokens: int, pad: int, micro: int = 16):
        self.corpus, self.tokens, self.pad, self.micro, self.steps = Corpus(tokenizer, seed), tokens, pad, micro, []

    def __getitem__(self, i: int):
        while len(self.steps) <= i:
            convs, n = [], 0
            while n < self.tokens:
                ids, trained, _ = self.corpus.next()
                convs.append((ids, trained))
                n += len(ids)
            convs.sort(key=lambda c: len(c[0]))
            groups = np.array_split(np.arange(len(convs)), math.ceil(len(convs) / self.micro))
            self.steps.append([pad_right([convs[j][0] for j in g], [convs[j][1] for j in g], self.pad)
                               for g in groups])
        return self.steps[i]


class Prompts:
    """Corpus prompts for on-policy sampling (the conversation up to the assistant turn), from another seed."""

    def __init__(self, tokenizer, seed: int):
        self.corpus = Corpus(tokenizer, seed)

    def take(self, n: int):
        return [ids[:prompt] for ids, _, prompt in (self.corpus.next() for _ in range(n))]


# --- the teacher ---------------------------------------------------------------------------------

class Teacher:
    """The tiny Qwen3-MoE in torch (transformers, fp32), its top-k logits on the corpus batches stored per step
    (computed the first time a run asks), and its full logits on on-policy samples."""

    def __init__(self, folder: Path, k: int):
        from transformers import Qwen3MoeForCausalLM
        self.model = Qwen3MoeForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.k, self.topk, self.seconds = k, {}, {}

    @torch.no_grad()
    def logits_at(self, ids, tgt, att) -> np.ndarray:
        """The teacher's logits at the positions that predict a target token.  -> [n, V] float32"""
        h = self.model.model(input_ids=ids, attention_mask=att).last_hidden_state
        return self.model.lm_head(h[:, :-1][tgt[:, 1:]]).numpy()

    def stored_topk(self, key, batch):
        """(ids [n, k], values [n, k], seconds the teacher took) for a corpus micro-batch, computed once."""
        if key not in self.topk:
            t0 = time.perf_counter()
            ids, values = distill.top_k_logits(self.logits_at(*batch), self.k)
            self.topk[key] = ids.astype(np.int16), values
            self.seconds[key] = time.perf_counter() - t0
        return (*self.topk[key], self.seconds[key])


# --- the student ---------------------------------------------------------------------------------

def new_student(config: dict, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    cfg = Qwen3Config(**{k: v for k, v in config.items()
                         if k not in ("architectures", "torch_dtype", "transformers_version")})
    return Qwen3ForCausalLM(cfg)


def student_logits_at(model, ids, tgt, att):
    """The student's logits (with gradient) at the positions that predict a target token.  -> [n, V]"""
    h = model.model(input_ids=ids, attention_mask=att).last_hidden_state
    return model.lm_head(h[:, :-1][tgt[:, 1:]])


@torch.no_grad()
def sample_replies(model, prompts, tau: float, max_new: int, eos: int, pad: int):
    """The student's replies to `prompts` (lists of ids), sampled at temperature tau, each up to and including
    its <|im_end|>; -> a right-padded batch (ids, loss mask on the sampled tokens, attention) and the number of
    tokens sampled."""
    model.eval()
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad, dtype=torch.long)
    att = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):                     # left padding for generation
        ids[i, P - len(p):], att[i, P - len(p):] = torch.from_numpy(p), 1
    out = model.generate(input_ids=ids, attention_mask=att, do_sample=True, temperature=tau, top_k=0, top_p=1.0,
                         max_new_tokens=max_new, eos_token_id=eos, pad_token_id=pad)
    model.train()
    seqs, masks, sampled = [], [], 0
    for p, row in zip(prompts, out[:, P:].numpy()):
        end = np.flatnonzero(row == eos)
        reply = row[:end[0] + 1] if len(end) else row
        sampled += len(reply)
        seqs.append(np.concatenate([p, reply]))
        masks.append(np.concatenate([np.zeros(len(p), bool), np.ones(len(reply), bool)]))
    return pad_right(seqs, masks, pad), sampled


# --- training ------------------------------------------------------------------------------------

def lr_at(seen: int, total: int, peak: float, warmup: float = 0.05, floor: float = 0.1) -> float:
    """Learning rate after `seen` of `total` student tokens: linear warmup, then cosine down to floor * peak."""
    w = warmup * total
    if seen < w:
        return peak * (seen + 1) / w
    t = min(1.0, (seen - w) / max(1.0, total - w))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def train(name: str, config: dict, args, batches: Batches, teacher: Teacher | None, prompts: Prompts | None,
          total_tokens: int, on_policy_from: float | None, log) -> tuple:
    """Train one student for `total_tokens` student tokens. Corpus steps use cross-entropy (teacher None) or the
    forward KL to the teacher's stored top-k; once `on_policy_from` of the tokens are seen, on-policy steps.
    -> (model, cost dict, history list)"""
    model = new_student(config, args.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    cost = {"student_tokens": 0, "student_target_tokens": 0, "sampled_tokens": 0, "teacher_tokens": 0,
            "train_seconds": 0.0, "sample_seconds": 0.0, "teacher_seconds": 0.0, "steps": 0, "on_policy_steps": 0}
    hist, step, t_log = [], 0, time.perf_counter()
    while cost["student_tokens"] < total_tokens:
        lr = lr_at(cost["student_tokens"], total_tokens, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        on_policy = on_policy_from is not None and cost["student_tokens"] >= on_policy_from * total_tokens
        if on_policy:
            t0 = time.perf_counter()
            batch, sampled = sample_replies(model, prompts.take(args.on_policy_batch), args.tau, args.max_new,
                                            config["eos_token_id"], config["bos_token_id"])
            cost["sample_seconds"] += time.perf_counter() - t0
            cost["sampled_tokens"] += sampled
            micro = [batch]
            cost["on_policy_steps"] += 1
        else:
            micro = batches[step]
        n_step = sum(int(tgt[:, 1:].sum()) for _, tgt, _ in micro)    # target positions of the whole step
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for j, (ids, tgt, att) in enumerate(micro):
            if on_policy:
                t0 = time.perf_counter()
                t_logits = teacher.logits_at(ids, tgt, att)                 # [n, V] the teacher on the samples
                cost["teacher_seconds"] += time.perf_counter() - t0
                cost["teacher_tokens"] += int(att.sum())
            elif teacher is not None:
                top_ids, top_values, seconds = teacher.stored_topk((step, j), (ids, tgt, att))
                cost["teacher_seconds"] += seconds
                cost["teacher_tokens"] += int(att.sum())
            t0 = time.perf_counter()
            s = student_logits_at(model, ids, tgt, att)                         # [n, V]
            s_np = s.detach().numpy()
            if on_policy and args.on_policy_loss == "sampled":
                r = distill.reverse_kl_sampled(s_np, t_logits, ids[:, 1:][tgt[:, 1:]].numpy(), args.tau)
            elif on_policy:
                r = distill.reverse_kl(s_np, t_logits, args.tau)
            elif teacher is not None:
                r = distill.forward_kl_topk(s_np, top_ids, top_values, args.tau)
            else:
                r = distill.cross_entropy(s_np, ids[:, 1:][tgt[:, 1:]].numpy())
            share = len(s_np) / n_step                        # the step's loss is the mean over all its targets
            s.backward(torch.from_numpy(r.grad * np.float32(share)))
            loss += share * r.loss
            cost["train_seconds"] += time.perf_counter() - t0
            cost["student_tokens"] += int(att.sum())
            cost["student_target_tokens"] += len(s_np)
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        cost["train_seconds"] += time.perf_counter() - t0
        cost["steps"] += 1
        hist.append({"tokens": cost["student_tokens"], "loss": loss, "lr": lr, "on_policy": on_policy})
        step += 0 if on_policy else 1
        if time.perf_counter() - t_log > 20 or cost["student_tokens"] >= total_tokens:
            t_log = time.perf_counter()
            log(f"  {name}: {cost['student_tokens'] / 1e6:.2f}/{total_tokens / 1e6:.2f} M tokens, "
                f"{'on' if on_policy else 'corpus'} loss {loss:.4f}, lr {lr:.2e}, "
                f"{wall(cost):.0f} s (teacher {cost['teacher_seconds']:.0f}, sampling {cost['sample_seconds']:.0f})")
    return model, cost, hist


def wall(cost: dict) -> float:
    return cost["train_seconds"] + cost["sample_seconds"] + cost["teacher_seconds"]


def export(model, folder: Path, dtype=torch.bfloat16) -> Path:
    """A real Qwen3ForCausalLM checkpoint: config.json, model.safetensors (bf16), the teacher's tokenizer files
    and a generation_config.json written as the teacher's."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(model.config.to_dict()))
    raw = student_config(TINY, **{k: config[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                          "num_attention_heads", "num_key_value_heads", "head_dim")})
    raw["torch_dtype"] = "bfloat16"
    tensors = {n: t.detach().to(dtype).contiguous() for n, t in model.state_dict().items()
               if n != "lm_head.weight"}                                # tied: lm_head is embed_tokens
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(TINY / f, folder / f)
    return folder


# --- evaluation ----------------------------------------------------------------------------------

def evaluate_model(folder, args, log, backend=None) -> dict:
    """Greedy accuracy per level (no-think, and think at each budget) and ThinkFollow through the soft switch."""
    model = miniqwen3.load(folder, backend=backend)
    t0 = time.perf_counter()
    rows = []
    for conv in arithmetic_eval_set(n_per_level=args.eval_per_level, seed=args.eval_seed):
        prompt, want = conv.messages[:-1], conv.problem.result
        r = model.generate(prompt, enable_thinking=False, temperature=0, max_new_tokens=40)
        row = {"level": conv.problem.level, "no-think": parse_answer(r.answer) == want}
        runs = budget_runs(model, prompt, BUDGETS, args.eval_max_new, enable_thinking=True, temperature=0)
        for b, r in runs.items():
            row[budget_name(b)] = parse_answer(r.answer) == want
            row[f"spent {budget_name(b)}"] = r.thinking_tokens
        row["stop sentence"] = STOP_TEXT.strip() in runs[None].thinking + runs[None].answer    # no budget, yet cut
        rows.append(row)
    arith_seconds = time.perf_counter() - t0
    columns = ["no-think"] + [budget_name(b) for b in BUDGETS]
    acc = {c: {**{f"L{lv}": rate([r[c] for r in rows if r["level"] == lv]) for lv in (1, 2, 3, 4)},
               "all": rate([r[c] for r in rows])} for c in columns}
    spent = {budget_name(b): float(np.mean([r[f"spent {budget_name(b)}"] for r in rows])) for b in BUDGETS}
    t1 = time.perf_counter()
    follow = think_follow(model, switching_conversations(args.follow_n), max_new_tokens=args.eval_max_new,
                          temperature=0)
    out = {"accuracy": acc, "thinking_tokens": spent,
           "stop_sentence_unbudgeted": rate([r["stop sentence"] for r in rows]),
           "think_follow": {"all": rate([f["followed"] for f in follow]),
                            "/think": rate([f["followed"] for f in follow if f["want_thinking"]]),
                            "/no_think": rate([f["followed"] for f in follow if not f["want_thinking"]])},
           "seconds": {"arithmetic": arith_seconds, "think_follow": time.perf_counter() - t1},
           "backend": model.backend}
    a, f = acc["unlimited"]["all"], out["think_follow"]["all"]
    log(f"  eval {folder}: think unlimited {100 * a['rate']:.1f}% [{100 * a['low']:.1f}, {100 * a['high']:.1f}], "
        f"no-think {100 * acc['no-think']['all']['rate']:.1f}%, ThinkFollow {100 * f['rate']:.1f}% "
        f"({time.perf_counter() - t0:.0f} s)")
    return out


def budget_name(b) -> str:
    return "unlimited" if b is None else f"B={b}"


# --- reporting -----------------------------------------------------------------------------------

def pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def markdown(report: dict) -> str:
    s = report["setup"]
    lines = [
        "# Strong-to-weak distillation: four dense students of the tiny Qwen3-MoE",
        "",
        f"Written by `python scripts/distill.py` ({report['wall_minutes']:.0f} min on {s['threads']} threads, "
        f"{report['finished']}). Numbers as measured; data in `results.json`.",
        "",
        f"Student: dense Qwen3 ({s['student']['num_hidden_layers']} layers, hidden {s['student']['hidden_size']}, "
        f"{s['student_parameters'] / 1e6:.2f} M parameters, tied embeddings), every run from the same initial "
        f"weights (seed {s['seed']}). Teacher: the embedded tiny Qwen3-MoE ({s['teacher_parameters'] / 1e6:.2f} M "
        f"parameters). Off-policy: the teacher's top-k logits, k = {s['k']}, temperature tau = {s['tau']} "
        f"(forward KL, tau^2-scaled). On-policy: the student samples replies at tau = {s['tau']}, "
        f"loss {s['on_policy_loss']} reverse KL; from {100 * s['on_policy_from']:.0f}% of the tokens on. "
        f"Equal student tokens: {s['tokens'] / 1e6:.2f} M for runs 1-3.",
        "",
        f"Held-out arithmetic, greedy: accuracy in % with 95% Wilson intervals ({s['eval_per_level']} questions per "
        f"level); think mode with no budget (unlimited) per level, and all levels at each budget. ThinkFollow: the "
        f"soft switch on {s['follow_n']} held-out multi-turn conversations whose flags switch the mode.",
        "",
        "| model | L1 | L2 | L3 | L4 | all, think | all, no-think | ThinkFollow | student tokens | teacher tokens "
        "| sampled tokens | wall s (train + sample + teacher) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["models"].items():
        a, c = r["eval"]["accuracy"], r.get("cost")
        cells = [name] + [f"{100 * a['unlimited'][f'L{lv}']['rate']:.0f}" for lv in (1, 2, 3, 4)]
        cells += [pct(a["unlimited"]["all"]), pct(a["no-think"]["all"]), pct(r["eval"]["think_follow"]["all"])]
        if c:
            cells += [f"{c['student_tokens'] / 1e6:.2f} M", f"{c['teacher_tokens'] / 1e6:.2f} M",
                      f"{c['sampled_tokens'] / 1e6:.3f} M",
                      f"{wall(c):.0f} ({c['train_seconds']:.0f} + {c['sample_seconds']:.0f} + "
                      f"{c['teacher_seconds']:.0f})"]
        else:
            cells += ["-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "All levels, by thinking budget (%, 95% Wilson interval):", "",
              "| model | " + " | ".join(report["columns"]) + " |", "|---|" + "---|" * len(report["columns"])]
    for name, r in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(pct(r["eval"]["accuracy"][c]["all"]) for c in report["columns"]) + " |")
    lines += ["", "Per level, think mode with no budget (%, 95% Wilson interval):", "",
              "| model | L1 | L2 | L3 | L4 |", "|---|---|---|---|---|"]
    for name, r in report["models"].items():
        lines.append(f"| {name} | " + " | ".join(pct(r["eval"]["accuracy"]["unlimited"][f"L{lv}"])
                                                  for lv in (1, 2, 3, 4)) + " |")
    stops = {n: r["eval"]["stop_sentence_unbudgeted"] for n, r in report["models"].items()
             if "stop_sentence_unbudgeted" in r["eval"]}
    if stops:
        lines += ["", "Replies with no budget that write the budget stop sentence anyway (%, think mode): "
                  + "; ".join(f"{n} {pct(r)}" for n, r in stops.items()) + "."]
    lines += ["", f"Shipped: `{report['shipped']['run']}` as `{report['shipped']['folder']}` "
                  f"(the best all-levels accuracy at unlimited budget, then ThinkFollow).", ""]
    return "\n".join(lines)


def ship_readme(report: dict) -> str:
    """README.md of the shipped student: what it is, how it was made, what it scored (from the report)."""
    s, best = report["setup"], report["shipped"]["run"]
    m = report["models"][best]
    a, c, st = m["eval"]["accuracy"], m["cost"], s["student"]
    kl = f"the teacher's top-k logits stored (k = {s['k']}, tau = {s['tau']})"
    how = {RUNS[0]: "next-token cross-entropy on the corpus' replies, no teacher",
           RUNS[1]: f"off-policy distillation: forward KL to {kl}",
           RUNS[2]: f"off-policy distillation (forward KL to {kl}) for {100 * s['on_policy_from']:.0f}% of the tokens, "
                    f"then on-policy ({s['on_policy_loss']} reverse KL on its own samples at tau = {s['tau']})",
           RUNS[3]: "next-token cross-entropy on the corpus' replies, no teacher, given the tokens that take the most "
                    "expensive distillation run's wall time"}
    return "\n".join([
        "# miniqwen3 tiny-student: a dense Qwen3 student of the tiny Qwen3-MoE",
        "",
        "`miniqwen3.load(\"tiny-student\")`. A real `Qwen3ForCausalLM` checkpoint (config keys of a real dense Qwen3, "
        "bf16 safetensors, tied embeddings) that transformers loads and whose logits miniqwen3 reproduces to 1e-4 "
        "(`tests/test_student.py`). It shares the teacher's tokenizer files, vocabulary and special ids "
        "(`miniqwen3/data/tiny`), so the teacher's logits are targets for its own.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | dense Qwen3: {st['num_hidden_layers']} layers, hidden {st['hidden_size']}, "
        f"{st['num_attention_heads']} query / {st['num_key_value_heads']} KV heads (head_dim {st['head_dim']}), SwiGLU "
        f"width {st['intermediate_size']}, QK-Norm, RoPE theta as the teacher's; {s['student_parameters'] / 1e6:.2f} M "
        f"parameters |",
        f"| made by | `python scripts/distill.py` ({report['finished']}): the run `{best}`, the best of four students "
        f"by all-levels accuracy at unlimited thinking, then ThinkFollow |",
        f"| training | {how[best]}; {c['student_tokens'] / 1e6:.2f} M student tokens from the same initial weights as "
        f"the other three (seed {s['seed']}); "
        f"{c['teacher_tokens'] / 1e6:.2f} M teacher forward tokens, {c['sampled_tokens'] / 1e6:.3f} M tokens sampled by "
        f"the student; {(c['train_seconds'] + c['sample_seconds'] + c['teacher_seconds']) / 60:.1f} min on "
        f"{s['threads']} CPU threads |",
        f"| data | arithmetic conversations of the teacher's generator (`miniqwen3.corpus`), replies only |",
        f"| held-out arithmetic (greedy, think mode, no budget) | all levels {pct(a['unlimited']['all'])}%; "
        + ", ".join(f"L{lv} {100 * a['unlimited'][f'L{lv}']['rate']:.0f}%" for lv in (1, 2, 3, 4))
        + f"; no-think {pct(a['no-think']['all'])}% ({s['eval_per_level']} questions per level, 95% Wilson intervals) |",
        f"| ThinkFollow (soft switch) | {pct(m['eval']['think_follow']['all'])}% of {s['follow_n']} held-out "
        f"conversations whose flags switch the mode |",
        "",
        "All four students, the teacher, and the costs: `docs/distill/results.md`; notebook 09 steps through one "
        "distillation step and shows them.",
        "",
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/distill", help="results.json and results.md go here")
    ap.add_argument("--chart", default="docs/img/distill.png")
    ap.add_argument("--build", default="build/distill", help="every student's exported checkpoint")
    ap.add_argument("--ship", default="miniqwen3/data/tiny-student", help="the best student goes here ('' skips)")
    ap.add_argument("--tokens", type=float, default=2.5e6, help="student tokens of runs 1-3")
    ap.add_argument("--batch-tokens", type=int, default=4096, help="corpus tokens per training step")
    ap.add_argument("--on-policy-batch", type=int, default=48, help="prompts sampled per on-policy step")
    ap.add_argument("--on-policy-from", type=float, default=0.5, help="share of run 3's tokens spent off-policy")
    ap.add_argument("--on-policy-loss", choices=("full", "sampled"), default="full")
    ap.add_argument("--max-new", type=int, default=96, help="tokens a sampled reply may have")
    ap.add_argument("--k", type=int, default=32, help="teacher logits stored per position")
    ap.add_argument("--tau", type=float, default=1.0, help="distillation temperature")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-per-level", type=int, default=60)
    ap.add_argument("--eval-seed", type=int, default=1234)
    ap.add_argument("--eval-max-new", type=int, default=128)
    ap.add_argument("--follow-n", type=int, default=100)
    ap.add_argument("--skip-teacher-eval", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_start = time.time()

    def log(msg):
        print(f"[{(time.time() - t_start) / 60:5.1f} min] {msg}", flush=True)

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    config = student_config(TINY, num_hidden_layers=args.layers, hidden_size=args.hidden,
                            intermediate_size=3 * args.hidden)
    pad = config["bos_token_id"]                                             # <|endoftext|>, as the teacher's
    teacher = Teacher(TINY, args.k)
    batches = Batches(tok, args.seed, args.batch_tokens, pad)
    N = int(args.tokens)
    n_student = sum(p.numel() for p in new_student(config, args.seed).parameters())
    n_teacher = sum(p.numel() for p in teacher.model.parameters())
    log(f"student {n_student / 1e6:.2f} M parameters, teacher {n_teacher / 1e6:.2f} M; {N / 1e6:.2f} M student "
        f"tokens per run; k = {args.k}, tau = {args.tau}")

    build = Path(args.build)
    trained = {}
    plan = [(RUNS[0], None, None), (RUNS[1], teacher, None), (RUNS[2], teacher, args.on_policy_from)]
    for name, t, on_from in plan:
        log(f"training {name}")
        prompts = Prompts(tok, args.seed + 1) if on_from is not None else None
        model, cost, hist = train(name, config, args, batches, t, prompts, N, on_from, log)
        trained[name] = (export(model, build / slug(name)), cost, hist)
    w_base = wall(trained[RUNS[0]][1])
    w_max = max(wall(trained[n][1]) for n in RUNS[1:3])
    extra = int(N * w_max / w_base)
    log(f"training {RUNS[3]}: {extra / 1e6:.2f} M tokens (baseline {w_base:.0f} s, most expensive distillation "
        f"{w_max:.0f} s)")
    model, cost, hist = train(RUNS[3], config, args, batches, None, None, extra, None, log)
    trained[RUNS[3]] = (export(model, build / slug(RUNS[3])), cost, hist)

    models = {}
    for name, (folder, cost, hist) in trained.items():
        log(f"evaluating {name}")
        models[name] = {"cost": cost, "eval": evaluate_model(folder, args, log), "folder": str(folder),
                        "history": hist[:: max(1, len(hist) // 200)]}
    if not args.skip_teacher_eval:
        log("evaluating the teacher")
        models["teacher (tiny MoE)"] = {"eval": evaluate_model(TINY, args, log, backend="numba"), "folder": str(TINY)}

    def score(n):
        e = models[n]["eval"]
        return e["accuracy"]["unlimited"]["all"]["rate"], e["think_follow"]["all"]["rate"]
    best = max(RUNS, key=score)
    shipped = {"run": best, "folder": args.ship or None}
    if args.ship:
        ship = REPO / args.ship if not Path(args.ship).is_absolute() else Path(args.ship)
        ship.mkdir(parents=True, exist_ok=True)
        for f in Path(models[best]["folder"]).iterdir():
            shutil.copyfile(f, ship / f.name)
        shipped["files"] = sorted(f.name for f in ship.iterdir()) + ["README.md"]
    report = {
        "setup": {"student": {k: config[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                     "num_attention_heads", "num_key_value_heads", "head_dim")},
                  "student_parameters": n_student, "teacher_parameters": n_teacher, "k": args.k, "tau": args.tau,
                  "tokens": N, "on_policy_from": args.on_policy_from, "on_policy_loss": args.on_policy_loss,
                  "lr": args.lr, "batch_tokens": args.batch_tokens, "on_policy_batch": args.on_policy_batch,
                  "max_new": args.max_new, "seed": args.seed, "threads": args.threads,
                  "eval_per_level": args.eval_per_level, "eval_seed": args.eval_seed, "follow_n": args.follow_n,
                  "eval_max_new": args.eval_max_new, "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                  "torch": torch.__version__},
        "columns": ["no-think"] + [budget_name(b) for b in BUDGETS],
        "models": models, "shipped": shipped,
        "wall_minutes": (time.time() - t_start) / 60, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "results.md").write_text(markdown(report))
    if args.ship:
        (ship / "README.md").write_text(ship_readme(report))
    from miniqwen3 import viz
    fig = viz.distill_results(report)
    Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.chart, dpi=110, bbox_inches="tight")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {args.chart}; best: {best}"
        + (f", shipped to {args.ship}" if args.ship else " (not shipped: --ship '')"))


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


if __name__ == "__main__":
    main()
