"""miniqwen3.tokenizer against HF `tokenizers` (the oracle) on the real Qwen3 files, plus error handling."""
import copy
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniqwen3.tokenizer import (
    BYTE_TO_CHAR,
    StreamDecoder,
    Tokenizer,
    TokenizerError,
    bpe_merge,
    bytes_to_unicode,
    is_utf8_boundary,
)



def hf_tokenizer(path):
    """HF `tokenizers` on a tokenizer.json: the oracle. Only the tests that compare with it skip without it."""
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(path))

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok(qwen3_tokenizer_dir):
    return Tokenizer.from_file(qwen3_tokenizer_dir)


@pytest.fixture(scope="module")
def hf(qwen3_tokenizer_dir):
    return hf_tokenizer(qwen3_tokenizer_dir / "tokenizer.json")


def hf_ids(hf, text):
    return hf.encode(text, add_special_tokens=False).ids


CORPUS = {
    "english": "The quick brown fox jumps over the lazy dog. It's a truth universally acknowledged...",
    "hello": "Hello world",
    "chinese": "我们在学习如何从零开始实现一个大型语言模型。通义千问是阿里巴巴开发的。",
    "japanese": "日本語のテキストです。ひらがな、カタカナ、漢字を含みます。ｶﾀｶﾅ（半角）",
    "korean": "안녕하세요, 세계! 한국어 텍스트입니다.",
    "arabic": "مرحبا بالعالم، هذا نص عربي.",
    "hindi": "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "thai_russian_greek": "สวัสดีครับ Привет, мир! Γειά σου Κόσμε",
    "emoji": "I ❤️ NumPy 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 🧑🏿‍💻",
    "python": 'def f(x):\n    if x > 0:\n\t\treturn x ** 2  # square\n    return {"a": [1, 2]}\n',
    "spaces_newlines": "a  b   c    \n\n\n  \n\t\n   x  \r\n\r\ny \n end   ",
    "trailing_space": "trailing spaces   ",
    "space_before_newline": "line one   \nline two \n",
    "only_whitespace": " \n \t \r\n  ",
    "digits": "3.14159 1234567890 0x1F 1e-10 10,000,000 ٣٤٥ ²³ ½",
    "contractions": "I'm you're he's we've they'll I'd don't ISN'T HE'S WE'LL 'S 'LL 'Re",
    "special_inline": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "think": "<think>\n\n</think>\n\nanswer",
    "partial_special": "<|im_sta <|im_end <|im_end|><|endoftext|>x<|endoftext|",
    "adjacent_special": "<|im_start|><|im_start|><think></think><tool_call>{}</tool_call>",
    "nfd_input": "cafe\u0301 nai\u0308ve \u1100\u1161\u11a8",
    "nfc_input": "café naïve 각",
    "special_then_combining": "<|im_end|>\u0338 >\u0338",
    "zero_width": "a\u200bb\u200cc\u200dd\u2060e",
    "bom": "\ufeffhello \ufeff",
    "private_use": "\ue000\uf8ff\U000f0000",
    "replacement_char": "bad \ufffd byte",
    "control_chars": "a\x00b\x01c\x1b[0m\x7f\x85\x1c\x1d",
    "math_letters": "𝐀𝐁𝐂 𝔸𝔹 𝕏 ℝ",
    "long_number": "12345678901234567890123456789",
    "unicode_spaces": "a\u00a0b\u2003c\u3000d\u2028e\u2029f",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_encode_matches_hf_on_corpus(tok, hf, name):
    assert tok.encode(CORPUS[name]) == hf_ids(hf, CORPUS[name])


def test_encode_long_inputs_match_hf(tok, hf):
    texts = [" " * 3000, "a" * 3000, "\n" * 500 + "x", "ab" * 2000, "🙂" * 500, "1" * 1000]
    for text in texts:
        assert tok.encode(text) == hf_ids(hf, text)


def test_word_cache_does_not_change_ids(tok, hf):
    text = CORPUS["english"] + CORPUS["chinese"]
    warm = tok.encode(text)
    tok.clear_cache()
    assert tok.encode(text) == warm == hf_ids(hf, text)


def test_hello_world_and_special_ids(tok):
    assert tok.encode("Hello world") == [9707, 1879]
    assert tok.endoftext_id == 151643
    assert tok.im_start_id == 151644
    assert tok.im_end_id == tok.eos_id == 151645
    assert tok.think_id == 151667
    assert tok.end_think_id == 151668


def test_vocab_queries_match_hf(tok, hf):
    assert tok.vocab_size == hf.get_vocab_size(with_added_tokens=True) == 151669
    for token_id in [0, 220, 9707, 1879, 151642, 151643, 151657, 151668]:
        assert tok.id_to_token(token_id) == hf.id_to_token(token_id)
        assert tok.token_to_id(tok.id_to_token(token_id)) == token_id
    assert tok.token_to_id("no such token") is None
    assert tok.id_to_bytes(1879) == b" world"
    assert tok.id_to_bytes(151645) == b"<|im_end|>"


def test_special_flags(tok, hf):
    text = "<|im_start|>a<think>b</think><tool_call>c</tool_call><|im_end|><|endoftext|>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "a<think>b</think><tool_call>c</tool_call>"
    assert tok.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)
    assert not tok.is_special(tok.think_id) and tok.is_special(tok.im_end_id)


def test_added_tokens_matched_before_nfc(tok, hf):
    """'>' + U+0338 composes to '≯' under NFC; the added token wins because it is cut out of the raw text."""
    text = "<|im_end|>\u0338"
    assert unicodedata.normalize("NFC", text) == "<|im_end|\u226f"
    assert tok.encode(text)[0] == tok.im_end_id
    assert tok.encode(text) == hf_ids(hf, text)


# Pieces the fuzzer strings together. Characters are limited to those Python's unicodedata (Unicode 14)
# assigns: the `regex` module's newer Unicode tables class some later characters (CJK Ext. J, ...)
# as letters where HF's Oniguruma does not yet.
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))
ALPHABETS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x3040, max_codepoint=0x30FF),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),
    st.characters(min_codepoint=0x0600, max_codepoint=0x06FF),
    st.characters(min_codepoint=0x0900, max_codepoint=0x097F),
    st.characters(min_codepoint=0x0300, max_codepoint=0x036F),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    st.sampled_from([" ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "\u200d", "\ufe0f", "0", "42", "é", "e\u0301"]),
    ASSIGNED,
)
MIXED_TEXT = st.lists(ALPHABETS, max_size=40).map("".join)
WITH_ADDED_TOKENS = st.lists(
    st.one_of(ALPHABETS, st.sampled_from(["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|im_sta", "<|", "|>"])),
    max_size=40).map("".join)


@FUZZ
@given(text=st.text(alphabet=ASSIGNED, max_size=60))
def test_fuzz_any_text_matches_hf(tok, hf, text):
    assert tok.encode(text) == hf_ids(hf, text)


@FUZZ
@given(text=MIXED_TEXT)
def test_fuzz_mixed_alphabets_match_hf_and_round_trip(tok, hf, text):
    ids = tok.encode(text)
    assert ids == hf_ids(hf, text)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


@FUZZ
@given(text=WITH_ADDED_TOKENS)
def test_fuzz_text_with_added_tokens_matches_hf(tok, hf, text):
    assert tok.encode(text) == hf_ids(hf, text)


@FUZZ
@given(ids=st.lists(st.one_of(st.integers(0, 400), st.integers(0, 151668), st.integers(151643, 151668)), max_size=12),
       skip=st.booleans())
def test_fuzz_decode_matches_hf(tok, hf, ids, skip):
    """Random ids, often lone bytes that are not valid UTF-8: replacement characters must match HF's."""
    assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_vocab_and_merges_files_give_same_ids(tok, qwen3_tokenizer_dir, tmp_path):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).symlink_to(qwen3_tokenizer_dir / name)
    legacy = Tokenizer.from_file(tmp_path)
    assert legacy.vocab_size == tok.vocab_size
    text = " ".join(CORPUS.values())
    assert legacy.encode(text) == tok.encode(text)
    assert legacy.decode(tok.encode(text), skip_special_tokens=True) == tok.decode(tok.encode(text), skip_special_tokens=True)


# ---- stream decoding ----

def test_stream_never_yields_partial_characters(tok):
    text = "中文测试 😀👨‍👩‍👧 𝐀 naïve ☃ " + CORPUS["hindi"] + CORPUS["emoji"]
    ids = tok.encode(text)
    stream = tok.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(ids) == text
    for piece in pieces:
        assert "\ufffd" not in piece
        piece.encode("utf-8")


def test_stream_character_spanning_several_tokens(tok):
    char = "\U00013000"  # EGYPTIAN HIEROGLYPH A001: four UTF-8 bytes that BPE leaves in three tokens
    ids = tok.encode(char)
    assert len(ids) == 3
    stream = tok.stream_decoder()
    for n, token_id in enumerate(ids[:-1], start=1):
        assert stream.push(token_id) == ""
        assert stream.pending == b"".join(tok.id_to_bytes(i) for i in ids[:n])
        assert not stream.at_boundary and not is_utf8_boundary(stream.pending)
    assert stream.push(ids[-1]) == char
    assert stream.pending == b"" and stream.at_boundary


def test_stream_flush_replaces_unfinished_tail(tok):
    ids = tok.encode("ab\U00013000")
    stream = tok.stream_decoder()
    text = "".join(stream.push(i) for i in ids[:-1])
    assert text == "ab"
    assert stream.flush() == "\ufffd"
    assert stream.pending == b"" and stream.push(tok.encode("z")[0]) == "z"


def test_stream_skips_special_tokens_on_request(tok):
    ids = tok.encode("<|im_start|>hi<think>x</think><|im_end|>")
    stream = tok.stream_decoder(skip_special_tokens=True)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "hi<think>x</think>"
    assert isinstance(stream, StreamDecoder)


@FUZZ
@given(ids=st.lists(st.one_of(st.integers(0, 400), st.integers(0, 151668)), max_size=16))
def test_fuzz_stream_equals_decode(tok, ids):
    stream = tok.stream_decoder()
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == tok.decode(ids)


def test_is_utf8_boundary():
    assert is_utf8_boundary(b"")
    assert is_utf8_boundary(b"abc")
    assert is_utf8_boundary("中".encode())
    assert not is_utf8_boundary("中".encode()[:2])
    assert not is_utf8_boundary(b"a" + "😀".encode()[:3])
    assert is_utf8_boundary(b"\xff")  # never valid: decodes to U+FFFD, nothing to wait for
    assert is_utf8_boundary(b"\xe0\x80")  # E0 must be followed by A0..BF


# ---- pieces ----

def test_byte_table_is_a_bijection_onto_printable_chars():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table == BYTE_TO_CHAR


def test_bpe_merge_lowest_rank_first_leftmost_on_ties():
    assert bpe_merge(list("aaa"), {("a", "a"): 0}) == ["aa", "a"]
    assert bpe_merge(list("abc"), {("a", "b"): 3, ("b", "c"): 2}) == ["a", "bc"]
    assert bpe_merge(list("aaa"), {("a", "a"): 0, ("aa", "a"): 1}) == ["aaa"]
    assert bpe_merge(list("abcd"), {("c", "d"): 0, ("b", "cd"): 1, ("a", "b"): 2}) == ["a", "bcd"]
    assert bpe_merge([], {}) == [] and bpe_merge(["x"], {}) == ["x"]


# ---- bad input ----

def test_encode_rejects_non_str(tok):
    with pytest.raises(TypeError, match="expects a str, got bytes"):
        tok.encode(b"hello")
    with pytest.raises(TypeError):
        tok.encode(None)


def test_lone_surrogate_is_a_clear_error(tok, hf):
    """HF refuses such strings (TypeError from its Python binding); we raise TokenizerError saying where."""
    with pytest.raises(TypeError):
        hf.encode("a\ud800", add_special_tokens=False)
    with pytest.raises(TokenizerError, match=r"lone surrogate U\+D800 at index 1"):
        tok.encode("a\ud800b")


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(TokenizerError, match="unknown token id 151669"):
        tok.decode([9707, 151669])
    with pytest.raises(TokenizerError, match="unknown token id -1"):
        tok.decode([-1])
    with pytest.raises(TokenizerError, match="unknown token id 999999"):
        tok.stream_decoder().push(999999)
    with pytest.raises(TypeError):
        tok.decode([1.5])


def test_decode_accepts_numpy_ids(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("Hello world")
    assert tok.decode(np.array(ids, dtype=np.int64)) == "Hello world"


# ---- loading: a tiny tokenizer.json in the real file's shape ----

PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    ],
}
TINY_MERGES = [["h", "e"], ["l", "l"], ["he", "ll"], ["Ġ", "w"], ["o", "r"], ["Ġw", "or"], ["hell", "o"]]


def tiny_tokenizer_json(merges=TINY_MERGES, **overrides):
    vocab = {c: i for i, c in enumerate(BYTE_TO_CHAR.values())}
    for a, b in TINY_MERGES:
        vocab.setdefault(a + b, len(vocab))
    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": len(vocab), "content": "<|end|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": copy.deepcopy(PRE_TOKENIZER),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    data.update(overrides)
    return data


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("merge_format", ["pairs", "strings"])
def test_tiny_tokenizer_matches_hf_in_both_merge_formats(tmp_path, merge_format):
    merges = TINY_MERGES if merge_format == "pairs" else [f"{a} {b}" for a, b in TINY_MERGES]
    path = write_json(tmp_path / "tokenizer.json", tiny_tokenizer_json(merges=merges))
    ours, theirs = Tokenizer.from_file(path), hf_tokenizer(path)
    for text in ["hello world", "hello<|end|> worldly hell", "héllo\n\n  wor"]:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids
    assert ours.encode("hello world") == [ours.token_to_id("hello"), ours.token_to_id("Ġwor"), ours.token_to_id("l"),
                                          ours.token_to_id("d")]


def test_missing_files(tmp_path):
    with pytest.raises(TokenizerError, match="nope.json: no such file"):
        Tokenizer.from_file(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.json"):
        Tokenizer.from_file(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.json"):
        Tokenizer.from_file(tmp_path)


def test_malformed_json(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", ', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer.json: not valid JSON"):
        Tokenizer.from_file(path)
    write_json(path, [1, 2])
    with pytest.raises(TokenizerError, match="should be a JSON object"):
        Tokenizer.from_file(path)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"].update(type="WordPiece"), r"field 'model.type' is 'WordPiece'; only 'BPE' is supported"),
    (lambda d: d.pop("model"), r"missing field 'model'"),
    (lambda d: d["model"].pop("merges"), r"missing field 'model.merges'"),
    (lambda d: d["model"].update(merges=[["h", "e", "x"]]), r"field 'model.merges\[0\]'"),
    (lambda d: d["model"].update(merges=[["q", "zz"]]), r"uses 'zz', which is not in the vocab"),
    (lambda d: d["model"].update(vocab={"a": 0}), r"lacks byte-level tokens for 255 bytes"),
    (lambda d: d["model"].update(byte_fallback=True), r"field 'model.byte_fallback' must be false"),
    (lambda d: d.update(normalizer={"type": "NFKC"}), r"field 'normalizer' is .*NFKC.*only NFC or null"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), r"field 'pre_tokenizer' is .*Whitespace"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed"),
     r"pretokenizers\[0\].behavior' is 'Removed'; only 'Isolated'"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"String": " "}),
     r"pretokenizers\[0\].pattern' is .*expected \{\"Regex\""),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": "(unclosed"}),
     r"pre-tokenizer regex does not compile"),
    (lambda d: d["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True),
     r"pretokenizers\[1\].add_prefix_space' must be false"),
    (lambda d: d.update(decoder=None), r"field 'decoder' is null; only ByteLevel"),
    (lambda d: d["added_tokens"][0].update(lstrip=True), r"field 'added_tokens\[0\].lstrip' must be false"),
    (lambda d: d["added_tokens"][0].pop("content"), r"missing field 'added_tokens\[0\].content'"),
])
def test_unsupported_or_malformed_fields(tmp_path, change, message):
    data = tiny_tokenizer_json()
    change(data)
    path = write_json(tmp_path / "tokenizer.json", data)
    with pytest.raises(TokenizerError, match=message) as info:
        Tokenizer.from_file(path)
    assert str(path) in str(info.value)


def test_malformed_merges_txt_and_config(tmp_path):
    vocab = {c: i for i, c in enumerate(BYTE_TO_CHAR.values())}
    write_json(tmp_path / "vocab.json", vocab)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e x\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt: line 2 is 'h e x'"):
        Tokenizer.from_file(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"uses 'he', which is not in the vocab"):
        Tokenizer.from_file(tmp_path)
    write_json(tmp_path / "vocab.json", {**vocab, "he": 256})
    write_json(tmp_path / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer"})
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: field 'tokenizer_class' is 'LlamaTokenizer'"):
        Tokenizer.from_file(tmp_path)
    write_json(tmp_path / "tokenizer_config.json", {"added_tokens_decoder": {"257": {"content": "<e>", "special": True}}})
    loaded = Tokenizer.from_file(tmp_path)
    assert loaded.encode("he<e>") == [256, 257] and loaded.decode([256, 257], skip_special_tokens=True) == "he"
