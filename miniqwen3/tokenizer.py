"""Byte-level BPE tokenizer for Qwen3, read from `tokenizer.json` (or `vocab.json` + `merges.txt`).

The pipeline, as the Hugging Face `tokenizers` library runs it for Qwen3:

1. Added tokens (`<|im_start|>`, `<think>`, ...) are cut out of the raw text first, longest match at the
   leftmost position. Tokens flagged `normalized: false` (all of Qwen3's) are matched before normalization.
2. Each remaining piece is normalized to NFC.
3. The pre-tokenizer regex splits the piece into words; every character lands in some word
   (`Split`, behavior `Isolated`).
4. Each word's UTF-8 bytes are written as printable characters through the GPT-2 byte-to-unicode table
   (`ByteLevel`), so a 256-symbol alphabet covers any text.
5. BPE merges adjacent symbols, always the pair with the lowest merge rank first (leftmost on ties),
   until no pair in the merge list is left. The result is looked up in the vocabulary.

Decoding maps ids back to bytes and decodes UTF-8 with replacement characters for invalid sequences.
`StreamDecoder` does the same one id at a time and holds back bytes of an unfinished character.

Ids equal HF's for any text of characters that Python's `unicodedata` assigns. Characters added to Unicode
later (CJK Extension J, ...) can split differently: the `regex` module may already class them as letters
(`\\p{L}`) where HF's Oniguruma does not yet. Unlike HF, decoding an unknown id is an error, not skipped.
"""
from __future__ import annotations

import codecs
import heapq
import json
import operator
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import regex

QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The pre-tokenizer regex of transformers' Qwen2Tokenizer; used only when loading `vocab.json` + `merges.txt`,
which do not carry it. `tokenizer.json` loading reads the regex from the file."""

SUPPORTED_TOKENIZER_CLASSES = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
WORD_CACHE_LIMIT = 200_000


class TokenizerError(ValueError):
    """A tokenizer file is missing, malformed or unsupported, or an id or text cannot be handled."""


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-to-unicode table: each byte 0..255 maps to one printable character.

    Printable Latin-1 bytes map to themselves; the other 68 (control chars, space, ...) map to
    U+0100 upwards in byte order, so a space (0x20) becomes 'Ġ' (U+0120) and '\\n' becomes 'Ċ'.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_BYTE_CHAR_TO_LATIN1 = {ord(c): chr(b) for b, c in BYTE_TO_CHAR.items()}  # str.translate table, table char -> chr(byte)


def word_to_byte_chars(word: str) -> str:
    """The byte-level spelling of `word`: its UTF-8 bytes, each written as one table character."""
    return word.encode("utf-8").decode("latin-1").translate(BYTE_TO_CHAR)


def byte_chars_to_bytes(token: str) -> bytes:
    """The raw bytes behind a byte-level token string such as 'Ġworld' (-> b' world').

    Raises UnicodeEncodeError if `token` has a character outside the table.
    """
    return token.translate(_BYTE_CHAR_TO_LATIN1).encode("latin-1")


def is_utf8_boundary(data: bytes) -> bool:
    """True when `data` does not end inside a UTF-8 character that more bytes could still complete.

    Invalid bytes count as finished (they decode to U+FFFD); only a valid but incomplete tail such as
    b'\\xe4\\xb8' (the first two of the three bytes of '中') makes this False.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoder.decode(bytes(data))
    return not decoder.getstate()[0]


def bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge adjacent symbols of one word by rank until no mergeable pair is left.

    Repeatedly merges the pair with the lowest rank in `ranks` (the leftmost one on ties), as HF
    `tokenizers` does: a heap of candidate pairs (rank, position) over a linked list of symbols, so long
    words cost O(n log n). Entries made stale by an earlier merge are skipped when popped.
    """
    n = len(symbols)
    if n < 2:
        return list(symbols)
    parts: list[str | None] = list(symbols)
    next_pos = list(range(1, n + 1))
    next_pos[-1] = -1
    prev_pos = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        rank = ranks.get((symbols[i], symbols[i + 1]))
        if rank is not None:
            heap.append((rank, i))
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        left = parts[i]
        j = next_pos[i]
        if left is None or j == -1:
            continue
        right = parts[j]
        if ranks.get((left, right)) != rank:
            continue
        merged = left + right
        parts[i] = merged
        parts[j] = None
        k = next_pos[j]
        next_pos[i] = k
        if k != -1:
            prev_pos[k] = i
            rank_right = ranks.get((merged, parts[k]))
            if rank_right is not None:
                heapq.heappush(heap, (rank_right, i))
        p = prev_pos[i]
        if p != -1:
            rank_left = ranks.get((parts[p], merged))
            if rank_left is not None:
                heapq.heappush(heap, (rank_left, p))
    return [s for s in parts if s is not None]


@dataclass(frozen=True)
class AddedToken:
    """A token matched verbatim in the text before BPE (`<|im_end|>`, `<think>`, ...).

    `special` tokens are dropped by `decode(..., skip_special_tokens=True)`; `normalized` ones are matched
    in the NFC-normalized text instead of the raw text.
    """
    id: int
    content: str
    special: bool
    normalized: bool


class Tokenizer:
    """Qwen3's byte-level BPE tokenizer: `encode` text to ids and `decode` ids to text.

    Build one with `Tokenizer.from_file(path)`. The constructor takes already-parsed parts:
    `vocab` (byte-level token string -> id), `merges` (pairs in rank order), the added tokens,
    the pre-tokenizer regex and whether to NFC-normalize.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], added_tokens: list[AddedToken],
                 split_pattern: str, nfc: bool = True, ignore_merges: bool = False, source: str = "<memory>"):
        self.source = source
        self.nfc = nfc
        self.ignore_merges = ignore_merges
        self._vocab = dict(vocab)
        self._ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._added = {t.content: t for t in added_tokens}
        self._special_ids = frozenset(t.id for t in added_tokens if t.special)
        try:
            self._split_re = regex.compile(split_pattern)
        except regex.error as e:
            raise TokenizerError(f"{source}: pre-tokenizer regex does not compile: {e}") from e
        self._raw_added = {t.content: t.id for t in added_tokens if not t.normalized}
        self._normalized_added = {self._normalize(t.content): t.id for t in added_tokens if t.normalized}
        self._raw_added_re = _alternation(list(self._raw_added))
        self._normalized_added_re = _alternation(list(self._normalized_added))
        self._cache: dict[str, list[int]] = {}
        self._id_to_token, self._id_bytes = _id_tables(self._vocab, added_tokens, source)
        self._vocab_size = sum(1 for b in self._id_bytes if b is not None)

    # ---- loading ----

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load from a `tokenizer.json`, or a folder holding `tokenizer.json` (preferred) or
        `vocab.json` + `merges.txt` (+ `tokenizer_config.json` for the added tokens)."""
        path = Path(path)
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                return cls(**read_tokenizer_json(path / "tokenizer.json"))
            if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
                return cls(**read_vocab_and_merges(path))
            raise TokenizerError(f"{path}: folder has neither tokenizer.json nor vocab.json + merges.txt")
        if not path.is_file():
            raise TokenizerError(f"{path}: no such file or folder")
        return cls(**read_tokenizer_json(path))

    # ---- vocabulary ----

    @property
    def vocab_size(self) -> int:
        """Number of ids, BPE tokens plus added tokens (151,669 for Qwen3; the model's embedding is padded larger)."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        """The id of an added token ('<|im_end|>') or a byte-level BPE token ('Ġworld'); None if there is none."""
        added = self._added.get(token)
        if added is not None:
            return added.id
        return self._vocab.get(token)

    def id_to_token(self, token_id: int) -> str:
        """The token string of an id: the added token's text, or the byte-level spelling ('Ġworld')."""
        self._check_id(token_id)
        return self._id_to_token[token_id]

    def id_to_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (b' world' for 'Ġworld'); an added token gives its UTF-8."""
        self._check_id(token_id)
        return self._id_bytes[token_id]

    def is_special(self, token_id: int) -> bool:
        """True for added tokens flagged special (`<|im_end|>`), False for all others (`<think>` included)."""
        return token_id in self._special_ids

    def _check_id(self, token_id) -> None:
        i = operator.index(token_id)
        if not (0 <= i < len(self._id_bytes)) or self._id_bytes[i] is None:
            raise TokenizerError(f"unknown token id {i}: {self.source} has ids 0..{len(self._id_bytes) - 1}")

    @property
    def endoftext_id(self) -> int | None:
        return self.token_to_id("<|endoftext|>")

    @property
    def im_start_id(self) -> int | None:
        return self.token_to_id("<|im_start|>")

    @property
    def im_end_id(self) -> int | None:
        return self.token_to_id("<|im_end|>")

    @property
    def eos_id(self) -> int | None:
        """The end of a chat turn, `<|im_end|>`: the id a chat generation stops on."""
        return self.im_end_id

    @property
    def think_id(self) -> int | None:
        return self.token_to_id("<think>")

    @property
    def end_think_id(self) -> int | None:
        return self.token_to_id("</think>")

    # ---- encoding ----

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, as HF `tokenizers` gives with `add_special_tokens=False`.

        Added tokens written in the text (`<|im_start|>user`) become their ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TokenizerError(
                f"text has a lone surrogate U+{ord(text[e.start]):04X} at index {e.start}; "
                "it is not a character and has no UTF-8 bytes") from None
        ids: list[int] = []
        for piece, added_id in _split_on(text, self._raw_added_re, self._raw_added):
            if added_id is not None:
                ids.append(added_id)
                continue
            for sub, sub_id in _split_on(self._normalize(piece), self._normalized_added_re, self._normalized_added):
                if sub_id is not None:
                    ids.append(sub_id)
                else:
                    self._encode_ordinary(sub, ids)
        return ids

    def _normalize(self, text: str) -> str:
        return unicodedata.normalize("NFC", text) if self.nfc else text

    def clear_cache(self) -> None:
        """Forget the per-word BPE results (to measure cold encoding, or to free memory)."""
        self._cache.clear()

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        """Append the ids of text that holds no added token: pre-tokenize, then BPE each word (cached)."""
        cache = self._cache
        for word in self._pre_tokenize(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._encode_word(word)
                if len(cache) >= WORD_CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

    def _pre_tokenize(self, text: str) -> list[str]:
        """Split text into words by the regex, keeping any unmatched stretch as a word of its own."""
        if not self._split_re.groups:
            words = self._split_re.findall(text)
            if sum(map(len, words)) == len(text):
                return words
        words, end = [], 0
        for m in self._split_re.finditer(text):
            if m.start() > end:
                words.append(text[end:m.start()])
            if m.end() > m.start():
                words.append(m.group())
            end = m.end()
        if end < len(text):
            words.append(text[end:])
        return words

    def _encode_word(self, word: str) -> list[int]:
        """BPE ids of one pre-tokenized word."""
        chars = word_to_byte_chars(word)
        vocab = self._vocab
        if self.ignore_merges and chars in vocab:
            return [vocab[chars]]
        return [vocab[s] for s in bpe_merge(list(chars), self._ranks)]

    # ---- decoding ----

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """The text of a sequence of ids; invalid UTF-8 becomes U+FFFD. `skip_special_tokens` drops
        special added tokens (`<|im_end|>`, ...) but keeps `<think>`/`</think>`, which are not special."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    def decode_bytes(self, ids, skip_special_tokens: bool = False) -> bytes:
        """The raw bytes of a sequence of ids, before UTF-8 decoding."""
        special = self._special_ids if skip_special_tokens else frozenset()
        return b"".join(self.id_to_bytes(i) for i in ids if i not in special)

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """A decoder that takes ids one at a time and gives back only complete characters."""
        return StreamDecoder(self, skip_special_tokens)

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, added_tokens={len(self._added)})"


class StreamDecoder:
    """Incremental decoding for generation: `push(id)` returns the text that is now complete.

    Bytes of a character split across tokens wait in `pending` until the character is whole, so no piece
    ever ends in half a character; the pieces concatenated equal `Tokenizer.decode` of all the ids.
    `flush()` returns what is left (an unfinished tail becomes U+FFFD) and starts over.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one id; return the text completed by it (may be '' while a character is unfinished)."""
        data = self.tokenizer.id_to_bytes(token_id)
        if self.skip_special_tokens and self.tokenizer.is_special(token_id):
            return ""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Return the held-back tail (as U+FFFD if it never became a character) and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet returned: the start of an unfinished UTF-8 character, or b''."""
        return self._decoder.getstate()[0]

    @property
    def at_boundary(self) -> bool:
        """True when no character is half-received, so the text so far ends between characters."""
        return not self.pending


# ---- helpers for encoding ----

def _alternation(contents: list[str]) -> re.Pattern | None:
    """A regex matching any of `contents`, the longest one at the leftmost position; None if empty."""
    if not contents:
        return None
    ordered = sorted(set(contents), key=lambda s: (-len(s), s))
    return re.compile("|".join(re.escape(c) for c in ordered))


def _split_on(text: str, pattern: re.Pattern | None, added: dict[str, int]):
    """Yield (piece, None) for ordinary stretches of text and ('', id) for each added token found."""
    if pattern is None:
        if text:
            yield text, None
        return
    start = 0
    for m in pattern.finditer(text):
        if m.start() > start:
            yield text[start:m.start()], None
        yield "", added[m.group()]
        start = m.end()
    if start < len(text):
        yield text[start:], None


def _id_tables(vocab: dict[str, int], added_tokens: list[AddedToken], source: str):
    """id -> token string and id -> raw bytes, as lists indexed by id (None where no token has the id)."""
    size = max([*vocab.values(), *(t.id for t in added_tokens), -1]) + 1
    id_to_token: list[str | None] = [None] * size
    for token, i in vocab.items():
        id_to_token[i] = token
    tokens = [t for t in id_to_token if t is not None]
    try:
        joined = byte_chars_to_bytes("".join(tokens))
    except UnicodeEncodeError:
        bad = next(t for t in tokens if any(c not in CHAR_TO_BYTE for c in t))
        raise TokenizerError(f"{source}: vocab token {bad!r} has characters outside the byte-level alphabet") from None
    id_bytes: list[bytes | None] = [None] * size
    pos = 0
    for i, token in enumerate(id_to_token):
        if token is not None:
            id_bytes[i] = joined[pos:pos + len(token)]
            pos += len(token)
    for t in added_tokens:
        id_to_token[t.id] = t.content
        id_bytes[t.id] = t.content.encode("utf-8")
    return id_to_token, id_bytes


# ---- reading files ----

def _load_json(path: Path):
    if not path.is_file():
        raise TokenizerError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from e


def _field(obj, key: str, path: Path, where: str, kind: type):
    """obj[key], checked to exist and to be a `kind`, else a TokenizerError naming the file and field."""
    name = f"{where}.{key}" if where else key
    if not isinstance(obj, dict) or key not in obj:
        raise TokenizerError(f"{path}: missing field '{name}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise TokenizerError(f"{path}: field '{name}' should be {kind.__name__}, got {type(value).__name__}")
    return value


def _expect(condition: bool, path: Path, field: str, message: str) -> None:
    if not condition:
        raise TokenizerError(f"{path}: field '{field}' {message}")


def read_tokenizer_json(path: Path) -> dict:
    """Parse and check a HF `tokenizer.json`; return the keyword arguments of `Tokenizer`.

    Supported: model BPE (no dropout, byte_fallback, subword prefix or suffix); normalizer NFC or none;
    pre-tokenizer Sequence[Split(Regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)];
    decoder ByteLevel; added tokens without lstrip/rstrip/single_word.
    """
    path = Path(path)
    data = _load_json(path)
    _expect(isinstance(data, dict), path, "(top level)", "should be a JSON object")
    model = _field(data, "model", path, "", dict)
    model_type = model.get("type")
    _expect(model_type == "BPE", path, "model.type", f"is {model_type!r}; only 'BPE' is supported")
    _expect(model.get("dropout") in (None, 0, 0.0), path, "model.dropout", "must be null (BPE dropout is not supported)")
    _expect(not model.get("byte_fallback"), path, "model.byte_fallback", "must be false (byte fallback is not supported)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        _expect(model.get(key) in (None, ""), path, f"model.{key}", "must be empty or null")
    vocab = _check_vocab(_field(model, "vocab", path, "model", dict), path, "model.vocab")
    merges = _parse_merges(_field(model, "merges", path, "model", list), path)
    _check_merges(merges, vocab, path, "model.merges")

    added = [_parse_added_token(entry, entry.get("id") if isinstance(entry, dict) else None, path, f"added_tokens[{k}]")
             for k, entry in enumerate(_field(data, "added_tokens", path, "", list))]

    normalizer = data.get("normalizer")
    _expect(normalizer is None or normalizer == {"type": "NFC"}, path, "normalizer",
            f"is {_short(normalizer)}; only NFC or null is supported")
    split_pattern = _parse_pre_tokenizer(data.get("pre_tokenizer"), path)
    decoder = data.get("decoder")
    _expect(isinstance(decoder, dict) and decoder.get("type") == "ByteLevel", path, "decoder",
            f"is {_short(decoder)}; only ByteLevel is supported")
    post = data.get("post_processor")
    _expect(post is None or isinstance(post, dict) and post.get("type") == "ByteLevel", path, "post_processor",
            f"is {_short(post)}; only ByteLevel or null is supported")
    for key in ("truncation", "padding"):
        _expect(data.get(key) is None, path, key, "must be null (truncation and padding are not supported)")
    return dict(vocab=vocab, merges=merges, added_tokens=added, split_pattern=split_pattern,
                nfc=normalizer is not None, ignore_merges=bool(model.get("ignore_merges", False)), source=str(path))


def read_vocab_and_merges(folder: Path) -> dict:
    """Parse `vocab.json`, `merges.txt` and (if present) `tokenizer_config.json` of a Qwen2-style tokenizer;
    return the keyword arguments of `Tokenizer`. The regex and NFC come from Qwen2Tokenizer, which these
    files are written for."""
    folder = Path(folder)
    vocab_path, merges_path, config_path = folder / "vocab.json", folder / "merges.txt", folder / "tokenizer_config.json"
    vocab_data = _load_json(vocab_path)
    _expect(isinstance(vocab_data, dict), vocab_path, "(top level)", "should be a JSON object of token -> id")
    vocab = _check_vocab(vocab_data, vocab_path, "(top level)")
    merges = _read_merges_txt(merges_path)
    _check_merges(merges, vocab, merges_path, "(lines)")
    added = []
    if config_path.is_file():
        config = _load_json(config_path)
        _expect(isinstance(config, dict), config_path, "(top level)", "should be a JSON object")
        cls_name = config.get("tokenizer_class")
        _expect(cls_name is None or cls_name in SUPPORTED_TOKENIZER_CLASSES, config_path, "tokenizer_class",
                f"is {cls_name!r}; vocab.json + merges.txt loading supports {', '.join(SUPPORTED_TOKENIZER_CLASSES)}")
        decoder = config.get("added_tokens_decoder", {})
        _expect(isinstance(decoder, dict), config_path, "added_tokens_decoder", "should be an object of id -> token")
        for key, entry in decoder.items():
            _expect(key.isdigit(), config_path, f"added_tokens_decoder.{key}", "key should be a token id")
            added.append(_parse_added_token(entry, int(key), config_path, f"added_tokens_decoder.{key}"))
    return dict(vocab=vocab, merges=merges, added_tokens=added, split_pattern=QWEN2_SPLIT_PATTERN,
                nfc=True, source=str(folder))


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_vocab(vocab: dict, path: Path, where: str) -> dict[str, int]:
    """Check token -> id: ids are distinct non-negative ints and every byte has a one-character token."""
    seen: dict[int, str] = {}
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise TokenizerError(f"{path}: field '{where}' maps {token!r} to {i!r}; ids must be non-negative integers")
        if i in seen:
            raise TokenizerError(f"{path}: field '{where}' gives id {i} to both {seen[i]!r} and {token!r}")
        seen[i] = token
    missing = [c for c in BYTE_TO_CHAR.values() if c not in vocab]
    if missing:
        raise TokenizerError(f"{path}: field '{where}' lacks byte-level tokens for {len(missing)} bytes "
                             f"(e.g. {missing[0]!r}); a byte-level BPE vocab needs all 256")
    return vocab


def _parse_merges(raw: list, path: Path) -> list[tuple[str, str]]:
    """Merges given as "a b" strings (older files) or [a, b] pairs (newer files)."""
    merges = []
    for k, m in enumerate(raw):
        parts = m.split(" ") if type(m) is str else m
        if type(parts) is not list or len(parts) != 2 or type(parts[0]) is not str or type(parts[1]) is not str:
            raise TokenizerError(f"{path}: field 'model.merges[{k}]' is {m!r}; expected \"a b\" or [\"a\", \"b\"]")
        merges.append((parts[0], parts[1]))
    return merges


def _read_merges_txt(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional '#version' line, then one 'a b' pair per line in rank order."""
    if not path.is_file():
        raise TokenizerError(f"{path}: no such file")
    merges = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise TokenizerError(f"{path}: line {n} is {line!r}; expected two tokens separated by one space")
            merges.append((parts[0], parts[1]))
    return merges


def _check_merges(merges: list[tuple[str, str]], vocab: dict[str, int], path: Path, where: str) -> None:
    """Each merge's parts and result must be vocab tokens (HF refuses such files too)."""
    for k, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab or a + b not in vocab:
            missing = next(t for t in (a, b, a + b) if t not in vocab)
            raise TokenizerError(f"{path}: field '{where}' entry {k} ({a!r}, {b!r}) uses {missing!r}, which is not in the vocab")


def _parse_added_token(entry, token_id, path: Path, where: str) -> AddedToken:
    _expect(isinstance(entry, dict), path, where, "should be an object")
    content = _field(entry, "content", path, where, str)
    _expect(bool(content), path, f"{where}.content", "must not be empty")
    _expect(isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0, path, f"{where}.id",
            f"is {token_id!r}; expected a non-negative integer")
    for flag in ("lstrip", "rstrip", "single_word"):
        _expect(not entry.get(flag, False), path, f"{where}.{flag}", "must be false (not supported)")
    return AddedToken(id=token_id, content=content, special=bool(entry.get("special", False)),
                      normalized=bool(entry.get("normalized", False)))


def _parse_pre_tokenizer(pre, path: Path) -> str:
    """Check pre_tokenizer is Sequence[Split(Regex, Isolated), ByteLevel(no prefix space, no regex)]; return the regex."""
    expected = "Sequence of [Split(Regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]"
    _expect(isinstance(pre, dict) and pre.get("type") == "Sequence", path, "pre_tokenizer",
            f"is {_short(pre)}; expected a {expected}")
    steps = pre.get("pretokenizers")
    _expect(isinstance(steps, list) and len(steps) == 2, path, "pre_tokenizer.pretokenizers", f"should be {expected}")
    split, byte_level = steps
    where = "pre_tokenizer.pretokenizers[0]"
    _expect(isinstance(split, dict) and split.get("type") == "Split", path, where, f"is {_short(split)}; expected Split")
    pattern = split.get("pattern")
    _expect(isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str), path, f"{where}.pattern",
            f"is {_short(pattern)}; expected {{\"Regex\": \"...\"}}")
    _expect(split.get("behavior") == "Isolated", path, f"{where}.behavior", f"is {split.get('behavior')!r}; only 'Isolated' is supported")
    _expect(not split.get("invert", False), path, f"{where}.invert", "must be false")
    where = "pre_tokenizer.pretokenizers[1]"
    _expect(isinstance(byte_level, dict) and byte_level.get("type") == "ByteLevel", path, where,
            f"is {_short(byte_level)}; expected ByteLevel")
    _expect(not byte_level.get("add_prefix_space", False), path, f"{where}.add_prefix_space", "must be false")
    _expect(not byte_level.get("use_regex", True), path, f"{where}.use_regex", "must be false (the Split step does the splitting)")
    return pattern["Regex"]
