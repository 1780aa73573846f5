"""The size calculators of notebook 06 (miniqwen3/sizes.py) against numbers that did not come from them: the totals
Qwen publishes on its model cards, transformers' own parameters of each shipped config (built on the meta device,
counted by module name), and the arrays the tiny model actually allocates and reads."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3 import sizes
from miniqwen3.config import shipped_configs

CONFIGS = Path(miniqwen3.__file__).parent / "configs"
TINY = Path(miniqwen3.__file__).parent / "data" / "tiny" / "config.json"

# The model cards at huggingface.co/Qwen/<name> ("Number of Parameters", "Non-Embedding", "Activated"), in billions
# as printed there; the Qwen3 report names the MoE models by the same totals (235B-A22B: 235B total, 22B activated).
PUBLISHED = {
    "Qwen3-0.6B": {"total": "0.6", "total non-embedding": "0.44"},
    "Qwen3-1.7B": {"total": "1.7", "total non-embedding": "1.4"},
    "Qwen3-4B": {"total": "4.0", "total non-embedding": "3.6"},
    "Qwen3-8B": {"total": "8.2", "total non-embedding": "6.95"},
    "Qwen3-30B-A3B": {"total": "30.5", "active": "3.3", "total non-embedding": "29.9"},
    "Qwen3-235B-A22B": {"total": "235", "active": "22", "total non-embedding": "234"},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_totals_round_to_the_published_numbers(name):
    got = sizes.totals(sizes.parameter_split(shipped_configs()[name]))
    for kind, printed in PUBLISHED[name].items():
        digits = len(printed.partition(".")[2])
        # within one unit of the last printed digit (30B-A3B's 3.353B active is printed 3.3)
        assert abs(got[kind] / 1e9 - float(printed)) < 10 ** -digits, (kind, got[kind], printed)


def test_where_22b_of_235b_come_from():
    split = sizes.parameter_split(shipped_configs()["Qwen3-235B-A22B"])
    assert split["experts"]["total"] == 94 * 128 * 3 * 4096 * 1536                   # 227.1B stored in experts
    assert split["experts"]["active"] == 94 * 8 * 3 * 4096 * 1536                    # 14.2B of them run per token
    assert split["attention"]["active"] == 94 * (2 * 4096 * 64 * 128 + 2 * 4096 * 4 * 128 + 2 * 128)   # 6.7B


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_split_equals_transformers_parameters(name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.AutoConfig.from_pretrained(str(CONFIGS / f"{name}.json"))
    with torch.device("meta"):                      # shapes only, no memory
        hf = transformers.AutoModelForCausalLM.from_config(cfg)
    parts = Counter()
    for pname, p in hf.named_parameters():        # a tied head is the embedding and appears once
        part = ("attention" if ".self_attn." in pname else "norms" if "norm" in pname
                else "experts" if ".mlp.experts." in pname else "router" if ".mlp.gate." in pname
                else "dense MLP" if ".mlp." in pname else "embedding" if "embed_tokens" in pname
                else "output head" if pname.startswith("lm_head") else pname)
        parts[part] += p.numel()
    split = sizes.parameter_split(shipped_configs()[name])
    assert {k: v["total"] for k, v in split.items() if v["total"]} == dict(parts)
    c = shipped_configs()[name]
    if c.is_moe:
        assert split["experts"]["active"] * c.num_experts == parts["experts"] * c.num_experts_per_tok


@pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny model is not installed")
def test_kv_cache_and_bytes_read_on_the_tiny_model():
    model = miniqwen3.load()
    c, w = model.config, model.weights
    cache = model.new_cache()
    model.forward(np.arange(50), cache)
    held = sum(cache.keys(i).nbytes + cache.values(i).nbytes for i in range(c.num_hidden_layers))  # fp32
    assert held == 50 * sizes.kv_cache_bytes_per_token(c, bytes_per_value=4)
    assert sizes.kv_cache_bytes_per_token(c, kv_heads=c.num_attention_heads) == \
        sizes.kv_cache_bytes_per_token(c) * c.num_attention_heads // c.num_key_value_heads
    # weights one decoded token reads, counted from the arrays the model holds: all of them, K of E experts,
    # one row of the embedding table
    read = sum(layer.input_layernorm.size + layer.post_attention_layernorm.size for layer in w.layers)
    for layer in w.layers:
        for part in (layer.self_attn, layer.mlp):
            for name, a in vars(part).items():
                scale = c.num_experts_per_tok / c.num_experts if name in ("gate_proj", "up_proj", "down_proj") else 1
                read += a.size * scale
    read += w.embed_tokens.shape[1] + w.norm.size + w.lm_head.size
    assert sizes.decode_bytes_per_token(c, bytes_per_weight=1)["weights"] == read
    got = sizes.decode_bytes_per_token(c, bytes_per_weight=2, context=10, bytes_per_value=4)
    assert got["kv cache"] == 10 * sizes.kv_cache_bytes_per_token(c, 4) and got["total"] == 2 * read + got["kv cache"]
