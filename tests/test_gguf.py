"""GGUF checkpoints: config and tensor mapping, logits and experts against transformers given the same file's
weights dequantized by `gguf` (the independent oracle), the tokenizer from GGUF metadata against HF
`tokenizers`, loading by file / folder / split parts / repo id with a quantization, and every bad input.

Small GGUFs are written here with gguf.GGUFWriter from random weights (F32, F16, BF16, Q8_0, Q4_0, Q5_0 via
gguf.quants.quantize); the files written by llama.cpp's converter and quantizer (K-quants included) live in
tests/fixtures/gguf when present.
"""
import json
import mmap
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import miniqwen3  # noqa: E402
from miniqwen3.gguf_file import GGUFError, GGUFFile, find_gguf  # noqa: E402
from miniqwen3.weights import CheckpointError, MoEWeights, as_float32  # noqa: E402

T = gguf.GGMLQuantizationType
FIXTURES = Path(__file__).parent / "fixtures" / "gguf"

# --- small random models, written as GGUF here ---------------------------------------------------

DENSE = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 160, "hidden_size": 64,
         "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "head_dim": 32, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 4096,
         "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False, "bos_token_id": 151643,
         "eos_token_id": 151645}
MOE = {**DENSE, "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_experts": 8,
       "num_experts_per_tok": 2, "moe_intermediate_size": 64, "norm_topk_prob": True, "decoder_sparse_step": 1,
       "mlp_only_layers": [], "tie_word_embeddings": True}
CONFIGS = {"dense": DENSE, "moe": MOE, "dense-v320": {**DENSE, "vocab_size": 320}}

# HF name (after "model.layers.N.") -> GGUF name (after "blk.N.")
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
}
EXPERT_NAMES = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}


def random_state_dict(cfg: dict, seed: int = 0) -> dict:
    """HF tensor names -> float32 arrays of a random Qwen3 / Qwen3-MoE (norms near 1, matrices ~N(0, 0.05))."""
    rng = np.random.default_rng(seed)
    H, D, V = cfg["hidden_size"], cfg["head_dim"], cfg["vocab_size"]
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def m(*shape):
        return rng.normal(0, 0.05, shape).astype(np.float32)

    def norm(n):
        return rng.uniform(0.5, 1.5, n).astype(np.float32)
    sd = {"model.embed_tokens.weight": m(V, H), "model.norm.weight": norm(H)}
    if not cfg["tie_word_embeddings"]:
        sd["lm_head.weight"] = m(V, H)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd.update({p + "input_layernorm.weight": norm(H), p + "post_attention_layernorm.weight": norm(H),
                   p + "self_attn.q_proj.weight": m(NH * D, H), p + "self_attn.k_proj.weight": m(NKV * D, H),
                   p + "self_attn.v_proj.weight": m(NKV * D, H), p + "self_attn.o_proj.weight": m(H, NH * D),
                   p + "self_attn.q_norm.weight": norm(D), p + "self_attn.k_norm.weight": norm(D)})
        if cfg["model_type"] == "qwen3_moe":
            E, I = cfg["num_experts"], cfg["moe_intermediate_size"]
            sd[p + "mlp.gate.weight"] = rng.normal(0, 0.5, (E, H)).astype(np.float32)
            for e in range(E):
                q = f"{p}mlp.experts.{e}."
                sd.update({q + "gate_proj.weight": m(I, H), q + "up_proj.weight": m(I, H), q + "down_proj.weight": m(H, I)})
        else:
            I = cfg["intermediate_size"]
            sd.update({p + "mlp.gate_proj.weight": m(I, H), p + "mlp.up_proj.weight": m(I, H),
                       p + "mlp.down_proj.weight": m(H, I)})
    return sd


def gguf_tensors(cfg: dict, sd: dict) -> dict:
    """HF state dict -> GGUF names and arrays (experts stacked [E, out, in]), as llama.cpp's converter maps them."""
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if "lm_head.weight" in sd:
        out["output.weight"] = sd["lm_head.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for hf, g in LAYER_NAMES.items():
            if p + hf + ".weight" in sd:
                out[f"blk.{i}.{g}.weight"] = sd[p + hf + ".weight"]
        if cfg["model_type"] == "qwen3_moe":
            for hf, g in EXPERT_NAMES.items():
                out[f"blk.{i}.{g}.weight"] = np.stack(
                    [sd[f"{p}mlp.experts.{e}.{hf}.weight"] for e in range(cfg["num_experts"])])
    return out


def write_gguf(path: Path, cfg: dict, tensors: dict, matrix_type=T.F32, *, arch=None, types=None,
               split_max_tensors=0, metadata=None, tokenizer=None) -> None:
    """A GGUF file as llama.cpp writes one: Qwen3 metadata keys, norms and router F32, the other matrices in
    `matrix_type` (quantized by gguf.quants.quantize), `types` overriding per tensor name."""
    arch = arch or {"qwen3": "qwen3", "qwen3_moe": "qwen3moe"}[cfg["model_type"]]
    w = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if cfg["model_type"] == "qwen3_moe":
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    w.add_file_type({T.F32: gguf.LlamaFileType.ALL_F32, T.F16: gguf.LlamaFileType.MOSTLY_F16,
                     T.BF16: gguf.LlamaFileType.MOSTLY_BF16, T.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
                     T.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0, T.Q5_0: gguf.LlamaFileType.MOSTLY_Q5_0}[matrix_type])
    for key, value in (metadata or {}).items():
        add = {str: w.add_string, int: w.add_uint32, float: w.add_float32, bool: w.add_bool}[type(value)]
        add(key, value)
    if tokenizer is not None:
        tokenizer(w)
    for name, a in tensors.items():
        kind = (types or {}).get(name)
        if kind is None:
            kind = T.F32 if a.ndim == 1 or name.endswith("ffn_gate_inp.weight") else matrix_type
        if kind == T.F32:
            w.add_tensor(name, a.astype(np.float32))
        elif kind == T.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a.astype(np.float32), kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_gguf(tmp_path, kind="dense", matrix_type=T.F32, name=None, seed=0, **options):
    cfg = CONFIGS[kind]
    sd = random_state_dict(cfg, seed)
    Path(tmp_path).mkdir(parents=True, exist_ok=True)
    path = Path(tmp_path) / (name or f"{kind}-{matrix_type.name}.gguf")
    write_gguf(path, cfg, gguf_tensors(cfg, sd), matrix_type, **options)
    return path, cfg, sd


# --- the oracle: transformers given the same file's weights, dequantized by gguf -------------------

def dequantized_state_dict(path: Path, cfg: dict) -> dict:
    """HF names -> float32 tensors from gguf.GGUFReader + gguf.quants.dequantize (no miniqwen3 code)."""
    back = {v: k for k, v in LAYER_NAMES.items()}
    sd = {}
    parts = sorted(path.parent.glob(re.sub(r"-00001-of-", "-*-of-", path.name)))
    for part in parts:
        for t in gguf.GGUFReader(part).tensors:
            a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            name = t.name.removesuffix(".weight")
            if name == "token_embd":
                sd["model.embed_tokens.weight"] = a
            elif name == "output":
                sd["lm_head.weight"] = a
            elif name == "output_norm":
                sd["model.norm.weight"] = a
            else:
                _, i, g = name.split(".")
                p = f"model.layers.{i}."
                if g in back:
                    sd[p + back[g] + ".weight"] = a
                else:
                    hf = {v: k for k, v in EXPERT_NAMES.items()}[g]
                    for e in range(a.shape[0]):
                        sd[f"{p}mlp.experts.{e}.{hf}.weight"] = a[e]
    return sd


def transformers_outputs(folder: Path, cfg: dict, sd: dict, ids) -> dict:
    """Logits [T, V] and per-layer chosen experts of transformers (fp32, eager) on these weights."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM
    from parity_cases import reference_outputs
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "float32"}))
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(folder / "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    return reference_outputs(model, np.asarray(ids))


def relative_error(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def kernels_take_quant_weights() -> bool:
    """Whether the Numba kernels run on a QuantWeight at all (their integration is in progress elsewhere);
    once they do, the numba cases below check their results."""
    from miniqwen3 import kernels
    from miniqwen3.quants import quantize_q8_0
    try:
        kernels.linear(np.ones((1, 64), np.float32), quantize_q8_0(np.ones((4, 64), np.float32)))
    except Exception:
        return False
    return True


def check_model_against_transformers(model, expected, ids, tol=1e-3):
    logits, trace = model.trace(ids)
    err = relative_error(logits, expected["logits"])
    assert err < tol, f"max |diff| / max |logit| = {err:.2e}"
    layers = sorted(int(k.removeprefix("experts_layer")) for k in expected if k.startswith("experts_layer"))
    assert trace.layers == layers
    for i in layers:
        np.testing.assert_array_equal(np.sort(trace.layer(i).experts, axis=1),
                                      np.sort(expected[f"experts_layer{i}"], axis=1), err_msg=f"layer {i}")
    return err


# --- config and tensor mapping -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_config_from_metadata(kind, tmp_path):
    path, cfg, _ = make_gguf(tmp_path, kind)
    c = GGUFFile(path).config()
    assert c.model_type == cfg["model_type"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(c, key) == pytest.approx(cfg[key]), key
    if kind == "moe":
        assert (c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size) == (8, 2, 64)
        assert c.norm_topk_prob is True and c.moe_layers == [0, 1]
    else:
        assert c.intermediate_size == 96 and not c.is_moe


def test_yarn_rope_scaling_keys(tmp_path):
    path, cfg, _ = make_gguf(tmp_path, metadata={"qwen3.rope.scaling.type": "yarn", "qwen3.rope.scaling.factor": 4.0,
                                                 "qwen3.rope.scaling.original_context_length": 32768})
    s = GGUFFile(path).config().rope_scaling
    assert (s.rope_type, s.factor, s.original_max_position_embeddings) == ("yarn", 4.0, 32768)


def mapped_from_file(a) -> bool:
    """True when `a` is a view whose memory is the file's memory map (no copy made)."""
    while isinstance(a, np.ndarray) and not isinstance(a, np.memmap):
        a = a.base
    return isinstance(a, (np.memmap, mmap.mmap))


@pytest.mark.parametrize("kind", ["dense", "moe"])
@pytest.mark.parametrize("fits", [True, False])
def test_weights_are_the_stored_tensors(kind, fits, tmp_path, monkeypatch):
    """F32 file: every weight equals the source tensor it was written from; experts stacked [E, out, in]; tied
    lm_head is the embedding. The matrices every token reads in full (attention, dense FFN, output head) are
    read into memory when their bytes fit (`fits_in_memory`, asked with their total), else views of the memory
    map; experts and an untied embedding are always views (no copy made)."""
    from miniqwen3 import weights
    asked = []
    monkeypatch.setattr(weights, "fits_in_memory", lambda n: asked.append(n) or fits)
    path, cfg, sd = make_gguf(tmp_path, kind, T.F32)
    model = miniqwen3.load(path, backend="numpy")
    w = model.weights
    np.testing.assert_array_equal(w.embed_tokens, sd["model.embed_tokens.weight"])
    per_token = [w.lm_head] + [m for layer in w.layers for m in (
        layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
        *([] if kind == "moe" else [layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]))]
    assert asked == [sum(m.nbytes for m in per_token)]
    assert [mapped_from_file(m) for m in per_token] == [not fits] * len(per_token)
    if kind == "moe":
        assert mapped_from_file(w.layers[1].mlp.down_proj)
    if cfg["tie_word_embeddings"]:
        assert w.lm_head is w.embed_tokens
    else:
        assert mapped_from_file(w.embed_tokens)
        np.testing.assert_array_equal(w.lm_head, sd["lm_head.weight"])
    for i, layer in enumerate(w.layers):
        p = f"model.layers.{i}."
        np.testing.assert_array_equal(layer.self_attn.q_proj, sd[p + "self_attn.q_proj.weight"])
        np.testing.assert_array_equal(layer.self_attn.k_norm, sd[p + "self_attn.k_norm.weight"])
        np.testing.assert_array_equal(layer.post_attention_layernorm, sd[p + "post_attention_layernorm.weight"])
        if kind == "moe":
            assert isinstance(layer.mlp, MoEWeights)
            assert layer.mlp.down_proj.shape == (8, 64, 64)
            np.testing.assert_array_equal(layer.mlp.down_proj[5], sd[p + "mlp.experts.5.down_proj.weight"])
            np.testing.assert_array_equal(layer.mlp.gate, sd[p + "mlp.gate.weight"])
        else:
            np.testing.assert_array_equal(layer.mlp.up_proj, sd[p + "mlp.up_proj.weight"])


def test_stored_types_are_kept(tmp_path):
    """F16 stays float16, BF16 becomes uint16 bits equal to gguf's, Q8_0 a QuantWeight over the file's blocks."""
    from miniqwen3.quants import QuantWeight
    path, cfg, sd = make_gguf(tmp_path, "moe", T.Q8_0, types={"token_embd.weight": T.F16, "blk.0.attn_q.weight": T.BF16})
    w = miniqwen3.load(path, backend="numpy").weights
    assert w.embed_tokens.dtype == np.float16
    q = w.layers[0].self_attn.q_proj
    assert q.dtype == np.uint16 and q.shape == (128, 64)
    ref = gguf.quants.dequantize(gguf.quants.quantize(sd["model.layers.0.self_attn.q_proj.weight"], T.BF16), T.BF16)
    np.testing.assert_array_equal(as_float32(q), ref)
    k = w.layers[1].mlp.gate_proj
    assert isinstance(k, QuantWeight) and k.kind == T.Q8_0 and k.shape == (8, 64, 64)
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.1.ffn_gate_exps.weight")
    np.testing.assert_array_equal(k.data, t.data)
    np.testing.assert_array_equal(as_float32(k[3]), gguf.quants.dequantize(t.data, t.tensor_type)[3])


# --- logits and experts against transformers -----------------------------------------------------

SYNTHETIC_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0]


@pytest.mark.oracle
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kind", ["dense", "moe"])
@pytest.mark.parametrize("matrix_type", SYNTHETIC_TYPES, ids=lambda t: t.name)
def test_logits_match_transformers_written_here(kind, matrix_type, backend, tmp_path):
    if backend == "numba" and matrix_type not in (T.F32, T.F16, T.BF16) and not kernels_take_quant_weights():
        pytest.skip("kernels.py does not take QuantWeight yet")
    path, cfg, _ = make_gguf(tmp_path, kind, matrix_type)
    ids = np.random.default_rng(1).integers(0, cfg["vocab_size"], 24)
    expected = transformers_outputs(tmp_path / "hf", cfg, dequantized_state_dict(path, cfg), ids)
    check_model_against_transformers(miniqwen3.load(path, backend=backend), expected, ids)


# --- the tokenizer from GGUF metadata ------------------------------------------------------------

def qwen3_vocab(tokenizer_dir: Path, size: int = 151936):
    """A function adding Qwen3's tokenizer to a GGUFWriter as llama.cpp's converter does (gpt2 model, qwen2 pre):
    vocab + added tokens by id, [PAD{i}] fillers up to the embedding size; added tokens CONTROL when special or
    looking special (<|...|>), else USER_DEFINED; fillers UNUSED."""
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    by_id = {i: (t, gguf.TokenType.NORMAL) for t, i in data["model"]["vocab"].items()}
    for t in data["added_tokens"]:
        special = t["special"] or (t["content"].startswith("<|") and t["content"].endswith("|>"))
        by_id[t["id"]] = (t["content"], gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    tokens = [by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]

    def add(w, pre="qwen2"):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list([t for t, _ in tokens])
        w.add_token_types([int(k) for _, k in tokens])
        w.add_token_merges(merges)
        w.add_eos_token_id(151645)
        w.add_pad_token_id(151643)
        w.add_bos_token_id(151643)
        w.add_add_bos_token(False)
        w.add_chat_template(config["chat_template"])
    return add


def vocab_only_gguf(folder: Path, tokenizer_dir: Path, pre="qwen2") -> Path:
    """The real Qwen3 vocabulary as a vocab-only GGUF: the fixture made by llama.cpp's converter when it is
    there, else one written here the way the converter writes it."""
    fixture = FIXTURES / "qwen3-vocab.gguf"
    if fixture.is_file() and pre == "qwen2":
        return fixture
    path = folder / f"vocab-{pre}.gguf"
    w = gguf.GGUFWriter(path, "qwen3")
    qwen3_vocab(tokenizer_dir)(w, pre)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


TEXTS = [
    "Hello world", "What is 457 + 385? /think", "  leading spaces and trailing   ", "tabs\tand\nnewlines\r\n\n\nend",
    "don't you'll I'M we've", "数字 12345 和中文句子。", "日本語のテキストとカタカナ", "한국어 문장입니다",
    "Ünïcödé café naïve résumé", "e\u0301 combining (NFC)", "emoji 🙂👍🏽 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "def f(x):\n    return x ** 2  # square\n", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "<tool_call>{\"name\": \"f\"}</tool_call>", "URL https://example.com/a?b=c&d=e", "1,234,567.89 and 0x1F",
    "Привет, как дела?", "مرحبا بالعالم", "श्रेणी हिन्दी", "a" * 300, " " * 17 + "x", "<|endoftext|>",
]


@pytest.mark.oracle
def test_tokenizer_from_gguf_equals_hf_tokenizers(tmp_path, qwen3_tokenizer_dir):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(qwen3_tokenizer_dir / "tokenizer.json"))
    g = GGUFFile(vocab_only_gguf(tmp_path, qwen3_tokenizer_dir))
    tok = g.tokenizer()
    assert tok.vocab_size == hf.get_vocab_size(with_added_tokens=True) == 151669
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False).ids, text
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=False), text
    assert (tok.im_end_id, tok.think_id, tok.end_think_id) == (151645, 151667, 151668)
    assert tok.is_special(151645) and not tok.is_special(151667)


def test_chat_template_is_qwen3s(tmp_path, qwen3_tokenizer_dir):
    """The GGUF carries tokenizer_config.json's template verbatim, the one miniqwen3.chat renders in Python."""
    g = GGUFFile(vocab_only_gguf(tmp_path, qwen3_tokenizer_dir))
    config = json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert g.chat_template == config["chat_template"]


# --- loading by file, folder, split parts, repo id -----------------------------------------------

def test_load_file_folder_and_split_parts_give_the_same_model(tmp_path):
    single, cfg, _ = make_gguf(tmp_path / "one", "moe", T.Q8_0, name="Tiny-MoE-Q8_0.gguf")
    split, _, _ = make_gguf(tmp_path / "split", "moe", T.Q8_0, name="Tiny-MoE-Q8_0.gguf", split_max_tensors=10)
    parts = sorted((tmp_path / "split").glob("*.gguf"))
    assert [p.name for p in parts][:2] == ["Tiny-MoE-Q8_0-00001-of-00003.gguf", "Tiny-MoE-Q8_0-00002-of-00003.gguf"]
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    expected = miniqwen3.load(single, backend="numpy").logits(ids)
    for name in (tmp_path / "one", parts[0], parts[2], tmp_path / "split"):
        model = miniqwen3.load(name, backend="numpy")
        np.testing.assert_array_equal(model.logits(ids), expected)
        assert model.path.name in ("Tiny-MoE-Q8_0.gguf", parts[0].name)
    assert miniqwen3.load(single).backend == "numba"                 # GGUF models default to the kernels


def fake_gguf_repo(cache: Path, repo_id: str, files: dict, revision="0123abc") -> Path:
    """The layout huggingface_hub writes, with the files as symlinks into blobs/ as it makes them."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, source in files.items():
        blob = repo / "blobs" / (name + ".blob")
        shutil.copy(source, blob)
        (snapshot / name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_repo_id_in_the_cache_with_the_quant_chosen(tmp_path, monkeypatch):
    q8, _, _ = make_gguf(tmp_path, "dense", T.Q8_0, name="Qwen3-Tiny-Q8_0.gguf")
    q4, _, _ = make_gguf(tmp_path, "dense", T.Q4_0, name="Qwen3-Tiny-Q4_0.gguf")
    cache = tmp_path / "hub"
    fake_gguf_repo(cache, "Qwen/Qwen3-Tiny-GGUF", {q8.name: q8, q4.name: q4, "README.md": q8.parent / q8.name})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    ids = [5, 6, 7]
    for name, quant, source in (("Qwen/Qwen3-Tiny-GGUF", "Q4_0", q4), ("Qwen/Qwen3-Tiny-GGUF:Q8_0", None, q8),
                                ("Qwen/Qwen3-Tiny-GGUF:q4_0", None, q4), ("Qwen/Qwen3-Tiny-GGUF", "q8_0", q8)):
        model = miniqwen3.load(name, quant=quant, backend="numpy")
        assert model.path.name == source.name
        np.testing.assert_array_equal(model.logits(ids), miniqwen3.load(source, backend="numpy").logits(ids))
    with pytest.raises(GGUFError, match=r"holds 2 GGUF models, choose one with quant=.*Q4_0 \(Qwen3-Tiny-Q4_0.gguf\); "
                                        r"Q8_0 \(Qwen3-Tiny-Q8_0.gguf\)"):
        miniqwen3.load("Qwen/Qwen3-Tiny-GGUF")
    with pytest.raises(GGUFError, match=r"no Q4_K_M GGUF here; there is: Q4_0 .*; Q8_0 "):
        miniqwen3.load("Qwen/Qwen3-Tiny-GGUF", quant="Q4_K_M")


def test_missing_gguf_repo_says_how_to_get_it(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(miniqwen3.ModelNotFoundError,
                       match=r"download failed .*huggingface-cli download Qwen/Qwen3-30B-A3B-GGUF --include '\*Q4_K_M\*.gguf'"):
        miniqwen3.load("Qwen/Qwen3-30B-A3B-GGUF:Q4_K_M")


def test_folder_with_several_models_lists_them(tmp_path):
    make_gguf(tmp_path, "dense", T.F32, name="a-F32.gguf")
    make_gguf(tmp_path, "moe", T.Q8_0, name="b-Q8_0.gguf", split_max_tensors=10)
    with pytest.raises(GGUFError, match=r"holds 2 GGUF models.*F32 \(a-F32.gguf\); Q8_0 \(b-Q8_0-00001-of-00003.gguf \+ 2 parts\)"):
        miniqwen3.load(tmp_path)


def test_cli_info_on_a_gguf(tmp_path, capsys):
    from miniqwen3.cli import main
    path, _, _ = make_gguf(tmp_path, "moe", T.Q8_0, name="Tiny-Q8_0.gguf")
    assert main(["info", str(tmp_path), "--quant", "Q8_0"]) == 0
    out = capsys.readouterr().out
    assert "Qwen3MoeForCausalLM" in out and str(path) in out and "8, top-2, moe_intermediate 64" in out
    assert f"on disk       {path.stat().st_size / 1e6:.2f} MB" in out and "(Q8_0)" in out
    assert main(["info", str(tmp_path) + "/nothing.gguf"]) == 2
    assert "nothing.gguf: no such file" in capsys.readouterr().err


# --- bad input: one clear message each, before anything is used ----------------------------------

def good_file(tmp_path, kind="dense"):
    path, _, _ = make_gguf(tmp_path / "good", kind, T.Q8_0)
    return path


def test_truncated_file(tmp_path):
    data = good_file(tmp_path).read_bytes()
    for keep in (6, 200, len(data) - 100):
        bad = tmp_path / f"cut{keep}.gguf"
        bad.write_bytes(data[:keep])
        with pytest.raises(GGUFError, match=rf"cut{keep}.gguf: truncated: .*{keep:,}"):
            miniqwen3.load(bad)


def test_bad_magic(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + good_file(tmp_path).read_bytes()[4:])
    with pytest.raises(GGUFError, match=r"bad.gguf: bad magic b'GGML': not a GGUF file"):
        miniqwen3.load(bad)


def test_bad_version(tmp_path):
    bad = tmp_path / "v9.gguf"
    data = bytearray(good_file(tmp_path).read_bytes())
    data[4:8] = (9).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"v9.gguf: GGUF version 9 is not supported \(supported: 2 and 3\)"):
        miniqwen3.load(bad)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_architecture_that_is_not_qwen3(arch, tmp_path):
    path, _, _ = make_gguf(tmp_path, "dense", arch=arch)
    with pytest.raises(GGUFError, match=rf"architecture '{arch}' is not Qwen3; miniqwen3 reads GGUF architectures "
                                        r"qwen3 and qwen3moe"):
        miniqwen3.load(path)


def test_missing_tensor(tmp_path):
    cfg = MOE
    tensors = gguf_tensors(cfg, random_state_dict(cfg))
    del tensors["blk.1.ffn_up_exps.weight"]
    path = tmp_path / "m.gguf"
    write_gguf(path, cfg, tensors)
    with pytest.raises(GGUFError, match=r"m.gguf: tensor blk.1.ffn_up_exps.weight is missing \(expected shape \[8, 64, 64\]\)"):
        miniqwen3.load(path)


def test_shape_that_disagrees_with_the_metadata(tmp_path):
    cfg = DENSE
    tensors = gguf_tensors(cfg, random_state_dict(cfg))
    tensors["blk.0.attn_k.weight"] = tensors["blk.0.attn_k.weight"][:32]     # one KV head instead of two
    path = tmp_path / "s.gguf"
    write_gguf(path, cfg, tensors)
    with pytest.raises(GGUFError, match=r"s.gguf: tensor blk.0.attn_k.weight has shape \[32, 64\], expected \[64, 64\] "
                                        r"from the metadata"):
        miniqwen3.load(path)


def test_missing_split_part(tmp_path):
    make_gguf(tmp_path, "moe", T.F32, name="m.gguf", split_max_tensors=10)
    (tmp_path / "m-00002-of-00003.gguf").unlink()
    for name in ("m-00001-of-00003.gguf", "m-00003-of-00003.gguf"):
        with pytest.raises(GGUFError, match=r"split GGUF m: 1 of 3 parts missing \(m-00002-of-00003.gguf\)"):
            miniqwen3.load(tmp_path / name)


def test_renamed_split_part_disagrees_with_its_metadata(tmp_path):
    make_gguf(tmp_path, "moe", T.F32, name="m.gguf", split_max_tensors=10)
    a, b = tmp_path / "m-00002-of-00003.gguf", tmp_path / "m-00003-of-00003.gguf"
    a.rename(tmp_path / "x")
    b.rename(a)
    (tmp_path / "x").rename(b)
    with pytest.raises(GGUFError, match=r"m-00002-of-00003.gguf: metadata says split part 3 of 3, but its name says part 2"):
        miniqwen3.load(tmp_path / "m-00001-of-00003.gguf")


def test_unsupported_tensor_type(tmp_path):
    path, _, _ = make_gguf(tmp_path, "dense", T.Q8_0, types={"blk.1.ffn_down.weight": T.Q4_1})
    with pytest.raises(GGUFError, match=r"tensor blk.1.ffn_down.weight has GGML type Q4_1, which miniqwen3 does not "
                                        r"read \(supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K\)"):
        miniqwen3.load(path)


def byte_vocab(model="gpt2", pre="qwen2", size=None):
    """A tokenizer of the 256 byte-level tokens and "ĠĠ" (then [PAD] fillers up to `size`)."""
    from miniqwen3.tokenizer import BYTE_TO_CHAR

    def add(w):
        tokens = list(BYTE_TO_CHAR.values()) + ["ĠĠ"]
        tokens += [f"[PAD{i}]" for i in range(len(tokens), size or len(tokens))]
        w.add_tokenizer_model(model)
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types([1] * 257 + [5] * (len(tokens) - 257))
        w.add_token_merges(["Ġ Ġ"])
    return add


@pytest.mark.parametrize("model,pre,message", [
    ("gpt2", "llama-bpe", r"tokenizer.ggml.pre is 'llama-bpe', not 'qwen2': miniqwen3 splits text with Qwen2's "
                          r"pre-tokenizer only, and another one would give different token ids"),
    ("llama", "qwen2", r"tokenizer.ggml.model is 'llama'; miniqwen3 reads byte-level BPE \('gpt2'\) tokenizers only"),
])
def test_tokenizer_that_is_not_qwen2s(model, pre, message, tmp_path):
    from miniqwen3.tokenizer import BYTE_TO_CHAR
    path, _, _ = make_gguf(tmp_path, "dense-v320", tokenizer=byte_vocab(model, pre, size=320))
    with pytest.raises(GGUFError, match=message):
        miniqwen3.load(path, backend="numpy")
    path, _, _ = make_gguf(tmp_path, "dense-v320", name="ok.gguf", tokenizer=byte_vocab(size=320))
    tok = miniqwen3.load(path, backend="numpy").tokenizer        # the same file with Qwen's tokenizer keys loads
    order = list(BYTE_TO_CHAR.values())
    assert tok.encode("hé") == [order.index(BYTE_TO_CHAR[b]) for b in "hé".encode()]
    assert tok.encode("a  ") == [order.index("a"), 256]                 # "  " is one word, merged by "Ġ Ġ"


def test_token_list_that_disagrees_with_the_embedding(tmp_path):
    path, _, _ = make_gguf(tmp_path, "dense-v320", tokenizer=byte_vocab(size=300))
    with pytest.raises(GGUFError, match=r"tokenizer.ggml.tokens has 300 tokens, but token_embd has 320 rows"):
        miniqwen3.load(path, backend="numpy")



# --- llama.cpp's files: converter (BF16) and quantizer (the rest), with their HF source checkpoints ----

FORMATS = ["BF16", "Q8_0", "Q4_0", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K"]


def fixture(kind: str, fmt: str) -> Path:
    path = FIXTURES / f"{kind}-{fmt}.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is not there (made by llama.cpp's converter and llama-quantize)")
    return path


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_fixture_config_equals_the_source_config(kind):
    from dataclasses import replace
    ours = GGUFFile(fixture(kind, "Q4_K_M")).config()
    source = miniqwen3.Qwen3Config.from_file(FIXTURES / f"hf-{kind}" / "config.json")
    assert ours.torch_dtype == "Q4_K_M"
    assert replace(ours, torch_dtype="") == replace(source, torch_dtype="")


@pytest.mark.oracle
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_bf16_gguf_weights_equal_the_source_exactly(kind):
    """Every tensor of llama.cpp's BF16 conversion, as miniqwen3 maps it, has the bits of the HF source tensor
    (read by safetensors + torch): q_proj and k_proj included, so the converter did not permute their rows."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    source = {k: v.view(torch.int16).numpy().view(np.uint16) if v.dtype == torch.bfloat16 else v.numpy()
              for k, v in load_file(FIXTURES / f"hf-{kind}" / "model.safetensors").items()}
    w = miniqwen3.load(fixture(kind, "BF16"), backend="numpy").weights
    ours = {"model.embed_tokens.weight": w.embed_tokens, "model.norm.weight": w.norm}
    if w.lm_head is not w.embed_tokens:
        ours["lm_head.weight"] = w.lm_head
    for i, layer in enumerate(w.layers):
        p = f"model.layers.{i}."
        ours[p + "input_layernorm.weight"] = layer.input_layernorm
        ours[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm
        for n in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            ours[p + f"self_attn.{n}.weight"] = getattr(layer.self_attn, n)
        if isinstance(layer.mlp, MoEWeights):
            ours[p + "mlp.gate.weight"] = layer.mlp.gate
            for n in ("gate_proj", "up_proj", "down_proj"):
                for e in range(layer.mlp.gate.shape[0]):
                    ours[p + f"mlp.experts.{e}.{n}.weight"] = getattr(layer.mlp, n)[e]
        else:
            for n in ("gate_proj", "up_proj", "down_proj"):
                ours[p + f"mlp.{n}.weight"] = getattr(layer.mlp, n)
    assert sorted(ours) == sorted(source)
    for name, a in source.items():
        b = ours[name]
        if b.dtype == np.uint16:            # matrices stay bf16: the very same bits
            np.testing.assert_array_equal(b, a, err_msg=name)
        else:                               # norms and the router are F32 in the GGUF: bf16 widened exactly
            np.testing.assert_array_equal(b, as_float32(a), err_msg=name)
    q = ours["model.layers.0.self_attn.q_proj.weight"]
    assert not np.array_equal(q[:32], q[32:64])      # rows differ, so a permutation would have been seen


@pytest.mark.oracle
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_llama_cpp_files_match_transformers(kind, fmt, backend, tmp_path):
    """Logits within 1e-3 of transformers (fp32, eager) run on the same file's weights dequantized by
    gguf.quants.dequantize, and the same experts for every token and layer."""
    path = fixture(kind, fmt)
    if backend == "numba" and fmt != "BF16" and not kernels_take_quant_weights():
        pytest.skip("kernels.py does not take QuantWeight yet")
    cfg = json.loads((FIXTURES / f"hf-{kind}" / "config.json").read_text())
    ids = np.random.default_rng(2).integers(0, 4000, 32)
    expected = transformers_outputs(tmp_path / "hf", cfg, dequantized_state_dict(path, cfg), ids)
    check_model_against_transformers(miniqwen3.load(path, backend=backend), expected, ids)


@pytest.mark.oracle
def test_fixture_tokenizer_equals_its_source(tmp_path):
    """The small tokenizer the fixture models carry, from their GGUF metadata, against HF tokenizers."""
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(FIXTURES / "hf-moe" / "tokenizer.json"))
    tok = miniqwen3.load(fixture("moe", "Q8_0"), backend="numpy").tokenizer
    for text in TEXTS:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


def test_cli_route_and_generate_on_a_gguf(capsys):
    """route with text (the tokenizer comes from the GGUF) and generate, by file name."""
    from miniqwen3.cli import main
    path = fixture("moe", "Q4_K_M")
    assert main(["route", str(path), "--text", "Hello world, hello experts", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "through 2 MoE layers (8 experts, top-2)" in out and "layer  1:" in out
    assert main(["generate", str(path), "hi", "--no-think", "--max-new-tokens", "3", "--seed", "0",
                 "--backend", "numpy"]) == 0
    assert "3 generated" in capsys.readouterr().err


def test_folder_with_a_hf_checkpoint_and_a_gguf(tmp_path):
    """config.json + safetensors beside a GGUF: the checkpoint by default, the GGUF when a quant is asked for."""
    folder = tmp_path / "both"
    shutil.copytree(Path(__file__).parent / "fixtures" / "parity" / "moe_topk_norm", folder)
    make_gguf(folder, "dense", T.Q8_0, name="other-Q8_0.gguf")
    assert miniqwen3.load(folder, backend="numpy").config.model_type == "qwen3_moe"
    assert miniqwen3.load(folder, quant="Q8_0", backend="numpy").path == folder / "other-Q8_0.gguf"
    (folder / "other-Q8_0.gguf").unlink()
    with pytest.raises(miniqwen3.ModelNotFoundError, match=r"quant='Q8_0' asks for a GGUF model, but there are no "
                                                           r"\.gguf files here"):
        miniqwen3.load(folder, quant="Q8_0")
