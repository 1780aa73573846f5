"""Figures and HTML for the notebooks: RoPE and YaRN, routing, load, the thinking budget, kernels.

Drawing only: what is drawn is computed elsewhere (`ops`, `routing`, `evaluate`, `balance`) and passed in, or
computed here with those modules' functions. Figures are matplotlib `Figure`s made without pyplot (no global
state, nothing shown twice); they render as PNG wherever IPython displays them. HTML snippets (token strips,
tables) are `Html` strings, which Jupyter renders and tests can search.

Shape letters as in `miniqwen3.config`.
"""
from __future__ import annotations

import html
import io
import math

import matplotlib
import matplotlib.figure
import matplotlib.patches
import numpy as np

from . import ops
from .config import RopeScaling


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

def rope_pairs_figure(position: int, head_dim: int = 64, theta: float = 10_000.0, pairs=(0, 4, 8, 16, 31)) -> Figure:
    """Where RoPE moves a vector, pair by pair: each dimension pair (i, i + D/2) of x = ones is a 2-D vector
    rotated by position * inv_freq_i. Fast pairs (small i) spin, slow pairs barely move."""
    positions = np.arange(position + 1)
    rotated = ops.rope_rotate(np.ones(head_dim), positions, head_dim, theta)    # [T, D]
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
        ax.semilogx(d, ops.rope_decay(head_dim, theta, d), label=f"theta {theta:,.0f}", lw=1)
    ax.set_xlabel("relative distance m - n"), ax.set_ylabel("score / score at 0")
    ax.set_title("q = k = ones: the score decays (and wobbles) with distance", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def rope_score_spread_figure(distances, cases: dict, title: str = "") -> Figure:
    """For each case {label: scores [N, T]} (N vector pairs, T distances): the mean score against distance and the
    band holding the middle 90% of the pairs."""
    fig = figure(7, 3)
    ax = fig.add_subplot()
    for label, s in cases.items():
        line, = ax.semilogx(distances, s.mean(axis=0), lw=1.2, label=f"{label}: mean")
        ax.fill_between(distances, *np.percentile(s, [5, 95], axis=0), color=line.get_color(), alpha=0.2,
                        label=f"{label}: 5-95% of pairs")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("relative distance m - n"), ax.set_ylabel("score / D")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
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

def router_step_figure(step, token: str = "") -> Figure:
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


def routing_html(tokens: list[str], first: np.ndarray, layers, n_experts: int) -> Html:
    """The text once per layer, each token on the colour of its first-choice expert (hover: the expert)."""
    colors = expert_colors(n_experts)
    rows = []
    for layer, experts in zip(layers, first):
        spans = "".join(f'<span title="expert {e}" style="background:{_css(colors[e])};white-space:pre">'
                        f'{html.escape(t.replace(chr(10), "↵"))}</span>' for t, e in zip(tokens, experts))
        rows.append(f'<div style="font-family:monospace;margin:2px 0"><b>L{layer}</b> {spans}</div>')
    return Html("".join(rows))


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


# --- expert caches and pruning -------------------------------------------------------------------

CACHE_STYLES = {"lru": ("LRU", "C0", "o-"), "lfu": ("LFU", "C1", "s-"), "belady": ("Belady (optimum)", "C2", "^-"),
                "prefetch": ("LRU + next-layer prefetch", "C3", "D-")}


def cache_curves_figure(curves: dict, n_experts: int, mark: int | None = None, intervals: dict | None = None,
                        title: str = "") -> Figure:
    """Hit rate against cache size, one panel per MoE layer.  curves: layer -> {policy: {C: rate}};
    intervals: layer -> {policy: (lo, hi)} at C = mark, drawn as error bars; the dotted line is C / E, what uniform
    random routing would give any cache that does not see the future."""
    layers = list(curves)
    fig = figure(min(3.0 * len(layers), 13), 3.0)
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        for policy, xy in curves[layer].items():
            label, color, style = CACHE_STYLES.get(policy, (policy, None, "o-"))
            ax.plot(list(xy), list(xy.values()), style, color=color, label=label, ms=3, lw=1.1)
            if mark is not None and intervals and policy in intervals.get(layer, {}):
                lo, hi = intervals[layer][policy]
                y = xy.get(mark, (lo + hi) / 2)
                ax.errorbar([mark], [y], yerr=[[y - lo], [hi - y]], color=color, capsize=3, lw=1)
        xs = sorted({c for xy in curves[layer].values() for c in xy})
        ax.plot(xs, [c / n_experts for c in xs], ":", color="gray", lw=1, label="C / E (uniform routing)")
        if mark is not None:
            ax.axvline(mark, color="k", lw=0.6, alpha=0.5)
        ax.set_title(f"layer {layer}", fontsize=9), ax.set_xlabel("cache size C (experts)", fontsize=8)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("hit rate")
    axes[-1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def offload_rows(report: dict) -> list[dict]:
    """The runs of benchmarks/bench_offload.py as rows: contender, budget (GiB, None: the whole machine), decode
    tok/s with a 95% bootstrap interval over the decoded tokens (of the mean time per token), disk GB per token,
    hit rate and C. Runs that did not finish are left out."""
    from .routing import bootstrap_interval
    rows = []
    for r in report["runs"]:
        if r.get("returncode") != 0:
            continue
        sp, times = r["spec"], np.asarray(r["token_s"])
        lo, hi = bootstrap_interval(times)
        rows.append({"contender": "offload" if sp.get("capacity") else "mmap", "name": sp["name"],
                     "budget": sp.get("budget_GiB"), "capacity": sp.get("capacity"),
                     "tok_s": 1 / times.mean(), "tok_s_lo": 1 / hi, "tok_s_hi": 1 / lo,
                     "disk_GB": r["disk_GB_per_token"], "hit_rate": r.get("hit_rate")})
    return rows


def offload_figure(report: dict, title: str = "") -> Figure:
    """Decode speed and disk bytes per token against the memory budget: experts offloaded into C slots per layer
    (miniqwen3.offload) against the memory map under the same budget, from a benchmarks/bench_offload.py report."""
    rows, s = offload_rows(report), report["sizes"]
    machine = report["machine"].get("mem_GB", 0) / 1.073741824          # GB -> GiB
    needed = s["moe_layers"] * s["top_k"] * s["expert_bytes"] / 1e9      # experts a token needs, GB
    fig = figure(10, 3.3)
    left, right = fig.subplots(1, 2)
    for name, color in (("mmap", "tab:gray"), ("offload", "tab:blue")):
        pts = sorted((r for r in rows if r["contender"] == name and r["budget"] is not None), key=lambda r: r["budget"])
        if not pts:
            continue
        x = np.array([r["budget"] for r in pts])
        y = np.array([r["tok_s"] for r in pts])
        err = [y - np.array([r["tok_s_lo"] for r in pts]), np.array([r["tok_s_hi"] for r in pts]) - y]
        label = "memory map (page cache)" if name == "mmap" else "offloaded experts, C slots per layer"
        left.errorbar(x, y, yerr=err, fmt="o-", color=color, ms=4, capsize=3, lw=1.2, label=label)
        right.plot(x, [r["disk_GB"] for r in pts], "o-", color=color, ms=4, lw=1.2, label=label)
        if name == "offload":
            for r in pts:
                left.annotate(f"C={r['capacity']}", (r["budget"], r["tok_s"]), textcoords="offset points",
                              xytext=(4, 4), fontsize=7)
            right.plot(x, [needed * (1 - r["capacity"] / s["experts"]) for r in pts], ":", color=color, lw=1,
                       label="misses if routing were uniform: (1 - C/E) x needed")
    for r in rows:
        if r["budget"] is None:
            left.errorbar([machine], [r["tok_s"]], yerr=[[r["tok_s"] - r["tok_s_lo"]], [r["tok_s_hi"] - r["tok_s"]]],
                          fmt="s", color="k", ms=5, capsize=3, label="memory map, the whole machine")
            right.plot([machine], [r["disk_GB"]], "s", color="k", ms=5, label="memory map, the whole machine")
    right.axhline(needed, color="tab:red", lw=0.8, ls="--", label=f"experts a token needs ({needed:.2f} GB)")
    left.set_xlabel("memory budget (GiB)"), left.set_ylabel("decode tokens/s")
    right.set_xlabel("memory budget (GiB)"), right.set_ylabel("disk GB read per decoded token")
    left.set_ylim(bottom=0), right.set_ylim(bottom=0)
    left.legend(fontsize=7), right.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def pruning_figure(rows: list[dict], title: str = "") -> Figure:
    """Quality against memory saved.  rows: {"label", "saved" (share of parameters), "series" (name of the line),
    "delta" (change in loss), "lo", "hi"} for the left panel, and optionally "exact", "exact_lo", "exact_hi" (reply
    exactness) for the right one."""
    fig = figure(10, 3.2)
    left, right = fig.subplots(1, 2)
    for name in dict.fromkeys(r["series"] for r in rows):
        pts = [r for r in rows if r["series"] == name]
        x = np.array([100 * r["saved"] for r in pts])
        y = np.array([r["delta"] for r in pts])
        left.errorbar(x, y, yerr=[y - np.array([r["lo"] for r in pts]), np.array([r["hi"] for r in pts]) - y],
                      fmt="o-", ms=3, capsize=2, lw=1, label=name)
        if all("exact" in r for r in pts):
            e = np.array([100 * r["exact"] for r in pts])
            right.errorbar(x, e, yerr=[e - 100 * np.array([r["exact_lo"] for r in pts]),
                                       100 * np.array([r["exact_hi"] for r in pts]) - e],
                           fmt="o-", ms=3, capsize=2, lw=1, label=name)
    left.axhline(0, color="k", lw=0.6)
    left.set_xlabel("parameters removed (% of the model)"), left.set_ylabel("change in loss (nats)")
    left.legend(fontsize=7)
    right.set_xlabel("parameters removed (% of the model)"), right.set_ylabel("greedy reply exact (%)")
    right.set_ylim(-2, 102)
    if right.lines:
        right.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
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
    from .balance import coefficient_of_variation
    from .routing import specialisation
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
        ax.set_title(f"task loss (held out {r.held_out['task loss']:.3f},\n"
                     f"{100 * r.held_out['dropped']:.1f}% of assignments dropped)", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    return fig


# --- the thinking budget -------------------------------------------------------------------------

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


def budget_spent_figure(summaries: dict, no_think: dict | None = None, title: str = "") -> Figure:
    """Left: accuracy against the mean thinking tokens actually spent at each budget, with the 95% Wilson intervals
    as error bars; the first curve's points are labelled with their B. Right: the share of runs the budget cut,
    against B. summaries: {label: {budget (None = unlimited): {"rate", "low", "high", "spent", "cut"}}} as
    `evaluate.budget_summary` returns; no_think: {label: accuracy} drawn as dashed lines."""
    fig = figure(9.5, 3.4)
    ax, cut = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for j, (label, by_budget) in enumerate(summaries.items()):
        pts = list(by_budget.items())
        x = [v["spent"] for _, v in pts]
        y = np.array([v["rate"] for _, v in pts])
        err = np.array([[v["rate"] - v["low"] for _, v in pts], [v["high"] - v["rate"] for _, v in pts]])
        ax.errorbar(x, y, yerr=err, fmt="o-", ms=3, lw=1.6 if j == 0 else 0.9, capsize=2, color=f"C{j}", label=label)
        if j == 0:
            labels = {}                           # points that coincide (B past every run's length) share a label
            for (b, v), xi, yi in zip(pts, x, y):
                labels.setdefault((xi, yi), []).append("∞" if b is None else str(b))
            for (xi, yi), names in labels.items():
                ax.annotate(", ".join(names), (xi, yi), textcoords="offset points", xytext=(3, -10), fontsize=7,
                            color="C0")
        finite = [(b, v["cut"]) for b, v in pts if b is not None]
        cut.plot([b for b, _ in finite], [c for _, c in finite], "o-", ms=3, color=f"C{j}", label=label,
                 lw=1.6 if j == 0 else 0.9)
    for j, (label, y) in enumerate((no_think or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{j}", label=label)
    ax.set_xlabel("thinking tokens actually spent (mean at each B)"), ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02), ax.legend(fontsize=7), ax.set_title(title, fontsize=10)
    cut.set_xlabel("thinking budget B (tokens)"), cut.set_ylabel("share of runs the budget cut")
    cut.set_ylim(-0.02, 1.02), cut.set_title("where the budget bites", fontsize=10)
    return fig


def _errorbar(ax, pts, fmt, color, label, **kw):
    x = [p["cost"] for p in pts]
    y = np.array([p["rate"] for p in pts])
    err = np.array([[p["rate"] - p["low"] for p in pts], [p["high"] - p["rate"] for p in pts]])
    ax.errorbar(x, y, yerr=err, fmt=fmt, ms=3.5, capsize=2, lw=1.1, color=color, label=label, **kw)


def auto_budget_figure(fixed, scheduler, oracle, unlimited: float | None = None, mark: float | None = None,
                       marked: dict | None = None, title: str = "") -> Figure:
    """Accuracy against the mean thinking tokens spent per question, with 95% Wilson intervals, for one budget for
    every question (each point labelled with its B), the probe's schedules (one per mean cost allowed) and the
    oracle. Points are `auto_budget.point` dicts ("cost", "rate", "low", "high"); unlimited: the accuracy without
    a budget (dashed); mark: a mean cost drawn as a vertical line, marked: {label: point} circled there."""
    fig = figure(7.5, 3.8)
    ax = fig.add_subplot()
    _errorbar(ax, fixed, "o-", "C0", "one B for every question")
    for p in fixed:
        ax.annotate("∞" if p["budget"] is None else str(p["budget"]), (p["cost"], p["rate"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7, color="C0")
    _errorbar(ax, sorted(scheduler, key=lambda p: p["cost"]), "-", "C1", "probe's B per question",
              errorevery=max(1, len(scheduler) // 12))
    ax.plot([p["cost"] for p in oracle], [p["rate"] for p in oracle], "-", color="C2", lw=1.4,
            label="oracle (knows each outcome)")
    if unlimited is not None:
        ax.axhline(unlimited, ls="--", lw=1, color="gray", label="unlimited thinking")
    if mark is not None:
        ax.axvline(mark, color="k", lw=0.7, alpha=0.6)
    for j, (label, p) in enumerate((marked or {}).items()):
        if p is not None:
            ax.plot([p["cost"]], [p["rate"]], "o", ms=11, mfc="none", mec=f"C{j}", mew=1.6)
    ax.set_xlabel("thinking tokens spent per question (mean)"), ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02), ax.legend(fontsize=7, loc="lower right"), ax.set_title(title, fontsize=10)
    return fig


def probe_figure(actual, predicted, groups, weights, title: str = "") -> Figure:
    """Left: the probe's predicted thinking length against the length of the unlimited run, one colour per group
    (level), with the diagonal. Right: its weights on the standardized features, largest magnitude first.
    actual, predicted, groups: [N]; weights: [H]"""
    fig = figure(10, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.4])
    actual, predicted, groups = np.asarray(actual), np.asarray(predicted), np.asarray(groups)
    for j, g in enumerate(sorted(set(groups.tolist()))):
        sel = groups == g
        left.plot(actual[sel], predicted[sel], "o", ms=3.5, alpha=0.6, color=f"C{j}", label=f"level {g}")
    lo, hi = min(actual.min(), predicted.min()) - 2, max(actual.max(), predicted.max()) + 2
    left.plot([lo, hi], [lo, hi], ":", color="gray", lw=1)
    left.set_xlabel("thinking tokens of the unlimited run"), left.set_ylabel("probe's prediction")
    left.legend(fontsize=7), left.set_title(title, fontsize=10)
    w = np.asarray(weights)
    order = np.argsort(-np.abs(w))
    right.bar(np.arange(len(w)), w[order], width=1.0, color="C0")
    right.set_xlabel("feature (hidden dimension), by |weight|"), right.set_ylabel("weight (tokens per s.d.)")
    shown = order[:5]
    right.set_title("largest: " + ", ".join(f"dim {d} ({w[d]:+.1f})" for d in shown), fontsize=8)
    return fig


# --- kernels -------------------------------------------------------------------------------------

def timing_figure(rows: dict, xlabel: str, title: str = "") -> Figure:
    """{label: {x: seconds}} on log-log axes."""
    fig = figure(5.5, 3.2)
    ax = fig.add_subplot()
    for label, xy in rows.items():
        ax.loglog(list(xy), [1e3 * t for t in xy.values()], "o-", label=label, ms=4)
    ax.set_xlabel(xlabel), ax.set_ylabel("ms (best of a few)"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


# --- distillation (notebook 09) ------------------------------------------------------------------

def distill_results(report: dict, title: str = "") -> Figure:
    """The four students (and the teacher) of `scripts/distill.py`'s results.json: accuracy per level in think mode
    with no budget, all-levels accuracy against the thinking budget, and ThinkFollow; 95% Wilson intervals. Each
    student's legend entry carries its wall time."""
    def err(pts):          # [2, n] distances to the interval's ends (>= 0: a rate of 1 can sit a rounding above it)
        return np.maximum(0.0, [[p["rate"] - p["low"] for p in pts], [p["high"] - p["rate"] for p in pts]])

    fig = figure(12, 3.8)
    ax_lv, ax_b, ax_f = fig.subplots(1, 3, width_ratios=(1.3, 1.3, 1))
    models = report["models"]
    width = 0.8 / len(models)
    for j, (name, r) in enumerate(models.items()):
        cost = r.get("cost")
        label = name if not cost else \
            f"{name} ({(cost['train_seconds'] + cost['sample_seconds'] + cost['teacher_seconds']) / 60:.1f} min)"
        color = "k" if cost is None else f"C{j}"
        acc = r["eval"]["accuracy"]
        pts = [acc["unlimited"][f"L{lv}"] for lv in (1, 2, 3, 4)]
        x = np.arange(4) + (j - (len(models) - 1) / 2) * width
        ax_lv.bar(x, [p["rate"] for p in pts], width, color=color, alpha=0.35 if cost is None else 0.85,
                  yerr=err(pts), capsize=2, error_kw={"lw": 0.8}, label=label)
        cols = report["columns"]
        pts = [acc[c]["all"] for c in cols]
        ax_b.errorbar(np.arange(len(cols)) + (j - 2) * 0.06, [p["rate"] for p in pts],
                      yerr=err(pts), fmt="o-" if cost else "s--", ms=3.5, capsize=2, lw=1.1, color=color)
        f = r["eval"]["think_follow"]["all"]
        ax_f.barh(j, f["rate"], color=color, alpha=0.35 if cost is None else 0.85,
                  xerr=err([f]), capsize=2)
    ax_lv.set_xticks(range(4), [f"level {lv}" for lv in (1, 2, 3, 4)])
    ax_lv.set_ylabel("accuracy"), ax_lv.set_ylim(0, 1.05)
    ax_lv.set_title("think mode, no budget", fontsize=10)
    ax_lv.legend(fontsize=7, loc="upper right")
    ax_b.set_xticks(range(len(report["columns"])), [c.replace("unlimited", "∞") for c in report["columns"]],
                    fontsize=8)
    ax_b.set_ylim(0, 1.05), ax_b.set_title("all levels against the thinking budget", fontsize=10)
    ax_f.set_yticks(range(len(models)), list(models), fontsize=8)
    ax_f.invert_yaxis(), ax_f.set_xlim(0, 1.05)
    ax_f.set_title("ThinkFollow (soft switch)", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def distill_step_figure(labels, forward, reverse, position: int, tokens, p, q, title: str = "",
                        legend=("forward KL(p || q), off-policy", "reverse KL(q || p), on-policy")) -> Figure:
    """One distillation step on one sequence. Top: the forward KL(p || q) and the reverse KL(q || p) at every
    position of the reply (nats), `position` highlighted; bottom: the teacher's p and the student's q at that
    position over the tokens either ranks high.  labels: [T] the tokens predicted; forward, reverse: [T];
    tokens: [m] labels; p, q: [m]; legend: the names of the two per-position series"""
    fig = figure(9, 5.2)
    ax_kl, ax_p = fig.subplots(2, 1, height_ratios=(1, 1.2))
    x = np.arange(len(labels))
    ax_kl.bar(x - 0.2, forward, 0.4, color="C0", label=legend[0])
    ax_kl.bar(x + 0.2, reverse, 0.4, color="C3", label=legend[1])
    ax_kl.axvspan(position - 0.5, position + 0.5, color="gold", alpha=0.4)
    ax_kl.set_xticks(x, [repr(t)[1:-1] for t in labels], rotation=90, fontsize=6)
    ax_kl.set_ylabel("nats"), ax_kl.legend(fontsize=7, loc="upper right"), ax_kl.set_title(title, fontsize=9)
    y = np.arange(len(tokens))
    ax_p.barh(y - 0.2, p, 0.4, color="C0", label="teacher p")
    ax_p.barh(y + 0.2, q, 0.4, color="C1", label="student q")
    ax_p.set_yticks(y, [repr(t)[1:-1] for t in tokens], fontsize=8)
    ax_p.invert_yaxis(), ax_p.set_xlim(0, 1), ax_p.set_xlabel(f"next-token probability after position {position}")
    ax_p.legend(fontsize=8, loc="lower right")
    return fig
