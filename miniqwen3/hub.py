"""Finding a checkpoint by name: a folder, a Hugging Face repo id in the local cache, or a download."""
from __future__ import annotations

import os
from pathlib import Path

from .config import Qwen3Config
from .weights import CheckpointError, load_weights


EMBEDDED = {"tiny": Path(__file__).parent / "data" / "tiny",                       # the teacher, Qwen3-MoE
            "tiny-student": Path(__file__).parent / "data" / "tiny-student"}       # its distilled dense student


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a folder nor a repo id we can find or download; says how to get it."""


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home) / "hub"


def cached_snapshot(repo_id: str, holds=lambda folder: (folder / "config.json").is_file()) -> Path | None:
    """The snapshot folder of repo_id in the local cache that `holds` accepts (a checkpoint's config.json by
    default): the revision refs/main points to, else the newest."""
    repo = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        folder = snapshots / ref.read_text().strip()
        if holds(folder):
            return folder
    found = sorted((p for p in snapshots.iterdir() if holds(p)), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve(name) -> Path:
    """A checkpoint folder for `name`: "tiny" (the embedded model) or "tiny-student" (its dense student,
    `scripts/distill.py`); an existing folder; else a repo id
    ("Qwen/Qwen3-0.6B") found in the local Hugging Face cache; else downloaded with huggingface_hub when it is
    installed and the network allows."""
    if str(name) in EMBEDDED:
        folder = EMBEDDED[str(name)]
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"the embedded model is not in this installation ({folder}); "
                                     "pass a checkpoint folder or a repo id like 'Qwen/Qwen3-0.6B'")
        return folder
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    name = str(name)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise ModelNotFoundError(f"{name}: no such folder, and not a Hugging Face repo id like 'Qwen/Qwen3-0.6B'")
    snapshot = cached_snapshot(name)
    if snapshot is not None:
        return snapshot
    how = (f"get the files with `huggingface-cli download {name}` on a machine with network access, "
           f"then pass the folder (or copy it into {hf_cache_dir()})")
    try:
        import huggingface_hub
    except ImportError:
        raise ModelNotFoundError(f"{name}: not in the local Hugging Face cache ({hf_cache_dir()}), and "
                                 f"huggingface_hub is not installed (pip install 'miniqwen3[hub]'); {how}") from None
    try:
        return Path(huggingface_hub.snapshot_download(
            name, allow_patterns=["*.json", "*.safetensors", "merges.txt", "vocab.json"]))
    except Exception as e:  # network refused, repo missing, auth: all end the same way for the user
        why = " ".join(str(e).split())[:300]
        raise ModelNotFoundError(f"{name}: download failed ({type(e).__name__}: {why}); {how}") from None


def load(name=None, backend: str | None = None, quant: str | None = None, matmul_precision: str = "auto"):
    """Load a Qwen3 or Qwen3-MoE checkpoint: config.json + safetensors weights (+ tokenizer files if present),
    or a GGUF model (config, weights and tokenizer from the file, weights kept quantized and memory-mapped).
    `name`: a folder, a Hugging Face repo id, a .gguf file, "tiny" or "tiny-student"; None loads the embedded
    tiny model.
    `quant` picks a GGUF quantization ("Q4_K_M") in a folder or repo holding several; "REPO:Q4_K_M" does too.
    `backend`: "numpy" or "numba"; by default "numba" for GGUF models (the plain-NumPy reference dequantizes
    whole matrices on every call) and for models of 50M parameters or more (`model.default_backend`), "numpy"
    for smaller ones (the embedded tiny model), which answer at once without waiting on a compile.
    `matmul_precision`: "fp32" (transformers' fp32 logits) or "bf16" (activations rounded to bf16 before every
    product, as llama.cpp computes with bf16 weights and transformers with a bf16 checkpoint); by default "auto":
    bf16 where it pays (the Numba kernels, bf16 weights, a CPU with AVX512-BF16: a prompt reads 1.5-1.9x faster),
    fp32 elsewhere (`model.auto_matmul_precision`). `model.matmul_precision` says which one a model runs."""
    from .model import Model
    from .gguf_file import find_gguf, load_gguf
    path = find_gguf(name, quant) if name is not None else None
    if path is not None:
        g, config, weights, tokenizer = load_gguf(path)
        model = Model(config, weights, backend=backend or "numba", path=g.path, matmul_precision=matmul_precision)
        model.tokenizer = tokenizer
        return model
    if quant is not None:
        raise ModelNotFoundError(f"{name}: quant={quant!r} asks for a GGUF model, but there are no .gguf files here")
    folder = resolve("tiny" if name is None else name)
    config = Qwen3Config.from_file(folder / "config.json")
    weights = load_weights(config, folder)
    model = Model(config, weights, backend=backend, path=folder, matmul_precision=matmul_precision)
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
        from .tokenizer import Tokenizer
        model.tokenizer = Tokenizer.from_file(folder)
    return model


__all__ = ["load", "resolve", "cached_snapshot", "ModelNotFoundError", "CheckpointError"]
