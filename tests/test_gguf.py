"""GGUF checkpoints: config and tensor mapping, logits and experts against transformers given the same file's
weights dequantized by `gguf` (the independent oracle), the tokenizer from GGUF metadata against HF
`tokenizers`, loading by file / folder / split parts / repo id with a quantization, and every bad input.

Small GGUFs are written here with gguf.GGUFWriter from random weights (F32, F16, BF16, Q8_0, Q4_0, Q5_0 via
gguf.quants.quantize); the files written by llama.cpp's converter and quantizer (K-quants included) live in
tests/fixtures/gguf when present.
"""
import inspect
import json
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
CONFIGS = {"dense": DENSE, "moe": MOE}

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
    w.add_file_type(int(matrix_type))
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
    from miniqwen3 import kernels
    return "QuantWeight" in inspect.getsource(kernels)


def check_model_against_transformers(model, expected, ids, tol=1e-3):
    logits, trace = model.trace(ids)
    err = relative_error(logits, expected["logits"])
    print(f"relative error {err:.2e}")
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


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_weights_are_the_stored_tensors_zero_copy(kind, tmp_path):
    """F32 file: every weight equals the source tensor it was written from, as a view of the memory map;
    experts stacked [E, out, in]; tied lm_head is the embedding."""
    path, cfg, sd = make_gguf(tmp_path, kind, T.F32)
    model = miniqwen3.load(path, backend="numpy")
    w = model.weights
    np.testing.assert_array_equal(w.embed_tokens, sd["model.embed_tokens.weight"])
    assert isinstance(w.embed_tokens, np.memmap) or isinstance(w.embed_tokens.base, np.memmap)
    if cfg["tie_word_embeddings"]:
        assert w.lm_head is w.embed_tokens
    else:
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
