"""What a Qwen3 config costs, from its numbers alone: parameters split by part (stored, and active per token), the
KV cache per token (GQA against full multi-head attention), and the bytes one decoded token reads.

Used by notebook 06; tested against the totals Qwen publishes on its model cards and against the arrays the model
allocates. Shape letters: see `miniqwen3.config` (L layers here means all decoder layers).
"""
from __future__ import annotations

from .config import Qwen3Config


def parameter_split(c: Qwen3Config) -> dict:
    """Parameters by part: name -> {"total": stored, "active": used for one token}. Only the experts differ:
    a MoE layer stores E experts and runs K of them. Per layer, attention is q, k, v, o and the two QK-Norm
    weights [D]; each SwiGLU (dense MLP or one expert) is gate, up, down: 3 * H * I; the router is [E, H]; the norms
    are input_layernorm and post_attention_layernorm [H] per layer plus the final norm.
    The embedding counts as active (it is one parameter set per token, though a token reads one row of it; see
    `decode_bytes_per_token`); a tied output head is the embedding itself and counts 0 here."""
    H, D, NH, NKV, V = c.hidden_size, c.head_dim, c.num_attention_heads, c.num_key_value_heads, c.vocab_size
    moe, dense = len(c.moe_layers), c.num_hidden_layers - len(c.moe_layers)
    attention = c.num_hidden_layers * (H * NH * D + 2 * H * NKV * D + NH * D * H + 2 * D)
    expert = 3 * H * c.moe_intermediate_size

    def same(n):
        return {"total": n, "active": n}
    return {
        "embedding": same(V * H),
        "output head": same(0 if c.tie_word_embeddings else V * H),
        "attention": same(attention),
        "norms": same(2 * H * c.num_hidden_layers + H),
        "dense MLP": same(dense * 3 * H * c.intermediate_size),
        "router": same(moe * c.num_experts * H),
        "experts": {"total": moe * c.num_experts * expert, "active": moe * c.num_experts_per_tok * expert},
    }


def totals(split: dict) -> dict:
    """Sums of a `parameter_split`: total, active, and both without the embedding and output head (what Qwen's
    model cards call non-embedding parameters)."""
    out = {kind: sum(part[kind] for part in split.values()) for kind in ("total", "active")}
    tables = split["embedding"]["total"] + split["output head"]["total"]
    out.update({f"{kind} non-embedding": out[kind] - tables for kind in ("total", "active")})
    return out


def kv_cache_bytes_per_token(c: Qwen3Config, bytes_per_value: float = 2, kv_heads: int | None = None) -> float:
    """Keys and values cached per token over all layers: 2 * L * NKV * D * bytes. kv_heads=NH gives the cache
    the same model would need with full multi-head attention (one KV head per query head)."""
    n = c.num_key_value_heads if kv_heads is None else kv_heads
    return 2 * c.num_hidden_layers * n * c.head_dim * bytes_per_value


def decode_bytes_per_token(c: Qwen3Config, bytes_per_weight: float = 2, context: int = 0,
                           bytes_per_value: float = 2) -> dict:
    """Bytes one decoded token reads at the least: every active weight once (one row of the embedding table,
    the whole output head, tied or not), plus the cached keys and values of `context` earlier tokens.
    -> {"weights": bytes, "kv cache": bytes, "total": bytes}"""
    split = parameter_split(c)
    active = totals(split)["active"]
    table = split["embedding"]["total"]
    weights = active - table + c.hidden_size + (table if c.tie_word_embeddings else 0)
    kv = context * kv_cache_bytes_per_token(c, bytes_per_value)
    return {"weights": weights * bytes_per_weight, "kv cache": kv, "total": weights * bytes_per_weight + kv}
