"""Load balancing of a Mixture-of-Experts router, in plain NumPy: the auxiliary loss as transformers computes it,
the micro-batch and global-batch variants, imbalance measures, and a small lab that trains a router.

The load-balancing loss (Switch Transformer, as transformers' `load_balancing_loss_func` computes it for
Qwen3-MoE), over T tokens, E experts, top-k routing:

    p = softmax(router logits)                      [T, E]
    f_i = (tokens that chose expert i) / T          [E]   sums to k (each token makes k choices)
    P_i = mean over tokens of p[:, i]               [E]   sums to 1
    loss = E * sum_i f_i * P_i

At perfect balance f_i = k/E and P_i = 1/E, so the loss is k (not 1). f comes from a top-k, which has no
gradient: the loss trains the router through P only, pushing probability away from experts with a large f.

Micro-batch vs global batch (Qiu et al. 2025, arXiv 2501.11873): computed per micro-batch, f asks every
micro-batch (often a few sequences of one domain) to spread over all experts, which forbids experts that
specialise in a domain. Qwen3 counts f over the global batch (all micro-batches) and multiplies it with
each micro-batch's P, so only the whole batch must be balanced.

DeepSeek-V3 (arXiv 2412.19437) balances without a loss: top-k is chosen on p + b with a per-expert bias b
that is not used for the weights; after each step b_i -= gamma for overloaded experts and += gamma for
underloaded ones.

Which form trained the embedded tiny model: `scripts/train_tiny.py` took E * sum f P per MoE layer and averaged
over layers (`load_balancing_loss(..., per_layer=True)`), with f counted over the whole step's batch; transformers'
own `load_balancing_loss_func` stacks the layers' rows first (`per_layer=False`, the default here).

Shapes (see `miniqwen3.config`): T tokens, E experts, K experts per token, L layers, G domains, F features,
O outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .routing import domain_expert_share, expert_load, specialisation


# --- the loss, step by step ----------------------------------------------------------------------

def routed_fraction(experts: np.ndarray, n_experts: int, mask: np.ndarray | None = None) -> np.ndarray:
    """f_i: the number of tokens that chose expert i, over the number of tokens.  experts: [T, K] -> [E]
    Sums to K. `mask` [T] (1 for real tokens, 0 for padding) leaves padding out, as transformers does."""
    w = np.ones(len(experts)) if mask is None else np.asarray(mask, dtype=np.float64)
    counts = np.zeros(n_experts)
    np.add.at(counts, experts, np.broadcast_to(w[:, None], experts.shape))
    return counts / w.sum()


def mean_probability(probs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """P_i: the router probability of expert i averaged over tokens.  probs: [T, E] -> [E], sums to 1"""
    w = np.ones(len(probs)) if mask is None else np.asarray(mask, dtype=np.float64)
    return (probs.astype(np.float64) * w[:, None]).sum(axis=0) / w.sum()


def balance_loss(f: np.ndarray, P: np.ndarray) -> float:
    """E * sum_i f_i * P_i: k at perfect balance, up to E when every token sends all its weight to k experts."""
    return float(len(P) * np.sum(f * P))


def load_balancing_loss(router_logits, top_k: int, mask: np.ndarray | None = None, per_layer: bool = False) -> float:
    """The auxiliary loss E * sum_i f_i * P_i over the router logits of all MoE layers.
    per_layer=False: as transformers' `load_balancing_loss_func`: the layers' rows are stacked into one set of
    L*T rows, then one f and one P. per_layer=True: one loss per layer, averaged over the layers (how
    scripts/train_tiny.py trained the tiny model). The two agree for one layer.
    router_logits: a list of [T, E] arrays (one per layer) or one [T, E] array; mask: [T] or None."""
    layers = [router_logits] if isinstance(router_logits, np.ndarray) else list(router_logits)
    if per_layer:
        return float(np.mean([load_balancing_loss(l, top_k, mask) for l in layers]))
    logits = np.concatenate([np.asarray(l, dtype=np.float32) for l in layers])      # [L*T, E]
    probs, experts, _ = ops.router(logits, top_k, norm_topk_prob=False)
    m = None if mask is None else np.tile(np.asarray(mask).reshape(-1), len(layers))
    return balance_loss(routed_fraction(experts, probs.shape[1], m), mean_probability(probs, m))


def micro_batches(n_tokens: int, size: int) -> list[slice]:
    """Consecutive slices of `size` tokens (the last may be shorter)."""
    return [slice(s, min(s + size, n_tokens)) for s in range(0, n_tokens, size)]


def micro_batch_loss(probs: np.ndarray, experts: np.ndarray, size: int) -> float:
    """The loss computed inside each micro-batch of `size` tokens (f and P both local), averaged.
    probs: [T, E], experts: [T, K]"""
    E = probs.shape[1]
    return float(np.mean([balance_loss(routed_fraction(experts[s], E), mean_probability(probs[s]))
                          for s in micro_batches(len(probs), size)]))


def global_batch_loss(probs: np.ndarray, experts: np.ndarray, size: int) -> float:
    """The global-batch loss: f counted over all tokens (all micro-batches, all ranks), multiplied with
    each micro-batch's own P, averaged over micro-batches.  probs: [T, E], experts: [T, K]"""
    E = probs.shape[1]
    f = routed_fraction(experts, E)
    return float(np.mean([balance_loss(f, mean_probability(probs[s])) for s in micro_batches(len(probs), size)]))


# --- imbalance measures --------------------------------------------------------------------------

def max_min_ratio(load: np.ndarray) -> float:
    """Load of the busiest expert over that of the idlest: 1 when balanced, inf when an expert is idle."""
    lo = float(np.min(load))
    return float("inf") if lo == 0 else float(np.max(load)) / lo


def coefficient_of_variation(load: np.ndarray) -> float:
    """Standard deviation of the loads (over the E experts, ddof 0) over their mean: 0 when balanced.
    Under top-k routing its largest value is sqrt(E/k - 1) (`worst_case_cv`)."""
    load = np.asarray(load, dtype=np.float64)
    return float(load.std() / load.mean())


def max_violation(load: np.ndarray) -> float:
    """MaxVio (Wang et al. 2024, Loss-Free Balancing, arXiv 2408.15664): max load / mean load - 1.
    0 when balanced; under top-k routing at most E/k - 1 (`worst_case_max_violation`)."""
    load = np.asarray(load, dtype=np.float64)
    return float(load.max() / load.mean() - 1)


def worst_case_cv(n_experts: int, top_k: int) -> float:
    """The largest CV top-k routing can produce: every token's k choices on the same k experts.
    Each expert gets at most one slot per token, so the loads are T on k experts and 0 on E - k; with mean
    m = Tk/E: var = (k/E)(T - m)^2 + (1 - k/E) m^2 = T^2 (k/E)(1 - k/E), so CV = sqrt(E/k - 1)."""
    return float(np.sqrt(n_experts / top_k - 1))


def worst_case_max_violation(n_experts: int, top_k: int) -> float:
    """The largest MaxVio of top-k routing: an expert takes at most all T tokens, the mean is Tk/E: E/k - 1."""
    return n_experts / top_k - 1


def imbalance(load: np.ndarray) -> dict:
    """All three measures of one load vector [E]."""
    return {"max/min": max_min_ratio(load), "cv": coefficient_of_variation(load), "max_violation": max_violation(load)}


# --- a router lab --------------------------------------------------------------------------------

@dataclass
class Domains:
    """A toy task with several domains. Each token has features x = mean of its domain + noise, and a target
    y = A_domain x, so an expert (a linear map) that sees only one domain can fit it exactly."""
    means: np.ndarray     # [G, F]
    maps: np.ndarray      # [G, O, F]
    noise: float

    @classmethod
    def make(cls, n_domains: int = 4, n_features: int = 16, n_out: int = 8, noise: float = 0.5, seed: int = 0):
        rng = np.random.default_rng(seed)
        means = rng.normal(size=(n_domains, n_features)) * 1.5
        maps = rng.normal(size=(n_domains, n_out, n_features)) / np.sqrt(n_features)
        return cls(means, maps, noise)

    def sample(self, n_seqs: int, seq_len: int, rng: np.random.Generator):
        """n_seqs sequences of seq_len tokens, one domain per sequence, laid out one sequence after another.
        -> x [T, F], y [T, O], domain [T] with T = n_seqs * seq_len"""
        G, F = self.means.shape
        domain = np.repeat(rng.integers(0, G, size=n_seqs), seq_len)
        x = self.means[domain] + self.noise * rng.normal(size=(len(domain), F))
        y = np.einsum("tof,tf->to", self.maps[domain], x)
        return x, y, domain


@dataclass
class LabResult:
    method: str
    load: np.ndarray          # [steps, E] share of assignments per expert at each step
    task_loss: np.ndarray     # [steps]
    balance_loss: np.ndarray  # [steps] the loss the method computes (micro or global), 0 for none/bias
    share: np.ndarray         # [G, E] domain -> expert share on a held-out batch after training
    bias: np.ndarray          # [E] DeepSeek-V3's selection bias at the end (zeros for the other methods)


METHODS = ("none", "micro", "global", "bias")


def route(x, router_w, k, bias=None):
    """Router of the lab: Qwen3's (`ops.router`, weights renormalised over the chosen), plus DeepSeek-V3's
    optional selection bias (added to p to choose the top-k, not used for the weights). In float64.
    x: [T, F], router_w: [E, F] -> p [T, E], experts [T, K], g [T, K]"""
    return ops.router(x @ router_w.T, k, norm_topk_prob=True, selection_bias=bias)


def lab_gradients(x, y, router_w, experts_w, k, f_rows=None, coef=0.0, bias=None):
    """One forward and backward pass of the lab's MoE layer, by hand.
    y_hat = sum over the chosen experts of g_k * (W_e x); task loss = sum over tokens of |y_hat - y|^2 / (2T);
    balance term (when f_rows is given) = coef * E / T * sum_t p_t . f_t, f held constant as in the real loss.
      experts: dL/dW_e = sum over tokens that chose e of g * r x^T          (r = (y_hat - y) / T)
      router:  the weights g are a softmax over the chosen logits, so dL/dz_j = g_j (a_j - sum_i g_i a_i)
               with a_j = r . (W_j x); the balance term adds coef * E / T * p (f - p . f).
    x: [T, F], y: [T, O], router_w: [E, F], experts_w: [E, O, F], f_rows: [T, E] (each token's f)
    -> task loss, grad_router [E, F], grad_experts [E, O, F], p [T, E], chosen [T, K]"""
    T, E = len(x), len(router_w)
    p, chosen, g = route(x, router_w, k, bias)
    out = np.einsum("tkof,tf->tko", experts_w[chosen], x)           # [T, K, O] each chosen expert's output
    y_hat = np.einsum("tk,tko->to", g, out)
    r = (y_hat - y) / T
    loss = 0.5 * np.sum((y_hat - y) ** 2) / T
    grad_experts = np.zeros_like(experts_w)
    np.add.at(grad_experts, chosen, np.einsum("tk,to,tf->tkof", g, r, x))
    a = np.einsum("to,tko->tk", r, out)                                # dL/dg
    dz = np.zeros_like(p)
    np.put_along_axis(dz, chosen, g * (a - np.sum(g * a, axis=1, keepdims=True)), axis=1)
    if f_rows is not None:
        dz += coef * E / T * p * (f_rows - np.sum(p * f_rows, axis=1, keepdims=True))
    return loss, dz.T @ x, grad_experts, p, chosen


def train_router(method: str = "global", coef: float = 0.3, micro_batch: int = 1, n_experts: int = 8, k: int = 2,
                 steps: int = 300, n_seqs: int = 16, seq_len: int = 32, lr: float = 0.1, gamma: float = 0.001,
                 domains: Domains | None = None, seed: int = 0) -> LabResult:
    """Train a top-k router and its linear experts by gradient descent on the toy domains, with one of
    METHODS for balance: "none"; "micro" (the loss per micro-batch of `micro_batch` sequences); "global" (f
    over the whole batch of n_seqs sequences); "bias" (DeepSeek-V3's loss-free bias update, step `gamma`).
    The coefficient is far above Qwen3's 0.001: this toy has one layer and a different task loss scale.

    A step: sample n_seqs sequences (one domain each), route, take f per micro-batch or over the batch,
    backpropagate (`lab_gradients`), take a gradient step; with "bias", move the bias against the load."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {METHODS}")
    if not 1 <= micro_batch <= n_seqs:
        raise ValueError(f"micro_batch={micro_batch} sequences must be in 1..n_seqs={n_seqs}")
    domains = domains or Domains.make(seed=seed)
    rng = np.random.default_rng(seed + 1)
    G, F = domains.means.shape
    O = domains.maps.shape[1]
    router_w = rng.normal(size=(n_experts, F)) * 0.3
    experts_w = rng.normal(size=(n_experts, O, F)) * 0.1
    bias = np.zeros(n_experts) if method == "bias" else None
    size = micro_batch * seq_len
    loads, task, aux = [], [], []
    for _ in range(steps):
        x, y, _ = domains.sample(n_seqs, seq_len, rng)
        f_rows = None
        if method in ("micro", "global"):
            # f depends only on the top-k, which the weights do not change: route once to count it
            _, chosen, _ = route(x, router_w, k)
            f_rows = np.empty((len(x), n_experts))
            for s in micro_batches(len(x), size):
                f_rows[s] = routed_fraction(chosen[s] if method == "micro" else chosen, n_experts)
        loss, grad_router, grad_experts, p, chosen = lab_gradients(x, y, router_w, experts_w, k, f_rows, coef, bias)
        task.append(loss)
        loads.append(expert_load(chosen, n_experts))
        if method == "micro":
            aux.append(micro_batch_loss(p, chosen, size))
        elif method == "global":
            aux.append(global_batch_loss(p, chosen, size))
        else:
            aux.append(0.0)
        if method == "bias":
            bias += gamma * np.sign(loads[-1].mean() - loads[-1])          # overloaded down, underloaded up
        router_w -= lr * grad_router
        experts_w -= lr * grad_experts
    x, _, dom = domains.sample(64, seq_len, np.random.default_rng(seed + 2))
    _, chosen, _ = route(x, router_w, k, bias)
    return LabResult(method, np.array(loads), np.array(task), np.array(aux),
                     domain_expert_share(chosen, dom, n_experts, G), np.zeros(n_experts) if bias is None else bias)
