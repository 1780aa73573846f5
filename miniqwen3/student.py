"""The student of strong-to-weak distillation: a small dense Qwen3 (`Qwen3ForCausalLM`) that shares its teacher's
tokenizer and vocabulary and is shallower and narrower.

The Qwen3 report (arXiv 2505.09388, section 4.5) distils its flagship MoE models into the small dense ones
(0.6B to 14B); here the teacher is the embedded tiny Qwen3-MoE (`miniqwen3/data/tiny`: 4 layers, hidden 192,
32 experts top-4, 2.85 M active parameters per token) and the default student is a dense Qwen3 of 2 layers,
hidden 128, 4 query / 2 KV heads of head_dim 32, SwiGLU width 384 (3 x hidden, the ratio of Qwen3-0.6B), with
tied input and output embeddings as the small Qwen3 models have: 0.91 M parameters, 0.52 M of them the
embedding of the teacher's 4,032 tokens.

A student shares everything that makes token ids and positions mean the same (vocab_size, bos/eos ids, RoPE
theta, rms_norm_eps, the context length), so the teacher's logits over the vocabulary are targets for the
student's. The config is written in the key names of a real Qwen3 dense checkpoint (transformers 4.51:
`rope_theta`, `torch_dtype`), which transformers 4.x and 5.x and miniqwen3 all read.
"""
from __future__ import annotations

from pathlib import Path

from .config import ConfigError, Qwen3Config

TINY = Path(__file__).parent / "data" / "tiny"


def student_config(teacher=TINY, num_hidden_layers: int = 2, hidden_size: int = 128,
                   intermediate_size: int = 384, num_attention_heads: int = 4, num_key_value_heads: int = 2,
                   head_dim: int = 32, tie_word_embeddings: bool = True) -> dict:
    """A config.json (as a dict) of a dense Qwen3 student of `teacher` (a checkpoint folder, its config.json,
    or a `Qwen3Config`; by default the embedded tiny model). Raises ConfigError for a student miniqwen3 could
    not run (e.g. num_key_value_heads not dividing num_attention_heads, an odd head_dim)."""
    t = teacher if isinstance(teacher, Qwen3Config) else Qwen3Config.from_file(teacher)
    if t.rope_scaling.rope_type != "default":
        raise ConfigError(f"teacher: rope type {t.rope_scaling.rope_type!r}: a student copies only plain RoPE")
    sizes = dict(num_hidden_layers=num_hidden_layers, hidden_size=hidden_size, intermediate_size=intermediate_size,
                 num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads, head_dim=head_dim)
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"student: {name}={value!r} must be an integer")
    eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
    raw = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": t.bos_token_id,
        "eos_token_id": eos,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": t.max_position_embeddings,
        "max_window_layers": num_hidden_layers,
        "model_type": "qwen3",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": t.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": t.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": bool(tie_word_embeddings),
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": t.vocab_size,
    }
    Qwen3Config.from_dict(raw, source="student config")            # the checks miniqwen3 makes when it loads
    return raw
