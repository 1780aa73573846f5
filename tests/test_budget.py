"""The thinking-budget counter on scripted token streams (fake ids, no model).

Fake vocabulary: <think> = 1, </think> = 2, stop sentence = 10 11 12, "\\n\\n" = 20, model tokens >= 100.
Every expected stream below is written out by hand from the rules in miniqwen3/budget.py's docstring.
"""
import numpy as np
import pytest

from miniqwen3.budget import (QWEN_STOP_TEXT, REPORT_STOP_TEXT, STOP_TEXT, TINY_STOP_TEXT, BudgetState,
                              ThinkingBudget, ends_at_char_boundary)
from miniqwen3.chat import EMPTY_THINK

THINK, END, STOP, GAP = 1, 2, (10, 11, 12), (20,)


def counter(budget):
    return ThinkingBudget(budget, think_id=THINK, end_think_id=END, stop_ids=STOP, gap_ids=GAP)


def run(budget_counter, sampled, boundaries=None):
    """Drive a generation: emit the forced id when there is one, else the next scripted sample.
    boundaries[i] is at_char_boundary for sampled[i] (default all True). Returns the emitted ids and channels."""
    sampled = list(sampled)
    boundaries = list(boundaries) if boundaries is not None else [True] * len(sampled)
    emitted, channels = [], []
    while True:
        forced = budget_counter.next_forced()
        if forced is not None:
            token, boundary = forced, True
        elif sampled:
            token, boundary = sampled.pop(0), boundaries.pop(0)
        else:
            return emitted, channels
        emitted.append(token)
        channels.append(budget_counter.observe(token, at_char_boundary=boundary))


def test_budget_trips_after_b_thinking_tokens():
    c = counter(3)
    c.start(prompt_ends_inside_think=False)
    emitted, channels = run(c, [THINK, 100, 101, 102, 103, 104, 105])
    assert emitted == [THINK, 100, 101, 102, 10, 11, 12, END, 20, 103, 104, 105]
    assert channels == ["thinking"] * 8 + ["answer"] * 4
    assert (c.n, c.tripped, c.state, c.done) == (3, True, BudgetState.ANSWERING, True)


def test_budget_one():
    c = counter(1)
    c.start()
    emitted, _ = run(c, [THINK, 100, 101])
    assert emitted == [THINK, 100, 10, 11, 12, END, 20, 101]
    assert (c.n, c.tripped) == (1, True)


def test_budget_zero_forces_the_no_think_empty_block():
    c = counter(0)
    c.start()
    emitted, channels = run(c, [THINK, 100, 101])
    assert emitted == [THINK, 20, END, 20, 100, 101]
    assert channels == ["thinking", "thinking", "thinking", "answer", "answer", "answer"]
    assert (c.n, c.tripped, c.state) == (0, True, BudgetState.ANSWERING)


def test_budget_zero_with_prompt_inside_think_forces_at_once():
    c = counter(0)
    c.start(prompt_ends_inside_think=True)
    assert c.state is BudgetState.FORCING
    assert c.next_forced() == 20
    emitted, _ = run(c, [100])
    assert emitted == [20, END, 20, 100]


def test_prompt_ending_inside_think_counts_from_the_first_token():
    c = counter(2)
    c.start(prompt_ends_inside_think=True)
    assert (c.state, c.n, c.remaining) == (BudgetState.THINKING, 0, 2)
    emitted, channels = run(c, [100, 101, 102])
    assert emitted == [100, 101, 10, 11, 12, END, 20, 102]
    assert channels[:2] == ["thinking", "thinking"]


def test_budget_larger_than_the_thinking_is_not_touched():
    c = counter(10)
    c.start()
    emitted, channels = run(c, [THINK, 100, 101, END, 20, 102])
    assert emitted == [THINK, 100, 101, END, 20, 102]
    assert channels == ["thinking", "thinking", "thinking", "thinking", "answer", "answer"]
    assert (c.n, c.tripped, c.state, c.remaining) == (2, False, BudgetState.ANSWERING, 8)


def test_model_closing_on_what_would_be_the_last_budget_token():
    c = counter(2)
    c.start()
    emitted, _ = run(c, [THINK, 100, END, 101])
    assert emitted == [THINK, 100, END, 101]
    assert (c.n, c.tripped) == (1, False)


def test_force_waits_for_a_utf8_boundary():
    c = counter(2)
    c.start()
    # 101 and 102 leave a character unfinished; 103 completes it.
    emitted, _ = run(c, [THINK, 100, 101, 102, 103, 104], boundaries=[True, True, False, False, True, True])
    assert emitted == [THINK, 100, 101, 102, 103, 10, 11, 12, END, 20, 104]
    assert (c.n, c.tripped) == (4, True)


def test_force_waits_for_a_utf8_boundary_on_real_bytes():
    # "日" is e6 97 a5: token 101 emits its first byte, token 102 the other two.
    token_bytes = {THINK: b"<think>", 100: b"ab", 101: b"\xe6", 102: b"\x97\xa5", 103: b"!"}
    c = counter(2)
    c.start()
    text = b""
    states = []
    for token in [THINK, 100, 101, 102]:
        text += token_bytes[token]
        c.observe(token, at_char_boundary=ends_at_char_boundary(text))
        states.append(c.state)
    assert states == [BudgetState.THINKING, BudgetState.THINKING, BudgetState.WAITING_BOUNDARY, BudgetState.FORCING]
    assert text.decode("utf-8") == "<think>ab日"
    assert (c.n, c.next_forced()) == (3, 10)


def test_model_closing_while_waiting_for_a_boundary_is_not_tripped():
    c = counter(1)
    c.start()
    emitted, _ = run(c, [THINK, 100, END, 101], boundaries=[True, False, True, True])
    assert emitted == [THINK, 100, END, 101]
    assert (c.n, c.tripped, c.state) == (1, False, BudgetState.ANSWERING)


def test_unlimited_budget_never_forces():
    c = counter(None)
    c.start(prompt_ends_inside_think=True)
    emitted, channels = run(c, range(100, 1100))
    assert emitted == list(range(100, 1100))
    assert set(channels) == {"thinking"}
    assert (c.n, c.tripped, c.state, c.remaining, c.next_forced()) == (1000, False, BudgetState.THINKING, None, None)


def test_stream_that_never_closes_under_a_large_budget_keeps_counting():
    c = counter(5000)
    c.start()
    run(c, [THINK] + list(range(100, 400)))
    assert (c.n, c.state, c.remaining, c.tripped) == (300, BudgetState.THINKING, 4700, False)


def test_no_think_generation_is_outside_and_never_counted():
    c = counter(0)
    c.start(prompt_ends_inside_think=False)
    emitted, channels = run(c, [100, 101, 102])
    assert emitted == [100, 101, 102]
    assert channels == ["answer"] * 3
    assert (c.n, c.tripped, c.state) == (0, False, BudgetState.OUTSIDE)


def test_stray_end_think_outside_moves_to_answering():
    c = counter(1)
    c.start()
    emitted, _ = run(c, [100, END, THINK, 101, 102])
    assert emitted == [100, END, THINK, 101, 102]
    assert (c.n, c.tripped, c.state) == (0, False, BudgetState.ANSWERING)


def test_forced_sequence_in_order_then_done():
    c = counter(1)
    c.start()
    c.observe(THINK)
    c.observe(100)
    assert (c.state, c.pending, c.forced_ids) == (BudgetState.FORCING, [10, 11, 12, END, 20], (10, 11, 12, END, 20))
    seen = []
    while c.next_forced() is not None:
        token = c.next_forced()
        seen.append((token, c.observe(token), c.n))
    assert seen == [(10, "thinking", 1), (11, "thinking", 1), (12, "thinking", 1), (END, "thinking", 1),
                    (20, "answer", 1)]
    assert (c.state, c.pending, c.done) == (BudgetState.ANSWERING, [], True)
    assert c.observe(THINK) == "answer"
    assert (c.n, c.state) == (1, BudgetState.ANSWERING)


def test_emitting_something_else_while_forcing_is_an_error():
    c = counter(1)
    c.start()
    c.observe(THINK)
    c.observe(100)
    with pytest.raises(ValueError, match="forcing token 10, but 999 was emitted"):
        c.observe(999)


def test_n_counts_only_the_sampled_thinking_tokens():
    c = counter(4)
    c.start()
    run(c, [100, 101, THINK, 102, 103, 104, 105, 106, 107, 108])
    # 100 101 before <think> are not thinking; 102..105 are the four thinking tokens; forced and answer not counted.
    assert c.n == 4


def test_start_resets_everything():
    c = counter(1)
    c.start()
    run(c, [THINK, 100, 101])
    c.start()
    assert (c.state, c.n, c.tripped, c.pending, c.channel) == (BudgetState.OUTSIDE, 0, False, [], None)


def test_empty_stop_and_gap_force_the_bare_end_marker():
    c = ThinkingBudget(2, think_id=THINK, end_think_id=END)
    c.start()
    emitted, _ = run(c, [THINK, 100, 101, 102])
    assert emitted == [THINK, 100, 101, END, 102]


def test_from_encode_builds_sentence_end_gap():
    c = ThinkingBudget.from_encode(7, lambda text: [ord(ch) for ch in text], think_id=THINK, end_think_id=END)
    assert c.forced_ids == tuple(ord(ch) for ch in QWEN_STOP_TEXT) + (END, 10, 10)
    # the three texts, written out from their sources (see budget.py's docstring)
    sentence = "Considering the limited time by the user, I have to give the solution based on the thinking directly now."
    assert REPORT_STOP_TEXT == sentence + "\n</think>.\n\n"                 # the report, section 4.3
    assert QWEN_STOP_TEXT == "\n\n" + sentence + "\n"                        # Qwen's thinking-budget example
    assert TINY_STOP_TEXT == STOP_TEXT == sentence + "\n"                     # the tiny model's corpus


def test_real_tokenizer_forced_text(qwen3_tokenizer_dir):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(qwen3_tokenizer_dir / "tokenizer.json"))

    def encode(text):
        return tok.encode(text, add_special_tokens=False).ids

    c = ThinkingBudget.from_encode(100, encode)
    assert (c.think_id, c.end_think_id, c.gap_ids) == (151667, 151668, (271,))
    assert tok.decode(list(c.forced_ids), skip_special_tokens=False) == (
        "\n\nConsidering the limited time by the user, I have to give the solution based on the thinking directly now.\n"
        "</think>\n\n")
    assert c.forced_ids[0] == 271                       # "\n\n" is one token: the sentence starts a paragraph
    zero = ThinkingBudget.from_encode(0, encode)
    assert zero.forced_ids == (271, 151668, 271)
    assert tok.decode([151667, *zero.forced_ids], skip_special_tokens=False) == EMPTY_THINK == "<think>\n\n</think>\n\n"


@pytest.mark.parametrize("bad,message", [
    (-1, "thinking budget must be >= 0 tokens (0 means no thinking), got -1"),
    (2.5, "thinking budget must be a whole number of tokens or None (unlimited), got 2.5"),
    ("3", "thinking budget must be a whole number of tokens or None (unlimited), got '3'"),
    (True, "thinking budget must be a whole number of tokens or None (unlimited), got True"),
])
def test_invalid_budget(bad, message):
    with pytest.raises(ValueError) as info:
        counter(bad)
    assert str(info.value) == message


def test_numpy_integer_budget_is_accepted():
    assert counter(np.int64(3)).budget == 3


def test_invalid_ids():
    with pytest.raises(ValueError, match="think_id and end_think_id must differ, both are 5"):
        ThinkingBudget(3, think_id=5, end_think_id=5)
    with pytest.raises(ValueError, match=r"stop_ids must not contain <think> \(1\) or </think> \(2\)"):
        ThinkingBudget(3, think_id=THINK, end_think_id=END, stop_ids=(10, END))


@pytest.mark.parametrize("data,expected", [
    (b"", True),
    (b"abc", True),
    ("é".encode(), True),
    ("é".encode()[:1], False),
    ("日".encode()[:1], False),
    ("日".encode()[:2], False),
    ("a日".encode(), True),
    ("😀".encode()[:3], False),
    ("😀".encode(), True),
    (b"\x80", True),
    (b"a\xff", True),
])
def test_ends_at_char_boundary(data, expected):
    assert ends_at_char_boundary(data) is expected


def test_prompt_that_closed_the_block_counts_nothing():
    # the hard switch: the prompt ends with the empty block, so a <think> the model writes later is answer text
    c = counter(1)
    c.start(prompt_closed_think=True)
    emitted, channels = run(c, [100, THINK, 101, 102])
    assert emitted == [100, THINK, 101, 102] and channels == ["answer"] * 4
    assert (c.n, c.tripped, c.state) == (0, False, BudgetState.ANSWERING)
    with pytest.raises(ValueError, match="cannot both end inside <think> and after a closed think block"):
        c.start(prompt_ends_inside_think=True, prompt_closed_think=True)


@pytest.mark.parametrize("budget,expected", [
    (None, [THINK, 20, END, 20, 100]),
    (2, [THINK, 20, END, 20, 100]),                  # the empty block holds one token: B >= 2 is never reached
    (1, [THINK, 20, 10, 11, 12, END, 20, 100]),       # B = 1 trips on the "\n\n" inside it
    (0, [THINK, 20, END, 20, 100]),                   # B = 0 closes it at once: the same tokens, forced
])
def test_the_model_writes_the_empty_block_itself(budget, expected):
    c = counter(budget)
    c.start()
    sampled = [THINK, 20, END, 20, 100] if budget != 0 else [THINK, 100]
    emitted, _ = run(c, sampled if budget != 1 else [THINK, 20, 100])
    assert emitted == expected and c.tripped is (budget in (0, 1))


# --- the intervals and conversations the budget curve and ThinkFollow are measured with ------------------

from miniqwen3 import evaluate  # noqa: E402


@pytest.mark.parametrize("k,n,low,high", [
    (0, 10, 0.0, 1.96**2 / (10 + 1.96**2)),          # no successes: [0, z^2 / (n + z^2)] = [0, 0.277534]
    (10, 10, 10 / (10 + 1.96**2), 1.0),
    (5, 10, 0.23659, 0.76341),                        # by hand: centre 0.5, half 1.96 / 1.38416 * sqrt(0.034604)
    (1, 4, 0.04558, 0.69937),                         # by hand: centre 0.7302 / 1.9604, half 1.96 / 1.9604 * sqrt(0.1069)
])
def test_wilson_interval_hand_computed(k, n, low, high):
    lo, hi = evaluate.wilson_interval(k, n, z=1.96)
    assert lo == pytest.approx(low, abs=1e-5) and hi == pytest.approx(high, abs=1e-5)


@pytest.mark.parametrize("k,n", [(1, 7), (3, 20), (37, 50), (88, 100), (199, 200), (1, 1000)])
def test_wilson_interval_is_where_the_score_test_accepts(k, n):
    # the interval's ends are the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, a quadratic in p
    z, p = evaluate.Z95, k / n
    roots = sorted(np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p]).real)
    assert evaluate.wilson_interval(k, n) == pytest.approx(tuple(roots), abs=1e-12)


def test_wilson_interval_errors_and_rate():
    with pytest.raises(ValueError, match="need 0 <= successes <= n and n > 0, got 3 of 2"):
        evaluate.wilson_interval(3, 2)
    with pytest.raises(ValueError):
        evaluate.wilson_interval(0, 0)
    r = evaluate.rate([True, False, True, True])
    assert (r["k"], r["n"], r["rate"]) == (3, 4, 0.75) and r["low"] < 0.75 < r["high"]


def test_switching_conversations_switch_the_mode():
    from miniqwen3.chat import resolve_thinking
    convs = evaluate.switching_conversations(40, seed=5)
    assert [c.thinking for c in convs] == [True, False] * 20
    for c in convs:
        users = [i for i, m in enumerate(c.messages) if m["role"] == "user"]
        assert len(users) >= 2 and c.messages[-1]["role"] == "assistant" and c.cut is None
        modes = [resolve_thinking(c.messages[:i + 1]) for i in users]
        assert len(set(modes)) == 2 and modes[-1] is c.thinking


def test_training_mix_counts():
    from miniqwen3.corpus import Conversation, Problem
    p = Problem(1, "+", 2)
    a = {"role": "assistant", "content": "1 + 2 = 3"}
    convs = [Conversation([{"role": "user", "content": "1+2? /think"}, a], p, "en", True, False, cut=3),
             Conversation([{"role": "system", "content": "S"}, {"role": "user", "content": "1+2?"}, a], p, "en",
                          True, False),
             Conversation([{"role": "user", "content": "x /no_think"}, a, {"role": "user", "content": "1+2?"}, a],
                          p, "en", False, True)]
    m = evaluate.training_mix(convs)
    assert (m["user_turns"], m["turn_think"], m["turn_no_think"], m["turn_no_flag"]) == (4, 0.25, 0.25, 0.5)
    assert (m["system_prompt"], m["multi_turn"], m["thinking_replies"]) == (1 / 3, 1 / 3, 2 / 3)
    assert (m["no_think_hard_switch"], m["thinking_cut"]) == (1.0, 0.5)


def test_budget_summary_and_its_figure():
    rows = [{"level": 1, "budget": 4, "correct": True, "spent": 4, "tripped": True},
            {"level": 2, "budget": 4, "correct": False, "spent": 4, "tripped": True},
            {"level": 1, "budget": None, "correct": True, "spent": 3, "tripped": False},
            {"level": 2, "budget": None, "correct": True, "spent": 9, "tripped": False}]
    s = evaluate.budget_summary(rows)
    assert list(s) == [4, None]
    assert (s[4]["k"], s[4]["n"], s[4]["spent"], s[4]["cut"]) == (1, 2, 4.0, 1.0)
    assert (s[None]["rate"], s[None]["spent"], s[None]["cut"]) == (1.0, 6.0, 0.0)
    assert evaluate.budget_summary(rows, level=2)[4]["rate"] == 0.0
    from miniqwen3 import viz
    fig = viz.budget_spent_figure({"all": s})
    line = fig.axes[0].lines[0]                    # accuracy against tokens spent
    assert list(line.get_xdata()) == [4.0, 6.0] and list(line.get_ydata()) == [0.5, 1.0]
    assert list(fig.axes[1].lines[0].get_xdata()) == [4]     # the cut share, finite budgets only
