"""The `miniqwen3` command: info on presets and folders, init-random, and errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np

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
