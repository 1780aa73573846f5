"""The `miniqwen3` command.

    miniqwen3 generate [MODEL] "prompt" [--think/--no-think] [--budget B] [sampling flags]
    miniqwen3 chat [MODEL]                     interactive multi-turn chat; /think, /no_think, /budget N
    miniqwen3 info MODEL                       architecture, layer types, parameters, bytes, memory
    miniqwen3 route [MODEL]                    one forward pass with the routing trace: expert load per layer
    miniqwen3 init-random CONFIG OUT           a checkpoint with random weights for a config (demos, benchmarks)

MODEL is a checkpoint folder, a .gguf file (or a folder of one GGUF model, split parts included) or a Hugging Face
repo id; a GGUF repo takes the quantization as --quant Q4_K_M or REPO:Q4_K_M. Left out, the embedded tiny model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .chat import ChatError
from .generate import model_tokenizer
from .config import ConfigError, Qwen3Config
from .hub import ModelNotFoundError, resolve
from .tokenizer import TokenizerError
from .weights import CheckpointError, Checkpoint, random_tensors, save_checkpoint

PRESETS = Path(__file__).parent / "configs"


def preset_config(name: str) -> Path | None:
    """A shipped real-Qwen3 config.json by name ('Qwen3-30B-A3B' or 'Qwen/Qwen3-30B-A3B'), else None."""
    path = PRESETS / f"{str(name).split('/')[-1]}.json"
    return path if path.is_file() else None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def describe(config: Qwen3Config, disk_bytes: int | None = None, where: str = "") -> str:
    """The text `miniqwen3 info` prints."""
    c = config
    arch = "Qwen3MoeForCausalLM" if c.model_type == "qwen3_moe" else "Qwen3ForCausalLM"
    types = c.layer_types
    n_moe = types.count("moe")
    counts = c.parameter_counts()
    lines = [f"{arch} ({c.model_type}){'  ' + where if where else ''}",
             f"  layers        {c.num_hidden_layers}: {n_moe} MoE, {len(types) - n_moe} dense MLP"
             + (f"  [{_layer_pattern(types)}]" if n_moe and n_moe != len(types) else ""),
             f"  hidden        {c.hidden_size}, vocab {c.vocab_size}, "
             f"{'tied' if c.tie_word_embeddings else 'untied'} embeddings",
             f"  attention     {c.num_attention_heads} query heads, {c.num_key_value_heads} KV heads "
             f"(GQA {c.num_attention_heads // c.num_key_value_heads}:1), head_dim {c.head_dim}, QK-Norm",
             f"  rope          theta {c.rope_theta:g}"
             + (f", YaRN factor {c.rope_scaling.factor:g} from {c.rope_scaling.original_max_position_embeddings}"
                if c.rope_scaling.rope_type == "yarn" else "")]
    if c.is_moe:
        lines.append(f"  experts       {c.num_experts}, top-{c.num_experts_per_tok}, moe_intermediate "
                     f"{c.moe_intermediate_size}, norm_topk_prob {str(c.norm_topk_prob).lower()}")
    if len(types) - n_moe:
        lines.append(f"  dense MLP     intermediate {c.intermediate_size}")
    lines.append(f"  parameters    {_count(counts['total'])} total, {_count(counts['active'])} active per token"
                 f" ({_count(counts['embedding'])} in the embedding)")
    bytes_per = {"float32": 4, "float16": 2, "bfloat16": 2}.get(c.torch_dtype)
    if bytes_per is None:   # a GGUF's quantization: its mean bytes per weight, from its size on disk
        bytes_per = disk_bytes / counts["total"] if disk_bytes else 2
    weights = disk_bytes if disk_bytes is not None else counts["total"] * bytes_per
    kv = c.kv_cache_bytes_per_token(4)
    # decoding reads every active weight once, except the embedding: one row (a tied one is the lm_head too)
    read_per_token = counts["active"] - (0 if c.tie_word_embeddings else counts["embedding"])
    lines.append(f"  on disk       {_gb(disk_bytes) if disk_bytes is not None else 'not on this machine'}")
    lines.append(f"  memory        ~{_gb(weights)} weights as stored ({c.torch_dtype}) + KV cache "
                 f"{kv * 1024 / 1e6:.1f} MB per 1k tokens (fp32); "
                 f"{_gb(read_per_token * bytes_per)} of weights read per decoded token")
    return "\n".join(lines)


def _layer_pattern(types: list[str]) -> str:
    return "".join("M" if t == "moe" else "d" for t in types)


def cmd_info(args) -> int:
    from .gguf_file import GGUFFile, find_gguf
    gguf_path = find_gguf(args.model, args.quant)
    if gguf_path is not None:
        g = GGUFFile(gguf_path)
        print(describe(g.config(), g.nbytes(), where=str(g.path)))
        return 0
    try:
        folder = resolve(args.model)
    except ModelNotFoundError as e:
        preset = preset_config(args.model)
        if preset is None:
            raise
        print(describe(Qwen3Config.from_file(preset),
                       where=f"(the {preset.stem} config shipped with miniqwen3; its weights are not on this machine)"))
        return 0
    config = Qwen3Config.from_file(folder / "config.json")
    disk = Checkpoint(folder).nbytes() if any(folder.glob("*.safetensors")) else None
    print(describe(config, disk, where=str(folder)))
    return 0


def cmd_route(args) -> int:
    """One forward pass with the routing trace on: per MoE layer, how the tokens spread over the experts."""
    import numpy as np
    from .hub import load
    model = load(args.model, backend=args.backend, quant=args.quant, matmul_precision=args.matmul_precision)
    c = model.config
    if not c.is_moe:
        raise ConfigError(f"{model.path}: {c.model_type} has no MoE layers to trace")
    if args.expert_cache:
        model.offload_experts(args.expert_cache)
    if args.text is not None and model.tokenizer is not None:
        ids = model.tokenizer.encode(args.text)
    else:
        ids = np.random.default_rng(args.seed).integers(0, c.vocab_size, args.tokens)
    _, trace = model.trace(ids)
    E, K = c.num_experts, c.num_experts_per_tok
    print(f"{len(ids)} tokens through {len(trace.layers)} MoE layers ({E} experts, top-{K}); "
          f"at perfect balance every expert gets {1 / E:.2%} of the assignments")
    for i in trace.layers:
        r = trace.layer(i)
        load_ = trace.expert_load(i)
        top = np.argsort(-load_)[:5]
        print(f"  layer {i:2d}: {np.count_nonzero(load_)}/{E} experts used, max/mean load {load_.max() * E:.2f}, "
              f"top-1 weight {r.weights[:, 0].mean():.3f}; busiest: "
              + ", ".join(f"#{e} {load_[e]:.1%}" for e in top))
    r = trace.layer(trace.layers[0])
    print(f"  first tokens, layer {trace.layers[0]} choices: "
          + "  ".join(f"{int(t)}->{list(map(int, ex))}" for t, ex in zip(r.token_ids[:6], r.experts[:6])))
    return 0


def cmd_init_random(args) -> int:
    src = preset_config(args.config) or Path(args.config)
    raw = json.loads(Path(src).read_text()) if Path(src).is_file() else None
    if raw is None:
        raise ConfigError(f"{args.config}: neither a config.json nor one of the presets "
                          f"{sorted(p.stem for p in PRESETS.glob('*.json'))}")
    if args.layers:
        raw["num_hidden_layers"] = args.layers
    raw["torch_dtype"] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtype]
    config = Qwen3Config.from_dict(raw, source=str(src))
    out = Path(args.out)
    save_checkpoint(out, random_tensors(config, dtype=args.dtype, seed=args.seed),
                    max_shard_bytes=args.shard_mb * 2 ** 20 if args.shard_mb else None)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    print(f"wrote a random-weight {config.model_type} checkpoint ({args.dtype}) to {out}")
    return 0


# --- generation ----------------------------------------------------------------------------------

DIM, RESET = "\x1b[2m", "\x1b[0m"


class Printer:
    """Streams pieces to a terminal: thinking dimmed (or marked [thinking] ... [/thinking] when not a tty)."""

    def __init__(self, out, color: bool):
        self.out, self.color, self.channel = out, color, None

    def piece(self, text: str, channel: str) -> None:
        if channel != self.channel:
            self._close()
            self.channel = channel
            if channel == "thinking":
                self.out.write(DIM if self.color else "[thinking]")
        self.out.write(text)
        self.out.flush()

    def _close(self):
        if self.channel == "thinking":
            self.out.write(RESET if self.color else "[/thinking]\n")

    def end(self) -> None:
        self._close()
        self.channel = None
        self.out.write("\n")
        self.out.flush()


def stats_line(r, model) -> str:
    """think / no-think: whether the reply thought; soft switch: the model chose, hard: enable_thinking=False.
    The speeds name what ran them: the backend and the products (`Model.matmul_precision`, settled by "auto")."""
    budget = "" if r.switch == "hard" else (
        f", budget {'unlimited' if r.budget is None else r.budget}{' (tripped)' if r.budget_tripped else ''}")
    return (f"[{'think' if r.thinking_mode else 'no-think'} ({r.switch} switch): {r.prompt_tokens} prompt tokens, "
            f"{r.generated_tokens} generated, {r.thinking_tokens} thinking{budget}; "
            f"prefill {r.prefill_tokens_per_second:.1f} tok/s, decode {r.tokens_per_second:.1f} tok/s "
            f"({model.backend}, {model.matmul_precision} products); {r.finish_reason}]")


def sampling_options(args) -> dict:
    keys = ("temperature", "top_k", "top_p", "min_p", "presence_penalty")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def run_turn(model, messages, args, budget, printer, enable_thinking=None):
    from .generate import stream
    g = stream(model, messages, budget=budget, enable_thinking=enable_thinking, max_new_tokens=args.max_new_tokens,
               seed=args.seed, kv_cache=args.kv_cache, **sampling_options(args))
    for piece in g:
        printer.piece(piece.text, piece.channel)
    printer.end()
    result = g.result()
    print(stats_line(result, model), file=sys.stderr)
    return result


def load_model(args):
    from .hub import load
    model = load(args.model, backend=args.backend, quant=args.quant, matmul_precision=args.matmul_precision)
    if args.expert_cache:
        model.offload_experts(args.expert_cache)
    model_tokenizer(model)
    return model


def cmd_generate(args) -> int:
    if len(args.words) > 2:
        raise SystemExit("miniqwen3 generate: give [MODEL] \"prompt\" (quote the prompt)")
    args.model, prompt = (args.words if len(args.words) == 2 else (None, args.words[0]))
    model = load_model(args)
    run_turn(model, prompt, args, args.budget, Printer(sys.stdout, sys.stdout.isatty()), args.think)
    return 0


CHAT_HELP = """commands: /think or /no_think alone on a line: the next message carries that flag (a soft switch: the
flag is text the model reads and decides on; flags inside a message work too; --no-think is the hard switch) |
/budget N, /budget off | /reset | /quit"""


def cmd_chat(args) -> int:
    model = load_model(args)
    printer = Printer(sys.stdout, sys.stdout.isatty())
    messages, budget, carry = [], args.budget, ""
    print(f"miniqwen3 chat with {model.path}  ({CHAT_HELP})")
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line in ("/help", "/?"):
            print(CHAT_HELP)
        elif line in ("/think", "/no_think"):
            carry = line
            print(f"(the next message carries {line})")
        elif line.startswith("/budget"):
            value = line.removeprefix("/budget").strip()
            try:
                budget = None if value in ("off", "none", "unlimited") else int(value)
                if budget is not None and budget < 0:
                    raise ValueError
                print(f"(thinking budget: {'unlimited' if budget is None else budget})")
            except ValueError:
                print("(usage: /budget N with N >= 0, or /budget off)")
        elif line == "/reset":
            messages, carry = [], ""
            print("(conversation cleared)")
        else:
            messages.append({"role": "user", "content": f"{line} {carry}".strip()})
            carry = ""
            result = run_turn(model, messages, args, budget, printer, args.think)
            messages.append({"role": "assistant", "content": result.answer, "reasoning_content": result.thinking})
    return 0


def add_generation_flags(p) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--think", dest="think", action="store_true", default=None,
                      help="enable_thinking=True: Qwen3's template adds nothing, the model still decides (as without "
                           "a flag: the soft switch, /think and /no_think in the prompt)")
    mode.add_argument("--no-think", dest="think", action="store_false",
                      help="the hard switch, enable_thinking=False: the template's empty think block ends the prompt")
    p.add_argument("--budget", type=int, help="thinking budget in tokens, counted from the <think> the model writes "
                                              "(0: the block is closed at once; default unlimited)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, help="0 is greedy; default from generation_config.json or Qwen's")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--kv-cache", choices=["fp32", "bf16", "q8_0"], default="fp32",
                   help="how the KV cache holds keys and values: bf16 halves what a token reads at long context, "
                        "q8_0 (Q8_0 blocks, as llama.cpp's --cache-type-k q8_0) takes 0.27x")
    add_expert_cache_flag(p)
    add_model_flags(p)


def add_expert_cache_flag(p) -> None:
    p.add_argument("--expert-cache", type=int, metavar="C",
                   help="hold C experts of each MoE layer in memory and read the others from the file when tokens "
                        "are routed to them (LRU; for a GGUF MoE model larger than the memory you have)")


def add_model_flags(p) -> None:
    p.add_argument("--quant", help="the GGUF quantization to load (Q4_K_M, Q8_0, ...) from a folder or repo holding "
                                   "several; also written MODEL:QUANT")
    p.add_argument("--backend", choices=["numba", "numpy"], default=None,
                   help="default: numba for GGUF models and models of 50M parameters or more (compiled once, "
                        "then cached on disk), numpy for smaller ones")
    p.add_argument("--matmul-precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the activations entering a matrix product: fp32 (transformers' fp32 logits) or bf16, rounded "
                        "as llama.cpp computes with bf16 weights; auto (default): bf16 where it pays (numba backend, "
                        "bf16 weights, a CPU with AVX512-BF16: prompts read 1.5-1.9x faster), fp32 elsewhere")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="miniqwen3", description="Qwen3 and Qwen3-MoE from scratch in NumPy.")
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate a reply to one prompt, thinking shown apart from the answer")
    gen.add_argument("words", nargs="+", metavar="[MODEL] PROMPT")
    add_generation_flags(gen)
    gen.set_defaults(func=cmd_generate)
    chat = sub.add_parser("chat", help="interactive multi-turn chat")
    chat.add_argument("model", nargs="?", help="checkpoint folder or repo id (default: the embedded tiny model)")
    add_generation_flags(chat)
    chat.set_defaults(func=cmd_chat)
    info = sub.add_parser("info", help="architecture, parameters (total and active), bytes and memory of a model")
    info.add_argument("model", help="a checkpoint folder, a .gguf file, a Hugging Face repo id (REPO:QUANT for a GGUF "
                                    "repo), or a preset like Qwen3-30B-A3B")
    info.add_argument("--quant", help="the GGUF quantization (Q4_K_M, Q8_0, ...) in a folder or repo holding several")
    info.set_defaults(func=cmd_info)
    route = sub.add_parser("route", help="one forward pass with the routing trace: expert load per MoE layer")
    route.add_argument("model", nargs="?", help="checkpoint folder or repo id (default: the embedded tiny model)")
    route.add_argument("--text", help="text to route (needs tokenizer files); default: random token ids")
    route.add_argument("--tokens", type=int, default=64, help="how many random token ids")
    route.add_argument("--seed", type=int, default=0)
    add_expert_cache_flag(route)
    add_model_flags(route)
    route.set_defaults(func=cmd_route)
    ini = sub.add_parser("init-random", help="write a checkpoint with random weights for a config")
    ini.add_argument("config", help="a config.json, or a preset: " + ", ".join(sorted(p.stem for p in PRESETS.glob("*.json"))))
    ini.add_argument("out", help="the folder to write")
    ini.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ini.add_argument("--layers", type=int, help="keep only this many layers")
    ini.add_argument("--seed", type=int, default=0)
    ini.add_argument("--shard-mb", type=int, help="split into shards of at most this many MiB")
    ini.set_defaults(func=cmd_init_random)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ModelNotFoundError, TokenizerError, ChatError, ValueError) as e:
        print(f"miniqwen3: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
