"""One config dataclass for dense Qwen3 (`qwen3`) and Qwen3-MoE (`qwen3_moe`), read from config.json.

Shape legend used across the package (one meaning per letter):
    T tokens (positions of the current call), S cached positions (keys), H hidden_size, V vocab_size,
    NH num_attention_heads, NKV num_key_value_heads, D head_dim, E num_experts, K num_experts_per_tok,
    I intermediate_size (dense MLP) or moe_intermediate_size (one expert), P (token, slot) pairs = T * K,
    L layers (the MoE layers traced), N sequences, G groups of sequences (domains, languages),
    F features and O outputs (the router lab's toy task), IN and OUT the two axes of a weight matrix.

Both spellings of the keys are accepted: real Qwen checkpoints (transformers 4.51) write
`num_experts`, `rope_theta`, `rope_scaling`; transformers 5.x writes `num_local_experts` and
`rope_parameters: {rope_theta, rope_type, ...}`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path


class ConfigError(ValueError):
    """A config.json that miniqwen3 cannot run: names the file and the field."""


MODEL_TYPES = ("qwen3", "qwen3_moe")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE scaling. Only "default" (none) and "yarn" occur in Qwen3 checkpoints."""
    rope_type: str = "default"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True


@dataclass(frozen=True)
class Qwen3Config:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    # MoE (qwen3_moe only; num_experts == 0 means dense)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    router_aux_loss_coef: float = 0.001
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    torch_dtype: str = "bfloat16"

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, i: int) -> bool:
        """Layer i has a MoE block iff not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0."""
        return (self.num_experts > 0 and i not in self.mlp_only_layers
                and (i + 1) % self.decoder_sparse_step == 0)

    @property
    def moe_layers(self) -> list[int]:
        """The indices of the layers with a MoE block."""
        return [i for i in range(self.num_hidden_layers) if self.is_sparse_layer(i)]

    @property
    def layer_types(self) -> list[str]:
        return ["moe" if self.is_sparse_layer(i) else "dense" for i in range(self.num_hidden_layers)]

    # --- reading -------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path) -> "Qwen3Config":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no config.json here")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "Qwen3Config":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        # Composite configs (e.g. a text_config inside) are not Qwen3 text models.
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"{source}: model_type {model_type!r} is not supported "
                              f"(expected one of {', '.join(MODEL_TYPES)})")
        moe = model_type == "qwen3_moe"

        def need(key, kind=int):
            if key not in raw or raw[key] is None:
                raise ConfigError(f"{source}: required field {key!r} is missing")
            return _typed(source, key, raw[key], kind)

        def opt(key, default, kind):
            return default if raw.get(key) is None else _typed(source, key, raw[key], kind)

        hidden = need("hidden_size")
        heads = need("num_attention_heads")
        # head_dim comes from the config; only if absent fall back to hidden / heads as transformers does.
        head_dim = opt("head_dim", hidden // heads if heads else 0, int)
        theta, scaling = _read_rope(raw, source)
        num_experts = 0
        if moe:
            for a, b in (("num_experts", "num_local_experts"),):
                if a in raw and b in raw and raw[a] != raw[b]:
                    raise ConfigError(f"{source}: {a}={raw[a]} contradicts {b}={raw[b]}")
            key = "num_experts" if "num_experts" in raw else "num_local_experts"
            num_experts = need(key)
        if scaling.rope_type == "yarn" and scaling.original_max_position_embeddings is None:
            # As transformers does: without it, the pre-YaRN context is max_position_embeddings.
            scaling = replace(scaling, original_max_position_embeddings=opt("max_position_embeddings", 40960, int))
        eos = raw.get("eos_token_id")
        cfg = cls(
            model_type=model_type,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=opt("num_key_value_heads", heads, int),
            head_dim=head_dim,
            rms_norm_eps=opt("rms_norm_eps", 1e-6, float),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=opt("max_position_embeddings", 40960, int),
            tie_word_embeddings=opt("tie_word_embeddings", False, bool),
            num_experts=num_experts,
            num_experts_per_tok=need("num_experts_per_tok") if moe else 0,
            moe_intermediate_size=need("moe_intermediate_size") if moe else 0,
            norm_topk_prob=opt("norm_topk_prob", False if moe else True, bool),
            decoder_sparse_step=opt("decoder_sparse_step", 1, int),
            mlp_only_layers=tuple(_typed(source, "mlp_only_layers", i, int)
                                  for i in (raw.get("mlp_only_layers") or [])),
            router_aux_loss_coef=opt("router_aux_loss_coef", 0.001, float),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"),
        )
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        """Contradictory or impossible values: a ConfigError naming the field."""
        def bad(fieldname, why):
            raise ConfigError(f"{source}: {fieldname}={getattr(self, fieldname)!r} {why}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            if getattr(self, name) <= 0:
                bad(name, "must be positive")
        if self.num_attention_heads % self.num_key_value_heads:
            bad("num_key_value_heads", f"must divide num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            bad("head_dim", "must be even for RoPE")
        if self.rms_norm_eps <= 0:
            bad("rms_norm_eps", "must be positive")
        if self.rope_theta <= 0:
            bad("rope_theta", "must be positive")
        if self.model_type == "qwen3_moe":
            if self.num_experts <= 0:
                bad("num_experts", "must be positive for qwen3_moe")
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                bad("num_experts_per_tok", f"must be in 1..num_experts={self.num_experts}")
            if self.moe_intermediate_size <= 0:
                bad("moe_intermediate_size", "must be positive")
            if self.decoder_sparse_step <= 0:
                bad("decoder_sparse_step", "must be positive")
            for i in self.mlp_only_layers:
                if not 0 <= i < self.num_hidden_layers:
                    bad("mlp_only_layers", f"names layer {i}, outside 0..{self.num_hidden_layers - 1}")
        s = self.rope_scaling
        if s.rope_type not in ("default", "yarn"):
            raise ConfigError(f"{source}: rope type {s.rope_type!r} is not supported (Qwen3 uses 'default' or 'yarn')")
        if s.rope_type == "yarn":
            if s.factor <= 1.0:
                raise ConfigError(f"{source}: yarn factor={s.factor} must be > 1")
            if not s.original_max_position_embeddings or s.original_max_position_embeddings <= 0:
                raise ConfigError(f"{source}: yarn original_max_position_embeddings must be positive")

    # --- sizes ---------------------------------------------------------------------------------

    def parameter_counts(self) -> dict:
        """Parameters: total, and active per token (only K of E experts run in a MoE layer)."""
        H, D, NH, NKV = self.hidden_size, self.head_dim, self.num_attention_heads, self.num_key_value_heads
        embed = self.vocab_size * H
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * H
        attn = H * NH * D + 2 * H * NKV * D + NH * D * H + 2 * D   # q,k,v,o + q_norm,k_norm
        norms = 2 * H
        dense_mlp = 3 * H * self.intermediate_size
        expert = 3 * H * self.moe_intermediate_size
        router = self.num_experts * H
        total = embed + lm_head + H  # + final norm
        active = total
        for i in range(self.num_hidden_layers):
            total += attn + norms
            active += attn + norms
            if self.is_sparse_layer(i):
                total += router + self.num_experts * expert
                active += router + self.num_experts_per_tok * expert
            else:
                total += dense_mlp
                active += dense_mlp
        return {"total": total, "active": active, "embedding": embed, "lm_head": lm_head}

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 4) -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * bytes_per_value


def shipped_configs() -> dict:
    """The real Qwen3 configs shipped in miniqwen3/configs, by name, smallest first."""
    configs = {p.stem: Qwen3Config.from_file(p) for p in (Path(__file__).parent / "configs").glob("*.json")}
    return dict(sorted(configs.items(), key=lambda kv: kv[1].parameter_counts()["total"]))


def _typed(source, key, value, kind):
    """Check a JSON value's type: ints must be ints (not 2.5, not "2"), floats may be ints, bools bools."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    raise ConfigError(f"{source}: field {key!r} should be {kind.__name__}, got {value!r}")


def _read_rope(raw: dict, source: str) -> tuple[float, RopeScaling]:
    """rope_theta and scaling from either `rope_theta` + `rope_scaling` (4.x) or `rope_parameters` (5.x)."""
    params = raw.get("rope_parameters")
    scaling = raw.get("rope_scaling")
    theta = raw.get("rope_theta")
    if params is not None:
        if not isinstance(params, dict):
            raise ConfigError(f"{source}: rope_parameters should be an object, got {params!r}")
        p_theta = params.get("rope_theta")
        if theta is not None and p_theta is not None and float(theta) != float(p_theta):
            raise ConfigError(f"{source}: rope_theta={theta} contradicts rope_parameters.rope_theta={p_theta}")
        theta = p_theta if p_theta is not None else theta
        if scaling is None and params.get("rope_type", params.get("type", "default")) != "default":
            scaling = params
    if theta is None:
        theta = 10000.0  # transformers' class default; real Qwen3 configs always name theta (1e6)
    theta = _typed(source, "rope_theta", theta, float)
    if scaling is None:
        return theta, RopeScaling()
    if not isinstance(scaling, dict):
        raise ConfigError(f"{source}: rope_scaling should be an object or null, got {scaling!r}")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, RopeScaling()
    known = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings", "beta_fast",
             "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"}
    extra = set(scaling) - known
    if extra:
        raise ConfigError(f"{source}: rope scaling field(s) {sorted(extra)} are not supported")
    orig = scaling.get("original_max_position_embeddings")
    return theta, RopeScaling(
        rope_type=rope_type,
        factor=_typed(source, "rope_scaling.factor", scaling.get("factor", 1.0), float),
        original_max_position_embeddings=None if orig is None else _typed(
            source, "rope_scaling.original_max_position_embeddings", orig, int),
        beta_fast=_typed(source, "rope_scaling.beta_fast", scaling.get("beta_fast") or 32.0, float),
        beta_slow=_typed(source, "rope_scaling.beta_slow", scaling.get("beta_slow") or 1.0, float),
        attention_factor=None if scaling.get("attention_factor") is None else _typed(
            source, "rope_scaling.attention_factor", scaling["attention_factor"], float),
        mscale=scaling.get("mscale"), mscale_all_dim=scaling.get("mscale_all_dim"),
        truncate=bool(scaling.get("truncate", True)),
    )
