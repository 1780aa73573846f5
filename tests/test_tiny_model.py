"""The embedded tiny Qwen3-MoE (miniqwen3/data/tiny): a real Qwen3MoeForCausalLM checkpoint that transformers
loads and whose logits miniqwen3 reproduces; real-Qwen config keys and tokenizer files; small enough to ship."""
import json
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3.chat import render_chat
from miniqwen3.corpus import parse_answer

TINY = Path(miniqwen3.__file__).parent / "data" / "tiny"
pytestmark = pytest.mark.skipif(not (TINY / "config.json").is_file(),
                                reason="the embedded tiny model is not in this checkout (build it: bash scripts/train_all.sh)")

CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 47 + 85? /no_think"},
        {"role": "assistant", "content": "47 + 85 = 132"},
        {"role": "user", "content": "123 乘以 4 等于多少？ /think"}]
TEXTS = ["What is 1234 + 5678?", "Combien font 12 - 7 ? /no_think", "¿Cuánto es 9 × 8?", "3281 × 6 を計算してください。",
         "def f(x):\n    return x ** 2  # square\n", "The  following methods\tcan be defined.\n\n", "<think>\n\n</think>\n\n",
         "ones:4+8=12 c1\n", "emoji 🙂 and ünïcödé"]


@pytest.fixture(scope="module")
def model():
    return miniqwen3.load(TINY)


def test_shipped_files_and_size():
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "training_history.npz"):
        assert (TINY / name).is_file(), name
    size = sum(p.stat().st_size for p in TINY.iterdir() if p.is_file())
    assert size <= 20 * 2**20, f"{size / 2**20:.1f} MiB"


def test_config_uses_the_key_names_of_real_qwen_checkpoints():
    raw = json.loads((TINY / "config.json").read_text())
    real = json.loads((Path(miniqwen3.__file__).parent / "configs" / "Qwen3-30B-A3B.json").read_text())
    assert set(raw) == set(real)            # num_experts, rope_theta, rope_scaling, torch_dtype ...
    assert raw["model_type"] == "qwen3_moe" and raw["architectures"] == ["Qwen3MoeForCausalLM"]
    assert raw["norm_topk_prob"] is True and raw["torch_dtype"] == "bfloat16"
    cfg = miniqwen3.Qwen3Config.from_file(TINY)
    assert cfg.is_moe and cfg.num_experts == raw["num_experts"] and cfg.rope_theta == 1e6


def test_checkpoint_is_bf16_with_one_tensor_per_expert(model):
    header_len = int.from_bytes((TINY / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((TINY / "model.safetensors").read_bytes()[8:8 + header_len])
    header.pop("__metadata__", None)
    assert {v["dtype"] for v in header.values()} == {"BF16"}
    c = model.config
    assert f"model.layers.{c.num_hidden_layers - 1}.mlp.experts.{c.num_experts - 1}.down_proj.weight" in header
    assert "lm_head.weight" in header and not c.tie_word_embeddings


def test_tokenizer_files_follow_qwen3(qwen3_tokenizer_dir):
    real = json.loads((qwen3_tokenizer_dir / "tokenizer_config.json").read_text())
    ours = json.loads((TINY / "tokenizer_config.json").read_text())
    assert ours["chat_template"] == real["chat_template"]
    ours_added = [ours["added_tokens_decoder"][k] for k in sorted(ours["added_tokens_decoder"], key=int)]
    real_added = [real["added_tokens_decoder"][k] for k in sorted(real["added_tokens_decoder"], key=int)]
    assert ours_added == real_added
    tj = json.loads((TINY / "tokenizer.json").read_text())
    rj = json.loads((qwen3_tokenizer_dir / "tokenizer.json").read_text())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert tj[key] == rj[key], key
    assert {k: v for k, v in tj["model"].items() if k not in ("vocab", "merges")} == \
        {k: v for k, v in rj["model"].items() if k not in ("vocab", "merges")}
    first_added = min(int(k) for k in ours["added_tokens_decoder"])
    assert first_added == len(tj["model"]["vocab"])       # added tokens follow the BPE vocabulary


def test_miniqwen3_tokenizer_equals_hf_tokenizers(model):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(TINY / "tokenizer.json"))
    for text in TEXTS + [render_chat(CHAT)]:
        assert model.tokenizer.encode(text) == hf.encode(text, add_special_tokens=False).ids, text
        assert model.tokenizer.decode(model.tokenizer.encode(text)) == text
    assert model.tokenizer.think_id == hf.token_to_id("<think>")
    assert model.tokenizer.im_end_id == json.loads((TINY / "config.json").read_text())["eos_token_id"]


def test_transformers_chat_template_renders_like_miniqwen3():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("jinja2")
    tok = transformers.AutoTokenizer.from_pretrained(str(TINY))
    for thinking in (None, False):
        kwargs = {} if thinking is None else {"enable_thinking": thinking}
        text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True, **kwargs)
        assert text == render_chat(CHAT, add_generation_prompt=True, enable_thinking=thinking)


@pytest.mark.oracle
def test_transformers_logits_equal_miniqwen3(model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(TINY), dtype=torch.float32, attn_implementation="eager")
    hf.eval()
    ids = model.tokenizer.encode(render_chat(CHAT, add_generation_prompt=True))
    with torch.no_grad():
        want = hf(torch.tensor([ids])).logits[0].numpy()
    got = model.logits(ids)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_training_history_has_the_expert_loads():
    h = np.load(TINY / "training_history.npz")
    cfg = miniqwen3.Qwen3Config.from_file(TINY)
    steps = len(h["loss"])
    assert h["load"].shape == (steps, cfg.num_hidden_layers, cfg.num_experts)
    np.testing.assert_allclose(h["load"].astype(np.float32).sum(-1), 1.0, atol=1e-2)
    assert len(h["aux"]) == len(h["aux_micro"]) == steps
    assert h["domain_load"].shape[1:] == (len(h["domains"]), cfg.num_hidden_layers, cfg.num_experts)
    assert h["loss"][-20:].mean() < h["loss"][:20].mean()


def test_the_model_does_sums_in_both_modes(model):
    think = model.generate("What is 47 + 85? /think", temperature=0, max_new_tokens=120)
    assert think.thinking_mode and think.thinking.startswith("47+85") and parse_answer(think.answer) == 132
    fast = model.generate("What is 47 + 85? /no_think", temperature=0, max_new_tokens=30)
    assert fast.thinking == "" and fast.answer.startswith("47 + 85 =")
