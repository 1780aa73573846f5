"""The corpus of the embedded tiny model: arithmetic conversations in Qwen3's chat format, English prose and
Python code. Deterministic (every function takes a seed or a `random.Random`), with held-out evaluation splits.

Arithmetic, at four levels of difficulty (the operand `a` has `level` digits):

    level 1   a, b in 0..9            +  -  *
    level 2   a 2 digits, b 1-2       +  -      a 2 digits * b 2..9
    level 3   a 3 digits, b 1-3       +  -      a 3 digits * b 2..9
    level 4   a 4 digits, b 1-4       +  -      a 4 digits * b 2..9

Subtraction keeps a >= b. A problem (a, op, b) is held out for evaluation when crc32("a op b") % 10 == 0; the
training stream never contains it (its digit facts still occur inside other problems' steps).

Thinking mode writes the work digit by digit, least significant column first, carries and borrows written out,
then the answer (the reasoning goes in `<think>`, as Qwen3 writes it):

    <think>
    1234+5678
    ones:4+8=12 c1
    tens:3+7+1=11 c1
    hundreds:2+6+1=9 c0
    thousands:1+5=6 c0
    </think>

    1234 + 5678 = 6912

Non-thinking mode writes the empty block `<think>\\n\\n</think>\\n\\n` and the answer only. The mode of a turn
follows the last `/think` or `/no_think` flag in the user or system messages so far (thinking when there is
none), as in the Qwen3 report's thinking-mode fusion data; multi-turn conversations change the flag between
turns. A quarter of the thinking turns are cut short after a random number of words and end with the budget
stop sentence (`miniqwen3.budget.STOP_TEXT`), then the answer, so the model has seen what a thinking budget does.

Questions are phrased in six languages (en, zh, fr, de, es, ja) so that routing by language can be measured;
prose (`pydoc_data.topics`, the standard library's documentation topics) and code (the standard library's
own `.py` files) let routing by domain be measured. Both come with every Python installation; the split
depends on the installed Python version.
"""
from __future__ import annotations

import json
import random
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import regex

from .budget import STOP_TEXT
from .chat import EMPTY_THINK, render_chat, resolve_thinking

LEVELS = (1, 2, 3, 4)
LANGUAGES = ("en", "zh", "fr", "de", "es", "ja")
PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands")
PRETOKENIZE = regex.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
"""Qwen's pre-tokenizer regex: a BPE token never crosses a match boundary, so cutting text between matches
cuts it between tokens."""

# The question in each language: {a} {op} {b} with a symbol, or the operation as a word.
SYMBOL_TEMPLATES = {
    "en": ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.", "{a} {op} {b} = ?",
           "Please work out {a} {op} {b}."],
    "zh": ["{a} {op} {b} 等于多少？", "计算 {a} {op} {b}。", "请算一下 {a} {op} {b}。", "{a} {op} {b} = ？"],
    "fr": ["Combien font {a} {op} {b} ?", "Calcule {a} {op} {b}.", "Que vaut {a} {op} {b} ?"],
    "de": ["Was ist {a} {op} {b}?", "Berechne {a} {op} {b}.", "Wie viel ergibt {a} {op} {b}?"],
    "es": ["¿Cuánto es {a} {op} {b}?", "Calcula {a} {op} {b}.", "¿Qué resultado da {a} {op} {b}?"],
    "ja": ["{a} {op} {b} はいくつですか？", "{a} {op} {b} を計算してください。", "{a} {op} {b} は？"],
}
WORD_TEMPLATES = {
    "en": ["What is {a} {w} {b}?", "How much is {a} {w} {b}?"],
    "zh": ["{a} {w} {b} 等于多少？", "{a} {w} {b} 是多少？"],
    "fr": ["Combien font {a} {w} {b} ?", "Que donne {a} {w} {b} ?"],
    "de": ["Was ist {a} {w} {b}?", "Wie viel ist {a} {w} {b}?"],
    "es": ["¿Cuánto es {a} {w} {b}?", "¿Cuánto da {a} {w} {b}?"],
    "ja": ["{a} {w} {b} はいくつ？", "{a} {w} {b} は何ですか？"],
}
OP_WORDS = {
    "en": {"+": "plus", "-": "minus", "*": "times"},
    "zh": {"+": "加", "-": "减", "*": "乘以"},
    "fr": {"+": "plus", "-": "moins", "*": "fois"},
    "de": {"+": "plus", "-": "minus", "*": "mal"},
    "es": {"+": "más", "-": "menos", "*": "por"},
    "ja": {"+": "足す", "-": "引く", "*": "掛ける"},
}
OP_SYMBOLS = {"+": ["+"], "-": ["-"], "*": ["×", "*"]}
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a careful calculator.", "You are Qwen, a helpful assistant."]
FOLLOW_UPS = {"en": "And ", "zh": "那么，", "fr": "Et ", "de": "Und ", "es": "Y ", "ja": "では、"}


# --- arithmetic ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    a: int
    op: str   # "+", "-" or "*"
    b: int

    @property
    def result(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b if self.op == "-" else self.a * self.b

    @property
    def level(self) -> int:
        return len(str(self.a))

    def __str__(self) -> str:
        return f"{self.a}{self.op}{self.b}"


def is_held_out(p: Problem) -> bool:
    """The evaluation split: one problem in ten, chosen by a hash of its text."""
    return zlib.crc32(str(p).encode()) % 10 == 0


def sample_problem(rng: random.Random, level: int) -> Problem:
    """A random problem of the level (see the module docstring); any split."""
    op = rng.choice("+-*")
    if level == 1:
        a, b = rng.randrange(10), rng.randrange(10)
    else:
        a = rng.randrange(10 ** (level - 1), 10 ** level)
        if op == "*":
            b = rng.randrange(2, 10)
        else:
            digits = level if rng.random() < 0.6 else rng.randrange(1, level + 1)
            b = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
    if op == "-" and b > a:
        a, b = b, a
    if op == "+" and rng.random() < 0.5 and len(str(b)) == len(str(a)):
        a, b = b, a
    return Problem(a, op, b)


def sample_split_problem(rng: random.Random, level: int, held_out: bool) -> Problem:
    """A random problem of the level from the training (held_out=False) or evaluation split."""
    while True:
        p = sample_problem(rng, level)
        if is_held_out(p) == held_out:
            return p


def think_steps(p: Problem) -> str:
    """The digit-by-digit work, least significant column first: one line per column,
    `{place}:{x}{op}{y}[{carry in}]={column result} c{carry out}` (b{borrow out} for subtraction)."""
    da, db = str(p.a)[::-1], str(p.b)[::-1]
    columns = max(len(da), len(db)) if p.op == "+" else len(da)
    lines, carry = [str(p)], 0
    for k in range(columns):
        x = int(da[k]) if k < len(da) else 0
        if p.op == "+":
            y = int(db[k]) if k < len(db) else 0
            s = x + y + carry
            lines.append(f"{PLACES[k]}:{x}+{y}" + (f"+{carry}" if carry else "") + f"={s} c{s // 10}")
            carry = s // 10
        elif p.op == "-":
            y = int(db[k]) if k < len(db) else 0
            borrow = 1 if x - y - carry < 0 else 0
            d = x - y - carry + 10 * borrow
            lines.append(f"{PLACES[k]}:{x}-{y}" + (f"-{carry}" if carry else "") + f"={d} b{borrow}")
            carry = borrow
        else:
            s = x * p.b + carry
            lines.append(f"{PLACES[k]}:{x}*{p.b}" + (f"+{carry}" if carry else "") + f"={s} c{s // 10}")
            carry = s // 10
    return "\n".join(lines)


def answer_text(p: Problem) -> str:
    """The reply after the think block, the same in every language: `1234 + 5678 = 6912`."""
    return f"{p.a} {'×' if p.op == '*' else p.op} {p.b} = {p.result}"


def parse_answer(text: str) -> int | None:
    """The number after the last `=` of a reply, or None."""
    m = regex.findall(r"=\s*(-?\d+)", text)
    return int(m[-1]) if m else None


def question(p: Problem, lang: str, rng: random.Random) -> str:
    """The problem as a user would ask it in `lang`."""
    if rng.random() < 0.3:
        return rng.choice(WORD_TEMPLATES[lang]).format(a=p.a, b=p.b, w=OP_WORDS[lang][p.op])
    return rng.choice(SYMBOL_TEMPLATES[lang]).format(a=p.a, b=p.b, op=rng.choice(OP_SYMBOLS[p.op]))


def follow_up(q: str, lang: str) -> str:
    """A later question opened with "And ...", "Et ...", "那么，..."."""
    if lang == "es" and q.startswith("¿"):
        return "¿Y " + q[1].lower() + q[2:]
    if lang in ("en", "fr", "de", "es") and not q[0].isdigit():
        q = q[0].lower() + q[1:]
    return FOLLOW_UPS[lang] + q


def with_flag(text: str, flag: str | None, rng: random.Random) -> str:
    """Put `/think` or `/no_think` at the end (mostly) or the start of a message."""
    if flag is None:
        return text
    return f"{text} {flag}" if rng.random() < 0.8 else f"{flag} {text}"


@dataclass
class Conversation:
    """Messages ending with the assistant turn that is trained (or evaluated), and how it was made."""
    messages: list
    problem: Problem
    lang: str
    thinking: bool         # the mode of the last turn, as the flags decide
    hard_switch: bool      # rendered with enable_thinking=False: the empty block is part of the prompt
    cut: int | None = None # thinking cut after this many pre-tokens, then the budget stop sentence

    def to_json(self) -> dict:
        return {"messages": self.messages, "problem": [self.problem.a, self.problem.op, self.problem.b],
                "lang": self.lang, "thinking": self.thinking, "hard_switch": self.hard_switch, "cut": self.cut}

    @classmethod
    def from_json(cls, d: dict) -> "Conversation":
        return cls(d["messages"], Problem(*d["problem"]), d["lang"], d["thinking"], d["hard_switch"], d["cut"])


def sample_conversation(rng: random.Random, held_out: bool = False, level: int | None = None,
                        lang: str | None = None, cut_rate: float = 0.25) -> Conversation:
    """One to three user turns, each an arithmetic question, flags placed and changed at random;
    the reply to the last turn is written out in the mode the flags select."""
    turns = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    lang = lang or rng.choice(LANGUAGES)
    messages = []
    if rng.random() < 0.15:
        messages.append({"role": "system", "content": with_flag(rng.choice(SYSTEM_PROMPTS),
                                                                  rng.choice(("/think", "/no_think", None)), rng)})
    for t in range(turns):
        lv = level if (level is not None and t == turns - 1) else rng.choices(LEVELS, weights=(15, 25, 30, 30))[0]
        p = sample_split_problem(rng, lv, held_out and t == turns - 1)
        q = question(p, lang, rng)
        if t > 0 and rng.random() < 0.3:
            q = follow_up(q, lang)
        flag = rng.choices(("/think", "/no_think", None), weights=(3, 4, 3))[0]
        messages.append({"role": "user", "content": with_flag(q, flag, rng)})
        if t < turns - 1:
            # Earlier replies lose their reasoning in the template; only the answer stays.
            messages.append({"role": "assistant", "content": answer_text(p)})
    thinking = resolve_thinking(messages)
    hard_switch = not thinking and rng.random() < 0.25
    cut = None
    if thinking and rng.random() < cut_rate:
        cut = rng.randrange(len(PRETOKENIZE.findall(think_steps(p))))
    reply = {"role": "assistant", "content": answer_text(p)}
    if thinking:
        reply["reasoning_content"] = think_steps(p)
    messages.append(reply)
    return Conversation(messages, p, lang, thinking, hard_switch, cut)


def conversation_segments(conv: Conversation) -> list[tuple[str, bool]]:
    """The conversation as (text, trained) pieces whose concatenation is the chat template's text.

    The prompt (everything up to `<|im_start|>assistant\\n`, and the empty think block in a hard switch) is
    not trained; the reply up to and including `<|im_end|>` is. A cut reply is split where the budget counter
    would force its ids, so each piece is tokenized on its own as the generator does it."""
    prompt = render_chat(conv.messages[:-1], add_generation_prompt=True,
                         enable_thinking=False if conv.hard_switch else None)
    p = conv.problem
    if not conv.thinking:
        if conv.hard_switch:
            return [(prompt, False), (answer_text(p) + "<|im_end|>", True)]
        return [(prompt, False), (EMPTY_THINK + answer_text(p) + "<|im_end|>", True)]
    if conv.cut is None:
        return [(prompt, False), (f"<think>\n{think_steps(p)}\n</think>\n\n{answer_text(p)}<|im_end|>", True)]
    partial = "".join(PRETOKENIZE.findall(think_steps(p))[:conv.cut])
    return [(prompt, False), ("<think>\n" + partial, True), (STOP_TEXT, True),
            ("</think>\n\n" + answer_text(p) + "<|im_end|>", True)]


def conversation_text(conv: Conversation) -> str:
    """The full text of the conversation (what the tokenizer is trained on)."""
    return "".join(text for text, _ in conversation_segments(conv)) + "\n"


# --- prose and code ------------------------------------------------------------------------------

def _name_held_out(name: str) -> bool:
    return zlib.crc32(name.encode()) % 10 == 0


def prose_documents(held_out: bool = False) -> list[tuple[str, str]]:
    """(topic, text) of the standard library's documentation topics (`pydoc_data.topics`), in name order."""
    from pydoc_data.topics import topics
    return [(k, topics[k].strip() + "\n") for k in sorted(topics) if _name_held_out(k) == held_out]


def code_documents(held_out: bool = False, max_chars: int = 24_000,
                   total_chars: int = 1_600_000) -> list[tuple[str, str]]:
    """(file name, source) of the standard library's top-level `.py` files, in name order; each cut to its
    first max_chars characters, and no more than total_chars in all."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(stdlib.glob("*.py")):
        if _name_held_out(path.name) != held_out:
            continue
        try:
            text = path.read_text(encoding="utf-8")[:max_chars]
        except (UnicodeDecodeError, OSError):
            continue
        if total + len(text) > total_chars:
            break
        out.append((path.name, text))
        total += len(text)
    return out


# --- evaluation sets -----------------------------------------------------------------------------

def arithmetic_eval_set(n_per_level: int = 100, seed: int = 1234) -> list[Conversation]:
    """Held-out single-turn questions, n per level, languages in turn, no flag (the mode is set by the caller)."""
    rng = random.Random(seed)
    out = []
    for level in LEVELS:
        for i in range(n_per_level):
            lang = LANGUAGES[i % len(LANGUAGES)]
            p = sample_split_problem(rng, level, held_out=True)
            messages = [{"role": "user", "content": question(p, lang, rng)},
                        {"role": "assistant", "content": answer_text(p)}]
            out.append(Conversation(messages, p, lang, True, False))
    return out


def flag_eval_set(n: int = 200, seed: int = 4321) -> list[Conversation]:
    """Held-out conversations whose last mode is set by a flag (single and multi-turn), half /think, half /no_think."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        conv = sample_conversation(rng, held_out=True, cut_rate=0.0)
        has_flag = any(f in m["content"] for m in conv.messages[:-1] for f in ("/think", "/no_think")
                       if m["role"] != "assistant")
        want_thinking = len(out) % 2 == 0
        if has_flag and conv.thinking == want_thinking:
            out.append(conv)
    return out


# --- writing the corpus --------------------------------------------------------------------------

def write_corpus(out_dir, n_train: int = 200_000, seed: int = 0) -> dict:
    """Write the training and evaluation files into out_dir:
    train_chat.jsonl (conversations), train_prose.jsonl, train_code.jsonl, eval_prose.jsonl, eval_code.jsonl,
    eval_arith.jsonl, eval_flags.jsonl, and tokenizer_text.txt (all training text, for the BPE trainer)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    counts = {}
    with open(out / "train_chat.jsonl", "w", encoding="utf-8") as f, \
            open(out / "tokenizer_text.txt", "w", encoding="utf-8") as text:
        for _ in range(n_train):
            conv = sample_conversation(rng)
            f.write(json.dumps(conv.to_json(), ensure_ascii=False) + "\n")
            text.write(conversation_text(conv))
        counts["train_chat"] = n_train
        for kind, docs in (("prose", prose_documents), ("code", code_documents)):
            for split in ("train", "eval"):
                items = docs(held_out=split == "eval")
                with open(out / f"{split}_{kind}.jsonl", "w", encoding="utf-8") as g:
                    for name, body in items:
                        g.write(json.dumps({"name": name, "text": body}, ensure_ascii=False) + "\n")
                        if split == "train":
                            text.write(body + "<|endoftext|>\n")
                counts[f"{split}_{kind}"] = len(items)
    for name, convs in (("eval_arith", arithmetic_eval_set()), ("eval_flags", flag_eval_set())):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as g:
            for conv in convs:
                g.write(json.dumps(conv.to_json(), ensure_ascii=False) + "\n")
        counts[name] = len(convs)
    return counts


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
