"""Train the embedded tiny Qwen3-MoE (transformers' Qwen3MoeForCausalLM) on the corpus of miniqwen3/corpus.py,
with the global-batch load-balancing loss, and export it in the layout of a real Qwen3 checkpoint.

    python scripts/train_tiny.py train  --corpus build/tiny/corpus --tokenizer build/tiny/tokenizer --run build/tiny/run
    python scripts/train_tiny.py export --run build/tiny/run --tokenizer build/tiny/tokenizer --out miniqwen3/data/tiny

Needs the `train` extra (torch, transformers). fp32 training on CPU (torch.set_num_threads(--threads)); the
export is bf16.

One optimizer step sees one batch made of micro-batches: conversations of similar length padded together
(loss on the reply only), and 256-token windows of prose and of code (loss on every token). Micro-batches are
domain-pure, which is exactly the case where the load-balancing loss counted per micro-batch forbids experts to
specialise by domain: each domain alone would have to spread evenly over the experts. So, as Qwen3 did
(global-batch balancing, Qiu et al. 2025, arXiv 2501.11873), the expert frequencies f are counted over the whole
step's batch, all micro-batches together, before they multiply the mean router probabilities P:

    aux = mean over MoE layers l of  E * sum_e f[l, e] * P[l, e]
    f[l, e] = (tokens of the step routed to expert e in layer l, in any of the K slots) / (tokens of the step)
    P[l, e] = mean over the step's tokens of softmax(router logits)[e]              (perfect balance: aux = K)

f carries no gradient; P does. `aux_micro` (the per-micro-batch form, averaged) is logged beside it, not trained.
Per step the history keeps: loss, aux, aux_micro, learning rate, tokens, wall time and the load of every expert
in every layer (the fraction of routing slots it received, float16), and every `--domain-every` steps the load
split by domain (arithmetic, prose, code); it is exported as training_history.npz beside the model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting for a descheduled sibling make every step
# several times slower; passive waiting keeps two threads as fast as one at worst.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from miniqwen3 import ops  # noqa: E402
from miniqwen3.corpus import Conversation, conversation_segments, read_jsonl  # noqa: E402

DOMAINS = ("arithmetic", "prose", "code")


# --- model --------------------------------------------------------------------------------------

def model_config(args, vocab_size: int, bos: int, eos: int) -> dict:
    """The config in the key names of a real Qwen3-MoE checkpoint (transformers 4.51: num_experts, rope_theta)."""
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "decoder_sparse_step": 1,
        "eos_token_id": eos,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "hidden_size": args.hidden,
        "initializer_range": 0.02,
        "intermediate_size": 4 * args.hidden,
        "max_position_embeddings": args.max_position,
        "max_window_layers": args.layers,
        "mlp_only_layers": [],
        "model_type": "qwen3_moe",
        "moe_intermediate_size": args.moe_intermediate,
        "norm_topk_prob": True,
        "num_attention_heads": args.heads,
        "num_experts": args.experts,
        "num_experts_per_tok": args.top_k,
        "num_hidden_layers": args.layers,
        "num_key_value_heads": args.kv_heads,
        "output_router_logits": False,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "router_aux_loss_coef": args.aux_coef,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def build_model(config: dict):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    cfg = Qwen3MoeConfig(**{k: v for k, v in config.items()
                            if k not in ("architectures", "torch_dtype", "transformers_version")})
    return Qwen3MoeForCausalLM(cfg)


# --- data ---------------------------------------------------------------------------------------

def encode_corpus(corpus: Path, tokenizer_dir: Path, cache: Path) -> dict:
    """Token ids of every training conversation (ids, trained-mask, offsets) and of the prose and code streams;
    cached in `cache` (an .npz)."""
    if cache.is_file():
        return dict(np.load(cache))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    convs = [Conversation.from_json(d) for d in read_jsonl(corpus / "train_chat.jsonl")]
    segs = [conversation_segments(c) for c in convs]
    flat = [text for s in segs for text, _ in s]
    encoded = tok.encode_batch(flat, add_special_tokens=False)
    ids, mask, offsets, k = [], [], [0], 0
    for s in segs:
        n = 0
        for _, trained in s:
            e = encoded[k].ids
            ids.extend(e)
            mask.extend([trained] * len(e))
            n += len(e)
            k += 1
        offsets.append(offsets[-1] + n)
    eot = tok.token_to_id("<|endoftext|>")
    out = {"chat_ids": np.array(ids, np.int32), "chat_mask": np.array(mask, bool),
           "chat_offsets": np.array(offsets, np.int64)}
    for kind in ("prose", "code"):
        docs = read_jsonl(corpus / f"train_{kind}.jsonl")
        stream = []
        for e in tok.encode_batch([d["text"] for d in docs], add_special_tokens=False):
            stream.extend(e.ids + [eot])
        out[f"{kind}_ids"] = np.array(stream, np.int32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


class Batches:
    """The step batches: conversations (shuffled, epoch after epoch) grouped by length, and random windows of
    the prose and code streams. Each micro-batch is (domain, ids [B, T], targets-mask [B, T], attention [B, T])."""

    def __init__(self, data: dict, pad_id: int, seed: int, chat_tokens: int, windows: int, window_len: int,
                 micro_max: int):
        self.d, self.pad, self.rng = data, pad_id, np.random.default_rng(seed)
        self.chat_tokens, self.windows, self.window_len, self.micro_max = chat_tokens, windows, window_len, micro_max
        self.n_chat = len(data["chat_offsets"]) - 1
        self.order, self.pos, self.epoch = self.rng.permutation(self.n_chat), 0, 0

    def _next_conv(self) -> int:
        if self.pos == len(self.order):
            self.order, self.pos, self.epoch = self.rng.permutation(self.n_chat), 0, self.epoch + 1
        self.pos += 1
        return int(self.order[self.pos - 1])

    def _pad(self, seqs, masks):
        return pad_right(seqs, masks, self.pad)

    def step(self):
        off, total, convs = self.d["chat_offsets"], 0, []
        while total < self.chat_tokens:
            i = self._next_conv()
            convs.append(i)
            total += int(off[i + 1] - off[i])
        convs.sort(key=lambda i: off[i + 1] - off[i])
        micro = []
        n_micro = math.ceil(len(convs) / self.micro_max)
        for group in np.array_split(np.array(convs), n_micro):
            seqs = [self.d["chat_ids"][off[i]:off[i + 1]] for i in group]
            masks = [self.d["chat_mask"][off[i]:off[i + 1]] for i in group]
            micro.append(("arithmetic", *self._pad(seqs, masks)))
        for kind in ("prose", "code"):
            stream = self.d[f"{kind}_ids"]
            starts = self.rng.integers(0, len(stream) - self.window_len, self.windows)
            seqs = [stream[s:s + self.window_len] for s in starts]
            micro.append((kind, *self._pad(seqs, [np.ones(self.window_len, bool)] * self.windows)))
        return micro


def pad_right(seqs, masks, pad: int):
    """Right-padded batch: ids [B, T], loss mask [B, T] (True where the token is a target), attention [B, T]."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), pad, np.int64)
    tgt = np.zeros((len(seqs), T), bool)
    att = np.zeros((len(seqs), T), np.int64)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)], tgt[i, :len(s)], att[i, :len(s)] = s, m, 1
    return torch.from_numpy(ids), torch.from_numpy(tgt), torch.from_numpy(att)


def eval_batches(corpus: Path, tokenizer_dir: Path, pad_id: int):
    """Held-out arithmetic replies in think and no-think mode, as (name, ids, mask, attention, level) batches."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    out = []
    rows = read_jsonl(corpus / "eval_arith.jsonl")[::2]
    for thinking in (True, False):
        seqs, masks, levels = [], [], []
        for d in rows:
            c = Conversation.from_json(d)
            c.thinking, c.hard_switch = thinking, not thinking   # no-think: the empty block is prefilled
            ids, mask = [], []
            for text, trained in conversation_segments(c):
                e = tok.encode(text, add_special_tokens=False).ids
                ids += e
                mask += [trained] * len(e)
            seqs.append(np.array(ids))
            masks.append(np.array(mask))
            levels.append(c.problem.level)
        out.append(("think" if thinking else "no_think", *pad_right(seqs, masks, pad_id), np.array(levels)))
    return out


# --- losses -------------------------------------------------------------------------------------

def lm_loss_sum(logits, ids, tgt):
    """Summed cross-entropy of the trained target tokens (token t+1 predicted at t) and their count."""
    mask = tgt[:, 1:]
    logits = logits[:, :-1][mask]
    return F.cross_entropy(logits.float(), ids[:, 1:][mask], reduction="sum"), int(mask.sum())


def forward(model, ids, tgt, att):
    """One micro-batch: summed LM loss over the trained targets, and the router logits of every MoE layer.
    The lm_head runs only at the positions that predict a trained token (about half of a conversation)."""
    out = model.model(input_ids=ids, attention_mask=att, output_router_logits=True)
    mask = tgt[:, 1:]
    logits = model.lm_head(out.last_hidden_state[:, :-1][mask])
    return F.cross_entropy(logits.float(), ids[:, 1:][mask], reduction="sum"), out.router_logits


def router_stats(router_logits, att, top_k: int):
    """Per MoE layer, for the real (unpadded) tokens of one micro-batch: router probabilities [T, E] (with
    gradient) and the count of routing slots each expert won [E] (no gradient; the choice is `ops.router`'s)."""
    keep = att.reshape(-1).bool()
    probs, counts = [], []
    for logits in router_logits:
        p = torch.softmax(logits.float(), dim=-1)[keep]
        probs.append(p)
        _, chosen, _ = ops.router(logits.detach().float()[keep].numpy(), top_k, norm_topk_prob=False)
        counts.append(torch.from_numpy(np.bincount(chosen.ravel(), minlength=p.shape[-1])).float())
    return probs, counts


def load_balancing_loss(probs, counts, num_experts: int):
    """E * sum_e f[e] * P[e] per layer, averaged over layers; f = counts / tokens (sums to K), P = mean probs.
    The torch twin (with gradients) of `miniqwen3.balance.load_balancing_loss(..., per_layer=True)`; a test
    checks that they agree.
    probs/counts: per layer, concatenated/summed over all the micro-batches that share one f."""
    losses = []
    for p, c in zip(probs, counts):
        f = c / p.shape[0]
        losses.append(num_experts * torch.sum(f * p.mean(dim=0)))
    return torch.stack(losses).mean()


# --- training -----------------------------------------------------------------------------------

def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model, batches, top_k):
    """Teacher-forced held-out reply metrics: loss, token accuracy, and the share of replies whose every token
    is the argmax (per level)."""
    model.eval()
    out = {}
    for name, ids, tgt, att, levels in batches:
        res = model(input_ids=ids, attention_mask=att)
        logits = res.logits[:, :-1]
        mask = tgt[:, 1:]
        right = (logits.argmax(-1) == ids[:, 1:]) | ~mask
        exact = right.all(dim=1).numpy()
        loss, n = lm_loss_sum(res.logits, ids, tgt)
        out[f"{name}_loss"] = float(loss) / n
        out[f"{name}_exact"] = float(exact.mean())
        for lv in sorted(set(levels.tolist())):
            out[f"{name}_exact_L{lv}"] = float(exact[levels == lv].mean())
    model.train()
    return out


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    tok_dir, corpus = Path(args.tokenizer), Path(args.corpus)
    tok_cfg = json.loads((tok_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids_of = {v["content"]: int(k) for k, v in tok_cfg["added_tokens_decoder"].items()}
    n_ids = max(ids_of.values()) + 1
    vocab_size = -(-n_ids // 64) * 64  # padded to a multiple of 64, as Qwen pads its vocabulary
    config = model_config(args, vocab_size, ids_of["<|endoftext|>"], ids_of["<|im_end|>"])
    (run / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model = build_model(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, vocab {vocab_size} ({n_ids} ids), "
          f"experts implementation {getattr(model.config, '_experts_implementation', None)}", flush=True)

    t0 = time.time()
    data = encode_corpus(corpus, tok_dir, run / "encoded.npz")
    pad = ids_of["<|endoftext|>"]
    print(f"data: {len(data['chat_offsets']) - 1} conversations, {len(data['chat_ids'])} tokens; prose "
          f"{len(data['prose_ids'])}, code {len(data['code_ids'])} tokens ({time.time() - t0:.0f}s)", flush=True)
    batches = Batches(data, pad, args.seed, args.chat_tokens, args.windows, args.window_len, args.micro_max)
    evals = eval_batches(corpus, tok_dir, pad)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    L, E, K = args.layers, args.experts, args.top_k
    hist = {k: [] for k in ("loss", "aux", "aux_micro", "lr", "tokens", "seconds", "grad_norm")}
    hist_load, hist_domain, domain_steps, eval_rows = [], [], [], []
    start_step = 0
    ckpt = run / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        hist, hist_load, hist_domain = state["hist"], state["hist_load"], state["hist_domain"]
        domain_steps, eval_rows, start_step = state["domain_steps"], state["eval_rows"], state["step"]
        batches.rng = state["batch_rng"]
        batches.order, batches.pos, batches.epoch = state["batch_order"], state["batch_pos"], state["batch_epoch"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {start_step}", flush=True)
    wall0 = time.time() - (hist["seconds"][-1] if hist["seconds"] else 0.0)
    for step in range(start_step, args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        micro = batches.step()
        n_target = sum(int(tgt[:, 1:].sum()) for _, _, tgt, _ in micro)
        lm_total = 0.0
        probs = [[] for _ in range(L)]
        counts = [torch.zeros(E) for _ in range(L)]
        domain_counts = {d: [torch.zeros(E) for _ in range(L)] for d in DOMAINS}
        aux_micro, tokens = [], 0
        for domain, ids, tgt, att in micro:
            loss_sum, router_logits = forward(model, ids, tgt, att)
            lm_total = lm_total + loss_sum / n_target
            p, c = router_stats(router_logits, att, K)
            with torch.no_grad():
                aux_micro.append(float(load_balancing_loss(p, c, E)))
            for layer in range(L):
                probs[layer].append(p[layer])
                counts[layer] += c[layer]
                domain_counts[domain][layer] += c[layer]
            tokens += int(att.sum())
        probs = [torch.cat(p) for p in probs]
        aux = load_balancing_loss(probs, counts, E)  # f counted over the whole step's batch: global-batch balancing
        loss = lm_total + args.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()

        load = torch.stack(counts) / torch.stack(counts).sum(dim=1, keepdim=True)   # [L, E], rows sum to 1
        hist["loss"].append(float(lm_total.detach()))
        hist["aux"].append(float(aux.detach()))
        hist["aux_micro"].append(float(np.mean(aux_micro)))
        hist["lr"].append(lr)
        hist["tokens"].append(tokens)
        hist["seconds"].append(time.time() - wall0)
        hist["grad_norm"].append(float(grad_norm))
        hist_load.append(load.numpy().astype(np.float16))
        if step % args.domain_every == 0 or step == args.steps - 1:
            dl = [torch.stack(domain_counts[d]) for d in DOMAINS]
            hist_domain.append(np.stack([(x / x.sum(dim=1, keepdim=True).clamp(min=1)).numpy() for x in dl])
                               .astype(np.float16))
            domain_steps.append(step)
        if step % args.log_every == 0 or step == args.steps - 1:
            recent = slice(max(0, len(hist["seconds"]) - args.log_every - 1), None)
            seconds = hist["seconds"][recent]
            tps = sum(hist["tokens"][recent][1:]) / max(1e-9, seconds[-1] - seconds[0]) if len(seconds) > 1 else 0.0
            print(f"step {step:5d} loss {hist['loss'][-1]:.4f} aux {hist['aux'][-1]:.3f} (micro {np.mean(aux_micro):.3f}) "
                  f"lr {lr:.2e} gn {float(grad_norm):.2f} max-load {float(load.max()):.3f} "
                  f"{tps:.0f} tok/s {seconds[-1] / 60:.1f} min", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            ev = evaluate(model, evals, K)
            ev["step"] = step
            eval_rows.append(ev)
            print("eval " + " ".join(f"{k} {v:.3f}" for k, v in ev.items() if k != "step"), flush=True)
        if (step + 1) % args.save_every == 0 or step == args.steps - 1:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "hist": hist, "hist_load": hist_load,
                        "hist_domain": hist_domain, "domain_steps": domain_steps, "eval_rows": eval_rows,
                        "step": step + 1, "batch_rng": batches.rng, "batch_order": batches.order,
                        "batch_pos": batches.pos, "batch_epoch": batches.epoch,
                        "torch_rng": torch.get_rng_state()}, str(ckpt) + ".tmp")
            Path(str(ckpt) + ".tmp").replace(ckpt)

    torch.save(model.state_dict(), run / "model.pt")
    eval_keys = sorted({k for r in eval_rows for k in r if k != "step"})
    np.savez_compressed(
        run / "training_history.npz",
        **{k: np.array(v, np.float32) for k, v in hist.items()},
        load=np.stack(hist_load),                       # [steps, layers, experts] float16
        domain_load=np.stack(hist_domain),              # [n, domains, layers, experts] float16
        domain_steps=np.array(domain_steps, np.int32),
        domains=np.array(DOMAINS),
        eval_steps=np.array([r["step"] for r in eval_rows], np.int32),
        eval_names=np.array(eval_keys),
        eval_values=np.array([[r.get(k, np.nan) for k in eval_keys] for r in eval_rows], np.float32),
    )
    summary = {"steps": args.steps, "wall_seconds": hist["seconds"][-1], "tokens": int(sum(hist["tokens"])),
               "parameters": n_params, "final_loss": hist["loss"][-1], "final_aux": hist["aux"][-1],
               "epochs_of_conversations": batches.epoch + batches.pos / batches.n_chat,
               "args": {k: v for k, v in vars(args).items() if k != "func"},
               "final_eval": eval_rows[-1] if eval_rows else None}
    (run / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done: {args.steps} steps, {summary['tokens']} tokens in {summary['wall_seconds'] / 60:.1f} min", flush=True)


# --- export -------------------------------------------------------------------------------------

def export(args):
    """Write the HF folder: config.json (4.x keys), model.safetensors (bf16, one tensor per expert),
    generation_config.json, tokenizer.json, tokenizer_config.json, training_history.npz, train_summary.json."""
    import shutil
    from safetensors.torch import save_file
    run, out, tok_dir = Path(args.run), Path(args.out), Path(args.tokenizer)
    config = json.loads((run / "config.json").read_text())
    state = torch.load(run / "model.pt", weights_only=True)
    tensors = {}
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj"):       # [E, 2I, H]: gate rows first, then up
            prefix, I = name[: -len("gate_up_proj")], t.shape[1] // 2
            for e in range(t.shape[0]):
                tensors[f"{prefix}{e}.gate_proj.weight"] = t[e, :I]
                tensors[f"{prefix}{e}.up_proj.weight"] = t[e, I:]
        elif name.endswith("mlp.experts.down_proj"):        # [E, H, I]
            prefix = name[: -len("down_proj")]
            for e in range(t.shape[0]):
                tensors[f"{prefix}{e}.down_proj.weight"] = t[e]
        else:
            tensors[name] = t
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in sorted(tensors.items())}
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors").chmod(0o644)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": config["bos_token_id"], "do_sample": True,
                  "eos_token_id": [config["eos_token_id"], config["bos_token_id"]],
                  "pad_token_id": config["bos_token_id"], "temperature": 0.6, "top_k": 20, "top_p": 0.95,
                  "transformers_version": "4.51.0"}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tok_dir / name, out / name)
    shutil.copyfile(run / "training_history.npz", out / "training_history.npz")
    summary = json.loads((run / "train_summary.json").read_text())
    summary["args"] = {k: v for k, v in summary["args"].items() if k not in ("run", "corpus", "tokenizer", "func")}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"exported -> {out} ({size / 2**20:.1f} MiB)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--corpus", default="build/tiny/corpus")
    t.add_argument("--tokenizer", default="build/tiny/tokenizer")
    t.add_argument("--run", default="build/tiny/run")
    t.add_argument("--steps", type=int, default=1600)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--min-lr-ratio", type=float, default=0.05)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--aux-coef", type=float, default=0.01)
    t.add_argument("--chat-tokens", type=int, default=7168, help="conversation tokens per step")
    t.add_argument("--windows", type=int, default=2, help="prose windows and code windows per step")
    t.add_argument("--window-len", type=int, default=256)
    t.add_argument("--micro-max", type=int, default=24, help="conversations per micro-batch at most")
    t.add_argument("--hidden", type=int, default=192)
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--heads", type=int, default=6)
    t.add_argument("--kv-heads", type=int, default=2)
    t.add_argument("--head-dim", type=int, default=32)
    t.add_argument("--experts", type=int, default=32)
    t.add_argument("--top-k", type=int, default=4)
    t.add_argument("--moe-intermediate", type=int, default=96)
    t.add_argument("--max-position", type=int, default=2048)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--domain-every", type=int, default=10)
    t.add_argument("--eval-every", type=int, default=200)
    t.add_argument("--save-every", type=int, default=200)
    t.add_argument("--resume", action="store_true")
    t.set_defaults(func=train)
    x = sub.add_parser("export")
    x.add_argument("--run", default="build/tiny/run")
    x.add_argument("--tokenizer", default="build/tiny/tokenizer")
    x.add_argument("--out", default="miniqwen3/data/tiny")
    x.set_defaults(func=export)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
