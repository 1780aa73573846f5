"""Qwen3's chat template in plain Python, and the /think and /no_think flags.

`render_chat` produces, character for character, the string that the Jinja `chat_template` in Qwen3's
`tokenizer_config.json` produces when transformers renders it (`apply_chat_template(..., tokenize=False)`).
Every rule below is a line of that template, in the template's order:

    [tools]      <|im_start|>system\\n{system content + "\\n\\n" if the first message is system}# Tools ...
                 <tools>\\n{tool 1 as JSON}\\n{tool 2 as JSON}...\\n</tools>\\n\\n...</tool_call><|im_end|>\\n
    [no tools]   <|im_start|>system\\n{content}<|im_end|>\\n          (only when messages[0] is system)
    user         <|im_start|>user\\n{content}<|im_end|>\\n             (also a system message that is not first)
    assistant    <|im_start|>assistant\\n{content}{tool calls}<|im_end|>\\n, or, after the last real user query,
                 <|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content}{tool calls}<|im_end|>\\n
    tool         consecutive tool messages share one user turn:
                 <|im_start|>user\\n<tool_response>\\n{content 1}\\n</tool_response>\\n<tool_response>...<|im_end|>\\n
    prompt       <|im_start|>assistant\\n, plus <think>\\n\\n</think>\\n\\n when enable_thinking is False

JSON is written the way transformers' own `tojson` filter writes it: `json.dumps(x, ensure_ascii=False)`,
so non-ASCII stays as is and the separators are ", " and ": ".

The template does not read `/think` or `/no_think`: they are a soft switch, words the model was trained to obey
(`resolve_thinking` states the rule its training data follows); `enable_thinking=False` is the hard switch.
"""
import json
import re

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ROLES = ("system", "user", "assistant", "tool")
EMPTY_THINK = "<think>\n\n</think>\n\n"
TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>")

# transformers 5 copies a message's reasoning from these keys, first one set wins, into `reasoning_content`.
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")

# A flag is "/think" or "/no_think" standing on its own: not preceded by a word character or "/"
# (so "a/think" and "http://x/think" are not flags) and not followed by a word character ("/thinking" is not).
THINKING_FLAG = re.compile(r"(?<![\w/])/(no_think|think)\b")


class ChatError(ValueError):
    """A conversation the Qwen3 chat template cannot render: the message shape, role or field is wrong."""


def tojson(value, where):
    """`value` as transformers' `tojson` filter writes it: json.dumps with ensure_ascii=False, default separators."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ChatError(f"{where} is not JSON-serialisable: {err}") from None


def normalize_messages(messages):
    """Check a conversation and return it as a list of fresh message dicts.

    A plain string is one user message. Keys whose value is None are dropped (as transformers does, so an
    OpenAI-style `content: None` beside `tool_calls` counts as missing). `reasoning_content` is filled from
    `thinking` or `reasoning` when it is not set (as transformers 5 does).
    Raises ChatError when `messages` is not a non-empty list of dicts, a role is unknown, content is missing or
    not a string (an assistant message with tool_calls may leave it out), or a tool call is malformed.
    """
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)):
        raise ChatError(f"messages must be a list of dicts or a string, got {type(messages).__name__}")
    if not messages:
        raise ChatError("messages is empty: a conversation needs at least one message")
    return [_check_message(i, message) for i, message in enumerate(messages)]


def _check_message(i, message):
    if not isinstance(message, dict):
        raise ChatError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}")
    message = {key: value for key, value in message.items() if value is not None}
    role = message.get("role")
    if role not in ROLES:
        if role is None:
            raise ChatError(f"messages[{i}] has no 'role'; expected one of {', '.join(ROLES)}")
        raise ChatError(f"messages[{i}] has unknown role {role!r}; expected one of {', '.join(ROLES)}")

    reasoning = next((message[key] for key in REASONING_KEYS if key in message), None)
    if reasoning is not None:
        if not isinstance(reasoning, str):
            raise ChatError(f"messages[{i}] ({role}): reasoning_content must be a string, "
                            f"got {type(reasoning).__name__}")
        message["reasoning_content"] = reasoning

    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant":
            raise ChatError(f"messages[{i}] ({role}): only assistant messages can carry tool_calls")
        if not isinstance(tool_calls, (list, tuple)):
            raise ChatError(f"messages[{i}]: tool_calls must be a list, got {type(tool_calls).__name__}")
        for j, call in enumerate(tool_calls):
            _check_tool_call(f"messages[{i}].tool_calls[{j}]", call)

    if "content" not in message:
        if not (role == "assistant" and tool_calls):
            raise ChatError(f"messages[{i}] ({role}) has no 'content' "
                            "(only an assistant message with tool_calls may leave it out)")
    elif not isinstance(message["content"], str):
        raise ChatError(f"messages[{i}] ({role}): content must be a string, got {type(message['content']).__name__}")
    return message


def _check_tool_call(where, call):
    if not isinstance(call, dict):
        raise ChatError(f"{where} must be a dict, got {type(call).__name__}")
    function = call.get("function") or call
    if not isinstance(function, dict):
        raise ChatError(f"{where}.function must be a dict with 'name' and 'arguments', got {type(function).__name__}")
    if not isinstance(function.get("name"), str):
        raise ChatError(f"{where} needs a string 'name' (flat, or under 'function')")
    arguments = function.get("arguments")
    if not isinstance(arguments, (str, dict)):
        raise ChatError(f"{where}: 'arguments' must be a dict or a JSON string, got {type(arguments).__name__}")


def last_query_index(messages):
    """Index of the last real user query: the last user message whose content is not a tool response wrapped
    as `<tool_response>...</tool_response>`. With none, the index of the last message.
    Assistant turns after this index keep their reasoning; earlier ones lose it."""
    for i in range(len(messages) - 1, -1, -1):
        content = messages[i].get("content")
        if messages[i]["role"] == "user" and isinstance(content, str) and not (
                content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            return i
    return len(messages) - 1


def split_reasoning(message):
    """(reasoning, content) of an assistant message, as the template takes them apart.

    `reasoning_content` wins when set. Otherwise, when the content holds `</think>`:
    reasoning = the text before the first `</think>`, trailing newlines removed, after its last `<think>`,
    leading newlines removed; content = the text after the last `</think>`, leading newlines removed.
    """
    content = message.get("content", "")
    if isinstance(message.get("reasoning_content"), str):
        return message["reasoning_content"], content
    if "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        return reasoning, content.split("</think>")[-1].lstrip("\n")
    return "", content


def render_tool_call(call):
    """`<tool_call>\\n{"name": "...", "arguments": ...}\\n</tool_call>`; the call may be `{"function": {...}}` or
    flat; arguments given as a string are written as is, a dict as JSON."""
    function = call.get("function") or call
    arguments = function["arguments"]
    if not isinstance(arguments, str):
        arguments = tojson(arguments, f"arguments of tool call {function['name']!r}")
    return '<tool_call>\n{"name": "' + function["name"] + '", "arguments": ' + arguments + "}\n</tool_call>"


def render_assistant(message, keep_reasoning):
    """One assistant turn. With `keep_reasoning` the reasoning goes in a `<think>` block (stripped of newlines
    at both ends) and the content loses its leading newlines; without, only the content is written."""
    reasoning, content = split_reasoning(message)
    if keep_reasoning:
        text = f"{IM_START}assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
    else:
        text = f"{IM_START}assistant\n{content}"
    for j, call in enumerate(message.get("tool_calls") or ()):
        # The template tests the content before its newlines were stripped for the think block.
        if j > 0 or content:
            text += "\n"
        text += render_tool_call(call)
    return text + f"{IM_END}\n"


def render_tools_system(tools, system_content):
    """The system turn that lists the tools: the system prompt (if any), then `# Tools` and one JSON per line."""
    text = f"{IM_START}system\n"
    if system_content is not None:
        text += system_content + "\n\n"
    text += TOOLS_HEADER
    for k, tool in enumerate(tools):
        text += "\n" + tojson(tool, f"tools[{k}]")
    return text + TOOLS_FOOTER + f"{IM_END}\n"


def _check_tools(tools):
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise ChatError(f"tools must be a list of JSON-schema dicts, got {type(tools).__name__}")
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise ChatError(f"tools[{k}] must be a JSON-schema dict, got {type(tool).__name__}")
    return list(tools)


def _check_enable_thinking(enable_thinking):
    if enable_thinking is not None and not isinstance(enable_thinking, bool):
        raise ChatError(f"enable_thinking must be True, False or None, got {enable_thinking!r}")


def render_chat(messages, add_generation_prompt=True, enable_thinking=None, tools=None):
    """The prompt text of a conversation, exactly as Qwen3's chat template renders it.

    messages: a list of {"role": "system" | "user" | "assistant" | "tool", "content": str, ...} dicts, or a
    string (one user message). Assistant messages may carry `reasoning_content` (or `<think>...</think>` inside
    the content) and `tool_calls`. add_generation_prompt: end with `<|im_start|>assistant\\n`.
    enable_thinking: False adds the empty think block `<think>\\n\\n</think>\\n\\n` to the generation prompt;
    True and None add nothing (the model opens `<think>` itself). tools: JSON-schema dicts listed in the system turn.
    Raises ChatError for a malformed conversation (see `normalize_messages`).
    """
    messages = normalize_messages(messages)
    tools = _check_tools(tools)
    _check_enable_thinking(enable_thinking)

    parts = []
    first_system = messages[0]["content"] if messages[0]["role"] == "system" else None
    if tools:
        parts.append(render_tools_system(tools, first_system))
    elif first_system is not None:
        parts.append(f"{IM_START}system\n{first_system}{IM_END}\n")

    last_query = last_query_index(messages)
    last = len(messages) - 1
    for i, message in enumerate(messages):
        role = message["role"]
        content = message.get("content", "")
        if role == "user" or (role == "system" and i > 0):
            parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
        elif role == "assistant":
            reasoning, _ = split_reasoning(message)
            parts.append(render_assistant(message, keep_reasoning=i > last_query and (i == last or bool(reasoning))))
        elif role == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                parts.append(f"{IM_START}user")
            parts.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if i == last or messages[i + 1]["role"] != "tool":
                parts.append(f"{IM_END}\n")

    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
        if enable_thinking is False:
            parts.append(EMPTY_THINK)
    return "".join(parts)


def thinking_flag(text):
    """The last `/think` or `/no_think` flag in `text`: True for /think, False for /no_think, None for neither."""
    flags = THINKING_FLAG.findall(text)
    if not flags:
        return None
    return flags[-1] == "think"


def resolve_thinking(messages, enable_thinking=None):
    """Which mode the flags ask for on the next turn: the rule Qwen3's thinking-mode fusion data follows, and the
    one the tiny model's corpus (`miniqwen3.corpus`) was written with. Generation does not use it (see
    `prompt_for_generation`): it labels training data and grades ThinkFollow.

    Rule, first match wins:
      1. `enable_thinking` given (True or False): it decides.
      2. Otherwise the last flag in the conversation decides: messages are read in order, only user and system
         messages count, and within one message its last flag counts. `/think` -> True, `/no_think` -> False.
         A flag is `/think` or `/no_think` as a word of its own (case-sensitive): "/thinking", "x/think" are not.
      3. No flag anywhere: True (Qwen3 thinks by default).
    The chat template itself does not read these flags.
    """
    _check_enable_thinking(enable_thinking)
    if enable_thinking is not None:
        return enable_thinking
    thinking = True
    for message in normalize_messages(messages):
        if message["role"] in ("user", "system"):
            flag = thinking_flag(message["content"])
            if flag is not None:
                thinking = flag
    return thinking


def prompt_for_generation(messages, enable_thinking=None, tools=None):
    """The prompt text for the next assistant turn: the chat template with the generation prompt, as
    transformers' `apply_chat_template(messages, add_generation_prompt=True, enable_thinking=...)` renders it.

    The soft switch (enable_thinking None or True, the default in transformers, vLLM and llama.cpp): the prompt
    ends with `<|im_start|>assistant\n` and nothing else; `/think` and `/no_think` are text the model reads, and
    the model decides whether to think: it writes `<think>\n...\n</think>\n\n`, or the empty block
    `<think>\n\n</think>\n\n` itself. Qwen3's template adds nothing for enable_thinking=True either.
    The hard switch (enable_thinking False): the template ends the prompt with the empty block, whatever the flags.
    """
    return render_chat(messages, add_generation_prompt=True, enable_thinking=enable_thinking, tools=tools)
