"""The numbers and figures behind the notebooks: RoPE and YaRN, routing, load, the thinking budget, kernels.

Each section has small functions that compute something from miniqwen3's own code (tested in
tests/test_viz_widgets.py), and figure functions that draw it. Figures are matplotlib `Figure`s made without
pyplot (no global state, nothing shown twice); they render as PNG wherever IPython displays them.
HTML snippets (token strips, tables) are `Html` strings, which Jupyter renders and tests can search.

Shape letters as in `miniqwen3.config`: T tokens, H hidden, D head_dim, E experts, K experts per token,
L layers.
"""
from __future__ import annotations

import html
import io
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.figure
import matplotlib.patches
import numpy as np

from . import ops
from .config import Qwen3Config, RopeScaling


# --- figures and HTML ----------------------------------------------------------------------------

class Figure(matplotlib.figure.Figure):
    """A matplotlib figure that shows itself in Jupyter as a PNG, without pyplot."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        return buf.getvalue()


def figure(width: float = 8, height: float = 3.2, **kwargs) -> Figure:
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


class Html(str):
    """An HTML snippet that Jupyter renders (and that is a plain str everywhere else)."""

    def _repr_html_(self):
        return str(self)


def source(*functions):
    """The source code of functions, highlighted in Jupyter (IPython's Code), plain text elsewhere."""
    import inspect
    text = "\n\n".join(inspect.getsource(f) for f in functions)
    try:
        from IPython.display import Code
    except ImportError:
        return text
    return Code(text, language="python")


def expert_colors(n_experts: int) -> np.ndarray:
    """One RGBA colour per expert: tab10/tab20 when they suffice, else evenly spaced hues.  -> [E, 4]"""
    if n_experts <= 10:
        return matplotlib.colormaps["tab10"](np.arange(n_experts))
    if n_experts <= 20:
        return matplotlib.colormaps["tab20"](np.arange(n_experts))
    return matplotlib.colormaps["hsv"](np.arange(n_experts) / n_experts)


def _css(rgba, alpha=0.45) -> str:
    r, g, b = (int(255 * c) for c in rgba[:3])
    return f"rgba({r},{g},{b},{alpha})"


def visible(text: str) -> str:
    """A token's text with whitespace made visible: space as ·, newline as ↵, tab as →."""
    return text.replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def token_strings(tokenizer, ids) -> list[str]:
    """The text of each token on its own (a token that ends mid-character shows its bytes as �)."""
    return [tokenizer.decode([int(i)]) for i in ids]


# --- the model in numbers ------------------------------------------------------------------------

def parameter_rows(configs: dict) -> list[dict]:
    """Total and active (per token) parameters of each config: name -> Qwen3Config."""
    rows = []
    for name, c in configs.items():
        n = c.parameter_counts()
        rows.append({"model": name, "layers": c.num_hidden_layers,
                     "experts": f"{c.num_experts} (top-{c.num_experts_per_tok})" if c.is_moe else "dense",
                     "total": n["total"], "active": n["active"], "active share": n["active"] / n["total"]})
    return rows


def shipped_configs() -> dict:
    """The real Qwen3 configs shipped in miniqwen3/configs, by name."""
    configs = {p.stem: Qwen3Config.from_file(p) for p in (Path(__file__).parent / "configs").glob("*.json")}
    return dict(sorted(configs.items(), key=lambda kv: kv[1].parameter_counts()["total"]))


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def table(rows: list[dict], formats: dict | None = None) -> Html:
    """A list of dicts as an HTML table (keys of the first row are the columns)."""
    formats = formats or {}
    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(formats.get(c, str)(r[c]))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def parameter_table(configs: dict) -> Html:
    return table(parameter_rows(configs), {"total": _count, "active": _count, "active share": "{:.1%}".format})


def token_html(tokenizer, ids, channels=None, forced=None, numbers=None) -> Html:
    """Tokens as boxes with their id underneath: thinking grey, answer white, forced tokens orange.
    channels: "thinking"/"answer" per token; forced: bools; numbers: a value shown after the id (e.g. N)."""
    cells = []
    for j, (i, text) in enumerate(zip(ids, token_strings(tokenizer, ids))):
        bg = "#ffd59e" if forced is not None and forced[j] else \
             "#e4e4e4" if channels is not None and channels[j] == "thinking" else "#ffffff"
        sub = f"{int(i)}" + (f" · {numbers[j]}" if numbers is not None else "")
        cells.append(f'<span style="display:inline-block;margin:1px;padding:0 3px;border:1px solid #bbb;'
                     f'background:{bg};font-family:monospace;text-align:center">{html.escape(visible(text))}'
                     f'<br><small style="color:#666">{sub}</small></span>')
    return Html("<div>" + "".join(cells) + "</div>")


# --- RoPE ----------------------------------------------------------------------------------------

def rope_rotate(x: np.ndarray, positions, head_dim: int, theta: float,
                scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    """x rotated to each position with miniqwen3's own RoPE (`ops.rope_frequencies`, `rope_cos_sin`,
    `apply_rope`).  x: [D] (one head) -> [P, D]"""
    inv_freq, factor = ops.rope_frequencies(head_dim, theta, scaling)
    cos, sin = ops.rope_cos_sin(np.asarray(positions), inv_freq, factor)
    x = np.broadcast_to(np.asarray(x, np.float32), (len(cos), head_dim))[:, None, :]
    return ops.apply_rope(x, cos, sin)[:, 0, :]


def rope_scores(q: np.ndarray, k: np.ndarray, positions, head_dim: int, theta: float) -> np.ndarray:
    """scores[m, n] = rope(q, m) . rope(k, n): it depends on m - n only (a Toeplitz matrix).  -> [P, P]"""
    return rope_rotate(q, positions, head_dim, theta) @ rope_rotate(k, positions, head_dim, theta).T


def rope_decay(head_dim: int, theta: float, distances) -> np.ndarray:
    """The score of q = k = all ones at relative distance d, over its value at d = 0:
    sum_i cos(d * inv_freq_i) / (D/2). RoFormer's long-term decay, in its simplest form."""
    inv_freq = ops.rope_inv_freq(head_dim, theta).astype(np.float64)
    return np.cos(np.asarray(distances, np.float64)[:, None] * inv_freq[None, :]).mean(axis=1)


def apply_rope_interleaved(x: np.ndarray, positions, inv_freq: np.ndarray) -> np.ndarray:
    """RoPE in the interleaved layout (GPT-J, Meta's original Llama): pairs (2i, 2i+1) rotate by
    position * inv_freq_i.  x: [P, D] -> [P, D]"""
    a = np.asarray(positions, np.float32)[:, None] * inv_freq[None, :]         # [P, D/2]
    cos, sin = np.cos(a), np.sin(a)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def interleaved_order(head_dim: int) -> np.ndarray:
    """The permutation that takes a rotate_half head to the interleaved layout: [0, D/2, 1, D/2+1, ...].
    x_interleaved = x[order]; the two layouts rotate the same pairs and agree after the permutation
    (which is why a checkpoint converted between them permutes the rows of q_proj and k_proj)."""
    half = head_dim // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).ravel()


def rope_pairs_figure(position: int, head_dim: int = 64, theta: float = 10_000.0, pairs=(0, 4, 8, 16, 31)) -> Figure:
    """Where RoPE moves a vector, pair by pair: each dimension pair (i, i + D/2) of x = ones is a 2-D vector
    rotated by position * inv_freq_i. Fast pairs (small i) spin, slow pairs barely move."""
    positions = np.arange(position + 1)
    rotated = rope_rotate(np.ones(head_dim), positions, head_dim, theta)        # [P, D]
    inv_freq = ops.rope_inv_freq(head_dim, theta)
    fig = figure(2.1 * len(pairs), 2.6)
    half = head_dim // 2
    for j, i in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), j + 1)
        u, v = rotated[:, i], rotated[:, i + half]
        ax.plot(u, v, color="#bbb", lw=0.8)
        ax.annotate("", xy=(u[-1], v[-1]), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="C3", lw=2))
        ax.add_patch(matplotlib.patches.Circle((0, 0), math.sqrt(2), fill=False, color="#ddd"))
        ax.set_xlim(-1.6, 1.6), ax.set_ylim(-1.6, 1.6), ax.set_aspect("equal"), ax.set_xticks([]), ax.set_yticks([])
        turns = position * float(inv_freq[i]) / (2 * math.pi)
        ax.set_title(f"pair {i}\n{turns:.2f} turns", fontsize=9)
    fig.suptitle(f"position {position}: dims (i, i+{half}) of a {head_dim}-dim head, theta {theta:g}", fontsize=10)
    return fig


def rope_wavelengths_figure(head_dim: int = 128, thetas=(10_000.0, 1_000_000.0), context: int = 32_768) -> Figure:
    """Wavelength 2 pi / inv_freq_i (positions per full turn) of each pair, for two bases."""
    fig = figure(7, 3)
    ax = fig.add_subplot()
    for theta in thetas:
        ax.semilogy(2 * np.pi / ops.rope_inv_freq(head_dim, theta), label=f"theta {theta:,.0f}")
    ax.axhline(context, color="k", ls=":", lw=1, label=f"{context:,} positions")
    ax.set_xlabel("pair i"), ax.set_ylabel("wavelength (positions)"), ax.legend(fontsize=8)
    ax.set_title(f"RoPE wavelengths, head_dim {head_dim}", fontsize=10)
    return fig


def rope_scores_figure(scores: np.ndarray) -> Figure:
    fig = figure(3.6, 3.2)
    ax = fig.add_subplot()
    im = ax.imshow(scores, cmap="RdBu_r")
    ax.set_xlabel("key position n"), ax.set_ylabel("query position m")
    ax.set_title("rope(q, m) . rope(k, n)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def rope_decay_figure(head_dim: int = 128, thetas=(10_000.0, 1_000_000.0), max_distance: int = 100_000) -> Figure:
    d = np.unique(np.geomspace(1, max_distance, 600).astype(int))
    fig = figure(7, 3)
    ax = fig.add_subplot()
    for theta in thetas:
        ax.semilogx(d, rope_decay(head_dim, theta, d), label=f"theta {theta:,.0f}", lw=1)
    ax.set_xlabel("relative distance m - n"), ax.set_ylabel("score / score at 0")
    ax.set_title("q = k = ones: the score decays (and wobbles) with distance", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def rope_layouts_figure(head_dim: int = 8) -> Figure:
    """Which dimensions rotate together: (i, i + D/2) in rotate_half, (2i, 2i + 1) interleaved."""
    fig = figure(7, 1.8)
    half = head_dim // 2
    colors = expert_colors(half)
    for row, (name, pair_of) in enumerate((("rotate_half (Qwen3, HF)", lambda d: d % half),
                                           ("interleaved (GPT-J, Meta)", lambda d: d // 2))):
        ax = fig.add_subplot(2, 1, row + 1)
        for d in range(head_dim):
            ax.add_patch(matplotlib.patches.Rectangle((d, 0), 0.95, 1, color=colors[pair_of(d)]))
            ax.text(d + 0.47, 0.5, f"{d}", ha="center", va="center", fontsize=8)
        ax.set_xlim(0, head_dim), ax.set_ylim(0, 1), ax.axis("off")
        ax.set_title(name + ": same colour = one rotating pair", fontsize=9, loc="left")
    return fig


def yarn_figure(factor: float, head_dim: int = 128, theta: float = 1_000_000.0, original_max: int = 32_768) -> Figure:
    """YaRN with miniqwen3's functions: the ramp between the correction range (low, high), the frequencies
    before and after, and the attention factor 0.1 ln(factor) + 1."""
    low, high = ops.yarn_correction_range(head_dim, theta, original_max)
    ramp = ops.yarn_ramp(head_dim, low, high)
    base = ops.rope_inv_freq(head_dim, theta)
    scaled, attn = ops.rope_frequencies(head_dim, theta, RopeScaling("yarn", factor, original_max))
    fig = figure(9, 3)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(ramp, color="C2")
    ax.axvline(low, color="#888", ls=":"), ax.axvline(high, color="#888", ls=":")
    ax.set_title(f"ramp: pairs < {low} keep, > {high} divide by {factor:g}", fontsize=9)
    ax.set_xlabel("pair i"), ax.set_ylim(-0.05, 1.05)
    ax = fig.add_subplot(1, 2, 2)
    ax.semilogy(2 * np.pi / base, label="original")
    ax.semilogy(2 * np.pi / scaled, label=f"YaRN x{factor:g}")
    ax.axhline(original_max, color="k", ls=":", lw=1, label=f"{original_max:,} (trained)")
    ax.axhline(original_max * factor, color="k", ls="--", lw=1, label=f"{int(original_max * factor):,} (extended)")
    ax.set_title(f"wavelengths; attention factor {attn:.4f}", fontsize=9)
    ax.set_xlabel("pair i"), ax.legend(fontsize=8)
    return fig


# --- routing -------------------------------------------------------------------------------------

@contextmanager
def routing(model, top_k: int | None = None, drop: dict | None = None, inputs: dict | None = None):
    """Run `model` with a changed router, without touching the model code: inside the block, MoE layers pick
    `top_k` experts (default: the config's) and never the experts in drop[layer] (their router logits are
    set to -inf, so softmax renormalises over the others). With `inputs`, a dict, the MoE input x [T, H] of
    every layer is stored in inputs[layer] (concatenated over forward calls)."""
    c = model.config
    k = top_k or c.num_experts_per_tok
    drop = drop or {}
    for layer, experts in drop.items():
        if c.num_experts - len(set(experts)) < k:
            raise ValueError(f"layer {layer}: dropping {len(set(experts))} of {c.num_experts} experts leaves "
                             f"fewer than top_k={k}")

    def moe_block(x, m, i, trace, ids, positions):
        if inputs is not None:
            inputs[i] = x if i not in inputs else np.concatenate([inputs[i], x])
        logits = ops.linear(x, m.gate)
        if drop.get(i):
            logits[:, list(drop[i])] = -np.inf
        probs = ops.softmax(logits.astype(np.float32), axis=-1)
        experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        weights = np.take_along_axis(probs, experts, axis=-1)
        if c.norm_topk_prob:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        if trace is not None:
            from .trace import RouterRecord
            trace.record(RouterRecord(i, positions, ids.copy(), logits, probs, experts, weights))
        return model.ops.moe_experts(x, experts, weights.astype(np.float32), m.gate_proj, m.up_proj, m.down_proj)

    model.moe_block = moe_block
    try:
        yield model
    finally:
        del model.moe_block


def moe_inputs(model, ids) -> dict:
    """The input x [T, H] of every MoE layer (after post_attention_layernorm) for one sequence: layer -> x."""
    inputs = {}
    with routing(model, inputs=inputs):
        model.forward(ids)
    return inputs


@dataclass
class RouterStep:
    """One token through one MoE layer, every intermediate kept."""
    layer: int
    position: int
    x: np.ndarray               # [H] the token's hidden state entering the MoE block
    logits: np.ndarray          # [E] x @ gate^T
    probs: np.ndarray           # [E] softmax over all experts
    experts: np.ndarray         # [K] top-k of probs
    chosen_probs: np.ndarray    # [K] their probabilities
    weights: np.ndarray         # [K] renormalised to sum 1 (when norm_topk_prob)
    expert_outputs: np.ndarray  # [K, H] each chosen expert's SwiGLU output
    output: np.ndarray          # [H] sum_k weights_k * expert_outputs_k
    block_output: np.ndarray    # [H] the model's MoE block (ops.moe_experts) on the same token, for checking


def router_step(model, ids, position: int, layer: int, inputs: dict | None = None) -> RouterStep:
    """Take token `position` of `ids` through the router and experts of MoE layer `layer`, step by step,
    with ops' functions. Pass `inputs` from `moe_inputs(model, ids)` to avoid a forward pass per call."""
    c = model.config
    if not c.is_sparse_layer(layer):
        raise ValueError(f"layer {layer} is not a MoE layer (MoE layers: "
                         f"{[i for i in range(c.num_hidden_layers) if c.is_sparse_layer(i)]})")
    inputs = inputs if inputs is not None else moe_inputs(model, ids)
    m = model.weights.layers[layer].mlp
    x = inputs[layer][position]
    logits = ops.linear(x[None], m.gate)[0]
    probs = ops.softmax(logits.astype(np.float32))
    experts = np.argsort(-probs, kind="stable")[:c.num_experts_per_tok]
    chosen = probs[experts]
    weights = chosen / chosen.sum() if c.norm_topk_prob else chosen
    outs = np.stack([ops.swiglu(x[None], m.gate_proj[e], m.up_proj[e], m.down_proj[e])[0] for e in experts])
    block = ops.moe_experts(x[None], experts[None], weights[None].astype(np.float32), m.gate_proj, m.up_proj,
                            m.down_proj)[0]
    return RouterStep(layer, position, x, logits, probs, experts, chosen, weights, outs,
                      (weights[:, None] * outs).sum(axis=0), block)


def router_step_figure(step: RouterStep, token: str = "") -> Figure:
    E = len(step.probs)
    colors = np.array(["#c8c8c8"] * E, dtype=object)
    colors[step.experts] = "C3"
    fig = figure(10, 2.8)
    ax = fig.add_subplot(1, 3, 1)
    ax.bar(np.arange(E), step.logits, color=colors)
    ax.set_title("1. router logits x @ gate^T", fontsize=9), ax.set_xlabel("expert")
    ax = fig.add_subplot(1, 3, 2)
    ax.bar(np.arange(E), step.probs, color=colors)
    ax.set_title(f"2. softmax over all {E}; 3. top-{len(step.experts)} in red", fontsize=9), ax.set_xlabel("expert")
    ax = fig.add_subplot(1, 3, 3)
    xs = np.arange(len(step.experts))
    ax.bar(xs - 0.2, step.chosen_probs, 0.4, label="probability", color="#e99")
    ax.bar(xs + 0.2, step.weights, 0.4, label="renormalised weight", color="C3")
    ax.set_xticks(xs, [str(e) for e in step.experts]), ax.set_xlabel("chosen expert")
    ax.set_title("4. weights of the chosen", fontsize=9), ax.legend(fontsize=7)
    fig.suptitle(f"layer {step.layer}, position {step.position}" + (f" {visible(token)!r}" if token else ""),
                 fontsize=10)
    return fig


def first_choices(trace, layers=None) -> np.ndarray:
    """The first-choice expert of every token in every traced MoE layer.  -> [L, T]"""
    layers = trace.layers if layers is None else layers
    return np.stack([trace.layer(i).experts[:, 0] for i in layers])


def routing_html(tokens: list[str], first: np.ndarray, layers, n_experts: int) -> Html:
    """The text once per layer, each token on the colour of its first-choice expert (hover: the expert)."""
    colors = expert_colors(n_experts)
    rows = []
    for layer, experts in zip(layers, first):
        spans = "".join(f'<span title="expert {e}" style="background:{_css(colors[e])};white-space:pre">'
                        f'{html.escape(t.replace(chr(10), "↵"))}</span>' for t, e in zip(tokens, experts))
        rows.append(f'<div style="font-family:monospace;margin:2px 0"><b>L{layer}</b> {spans}</div>')
    return Html("".join(rows))


def repeat_rate(first: np.ndarray) -> np.ndarray:
    """Per layer, how often a token's first-choice expert is the previous token's.  first: [L, T] -> [L]"""
    return (first[:, 1:] == first[:, :-1]).mean(axis=1)


def chance_repeat_rate(first: np.ndarray, n_experts: int) -> np.ndarray:
    """The same if tokens picked independently with the observed first-choice frequencies q: sum_e q_e^2."""
    q = np.stack([np.bincount(f, minlength=n_experts) / len(f) for f in first])
    return (q ** 2).sum(axis=1)


def repeat_vs_chance(firsts, n_experts: int):
    """Pooled over sequences (each [L, T] first choices): per layer, the observed rate at which a token keeps the
    previous token's first-choice expert, and the rate expected by chance from the pooled frequencies.  -> [L], [L]"""
    same = np.concatenate([f[:, 1:] == f[:, :-1] for f in firsts], axis=1).mean(axis=1)
    return same, chance_repeat_rate(np.concatenate(list(firsts), axis=1), n_experts)


@dataclass
class GroupRouting:
    """Routing of groups of sequences (e.g. one group per language or domain), from `routing_by_group`."""
    names: list             # group names
    layers: list            # the MoE layers traced
    counts: np.ndarray      # [S, L, E] assignments per sequence, layer and expert
    group: np.ndarray       # [S] the group of each sequence
    first: dict             # name -> list of [L, T] first-choice experts, one per sequence

    def shares(self, group=None) -> dict:
        """layer -> [G, E]: the share of each group's assignments that went to each expert."""
        group = self.group if group is None else group
        per_group = np.stack([self.counts[group == g].sum(axis=0) for g in range(len(self.names))])   # [G, L, E]
        per_group = per_group / per_group.sum(axis=2, keepdims=True)
        return {i: per_group[:, j] for j, i in enumerate(self.layers)}

    def shuffled_shares(self, seed: int = 0) -> dict:
        """The same with the sequences dealt to the groups at random (group sizes kept): what the shares look
        like when routing does not depend on the group, with this many tokens. The baseline for `specialisation`."""
        return self.shares(np.random.default_rng(seed).permutation(self.group))


def routing_by_group(model, groups: dict) -> GroupRouting:
    """Trace every sequence of every group.  groups: name -> list of id sequences."""
    c = model.config
    layers = [i for i in range(c.num_hidden_layers) if c.is_sparse_layer(i)]
    counts, group, first = [], [], {}
    for g, (name, seqs) in enumerate(groups.items()):
        first[name] = []
        for ids in seqs:
            _, trace = model.trace(ids)
            counts.append([np.bincount(trace.layer(i).experts.ravel(), minlength=c.num_experts) for i in layers])
            group.append(g)
            first[name].append(first_choices(trace, layers))
    return GroupRouting(list(groups), layers, np.array(counts, dtype=np.float64), np.array(group), first)


def group_share_figure(shares: dict, names: list[str], layers=None) -> Figure:
    """Heatmaps of the expert share of each group, one panel per layer."""
    layers = list(shares) if layers is None else layers
    n = len(layers)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = figure(3.2 * cols, 0.28 * len(names) * rows + 1.2 * rows)
    vmax = max(float(shares[i].max()) for i in layers)
    for j, i in enumerate(layers):
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.imshow(shares[i], aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_yticks(range(len(names)), names if j % cols == 0 else [""] * len(names), fontsize=7)
        ax.set_title(f"layer {i}", fontsize=9), ax.set_xlabel("expert", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    return fig


def mean_loss(model, sequences) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of the sequences."""
    total, count = 0.0, 0
    for ids in sequences:
        ids = np.asarray(ids)
        logits = model.logits(ids)[:-1].astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        total -= logp[np.arange(len(ids) - 1), ids[1:]].sum()
        count += len(ids) - 1
    return total / count


def loss_vs_top_k(model, sequences, ks) -> dict:
    """Mean loss with k experts per token at inference: k -> loss."""
    out = {}
    for k in ks:
        with routing(model, top_k=k):
            out[k] = mean_loss(model, sequences)
    return out


def expert_loads(model, sequences) -> dict:
    """Share of assignments per expert in every MoE layer over the sequences: layer -> [E]."""
    counts = {}
    for ids in sequences:
        _, trace = model.trace(ids)
        for i in trace.layers:
            c = np.bincount(trace.layer(i).experts.ravel(), minlength=model.config.num_experts)
            counts[i] = counts.get(i, 0) + c
    return {i: c / c.sum() for i, c in counts.items()}


def loss_vs_dropped(model, sequences, loads: dict, counts, order: str = "most") -> dict:
    """Mean loss after removing, in every MoE layer, its n most used (order="most"), least used ("least")
    or n random experts ("random", seed 0): n -> loss. loads: from `expert_loads`."""
    rng = np.random.default_rng(0)
    out = {}
    for n in counts:
        drop = {}
        for i, load in loads.items():
            ranked = np.argsort(-load, kind="stable") if order == "most" else \
                np.argsort(load, kind="stable") if order == "least" else rng.permutation(len(load))
            drop[i] = [int(e) for e in ranked[:n]]
        with routing(model, drop=drop):
            out[n] = mean_loss(model, sequences)
    return out


def curves_figure(curves: dict, xlabel: str, ylabel: str = "mean loss (nats)", title: str = "") -> Figure:
    """Lines from {label: {x: y}}."""
    fig = figure(5, 3)
    ax = fig.add_subplot()
    for label, xy in curves.items():
        ax.plot(list(xy), list(xy.values()), "o-" if len(xy) <= 30 else "-", label=label, ms=4, lw=1.2)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return fig


# --- load balancing ------------------------------------------------------------------------------

def load_bars_figure(load: np.ndarray, title: str = "") -> Figure:
    E = len(load)
    fig = figure(6, 2.4)
    ax = fig.add_subplot()
    ax.bar(np.arange(E), load, color=expert_colors(E))
    ax.axhline(1 / E, color="k", ls=":", lw=1, label="balanced 1/E")
    ax.set_xlabel("expert"), ax.set_ylabel("share of assignments"), ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def load_history_figure(steps: np.ndarray, loads: np.ndarray, title: str = "") -> Figure:
    """Expert load over training: the share of each expert (stacked) and the coefficient of variation.
    steps: [S], loads: [S, E]"""
    from .balance import coefficient_of_variation
    E = loads.shape[1]
    fig = figure(10, 3)
    ax = fig.add_subplot(1, 2, 1)
    ax.stackplot(steps, loads.T, colors=expert_colors(E))
    ax.set_xlim(steps[0], steps[-1]), ax.set_ylim(0, 1)
    ax.set_xlabel("step"), ax.set_ylabel("share of assignments"), ax.set_title("load per expert", fontsize=9)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(steps, [coefficient_of_variation(l) for l in loads])
    ax.set_xlabel("step"), ax.set_title("coefficient of variation (0 = balanced)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def lab_figure(results: list, domain_names=None) -> Figure:
    """For each router-lab run (`balance.train_router`): expert load over the steps, the domain -> expert
    share at the end, and the task loss."""
    from .balance import coefficient_of_variation, specialisation
    n = len(results)
    fig = figure(3.0 * n, 6.4)
    for j, r in enumerate(results):
        E = r.load.shape[1]
        ax = fig.add_subplot(3, n, j + 1)
        w = min(10, len(r.load))
        smooth = np.stack([np.convolve(r.load[:, e], np.ones(w) / w, mode="valid") for e in range(E)])
        ax.stackplot(np.arange(w - 1, len(r.load)), smooth, colors=expert_colors(E))
        ax.set_ylim(0, 1), ax.set_xlim(0, len(r.load) - 1)
        cv = coefficient_of_variation(r.load[-20:].mean(axis=0))
        ax.set_title(f"{r.method}\nexpert load, {w}-step mean (cv {cv:.2f})", fontsize=9)
        ax = fig.add_subplot(3, n, n + j + 1)
        ax.imshow(r.share, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"domain (rows) -> expert ({specialisation(r.share):.2f} bits)", fontsize=9)
        ax.set_xlabel("expert", fontsize=8)
        names = domain_names or [f"d{d}" for d in range(len(r.share))]
        ax.set_yticks(range(len(names)), names if j == 0 else [""] * len(names), fontsize=7)
        ax = fig.add_subplot(3, n, 2 * n + j + 1)
        ax.semilogy(r.task_loss)
        ax.set_title(f"task loss (last {r.task_loss[-20:].mean():.3f})", fontsize=9), ax.set_xlabel("step", fontsize=8)
    return fig


# --- the thinking budget -------------------------------------------------------------------------

def budget_steps(model, messages, budget, **options) -> list[dict]:
    """Generate with the budget counter and record every step: the token, whether it was forced, its channel,
    the counter's N and state after it."""
    from .generate import stream
    g = stream(model, messages, budget=budget, **options)
    rows = []
    for piece in g:
        if piece.token_id < 0:
            continue
        c = g.counter
        rows.append({"step": len(rows), "id": piece.token_id, "token": model.tokenizer.decode([piece.token_id]),
                     "forced": piece.forced, "channel": piece.channel, "N": piece.thinking_tokens,
                     "state": c.state.value, "tripped": c.tripped})
    return rows


def budget_steps_html(rows: list[dict]) -> Html:
    """The steps as a table, forced tokens highlighted."""
    head = "".join(f"<th>{h}</th>" for h in ("step", "id", "token", "forced", "channel", "N", "state"))
    body = []
    for r in rows:
        style = ' style="background:#ffd59e"' if r["forced"] else ' style="color:#666"' if r["channel"] == "thinking" else ""
        body.append(f"<tr{style}><td>{r['step']}</td><td>{r['id']}</td><td><code>{html.escape(visible(r['token']))}"
                    f"</code></td><td>{'forced' if r['forced'] else ''}</td><td>{r['channel']}</td><td>{r['N']}</td>"
                    f"<td>{r['state']}</td></tr>")
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def budget_steps_strip(tokenizer, rows: list[dict]) -> Html:
    """The steps of `budget_steps` as token boxes (thinking grey, forced orange, N under each), then the answer
    and the counter's numbers."""
    strip = token_html(tokenizer, [r["id"] for r in rows], [r["channel"] for r in rows],
                       [r["forced"] for r in rows], [r["N"] for r in rows])
    answer = "".join(r["token"] for r in rows if r["channel"] == "answer").strip()
    last = rows[-1] if rows else {"N": 0, "tripped": False}
    return Html(f'{strip}<div style="font-family:monospace"><b>{html.escape(answer) or "<i>(no answer)</i>"}</b><br>'
                f'<small>thinking tokens N = {last["N"]}, {"tripped" if last["tripped"] else "not tripped"}, '
                f'{len(rows)} tokens generated, {sum(r["forced"] for r in rows)} of them forced</small></div>')


def reply_html(result) -> Html:
    """A GenerationResult: the thinking in grey, the answer in black, and the counter's numbers."""
    status = (f"thinking tokens N = {result.thinking_tokens}, budget {result.budget}, "
              f"{'tripped' if result.budget_tripped else 'not tripped'}, {result.generated_tokens} tokens generated")
    think = html.escape(result.thinking).replace("\n", "<br>")
    answer = html.escape(result.answer).replace("\n", "<br>")
    return Html(f'<div style="font-family:monospace"><div style="color:#888;border-left:3px solid #ccc;'
                f'padding-left:6px">{think or "<i>(no thinking)</i>"}</div><div><b>{answer}</b></div>'
                f'<small>{status}</small></div>')


def accuracy_vs_budget(model, questions, expected, budgets, parse, max_new_tokens: int = 128, **options) -> dict:
    """Share of questions answered correctly at each budget: budget -> accuracy.
    questions: messages (or strings); expected: the right answers; parse: answer text -> value or None."""
    out = {}
    for b in budgets:
        right = 0
        for q, want in zip(questions, expected):
            r = model.generate(q, budget=b, max_new_tokens=max_new_tokens, **options)
            right += parse(r.answer) == want
        out[b] = right / len(questions)
    return out


def eval_curves(report: dict) -> dict:
    """Accuracy-vs-budget curves per level from an EVAL.json report (`scripts/evaluate_tiny.py`:
    report["arithmetic"]["think"][budget name][level] in percent, budget names "0", "2", ..., "unlimited").
    -> {label: {budget (None = unlimited): accuracy in 0..1}}"""
    think = report["arithmetic"]["think"]
    levels = list(next(iter(think.values())))
    curves = {}
    for level in levels:
        label = "all levels" if level == "all" else f"level {level.lstrip('L')}"
        curves[label] = {None if name == "unlimited" else int(name): by_level[level] / 100
                         for name, by_level in think.items() if by_level.get(level) is not None}
    return curves


def accuracy_figure(curves: dict, title: str = "accuracy against the thinking budget",
                    levels: dict | None = None) -> Figure:
    """{label: {budget: accuracy}}; budget None (unlimited) is drawn at the right end, budget 0 at the left.
    levels: {label: accuracy} drawn as dashed horizontal lines (e.g. no-think mode)."""
    fig = figure(6, 3.2)
    ax = fig.add_subplot()
    finite = [b for xy in curves.values() for b in xy if b is not None]
    right = max(finite) * 2 if finite else 1
    def x(b):
        return right if b is None else max(b, 0.5)       # 0 drawn at 1/2 on the log axis
    for j, (label, xy) in enumerate(curves.items()):
        ax.semilogx([x(b) for b in xy], list(xy.values()), "o-", label=label, ms=4, base=2, color=f"C{j}")
    for j, (label, y) in enumerate((levels or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{j}", label=label)
    budgets = sorted({b for xy in curves.values() for b in xy}, key=lambda b: float("inf") if b is None else b)
    ax.set_xticks([x(b) for b in budgets], ["∞" if b is None else str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("thinking budget B (tokens; ∞ = unlimited)"), ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02), ax.set_title(title, fontsize=10), ax.legend(fontsize=8)
    return fig


# --- kernels -------------------------------------------------------------------------------------

def best_time(fn, *args, repeat: int = 3) -> float:
    """The fastest of `repeat` calls of fn(*args), in seconds (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def moe_token_by_token(x, experts, weights, gate_proj, up_proj, down_proj) -> np.ndarray:
    """The MoE block the naive way: every token runs its own k experts, so an expert's weights are read once
    per token that chose it.  Same arguments and result as `ops.moe_experts`."""
    out = np.zeros_like(x)
    for t in range(len(x)):
        for e, w in zip(experts[t], weights[t]):
            out[t] += w * ops.swiglu(x[t:t + 1], gate_proj[e], up_proj[e], down_proj[e])[0]
    return out


def online_softmax(scores: np.ndarray, values: np.ndarray, block: int):
    """softmax(scores) @ values for one query, reading `block` keys at a time and never holding all the
    weights: keep the running max m, the sum l of exp(s - m) and acc = sum exp(s - m) v; when a block
    raises the max, rescale l and acc by exp(m_old - m_new). Returns the output and the (m, l) after each block.
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


def timing_figure(rows: dict, xlabel: str, title: str = "") -> Figure:
    """{label: {x: seconds}} on log-log axes."""
    fig = figure(5.5, 3.2)
    ax = fig.add_subplot()
    for label, xy in rows.items():
        ax.loglog(list(xy), [1e3 * t for t in xy.values()], "o-", label=label, ms=4)
    ax.set_xlabel(xlabel), ax.set_ylabel("ms (best of a few)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig
