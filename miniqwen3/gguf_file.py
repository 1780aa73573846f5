"""GGUF checkpoints (llama.cpp's format): the config, the weights and the tokenizer from one file or its split parts.

A GGUF file is the magic b"GGUF", a version (2 or 3), tensor and key/value counts, the key/value metadata
(`qwen3moe.block_count`, `tokenizer.ggml.tokens`, ...), a table of tensor infos (name, dims innermost first,
GGML type, offset) and the aligned tensor data. `gguf.GGUFReader` (llama.cpp's own reader) parses it and
memory-maps the data; the arrays here are views of that map, never copies, so a 17 GiB file costs only the
pages a forward pass touches. A big model may be split into `NAME-00001-of-0000N.gguf`, ... (`split.count`,
`split.no` in every part; the first part holds the metadata).

Tensor names, GGUF -> the checkpoint names miniqwen3 uses (NumPy order, outermost axis first):

    token_embd                  model.embed_tokens                 [V, H]
    output                      lm_head (absent: tied embeddings)  [V, H]
    output_norm                 model.norm                         [H]
    blk.N.attn_norm             input_layernorm                    [H]
    blk.N.attn_q / attn_k / attn_v / attn_output    self_attn.q_proj [NH*D, H] / k_proj, v_proj [NKV*D, H] / o_proj [H, NH*D]
    blk.N.attn_q_norm / attn_k_norm                 self_attn.q_norm / k_norm [D]
    blk.N.ffn_norm              post_attention_layernorm           [H]
    blk.N.ffn_gate / ffn_up / ffn_down              mlp.gate_proj, up_proj [I, H] / down_proj [H, I]        (qwen3)
    blk.N.ffn_gate_inp          mlp.gate, the router               [E, H]                                   (qwen3moe)
    blk.N.ffn_gate_exps / ffn_up_exps / ffn_down_exps   the experts stacked: [E, I, H], [E, I, H], [E, H, I]

Qwen's converter does not permute the q/k rows (llama's does, for interleaved RoPE); Qwen3 in GGUF is
NEOX-style rotate_half RoPE like the Hugging Face checkpoint, so the rows are used as stored (tested against
the source checkpoint in tests/test_gguf.py).

Weights stay in their stored type: F32 -> float32, F16 -> float16, BF16 -> uint16 bits (as `weights.py`
holds bf16), block types (Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K) -> `quants.QuantWeight`. Every tensor's type
and shape is checked against the metadata before a `Weights` is returned.
"""
from __future__ import annotations

import re
from pathlib import Path

import gguf
import numpy as np

from .config import ConfigError, Qwen3Config
from .hub import ModelNotFoundError, cached_snapshot, hf_cache_dir
from .quants import BLOCK_WEIGHTS, TYPE_NAMES, QuantWeight, type_name
from .tokenizer import QWEN2_SPLIT_PATTERN, AddedToken, Tokenizer, _check_merges, _check_vocab
from .weights import (AttentionWeights, CheckpointError, LayerWeights, MLPWeights, MoEWeights, Weights,
                      as_float32, read_per_token_matrices)

F32, F16, BF16 = 0, 1, 30
PLAIN_TYPES = {F32: np.dtype(np.float32), F16: np.dtype(np.float16), BF16: np.dtype(np.uint16)}
ARCHITECTURES = {"qwen3": "qwen3", "qwen3moe": "qwen3_moe"}
VERSIONS = (2, 3)
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
# A quantization tag in a file name: Q8_0, Q4_K_M, IQ4_XS, BF16, F16, F32 (case-insensitive), between separators.
QUANT_TAG = re.compile(r"(?i)(?<![a-z0-9])(i?q[1-8](?:_[a-z0-9]+)*|bf16|f16|f32)(?![a-z0-9])")

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class GGUFError(CheckpointError):
    """A GGUF file that cannot be loaded: names the file, the key or tensor, and what was expected."""


# --- opening a file and its split parts ----------------------------------------------------------

def _reader_class():
    """gguf.GGUFReader with its one read helper replaced: every read is checked against the end of the file
    (a truncated file names the byte it needed instead of failing somewhere inside NumPy), and reads slice a
    plain ndarray view of the map instead of the np.memmap (whose Python-level slicing made parsing Qwen3's
    300,000 vocabulary and merge strings take 10-17 s here instead of a few). Same bytes, still memory-mapped."""
    class Reader(gguf.GGUFReader):
        _dtypes: dict = {}

        def _get(self, offset, dtype, count=1, override_order=None):
            order = self.byte_order if override_order is None else override_order
            dt = self._dtypes.get((dtype, order))
            if dt is None:
                dt = self._dtypes[dtype, order] = np.dtype(dtype).newbyteorder(order)
            end = int(offset) + dt.itemsize * int(count)
            mapped = self.__dict__.get("_mapped")
            if mapped is None:
                mapped = self._mapped = self.data.view(np.ndarray)
            if end > mapped.size:
                raise _Truncated(end)
            return mapped[offset:end].view(dt)
    return Reader


class _Truncated(Exception):
    def __init__(self, end):
        self.end = end


def open_reader(path: Path):
    """A GGUFReader of one file, after checking the magic and the version ourselves (clear messages)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise GGUFError(f"{path}: cannot read: {e}") from None
    if len(head) >= 4 and head[:4] != b"GGUF":
        raise GGUFError(f"{path}: bad magic {head[:4]!r}: not a GGUF file (a GGUF file starts with b'GGUF')")
    if len(head) < 8:
        raise GGUFError(f"{path}: truncated: {size} bytes, shorter than the 8-byte GGUF magic and version")
    version = int.from_bytes(head[4:8], "little")
    if int.from_bytes(head[4:8], "big") in VERSIONS:
        raise GGUFError(f"{path}: a big-endian GGUF; miniqwen3 reads little-endian files (llama.cpp's default)")
    if version not in VERSIONS:
        raise GGUFError(f"{path}: GGUF version {version} is not supported (supported: 2 and 3)")
    try:
        return _reader_class()(path, "r")
    except _Truncated as e:
        raise GGUFError(f"{path}: truncated: the file is {size:,} bytes, but what its header describes (metadata, "
                        f"tensor table, tensor data) needs at least {e.end:,}") from None
    except (ValueError, KeyError, IndexError, OverflowError, TypeError) as e:
        raise GGUFError(f"{path}: not a valid GGUF file ({type(e).__name__}: {e})") from None


def split_parts(path: Path) -> list[Path]:
    """The files of a model: [path], or all parts NAME-00001-of-0000N.gguf .. N when path is one of them."""
    path = Path(path)
    m = SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m["count"])
    parts = [path.with_name(f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise GGUFError(f"{path.parent}: split GGUF {m['prefix']}: {len(missing)} of {count} parts missing "
                        f"({', '.join(missing)})")
    return parts


class GGUFFile:
    """A GGUF model: one file or all its split parts, opened and cross-checked; metadata from the first part,
    tensors from all. `config()`, `weights(config)` and `tokenizer()` build miniqwen3's objects from it."""

    def __init__(self, path):
        self.parts = split_parts(Path(path))
        self.path = self.parts[0]
        self.readers = [open_reader(p) for p in self.parts]
        self.fields = self.readers[0].fields
        self._check_split()
        self.tensors = {}     # name -> (ReaderTensor, path of its part)
        for p, r in zip(self.parts, self.readers):
            for t in r.tensors:
                if t.name in self.tensors:
                    raise GGUFError(f"{p}: tensor {t.name} is also in {self.tensors[t.name][1].name}")
                self.tensors[t.name] = (t, p)

    def _check_split(self) -> None:
        n = len(self.parts)
        for i, (p, r) in enumerate(zip(self.parts, self.readers)):
            count = _value(r.fields, "split.count", p, int, 1 if n == 1 else None)
            no = _value(r.fields, "split.no", p, int, 0 if n == 1 else None)
            if count is None or no is None:
                raise GGUFError(f"{p}: no split.count / split.no metadata, but its name says part {i + 1} of {n}")
            if count != n or no != i:
                how = (f"its name says part {i + 1} of {n}" if n > 1 else "it is not named NAME-00001-of-0000N.gguf")
                raise GGUFError(f"{p}: metadata says split part {no + 1} of {count}, but {how}")
        if n > 1:
            total = sum(len(r.tensors) for r in self.readers)
            expected = _value(self.fields, "split.tensors.count", self.path, int, total)
            if total != expected:
                raise GGUFError(f"{self.path}: split.tensors.count is {expected}, but the {n} parts hold {total} tensors")

    def meta(self, key: str, kind: type, default=...):
        """Metadata value `key` of type `kind` (int, float, str, bool, list); `default` when absent, else an error."""
        return _value(self.fields, key, self.path, kind, default)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.parts)

    @property
    def architecture(self) -> str:
        return self.meta("general.architecture", str)

    @property
    def chat_template(self) -> str | None:
        """`tokenizer.chat_template`: the Jinja template of tokenizer_config.json, copied by the converter."""
        return self.meta("tokenizer.chat_template", str, None)

    @property
    def quant(self) -> str:
        """The file's quantization as llama.cpp names it (Q4_K_M, Q8_0, BF16, ...): `general.file_type`, else
        the tag in the file name, else "GGUF". Each tensor's own type is read from its entry, never from this."""
        code = self.meta("general.file_type", int, None)
        if code in set(gguf.LlamaFileType):
            return gguf.LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        return quant_tag(model_key(self.path)) or "GGUF"

    def config(self) -> Qwen3Config:
        return read_config(self)

    def weights(self, config: Qwen3Config) -> Weights:
        return read_weights(self, config)

    def tokenizer(self):
        return read_tokenizer(self)

    def __repr__(self):
        return f"GGUFFile({str(self.path)!r}, {len(self.parts)} part(s), {len(self.tensors)} tensors)"


def _value(fields, key, path, kind, default=...):
    field = fields.get(key)
    if field is None:
        if default is ...:
            raise GGUFError(f"{path}: metadata key {key!r} is missing")
        return default
    try:
        value = field.contents()
    except (ValueError, UnicodeDecodeError, IndexError) as e:
        raise GGUFError(f"{path}: metadata key {key!r} cannot be read ({e})") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind is float and isinstance(value, float) and field.types == [gguf.GGUFValueType.FLOAT32]:
        value = float(str(np.float32(value)))    # the shortest decimal of the fp32: 1e-06, not 9.99999997e-07
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise GGUFError(f"{path}: metadata key {key!r} should be {kind.__name__}, got {value!r:.80}")
    return value


# --- the config ----------------------------------------------------------------------------------

def read_config(g: GGUFFile) -> Qwen3Config:
    """A Qwen3Config from the metadata (`{arch}.block_count`, `embedding_length`, ...), validated by
    `Qwen3Config.from_dict` like a config.json. qwen3moe: every layer is MoE and the top-k weights are
    renormalised (llama.cpp hard-codes both); vocab size from token_embd; tied when there is no `output`."""
    arch = g.architecture
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{g.path}: architecture {arch!r} is not Qwen3; miniqwen3 reads GGUF architectures "
                        f"{' and '.join(ARCHITECTURES)}")
    a = arch + "."
    if "token_embd.weight" not in g.tensors:
        raise GGUFError(f"{g.path}: tensor token_embd.weight is missing (the embedding gives the vocab size)")
    vocab = int(g.tensors["token_embd.weight"][0].shape[-1])
    tokens = g.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens.data) != vocab:
        raise GGUFError(f"{g.path}: tokenizer.ggml.tokens has {len(tokens.data)} tokens, but token_embd has "
                        f"{vocab} rows")
    hidden = g.meta(a + "embedding_length", int)
    heads = g.meta(a + "attention.head_count", int)
    head_dim = g.meta(a + "attention.key_length", int, hidden // heads if heads else 0)
    value_dim = g.meta(a + "attention.value_length", int, head_dim)
    if value_dim != head_dim:
        raise GGUFError(f"{g.path}: {a}attention.value_length {value_dim} differs from key_length {head_dim}; "
                        "Qwen3 has one head_dim")
    rope_dims = g.meta(a + "rope.dimension_count", int, head_dim)
    if rope_dims != head_dim:
        raise GGUFError(f"{g.path}: {a}rope.dimension_count {rope_dims} is not head_dim {head_dim}; "
                        "Qwen3 rotates the whole head")
    raw = {
        "model_type": ARCHITECTURES[arch],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": g.meta(a + "block_count", int),
        "num_attention_heads": heads,
        "num_key_value_heads": g.meta(a + "attention.head_count_kv", int, heads),
        "head_dim": head_dim,
        "rms_norm_eps": g.meta(a + "attention.layer_norm_rms_epsilon", float),
        "rope_theta": g.meta(a + "rope.freq_base", float, 10000.0),   # llama.cpp's default when absent
        "rope_scaling": _rope_scaling(g, a),
        "max_position_embeddings": g.meta(a + "context_length", int, 40960),
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "bos_token_id": g.meta("tokenizer.ggml.bos_token_id", int, None),
        "eos_token_id": g.meta("tokenizer.ggml.eos_token_id", int, None),
        "torch_dtype": g.quant,
    }
    if arch == "qwen3moe":
        if g.meta(a + "expert_shared_count", int, 0):
            raise GGUFError(f"{g.path}: {a}expert_shared_count is set; Qwen3-MoE has no shared experts")
        gating = g.meta(a + "expert_gating_func", int, 1)
        if gating != 1:
            raise GGUFError(f"{g.path}: {a}expert_gating_func {gating} is not softmax (1), Qwen3-MoE's router")
        moe = g.meta(a + "expert_feed_forward_length", int)
        raw.update(num_experts=g.meta(a + "expert_count", int), num_experts_per_tok=g.meta(a + "expert_used_count", int),
                   moe_intermediate_size=moe, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                   intermediate_size=g.meta(a + "feed_forward_length", int, moe))
    else:
        raw["intermediate_size"] = g.meta(a + "feed_forward_length", int)
    try:
        return Qwen3Config.from_dict(raw, source=f"{g.path} (metadata)")
    except ConfigError as e:
        raise GGUFError(str(e)) from None


def _rope_scaling(g: GGUFFile, a: str) -> dict | None:
    """`{arch}.rope.scaling.*` as the rope_scaling dict of a config.json (None: plain RoPE)."""
    kind = g.meta(a + "rope.scaling.type", str, "none")
    if kind == "none":
        return None
    scaling = {"rope_type": kind, "factor": g.meta(a + "rope.scaling.factor", float, 1.0)}
    if kind == "yarn":
        scaling["original_max_position_embeddings"] = g.meta(a + "rope.scaling.original_context_length", int)
        for key, name in (("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow"),
                          ("yarn_attn_factor", "attention_factor")):
            value = g.meta(a + "rope.scaling." + key, float, None)
            if value is not None:
                scaling[name] = value
        ext = g.meta(a + "rope.scaling.yarn_ext_factor", float, None)
        if ext is not None and ext != 1.0:
            raise GGUFError(f"{g.path}: {a}rope.scaling.yarn_ext_factor {ext} is not supported (Qwen3's YaRN uses 1)")
    return scaling


# --- the weights ---------------------------------------------------------------------------------

def read_weights(g: GGUFFile, config: Qwen3Config) -> Weights:
    """Every tensor the config needs, shape- and type-checked: as zero-copy views of the memory map, but for
    the matrices every token reads in full, read into memory when they fit (`weights.read_per_token_matrices`).
    A missing tensor, a wrong shape, an unsupported type or a tensor that a Qwen3 model has no place for
    is an error; nothing is returned half-loaded."""
    c = config
    H, D, V = c.hidden_size, c.head_dim, c.vocab_size
    NH, NKV = c.num_attention_heads, c.num_key_value_heads
    used = set()

    def get(name, shape):
        used.add(name)
        return tensor(g, name, shape)

    def vec(name, n):
        return as_float32(get(name, (n,))).astype(np.float32, copy=True)

    embed = get("token_embd.weight", (V, H))
    layers = []
    for i in range(c.num_hidden_layers):
        p = f"blk.{i}."
        attn = AttentionWeights(
            q_proj=get(p + "attn_q.weight", (NH * D, H)),
            k_proj=get(p + "attn_k.weight", (NKV * D, H)),
            v_proj=get(p + "attn_v.weight", (NKV * D, H)),
            o_proj=get(p + "attn_output.weight", (H, NH * D)),
            q_norm=vec(p + "attn_q_norm.weight", D),
            k_norm=vec(p + "attn_k_norm.weight", D),
        )
        if c.is_sparse_layer(i):
            E, I = c.num_experts, c.moe_intermediate_size
            mlp = MoEWeights(
                gate=get(p + "ffn_gate_inp.weight", (E, H)),
                gate_proj=get(p + "ffn_gate_exps.weight", (E, I, H)),
                up_proj=get(p + "ffn_up_exps.weight", (E, I, H)),
                down_proj=get(p + "ffn_down_exps.weight", (E, H, I)),
            )
        else:
            I = c.intermediate_size
            mlp = MLPWeights(
                gate_proj=get(p + "ffn_gate.weight", (I, H)),
                up_proj=get(p + "ffn_up.weight", (I, H)),
                down_proj=get(p + "ffn_down.weight", (H, I)),
            )
        layers.append(LayerWeights(vec(p + "attn_norm.weight", H), attn, vec(p + "ffn_norm.weight", H), mlp))
    norm = vec("output_norm.weight", H)
    lm_head = embed if c.tie_word_embeddings else get("output.weight", (V, H))
    extra = sorted(set(g.tensors) - used)
    if extra:
        raise GGUFError(f"{g.path}: tensor(s) {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} have no "
                        f"place in a {c.model_type} model of {c.num_hidden_layers} layers")
    weights = Weights(embed, layers, norm, lm_head)
    read_per_token_matrices(weights)
    return weights


def tensor(g: GGUFFile, name: str, shape: tuple):
    """One tensor as stored, shape [..., OUT, IN] in NumPy order checked, a view of the memory map: a
    float32/float16 array, bf16 as uint16 bits, or a QuantWeight of its blocks. GGUF lists dims innermost first,
    so they are reversed."""
    if name not in g.tensors:
        raise GGUFError(f"{g.path}: tensor {name} is missing (expected shape {list(shape)})")
    t, path = g.tensors[name]
    got = tuple(int(d) for d in reversed(t.shape.tolist()))
    if got != tuple(shape):
        raise GGUFError(f"{path}: tensor {name} has shape {list(got)}, expected {list(shape)} from the metadata")
    kind = int(t.tensor_type)
    data = t.data
    if kind in (F32, F16):
        return data
    if kind == BF16:
        return data.view(np.uint16).reshape(shape)
    if kind in BLOCK_WEIGHTS:
        return QuantWeight(data, kind)
    supported = ", ".join(TYPE_NAMES[k] for k in (*PLAIN_TYPES, *BLOCK_WEIGHTS))
    raise GGUFError(f"{path}: tensor {name} has GGML type {type_name(kind)}, which miniqwen3 does not read "
                    f"(supported: {supported})")


# --- the tokenizer -------------------------------------------------------------------------------

def read_tokenizer(g: GGUFFile):
    """Qwen3's byte-level BPE tokenizer from `tokenizer.ggml.*`, or None when the file has no vocabulary.

    NORMAL tokens are the BPE vocabulary (byte-level strings like 'Ġworld'); CONTROL and USER_DEFINED tokens
    are the added tokens, matched whole before BPE (CONTROL ones are special); UNUSED ones (the converter's
    [PAD151669] .. fillers up to the embedding size) have no text, as in tokenizer.json. The regex and NFC are
    Qwen2's, which `tokenizer.ggml.pre` = "qwen2" names. One difference from tokenizer.json: the converter marks
    <|fim_prefix|> and the like CONTROL (they look special), which HF does not flag special; this only changes
    `decode(..., skip_special_tokens=True)` for those ids."""
    if "tokenizer.ggml.tokens" not in g.fields:
        return None
    model = g.meta("tokenizer.ggml.model", str)
    if model != "gpt2":
        raise GGUFError(f"{g.path}: tokenizer.ggml.model is {model!r}; miniqwen3 reads byte-level BPE ('gpt2') "
                        "tokenizers only")
    pre = g.meta("tokenizer.ggml.pre", str, None)
    if pre != "qwen2":
        raise GGUFError(f"{g.path}: tokenizer.ggml.pre is {pre!r}, not 'qwen2': miniqwen3 splits text with "
                        "Qwen2's pre-tokenizer only, and another one would give different token ids")
    tokens = g.meta("tokenizer.ggml.tokens", list)
    types = g.meta("tokenizer.ggml.token_type", list, [NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise GGUFError(f"{g.path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    vocab, added = {}, []
    for i, (tok, kind) in enumerate(zip(tokens, types)):
        if kind == NORMAL:
            if tok in vocab:
                raise GGUFError(f"{g.path}: tokenizer.ggml.tokens: {tok!r} is both id {vocab[tok]} and id {i}")
            vocab[tok] = i
        elif kind in (CONTROL, USER_DEFINED):
            added.append(AddedToken(id=i, content=tok, special=kind == CONTROL, normalized=False))
        elif kind != UNUSED:
            raise GGUFError(f"{g.path}: tokenizer.ggml.token_type of {tok!r} (id {i}) is {kind}; a byte-level "
                            "BPE vocabulary has normal (1), control (3), user-defined (4) and unused (5) tokens")
    merges = []
    for k, m in enumerate(g.meta("tokenizer.ggml.merges", list)):
        parts = m.split(" ")
        if len(parts) != 2 or not all(parts):
            raise GGUFError(f"{g.path}: tokenizer.ggml.merges[{k}] is {m!r}; expected two tokens and one space")
        merges.append((parts[0], parts[1]))
    _check_vocab(vocab, g.path, "tokenizer.ggml.tokens")
    _check_merges(merges, vocab, g.path, "tokenizer.ggml.merges")
    return Tokenizer(vocab=vocab, merges=merges, added_tokens=added, split_pattern=QWEN2_SPLIT_PATTERN, nfc=True,
                     source=str(g.path))


# --- finding the GGUF model a name means ---------------------------------------------------------

def model_key(path: Path) -> str:
    """The model a file belongs to: its name without the split suffix and .gguf ('Qwen3-30B-A3B-Q4_K_M')."""
    m = SPLIT_NAME.match(path.name)
    return m["prefix"] if m else path.name.removesuffix(".gguf")


def quant_tag(key: str) -> str | None:
    """The quantization tag in a model name, upper-cased ('Qwen3-0.6B-q8_0' -> 'Q8_0'), or None."""
    found = QUANT_TAG.findall(key)
    return found[-1].upper() if found else None


def gguf_models(folder: Path) -> dict[str, list[Path]]:
    """The GGUF models in a folder: model key -> its files (one, or the split parts found)."""
    models: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.gguf")):
        models.setdefault(model_key(p), []).append(p)
    return models


def choose(folder: Path, quant: str | None, where: str) -> Path:
    """The first file of the one GGUF model in `folder` (with quantization `quant` when given)."""
    models = gguf_models(folder)

    def listing(keys):
        return "; ".join(f"{quant_tag(k) or k} ({models[k][0].name}{f' + {len(models[k]) - 1} parts' if len(models[k]) > 1 else ''})"
                         for k in keys)
    if quant is not None:
        keys = [k for k in models if (quant_tag(k) or "").upper() == quant.upper() or k == quant]
        if not keys:
            raise GGUFError(f"{where}: no {quant} GGUF here; there is: {listing(models)}")
    else:
        keys = list(models)
    if len(keys) > 1:
        raise GGUFError(f"{where}: holds {len(keys)} GGUF models, choose one with quant= (CLI --quant, or "
                        f"NAME:QUANT): {listing(keys)}")
    files = models[keys[0]]
    return files[0]


def find_gguf(name, quant: str | None = None) -> Path | None:
    """The GGUF file (first part) that `name` means, or None when it is not a GGUF model:
    a .gguf file; a folder holding GGUF files (and no config.json, unless `quant` asks for a GGUF);
    a Hugging Face repo id whose cached snapshot holds GGUF files ("Qwen/Qwen3-30B-A3B-GGUF"), with the
    quantization as `quant` or after a colon, llama.cpp's spelling ("Qwen/Qwen3-30B-A3B-GGUF:Q4_K_M")."""
    text = str(name)
    path = Path(text).expanduser()
    if not path.exists() and ":" in text and text.count("/") == 1 and not text.startswith((".", "/")):
        text, tag = text.rsplit(":", 1)
        if quant is not None and quant.upper() != tag.upper():
            raise GGUFError(f"{name}: the name asks for {tag}, quant= for {quant}")
        quant, path = tag, Path(text)
    if path.suffix == ".gguf" and not path.exists():
        raise ModelNotFoundError(f"{path}: no such file")
    if path.is_file():
        if path.suffix != ".gguf":
            return None
        if quant is not None and (quant_tag(model_key(path)) or "").upper() != quant.upper():
            raise GGUFError(f"{path}: is {quant_tag(model_key(path)) or 'not named by its quantization'}, "
                            f"not {quant}")
        return path
    if path.is_dir():
        if not any(path.glob("*.gguf")):
            return None
        if quant is None and (path / "config.json").is_file():
            return None     # a Hugging Face checkpoint folder that also holds GGUF files
        return choose(path, quant, str(path))
    if text.count("/") != 1 or text.startswith((".", "/")):
        return None
    snapshot = _cached_gguf_snapshot(text)
    if snapshot is not None and (quant is not None or not (snapshot / "config.json").is_file()):
        return choose(snapshot, quant, f"{text} (in {snapshot})")
    if quant is None:
        return None
    how = (f"get it with `huggingface-cli download {text} --include '*{quant}*.gguf'` on a machine with network "
           f"access, then pass the folder or file (or copy it into {hf_cache_dir()})")
    try:
        import huggingface_hub
    except ImportError:
        raise ModelNotFoundError(f"{text}: not in the local Hugging Face cache ({hf_cache_dir()}), and "
                                 f"huggingface_hub is not installed (pip install 'miniqwen3[hub]'); {how}") from None
    try:
        folder = Path(huggingface_hub.snapshot_download(
            text, allow_patterns=[f"*{quant}*.gguf", f"*{quant.lower()}*.gguf", f"*{quant.upper()}*.gguf"]))
    except Exception as e:  # network refused, repo missing, auth: all end the same way for the user
        why = " ".join(str(e).split())[:300]
        raise ModelNotFoundError(f"{text}: download failed ({type(e).__name__}: {why}); {how}") from None
    return choose(folder, quant, text)


def _cached_gguf_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of repo_id in the local HF cache that holds .gguf files (refs/main first)."""
    return cached_snapshot(repo_id, holds=lambda folder: any(folder.glob("*.gguf")))


def load_gguf(path):
    """(config, weights, tokenizer or None) of the GGUF model at `path` (a file, or any part of a split model);
    everything is checked before anything is returned."""
    g = GGUFFile(path)
    config = g.config()
    weights = g.weights(config)
    return g, config, weights, g.tokenizer()
