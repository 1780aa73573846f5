"""Checkpoint weights: our own safetensors reader and writer, and the per-layer weight dataclasses.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, offsets relative
to the end of the header), then the raw little-endian tensor bytes.

Weights stay in the dtype they are stored in. NumPy has no bfloat16, so a bf16 tensor is held as its raw
16-bit patterns in a `uint16` array (the upper half of the fp32 bit pattern); `as_float32` widens it when
used. Safetensors' own integer dtypes are refused, so inside miniqwen3 a `uint16` weight always means bf16.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Qwen3Config
from .quants import QuantWeight


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: names the file and the tensor, and what was expected."""


# safetensors dtype -> NumPy dtype of the held array (bf16 kept as raw uint16 bits)
DTYPES = {"BF16": np.dtype(np.uint16), "F16": np.dtype(np.float16), "F32": np.dtype(np.float32)}
DTYPE_NAMES = {np.dtype(np.uint16): "BF16", np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}
MAX_HEADER_BYTES = 100 * 1024 * 1024


# --- bf16 ----------------------------------------------------------------------------------------

def as_float32(w: np.ndarray) -> np.ndarray:
    """A weight as float32: bf16 bits (uint16) shifted into the top half of an fp32, fp16/fp32 cast."""
    if w.dtype == np.uint16:
        return (w.astype(np.uint32) << 16).view(np.float32)
    return w.astype(np.float32, copy=False)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round fp32 to bf16 (nearest, ties to even), returned as uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u >> np.uint32(16)        # (u + 0x7FFF + bit 16 of u) >> 16, in place: one temporary, not four
    rounded &= np.uint32(1)
    rounded += np.uint32(0x7FFF)
    rounded += u
    rounded >>= np.uint32(16)
    return rounded.astype(np.uint16)


# --- reading one file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str          # "BF16", "F16" or "F32"
    shape: tuple
    begin: int          # absolute byte offsets in the file
    end: int


class SafetensorsFile:
    """One .safetensors file: header parsed and checked in full on open; data memory-mapped on demand."""

    def __init__(self, path):
        self.path = Path(path)
        self.entries, self.metadata = _read_header(self.path)
        self._map = None

    def __contains__(self, name):
        return name in self.entries

    def keys(self):
        return self.entries.keys()

    def _memmap(self):
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map

    def get(self, name: str) -> np.ndarray:
        """The tensor as a read-only array viewing the memory map (no copy)."""
        e = self.entries[name]
        raw = self._memmap()[e.begin:e.end]
        return raw.view(DTYPES[e.dtype]).reshape(e.shape)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Read a tensor's bytes straight from the file into `out` (C-contiguous, same dtype and shape)."""
        e = self.entries[name]
        if out.nbytes != e.end - e.begin:
            raise CheckpointError(f"{self.path}: tensor {name}: {e.end - e.begin} bytes, {out.nbytes} asked for")
        read_bytes(self.path, e.begin, out, f"tensor {name}")


def read_bytes(path, offset: int, out: np.ndarray, what: str) -> None:
    """Fill `out` (C-contiguous) with its size in bytes of the file from `offset`, read, not mapped."""
    with open(path, "rb") as f:
        f.seek(offset)
        got = f.readinto(memoryview(out).cast("B"))
    if got != out.nbytes:
        raise CheckpointError(f"{path}: {what}: read {got} of {out.nbytes} bytes (file changed or truncated "
                              "while loading)")


def fits_in_memory(nbytes: int) -> bool:
    """Whether nbytes may be read into the process's memory: at most half of what the system has available
    without swapping (Linux's MemAvailable). False where that is not known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return nbytes <= int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return False


def file_range(a: np.ndarray) -> tuple[Path, int] | None:
    """(file, offset of a's first byte) for a C-contiguous view of an np.memmap, else None (an array in memory)."""
    root = a
    while isinstance(root.base, np.ndarray):    # views of a memmap are memmaps too: go to the one over the map
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None or not a.flags.c_contiguous:
        return None
    return Path(root.filename), int(root.offset) + (a.ctypes.data - root.ctypes.data)


def _read_header(path: Path):
    """Parse and validate a safetensors header; every entry is checked before anything is used."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated: {size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: bad header: header length {n} runs past the end of the file "
                                      f"({size} bytes); truncated, or not a safetensors file")
            text = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: bad header: not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: bad header: expected a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start, data_size = 8 + n, size - 8 - n
    entries = {}
    for name, info in header.items():
        where = f"{path}: tensor {name}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise CheckpointError(f"{where}: bad header entry {info!r} (needs dtype, shape, data_offsets)")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise CheckpointError(f"{where}: unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(f"{where}: bad shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise CheckpointError(f"{where}: bad data_offsets {offsets!r}")
        begin, end = offsets
        if end > data_size:
            raise CheckpointError(f"{where}: data_offsets [{begin}, {end}] run past the end of the data "
                                  f"({data_size} bytes); the file is truncated")
        expected = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise CheckpointError(f"{where}: {end - begin} bytes for shape {shape} {dtype}, expected {expected}")
        entries[name] = TensorEntry(name, dtype, tuple(shape), data_start + begin, data_start + end)
    return entries, metadata


# --- a whole checkpoint (one file or shards) -----------------------------------------------------

class Checkpoint:
    """All tensors of a checkpoint folder: `model.safetensors`, or shards listed in
    `model.safetensors.index.json` (its `weight_map` names the file of each tensor)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        single = self.folder / "model.safetensors"
        self.files: dict[str, SafetensorsFile] = {}
        self.where: dict[str, SafetensorsFile] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                assert isinstance(weight_map, dict)
            except (json.JSONDecodeError, KeyError, AssertionError, UnicodeDecodeError) as e:
                raise CheckpointError(f"{index}: bad index: needs a 'weight_map' object ({e!r})") from None
            for name, fname in weight_map.items():
                if fname not in self.files:
                    shard = self.folder / fname
                    if not shard.is_file():
                        raise CheckpointError(f"{index}: tensor {name}: shard {fname} is missing")
                    self.files[fname] = SafetensorsFile(shard)
                if name not in self.files[fname]:
                    raise CheckpointError(f"{self.folder / fname}: tensor {name}: listed in the index "
                                          "but not in this shard")
                self.where[name] = self.files[fname]
        elif single.is_file():
            f = SafetensorsFile(single)
            self.files[single.name] = f
            self.where = {name: f for name in f.keys()}
        else:
            raise CheckpointError(f"{self.folder}: no model.safetensors or model.safetensors.index.json")

    def __contains__(self, name):
        return name in self.where

    def nbytes(self) -> int:
        return sum(f.path.stat().st_size for f in self.files.values())

    def entry(self, name: str, shape: tuple) -> TensorEntry:
        if name not in self.where:
            raise CheckpointError(f"{self.folder}: tensor {name} is missing (expected shape {list(shape)})")
        f = self.where[name]
        e = f.entries[name]
        if e.shape != tuple(shape):
            raise CheckpointError(f"{f.path}: tensor {name} has shape {list(e.shape)}, expected {list(shape)}")
        return e

    def get(self, name: str, shape: tuple) -> np.ndarray:
        """A tensor as a memory-mapped view, after checking its shape."""
        self.entry(name, shape)
        return self.where[name].get(name)

    def get_stacked(self, names: list[str], shape: tuple) -> np.ndarray:
        """Several same-shaped tensors read into one array [len(names), *shape] in their stored dtype
        (the experts of a MoE layer: one contiguous [E, ...] block, read from the file, not mapped)."""
        dtypes = {self.entry(n, shape).dtype for n in names}
        if len(dtypes) != 1:
            raise CheckpointError(f"{self.folder}: tensors {names[0]}..{names[-1]} mix dtypes {sorted(dtypes)}")
        out = np.empty((len(names), *shape), dtype=DTYPES[dtypes.pop()])
        for i, n in enumerate(names):
            self.where[n].read_into(n, out[i])
        return out


# --- weights of a Qwen3 model --------------------------------------------------------------------

@dataclass
class AttentionWeights:
    q_proj: np.ndarray   # [NH*D, H]
    k_proj: np.ndarray   # [NKV*D, H]
    v_proj: np.ndarray   # [NKV*D, H]
    o_proj: np.ndarray   # [H, NH*D]
    q_norm: np.ndarray   # [D] fp32
    k_norm: np.ndarray   # [D] fp32


@dataclass
class MLPWeights:
    """SwiGLU MLP: down_proj(silu(gate_proj(x)) * up_proj(x))."""
    gate_proj: np.ndarray  # [I, H]
    up_proj: np.ndarray    # [I, H]
    down_proj: np.ndarray  # [H, I]


@dataclass
class MoEWeights:
    """Qwen3MoeSparseMoeBlock: a router and E SwiGLU experts, stacked along the first axis."""
    gate: np.ndarray       # [E, H] router
    gate_proj: np.ndarray  # [E, I, H]
    up_proj: np.ndarray    # [E, I, H]
    down_proj: np.ndarray  # [E, H, I]


@dataclass
class LayerWeights:
    input_layernorm: np.ndarray           # [H] fp32
    self_attn: AttentionWeights
    post_attention_layernorm: np.ndarray  # [H] fp32
    mlp: MLPWeights | MoEWeights


@dataclass
class Weights:
    embed_tokens: np.ndarray   # [V, H]
    layers: list[LayerWeights]
    norm: np.ndarray           # [H] fp32
    lm_head: np.ndarray        # [V, H]; the same array as embed_tokens when tied

    def nbytes(self) -> int:
        seen, total = set(), 0
        for a in _arrays(self):
            if id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
        return total


def read_per_token_matrices(w: Weights) -> None:
    """Read the matrices every token reads in full (attention's four, a dense MLP's three, the output head) from
    their files into memory, in place of their views of a memory map, when together they fit (`fits_in_memory`):
    NumPy gives arrays this big 2 MiB pages, from which decode streams 1-9% faster than from the map of the file
    (benchmarks/README.md). The bytes are read from the file (`read_bytes`), not through the map, whose pages
    stay untouched. MoE experts and an untied embedding (a row a token) stay as they are; so do arrays already in
    memory. Both loaders, safetensors (`load_weights`) and GGUF (`gguf_file.read_weights`), end with it."""
    sites = [(layer.self_attn, name) for layer in w.layers for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    sites += [(layer.mlp, name) for layer in w.layers if isinstance(layer.mlp, MLPWeights)
              for name in ("gate_proj", "up_proj", "down_proj")]
    sites.append((w, "lm_head"))
    mapped = [(obj, name, where) for obj, name in sites if (where := file_range(stored(getattr(obj, name))))]
    if not mapped or not fits_in_memory(sum(stored(getattr(obj, name)).nbytes for obj, name, _ in mapped)):
        return
    tied = w.lm_head is w.embed_tokens
    for obj, name, (path, offset) in mapped:
        weight = getattr(obj, name)
        data = np.empty(stored(weight).shape, stored(weight).dtype)   # (empty_like of a memmap is a memmap)
        read_bytes(path, offset, data, name)
        setattr(obj, name, QuantWeight(data, weight.kind) if isinstance(weight, QuantWeight) else data)
    if tied:
        w.embed_tokens = w.lm_head


def stored(w) -> np.ndarray:
    """The array that holds a weight's bytes: a QuantWeight's blocks, or the array itself."""
    return w.data if isinstance(w, QuantWeight) else w


def _arrays(obj):
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, list):
        for x in obj:
            yield from _arrays(x)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _arrays(getattr(obj, name))


def load_weights(config: Qwen3Config, folder) -> Weights:
    """Read and check every tensor the config needs; nothing is returned half-loaded.

    Big matrices stay in their stored dtype, memory-mapped, but for the ones every token reads in full, read into
    memory when they fit (`read_per_token_matrices`). MoE experts are read into stacked arrays. The small norm
    vectors and the routers ([E, H]) are widened to fp32, as llama.cpp's converter keeps them in a GGUF: the
    router runs in NumPy, which would otherwise widen a bf16 one at every token."""
    ckpt = Checkpoint(folder)
    c = config
    H, D, V = c.hidden_size, c.head_dim, c.vocab_size
    NH, NKV = c.num_attention_heads, c.num_key_value_heads

    def vec(name, n):
        return as_float32(ckpt.get(name, (n,))).copy()

    embed = ckpt.get("model.embed_tokens.weight", (V, H))
    layers = []
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        attn = AttentionWeights(
            q_proj=ckpt.get(p + "self_attn.q_proj.weight", (NH * D, H)),
            k_proj=ckpt.get(p + "self_attn.k_proj.weight", (NKV * D, H)),
            v_proj=ckpt.get(p + "self_attn.v_proj.weight", (NKV * D, H)),
            o_proj=ckpt.get(p + "self_attn.o_proj.weight", (H, NH * D)),
            q_norm=vec(p + "self_attn.q_norm.weight", D),
            k_norm=vec(p + "self_attn.k_norm.weight", D),
        )
        if c.is_sparse_layer(i):
            E, I = c.num_experts, c.moe_intermediate_size
            experts = [f"{p}mlp.experts.{e}." for e in range(E)]
            mlp = MoEWeights(
                gate=as_float32(ckpt.get(p + "mlp.gate.weight", (E, H))),  # small, read by NumPy every token
                gate_proj=ckpt.get_stacked([x + "gate_proj.weight" for x in experts], (I, H)),
                up_proj=ckpt.get_stacked([x + "up_proj.weight" for x in experts], (I, H)),
                down_proj=ckpt.get_stacked([x + "down_proj.weight" for x in experts], (H, I)),
            )
        else:
            I = c.intermediate_size
            mlp = MLPWeights(
                gate_proj=ckpt.get(p + "mlp.gate_proj.weight", (I, H)),
                up_proj=ckpt.get(p + "mlp.up_proj.weight", (I, H)),
                down_proj=ckpt.get(p + "mlp.down_proj.weight", (H, I)),
            )
        layers.append(LayerWeights(vec(p + "input_layernorm.weight", H), attn,
                                   vec(p + "post_attention_layernorm.weight", H), mlp))
    norm = vec("model.norm.weight", H)
    # Tied: logits = h @ embed_tokens.T; an lm_head.weight that is present anyway is ignored, as transformers does.
    lm_head = embed if c.tie_word_embeddings else ckpt.get("lm_head.weight", (V, H))
    weights = Weights(embed, layers, norm, lm_head)
    read_per_token_matrices(weights)
    return weights


# --- writing -------------------------------------------------------------------------------------

def save_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Write tensors (fp32, fp16, or bf16 as uint16 bits) to one safetensors file, in name order."""
    header, offset = {}, 0
    for name in sorted(tensors):
        a = tensors[name]
        if a.dtype not in DTYPE_NAMES:
            raise CheckpointError(f"{path}: tensor {name}: cannot write dtype {a.dtype}")
        header[name] = {"dtype": DTYPE_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name]).tobytes())
    os.replace(tmp, path)


def save_checkpoint(folder, tensors: dict[str, np.ndarray], max_shard_bytes: int | None = None) -> None:
    """Write tensors as model.safetensors, or as shards model-0000k-of-0000n.safetensors plus
    model.safetensors.index.json when they exceed max_shard_bytes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    if max_shard_bytes is None or sum(tensors[n].nbytes for n in names) <= max_shard_bytes:
        save_safetensors(folder / "model.safetensors", tensors)
        return
    shards, current, size = [], [], 0
    for n in names:
        if current and size + tensors[n].nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += tensors[n].nbytes
    shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(folder / fname, {n: tensors[n] for n in shard})
        weight_map.update({n: fname for n in shard})
    total = sum(tensors[n].nbytes for n in names)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def random_tensors(config: Qwen3Config, dtype: str = "bf16", seed: int = 0, std: float = 0.02) -> dict:
    """Random weights with checkpoint names for a config (for demos and benchmarks; not a trained model)."""
    rng = np.random.default_rng(seed)
    c = config
    H, D, V = c.hidden_size, c.head_dim, c.vocab_size

    def mat(*shape):
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        return float32_to_bf16(x) if dtype == "bf16" else x.astype(np.float32 if dtype == "fp32" else np.float16)

    def ones(n):
        x = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
        return float32_to_bf16(x) if dtype == "bf16" else x.astype(np.float32 if dtype == "fp32" else np.float16)

    t = {"model.embed_tokens.weight": mat(V, H), "model.norm.weight": ones(H)}
    if not c.tie_word_embeddings:
        t["lm_head.weight"] = mat(V, H)
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = ones(H)
        t[p + "post_attention_layernorm.weight"] = ones(H)
        t[p + "self_attn.q_proj.weight"] = mat(c.num_attention_heads * D, H)
        t[p + "self_attn.k_proj.weight"] = mat(c.num_key_value_heads * D, H)
        t[p + "self_attn.v_proj.weight"] = mat(c.num_key_value_heads * D, H)
        t[p + "self_attn.o_proj.weight"] = mat(H, c.num_attention_heads * D)
        t[p + "self_attn.q_norm.weight"] = ones(D)
        t[p + "self_attn.k_norm.weight"] = ones(D)
        if c.is_sparse_layer(i):
            I = c.moe_intermediate_size
            t[p + "mlp.gate.weight"] = mat(c.num_experts, H)
            for e in range(c.num_experts):
                t[f"{p}mlp.experts.{e}.gate_proj.weight"] = mat(I, H)
                t[f"{p}mlp.experts.{e}.up_proj.weight"] = mat(I, H)
                t[f"{p}mlp.experts.{e}.down_proj.weight"] = mat(H, I)
        else:
            I = c.intermediate_size
            t[p + "mlp.gate_proj.weight"] = mat(I, H)
            t[p + "mlp.up_proj.weight"] = mat(I, H)
            t[p + "mlp.down_proj.weight"] = mat(H, I)
    return t
