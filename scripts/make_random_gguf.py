"""Write a random-weight GGUF of a real Qwen3 config at full depth, in any llama.cpp quant type, without a
full-size bf16 intermediate (for benchmarks and memory tests of the real model's shape).

    python scripts/make_random_gguf.py --config Qwen3-30B-A3B --type Q4_K_M \\
        --out /work/big/Qwen3-30B-A3B-random-Q4_K_M.gguf --llama-cpp /path/to/llama.cpp

--llama-cpp (or $LLAMA_CPP): a llama.cpp source tree with build/bin/llama-quantize (see
tests/fixtures/gguf/README.md). Needs torch and transformers.

How:
1. a 2-layer HF checkpoint with the real config (miniqwen3/configs/<name>.json, num_hidden_layers=2) and the
   real tokenizer (../shared/qwen3-tokenizer), random bf16 weights (std 0.02, norms 1; see --embed-std);
2. llama.cpp's convert_hf_to_gguf.py -> BF16 GGUF, llama-quantize -> the target type;
3. the full-depth file written with gguf's GGUFWriter: every metadata field copied, {arch}.block_count set
   to the real depth, and layer i's tensors the raw bytes of one of the two source layers (renamed blk.i).

Which source layer: llama-quantize's K-quant mixes (Q4_K_M, Q5_K_M, ...) give some layers more bits
(Q6_K for attn_v and ffn_down(_exps)) by the rule use_more_bits(i, n) = i < n//8 or i >= 7n//8 or
(i - n//8) % 3 == 2. With n = 2, layer 1 gets more bits and layer 0 does not; the larger of the two
source layers (in bytes) is taken as the one with more bits, and layer i of the full file copies it when
use_more_bits(i, depth), the other one otherwise: the tensor types per layer, and so the file size, are
those of quantizing the full-depth model. --direct quantizes the full-depth model instead (fine for 0.6B;
a check of the rule). --source FILE repeats an existing 2-layer GGUF (skips steps 1-2).

Tensors are streamed from the memory-mapped 2-layer file; nothing full-size is held in memory.

The embedding's std (--embed-std, MoE default 16): with every weight at std 0.02, the layers' outputs drown
the token embedding in the residual stream within a few layers, the hidden states of different tokens
become alike, and the routers send all tokens to the same few experts (64 random tokens: ~15 of 128
experts per layer from layer 3 on). A trained model's tokens spread over the experts; a benchmark of
memory and speed must read as many experts as that. With the embedding at std 16 the token identity stays
in the residual stream (the layers see it through their RMSNorms) and 64 random tokens use ~125 of 128
experts in every layer, as uniformly random routing would.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "miniqwen3" / "configs"
QWEN3_TOKENIZER = REPO.parent / "shared" / "qwen3-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
SOURCE_LAYERS = 2


def use_more_bits(i: int, n: int) -> bool:
    """llama-quantize's choice of the layers that get more bits in its _M / _S mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def build_checkpoint(config_path: Path, folder: Path, layers: int | None, seed: int, std: float,
                     embed_std: float) -> dict:
    """Random bf16 HF checkpoint of the config (with `layers` layers if given) and the real tokenizer:
    norms 1, the input embedding ~N(0, embed_std), every other matrix ~N(0, std)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(config_path.read_text())
    if layers is not None:
        raw["num_hidden_layers"] = layers
        raw["max_window_layers"] = layers
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_config(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.fill_(1.0)
            elif pname.endswith("embed_tokens.weight"):
                p.normal_(0.0, embed_std)
            else:
                p.normal_(0.0, std)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copy(QWEN3_TOKENIZER / f, folder / f)
    del model
    return raw


def convert_bf16(llama_cpp: Path, model_dir: Path, outfile: Path, name: str) -> None:
    """llama.cpp's convert_hf_to_gguf.py --outtype bf16, with its own gguf-py."""
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(outfile),
         "--outtype", "bf16", "--model-name", name], env=env)


def quantize(llama_cpp: Path, src: Path, dst: Path, kind: str) -> None:
    run([str(llama_cpp / "build" / "bin" / "llama-quantize"), str(src), str(dst), kind, "2"])


def run(cmd: list, **kw) -> None:
    """Run a tool quietly; on failure show its output and stop."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{Path(cmd[0]).name} failed (exit {done.returncode})")


def field_value(field):
    """A reader field's value and GGUF value type(s), as GGUFWriter.add_key_value takes them."""
    from gguf import GGUFValueType
    vtype = field.types[0]
    sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
    return field.contents(), vtype, sub


def repeat_layers(src: Path, dst: Path, depth: int) -> None:
    """Write dst: src's metadata and tensors with its blk.0 / blk.1 repeated to `depth` layers."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    n_src = reader.fields[f"{arch}.block_count"].contents()
    if n_src != SOURCE_LAYERS:
        raise SystemExit(f"{src}: {arch}.block_count is {n_src}, expected {SOURCE_LAYERS}")
    head, tail, layers = [], [], {i: [] for i in range(n_src)}
    for t in reader.tensors:
        if t.name.startswith("blk."):
            i, rest = t.name[4:].split(".", 1)
            layers[int(i)].append((rest, t))
        else:
            (tail if any(layers.values()) else head).append((t.name, t))

    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.alignment":
            writer.data_alignment = field.contents()
        value, vtype, sub = field_value(field)
        if key == f"{arch}.block_count":
            value = depth
        writer.add_key_value(key, value, vtype, sub_type=sub)

    size = {i: sum(t.data.nbytes for _, t in layers[i]) for i in layers}
    more, fewer = (1, 0) if size[1] >= size[0] else (0, 1)
    order = list(head)
    for i in range(depth):
        source = more if use_more_bits(i, depth) else fewer
        order += [(f"blk.{i}.{rest}", t) for rest, t in layers[source]]
    order += tail
    for name, t in order:
        writer.add_tensor_info(name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, t in order:
        writer.write_tensor_data(t.data)
    writer.close()


def layer_types(path: Path) -> list:
    """Per layer, the sorted (tensor, type) pairs of a GGUF file."""
    import gguf
    per = {}
    for t in gguf.GGUFReader(path).tensors:
        if t.name.startswith("blk."):
            i, rest = t.name[4:].split(".", 1)
            per.setdefault(int(i), []).append((rest, t.tensor_type.name))
    return [sorted(per[i]) for i in sorted(per)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a name in miniqwen3/configs (Qwen3-30B-A3B) or a config.json")
    ap.add_argument("--type", default="Q4_K_M", help="a llama-quantize type (Q4_K_M, Q8_0, ...) or BF16")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--llama-cpp", type=Path, default=os.environ.get("LLAMA_CPP"),
                    help="llama.cpp source tree with build/bin/llama-quantize (or $LLAMA_CPP)")
    ap.add_argument("--direct", action="store_true", help="quantize the full-depth model (no layer repeat)")
    ap.add_argument("--source", type=Path, help="an existing 2-layer GGUF to repeat (skips building it)")
    ap.add_argument("--work", type=Path, help="folder for intermediates (default: beside --out; removed after)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="std of the random matrices")
    ap.add_argument("--embed-std", type=float,
                    help="std of the input embedding (default: 16 for MoE configs, which keeps routing diverse "
                         "through all layers; else --std)")
    args = ap.parse_args()
    if args.llama_cpp is None:
        ap.error("give --llama-cpp DIR or set $LLAMA_CPP (a llama.cpp tree with build/bin/llama-quantize)")
    llama_cpp = args.llama_cpp.resolve()
    config_path = Path(args.config) if args.config.endswith(".json") else CONFIGS / f"{args.config}.json"
    raw = json.loads(config_path.read_text())
    depth = raw["num_hidden_layers"]
    if args.embed_std is None:
        args.embed_std = 16.0 if raw.get("num_experts") and not raw.get("tie_word_embeddings") else args.std

    t0 = time.time()
    if args.source is not None:
        repeat_layers(args.source, args.out, depth)
        report(args.out, t0)
        return
    work = args.work or args.out.parent / f".{args.out.stem}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    build_checkpoint(config_path, work / "hf", None if args.direct else SOURCE_LAYERS, args.seed, args.std,
                     args.embed_std)
    print(f"checkpoint {time.time() - t0:.0f} s")
    bf16 = work / "model-BF16.gguf"
    convert_bf16(llama_cpp, work / "hf", bf16, f"{config_path.stem} random")
    shutil.rmtree(work / "hf")
    print(f"BF16 GGUF {bf16.stat().st_size:,d} B, {time.time() - t0:.0f} s")
    if args.type.upper() == "BF16":
        small = bf16
    else:
        small = work / f"model-{args.type}.gguf"
        quantize(llama_cpp, bf16, small, args.type)
        bf16.unlink()
        print(f"{args.type} GGUF {small.stat().st_size:,d} B, {time.time() - t0:.0f} s")
    if args.direct:
        shutil.move(small, args.out)
    else:
        repeat_layers(small, args.out, depth)
    shutil.rmtree(work)
    report(args.out, t0)


def report(path: Path, t0: float) -> None:
    types = layer_types(path)
    more = [i for i, layer in enumerate(types) if any(k == "Q6_K" for name, k in layer if name.startswith("attn_v"))]
    kinds = sorted({k for layer in types for _, k in layer})
    print(f"{path}: {path.stat().st_size:,d} B, {len(types)} layers, {time.time() - t0:.0f} s; "
          f"layer tensor types {kinds}; layers with a Q6_K attn_v: {more}")


if __name__ == "__main__":
    main()
