"""Plain-NumPy reference ops of Qwen3: the readable version, and the oracle of every Numba kernel.

All activations are float32. Weights may be bf16 (uint16 bits), fp16 or fp32; `as_float32` widens them
where they are used. Shape letters: see `miniqwen3.config`.
"""
from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from .config import RopeScaling
from .quants import dequantize_q8_0
from .weights import as_float32, float32_to_bf16


# --- basic layers --------------------------------------------------------------------------------

def linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T, no bias.  x: [T, IN] fp32, or bf16 bits (uint16; bf16 products, `Model.matmul_precision`: the
    product of two bf16 values is exact in fp32, so widening both and multiplying in fp32 is that arithmetic),
    w: [OUT, IN] (an array, or a `quant.Q8Weight`) -> [T, OUT]"""
    with blas_threads_for(x.shape[0] * w.shape[0] * w.shape[1]):
        return as_float32(x) @ as_float32(w).T


def linears(x: np.ndarray, weights) -> list[np.ndarray]:
    """[x @ w.T for w in weights]: one input, several weights (a layer's q_proj, k_proj and v_proj, which the
    Numba backend reads in one go)."""
    return [linear(x, w) for w in weights]


# A BLAS call shares its work among its threads and waits for the last one. When another process keeps a core
# busy, that thread waits for a scheduler time slice, on every call: the tiny model's 200-token forward pass
# took 324 ms with 2 OpenBLAS threads against 100 ms with 1 while another job ran (best of 5, 2 cores). So a
# call below BLAS_SERIAL_WORK multiply-adds (a few ms on one core) runs on one BLAS thread; larger ones use
# them all, where waiting for a slice costs little next to the work. OPENBLAS_NUM_THREADS still caps both.
BLAS_SERIAL_WORK = 2**26
_blas_libraries = None


@contextlib.contextmanager
def blas_threads_for(work: int):
    """One BLAS thread for the calls inside when their work (multiply-adds) is below BLAS_SERIAL_WORK."""
    global _blas_libraries
    if work >= BLAS_SERIAL_WORK:
        yield
        return
    if _blas_libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas_libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        except ImportError:             # threadpoolctl is a dependency; without it, BLAS keeps its threads
            _blas_libraries = []
    threads = [lib.num_threads for lib in _blas_libraries]
    for lib in _blas_libraries:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(_blas_libraries, threads):
            lib.set_num_threads(n)


def serial_blas(f):
    """f with every BLAS call inside it on one thread: for code that multiplies small matrices many times (the
    router lab of `balance`), where each call is far below BLAS_SERIAL_WORK."""
    @functools.wraps(f)
    def on_one_thread(*args, **kwargs):
        with blas_threads_for(0):
            return f(*args, **kwargs)
    return on_one_thread


def embed(ids: np.ndarray, embed_tokens: np.ndarray) -> np.ndarray:
    """Rows of the embedding table.  ids: [T] -> [T, H]"""
    return as_float32(embed_tokens[ids])


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """weight * x / sqrt(mean(x^2) + eps) over the last axis, in fp32 (no bias, no 1 + w).
    x: [..., N], weight: [N]"""
    variance = np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1]   # np.mean's sum, without its overhead
    return weight * (x / np.sqrt(variance + np.float32(eps)))


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x)"""
    return x / (np.float32(1.0) + np.exp(-x))


def swiglu(x: np.ndarray, gate_proj: np.ndarray, up_proj: np.ndarray, down_proj: np.ndarray) -> np.ndarray:
    """The SwiGLU MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).  x: [T, H] fp32, or bf16 bits (bf16
    products: the hidden activations are rounded to bf16 too, as every product's input is) -> [T, H] fp32"""
    h = silu(linear(x, gate_proj)) * linear(x, up_proj)
    return linear(float32_to_bf16(h) if x.dtype == np.uint16 else h, down_proj)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


# --- RoPE ----------------------------------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """inv_freq_i = 1 / theta^(2i / D) for i in 0..D/2-1.  -> [D/2]"""
    return (1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)).astype(np.float32)


def yarn_correction_range(head_dim: int, theta: float, original_max: int, beta_fast: float = 32.0,
                          beta_slow: float = 1.0, truncate: bool = True) -> tuple[float, float]:
    """The frequency-pair indices (low, high) between which YaRN blends.
    corr_dim(n) = D * ln(L / (n * 2 pi)) / (2 ln(theta)): the pair that turns n times over L positions."""
    def corr_dim(n_rotations):
        return head_dim * math.log(original_max / (n_rotations * 2 * math.pi)) / (2 * math.log(theta))
    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, head_dim - 1)


def yarn_ramp(head_dim: int, low: float, high: float) -> np.ndarray:
    """0 for pairs below `low` (keep their frequency), 1 above `high` (interpolate), linear between. -> [D/2]"""
    if low == high:
        high += 0.001
    return np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)


def yarn_attention_factor(factor: float, mscale: float | None = None, mscale_all_dim: float | None = None) -> float:
    """0.1 * ln(factor) + 1 (scales cos and sin); the mscale ratio form when both mscales are given."""
    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    if mscale and mscale_all_dim:
        return get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
    return get_mscale(factor)


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> tuple[np.ndarray, float]:
    """inv_freq [D/2] and the attention factor that multiplies cos and sin (1 without scaling).

    YaRN: inv_freq = inv_freq / factor * ramp + inv_freq * (1 - ramp): high-frequency pairs (turning many
    times within the original context) keep their frequency, low-frequency pairs are interpolated."""
    inv_freq = rope_inv_freq(head_dim, theta)
    if scaling.rope_type == "default":
        return inv_freq, 1.0
    low, high = yarn_correction_range(head_dim, theta, scaling.original_max_position_embeddings,
                                      scaling.beta_fast, scaling.beta_slow, scaling.truncate)
    ramp = yarn_ramp(head_dim, low, high)
    inv_freq = (inv_freq / np.float32(scaling.factor)) * ramp + inv_freq * (1 - ramp)
    attention_factor = scaling.attention_factor
    if attention_factor is None:
        attention_factor = yarn_attention_factor(scaling.factor, scaling.mscale, scaling.mscale_all_dim)
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_cos_sin(positions: np.ndarray, inv_freq: np.ndarray, attention_factor: float = 1.0):
    """cos and sin of position * inv_freq, duplicated to the full head: emb = concat(freqs, freqs).
    positions: [T] -> cos, sin: [T, D]"""
    freqs = positions.astype(np.float32)[:, None] * inv_freq[None, :]   # [T, D/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                        # [T, D]
    return (np.cos(emb) * np.float32(attention_factor)).astype(np.float32), \
           (np.sin(emb) * np.float32(attention_factor)).astype(np.float32)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """concat(-x[D/2:], x[:D/2]) on the last axis (the non-interleaved layout Qwen3 uses)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x' = x * cos + rotate_half(x) * sin.  x: [T, N, D], cos/sin: [T, D] -> [T, N, D]"""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def rope_rotate(x: np.ndarray, positions, head_dim: int, theta: float,
                scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    """One head vector rotated to each position, with the functions above.  x: [D] -> [T, D]"""
    inv_freq, factor = rope_frequencies(head_dim, theta, scaling)
    cos, sin = rope_cos_sin(np.asarray(positions), inv_freq, factor)
    x = np.broadcast_to(np.asarray(x, np.float32), (len(cos), head_dim))[:, None, :]
    return apply_rope(x, cos, sin)[:, 0, :]


def rope_scores(q: np.ndarray, k: np.ndarray, positions, head_dim: int, theta: float) -> np.ndarray:
    """scores[m, n] = rope(q, m) . rope(k, n): it depends on m - n only (a Toeplitz matrix).  q, k: [D] -> [T, T]"""
    return rope_rotate(q, positions, head_dim, theta) @ rope_rotate(k, positions, head_dim, theta).T


def rope_scores_at_distance(q: np.ndarray, k: np.ndarray, distances, head_dim: int, theta: float,
                            scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    """rope(q, d) . rope(k, 0) for every pair (q_n, k_n) and every distance d: the score of a query d positions
    after its key (the same at any absolute position). With YaRN both vectors carry its attention factor.
    q, k: [N, D], distances: [T] -> [N, T]"""
    inv_freq, factor = rope_frequencies(head_dim, theta, scaling)
    cos, sin = rope_cos_sin(np.asarray(distances), inv_freq, factor)                   # [T, D]
    q_at_d = apply_rope(np.broadcast_to(np.asarray(q, np.float32), (len(cos),) + np.shape(q)), cos, sin)  # [T, N, D]
    cos0, sin0 = rope_cos_sin(np.zeros(1), inv_freq, factor)
    k_at_0 = apply_rope(np.asarray(k, np.float32)[None], cos0, sin0)[0]                # [N, D]
    return np.einsum("tnd,nd->nt", q_at_d, k_at_0)


def rope_decay(head_dim: int, theta: float, distances) -> np.ndarray:
    """The score of q = k = all ones at relative distance d, over its value at d = 0:
    sum_i cos(d * inv_freq_i) / (D/2). RoFormer's long-term decay, in its simplest form: it holds for aligned q and k
    (on average for q = k), not for unrelated ones (`rope_scores_at_distance`).  distances: [T] -> [T]"""
    inv_freq = rope_inv_freq(head_dim, theta).astype(np.float64)
    return np.cos(np.asarray(distances, np.float64)[:, None] * inv_freq[None, :]).mean(axis=1)


# --- attention -----------------------------------------------------------------------------------

def kv_as_float32(a: np.ndarray) -> np.ndarray:
    """Keys or values as a KV cache holds them, as fp32: fp32, bf16 bits (uint16), or uint8 [..., D / 32 * 34]
    rows of Q8_0 blocks -> [..., D]."""
    if a.dtype == np.uint8:
        return dequantize_q8_0(np.ascontiguousarray(a).reshape(-1, 34)).reshape(*a.shape[:-1], a.shape[-1] // 34 * 32)
    return as_float32(a)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int) -> np.ndarray:
    """Causal grouped-query attention over the whole score matrix.

    q: [T, NH, D] at positions q_start..q_start+T-1; k, v: [NKV, S, D], KV heads first as a KV cache holds
    them, fp32 or bf16 bits (a bf16 KV cache), or uint8 [NKV, S, D / 32 * 34] rows of Q8_0 blocks (a q8_0 KV
    cache), for positions 0..S-1; S >= q_start + T (a cache's whole capacity may be passed: positions from
    q_start + T on are not read). Query head h reads KV head h // (NH // NKV).
    scores = q k^T / sqrt(D) with keys after the query masked, softmax in fp32, times v.  -> [T, NH, D]"""
    T, NH, D = q.shape
    S = q_start + T
    k, v = kv_as_float32(k[:, :S]), kv_as_float32(v[:, :S])
    kv_head = np.arange(NH) // (NH // k.shape[0])
    scores = np.einsum("thd,hsd->hts", q, k[kv_head]) * np.float32(D ** -0.5)
    future = np.arange(S)[None, :] > (q_start + np.arange(T))[:, None]    # [T, S]
    scores = np.where(future[None], np.float32(-np.inf), scores)
    probs = softmax(scores, axis=-1)                                      # [NH, T, S]
    return np.einsum("hts,hsd->thd", probs, v[kv_head]).astype(np.float32)


# --- mixture of experts --------------------------------------------------------------------------

def router(logits: np.ndarray, top_k: int, norm_topk_prob: bool, drop=None, selection_bias=None,
           scoring: str = "softmax"):
    """The Qwen3-MoE router, after its linear layer (`logits = x @ gate^T`): softmax over ALL experts in fp32,
    then the top-k. With norm_topk_prob the k chosen probabilities are renormalised to sum to 1.
    This is the only place in miniqwen3 where experts are selected; the interventions are arguments:
      drop:           experts that may not be chosen; their logits become -inf, so softmax renormalises over the
                      others (as if they were deleted from the checkpoint)
      selection_bias: [E] added to the scores to choose the top-k only, not to weight them
                      (DeepSeek-V3's auxiliary-loss-free balancing; Qwen3 has none)
      scoring:        "softmax" (Qwen3) or "sigmoid" (DeepSeek-V3: each expert's affinity s = sigmoid(logit) on its
                      own, not a distribution over experts; the weights are the chosen s over their sum)
    float64 logits stay float64 (the router lab's gradient checks); anything else is computed in fp32.
    logits: [T, E] -> probs (the scores) [T, E], experts [T, K] (highest first, ties to the lower index),
    weights [T, K]"""
    if scoring not in ("softmax", "sigmoid"):
        raise ValueError(f"router scoring {scoring!r}: expected 'softmax' or 'sigmoid'")
    logits = np.asarray(logits)
    logits = logits.astype(np.promote_types(logits.dtype, np.float32))
    if drop is not None and len(drop):
        logits = logits.copy()
        logits[:, list(drop)] = -np.inf
    probs = softmax(logits, axis=-1) if scoring == "softmax" else np.exp(-np.logaddexp(0, -logits))   # sigmoid
    score = probs if selection_bias is None else probs + selection_bias
    if drop is not None and len(drop) and selection_bias is not None:
        score[:, list(drop)] = -np.inf                                 # a bias cannot bring a dropped expert back
    experts = np.argsort(-score, axis=-1, kind="stable")[:, :top_k]
    weights = np.take_along_axis(probs, experts, axis=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return probs, experts, weights.astype(probs.dtype)


def moe_experts(x: np.ndarray, experts: np.ndarray, weights: np.ndarray, gate_proj: np.ndarray,
                up_proj: np.ndarray, down_proj: np.ndarray) -> np.ndarray:
    """Weighted sum of the chosen experts' SwiGLU outputs, one expert at a time.
    x: [T, H] fp32 or bf16 bits (`swiglu`), experts/weights: [T, K], gate_proj/up_proj: [E, I, H],
    down_proj: [E, H, I] -> [T, H] fp32"""
    out = np.zeros(x.shape, np.float32)
    for e in np.unique(experts):
        token, slot = np.nonzero(experts == e)                          # who chose expert e, in which slot
        y = swiglu(x[token], gate_proj[e], up_proj[e], down_proj[e])  # [n, H]
        out[token] += weights[token, slot][:, None] * y                # a token picks e at most once
    return out


# --- reference algorithms, shown for comparison (the model does not use them) ----------------------
# The notebooks set these beside the versions above and the Numba kernels: the same results, computed the way
# other codebases do or the naive way, so that what the real version saves can be seen and measured.

def moe_token_by_token(x, experts, weights, gate_proj, up_proj, down_proj) -> np.ndarray:
    """The MoE block the naive way: every token runs its own k experts, so an expert's weights are read once
    per token that chose it.  Same arguments and result as `moe_experts`."""
    out = np.zeros_like(x)
    for t in range(len(x)):
        for e, w in zip(experts[t], weights[t]):
            out[t] += w * swiglu(x[t:t + 1], gate_proj[e], up_proj[e], down_proj[e])[0]
    return out


def online_softmax(scores: np.ndarray, values: np.ndarray, block: int):
    """softmax(scores) @ values for one query, reading `block` keys at a time and never holding all the
    weights (what `kernels.attention` does; `attention` above holds the full score matrix): keep the running max
    m, the sum l of exp(s - m) and acc = sum exp(s - m) v; when a block raises the max, rescale l and acc by
    exp(m_old - m_new). Returns the output and the (m, l) after each block.
    scores: [S], values: [S, D] -> [D], list of (m, l)"""
    m, l = -np.inf, 0.0
    acc = np.zeros(values.shape[1])
    history = []
    for s0 in range(0, len(scores), block):
        s, v = scores[s0:s0 + block], values[s0:s0 + block]
        m_new = max(m, float(s.max()))
        p = np.exp(s - m_new)
        rescale = math.exp(m - m_new) if np.isfinite(m) else 0.0
        l = l * rescale + p.sum()
        acc = acc * rescale + p @ v
        m = m_new
        history.append((m, l))
    return acc / l, history


def apply_rope_interleaved(x: np.ndarray, positions, inv_freq: np.ndarray) -> np.ndarray:
    """RoPE in the interleaved layout (GPT-J, Meta's original Llama): pairs (2i, 2i+1) rotate by
    position * inv_freq_i; Qwen3 uses rotate_half (`apply_rope`).  x: [T, D] -> [T, D]"""
    a = np.asarray(positions, np.float32)[:, None] * inv_freq[None, :]         # [T, D/2]
    cos, sin = np.cos(a), np.sin(a)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def interleaved_order(head_dim: int) -> np.ndarray:
    """The permutation that takes a rotate_half head to the interleaved layout: [0, D/2, 1, D/2+1, ...].
    x_interleaved = x[order]; the two layouts rotate the same pairs and agree after the permutation
    (which is why a checkpoint converted between them permutes the rows of q_proj and k_proj).  -> [D]"""
    half = head_dim // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).ravel()
