"""Regenerate the GGUF fixtures: two small random-weight Qwen3 checkpoints (dense and MoE) written by
llama.cpp's own tools in every format miniqwen3 reads, and a vocab-only GGUF of the real Qwen3 tokenizer.

    python scripts/make_gguf_fixtures.py --llama-cpp /path/to/llama.cpp [--out tests/fixtures/gguf]

--llama-cpp (or $LLAMA_CPP) is a llama.cpp source tree with the tools built in build/bin
(llama-cpp-python 0.3.36's sdist carries one in vendor/llama.cpp; see tests/fixtures/gguf/README.md).
Needs torch, transformers, sentencepiece and protobuf (the converter's imports).

What it does, seeded (same output on every run with the same library versions):
1. builds hf-dense/ (Qwen3ForCausalLM, untied output) and hf-moe/ (Qwen3MoeForCausalLM, 8 experts top-2,
   norm_topk_prob, tied embeddings) with transformers: hidden 256, head_dim 64, 4 q / 2 kv heads,
   2 layers, every matrix's input dimension a multiple of 256 so that llama-quantize really writes
   K-quants (it falls back to other types on rows that are not whole 256-weight blocks); random weights
   (std 0.15, norms uniform in [0.5, 1.5]) saved in bf16, with the embedded tiny model's tokenizer
   (miniqwen3/data/tiny, vocab 4032);
2. converts each with llama.cpp's convert_hf_to_gguf.py to BF16 and Q8_0;
3. quantizes the BF16 file with llama-quantize to Q4_0, Q5_0, Q4_K_M, Q5_K_M and Q6_K;
4. writes qwen3-vocab.gguf (--vocab-only) from the real Qwen3 tokenizer (../shared/qwen3-tokenizer) and
   miniqwen3/configs/Qwen3-0.6B.json.

The pre-tokenizer: the converter names a GGUF's pre-tokenizer (tokenizer.ggml.pre) by hashing the token
ids of a fixed text, and knows only the hashes of published vocabularies, so it refuses the tiny model's
4000-token vocabulary. The tiny tokenizer.json's pre_tokenizer (split regex + byte level) is checked to be
equal to the real Qwen3 one; only then is the converter told that the pre-tokenizer is "qwen2" (this script
imports the converter and overrides TextModel.get_vocab_base_pre for that run). The real tokenizer's hash
is known to the converter and is not overridden.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "miniqwen3" / "data" / "tiny"
QWEN3_TOKENIZER = REPO.parent / "shared" / "qwen3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

COMMON = dict(vocab_size=4032, hidden_size=256, head_dim=64, num_attention_heads=4, num_key_value_heads=2,
              num_hidden_layers=2, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=2048,
              bos_token_id=4000, eos_token_id=4002)
# name -> (model_type, config)
MODELS = {
    "dense": ("qwen3", dict(COMMON, intermediate_size=512, tie_word_embeddings=False)),
    "moe": ("qwen3_moe", dict(COMMON, intermediate_size=512, moe_intermediate_size=256, num_experts=8,
                              num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                              mlp_only_layers=[], tie_word_embeddings=True)),
}
CONVERTER_TYPES = ("BF16", "Q8_0")  # written by convert_hf_to_gguf.py --outtype
QUANTIZER_TYPES = ("Q4_0", "Q5_0", "Q4_K_M", "Q5_K_M", "Q6_K")  # written by llama-quantize from the BF16 file
K_QUANT_TENSOR_TYPES = {"Q4_K_M": {"Q4_K", "Q6_K"}, "Q5_K_M": {"Q5_K", "Q6_K"}, "Q6_K": {"Q6_K"}}
WEIGHT_STD = 0.15
PROMPT = np.random.default_rng(1).integers(0, 4000, 24)

# Runs inside a fresh interpreter so that the converter imports its own gguf-py, not the installed one.
CONVERT = """
import sys
sys.path[:0] = [{gguf_py!r}, {root!r}]
if {force_qwen2!r}:
    from conversion.base import TextModel
    TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", *{args!r}]
convert_hf_to_gguf.main()
"""


def pre_tokenizer_is_qwen3(tokenizer_json: Path) -> bool:
    """True when the file's pre_tokenizer (and normalizer) equal the real Qwen3 tokenizer's."""
    ours, real = (json.loads(p.read_text()) for p in (tokenizer_json, QWEN3_TOKENIZER / "tokenizer.json"))
    return all(ours.get(k) == real.get(k) for k in ("pre_tokenizer", "normalizer"))


def build_checkpoint(name: str, folder: Path, seed: int = 0) -> None:
    """Write a random-weight bf16 HF checkpoint of MODELS[name] with the tiny tokenizer into folder and
    print the fp32 logits' spread on a fixed prompt (random weights with too small a std give logits ~0,
    on which every format would agree and no test could fail)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    model_type, cfg = MODELS[name]
    config_cls, model_cls = ((Qwen3MoeConfig, Qwen3MoeForCausalLM) if model_type == "qwen3_moe"
                             else (Qwen3Config, Qwen3ForCausalLM))
    torch.manual_seed(seed)
    model = model_cls(config_cls(**cfg)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, WEIGHT_STD)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model = model.to(torch.bfloat16)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copy(TINY / f, folder / f)
    with torch.no_grad():
        logits = model.float()(torch.tensor(PROMPT)[None]).logits[0].numpy()
    top = np.sort(logits, axis=-1)
    print(f"{folder.name}: logits std {logits.std():.2f}, max |logit| {np.abs(logits).max():.2f}, "
          f"mean top1-top2 gap {np.mean(top[:, -1] - top[:, -2]):.3f}")
    if logits.std() < 1.0:
        raise SystemExit(f"{folder.name}: logits std {logits.std():.3f} < 1: raise WEIGHT_STD")


def convert(llama_cpp: Path, model_dir: Path, outfile: Path, outtype: str, name: str, force_qwen2: bool,
            vocab_only: bool = False) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py on model_dir with its own gguf-py."""
    args = [str(model_dir), "--outfile", str(outfile), "--outtype", outtype.lower(), "--model-name", name]
    if vocab_only:
        args.append("--vocab-only")
    code = CONVERT.format(gguf_py=str(llama_cpp / "gguf-py"), root=str(llama_cpp), force_qwen2=force_qwen2,
                          args=args)
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    run([sys.executable, "-c", code], env=env, cwd=llama_cpp)


def quantize(llama_cpp: Path, src: Path, dst: Path, kind: str) -> None:
    """llama-quantize src (BF16) to kind."""
    tool = llama_cpp / "build" / "bin" / "llama-quantize"
    run([str(tool), str(src), str(dst), kind])


def run(cmd: list, **kw) -> None:
    """Run a tool quietly; on failure show its output and stop."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{Path(cmd[0]).name} failed (exit {done.returncode})")


def tensor_types(path: Path) -> dict:
    """{type name: number of tensors} of a GGUF file, read with gguf's reader."""
    from gguf import GGUFReader
    counts = {}
    for t in GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP"),
                    help="llama.cpp source tree with build/bin/llama-quantize (or $LLAMA_CPP)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "gguf")
    args = ap.parse_args()
    if args.llama_cpp is None:
        ap.error("give --llama-cpp DIR or set $LLAMA_CPP (a llama.cpp tree with build/bin/llama-quantize)")
    llama_cpp = args.llama_cpp.resolve()
    for need in ("convert_hf_to_gguf.py", "gguf-py", "build/bin/llama-quantize"):
        if not (llama_cpp / need).exists():
            raise SystemExit(f"{llama_cpp / need} not found: --llama-cpp must be a built llama.cpp tree")
    if not pre_tokenizer_is_qwen3(TINY / "tokenizer.json"):
        raise SystemExit(f"{TINY / 'tokenizer.json'}: pre_tokenizer differs from Qwen3's; cannot call it qwen2")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    written = []
    for name in MODELS:
        hf = out / f"hf-{name}"
        build_checkpoint(name, hf)
        for kind in CONVERTER_TYPES:
            convert(llama_cpp, hf, out / f"{name}-{kind}.gguf", kind, f"miniqwen3 fixture {name}", force_qwen2=True)
            written.append(out / f"{name}-{kind}.gguf")
        for kind in QUANTIZER_TYPES:
            quantize(llama_cpp, out / f"{name}-BF16.gguf", out / f"{name}-{kind}.gguf", kind)
            written.append(out / f"{name}-{kind}.gguf")

    with tempfile.TemporaryDirectory() as tmp:
        vocab_src = Path(tmp) / "Qwen3-0.6B"
        vocab_src.mkdir()
        shutil.copy(REPO / "miniqwen3" / "configs" / "Qwen3-0.6B.json", vocab_src / "config.json")
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy(QWEN3_TOKENIZER / f, vocab_src / f)
        convert(llama_cpp, vocab_src, out / "qwen3-vocab.gguf", "BF16", "Qwen3 tokenizer", force_qwen2=False,
                vocab_only=True)
    written.append(out / "qwen3-vocab.gguf")

    for path in written:
        types = tensor_types(path)
        print(f"{path.name:22s} {path.stat().st_size:>10,d} B  {types}")
        kind = path.stem.split("-", 1)[1]
        missing = K_QUANT_TENSOR_TYPES.get(kind, set()) - set(types)
        if missing:
            raise SystemExit(f"{path}: a {kind} file without {sorted(missing)} tensors: llama-quantize fell back")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"total {total:,d} B in {out}")


if __name__ == "__main__":
    main()
