"""Write tests/fixtures/chat_template_cases.json: conversations and what transformers renders for them.

Each case is a conversation with its flags (add_generation_prompt, enable_thinking, tools) and `expected`, the
text `AutoTokenizer.apply_chat_template(..., tokenize=False)` returns with the real Qwen3 tokenizer_config.json.
tests/test_chat.py checks miniqwen3.chat.render_chat against these strings, so the comparison also runs where
transformers is not installed.

    python scripts/make_chat_fixtures.py [TOKENIZER_DIR]

TOKENIZER_DIR defaults to $MINIQWEN3_QWEN3_TOKENIZER, then ../shared/qwen3-tokenizer beside the checkout.
"""
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "chat_template_cases.json"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {
        "type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Heure locale — local time, 現地時間",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


CHAIN = [
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {"role": "assistant", "content": "", "reasoning_content": "I need two look-ups.",
     "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Tokyo"})]},
    {"role": "tool", "content": "{\"temp\": 18}"},
    {"role": "tool", "content": "{\"temp\": 24}"},
    {"role": "assistant", "content": "Paris 18 °C, Tokyo 24 °C.", "reasoning_content": "Both answers are in."},
    {"role": "user", "content": "Thanks! And Berlin?"},
]

CASES = [
    {"name": "single_user", "messages": [{"role": "user", "content": "Hello"}]},
    {"name": "single_user_think_true", "messages": [{"role": "user", "content": "Hello"}], "enable_thinking": True},
    {"name": "single_user_think_false", "messages": [{"role": "user", "content": "Hello"}], "enable_thinking": False},
    {"name": "no_generation_prompt", "messages": [{"role": "user", "content": "Hello"}],
     "add_generation_prompt": False},
    {"name": "no_generation_prompt_think_false", "messages": [{"role": "user", "content": "Hello"}],
     "add_generation_prompt": False, "enable_thinking": False},
    {"name": "plain_string", "messages": "What is 2 + 2?"},
    {"name": "system_user", "messages": [{"role": "system", "content": "You are terse."},
                                         {"role": "user", "content": "Hi"}]},
    {"name": "system_user_think_false", "messages": [{"role": "system", "content": "You are terse."},
                                                     {"role": "user", "content": "Hi"}], "enable_thinking": False},
    {"name": "unicode", "messages": [{"role": "system", "content": "Réponds en français 🇫🇷"},
                                     {"role": "user", "content": "日本語で答えて ✓ — «ok» \u00e9\u0301 😀"}]},
    {"name": "empty_contents", "messages": [{"role": "system", "content": ""}, {"role": "user", "content": ""},
                                            {"role": "assistant", "content": ""}, {"role": "user", "content": ""}]},
    {"name": "reasoning_in_the_middle_is_dropped", "messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
        {"role": "user", "content": "3+3?"}]},
    {"name": "reasoning_at_the_end_is_kept", "messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Add them."},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "\nAdd them again.\n\n"}],
     "add_generation_prompt": False},
    {"name": "last_assistant_without_reasoning_gets_empty_think", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\nHello!"}],
     "add_generation_prompt": False},
    {"name": "inline_think_in_the_middle", "messages": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\nstep 1\nstep 2\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"}]},
    {"name": "inline_think_at_the_end", "messages": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\n\nfirst <think> nested\n\n</think>\n\n\nA1 </think> tail"}],
     "add_generation_prompt": False},
    {"name": "reasoning_content_wins_over_inline_think", "messages": [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>inline</think>A", "reasoning_content": "field"}],
     "add_generation_prompt": False},
    {"name": "thinking_key_alias", "messages": [
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "thinking": "from thinking key"}],
     "add_generation_prompt": False},
    {"name": "tool_chain_then_user", "messages": CHAIN, "tools": [WEATHER]},
    {"name": "tool_chain_end_at_tool", "messages": CHAIN[:4], "tools": [WEATHER]},
    {"name": "tool_chain_final_answer", "messages": CHAIN[:5], "tools": [WEATHER], "add_generation_prompt": False},
    {"name": "tool_call_flat_string_arguments", "messages": [
        {"role": "user", "content": "Time in UTC?"},
        {"role": "assistant", "content": "Let me check.",
         "tool_calls": [{"name": "get_time", "arguments": "{\"tz\": \"UTC\"}"}]},
        {"role": "tool", "content": "12:00"}], "tools": [TIME]},
    {"name": "tool_call_content_none", "messages": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_time", {"tz": "Europe/Paris"})]},
        {"role": "tool", "content": "14:00"}], "tools": [TIME]},
    {"name": "tool_call_no_content_key", "messages": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "tool_calls": [call("get_time", {"tz": "Asia/Tokyo"})]}],
     "tools": [TIME], "add_generation_prompt": False},
    {"name": "tool_call_arguments_rich_json", "messages": [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": "",
         "tool_calls": [call("f", {"s": "café ☕ \"q\" \\", "n": 1.5, "i": -3, "b": True, "z": None,
                                   "l": [1, {"k": []}], "e": {}})]}],
     "add_generation_prompt": False},
    {"name": "tool_call_after_newline_content_with_reasoning", "messages": [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": "\n", "reasoning_content": "r",
         "tool_calls": [call("f", {}), {"name": "g", "arguments": "{}"}]}],
     "add_generation_prompt": False},
    {"name": "tools_with_system", "messages": [{"role": "system", "content": "Be helpful."},
                                               {"role": "user", "content": "Hi"}], "tools": [WEATHER, TIME]},
    {"name": "tools_without_system", "messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER, TIME],
     "enable_thinking": False},
    {"name": "tools_empty_list", "messages": [{"role": "user", "content": "Hi"}], "tools": []},
    {"name": "system_not_first", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "system", "content": "New rule /no_think"},
        {"role": "user", "content": "Again"}], "tools": [WEATHER]},
    {"name": "old_style_tool_response_in_user", "messages": [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "A", "reasoning_content": "R1",
         "tool_calls": [{"name": "f", "arguments": {}}]},
        {"role": "user", "content": "<tool_response>\nresult\n</tool_response>"},
        {"role": "assistant", "content": "done", "reasoning_content": "R2"}],
     "add_generation_prompt": False},
    {"name": "no_user_query", "messages": [
        {"role": "system", "content": "S"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}],
     "add_generation_prompt": False},
    {"name": "tool_message_first", "messages": [{"role": "tool", "content": "orphan"},
                                                {"role": "user", "content": "Hi"}]},
    {"name": "flags_in_text_are_left_alone", "messages": [
        {"role": "system", "content": "/think"}, {"role": "user", "content": "Short answer /no_think"}],
     "enable_thinking": False},
]


def render(tokenizer, case):
    messages = case["messages"]
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    kwargs = {"tokenize": False, "add_generation_prompt": case.get("add_generation_prompt", True)}
    if case.get("enable_thinking") is not None:
        kwargs["enable_thinking"] = case["enable_thinking"]
    if case.get("tools") is not None:
        kwargs["tools"] = case["tools"]
    return tokenizer.apply_chat_template(messages, **kwargs)


def main(argv):
    import transformers
    from transformers import AutoTokenizer

    folder = Path(argv[1] if len(argv) > 1 else os.environ.get("MINIQWEN3_QWEN3_TOKENIZER")
                  or REPO.parent / "shared" / "qwen3-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    cases = [{**case, "expected": render(tokenizer, case)} for case in CASES]
    names = [case["name"] for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    payload = {"generator": "scripts/make_chat_fixtures.py", "transformers": transformers.__version__,
               "cases": cases}
    OUT.write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main(sys.argv)
