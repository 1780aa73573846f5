"""Generation: the chat prompt, sampling, the thinking-budget counter, and the decode loop.

    prompt  = chat template as written (+ the empty think block with enable_thinking=False)   miniqwen3.chat
    prefill = model.forward(prompt_ids, cache)
    loop:     token = counter.next_forced() or sample(logits)            miniqwen3.budget
              counter.observe(token); logits = model.forward([token], cache)
              (a run of forced tokens is read in one forward pass, after its last token)
    stop on <|im_end|> / <|endoftext|> or after max_new_tokens.

`stream` yields each piece of text with its channel ("thinking" or "answer") and the counter's value;
`generate` collects the thinking, the answer and the statistics.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .budget import QWEN_STOP_TEXT, TINY_STOP_TEXT, ThinkingBudget
from .chat import IM_START, prompt_for_generation
from .tokenizer import TokenizerError


# --- sampling ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 means greedy (argmax)."""
    temperature: float = 0.6
    top_k: int = 20            # 0: off
    top_p: float = 0.95        # 1: off
    min_p: float = 0.0         # 0: off
    presence_penalty: float = 0.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 is off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")


# Qwen's recommended settings (model cards): thinking T 0.6, top_p 0.95, top_k 20, min_p 0 (no greedy);
# non-thinking T 0.7, top_p 0.8, top_k 20, min_p 0; presence_penalty 0 to 1.5 against endless repetition.
RECOMMENDED = {True: Sampling(0.6, 20, 0.95, 0.0), False: Sampling(0.7, 20, 0.8, 0.0)}


def default_sampling(model, thinking: bool) -> Sampling:
    """generation_config.json beside the checkpoint when there is one, else Qwen's recommended values per mode."""
    base = RECOMMENDED[thinking]
    path = model.path / "generation_config.json" if model.path is not None else None
    if path is None or not path.is_file():
        return base
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("do_sample") is False:
        return replace(base, temperature=0.0)
    keys = {"temperature": float, "top_k": int, "top_p": float, "min_p": float, "presence_penalty": float}
    return replace(base, **{k: kind(cfg[k]) for k, kind in keys.items() if cfg.get(k) is not None})


def sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator, seen: np.ndarray | None = None) -> int:
    """One token id from logits [V]: presence penalty on tokens already generated, then
    temperature, top-k, top-p (smallest set with mass >= p), min-p (drop p < min_p * p_max), in that order."""
    logits = logits.astype(np.float64)
    if s.presence_penalty and seen is not None and seen.any():
        logits = np.where(seen, logits - s.presence_penalty, logits)
    if s.temperature == 0:
        return int(np.argmax(logits))
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.size:
        kth = np.partition(logits, -s.top_k)[-s.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if s.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]          # mass of the tokens ranked above
        probs[order[before >= s.top_p]] = 0
    if s.min_p > 0:
        probs[probs < s.min_p * probs.max()] = 0
    probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


# --- the loop ------------------------------------------------------------------------------------

@dataclass
class Piece:
    """One step of a stream: the text it completes (may be "" while a UTF-8 character is unfinished)."""
    text: str
    channel: str               # "thinking" or "answer"
    token_id: int
    forced: bool               # emitted by the budget counter, not sampled
    thinking_tokens: int       # the counter's N after this token


def stop_text_for(model) -> str:
    """The stop sentence the budget counter forces before `</think>`: for the embedded tiny model the text it was
    trained with (TINY_STOP_TEXT, no newline before it: `miniqwen3.corpus`); for every other checkpoint Qwen's
    (QWEN_STOP_TEXT, two newlines first, as in Qwen's thinking-budget example)."""
    from .hub import EMBEDDED
    path = getattr(model, "path", None)
    tiny = path is not None and Path(path).resolve() == EMBEDDED["tiny"].resolve()
    return TINY_STOP_TEXT if tiny else QWEN_STOP_TEXT


def model_tokenizer(model):
    """model.tokenizer, or a TokenizerError saying that the checkpoint has none (generation needs one)."""
    if model.tokenizer is None:
        raise TokenizerError(f"{model.path}: no tokenizer.json beside the checkpoint; generation needs one")
    return model.tokenizer


def reply_think_state(prompt: str) -> str:
    """Where the prompt leaves the reply (the text after the last `<|im_start|>`) relative to the think block:
    "inside" an open `<think>`, after a "closed" block, or "outside" (no `<think>` yet: the model decides)."""
    reply = prompt.rsplit(IM_START, 1)[-1]
    if "<think>" not in reply:
        return "outside"
    return "closed" if "</think>" in reply.rsplit("<think>", 1)[1] else "inside"


@dataclass
class GenerationResult:
    """thinking_mode: whether the reply thought, i.e. its think block holds text the model wrote (whitespace and
    forced tokens do not count). With the soft switch the model chose it; with the hard switch it is False.
    switch: "soft" (the template as written, the model decides) or "hard" (enable_thinking=False, the empty
    block prefilled). budget: as applied (None when the prompt already closed the think block)."""
    thinking: str
    answer: str
    thinking_tokens: int
    budget_tripped: bool
    budget: int | None
    thinking_mode: bool
    switch: str = "soft"
    token_ids: list = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str = ""    # "stop" (end token) or "length" (max_new_tokens)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: generated tokens per second of the decode loop (prefill excluded)."""
        return len(self.token_ids) / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else float("nan")


class Generation:
    """A running generation: iterate it for Pieces; `result()` afterwards gives the GenerationResult."""

    def __init__(self, model, messages, budget=None, enable_thinking=None, max_new_tokens=512, seed=None,
                 sampling: Sampling | None = None, stop_text: str | None = None, tools=None, prefill: str = "",
                 kv_cache: str = "fp32", **overrides):
        tok = model_tokenizer(model)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.tok = model, tok
        # The soft switch by default: the template as written, flags and all; the model decides whether to think.
        # enable_thinking=False is the hard switch: the template prefills the empty think block.
        self.switch = "hard" if enable_thinking is False else "soft"
        # prefill: the start of the reply, written for the model (e.g. "<think>\nFirst,"); when it leaves a
        # think block open, the counter starts inside it
        prompt = prompt_for_generation(messages, enable_thinking, tools) + prefill
        where = reply_think_state(prompt)
        self.prompt_ids = tok.encode(prompt)
        # Sampling defaults: generation_config.json (as every engine reads it), else Qwen's values for the mode
        # asked for; the flags are not read (the model, not the harness, decides the mode).
        self.sampling = replace(sampling or default_sampling(model, enable_thinking is not False), **overrides)
        # A prompt that already closed the think block (the hard switch) leaves nothing to budget.
        self.budget = None if where == "closed" else budget
        self.stop_text = stop_text_for(model) if stop_text is None else stop_text
        self.counter = ThinkingBudget.from_encode(self.budget, tok.encode, tok.think_id, tok.end_think_id,
                                                  stop_text=self.stop_text)
        self.counter.start(prompt_ends_inside_think=where == "inside", prompt_closed_think=where == "closed")
        self.stop_ids = {i for i in (tok.im_end_id, tok.endoftext_id) if i is not None}
        self.max_new_tokens = max_new_tokens
        self.kv_cache = kv_cache
        self.rng = np.random.default_rng(seed)
        self.ids: list[int] = []
        self.channels: list[str] = []
        self.forced: list[bool] = []
        self.finish_reason = ""
        self.prefill_seconds = self.decode_seconds = 0.0

    def __iter__(self):
        model, counter = self.model, self.counter
        decoder = self.tok.stream_decoder()
        # the model's vocabulary is padded past the tokenizer's (Qwen3: 151936 vs 151669): never sample the padding
        n_tokens = min(model.config.vocab_size, self.tok.vocab_size)
        seen = np.zeros(n_tokens, dtype=bool)
        cache = model.new_cache(self.kv_cache)
        t0 = time.perf_counter()
        logits = model.forward(self.prompt_ids, cache, last_only=True)[0]
        t1 = time.perf_counter()
        self.prefill_seconds = t1 - t0
        unread = []                 # tokens emitted that the model has not read yet
        while True:
            forced = counter.next_forced()
            token = forced if forced is not None else sample(logits[:n_tokens], self.sampling, self.rng, seen)
            if token in self.stop_ids:
                self.finish_reason = "stop"
                break
            seen[token] = True
            self.ids.append(token)
            self.forced.append(forced is not None)
            text = decoder.push(token)
            channel = counter.observe(token, at_char_boundary=not decoder.pending)
            self.channels.append(channel)
            yield Piece(text, channel, token, forced is not None, counter.n)
            if len(self.ids) >= self.max_new_tokens:
                self.finish_reason = "length"
                break
            unread.append(token)
            # Forced tokens are known in advance, so no logits are needed between them: the model reads the
            # whole forced run (and the token that tripped the counter) in one pass, as it reads a prompt.
            if counter.next_forced() is None:
                logits = model.forward(unread, cache, last_only=True)[0]
                unread = []
        tail = decoder.flush()
        if tail:
            yield Piece(tail, self.channels[-1] if self.channels else "answer", -1, False, counter.n)
        self.decode_seconds = time.perf_counter() - t1

    def result(self) -> GenerationResult:
        """Thinking = the tokens inside <think>...</think> (markers excluded); answer = the tokens after it.
        thinking_mode = the model's own tokens inside the block are not all whitespace."""
        tok, c = self.tok, self.counter
        inside = [(i, f) for i, ch, f in zip(self.ids, self.channels, self.forced)
                  if ch == "thinking" and i not in (tok.think_id, tok.end_think_id)]
        answer = [i for i, ch in zip(self.ids, self.channels) if ch == "answer"]
        thought = tok.decode([i for i, f in inside if not f]).strip() != ""
        return GenerationResult(
            thinking=tok.decode([i for i, _ in inside]).strip(), answer=tok.decode(answer).strip(),
            thinking_tokens=c.n, budget_tripped=c.tripped, budget=self.budget, thinking_mode=thought,
            switch=self.switch,
            token_ids=list(self.ids), prompt_tokens=len(self.prompt_ids), finish_reason=self.finish_reason,
            prefill_seconds=self.prefill_seconds, decode_seconds=self.decode_seconds)


def stream(model, messages, **options) -> Generation:
    """Iterate the pieces of a generation as they are produced:

        for piece in stream(model, "What is 2 + 3? /think", budget=4):
            print(piece.text, end="")        # piece.channel, piece.thinking_tokens, piece.forced
    """
    return Generation(model, messages, **options)


def generate(model, messages, budget=None, enable_thinking=None, max_new_tokens=512, seed=None, **options):
    """Generate a reply to `messages` (a list of {"role", "content"} dicts, or a string for one user message).

    budget: thinking tokens allowed (None unlimited). It counts from the `<think>` the model writes (or a prefill
    leaves open); the model may close the block before B. B = 0: when the model opens `<think>`, the counter closes
    it at once with "\n\n</think>\n\n", the template's empty block token for token, so the reply continues as
    under the hard switch (budget_tripped is True when it did). Ignored with enable_thinking=False.
    prefill: text the reply starts with, fed to the model before it generates (not part of the result).
    kv_cache: "fp32" (default), "bf16" or "q8_0", how the KV cache holds keys and values (`model.KVCache`): bf16
    halves the bytes a decoded token reads from it, q8_0 (Q8_0 blocks) takes 0.27x, which matters at long context.
    stop_text: the sentence forced when the budget trips (default `stop_text_for(model)`).
    enable_thinking: None or True (the soft switch, as transformers renders Qwen3's template): the prompt is the
    template as written and the model decides, from the /think or /no_think in the messages, whether to think;
    False (the hard switch): the template's empty think block is prefilled.
    Sampling: `sampling=Sampling(...)` or any of temperature, top_k, top_p, min_p, presence_penalty;
    defaults from generation_config.json, else Qwen's recommended values for the mode. temperature=0 is greedy.
    Returns a GenerationResult: .thinking, .answer, .thinking_tokens, .budget_tripped, .tokens_per_second, ..."""
    g = Generation(model, messages, budget=budget, enable_thinking=enable_thinking,
                   max_new_tokens=max_new_tokens, seed=seed, **options)
    for _ in g:
        pass
    return g.result()
