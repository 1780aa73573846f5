"""The thinking-budget counter: stop Qwen3's thinking after B tokens and let it answer.

Qwen3 technical report, section 4.3: when the thinking reaches the user's budget, halt it and insert
"Considering the limited time by the user, I have to give the solution based on the thinking directly now.\\n</think>.\\n\\n";
the model then answers from its partial reasoning (an ability that emerged from thinking-mode fusion).

`ThinkingBudget` is the step-by-step state machine that does this inside a generation loop, in the spirit of
llama.cpp's reasoning budget. It knows nothing of the model or the tokenizer, only token ids:

    OUTSIDE ──<think>──> THINKING ──n reaches B──> FORCING ──forced ids emitted──> ANSWERING
        │                   │  └──n reaches B mid-character──> WAITING_BOUNDARY ──boundary──> FORCING
        └──</think>─────────┴──</think> (the model closes the block itself)──────────────> ANSWERING

Each generation step:

    forced = counter.next_forced()               # an id to emit instead of sampling, or None
    token = forced if forced is not None else sample(logits)
    counter.observe(token, at_char_boundary=...) # after every emitted token, forced or sampled

What is forced (ids, not text, so the markers are single tokens):
    budget B >= 1:  stop_ids + [end_think_id] + gap_ids, i.e. by default the tokens of QWEN_STOP_TEXT,
                    "\\n\\nConsidering ... directly now.\\n", then "</think>" and "\\n\\n".
                    Three versions of the sentence exist:
                    REPORT_STOP_TEXT  the report's, as printed: no newline before it, and a "." after "</think>"
                                      (the chat template never writes one there; it is left out);
                    QWEN_STOP_TEXT    Qwen's thinking-budget example (Qwen3 docs, getting_started/thinking_budget):
                                      "\\n\\n" first, so a cut in mid-line does not glue the sentence to the last
                                      word; what real checkpoints get (`miniqwen3.generate.stop_text_for`);
                    TINY_STOP_TEXT    what the embedded tiny model was trained with (`miniqwen3.corpus`: the
                                      sentence right after the cut, no newline), so the tiny model keeps it.
    budget B == 0:  gap_ids + [end_think_id] + gap_ids, "\\n\\n</think>\\n\\n": after the "<think>" the model
                    writes, this is the empty block "<think>\\n\\n</think>\\n\\n" that the template prefills for
                    enable_thinking=False, so with B = 0 the reply goes on as under the hard switch, token for
                    token. There is no partial reasoning to apologise for.

`n` counts the thinking tokens the model sampled: every token after `<think>` (or after a prompt that ends
inside the block) and before `</think>`; the markers and the forced tokens are not counted. When the stop
fires, n == B, or B + k if k more tokens were needed to finish a UTF-8 character.
"""
import numbers
from dataclasses import dataclass, field
from enum import Enum

THINK_ID = 151667
END_THINK_ID = 151668
SENTENCE = "Considering the limited time by the user, I have to give the solution based on the thinking directly now."
REPORT_STOP_TEXT = SENTENCE + "\n</think>.\n\n"     # the report, section 4.3, character for character
QWEN_STOP_TEXT = "\n\n" + SENTENCE + "\n"           # Qwen's example; then </think> and "\n\n"
TINY_STOP_TEXT = SENTENCE + "\n"                     # the embedded tiny model's training data
STOP_TEXT = TINY_STOP_TEXT                           # the name miniqwen3.corpus writes the training data with
GAP_TEXT = "\n\n"


class BudgetState(str, Enum):
    """Where the generation is relative to the think block."""
    OUTSIDE = "outside"                    # before <think>; nothing is counted
    THINKING = "thinking"                  # inside the block, counting n
    WAITING_BOUNDARY = "waiting_boundary"  # n reached B, but the bytes so far end mid-character
    FORCING = "forcing"                    # emitting the forced ids one by one
    ANSWERING = "answering"                # after </think>; the counter is frozen


def ends_at_char_boundary(data):
    """True when the bytes `data` end on a whole UTF-8 character (or are empty).

    Walk back over at most three continuation bytes (10xxxxxx) to the lead byte; the lead byte says how long its
    character is (0xxxxxxx 1, 110xxxxx 2, 1110xxxx 3, 11110xxx 4). The text ends mid-character when fewer bytes
    follow the lead than it announces. Invalid bytes count as a boundary: a decoder replaces them and moves on.
    """
    i, trailing = len(data) - 1, 0
    while i >= 0 and trailing < 3 and data[i] & 0xC0 == 0x80:
        i, trailing = i - 1, trailing + 1
    if i < 0:
        return True
    lead = data[i]
    if lead >> 5 == 0b110:
        length = 2
    elif lead >> 4 == 0b1110:
        length = 3
    elif lead >> 3 == 0b11110:
        length = 4
    else:
        length = 1
    return trailing + 1 >= length


def _check_budget(budget):
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"thinking budget must be a whole number of tokens or None (unlimited), got {budget!r}")
    if budget < 0:
        raise ValueError(f"thinking budget must be >= 0 tokens (0 means no thinking), got {budget}")
    return int(budget)


@dataclass
class ThinkingBudget:
    """A steppable counter that halts thinking after `budget` tokens.

    budget: thinking tokens allowed, None for unlimited, 0 for no thinking at all.
    think_id, end_think_id: the ids of `<think>` and `</think>` (151667 and 151668 in Qwen3).
    stop_ids: the ids of the stop sentence (QWEN_STOP_TEXT by default in `from_encode`).
    gap_ids: the ids of "\\n\\n", written after `</think>` (and before it when budget is 0).
    Left empty, stop_ids and gap_ids make the counter force the bare `</think>`.

    Read while stepping: `state`, `n`, `tripped` (the counter cut the thinking short), `pending` (forced ids
    still to emit), `channel` ("thinking" or "answer" for the token just observed; None before the first).
    """
    budget: int | None
    think_id: int = THINK_ID
    end_think_id: int = END_THINK_ID
    stop_ids: tuple = ()
    gap_ids: tuple = ()
    state: BudgetState = field(default=BudgetState.OUTSIDE, init=False)
    n: int = field(default=0, init=False)
    tripped: bool = field(default=False, init=False)
    pending: list = field(default_factory=list, init=False)
    channel: str | None = field(default=None, init=False)

    def __post_init__(self):
        self.budget = _check_budget(self.budget)
        if self.think_id == self.end_think_id:
            raise ValueError(f"think_id and end_think_id must differ, both are {self.think_id}")
        self.stop_ids, self.gap_ids = tuple(self.stop_ids), tuple(self.gap_ids)
        for name, ids in (("stop_ids", self.stop_ids), ("gap_ids", self.gap_ids)):
            if self.think_id in ids or self.end_think_id in ids:
                raise ValueError(f"{name} must not contain <think> ({self.think_id}) or </think> "
                                 f"({self.end_think_id}); the counter inserts </think> itself")

    @classmethod
    def from_encode(cls, budget, encode, think_id=THINK_ID, end_think_id=END_THINK_ID,
                    stop_text=QWEN_STOP_TEXT, gap_text=GAP_TEXT):
        """A counter whose stop sentence and gap are `encode(stop_text)` and `encode(gap_text)`;
        `encode` is any str -> list of ids function (e.g. a tokenizer's encode without special tokens)."""
        return cls(budget, think_id, end_think_id, tuple(encode(stop_text)), tuple(encode(gap_text)))

    @property
    def forced_ids(self):
        """What the counter forces when the budget runs out: stop_ids, </think>, gap_ids (B = 0: gap, </think>, gap)."""
        if self.budget == 0:
            return self.gap_ids + (self.end_think_id,) + self.gap_ids
        return self.stop_ids + (self.end_think_id,) + self.gap_ids

    @property
    def done(self):
        """True once the think block is closed (by the model or by the forced ids)."""
        return self.state is BudgetState.ANSWERING

    @property
    def remaining(self):
        """Thinking tokens left before the stop, None when unlimited."""
        return None if self.budget is None else max(self.budget - self.n, 0)

    def start(self, prompt_ends_inside_think=False, prompt_closed_think=False):
        """Reset for a new generation. Where the prompt leaves the reply:
          - prompt_ends_inside_think: inside an open `<think>` block (a prefill such as "<think>\n"): counting
            starts at once;
          - prompt_closed_think: after a closed block (the hard switch, enable_thinking=False, prefills the empty
            block `<think>\n\n</think>\n\n`): nothing is counted, any later `<think>` is answer text;
          - neither (Qwen3's template as written, the soft switch): the model decides. When it writes `<think>`,
            counting starts; when it writes the empty block itself, the one token inside ("\n\n") is counted
            and `</think>` closes the block, so a budget B >= 2 is never reached (B = 1 trips on it, B = 0 closes
            the block at once, with the same tokens)."""
        if prompt_ends_inside_think and prompt_closed_think:
            raise ValueError("the prompt cannot both end inside <think> and after a closed think block")
        self.state, self.n, self.tripped, self.pending, self.channel = BudgetState.OUTSIDE, 0, False, [], None
        if prompt_ends_inside_think:
            self._enter_thinking()
        elif prompt_closed_think:
            self.state = BudgetState.ANSWERING

    def next_forced(self):
        """The id the generator must emit next instead of sampling, or None to sample freely."""
        return self.pending[0] if self.state is BudgetState.FORCING else None

    def observe(self, token_id, at_char_boundary=True):
        """Record the token just emitted and return its channel, "thinking" or "answer".

        at_char_boundary: whether all the bytes emitted so far end on a whole UTF-8 character
        (see `ends_at_char_boundary`). The markers `<think>` and `</think>` are on the "thinking" channel.
        One think block per generation: once answering, a later `<think>` is answer text to the counter.
        """
        state = self.state
        if state is BudgetState.OUTSIDE:
            if token_id == self.think_id:
                self.channel = "thinking"
                self._enter_thinking()
            elif token_id == self.end_think_id:
                self.channel, self.state = "thinking", BudgetState.ANSWERING
            else:
                self.channel = "answer"
        elif state in (BudgetState.THINKING, BudgetState.WAITING_BOUNDARY):
            self.channel = "thinking"
            if token_id == self.end_think_id:
                self.state = BudgetState.ANSWERING
            else:
                self.n += 1
                self._check(at_char_boundary)
        elif state is BudgetState.FORCING:
            if token_id != self.pending[0]:
                raise ValueError(f"the thinking budget is forcing token {self.pending[0]}, but {token_id} was emitted; "
                                 "emit next_forced() when it is not None")
            self.pending.pop(0)
            # Forced tokens up to and including </think> close the thinking; the gap after it opens the answer.
            closing = token_id == self.end_think_id or self.end_think_id in self.pending
            self.channel = "thinking" if closing else "answer"
            if not self.pending:
                self.state = BudgetState.ANSWERING
        else:
            self.channel = "answer"
        return self.channel

    def _enter_thinking(self):
        self.state, self.n = BudgetState.THINKING, 0
        self._check(at_char_boundary=True)

    def _check(self, at_char_boundary):
        """Thinking has n tokens: once n >= B, force the stop at the next character boundary."""
        if self.budget is None or self.n < self.budget:
            return
        if at_char_boundary:
            self.state, self.tripped, self.pending = BudgetState.FORCING, True, list(self.forced_ids)
        else:
            self.state = BudgetState.WAITING_BOUNDARY
