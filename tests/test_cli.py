"""The `miniqwen3` command: info on presets and folders, init-random, and errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "parity"


def test_info_on_the_30b_a3b_preset(capsys):
    assert main(["info", "Qwen3-30B-A3B"]) == 0
    out = capsys.readouterr().out
    assert "Qwen3MoeForCausalLM" in out and "48: 48 MoE, 0 dense MLP" in out
    assert "30.53B total, 3.35B active per token" in out
    assert "128, top-8, moe_intermediate 768" in out


def test_info_on_a_folder(capsys):
    assert main(["info", str(FIXTURES / "moe_sparse_step2_mlp_only")]) == 0
    out = capsys.readouterr().out
    assert "4: 1 MoE, 3 dense MLP  [dMdd]" in out
    size = sum(f.stat().st_size for f in (FIXTURES / "moe_sparse_step2_mlp_only").glob("*.safetensors"))
    assert f"on disk       {size / 1e6:.2f} MB" in out


def test_init_random_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "tiny"
    cfg = FIXTURES / "moe_topk_norm" / "config.json"
    assert main(["init-random", str(cfg), str(out), "--dtype", "bf16", "--layers", "2"]) == 0
    model = miniqwen3.load(out)
    assert model.config.num_hidden_layers == 2 and model.weights.embed_tokens.dtype == np.uint16
    assert np.isfinite(model.logits([1, 2, 3])).all()


def test_errors_are_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "miniqwen3.cli", "info", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "miniqwen3: error:" in r.stderr and "no config.json here" in r.stderr
    assert "Traceback" not in r.stderr


def tiny_random_chat_model(folder, tokenizer_dir):
    """A 2-layer random Qwen3 with the real vocabulary and tokenizer: garbage text, real plumbing."""
    import json
    import shutil
    raw = json.loads((Path(miniqwen3.__file__).parent / "configs" / "Qwen3-0.6B.json").read_text())
    raw.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=8)
    cfg = folder.parent / "tiny.json"
    cfg.write_text(json.dumps(raw))
    assert main(["init-random", str(cfg), str(folder), "--dtype", "fp32"]) == 0
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_dir) / f, folder / f)
    return folder


def test_generate_prints_text_and_stats(tmp_path, qwen3_tokenizer_dir, capsys):
    model = tiny_random_chat_model(tmp_path / "m", qwen3_tokenizer_dir)
    assert main(["generate", str(model), "What is 2 + 3?", "--no-think", "--max-new-tokens", "5", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    assert "[no-think (hard switch):" in err and "5 generated" in err and "tok/s" in err and "length]" in err
    assert "tok/s (numpy, fp32 products)" in err      # a tiny fp32 model: NumPy and fp32 products by the size rule


def test_chat_commands(tmp_path, qwen3_tokenizer_dir, capsys, monkeypatch):
    import io
    model = tiny_random_chat_model(tmp_path / "m", qwen3_tokenizer_dir)
    import miniqwen3.cli as cli
    sent = []

    def recording_run_turn(model, messages, *args):
        sent.append([dict(m) for m in messages])
        return run_turn(model, messages, *args)

    run_turn = cli.run_turn
    monkeypatch.setattr(cli, "run_turn", recording_run_turn)
    monkeypatch.setattr("sys.stdin", io.StringIO("/budget 3\nhello\n/no_think\nagain\n/budget x\n/quit\n"))
    assert main(["chat", str(model), "--max-new-tokens", "4", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert "(thinking budget: 3)" in out and "(the next message carries /no_think)" in out
    assert "(usage: /budget N" in out
    lines = [l for l in err.splitlines() if l.startswith("[")]
    assert "(soft switch)" in lines[0] and "budget 3" in lines[0] and "(soft switch)" in lines[1]
    # the carried flag is text in the next user message (the soft switch), not a prompt the harness changes
    assert [m["content"] for m in sent[1] if m["role"] == "user"] == ["hello", "again /no_think"]


def test_generate_without_tokenizer_is_a_clear_error(capsys):
    assert main(["generate", str(FIXTURES / "dense_untied_gqa2"), "hi"]) == 2
    assert "no tokenizer.json beside the checkpoint" in capsys.readouterr().err


def test_route_prints_the_expert_load_of_each_moe_layer(capsys):
    assert main(["route", str(FIXTURES / "moe_sparse_step2_mlp_only"), "--tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "40 tokens through 1 MoE layers (8 experts, top-2)" in out and "layer  1:" in out
    assert main(["route", str(FIXTURES / "dense_untied_gqa2")]) == 2
    assert "has no MoE layers" in capsys.readouterr().err


@pytest.mark.skipif(not (Path(miniqwen3.__file__).parent / "data" / "tiny" / "config.json").is_file(),
                    reason="the embedded tiny model is not in this checkout")
def test_generate_with_a_budget_on_the_tiny_model(capsys):
    from miniqwen3.budget import TINY_STOP_TEXT
    assert main(["generate", "What is 9876 - 1234? /think", "--budget", "16", "--temperature", "0",
                 "--max-new-tokens", "120"]) == 0
    out, err = capsys.readouterr()
    # greedy: 16 thinking tokens end in mid-line ("ones:6-4"); the tiny model gets the sentence it was trained
    # with, right after the cut (a real checkpoint gets Qwen's, after "\n\n": tests/test_generate.py)
    assert "ones:6-4" + TINY_STOP_TEXT + "</think>" in out and "9876 - 1234 = " in out
    assert "[think (soft switch):" in err and "16 thinking, budget 16 (tripped)" in err


@pytest.mark.skipif(not (Path(miniqwen3.__file__).parent / "data" / "tiny" / "config.json").is_file(),
                    reason="the embedded tiny model is not in this checkout")
def test_generate_with_a_bf16_kv_cache_on_the_tiny_model(capsys):
    assert main(["generate", "What is 457 + 385? /think", "--temperature", "0", "--kv-cache", "bf16"]) == 0
    out, err = capsys.readouterr()
    assert "457 + 385 = 842" in out and "[think (soft switch):" in err
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--kv-cache", "int4"])


def test_generate_in_bf16_products_on_the_tiny_model(capsys, monkeypatch):
    """--matmul-precision bf16 reaches the model (every product's activations rounded to bf16), and the tiny model
    still adds."""
    made = []
    init = miniqwen3.Model.__init__
    monkeypatch.setattr(miniqwen3.Model, "__init__", lambda self, *a, **k: made.append(k) or init(self, *a, **k))
    assert main(["generate", "What is 457 + 385? /think", "--temperature", "0", "--matmul-precision", "bf16"]) == 0
    out, err = capsys.readouterr()
    assert "457 + 385 = 842" in out and made[-1]["matmul_precision"] == "bf16"
    with pytest.raises(SystemExit):
        main(["generate", "hi", "--matmul-precision", "fp16"])
