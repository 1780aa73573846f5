"""Generation: sampling filters against transformers' logits processors and closed forms, the decode loop with
the budget counter on a scripted model, and greedy decoding against transformers' generate."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import miniqwen3
from miniqwen3.budget import QWEN_STOP_TEXT, TINY_STOP_TEXT
from miniqwen3.generate import RECOMMENDED, Sampling, default_sampling, generate, sample, stop_text_for, stream
from miniqwen3.tokenizer import Tokenizer


# --- sampling ------------------------------------------------------------------------------------

def kept(logits, s, draws=400, seed=0):
    rng = np.random.default_rng(seed)
    return {sample(logits, s, rng) for _ in range(draws)}


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert sample(logits, Sampling(temperature=0), np.random.default_rng(0)) == 1


def test_top_p_closed_form():
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    logits = np.log(probs)
    # the smallest set whose mass reaches p: 0.4 < 0.5, 0.4 + 0.3 >= 0.5 -> {0, 1}
    assert kept(logits, Sampling(temperature=1, top_k=0, top_p=0.5)) == {0, 1}
    assert kept(logits, Sampling(temperature=1, top_k=0, top_p=0.75)) == {0, 1, 2}
    assert kept(logits, Sampling(temperature=1, top_k=0, top_p=0.3)) == {0}


def test_top_k_and_min_p_closed_form():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    assert kept(logits, Sampling(temperature=1, top_k=2, top_p=1)) == {0, 1}
    # min_p 0.6: keep p >= 0.6 * 0.4 = 0.24 -> {0, 1}
    assert kept(logits, Sampling(temperature=1, top_k=0, top_p=1, min_p=0.6)) == {0, 1}


def test_unfiltered_sampling_follows_softmax():
    logits = np.array([1.0, 0.0, -1.0, 0.5])
    rng = np.random.default_rng(1)
    n = 20000
    counts = np.bincount([sample(logits, Sampling(temperature=1, top_k=0, top_p=1), rng) for _ in range(n)], minlength=4)
    p = np.exp(logits) / np.exp(logits).sum()
    assert np.all(np.abs(counts / n - p) < 4 * np.sqrt(p * (1 - p) / n))


def test_presence_penalty_moves_greedy_off_a_seen_token():
    logits = np.array([2.0, 1.5, 0.0])
    seen = np.array([True, False, False])
    assert sample(logits, Sampling(temperature=0, presence_penalty=1.0), np.random.default_rng(0), seen) == 1
    assert sample(logits, Sampling(temperature=0, presence_penalty=0.4), np.random.default_rng(0), seen) == 0


def test_filters_match_transformers_logits_processors():
    torch = pytest.importorskip("torch")
    gen = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(3)
    for trial in range(20):
        logits = rng.standard_normal(200) * 3
        s = Sampling(temperature=float(rng.uniform(0.3, 1.5)), top_k=int(rng.integers(0, 50)),
                     top_p=float(rng.uniform(0.3, 1.0)), min_p=float(rng.uniform(0, 0.3)))
        procs = [gen.TemperatureLogitsWarper(s.temperature)]
        if s.top_k:
            procs.append(gen.TopKLogitsWarper(s.top_k))
        procs.append(gen.TopPLogitsWarper(s.top_p))
        if s.min_p:
            procs.append(gen.MinPLogitsWarper(s.min_p))
        scores = torch.tensor(logits, dtype=torch.float32)[None]
        for proc in procs:
            scores = proc(None, scores)
        allowed = set(np.flatnonzero(np.isfinite(scores[0].numpy())))
        ours = kept(logits, s, draws=3000, seed=trial)
        assert ours <= allowed, (trial, s)
        probs = torch.softmax(scores[0], 0).numpy()
        likely = {i for i in allowed if probs[i] > 0.01}
        assert likely <= ours, (trial, s)


def test_bad_sampling_values():
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        Sampling(temperature=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        Sampling(top_p=0)


# --- the loop, on a scripted model ---------------------------------------------------------------

class ScriptedModel:
    """A stand-in model that wants to emit a fixed token sequence: its logits put all mass on its next scripted
    token. It follows what was actually emitted: a token equal to its next one advances it; a </think> it did
    not expect (forced by the budget) moves it to just after the </think> of its script."""

    def __init__(self, tokenizer, script_ids, vocab_size):
        self.tokenizer, self.script, self.path = tokenizer, list(script_ids), None
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.at = 0

    def new_cache(self, dtype="fp32"):
        return SimpleNamespace(length=0)

    def forward(self, ids, cache, last_only=True):
        if cache.length:                      # a decode step: ids holds the tokens emitted since the last one
            for token in map(int, ids):
                if self.at < len(self.script) and token == self.script[self.at]:
                    self.at += 1
                elif token == self.tokenizer.end_think_id and token in self.script:
                    self.at = self.script.index(token) + 1
        cache.length += len(ids)
        logits = np.full((1, self.config.vocab_size), -10.0, dtype=np.float32)
        logits[0, self.script[self.at] if self.at < len(self.script) else self.tokenizer.im_end_id] = 10.0
        return logits


@pytest.fixture(scope="module")
def tok(qwen3_tokenizer_dir):
    return Tokenizer.from_file(qwen3_tokenizer_dir)


def scripted(tok, text):
    return ScriptedModel(tok, tok.encode(text), 151936)


def test_unlimited_budget_leaves_the_model_alone(tok):
    model = scripted(tok, "<think>\nadd 2 and 3\n</think>\n\n5")
    out = generate(model, "What is 2 + 3? /think", budget=None, temperature=0)
    assert (out.thinking, out.answer, out.budget_tripped) == ("add 2 and 3", "5", False)
    assert out.thinking_tokens == len(tok.encode("\nadd 2 and 3\n"))
    assert out.finish_reason == "stop" and out.thinking_mode


def test_budget_forces_the_stop_sentence_and_lets_the_model_answer(tok):
    # the report's walk-through: "What is 2 + 3? /think" with B = 4
    model = scripted(tok, "<think>\nLet me add two and three carefully\n</think>\n\n5")
    g = stream(model, "What is 2 + 3? /think", budget=4, temperature=0)
    pieces = list(g)
    out = g.result()
    assert out.budget_tripped and out.thinking_tokens == 4
    first4 = tok.decode(tok.encode("\nLet me add two and three carefully\n")[:4])
    assert out.thinking == (first4 + QWEN_STOP_TEXT).strip()      # a model that is not the tiny one: Qwen's text
    forced = [p for p in pieces if p.forced]
    assert tok.decode([p.token_id for p in forced]) == QWEN_STOP_TEXT + "</think>\n\n"
    assert all(p.thinking_tokens == 4 for p in forced)
    assert [p.channel for p in pieces].count("thinking") == 1 + 4 + len(tok.encode(QWEN_STOP_TEXT)) + 1
    assert out.answer == "5"                  # the model answers after the forced </think>


def test_budget_zero_is_no_thinking(tok):
    model = scripted(tok, "<think>\nhmm\n</think>\n\n5")
    out = generate(model, "What is 2 + 3?", budget=0, temperature=0)
    assert out.thinking == "" and out.thinking_tokens == 0 and out.budget_tripped
    assert tok.decode(out.token_ids[:4]) == "<think>\n\n</think>\n\n"


def test_hard_switch_ignores_the_budget(tok):
    model = scripted(tok, "5")
    g = stream(model, "What is 2 + 3? /think", budget=1, enable_thinking=False, temperature=0)
    list(g)
    out = g.result()
    assert tok.decode(g.prompt_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert (out.switch, out.thinking_mode, out.budget, out.budget_tripped, out.answer) == ("hard", False, None, False, "5")


def test_soft_switch_prompt_is_the_template_as_written(tok):
    model = scripted(tok, "<think>\n\n</think>\n\n5")
    g = stream(model, "What is 2 + 3? /no_think", temperature=0)
    list(g)
    assert tok.decode(g.prompt_ids) == "<|im_start|>user\nWhat is 2 + 3? /no_think<|im_end|>\n<|im_start|>assistant\n"
    out = g.result()
    assert (out.switch, out.thinking_mode, out.thinking, out.answer) == ("soft", False, "", "5")


@pytest.mark.parametrize("budget,tripped", [(None, False), (2, False), (8, False), (1, True)])
def test_budget_when_the_model_writes_the_empty_block_itself(tok, budget, tripped):
    # the empty block holds one token, "\n\n": a budget of 2 or more is never reached; B = 1 trips on it
    model = scripted(tok, "<think>\n\n</think>\n\n5")
    out = generate(model, "What is 2 + 3? /no_think", budget=budget, temperature=0)
    assert out.budget == budget and out.budget_tripped is tripped and out.thinking_tokens == 1
    assert not out.thinking_mode and out.answer == "5"
    if not tripped:
        assert tok.decode(out.token_ids) == "<think>\n\n</think>\n\n5"


def test_budget_counts_a_block_the_model_opens_and_closes_itself(tok):
    model = scripted(tok, "<think>\nadd 2 and 3\n</think>\n\n5")
    n = len(tok.encode("\nadd 2 and 3\n"))
    out = generate(model, "What is 2 + 3?", budget=n + 1, temperature=0)   # the model closes the block first
    assert not out.budget_tripped and out.thinking_tokens == n and out.thinking_mode and out.answer == "5"
    model = scripted(tok, "<think>\nadd 2 and 3\n</think>\n\n5")
    out = generate(model, "What is 2 + 3?", budget=n, temperature=0)       # N reaches B before </think>: cut
    assert out.budget_tripped and out.thinking_tokens == n and out.answer == "5"


def test_no_think_block_at_all_is_answer(tok):
    model = scripted(tok, "5")                      # a model that answers without any think block
    out = generate(model, "What is 2 + 3?", budget=0, temperature=0)
    assert (out.thinking_mode, out.budget_tripped, out.thinking_tokens, out.answer) == (False, False, 0, "5")


def test_a_cut_in_mid_line_starts_the_sentence_on_a_new_paragraph(tok):
    # the tiny model's text glued to the last word ("ones:6-4Considering"); Qwen's starts after "\n\n"
    head = "\n9876-1234\nones:6-4"
    b = len(tok.encode(head))
    assert tok.encode(head) == tok.encode(head + "=2 b0\n")[:b]           # the cut falls where the text does
    for stop_text, glue in ((None, "ones:6-4\n\nConsidering"), (TINY_STOP_TEXT, "ones:6-4Considering")):
        model = scripted(tok, "<think>" + head + "=2 b0\n</think>\n\n9876 - 1234 = 8642")
        out = generate(model, "What is 9876 - 1234? /think", budget=b, temperature=0, stop_text=stop_text)
        assert out.budget_tripped and glue in out.thinking and out.thinking.endswith("directly now.")


def test_max_new_tokens(tok):
    model = scripted(tok, "<think>\n" + "a " * 50)
    out = generate(model, "go", max_new_tokens=7, temperature=0)
    assert out.generated_tokens == 7 and out.finish_reason == "length"


def test_generation_config_sets_the_defaults(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.3, "top_k": 5}))
    model = SimpleNamespace(path=tmp_path)
    assert default_sampling(model, True) == Sampling(0.3, 5, 0.95, 0.0)
    assert default_sampling(SimpleNamespace(path=None), False) == RECOMMENDED[False]


# --- greedy decoding against transformers ---------------------------------------------------------

@pytest.mark.oracle
def test_greedy_generation_equals_transformers(qwen3_tokenizer_dir, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import shutil
    cfg = transformers.Qwen3Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=1e6,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    ref = transformers.Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.normal_(0, 0.5 if "embed" in name else 0.2)
    ref.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(qwen3_tokenizer_dir) / f, tmp_path / f)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    model = miniqwen3.load(tmp_path)
    messages = [{"role": "user", "content": "Count to five. /no_think"}]
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    # the soft switch (no enable_thinking: the template as written) and the hard switch (enable_thinking=False)
    for kwargs in ({}, {"enable_thinking": False}):
        g = miniqwen3.stream(model, messages, temperature=0, max_new_tokens=12, **kwargs)
        list(g)
        out = g.result()
        prompt = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True, **kwargs)
        assert g.prompt_ids == prompt["input_ids"][0].tolist()
        with torch.no_grad():
            ids = ref.generate(**prompt, max_new_tokens=12, do_sample=False, eos_token_id=[151645, 151643])
        expected = ids[0, prompt["input_ids"].shape[1]:].tolist()
        expected = [t for t in expected if t not in (151645, 151643)]
        assert out.token_ids == expected[:len(out.token_ids)] and len(out.token_ids) == len(expected)


# --- end to end on the embedded model ---------------------------------------------------------------

TINY = Path(miniqwen3.__file__).parent / "data" / "tiny"
needs_tiny = pytest.mark.skipif(not (TINY / "config.json").is_file(),
                                reason="the embedded tiny model is not in this checkout (build it: bash scripts/train_all.sh)")


@needs_tiny
def test_budget_end_to_end_on_the_tiny_model():
    model = miniqwen3.load()
    tok = model.tokenizer
    free = model.generate("What is 2 + 3? /think", budget=None, temperature=0, max_new_tokens=300)
    assert free.thinking_mode and not free.budget_tripped and free.thinking_tokens > 4
    cut = model.generate("What is 2 + 3? /think", budget=4, temperature=0, max_new_tokens=300)
    assert cut.budget_tripped and cut.thinking_tokens == 4           # ASCII thinking: no wait for a boundary
    # greedy: the first 4 thinking tokens are the unconstrained run's, then the forced sentence and </think>
    assert cut.token_ids[:5] == free.token_ids[:5]
    assert stop_text_for(model) == TINY_STOP_TEXT          # the text it was trained with, not Qwen's
    forced = tok.encode(TINY_STOP_TEXT) + [tok.end_think_id]
    assert cut.token_ids[5:5 + len(forced)] == forced
    assert cut.token_ids.count(tok.end_think_id) == 1 and cut.answer
    zero = model.generate("What is 2 + 3? /think", budget=0, temperature=0, max_new_tokens=100)
    assert zero.thinking == "" and zero.thinking_tokens == 0 and zero.answer and not zero.thinking_mode
    hard = model.generate("What is 2 + 3? /think", enable_thinking=False, temperature=0, max_new_tokens=100)
    # B = 0 closes the block the model opened with the template's empty block: the answer is the hard switch's
    assert zero.token_ids[4:] == hard.token_ids and tok.decode(zero.token_ids[:4]) == "<think>\n\n</think>\n\n"
    # the soft switch: /no_think is only text; the model writes the empty block itself, and B = 4 is never reached
    off = model.generate("What is 2 + 3? /no_think", budget=4, temperature=0, max_new_tokens=100)
    assert tok.decode(off.token_ids[:4]) == "<think>\n\n</think>\n\n" and not off.token_ids[4:].count(tok.think_id)
    assert not off.thinking_mode and off.thinking == "" and not off.budget_tripped and off.answer
    assert off.switch == "soft" and off.budget == 4


def test_budget_end_to_end_on_an_engine_model(tmp_path, qwen3_tokenizer_dir):
    """A real forward pass (2-layer random Qwen3 with the real tokenizer) with the reply prefilled as an open
    think block: the counter trips after B sampled tokens, waits for a whole UTF-8 character, forces the stop."""
    from test_cli import tiny_random_chat_model
    model = miniqwen3.load(tiny_random_chat_model(tmp_path / "m", qwen3_tokenizer_dir))
    tok = model.tokenizer
    assert stop_text_for(model) == QWEN_STOP_TEXT
    forced = tok.encode(QWEN_STOP_TEXT) + [tok.end_think_id] + tok.encode("\n\n")
    waited = []
    for seed in (0, 1, 102, 190):   # with these seeds, 102 and 190 end their 5th token mid-character
        g = stream(model, "What is 2 + 3?", budget=5, prefill="<think>\n", seed=seed, max_new_tokens=40,
                   temperature=1.0, top_k=0, top_p=1.0)
        pieces = list(g)
        out = g.result()
        assert out.budget_tripped and out.thinking_tokens >= 5
        n = out.thinking_tokens
        assert out.token_ids[n:n + len(forced)] == forced
        assert [p.forced for p in pieces[:n + len(forced)]] == [False] * n + [True] * len(forced)
        thought = tok.decode_bytes(out.token_ids[:n])
        assert n == 5 or not miniqwen3.budget.ends_at_char_boundary(tok.decode_bytes(out.token_ids[:5]))
        assert miniqwen3.budget.ends_at_char_boundary(thought)    # the stop waited for a whole character
        waited.append(n > 5)
    assert any(waited) and not all(waited)


def test_reply_think_state():
    from miniqwen3.chat import EMPTY_THINK, render_chat
    from miniqwen3.generate import reply_think_state
    earlier = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": "r"},
               {"role": "user", "content": "c"}]
    soft = render_chat(earlier)                     # an earlier turn's think block is not the reply's
    assert reply_think_state(soft) == "outside"
    assert reply_think_state(soft + "<think>\nfirst,") == "inside"
    assert reply_think_state(render_chat(earlier, enable_thinking=False)) == "closed"
    assert reply_think_state(soft + EMPTY_THINK + "<think>") == "inside"      # the last <think> decides
