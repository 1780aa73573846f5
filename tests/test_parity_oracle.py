"""miniqwen3 against transformers run live: the fixture cases built afresh, and the real Qwen3-0.6B and
Qwen3-30B-A3B (cut to 2 layers) configs at full width with random weights. Needs the oracle extra."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import miniqwen3  # noqa: E402
from parity_cases import CASES, build_checkpoint, prompt_ids, reference_outputs  # noqa: E402
from test_parity import TOL, check_against  # noqa: E402

pytestmark = pytest.mark.oracle
CONFIGS = Path(miniqwen3.__file__).parent / "configs"


@pytest.mark.parametrize("case", sorted(CASES))
def test_live_transformers(case, tmp_path):
    ref_model = build_checkpoint(case, tmp_path, seed=7)
    ids = prompt_ids(ref_model.config.vocab_size, seed=3)
    expected = _Npz(ids=ids, **reference_outputs(ref_model, ids))
    check_against(miniqwen3.load(tmp_path), _Npz(expected))


class _Npz(dict):
    """The expected outputs in the shape np.load gives (a mapping with .files)."""
    @property
    def files(self):
        return list(self)


def _full_width(tmp_path, preset, layers=None):
    """A real Qwen3 config with random bf16 weights, saved by transformers, reloaded by it in fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM
    raw = json.loads((CONFIGS / f"{preset}.json").read_text())
    if layers:
        raw["num_hidden_layers"] = layers
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = AutoConfig.from_pretrained(tmp_path)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.02)
    model.save_pretrained(tmp_path, max_shard_size="2GB")
    del model
    return AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()


@pytest.mark.slow
@pytest.mark.parametrize("preset,layers", [("Qwen3-0.6B", None), ("Qwen3-30B-A3B", 2)])
def test_real_config_full_width(preset, layers, tmp_path):
    ref_model = _full_width(tmp_path, preset, layers)
    ids = prompt_ids(ref_model.config.vocab_size, n=12, seed=5)
    expected = _Npz(ids=ids, **reference_outputs(ref_model, ids))
    del ref_model
    model = miniqwen3.load(tmp_path, matmul_precision="fp32")       # transformers' fp32 logits
    assert model.config.num_hidden_layers == (layers or 28)
    check_against(model, expected)
    # decode: a prompt of 8 tokens, then one token at a time through the KV cache (head_dim 128, as every real
    # Qwen3's), each step's logits those of the full forward at its position
    cache = model.new_cache()
    model.forward(ids[:8], cache)
    decoded = np.concatenate([model.forward(ids[t:t + 1], cache) for t in range(8, len(ids))])
    np.testing.assert_allclose(decoded, expected["logits"][8:], rtol=0, atol=TOL)
    # the default: bf16 products on a CPU with AVX512-BF16 (`model.auto_matmul_precision`). Its logits are no
    # further from transformers' fp32 ones than transformers' own bf16 model's, give or take a quarter, on the
    # tokens whose experts neither changed: a router near a tie flips under any rounding, and a flipped token's
    # logits move by far more than rounding (seen: 4 and 2 of 64 tokens in layer 0, ours and transformers' bf16)
    default = miniqwen3.load(tmp_path)
    assert default.backend == "numba"
    if default.matmul_precision == "bf16":
        from transformers import AutoModelForCausalLM
        bf16_ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, attn_implementation="eager")
        bf16 = reference_outputs(bf16_ref.eval(), ids)
        del bf16_ref
        trace = miniqwen3.RoutingTrace()
        ours = default.forward(ids, trace=trace)
        same = np.ones(len(ids), bool)
        for i in trace.layers:
            chosen = np.sort(expected[f"experts_layer{i}"], axis=1)
            same &= (np.sort(trace.layer(i).experts, axis=1) == chosen).all(1)
            same &= (np.sort(bf16[f"experts_layer{i}"], axis=1) == chosen).all(1)
        assert same.sum() >= len(ids) // 2
        ours, theirs = (relative_rms(x[same], expected["logits"][same]) for x in (ours, bf16["logits"]))
        print(f"relative rms from transformers fp32 on {same.sum()} tokens: bf16 products {ours:.2e}, "
              f"transformers bf16 {theirs:.2e}")
        assert 0 < ours <= 1.25 * theirs


def relative_rms(x, reference):
    return float(np.sqrt(np.mean((x - reference) ** 2) / np.mean(reference ** 2)))


@pytest.mark.parametrize("preset", ["Qwen3-0.6B", "Qwen3-8B", "Qwen3-30B-A3B", "Qwen3-235B-A22B"])
def test_parameter_count_equals_transformers(preset):
    """Total parameters as transformers counts them, on the meta device (no memory is allocated)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    path = CONFIGS / f"{preset}.json"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    expected = sum(p.numel() for p in model.parameters())   # tied weights are counted once
    assert miniqwen3.Qwen3Config.from_file(path).parameter_counts()["total"] == expected
