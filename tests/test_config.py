"""Config reading: both key spellings, real Qwen3 configs, YaRN closed-form values, and clear errors."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from miniqwen3 import ConfigError, Qwen3Config
from miniqwen3.ops import rope_frequencies, rope_inv_freq, yarn_correction_range

CONFIGS = Path(__file__).resolve().parent.parent / "miniqwen3" / "configs"
MOE_4X = {"model_type": "qwen3_moe", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
          "moe_intermediate_size": 8, "num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True,
          "rope_theta": 1000000.0, "rope_scaling": {"type": "yarn", "factor": 4.0,
                                                      "original_max_position_embeddings": 32768}}


def test_4x_and_5x_key_names_read_the_same():
    four = Qwen3Config.from_dict(MOE_4X)
    five = dict(MOE_4X)
    five["num_local_experts"] = five.pop("num_experts")
    five.pop("rope_theta")
    five["rope_parameters"] = {"rope_theta": 1000000.0, "rope_type": "yarn", "factor": 4.0,
                               "original_max_position_embeddings": 32768}
    five.pop("rope_scaling")
    assert Qwen3Config.from_dict(five) == four
    assert four.num_experts == 4 and four.rope_scaling.rope_type == "yarn" and four.rope_theta == 1e6


def test_real_configs_and_parameter_counts():
    c = Qwen3Config.from_file(CONFIGS / "Qwen3-0.6B.json")
    assert (c.head_dim, c.hidden_size, c.num_attention_heads, c.tie_word_embeddings) == (128, 1024, 16, True)
    assert c.layer_types == ["dense"] * 28
    moe = Qwen3Config.from_file(CONFIGS / "Qwen3-30B-A3B.json")
    counts = moe.parameter_counts()
    # the model card's "30.5B in total and 3.3B activated"
    assert round(counts["total"] / 1e9, 1) == 30.5 and 3.3e9 <= counts["active"] < 3.4e9
    big = Qwen3Config.from_file(CONFIGS / "Qwen3-235B-A22B.json").parameter_counts()
    assert round(big["total"] / 1e9) == 235 and round(big["active"] / 1e9) == 22


def test_sparse_layer_rule():
    c = Qwen3Config.from_dict(dict(MOE_4X, num_hidden_layers=6, decoder_sparse_step=2, mlp_only_layers=[3]))
    # sparse iff not in mlp_only_layers and (i + 1) % step == 0
    assert c.layer_types == ["dense", "moe", "dense", "dense", "dense", "moe"]


def test_yarn_matches_the_closed_form_for_qwen3():
    c = Qwen3Config.from_dict(MOE_4X | {"head_dim": 128})
    low, high = yarn_correction_range(128, 1e6, 32768)
    assert (low, high) == (23, 40)
    inv_freq, attention_factor = rope_frequencies(128, 1e6, c.rope_scaling)
    assert math.isclose(attention_factor, 0.1 * math.log(4) + 1) and abs(attention_factor - 1.1386294) < 1e-7
    base = rope_inv_freq(128, 1e6)
    np.testing.assert_allclose(inv_freq[:24], base[:24], rtol=1e-6)          # pairs 0-23 keep their frequency
    np.testing.assert_allclose(inv_freq[40:], base[40:] / 4, rtol=1e-6)      # pairs 40-63 divided by 4
    between = inv_freq[24:40] / base[24:40]
    assert ((between < 1) & (between > 0.25)).all() and (np.diff(between) < 0).all()


@pytest.mark.parametrize("change,message", [
    ({"model_type": "llama"}, r"model_type 'llama' is not supported"),
    ({"model_type": None}, r"model_type None is not supported"),
    ({"hidden_size": None}, r"required field 'hidden_size' is missing"),
    ({"num_experts_per_tok": None}, r"required field 'num_experts_per_tok' is missing"),
    ({"hidden_size": "32"}, r"field 'hidden_size' should be int, got '32'"),
    ({"hidden_size": 32.5}, r"field 'hidden_size' should be int"),
    ({"num_key_value_heads": 3}, r"num_key_value_heads=3 must divide num_attention_heads=4"),
    ({"num_experts_per_tok": 5}, r"num_experts_per_tok=5 must be in 1..num_experts=4"),
    ({"head_dim": 15}, r"head_dim=15 must be even"),
    ({"num_local_experts": 8}, r"num_experts=4 contradicts num_local_experts=8"),
    ({"rope_parameters": {"rope_theta": 10000.0}}, r"rope_theta=1000000.0 contradicts rope_parameters.rope_theta=10000.0"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, r"rope type 'dynamic' is not supported"),
    ({"rope_scaling": {"type": "yarn", "factor": 0.5, "original_max_position_embeddings": 8}}, r"yarn factor=0.5 must be > 1"),
    ({"mlp_only_layers": [7]}, r"mlp_only_layers=\(7,\) names layer 7, outside 0..1"),
    ({"rms_norm_eps": -1}, r"rms_norm_eps=-1.0 must be positive"),
])
def test_bad_configs_name_the_field(change, message):
    raw = {k: v for k, v in (MOE_4X | change).items() if v is not None or k == "model_type"}
    with pytest.raises(ConfigError, match=message):
        Qwen3Config.from_dict(raw, source="config.json")


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no config.json here"):
        Qwen3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        Qwen3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        Qwen3Config.from_file(tmp_path)
