"""The distillation student's config (miniqwen3.student): a dense Qwen3 with the embedded tiny teacher's vocabulary
and special ids, which transformers builds and saves, and whose saved checkpoint miniqwen3 loads with the same
logits as transformers (1e-4) and the teacher's tokenizer."""
import json
import shutil

import numpy as np
import pytest

import miniqwen3
from miniqwen3.config import ConfigError, Qwen3Config
from miniqwen3.student import TINY, student_config

needs_tiny = pytest.mark.skipif(not (TINY / "config.json").is_file(), reason="the embedded tiny model is not here")


@needs_tiny
def test_student_shares_the_teachers_vocabulary_and_is_smaller():
    teacher = Qwen3Config.from_file(TINY)
    student = Qwen3Config.from_dict(student_config())
    assert student.model_type == "qwen3" and not student.is_moe
    for name in ("vocab_size", "bos_token_id", "eos_token_id", "rope_theta", "rms_norm_eps",
                 "max_position_embeddings"):
        assert getattr(student, name) == getattr(teacher, name), name
    assert student.num_hidden_layers < teacher.num_hidden_layers and student.hidden_size < teacher.hidden_size
    assert student.parameter_counts()["total"] < teacher.parameter_counts()["active"]
    wide = Qwen3Config.from_dict(student_config(num_hidden_layers=3, hidden_size=160, tie_word_embeddings=False))
    assert (wide.num_hidden_layers, wide.hidden_size, wide.tie_word_embeddings) == (3, 160, False)


@needs_tiny
@pytest.mark.parametrize("sizes", [dict(num_key_value_heads=3), dict(head_dim=31), dict(hidden_size=0),
                                   dict(num_hidden_layers=2.0)])
def test_impossible_student_raises_config_error(sizes):
    with pytest.raises(ConfigError):
        student_config(**sizes)


@needs_tiny
@pytest.mark.oracle
def test_random_student_saved_by_transformers_matches_miniqwen3(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(student_config()))
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(config).eval()
    with torch.no_grad():            # weights large enough that every part of the layer shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    model.save_pretrained(tmp_path)                     # safetensors, fp32, no lm_head.weight (tied)
    assert (tmp_path / "model.safetensors").is_file()
    assert sum(p.numel() for p in model.parameters()) == Qwen3Config.from_file(tmp_path).parameter_counts()["total"]
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / f, tmp_path / f)

    student = miniqwen3.load(tmp_path)
    assert student.config.model_type == "qwen3" and student.config.tie_word_embeddings
    text = "What is 457 + 385? /think"
    ids = np.array(student.tokenizer.encode(text))
    assert ids.tolist() == miniqwen3.Tokenizer.from_file(TINY).encode(text)   # the teacher's tokens
    reference = transformers.Qwen3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(torch.tensor(ids)[None]).logits[0].numpy()
    logits = student.forward(ids)
    assert np.abs(expected).max() > 1.0                                     # not a near-zero comparison
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


SHIPPED = TINY.parent / "tiny-student"
needs_shipped = pytest.mark.skipif(not (SHIPPED / "config.json").is_file(),
                                   reason="the distilled student is not in this checkout (python scripts/distill.py)")


@needs_shipped
def test_shipped_student_is_a_small_dense_qwen3_by_name():
    student = miniqwen3.load("tiny-student")
    assert student.path == SHIPPED and student.config.model_type == "qwen3" and not student.config.is_moe
    raw = json.loads((SHIPPED / "config.json").read_text())
    assert raw["architectures"] == ["Qwen3ForCausalLM"] and raw["torch_dtype"] == "bfloat16"
    assert raw["vocab_size"] == Qwen3Config.from_file(TINY).vocab_size
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (SHIPPED / f).read_bytes() == (TINY / f).read_bytes(), f
    size = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert size <= 4 * 2**20, f"{size / 2**20:.1f} MiB"


@needs_shipped
@pytest.mark.oracle
def test_shipped_student_matches_transformers():
    """The shipped bf16 checkpoint, read by transformers' Qwen3ForCausalLM (widened to fp32) and by miniqwen3:
    the same logits to 1e-4 on a conversation in the chat template."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    student = miniqwen3.load("tiny-student")
    messages = [{"role": "user", "content": "What is 457 + 385? /think"}]
    ids = np.array(student.tokenizer.encode(miniqwen3.render_chat(messages, add_generation_prompt=True)
                                            + "<think>\n457+385\nones:7+5=12 c1\n"))
    reference = transformers.Qwen3ForCausalLM.from_pretrained(SHIPPED, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(torch.tensor(ids)[None]).logits[0].numpy()
    logits = student.forward(ids)
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
