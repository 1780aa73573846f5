"""miniqwen3.chat against the real Qwen3 chat template as transformers renders it.

Three oracles: the golden strings in tests/fixtures/chat_template_cases.json (written by
scripts/make_chat_fixtures.py from transformers, so they run without it), transformers itself when installed
(the same cases plus random conversations), and hand-written expectations for the /think /no_think rule.
"""
import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniqwen3.chat import ChatError, prompt_for_generation, render_chat, resolve_thinking, thinking_flag

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "chat_template_cases.json"
CASES = json.loads(FIXTURES.read_text(encoding="utf-8"))["cases"]


def render_case(case):
    return render_chat(case["messages"], add_generation_prompt=case.get("add_generation_prompt", True),
                       enable_thinking=case.get("enable_thinking"), tools=case.get("tools"))


def oracle_render(tokenizer, messages, add_generation_prompt=True, enable_thinking=None, tools=None):
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    kwargs = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    if tools is not None:
        kwargs["tools"] = tools
    return tokenizer.apply_chat_template(copy.deepcopy(messages), **kwargs)


@pytest.fixture(scope="session")
def hf_tokenizer(qwen3_tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir))


def test_fixture_table_is_broad():
    assert len(CASES) >= 20
    assert len({case["name"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_matches_golden_fixture(case):
    assert render_case(case) == case["expected"]


@pytest.mark.oracle
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_matches_transformers_live(case, hf_tokenizer):
    expected = oracle_render(hf_tokenizer, case["messages"], case.get("add_generation_prompt", True),
                             case.get("enable_thinking"), case.get("tools"))
    assert expected == case["expected"], "fixture is stale: rerun scripts/make_chat_fixtures.py"
    assert render_case(case) == expected


def test_hand_written_single_turn():
    assert render_chat("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat("Hi", enable_thinking=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat("Hi", add_generation_prompt=False, enable_thinking=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_does_not_modify_the_callers_messages():
    messages = [{"role": "user", "content": "Q"},
                {"role": "assistant", "content": None, "thinking": "t", "tool_calls": [{"name": "f", "arguments": {}}]}]
    before = copy.deepcopy(messages)
    render_chat(messages)
    assert messages == before


# Random conversations against the live template: roles in any order, contents chosen to hit the template's
# string rules (think tags, leading/trailing newlines, wrapped tool responses, flags, non-ASCII).
TRICKY = ["", "\n", "\n\nx\n\n", "Hi", "<think>a</think>b", "<think>\n\n</think>\n\n", "x</think>", "<think>\nr\n",
          "a</think>\n\nb</think>c", "<tool_response>r</tool_response>", "/no_think", "日本 😀 é", "{\"a\": 1}"]
contents = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
arguments = st.one_of(st.sampled_from(["{}", "{\"x\": 1}", "not json"]),
                      st.dictionaries(st.sampled_from(["a", "ü", "n"]),
                                      st.one_of(st.integers(-5, 5), st.text(max_size=4), st.booleans(), st.none()),
                                      max_size=3))


@st.composite
def tool_calls(draw):
    name = draw(st.sampled_from(["get_weather", "f", "名前"]))
    args = draw(arguments)
    if draw(st.booleans()):
        return {"type": "function", "function": {"name": name, "arguments": args}}
    return {"name": name, "arguments": args}


@st.composite
def messages(draw):
    out = []
    for role in draw(st.lists(st.sampled_from(["system", "user", "assistant", "tool"]), min_size=1, max_size=7)):
        message = {"role": role, "content": draw(contents)}
        if role == "assistant":
            if draw(st.booleans()):
                message["reasoning_content"] = draw(contents)
            calls = draw(st.lists(tool_calls(), max_size=2))
            if calls:
                message["tool_calls"] = calls
                if draw(st.booleans()):
                    message["content"] = None
        out.append(message)
    return out


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter — 天気",
                                           "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.oracle
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=messages(), add_generation_prompt=st.booleans(),
       enable_thinking=st.sampled_from([None, True, False]), tools=st.sampled_from([None, [], TOOLS]))
def test_random_conversations_match_transformers(hf_tokenizer, conversation, add_generation_prompt,
                                                 enable_thinking, tools):
    expected = oracle_render(hf_tokenizer, conversation, add_generation_prompt, enable_thinking, tools)
    assert render_chat(conversation, add_generation_prompt, enable_thinking, tools) == expected


# resolve_thinking: rows written from the documented rule, not from the code.
def user(text):
    return {"role": "user", "content": text}


THINKING_TABLE = [
    ("no flag: think by default", [user("Hi")], None, True),
    ("/no_think in the user message", [user("Hi /no_think")], None, False),
    ("/think in the user message", [user("Hi /think")], None, True),
    ("explicit True beats /no_think", [user("Hi /no_think")], True, True),
    ("explicit False beats /think", [user("Hi /think")], False, False),
    ("flag in the system message", [{"role": "system", "content": "/no_think"}, user("Hi")], None, False),
    ("later user flag beats system flag", [{"role": "system", "content": "/no_think"}, user("Hi /think")], None, True),
    ("last message with a flag wins", [user("/think"), {"role": "assistant", "content": "ok"}, user("/no_think")],
     None, False),
    ("a flag persists over later unflagged turns", [user("a /no_think"), {"role": "assistant", "content": "b"},
                                                    user("c")], None, False),
    ("last flag within a message: think", [user("/no_think, no wait: /think")], None, True),
    ("last flag within a message: no_think", [user("/think ... /no_think")], None, False),
    ("assistant flags are ignored", [user("/no_think"), {"role": "assistant", "content": "/think"}], None, False),
    ("tool flags are ignored", [user("/no_think"), {"role": "tool", "content": "/think"}], None, False),
    ("flag followed by punctuation", [user("Answer briefly /no_think.")], None, False),
    ("flag on its own line", [user("Question?\n/no_think")], None, False),
    ("not flags: /thinking, a/think, url, /no_thinker", [user("/thinking a/no_think http://x/no_think /no_thinker")],
     None, True),
    ("flags are case-sensitive", [user("/NO_THINK")], None, True),
    ("plain string message", "Hi /no_think", None, False),
]


@pytest.mark.parametrize("messages,enable_thinking,expected", [row[1:] for row in THINKING_TABLE],
                         ids=[row[0] for row in THINKING_TABLE])
def test_resolve_thinking(messages, enable_thinking, expected):
    assert resolve_thinking(messages, enable_thinking) is expected


def test_thinking_flag():
    assert thinking_flag("nothing here") is None
    assert thinking_flag("/no_think") is False
    assert thinking_flag("/no_think /think") is True


def test_prompt_for_generation_soft_switch_adds_nothing_for_a_flag():
    # the soft switch: /no_think is text for the model; the prompt does not end with the empty block
    assert prompt_for_generation("Hi /no_think") == "<|im_start|>user\nHi /no_think<|im_end|>\n<|im_start|>assistant\n"
    assert prompt_for_generation("Hi /no_think", enable_thinking=True) == prompt_for_generation("Hi /no_think")


def test_prompt_for_generation_hard_switch_prefills_the_empty_block_whatever_the_flag():
    assert prompt_for_generation("Hi /think", enable_thinking=False) == (
        "<|im_start|>user\nHi /think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.mark.oracle
@pytest.mark.parametrize("messages,enable_thinking", [row[1:3] for row in THINKING_TABLE],
                         ids=[row[0] for row in THINKING_TABLE])
def test_prompt_for_generation_matches_transformers(hf_tokenizer, messages, enable_thinking):
    """The prompt is apply_chat_template with add_generation_prompt and the caller's enable_thinking (left out
    when None): no flag is read, nothing is added."""
    assert prompt_for_generation(messages, enable_thinking, tools=TOOLS) == oracle_render(
        hf_tokenizer, messages, True, enable_thinking, TOOLS)


ERRORS = [
    ("not a list", 42, {}, "messages must be a list of dicts or a string, got int"),
    ("empty", [], {}, "messages is empty"),
    ("not a dict", ["hi"], {}, "messages[0] must be a dict with 'role' and 'content', got str"),
    ("no role", [{"content": "x"}], {}, "messages[0] has no 'role'"),
    ("unknown role", [user("a"), {"role": "bot", "content": "x"}], {},
     "messages[1] has unknown role 'bot'; expected one of system, user, assistant, tool"),
    ("missing content", [{"role": "user"}], {}, "messages[0] (user) has no 'content'"),
    ("None content", [{"role": "tool", "content": None}], {}, "messages[0] (tool) has no 'content'"),
    ("assistant without content or tool calls", [user("a"), {"role": "assistant"}], {},
     "messages[1] (assistant) has no 'content'"),
    ("content list", [{"role": "user", "content": [{"type": "text", "text": "x"}]}], {},
     "messages[0] (user): content must be a string, got list"),
    ("tool_calls on a user", [{"role": "user", "content": "x", "tool_calls": []}], {},
     "messages[0] (user): only assistant messages can carry tool_calls"),
    ("tool_calls not a list", [{"role": "assistant", "content": "", "tool_calls": {"name": "f"}}], {},
     "messages[0]: tool_calls must be a list, got dict"),
    ("tool call without name", [{"role": "assistant", "content": "", "tool_calls": [{"arguments": {}}]}], {},
     "messages[0].tool_calls[0] needs a string 'name'"),
    ("tool call bad arguments", [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}],
     {}, "messages[0].tool_calls[0]: 'arguments' must be a dict or a JSON string, got int"),
    ("arguments not JSON", [{"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"s": {1, 2}}}]}], {},
     "arguments of tool call 'f' is not JSON-serialisable"),
    ("reasoning not a string", [{"role": "assistant", "content": "a", "reasoning_content": 5}], {},
     "messages[0] (assistant): reasoning_content must be a string, got int"),
    ("tools not a list", [user("a")], {"tools": "get_weather"}, "tools must be a list of JSON-schema dicts, got str"),
    ("tool is a function", [user("a")], {"tools": [len]}, "tools[0] must be a JSON-schema dict"),
    ("enable_thinking not a bool", [user("a")], {"enable_thinking": "no"},
     "enable_thinking must be True, False or None, got 'no'"),
]


@pytest.mark.parametrize("messages,kwargs,message", [row[1:] for row in ERRORS], ids=[row[0] for row in ERRORS])
def test_errors(messages, kwargs, message):
    with pytest.raises(ChatError) as info:
        render_chat(messages, **kwargs)
    assert message in str(info.value)


def test_chat_error_is_a_value_error_and_resolve_thinking_checks_too():
    assert issubclass(ChatError, ValueError)
    with pytest.raises(ChatError, match="unknown role 'bot'"):
        resolve_thinking([{"role": "bot", "content": "/no_think"}])
    with pytest.raises(ChatError, match="enable_thinking must be True, False or None"):
        resolve_thinking("Hi", enable_thinking=1)
