"""The Qwen3 / Qwen3-MoE forward pass, read top to bottom: embed, decoder layers, final norm, logits.

    h   = x + o_proj(attention(rope(q_norm(q)), rope(k_norm(k)), v))   on input_layernorm(x)
    out = h + mlp(post_attention_layernorm(h))        mlp: SwiGLU, or the MoE block on sparse layers

The math lives in `ops` (plain NumPy). The model has four seams, and nothing else changes it or looks inside it from
outside:

- the backend: the hot ops (linear, linears, swiglu, attention, moe_experts) are looked up on `self.ops`, which is `ops`
  itself or `kernels` (their Numba twins, same names and shapes); `set_backend` swaps them;
- the routing trace: `forward(..., trace=RoutingTrace())` records every MoE layer's router logits,
  probabilities, chosen experts and weights (`miniqwen3.routing`);
- routing overrides: inside `with model.routing(top_k=..., drop=..., weights=..., inputs=...)` the MoE layers
  choose another number of experts, never choose some, weight them otherwise, or hand over their inputs.
  Overrides nest and are undone on leaving the block, exceptions included;
- the recording: `forward(..., record=Recording())` keeps a copy of every intermediate value of the pass (the
  input of each layer, after each norm, q/k/v, after QK-Norm and RoPE, attention, residuals, router, MoE output,
  final norm, logits), for the layer walk-through (notebook 06). Recording changes no value.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import ops
from .config import Qwen3Config
from .quants import quantize_q8_0
from .routing import RouterRecord, RoutingTrace
from .sizes import parameter_split, totals
from .weights import AttentionWeights, MoEWeights, Weights, float32_to_bf16

# From this many parameters on, a model runs the Numba kernels unless told otherwise: Qwen3-0.6B decodes 7-11x
# faster with them (benchmarks/results/engine*.md), while the embedded tiny model (9M) answers in about a second
# with NumPy and would wait on the first compile (about 100 s on 2 cores, once; then cached on disk).
NUMBA_FROM_PARAMETERS = 50_000_000


def default_backend(config: Qwen3Config) -> str:
    """"numba" for a model of NUMBA_FROM_PARAMETERS or more, "numpy" below."""
    return "numba" if totals(parameter_split(config))["total"] >= NUMBA_FROM_PARAMETERS else "numpy"


def auto_matmul_precision(config: Qwen3Config, weights: Weights, backend: str) -> str:
    """"bf16" where bf16 products pay: bf16 weights (the first layer's q_proj) on the Numba kernels of a CPU with
    AVX512-BF16, in a model of NUMBA_FROM_PARAMETERS or more, whose time goes to its products; a prompt then reads
    1.5-1.9x faster (benchmarks/results/engine.md). "fp32" elsewhere: the NumPy reference, quantized or fp32
    weights, a CPU without AVX512-BF16 (rounding would buy no speed), and the small models, the embedded ones
    among them, whose evaluations (EVAL.json) and notebooks are fp32's."""
    q = weights.layers[0].self_attn.q_proj
    if (backend != "numba" or default_backend(config) != "numba"
            or not (isinstance(q, np.ndarray) and q.dtype == np.uint16)):
        return "fp32"
    from .bf16_products import AVAILABLE
    return "bf16" if AVAILABLE else "fp32"


# The activations entering a matrix product: "fp32" (transformers' fp32 logits to ~1e-5), or "bf16": rounded to
# bf16 (nearest, ties to even), so that a bf16 weight meets them in bf16 with fp32 sums, which is llama.cpp's
# arithmetic for bf16 weights, a transformers model's in bf16 (transformers' dtype="auto" for a bf16 checkpoint)
# and torch's "medium" matmul precision. On a CPU with AVX512-BF16 a prefill then runs twice the multiply-adds an
# instruction (`bf16_products`). Every product of the model takes rounded inputs, the router's and the output
# head's too, in prefill and decode alike. "auto" (the default) is "bf16" where that pays, "fp32" elsewhere:
# `auto_matmul_precision`.
MATMUL_PRECISIONS = ("auto", "fp32", "bf16")


# how a KV cache holds its values: fp32, bf16 as its bits, or q8_0 as GGUF's Q8_0 blocks (a row of D values is
# D / 32 blocks of 34 bytes: an fp16 scale d and 32 int8 q, value = d * q; `quants.quantize_q8_0`)
KV_DTYPES = {"fp32": np.float32, "bf16": np.uint16, "q8_0": np.uint8}


@dataclass
class KVCache:
    """Normed and rotated keys and the values of every layer, for positions 0..length-1.
    k[i], v[i]: [NKV, capacity, D], fp32 or bf16 bits (uint16); grown by doubling. KV heads first: the keys of
    one head are one run in memory, which a decode step streams (position-first, consecutive keys of a head sat
    NKV * D values apart, a 4 KiB page for each 512-byte key of Qwen3, and the hardware prefetcher stops at every
    page). `keys(i)` and `values(i)` show them position-first, [length, NKV, D].
    dtype "bf16" halves the bytes a decoded token reads from the cache (at 4096 tokens of context, Qwen3-0.6B's
    fp32 cache is 0.94 GB, next to 1.19 GB of bf16 weights); values are rounded to bf16 as they are stored (a bf16
    model in transformers holds them in bf16; llama.cpp's default cache rounds them to f16). dtype "q8_0" holds
    each row of D values as Q8_0 blocks (k[i], v[i]: uint8 [NKV, capacity, D / 32 * 34], 0.27x fp32's bytes, as
    llama.cpp's `--cache-type-k q8_0 --cache-type-v q8_0`); `keys(i)`, `values(i)` widen them to fp32. What it
    costs: on the tiny model, logits 5.3% (relative rms) from the fp32 cache's, 12 of 13 top-1 tokens the same,
    where bf16's are 0.6% off (tests/test_kernels.py)."""
    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    length: int = 0
    dtype: str = "fp32"

    def __post_init__(self):
        if self.dtype not in KV_DTYPES:
            raise ValueError(f"KV cache dtype {self.dtype!r}: expected one of {sorted(KV_DTYPES)}")

    def reserve(self, config: Qwen3Config, n: int) -> None:
        """Make room for n positions in total."""
        capacity = self.k[0].shape[1] if self.k else 0
        if n <= capacity:
            return
        new = max(n, 2 * capacity, 64)
        shape = (config.num_key_value_heads, new, config.head_dim)
        if self.dtype == "q8_0":
            if config.head_dim % 32:
                raise ValueError(f"a q8_0 KV cache needs head_dim a multiple of 32 (Q8_0 blocks), got {config.head_dim}")
            shape = shape[:2] + (config.head_dim // 32 * 34,)
        for store in (self.k, self.v):
            for i in range(config.num_hidden_layers):
                grown = np.zeros(shape, dtype=KV_DTYPES[self.dtype])
                if i < len(store):
                    grown[:, :capacity] = store[i][:, :capacity]
                    store[i] = grown
                else:
                    store.append(grown)

    def store(self, i: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Keys and values [T, NKV, D] fp32 of positions start..start+T-1 into layer i."""
        if self.dtype == "bf16":
            k, v = float32_to_bf16(k), float32_to_bf16(v)
        elif self.dtype == "q8_0":
            k, v = quantize_q8_0(k).data, quantize_q8_0(v).data        # [T, NKV, D / 32 * 34]
        self.k[i][:, start:start + len(k)] = k.transpose(1, 0, 2)
        self.v[i][:, start:start + len(v)] = v.transpose(1, 0, 2)

    def keys(self, i: int) -> np.ndarray:
        """Layer i's cached keys, position-first [length, NKV, D]: a view (fp32, bf16 bits), or widened (q8_0)."""
        return self._position_first(self.k[i])

    def values(self, i: int) -> np.ndarray:
        """Layer i's cached values, position-first [length, NKV, D]: a view (fp32, bf16 bits), or widened (q8_0)."""
        return self._position_first(self.v[i])

    def _position_first(self, a: np.ndarray) -> np.ndarray:
        a = a[:, :self.length].transpose(1, 0, 2)
        return ops.kv_as_float32(a) if self.dtype == "q8_0" else a

    def truncate(self, n: int) -> None:
        """Forget positions n and later (e.g. to reuse a shared prompt prefix)."""
        self.length = min(self.length, n)


@dataclass
class Recording:
    """Intermediate values of the forward calls made with `forward(..., record=this)`: values[(layer, name)] holds
    one copy per call, in call order (prefill, then each decoded token). Layer None: the final norm and logits.
    Per layer i, in the order the forward computes them (T tokens of the call):
        input [T, H]   input_layernorm [T, H]   q_proj [T, NH, D]   k_proj, v_proj [T, NKV, D]
        q_norm, q_rope [T, NH, D]   k_norm, k_rope [T, NKV, D]   attention [T, NH, D] (before o_proj)
        o_proj [T, H]   attention_residual [T, H] (input + o_proj)   post_attention_layernorm [T, H]
        MoE layers: router_logits, router_probs [T, E], experts, expert_weights [T, K] (as used, overrides applied)
        mlp [T, H] (the MoE or dense MLP output)   output [T, H] (attention_residual + mlp)
    then (None, "norm") [T, H] and (None, "logits") [T, V] (T = 1 with last_only)."""
    values: dict = field(default_factory=dict)

    def __call__(self, layer: int | None, **values) -> None:
        for name, value in values.items():
            self.values.setdefault((layer, name), []).append(np.array(value))  # a copy: later steps cannot alter it

    def get(self, name: str, layer: int | None = None, call: int = -1) -> np.ndarray:
        """The value recorded as `name` in `layer` during forward call number `call` (the last one by default)."""
        if (layer, name) not in self.values:
            names = sorted({n for _, n in self.values})
            raise KeyError(f"nothing recorded as {name!r} in layer {layer} (names recorded: {names})")
        return self.values[(layer, name)][call]


def _no_record(layer, **values) -> None:
    """The recorder of a forward call made without one."""


@dataclass(frozen=True, eq=False)           # eq=False: two equal-looking blocks are still two blocks
class RoutingOverride:
    """One `Model.routing(...)` block's change to the routers of the MoE layers."""
    top_k: int | None = None      # experts per token instead of the config's num_experts_per_tok
    drop: dict = field(default_factory=dict)   # layer -> experts that may not be chosen (see `ops.router`)
    weights: Callable | None = None            # (layer, probs [T, E], experts [T, K], weights [T, K]) -> [T, K]
    inputs: dict | None = None    # filled with layer -> the MoE input x [T, H], concatenated over forward calls


class Model:
    """A loaded Qwen3 model: config, weights, RoPE tables, a backend for the hot ops, and the routing overrides
    in force (innermost last)."""

    def __init__(self, config: Qwen3Config, weights: Weights, backend: str | None = None, path=None,
                 matmul_precision: str = "auto"):
        if matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision {matmul_precision!r}: expected one of {', '.join(MATMUL_PRECISIONS)}")
        self.matmul_precision_asked = matmul_precision   # "auto" is settled per backend, in set_backend
        self.config = config
        self.weights = weights
        self.path = path
        self.tokenizer = None
        self.routing_overrides: list[RoutingOverride] = []
        self.offloaded: dict = {}     # MoE layer -> offload.OffloadedExperts (offload_experts): C experts in memory
        self.inv_freq, self.attention_factor = ops.rope_frequencies(
            config.head_dim, config.rope_theta, config.rope_scaling)
        self.set_backend(backend or default_backend(config))

    def set_backend(self, backend: str) -> None:
        """"numpy" (the plain reference ops) or "numba" (the JIT kernels with the same names, made ready here:
        loaded from Numba's disk cache, or compiled once with a progress line; `kernels.warm_up`).
        Settles `matmul_precision` for this backend when it was asked as "auto"."""
        if backend not in ("numpy", "numba"):
            raise ValueError(f"backend {backend!r}: expected 'numpy' or 'numba'")
        self.matmul_precision = self.matmul_precision_asked
        if self.matmul_precision == "auto":
            self.matmul_precision = auto_matmul_precision(self.config, self.weights, backend)
        if backend == "numpy":
            self.ops = ops
        else:
            from . import kernels
            kernels.warm_up(bf16=self.matmul_precision == "bf16")
            self.ops = kernels
        self.backend = backend

    def new_cache(self, dtype: str = "fp32") -> KVCache:
        """An empty KV cache holding fp32 or bf16 values (see `KVCache`)."""
        return KVCache(dtype=dtype)

    def offload_experts(self, capacity: int | None, readers: int = 4) -> list:
        """Hold `capacity` experts of each MoE layer in memory and read the others from the checkpoint file when
        tokens are routed to them (LRU; `miniqwen3.offload`); None: all experts in use again. -> the layers'
        caches, with their hit counts"""
        from .offload import offload_experts
        return offload_experts(self, capacity, readers)

    def quantize(self, kind: str = "q8_0") -> "Model":
        """Convert the big matrices in place to GGUF's Q8_0 blocks (`quants.quantize_q8_0`: 32 weights of a row
        share one fp16 scale): the attention projections, the dense MLP, every expert, and the output head (a
        tied head gets its own quantized copy; the embedding table used for lookup stays as stored). The router
        and the norms stay as stored, and so does a matrix whose rows are not a whole number of 32-weight blocks.
        Both backends run the result."""
        from .quants import QuantWeight, quantize_q8_0
        if kind.lower() != "q8_0":
            raise ValueError(f"quantize: unknown format {kind!r} (supported: 'q8_0')")

        if self.offloaded:
            raise ValueError("quantize: the experts are offloaded (their slots hold the stored format); "
                             "quantize first, then offload_experts")

        def q8(w):
            return w if isinstance(w, QuantWeight) or w.shape[-1] % 32 else quantize_q8_0(w)
        for layer in self.weights.layers:
            a, m = layer.self_attn, layer.mlp
            a.q_proj, a.k_proj, a.v_proj, a.o_proj = (q8(w) for w in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
            m.gate_proj, m.up_proj, m.down_proj = (q8(w) for w in (m.gate_proj, m.up_proj, m.down_proj))
        self.weights.lm_head = q8(self.weights.lm_head)
        return self

    # --- the forward pass ----------------------------------------------------------------------

    def forward(self, ids, cache: KVCache | None = None, trace: RoutingTrace | None = None,
                last_only: bool = False, record: Callable | None = None) -> np.ndarray:
        """Run tokens through the model, appending them to `cache` if given; record(layer, name=value) is called
        at every intermediate value (see `Recording`).  ids: [T] -> logits [T, V] (or [1, V] with last_only) float32"""
        c, w = self.config, self.weights
        record = record if record is not None else _no_record
        ids = self._check_ids(ids)
        cache = cache if cache is not None else KVCache()
        start, T = cache.length, len(ids)
        cache.reserve(c, start + T)
        positions = np.arange(start, start + T)
        cos, sin = ops.rope_cos_sin(positions, self.inv_freq, self.attention_factor)   # [T, D]

        x = ops.embed(ids, w.embed_tokens)                                             # [T, H]
        for i, layer in enumerate(w.layers):
            record(i, input=x)
            h = ops.rms_norm(x, layer.input_layernorm, c.rms_norm_eps)
            record(i, input_layernorm=h)
            x = x + self.self_attention(h, layer.self_attn, cos, sin, cache, i, record)
            record(i, attention_residual=x)
            h = ops.rms_norm(x, layer.post_attention_layernorm, c.rms_norm_eps)
            record(i, post_attention_layernorm=h)
            if isinstance(layer.mlp, MoEWeights):
                y = self.moe_block(h, layer.mlp, i, trace, ids, positions, record)
            else:
                y = self.ops.swiglu(self.activations(h), layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
            record(i, mlp=y)
            x = x + y
            record(i, output=x)
        cache.length = start + T

        if last_only:
            x = x[-1:]
        x = ops.rms_norm(x, w.norm, c.rms_norm_eps)
        record(None, norm=x)
        logits = self.ops.linear(self.activations(x), w.lm_head)                      # [T, V]
        record(None, logits=logits)
        return logits

    def self_attention(self, x, a: AttentionWeights, cos, sin, cache: KVCache, i: int,
                       record: Callable = _no_record) -> np.ndarray:
        """GQA attention with QK-Norm before RoPE; new keys/values go into the cache.  x: [T, H] -> [T, H]"""
        c = self.config
        T, D = x.shape[0], c.head_dim
        x = self.activations(x)
        q, k, v = self.ops.linears(x, (a.q_proj, a.k_proj, a.v_proj))
        q = q.reshape(T, c.num_attention_heads, D)
        k, v = k.reshape(T, c.num_key_value_heads, D), v.reshape(T, c.num_key_value_heads, D)
        record(i, q_proj=q, k_proj=k, v_proj=v)
        # QK-Norm: one RMSNorm over head_dim shared by all heads, then rotate each head
        q, k = ops.rms_norm(q, a.q_norm, c.rms_norm_eps), ops.rms_norm(k, a.k_norm, c.rms_norm_eps)
        record(i, q_norm=q, k_norm=k)
        q, k = ops.apply_rope(q, cos, sin), ops.apply_rope(k, cos, sin)
        record(i, q_rope=q, k_rope=k)
        start = cache.length
        cache.store(i, start, k, v)
        out = self.ops.attention(q, cache.k[i], cache.v[i], start)     # the whole capacity: [T, NH, D]
        record(i, attention=out)
        out = self.ops.linear(self.activations(out.reshape(T, c.num_attention_heads * D)), a.o_proj)
        record(i, o_proj=out)
        return out

    def moe_block(self, x, m: MoEWeights, i: int, trace, ids, positions,
                  record: Callable = _no_record) -> np.ndarray:
        """Route each token to its top-k experts and mix their outputs.  x: [T, H] -> [T, H]"""
        c = self.config
        top_k, drop = c.num_experts_per_tok, set()
        for o in self.routing_overrides:
            top_k = o.top_k or top_k
            drop |= set(o.drop.get(i, ()))
            if o.inputs is not None:
                o.inputs[i] = x if i not in o.inputs else np.concatenate([o.inputs[i], x])
        xin = self.activations(x)
        logits = ops.linear(xin, m.gate)                                               # [T, E]
        probs, experts, weights = ops.router(logits, top_k, c.norm_topk_prob, drop=sorted(drop))
        for o in self.routing_overrides:
            if o.weights is not None:
                weights = np.asarray(o.weights(i, probs, experts, weights), dtype=np.float32)
        if trace is not None:
            trace.record(RouterRecord(i, positions, ids.copy(), logits, probs, experts, weights))
        record(i, router_logits=logits, router_probs=probs, experts=experts, expert_weights=weights)
        if i in self.offloaded:
            return self.offloaded[i].run(self.ops.moe_experts, xin, experts, weights)
        return self.ops.moe_experts(xin, experts, weights, m.gate_proj, m.up_proj, m.down_proj)

    def activations(self, x: np.ndarray) -> np.ndarray:
        """The input of a matrix product at the model's matmul_precision: x itself ("fp32"), or x rounded to
        bf16, as its bits ("bf16"; the ops take uint16 activations as bf16)."""
        return float32_to_bf16(x) if self.matmul_precision == "bf16" else x

    @contextmanager
    def routing(self, top_k: int | None = None, drop: dict | None = None, weights: Callable | None = None,
                inputs: dict | None = None):
        """Change the routers of the MoE layers inside a `with` block (see `RoutingOverride`):
            top_k    experts per token (the innermost block that sets it wins)
            drop     {layer: experts}: never chosen; nested blocks drop the union
            weights  f(layer, probs, experts, weights) -> new weights [T, K]; nested ones apply outermost first
            inputs   a dict that receives layer -> MoE input x [T, H] (for the layer walk-through)
        The block's override is removed on leaving it, so the model is exactly as before."""
        c = self.config
        override = RoutingOverride(top_k, dict(drop or {}), weights, inputs)
        active = self.routing_overrides + [override]
        k = next((o.top_k for o in reversed(active) if o.top_k), c.num_experts_per_tok)
        if not 1 <= k <= max(c.num_experts, 1):
            raise ValueError(f"top_k={k}: expected 1..{c.num_experts} (the number of experts)")
        for layer in {layer for o in active for layer in o.drop}:
            if layer not in c.moe_layers:
                raise ValueError(f"drop: layer {layer} is not a MoE layer (MoE layers: {c.moe_layers})")
            dropped = {int(e) for o in active for e in o.drop.get(layer, ())}
            if not dropped <= set(range(c.num_experts)):
                raise ValueError(f"drop: layer {layer} has experts 0..{c.num_experts - 1}, got {sorted(dropped)}")
            if c.num_experts - len(dropped) < k:
                raise ValueError(f"layer {layer}: dropping {len(dropped)} of {c.num_experts} experts leaves "
                                 f"fewer than top_k={k}")
        self.routing_overrides.append(override)
        try:
            yield self
        finally:
            self.routing_overrides.remove(override)

    # --- conveniences ----------------------------------------------------------------------------

    def logits(self, ids) -> np.ndarray:
        """Logits of a whole sequence in one forward pass.  ids: [T] -> [T, V] float32"""
        return self.forward(ids)

    def trace(self, ids) -> tuple[np.ndarray, RoutingTrace]:
        """Logits and the routing trace of one forward pass."""
        tr = RoutingTrace()
        return self.forward(ids, trace=tr), tr

    def generate(self, messages, **options):
        """Chat generation with thinking modes and a thinking budget: see `miniqwen3.generate.generate`."""
        from .generate import generate
        return generate(self, messages, **options)

    def _check_ids(self, ids) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"ids must be a non-empty 1-D sequence of token ids, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= self.config.vocab_size)
        if bad.any():
            raise ValueError(f"token id {int(arr[bad][0])} is outside the vocabulary 0..{self.config.vocab_size - 1}")
        return arr.astype(np.int64)

    def __repr__(self):
        c = self.config
        return (f"Model({c.model_type}, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                f"backend={self.backend!r}, matmul_precision={self.matmul_precision!r}, path={str(self.path)!r})")
