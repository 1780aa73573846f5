"""ipywidgets panels for the notebooks: sliders wired to the functions of `viz` and `balance`.

Every panel is a `Panel` over a small function that returns what to show (a figure or an HTML snippet), so the
logic stays in tested code and a panel is a few lines: controls, and an Output that shows the function's result
each time a control moves (like `ipywidgets.interactive`, without its captured output: see `Panel`). A first call
that fails raises at once, so a notebook run top to bottom fails loudly.
The panel the browser check moves carries the CSS class CHECK (`scripts/browser_check.py`).
"""
from __future__ import annotations

import ipywidgets as W
import numpy as np
from IPython.display import display

from . import balance, evaluate, routing, viz

CHECK = "mq-check"


class Panel(W.VBox):
    """Controls above an Output: f(**values) is called at once and whenever a control changes, and what it
    returns (and anything it displays) is shown in the Output.  result: f's last return value.

    The Output is filled by setting its `outputs` (MIME bundles, as `Output.append_display_data` does), never by
    capturing a running cell's output in a `with out:` block as `ipywidgets.interactive` does. A headless run
    (nbclient, `jupyter nbconvert --execute`) mimics every Output widget that captures: each captured display makes
    the client send a comm_msg back on the kernel's shell socket while it waits on that socket for the cell's
    execute_reply, and such a send can swallow the wakeup of a reply that has just arrived, so that the client
    sleeps until the cell timeout (tests/test_notebooks.py has the trace). An Output whose outputs are set is
    state, not captured output: the client never answers it, so a notebook of panels cannot stall that way, with
    any client."""

    def __init__(self, f, controls: dict):
        self.f, self.controls, self.out = f, dict(controls), W.Output()
        super().__init__([*self.controls.values(), self.out])
        self.result = None
        self.update(raise_errors=True)       # a first call that fails raises here, so a notebook run fails loudly
        for control in self.controls.values():
            control.observe(lambda change: self.update(), names="value")

    @property
    def kwargs(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self, raise_errors: bool = False) -> None:
        from IPython.utils.capture import capture_output
        try:
            with capture_output() as shown:
                result = self.f(**self.kwargs)
            if result is None:
                raise RuntimeError(f"{self.f.__name__} returned None; a panel function must return what to show")
        except Exception:
            if raise_errors:
                raise
            import traceback
            self.out.outputs = ({"output_type": "stream", "name": "stderr", "text": traceback.format_exc()},)
            return
        self.result = result
        bundles = [{"output_type": "stream", "name": "stdout", "text": shown.stdout}] if shown.stdout else []
        bundles += [_display_data(o.data, o.metadata) for o in shown.outputs]
        bundles.append(_display_data(*_format(result)))
        self.out.outputs = tuple(bundles)


def _format(obj) -> tuple[dict, dict]:
    from IPython.core.formatters import format_display_data
    return format_display_data(obj)


def _display_data(data: dict, metadata: dict | None) -> dict:
    """A display_data output as a notebook stores it (binary data base64-encoded)."""
    import base64
    data = {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for k, v in data.items()}
    return {"output_type": "display_data", "data": data, "metadata": metadata or {}}


def panel(f, check: bool = False, **controls) -> Panel:
    """A Panel of f over the controls (keyword: the argument of f it sets); check=True tags it for the browser
    check."""
    w = Panel(f, controls)
    if check:
        w.add_class(CHECK)
    return w


def _slider(cls, value, lo, hi, step=1, description="", continuous=False, **kw):
    return cls(value=value, min=lo, max=hi, step=step, description=description, continuous_update=continuous,
               style={"description_width": "initial"}, layout=W.Layout(width="480px"), **kw)


# --- RoPE ----------------------------------------------------------------------------------------

def rope_rotation(head_dim: int = 64, pairs=(0, 4, 8, 16, 31)) -> Panel:
    """Position slider: each pair of dimensions rotates by position * inv_freq_i."""
    def show(position, theta):
        return viz.rope_pairs_figure(position, head_dim, theta, pairs)
    return panel(show, check=True, position=_slider(W.IntSlider, 3, 0, 200, description="position m"),
                 theta=W.Dropdown(options=[("10,000", 10_000.0), ("1,000,000", 1_000_000.0)], value=10_000.0,
                                  description="theta"))


def yarn(head_dim: int = 128, theta: float = 1_000_000.0, original_max: int = 32_768) -> Panel:
    """YaRN factor slider: the ramp, the frequencies and the attention factor."""
    def show(factor):
        return viz.yarn_figure(factor, head_dim, theta, original_max)
    return panel(show, factor=_slider(W.FloatSlider, 4.0, 1.25, 16.0, 0.25, description="YaRN factor"))


# --- routing -------------------------------------------------------------------------------------

def router_step(model, ids) -> Panel:
    """Pick a token and a MoE layer; see its router logits, softmax, top-k, weights and the weighted sum."""
    c = model.config
    inputs = routing.moe_inputs(model, ids)
    tokens = viz.token_strings(model.tokenizer, ids) if model.tokenizer else [str(i) for i in ids]
    layers = sorted(inputs)

    def show(position, layer):
        s = routing.router_step(model, ids, position, layer, inputs)
        rows = [{"expert": int(e), "probability": p, "weight": w, "|expert output|": float(np.linalg.norm(o))}
                for e, p, w, o in zip(s.experts, s.chosen_probs, s.weights, s.expert_outputs)]
        display(viz.table(rows, {"probability": "{:.4f}".format, "weight": "{:.4f}".format,
                                 "|expert output|": "{:.3f}".format}))
        display(viz.Html(f"<small>5-6. weighted sum of the expert outputs vs the model's MoE block: max difference "
                         f"{np.abs(s.output - s.block_output).max():.2e}; chosen probabilities sum to "
                         f"{s.chosen_probs.sum():.3f} of the {c.num_experts} experts' 1.0</small>"))
        return viz.router_step_figure(s, tokens[position])
    return panel(show, check=True, position=_slider(W.IntSlider, min(5, len(ids) - 1), 0, len(ids) - 1,
                                                    description="token position"),
                 layer=W.Dropdown(options=layers, value=layers[0], description="MoE layer"))


def routing_text(model, texts: dict) -> Panel:
    """Pick a text: every token coloured by its first-choice expert, one line per MoE layer."""
    def show(name):
        ids = texts[name]
        _, trace = model.trace(ids)
        return viz.routing_html(viz.token_strings(model.tokenizer, ids), routing.first_choices(trace), trace.layers,
                                model.config.num_experts)
    return panel(show, name=W.Dropdown(options=list(texts), description="text"))


def top_k_loss(model, sequences, reference: dict | None = None) -> Panel:
    """k slider: the mean loss with k experts per token at inference (the model was trained with the config's k)."""
    c = model.config
    seen = dict(reference or {})

    def show(k):
        if k not in seen:
            seen.update(evaluate.loss_vs_top_k(model, sequences, [k]))
        xy = dict(sorted(seen.items()))
        return viz.curves_figure({"loss": xy}, "experts per token k",
                                 title=f"k = {k}: loss {seen[k]:.3f} (trained with k = {c.num_experts_per_tok})")
    return panel(show, k=_slider(W.IntSlider, c.num_experts_per_tok, 1, c.num_experts, description="k"))


def drop_experts(model, sequences, loads: dict, max_drop: int | None = None) -> Panel:
    """n slider: the loss after removing each layer's n most (or least) used experts."""
    c = model.config
    max_drop = max_drop or c.num_experts - c.num_experts_per_tok
    seen = {}

    def show(n, order):
        if (n, order) not in seen:
            seen[(n, order)] = evaluate.loss_vs_dropped(model, sequences, loads, [n], order)[n]
        curves = {o: dict(sorted((m, v) for (m, oo), v in seen.items() if oo == o))
                  for o in ("most", "least", "random") if any(oo == o for _, oo in seen)}
        return viz.curves_figure({f"{o} used first": xy for o, xy in curves.items()}, "experts removed per layer",
                                 title=f"{n} {order}-used removed: loss {seen[(n, order)]:.3f}")
    return panel(show, n=_slider(W.IntSlider, 1, 0, max_drop, description="experts removed"),
                 order=W.Dropdown(options=["most", "least", "random"], value="most", description="which"))


def expert_cache(needed: dict, n_experts: int, prefetch: dict | None = None, curves: dict | None = None,
                 lengths=None) -> Panel:
    """Cache size slider: every layer's hit rate against C (LRU, LFU, Belady, LRU with prefetch), the chosen C
    marked, with 95% intervals there when the sequence lengths are given (resampling sequences).
    needed: layer -> [T, K]; prefetch: layer -> [T, K] guesses; curves: precomputed points to start from."""
    from . import expert_cache as ec
    K = max(np.asarray(v).shape[1] for v in needed.values())
    seen = {layer: {p: dict(xy) for p, xy in c.items()} for layer, c in (curves or {}).items()}

    def run(layer, policy, capacity):
        guess = (prefetch or {}).get(layer) if policy == "prefetch" else None
        return ec.simulate(needed[layer], capacity, "lru" if policy == "prefetch" else policy, prefetch=guess)

    def show(capacity):
        intervals, rows = {}, []
        columns = list(ec.POLICIES) + (["prefetch"] if prefetch else [])
        for layer in needed:
            row = {"layer": layer, **{viz.CACHE_STYLES[p][0]: None for p in columns}}   # None: not for this layer
            for policy in columns:
                if policy == "prefetch" and prefetch.get(layer) is None:
                    continue
                result = run(layer, policy, capacity)
                seen.setdefault(layer, {}).setdefault(policy, {})[capacity] = result.hit_rate
                seen[layer][policy] = dict(sorted(seen[layer][policy].items()))
                if lengths is not None:
                    intervals.setdefault(layer, {})[policy] = ec.hit_rate_interval(result, lengths)
                row[viz.CACHE_STYLES[policy][0]] = result.hit_rate
            rows.append(row)
        display(viz.table(rows, {k: (lambda v: "" if v is None else f"{v:.3f}") for k in rows[0] if k != "layer"}))
        return viz.cache_curves_figure(seen, n_experts, capacity, intervals,
                                       title=f"hit rate with {capacity} of {n_experts} experts cached per layer")
    return panel(show, check=True, capacity=_slider(W.IntSlider, min(2 * K, n_experts), K, n_experts,
                                                     description="experts cached per layer C"))


# --- load balancing ------------------------------------------------------------------------------

def load_history(steps, loads: dict) -> Panel:
    """Layer slider over a training history: loads is layer -> [S, E]."""
    layers = sorted(loads)

    def show(layer):
        return viz.load_history_figure(np.asarray(steps), np.asarray(loads[layer]), f"layer {layer}")
    return panel(show, layer=W.SelectionSlider(options=layers, value=layers[0], description="layer",
                                               continuous_update=False))


def balance_lab(steps: int = 200, domains=None, seed: int = 0) -> Panel:
    """Sliders for the balance-loss coefficient and the micro-batch size (sequences of one domain each), and the
    expert capacity factor; the four methods trained side by side (`balance.train_router`)."""
    domains = domains or balance.Domains.make(seed=seed)
    runs = {}

    def run(method, coef=0.0, micro_batch=1, capacity=None):
        key = (method, coef, micro_batch, capacity)
        if key not in runs:
            runs[key] = balance.train_router(method, coef=coef, micro_batch=micro_batch, steps=steps,
                                             capacity_factor=capacity, domains=domains, seed=seed)
        return runs[key]

    def show(coef, micro_batch, capacity):
        results = [run("none", capacity=capacity), run("micro", coef, micro_batch, capacity),
                   run("global", coef, micro_batch, capacity), run("bias", capacity=capacity)]
        return viz.lab_figure(results)
    return panel(show, check=True,
                 coef=W.FloatLogSlider(value=0.3, base=10, min=-3, max=1, step=0.25, description="coefficient",
                                       continuous_update=False, style={"description_width": "initial"}),
                 micro_batch=_slider(W.IntSlider, 1, 1, 16, description="micro-batch (sequences)"),
                 capacity=W.Dropdown(options=[("none", None), ("1.0", 1.0), ("1.25", 1.25), ("1.5", 1.5)], value=1.0,
                                     description="capacity factor", style={"description_width": "initial"}))


# --- generation and the thinking budget ----------------------------------------------------------

def budget(model, prompt: str = "What is 2 + 3? /think", max_budget: int = 64, max_new_tokens: int = 160,
           **options) -> Panel:
    """Budget slider with live generation (greedy unless sampling options are given): every token, the forced
    ones in orange, with the counter's N under it."""
    options.setdefault("temperature", 0.0)

    def show(B):
        rows = evaluate.budget_steps(model, prompt, B, max_new_tokens=max_new_tokens, seed=0, **options)
        return viz.budget_steps_strip(model.tokenizer, rows)
    return panel(show, check=True, B=_slider(W.IntSlider, 4, 0, max_budget, description="budget B"))


def chat(model, prompt: str = "What is 457 + 385?", max_new_tokens: int = 200, **options) -> Panel:
    """A prompt, the mode (/think or /no_think appended) and a budget (its maximum means unlimited)."""
    options.setdefault("temperature", 0.0)
    unlimited = 64

    def show(text, mode, B):
        message = f"{text} {mode}" if mode else text
        r = model.generate(message, budget=None if B >= unlimited else B, max_new_tokens=max_new_tokens, seed=0,
                           **options)
        display(viz.Html(f"<small>sent: <code>{message}</code> (the flag is text the model reads: the soft switch); "
                         f"the model thought: {r.thinking_mode}</small>"))
        return viz.reply_html(r)
    return panel(show, check=True, text=W.Text(value=prompt, description="message", continuous_update=False),
                 mode=W.ToggleButtons(options=[("/think", "/think"), ("/no_think", "/no_think"), ("no flag", "")],
                                      value="/think", description="flag"),
                 B=_slider(W.IntSlider, unlimited, 0, unlimited, description=f"budget ({unlimited} = unlimited)"))



def auto_budget(correct, spent, budgets, predicted, levels, margin: float, unlimited: float | None = None) -> Panel:
    """Mean-cost slider: the most accurate fixed B within that cost, the probe's schedule for it and the oracle's
    choice, circled on the accuracy-cost chart, with the budget each gives each level on average.
    correct, spent: [Q, G] (`auto_budget.outcomes`); predicted, levels: [Q]; margin: the probe schedule's."""
    from . import auto_budget as ab
    levels = np.asarray(levels)
    top = int(np.ceil(spent[:, -1].mean()))
    costs = np.arange(0, top + 1, 0.5)
    fixed = ab.fixed_points(correct, spent, budgets)
    scheduled = ab.scheduler_points(correct, spent, budgets, predicted, costs, margin)
    oracle = ab.oracle_points(correct, spent, costs)

    def given(choice):
        """The mean budget each level got (unlimited counted as what it spent)."""
        b = np.array([spent[q, g] if budgets[g] is None else budgets[g] for q, g in enumerate(choice)], float)
        return ", ".join(f"L{lv} {b[levels == lv].mean():.0f}" for lv in sorted(set(levels.tolist())))

    def show(mean_cost):
        best_fixed = ab.best_within(fixed, mean_cost)
        choices = {"one B for every question": None if best_fixed is None else
                   np.full(len(levels), budgets.index(best_fixed["budget"])),
                   "probe's B per question": ab.scheduler_choice(predicted, budgets, mean_cost, margin),
                   "oracle": ab.oracle_choice(correct, spent, mean_cost)}
        picks, rows = {}, []
        for name, choice in choices.items():
            if choice is None:
                picks[name] = None
                rows.append({"policy": name, "accuracy": "no B spends this little"})
                continue
            p = picks[name] = ab.point(correct, spent, choice)
            rows.append({"policy": name, "accuracy": f"{p['rate']:.3f} [{p['low']:.3f}, {p['high']:.3f}]",
                         "tokens spent": f"{p['cost']:.1f}", "mean B given per level": given(choice)})
        display(viz.table(rows))
        return viz.auto_budget_figure(fixed, scheduled, oracle, unlimited, mark=mean_cost, marked=picks,
                                      title=f"{mean_cost} thinking tokens per question on average allowed")
    return panel(show, check=True, mean_cost=_slider(W.IntSlider, min(20, top), 0, top,
                                                     description="thinking tokens per question (mean) allowed"))


# --- kernels -------------------------------------------------------------------------------------

def attention_timing(n_heads: int = 8, n_kv_heads: int = 2, head_dim: int = 64) -> Panel:
    """Sequence-length slider: ops.attention (full score matrix) against kernels.attention (online softmax),
    prefill of S tokens, timed live."""
    from . import kernels, ops
    rng = np.random.default_rng(0)

    def show(S):
        q = rng.normal(size=(S, n_heads, head_dim)).astype(np.float32)
        k = rng.normal(size=(n_kv_heads, S, head_dim)).astype(np.float32)      # KV heads first, as a cache holds them
        v = rng.normal(size=(n_kv_heads, S, head_dim)).astype(np.float32)
        t_ops = evaluate.best_time(ops.attention, q, k, v, 0)
        t_ker = evaluate.best_time(kernels.attention, q, k, v, 0)
        diff = np.abs(ops.attention(q, k, v, 0) - kernels.attention(q, k, v, 0)).max()
        return viz.Html(f"<pre>S = {S}: score matrix {n_heads} x {S} x {S} fp32 = {4 * n_heads * S * S / 1e6:.1f} MB\n"
                        f"ops.attention     {1e3 * t_ops:8.2f} ms\nkernels.attention {1e3 * t_ker:8.2f} ms   "
                        f"ratio {t_ops / t_ker:.1f}x, max difference {diff:.1e}</pre>")
    return panel(show, check=True, S=_slider(W.IntSlider, 256, 64, 2048, 64, description="tokens S"))
