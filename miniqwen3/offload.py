"""Experts offloaded to the checkpoint file: each MoE layer holds C of its E experts in memory and reads the others
from the file when a token is routed to them.

Qwen3-30B-A3B in Q8_0 is 30.3 GiB, 28.7 GiB of it experts (48 layers x 128 experts x gate, up and down
projections: 5.01 MB an expert). On a machine with less memory the file can still be memory-mapped, and then the
kernel's page cache decides which experts stay, by page and for the whole file at once. This module makes that
choice in the process instead, per layer and per expert, as Mixtral-offloading does between a GPU and its host
(Eliseev & Mazur 2023, arXiv 2312.17238):

- each MoE layer has C slots, buffers of one expert's gate_proj, up_proj and down_proj in the stored format
  (GGUF blocks, bf16 bits or floats: the kernels run on them as on the whole stacked matrices);
- before the layer's experts run, every expert its tokens need is put in a slot: a hit if it is there already, a
  miss otherwise, read from the file with `os.preadv` straight into the slot, then dropped from the page cache
  (`posix_fadvise(DONTNEED)`), so that the memory the experts take is the slots and nothing else; a step's misses
  are read `readers` at a time (4 threads by default);
- a miss evicts the least recently used expert the step does not need (ties: the lower expert id), exactly the
  LRU of `expert_cache.simulate`: for the same steps the hits and misses are the same
  (`tests/test_offload.py`), so the simulator's hit rates are the real cache's;
- a forward pass of T tokens whose tokens need more than C experts of a layer (a prompt) runs that layer's
  experts in groups of at most C: the cached ones first, then the rest as they are read.

The file offset of expert e of a stacked matrix [E, ...] is where its memory map puts row e: stacked matrices that
are memory-mapped views of a file (GGUF's ffn_*_exps) are read from the file; others (the tiny model's, or
safetensors' per-expert tensors, which loading stacks in memory) are copied from the array, which is the same
bookkeeping without the disk and saves no memory: a model larger than memory is run offloaded from a GGUF file.

Shape letters as in `miniqwen3.config`: T tokens, K experts per token, E experts, C slots, H hidden, I expert width.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .quants import QuantWeight
from .weights import file_range, stored


@dataclass
class ExpertMatrix:
    """One stacked expert matrix [E, OUT, IN] as stored, its C slots [C, OUT, IN] in the same format, and where
    expert 0's bytes are in the file (None: copied from the array)."""
    stacked: np.ndarray | QuantWeight
    slots: np.ndarray | QuantWeight
    where: tuple[Path, int] | None

    @classmethod
    def of(cls, stacked, capacity: int) -> "ExpertMatrix":
        raw = stored(stacked)
        slots_raw = np.empty((capacity, *raw.shape[1:]), raw.dtype)
        slots = QuantWeight(slots_raw, stacked.kind) if isinstance(stacked, QuantWeight) else slots_raw
        return cls(stacked, slots, file_range(raw))

    @property
    def expert_bytes(self) -> int:
        raw = stored(self.stacked)
        return raw.nbytes // raw.shape[0]

    def read(self, expert: int, slot: int, fd: int | None) -> int:
        """Put expert `expert` into slot `slot`; the bytes read."""
        dst, n = stored(self.slots)[slot], self.expert_bytes
        if fd is None:
            dst[...] = stored(self.stacked)[expert]
            return n
        offset = self.where[1] + expert * n
        done = 0
        view = memoryview(dst).cast("B")
        while done < n:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.where[0]}: could not read expert {expert} (bytes {offset + done:,} on)")
            done += got
        os.posix_fadvise(fd, offset, n, os.POSIX_FADV_DONTNEED)
        return n


@dataclass
class OffloadStats:
    """What one layer's slots did: per step (one forward call), the needed experts that were in a slot (hits)
    and that were read (misses); the bytes read and the seconds spent reading."""
    hits: list = field(default_factory=list)
    misses: list = field(default_factory=list)
    bytes_read: int = 0
    read_seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        h, m = sum(self.hits), sum(self.misses)
        return h / max(h + m, 1)


class OffloadedExperts:
    """One MoE layer's experts, C of them in slots (see the module's docstring).  `run` is `moe_experts` for it."""

    def __init__(self, gate_proj, up_proj, down_proj, capacity: int, top_k: int, readers: int = 4):
        self._fds = {}
        self.readers = readers
        E = gate_proj.shape[0]
        if not top_k <= capacity <= E:
            raise ValueError(f"expert cache of {capacity} experts a layer: a token needs {top_k} in memory at once "
                             f"and the layer has {E} (expected {top_k} <= capacity <= {E})")
        self.capacity, self.n_experts = capacity, E
        self.matrices = [ExpertMatrix.of(w, capacity) for w in (gate_proj, up_proj, down_proj)]
        self.expert_of_slot = np.full(capacity, -1, np.int64)   # [C] -1: empty
        self.slot_of_expert = np.full(E, -1, np.int64)          # [E] -1: not in memory
        self.last_used = np.full(capacity, -1.0)                # [C] the step that last needed the slot's expert
        self.step = 0
        self.stats = OffloadStats()

    @property
    def nbytes(self) -> int:
        """The memory the slots take."""
        return sum(stored(m.slots).nbytes for m in self.matrices)

    @property
    def expert_bytes(self) -> int:
        return sum(m.expert_bytes for m in self.matrices)

    def _fd(self, m: ExpertMatrix) -> int | None:
        if m.where is None:
            return None
        path = m.where[0]
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self):
        self.close()

    def fetch(self, needed) -> np.ndarray:
        """Put the experts `needed` (distinct ids, at most C) in slots, evicting LRU experts that are not needed;
        count the hits and misses as one step.  -> slot of each needed expert [len(needed)]"""
        needed = [int(e) for e in needed]
        hits = sum(self.slot_of_expert[e] >= 0 for e in needed)
        loads = []                                   # (matrix, expert, slot): what the misses read
        for e in needed:
            if self.slot_of_expert[e] >= 0:
                continue
            slot = self._free_slot(needed)
            old = self.expert_of_slot[slot]
            if old >= 0:
                self.slot_of_expert[old] = -1
            self.expert_of_slot[slot], self.slot_of_expert[e] = e, slot
            loads += [(m, e, slot) for m in self.matrices]
        self._read(loads)
        misses = len(loads) // len(self.matrices)
        slots = self.slot_of_expert[needed]
        self.last_used[slots] = self.step
        self.stats.hits.append(int(hits))
        self.stats.misses.append(misses)
        self.step += 1
        return slots

    def _read(self, loads: list) -> None:
        """Read the misses' matrices into their slots: `readers` of them at a time from a file (a disk serves
        several requests at once faster than one after the other), one after the other from memory."""
        t0 = time.perf_counter()
        jobs = [(m, e, slot, self._fd(m)) for m, e, slot in loads]
        if self.readers > 1 and len(jobs) > 1 and jobs[0][3] is not None:
            self.stats.bytes_read += sum(_readers(self.readers).map(lambda j: j[0].read(*j[1:]), jobs))
        else:
            self.stats.bytes_read += sum(m.read(e, slot, fd) for m, e, slot, fd in jobs)
        self.stats.read_seconds += time.perf_counter() - t0

    def _free_slot(self, needed) -> int:
        """An empty slot, or the one whose expert was used least recently (ties: the lower expert id) among the
        experts this step does not need."""
        empty = np.flatnonzero(self.expert_of_slot < 0)
        if empty.size:
            return int(empty[0])
        keep = set(needed)
        candidates = [s for s in range(self.capacity) if int(self.expert_of_slot[s]) not in keep]
        return min(candidates, key=lambda s: (self.last_used[s], self.expert_of_slot[s]))

    def groups(self, experts: np.ndarray) -> list[list[int]]:
        """The distinct experts of experts [T, K] in groups of at most C that run one after the other: the ones in
        memory first (in slot order), then the others by id."""
        distinct = np.unique(experts)
        cached = self.expert_of_slot[np.isin(self.expert_of_slot, distinct)].tolist()        # in slot order
        rest = distinct[self.slot_of_expert[distinct] < 0].tolist()
        order = cached + rest
        return [order[i:i + self.capacity] for i in range(0, len(order), self.capacity)]

    def run(self, moe_experts, x: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """moe_experts(x, experts, weights, gate_proj, up_proj, down_proj) with the experts in slots.
        x: [T, H], experts/weights: [T, K] -> [T, H]"""
        gate, up, down = (m.slots for m in self.matrices)
        groups = self.groups(experts)
        if len(groups) == 1:
            slots = np.empty(self.n_experts, np.int64)
            slots[groups[0]] = self.fetch(groups[0])
            return moe_experts(x, slots[experts], weights, gate, up, down)
        out = np.zeros((x.shape[0], x.shape[1]), np.float32)
        for group in groups:
            slots = np.full(self.n_experts, -1, np.int64)
            slots[group] = self.fetch(group)
            token, k = np.nonzero(slots[experts] >= 0)                       # the (token, slot) pairs of the group
            y = moe_experts(x[token], slots[experts[token, k]][:, None], weights[token, k][:, None],
                            gate, up, down)                                   # [P, H]
            np.add.at(out, token, y)
        return out


_POOLS = {}


def _readers(n: int):
    """A pool of n threads for reading (os.preadv lets go of the GIL), shared by all layers."""
    from concurrent.futures import ThreadPoolExecutor
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="miniqwen3-expert-reader")
    return _POOLS[n]


def offload_experts(model, capacity: int | None, readers: int = 4) -> list[OffloadedExperts]:
    """Give every MoE layer of `model` an expert cache of `capacity` experts (see the module's docstring), held in
    `model.offloaded` (layer index -> OffloadedExperts); the model then reads the other experts from its file as
    tokens need them. None: every expert in use again (the memory map was never closed). -> the layers' caches"""
    from .weights import MoEWeights
    moe = {i: layer.mlp for i, layer in enumerate(model.weights.layers) if isinstance(layer.mlp, MoEWeights)}
    if capacity is not None and not moe:
        raise ValueError(f"{model.config.model_type}: no MoE layers, no experts to offload")
    new = {} if capacity is None else {
        i: OffloadedExperts(m.gate_proj, m.up_proj, m.down_proj, capacity, model.config.num_experts_per_tok, readers)
        for i, m in moe.items()}
    for old in model.offloaded.values():
        old.close()
    model.offloaded = new
    return list(new.values())
