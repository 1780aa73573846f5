"""Shared test fixtures: where the real Qwen3 tokenizer files are, and whether the oracle is installed."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def find_qwen3_tokenizer_dir():
    """The real Qwen3 tokenizer folder, looked for in this order: $MINIQWEN3_QWEN3_TOKENIZER,
    ../shared/qwen3-tokenizer beside the checkout, a Qwen3 checkpoint in the local Hugging Face cache."""
    candidates = []
    if os.environ.get("MINIQWEN3_QWEN3_TOKENIZER"):
        candidates.append(Path(os.environ["MINIQWEN3_QWEN3_TOKENIZER"]))
    candidates.append(REPO.parent / "shared" / "qwen3-tokenizer")
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    candidates.extend(sorted(hub.glob("models--Qwen--Qwen3-*/snapshots/*")))
    for folder in candidates:
        if (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
            return folder
    return None


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir():
    folder = find_qwen3_tokenizer_dir()
    if folder is None:
        pytest.skip("real Qwen3 tokenizer files not found: set MINIQWEN3_QWEN3_TOKENIZER to a folder with "
                    "tokenizer.json and tokenizer_config.json, or put them in ../shared/qwen3-tokenizer")
    return folder
