"""The tiny random checkpoints on which miniqwen3 must match transformers, and how to build them.

Used by scripts/make_parity_fixtures.py (writes the golden fixtures under tests/fixtures/parity) and by
tests/test_parity_oracle.py (builds them afresh and runs transformers live). Needs torch + transformers.
"""
import json
from pathlib import Path

import numpy as np

BASE = dict(vocab_size=160, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
            max_position_embeddings=256, tie_word_embeddings=False)
MOE = dict(BASE, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
           decoder_sparse_step=1, mlp_only_layers=[])

# name -> (model_type, config overrides, checkpoint options)
CASES = {
    "dense_tied_gqa1": ("qwen3", dict(BASE, tie_word_embeddings=True, num_key_value_heads=4), {}),
    "dense_untied_gqa2": ("qwen3", dict(BASE), {}),
    "dense_gqa4_bf16": ("qwen3", dict(BASE, num_attention_heads=8, num_key_value_heads=2, head_dim=16),
                        {"dtype": "bf16"}),
    "dense_yarn": ("qwen3", dict(BASE, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                     "original_max_position_embeddings": 16}), {}),
    "dense_sharded_keys4x": ("qwen3", dict(BASE, tie_word_embeddings=True),
                             {"max_shard_size": "150KB", "keys": "4.x"}),
    "moe_topk_norm": ("qwen3_moe", dict(MOE), {}),
    "moe_topk_nonorm": ("qwen3_moe", dict(MOE, norm_topk_prob=False, num_experts_per_tok=3), {}),
    "moe_sparse_step2_mlp_only": ("qwen3_moe", dict(MOE, num_hidden_layers=4, decoder_sparse_step=2,
                                                    mlp_only_layers=[3]), {}),
    "moe_bf16_keys4x_yarn": ("qwen3_moe", dict(MOE, rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                                                  "original_max_position_embeddings": 16}),
                             {"dtype": "bf16", "keys": "4.x"}),
    "moe_sharded_gqa4": ("qwen3_moe", dict(MOE, num_attention_heads=8, num_key_value_heads=2, head_dim=16),
                         {"max_shard_size": "250KB"}),
}

PROMPT_LEN = 24


def prompt_ids(vocab_size: int, n: int = PROMPT_LEN, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, n)


def build_checkpoint(name: str, folder: Path, seed: int = 0):
    """Make the case's model in transformers with random weights (all tensors, norms included), save it as
    the case says, reload it in fp32 with eager attention, and return that reference model."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    model_type, cfg, opts = CASES[name]
    config_cls, model_cls = ((Qwen3MoeConfig, Qwen3MoeForCausalLM) if model_type == "qwen3_moe"
                             else (Qwen3Config, Qwen3ForCausalLM))
    torch.manual_seed(seed)
    model = model_cls(config_cls(**cfg)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    if opts.get("dtype") == "bf16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(folder, max_shard_size=opts.get("max_shard_size", "50GB"))
    if opts.get("keys") == "4.x":
        rewrite_config_as_4x(folder / "config.json")
    return model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def rewrite_config_as_4x(path: Path) -> None:
    """Rewrite a config.json written by transformers 5.x in the key names real Qwen checkpoints use
    (num_experts, rope_theta, rope_scaling, torch_dtype)."""
    raw = json.loads(path.read_text())
    params = raw.pop("rope_parameters", None) or {}
    raw["rope_theta"] = params.get("rope_theta", 10000.0)
    scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    raw["rope_scaling"] = None if scaling.get("rope_type", "default") == "default" else dict(scaling, type=scaling["rope_type"])
    if "num_local_experts" in raw:
        raw["num_experts"] = raw.pop("num_local_experts")
    if "dtype" in raw:
        raw["torch_dtype"] = raw.pop("dtype")
    path.write_text(json.dumps(raw, indent=2))


def reference_outputs(model, ids: np.ndarray) -> dict:
    """transformers' logits [T, V] and, per MoE layer, its chosen experts [T, K] (as a set per token)."""
    import torch
    out = {}
    routers = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "top_k"):
            hooks.append(gate.register_forward_hook(
                lambda mod, inp, res, i=i: routers.__setitem__(i, res[2].detach().numpy().copy())))
    with torch.no_grad():
        out["logits"] = model(torch.tensor(ids)[None]).logits[0].float().numpy()
    for h in hooks:
        h.remove()
    for i, experts in routers.items():
        out[f"experts_layer{i}"] = experts
    return out
