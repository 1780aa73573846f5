"""Loading by name: folders, repo ids in the local Hugging Face cache, and the error when neither works."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import miniqwen3
from miniqwen3.hub import ModelNotFoundError, cached_snapshot, resolve

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "moe_topk_norm"


def fake_cache(root: Path, repo_id: str, revision: str = "abc123") -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(FIXTURE, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_repo_id_resolves_through_the_local_cache(tmp_path, monkeypatch):
    snapshot = fake_cache(tmp_path, "Qwen/Qwen3-Tiny-Test")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve("Qwen/Qwen3-Tiny-Test") == snapshot
    model = miniqwen3.load("Qwen/Qwen3-Tiny-Test")
    expected = np.load(FIXTURE / "expected.npz")
    np.testing.assert_allclose(model.logits(expected["ids"]), expected["logits"], atol=1e-4)


def test_hf_home_is_used_when_hub_cache_is_not_set(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snapshot = fake_cache(tmp_path / "hub", "Qwen/Qwen3-Other")
    assert cached_snapshot("Qwen/Qwen3-Other") == snapshot


def test_missing_repo_without_huggingface_hub_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)      # as if not installed
    with pytest.raises(ModelNotFoundError, match=r"Qwen/Qwen3-0.6B: not in the local Hugging Face cache .*"
                                                 r"huggingface_hub is not installed .*huggingface-cli download Qwen/Qwen3-0.6B"):
        miniqwen3.load("Qwen/Qwen3-0.6B")


def test_missing_repo_with_no_network_says_how_to_get_it(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"download failed .*huggingface-cli download Qwen/Qwen3-0.6B"):
        miniqwen3.load("Qwen/Qwen3-0.6B")


def test_a_path_that_is_neither_folder_nor_repo_id(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder, and not a Hugging Face repo id"):
        miniqwen3.load(str(tmp_path / "nope" / "deeper"))
