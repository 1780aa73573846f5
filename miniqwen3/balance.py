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
micro-batch (often a few sequences of one domain) to spread over all experts, which pushes against experts that
specialise in a domain (the lab below shows it on a toy). Qwen3 counts f over the global batch (all
micro-batches) and multiplies it with each micro-batch's P, so only the whole batch must be balanced.

DeepSeek-V3 (arXiv 2412.19437, section 2.1.2) scores experts differently and balances mostly without a loss:
the affinity of token t for expert i is s_ti = sigmoid(u_t . e_i) (each expert on its own, not a softmax); the
top-k is chosen on s + b with a per-expert bias b that is used only for the choice: the gate weights are the
chosen s (unbiased) over their sum. After each step, b_i is lowered by gamma if expert i was overloaded in the
step's batch and raised by gamma if underloaded (`update_bias`). A small complementary sequence-wise balance
loss alpha * sum_i f_i P_i (per sequence; `sequence_balance_loss`) guards against extreme imbalance inside one
sequence.

Expert capacity (GShard, Switch Transformer): an expert computes at most ceil(CF * T * k / E) assignments of a
batch of T tokens (CF the capacity factor); the tokens beyond that are dropped, in token order, and a dropped
assignment contributes nothing (`expert_capacity`, `capacity_keep`). With a capacity, an unbalanced router costs tokens.

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
from .routing import domain_expert_share, specialisation


# --- the loss, step by step ----------------------------------------------------------------------

def routed_fraction(experts: np.ndarray, n_experts: int, mask: np.ndarray | None = None) -> np.ndarray:
    """f_i: the number of tokens that chose expert i, over the number of tokens.  experts: [T, K] -> [E]
    Sums to K. `mask` [T] (1 for real tokens, 0 for padding) leaves padding out, as transformers does."""
    experts = np.asarray(experts)
    w = np.ones(len(experts)) if mask is None else np.asarray(mask, dtype=np.float64)
    counts = np.bincount(experts.ravel(), weights=np.repeat(w, experts.shape[1]), minlength=n_experts)
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


# --- DeepSeek-V3: the bias update and the sequence-wise loss ------------------------------------

def update_bias(bias: np.ndarray, counts: np.ndarray, gamma: float) -> np.ndarray:
    """DeepSeek-V3's bias update at the end of a step: b_i - gamma if expert i was overloaded in the step's
    batch, b_i + gamma if underloaded (load against the mean load, as in Wang et al. 2024:
    b_i += gamma * sign(mean(c) - c_i); an expert exactly at the mean keeps its bias).
    bias: [E], counts: [E] assignments per expert in the step -> new bias [E]"""
    counts = np.asarray(counts, dtype=np.float64)
    return np.asarray(bias, dtype=np.float64) + gamma * np.sign(counts.mean() - counts)


def sequence_balance_loss(scores: np.ndarray, experts: np.ndarray, seq_len: int) -> float:
    """DeepSeek-V3's complementary sequence-wise balance loss without its factor alpha, averaged over sequences of
    seq_len tokens. In one sequence of T tokens:
        f_i = E / (K T) * (tokens routed to expert i)       1 at balance
        P_i = mean over tokens of s'_ti,  s'_ti = s_ti / sum_j s_tj      (the affinities made a distribution)
        loss = sum_i f_i P_i                                1 at balance
    The report writes f with the indicator of expert i being in a token's top-k; here that is the top-k the token
    was actually routed to (of s + b, given as `experts`).
    scores: [T, E] (sigmoid affinities), experts: [T, K] (the experts the tokens were routed to)"""
    E, K = scores.shape[1], experts.shape[1]
    out = []
    for s in micro_batches(len(scores), seq_len):
        f = routed_fraction(experts[s], E) * E / K
        P = np.mean(scores[s] / scores[s].sum(axis=1, keepdims=True), axis=0)
        out.append(float(np.sum(f * P)))
    return float(np.mean(out))


# --- expert capacity ---------------------------------------------------------------------------

def expert_capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Assignments one expert computes per batch: ceil(CF * T * k / E). CF = 1 is exactly the balanced share."""
    if capacity_factor <= 0:
        raise ValueError(f"capacity_factor={capacity_factor}: expected a positive number")
    return int(np.ceil(capacity_factor * n_tokens * top_k / n_experts - 1e-9))


def capacity_keep(experts: np.ndarray, n_experts: int, capacity: int, priority: str = "token") -> np.ndarray:
    """Which (token, slot) assignments an expert with room for `capacity` computes; each expert keeps the first
    `capacity` assignments in the serving order and drops the rest. Dropped: sum_i max(0, n_i - capacity).
      priority "token": token order, whatever the slot (Switch Transformer; Megatron's "position" policy);
               "slot":  all first choices in token order, then all second choices, ... (GShard's top-2)
    experts: [T, K] -> keep [T, K] bool"""
    if priority not in ("token", "slot"):
        raise ValueError(f"priority {priority!r}: expected 'token' or 'slot'")
    T, K = experts.shape
    order = experts.ravel() if priority == "token" else experts.T.ravel()     # [T*K] the serving order
    onehot = np.eye(n_experts, dtype=np.int64)[order]                        # [T*K, E]
    rank = np.cumsum(onehot, axis=0)[np.arange(T * K), order] - 1            # this expert's assignments before
    keep = rank < capacity
    return keep.reshape(T, K) if priority == "token" else keep.reshape(K, T).T


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
        """n_seqs sequences of seq_len tokens, one domain per sequence, laid out one sequence after another in a
        random order; every domain has the same number of sequences (up to one), as in a large global batch whose
        domain mix hardly changes from step to step.  -> x [T, F], y [T, O], domain [T] with T = n_seqs * seq_len"""
        G, F = self.means.shape
        O = self.maps.shape[1]
        domain = np.repeat(rng.permutation(np.arange(n_seqs) % G), seq_len)
        x = self.means[domain] + self.noise * rng.normal(size=(len(domain), F))
        y = (x @ self.maps.reshape(G * O, F).T).reshape(len(x), G, O)[np.arange(len(x)), domain]   # A_domain x
        return x, y, domain


@dataclass
class LabResult:
    method: str
    load: np.ndarray          # [steps, E] share of assignments per expert at each step
    task_loss: np.ndarray     # [steps] training task loss (dropped assignments contribute nothing)
    balance_loss: np.ndarray  # [steps] the balance loss the method computes (micro, global, sequence-wise), 0 for none
    dropped: np.ndarray       # [steps] share of assignments dropped by the capacity (0 without one)
    share: np.ndarray         # [G, E] domain -> expert share on held-out batches after training
    bias: np.ndarray          # [E] DeepSeek-V3's selection bias at the end (zeros for the other methods)
    held_out: dict            # `evaluate_router` on held-out batches: task loss, dropped share, load, ...


METHODS = ("none", "micro", "global", "bias")
SCORING = {"none": "softmax", "micro": "softmax", "global": "softmax", "bias": "sigmoid"}


def route(x, router_w, k, bias=None, scoring="softmax"):
    """Router of the lab, through `ops.router`: Qwen3's softmax (weights renormalised over the chosen), or
    DeepSeek-V3's sigmoid affinities with the optional selection bias (added to choose the top-k, not used for
    the weights, which are the chosen affinities over their sum). In float64.
    x: [T, F], router_w: [E, F] -> scores [T, E], experts [T, K], g [T, K]"""
    return ops.router(x @ router_w.T, k, norm_topk_prob=True, selection_bias=bias, scoring=scoring)


def capacity_keep_groups(experts: np.ndarray, n_experts: int, capacity_factor: float | None,
                         group: int, priority: str = "token") -> np.ndarray:
    """`capacity_keep` applied to each group of `group` consecutive tokens (the tokens one device computes
    together), with capacity ceil(CF * group * k / E); all kept when capacity_factor is None.  -> [T, K] bool"""
    keep = np.ones(experts.shape, dtype=bool)
    if capacity_factor is None:
        return keep
    for s in micro_batches(len(experts), group):
        cap = expert_capacity(s.stop - s.start, experts.shape[1], n_experts, capacity_factor)
        keep[s] = capacity_keep(experts[s], n_experts, cap, priority)
    return keep


def expert_outputs(x, experts_w, chosen):
    """W_e x for each token's chosen experts.  x: [T, F], experts_w: [E, O, F], chosen: [T, K] -> [T, K, O]"""
    E, O, F = experts_w.shape
    every = (x @ experts_w.reshape(E * O, F).T).reshape(len(x), E, O)     # [T, E, O] all experts, one matmul
    return np.take_along_axis(every, chosen[:, :, None], axis=1)


def lab_gradients(x, y, router_w, experts_w, k, f_rows=None, coef=0.0, bias=None, scoring="softmax", keep=None):
    """One forward and backward pass of the lab's MoE layer, by hand.
    y_hat = sum over the kept chosen experts of g_k * (W_e x) (a dropped assignment adds nothing);
    task loss = sum over tokens of |y_hat - y|^2 / (2T);
    balance term (when f_rows is given) = coef / T * sum_t q_t . f_t, with q_t the token's router distribution
    (softmax p, or the affinities made a distribution s / sum s) and f_t its f times the loss's constant (E f for
    the Switch loss, E / K * count / T_seq for DeepSeek-V3's), f held constant as in the real losses.
      experts: dL/dW_e = sum over tokens that kept e of g * r x^T          (r = (y_hat - y) / T)
      router:  with a_j = r . (W_j x), dL/dg_j = a_j; g_j is z's softmax (or sigmoid(z) over the sum) over the
               chosen, so dL/dz_j = g_j (a_j - sum_i g_i a_i), times (1 - s_j) for sigmoid; the balance term adds
               coef / T * q (f - q . f), times (1 - s) for sigmoid.
    x: [T, F], y: [T, O], router_w: [E, F], experts_w: [E, O, F], f_rows: [T, E], keep: [T, K] bool
    -> task loss, grad_router [E, F], grad_experts [E, O, F], scores [T, E], chosen [T, K]"""
    T = len(x)
    p, chosen, g = route(x, router_w, k, bias, scoring)
    out = expert_outputs(x, experts_w, chosen)                         # [T, K, O] each chosen expert's output
    if keep is not None:
        out = out * keep[..., None]
    y_hat = np.einsum("tk,tko->to", g, out)
    r = (y_hat - y) / T
    loss = 0.5 * np.sum((y_hat - y) ** 2) / T
    gate = np.zeros_like(p)                                           # [T, E] each token's kept weight per expert
    np.put_along_axis(gate, chosen, g if keep is None else g * keep, axis=1)   # a token picks an expert once
    E, O, F = experts_w.shape
    grad_experts = ((gate[:, :, None] * r[:, None, :]).reshape(T, E * O).T @ x).reshape(E, O, F)
    a = np.einsum("to,tko->tk", r, out)                                # dL/dg
    dz = np.zeros_like(p)
    np.put_along_axis(dz, chosen, g * (a - np.sum(g * a, axis=1, keepdims=True)), axis=1)
    if f_rows is not None:
        q = p if scoring == "softmax" else p / p.sum(axis=1, keepdims=True)
        dz += coef / T * q * (f_rows - np.sum(q * f_rows, axis=1, keepdims=True))
    if scoring == "sigmoid":
        dz *= 1 - p
    return loss, dz.T @ x, grad_experts, p, chosen


@ops.serial_blas
def evaluate_router(domains: Domains, router_w, experts_w, k: int, bias=None, scoring="softmax",
                    capacity_factor: float | None = None, n_seqs: int = 16, seq_len: int = 32,
                    capacity_seqs: int | None = None, drop_priority: str = "token", n_batches: int = 8,
                    seed: int = 0) -> dict:
    """The trained layer on n_batches held-out batches of n_seqs sequences, the capacity applied as in training.
    -> task loss, share of assignments dropped, share of the gate weight they carried, load [E], its CV and MaxVio,
    domain share [G, E], specialisation"""
    rng = np.random.default_rng(seed)
    E = len(router_w)
    losses, dropped, weight, counts, chosen_all, dom_all = [], [], [], np.zeros(E), [], []
    for _ in range(n_batches):
        x, y, dom = domains.sample(n_seqs, seq_len, rng)
        _, chosen, g = route(x, router_w, k, bias, scoring)
        keep = capacity_keep_groups(chosen, E, capacity_factor, (capacity_seqs or n_seqs) * seq_len, drop_priority)
        y_hat = np.einsum("tk,tko->to", g * keep, expert_outputs(x, experts_w, chosen))
        losses.append(0.5 * np.sum((y_hat - y) ** 2) / len(x))
        dropped.append(1 - keep.mean())
        weight.append(np.sum(g * ~keep) / np.sum(g))
        counts += np.bincount(chosen.ravel(), minlength=E)
        chosen_all.append(chosen), dom_all.append(dom)
    share = domain_expert_share(np.concatenate(chosen_all), np.concatenate(dom_all), E, len(domains.means))
    load = counts / counts.sum()
    return {"task loss": float(np.mean(losses)), "dropped": float(np.mean(dropped)),
            "dropped weight": float(np.mean(weight)), "load": load,
            "cv": coefficient_of_variation(load), "max_violation": max_violation(load), "share": share,
            "specialisation": specialisation(share)}


@ops.serial_blas
def train_router(method: str = "global", coef: float = 0.3, micro_batch: int = 1, n_experts: int = 8, k: int = 2,
                 steps: int = 300, n_seqs: int = 16, seq_len: int = 32, lr: float = 0.1, gamma: float = 0.001,
                 alpha: float = 0.01, capacity_factor: float | None = None, capacity_seqs: int | None = None,
                 drop_priority: str = "token",
                 domains: Domains | None = None, seed: int = 0) -> LabResult:
    """Train a top-k router and its linear experts by gradient descent on the toy domains, with one of
    METHODS for balance:
      "none"    Qwen3's softmax router, task loss only;
      "micro"   + coef * the Switch loss E sum f P inside each micro-batch of `micro_batch` sequences;
      "global"  + the same loss with f counted over the whole batch of n_seqs sequences (Qwen3);
      "bias"    DeepSeek-V3: sigmoid affinities, top-k on s + b, weights from s; after each step b moves by
                gamma against the step's load (`update_bias`); + alpha * the sequence-wise loss per sequence.
    coef is far above Qwen3's 0.001: this toy has one layer and a different task loss scale.
    capacity_factor: each expert computes at most ceil(CF * tokens * k / E) assignments of each group of
    `capacity_seqs` sequences (default: the whole batch); the rest are dropped (in `drop_priority` order, see
    `capacity_keep`) and counted. None: no capacity.

    A step: sample n_seqs sequences (one domain each), route, count f and the capacity, backpropagate
    (`lab_gradients`), take a gradient step; with "bias", update the bias."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {METHODS}")
    if not 1 <= micro_batch <= n_seqs:
        raise ValueError(f"micro_batch={micro_batch} sequences must be in 1..n_seqs={n_seqs}")
    if capacity_seqs is not None and not 1 <= capacity_seqs <= n_seqs:
        raise ValueError(f"capacity_seqs={capacity_seqs} sequences must be in 1..n_seqs={n_seqs}")
    domains = domains or Domains.make(seed=seed)
    rng = np.random.default_rng(seed + 1)
    G, F = domains.means.shape
    O = domains.maps.shape[1]
    scoring = SCORING[method]
    router_w = rng.normal(size=(n_experts, F)) * 0.3
    experts_w = rng.normal(size=(n_experts, O, F)) * 0.1
    bias = np.zeros(n_experts) if method == "bias" else None
    size = micro_batch * seq_len
    group = (capacity_seqs or n_seqs) * seq_len
    loads, task, aux, dropped = [], [], [], []
    for _ in range(steps):
        x, y, _ = domains.sample(n_seqs, seq_len, rng)
        p, chosen, _ = route(x, router_w, k, bias, scoring)           # the choice: f and the capacity count it
        f_rows = None
        if method in ("micro", "global"):
            f_rows = np.empty((len(x), n_experts))
            f_all = routed_fraction(chosen, n_experts)
            for s in micro_batches(len(x), size):
                f_rows[s] = n_experts * (routed_fraction(chosen[s], n_experts) if method == "micro" else f_all)
            aux.append(micro_batch_loss(p, chosen, size) if method == "micro" else global_batch_loss(p, chosen, size))
        elif method == "bias":
            f_rows = np.empty((len(x), n_experts))
            for s in micro_batches(len(x), seq_len):
                f_rows[s] = n_experts / k * routed_fraction(chosen[s], n_experts)
            aux.append(sequence_balance_loss(p, chosen, seq_len))
        else:
            aux.append(0.0)
        keep = capacity_keep_groups(chosen, n_experts, capacity_factor, group, drop_priority)
        c = alpha if method == "bias" else coef
        loss, grad_router, grad_experts, p, chosen = lab_gradients(x, y, router_w, experts_w, k, f_rows, c, bias,
                                                                   scoring, keep)
        task.append(loss)
        dropped.append(1 - keep.mean())
        counts = np.bincount(chosen.ravel(), minlength=n_experts)
        loads.append(counts / counts.sum())
        if method == "bias":
            bias = update_bias(bias, counts, gamma)
        router_w -= lr * grad_router
        experts_w -= lr * grad_experts
    held = evaluate_router(domains, router_w, experts_w, k, bias, scoring, capacity_factor, n_seqs, seq_len,
                           capacity_seqs, drop_priority, seed=seed + 2)
    return LabResult(method, np.array(loads), np.array(task), np.array(aux), np.array(dropped), held["share"],
                     np.zeros(n_experts) if bias is None else bias, held)


# --- runs over seeds -----------------------------------------------------------------------------

# two-sided 95% quantiles of Student's t with 1..10 degrees of freedom (standard tables)
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def seed_interval(values) -> tuple[float, float, float]:
    """Mean of a few runs (one value per seed) and its 95% t-interval: mean +- t(n-1) * sd / sqrt(n), sd with
    ddof 1.  values: [N], 2 <= N <= 11 -> (mean, low, high)"""
    v = np.asarray(values, dtype=np.float64)
    if not 2 <= len(v) <= len(T95) + 1:
        raise ValueError(f"{len(v)} values: the t table here covers 2..{len(T95) + 1} runs")
    half = T95[len(v) - 2] * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


LAB_MEASURES = ("task loss", "dropped", "dropped weight", "cv", "max_violation", "specialisation")


def seed_summary(runs: dict) -> list[dict]:
    """One row per method of {method: [LabResult, one per seed]}: each held-out measure (LAB_MEASURES) as
    (mean, low, high) over the seeds (`seed_interval`)."""
    return [{"method": m, "seeds": len(rs), **{k: seed_interval([r.held_out[k] for r in rs]) for k in LAB_MEASURES}}
            for m, rs in runs.items()]


def paired_difference(runs_a: list, runs_b: list, measure: str, ratio: bool = False):
    """Seed by seed (the same domains, initial weights and batches), measure(a) - measure(b), or with ratio=True
    log(measure(a) / measure(b)); with its `seed_interval`, given back as a difference or as a ratio (exp).
    -> per-seed values [N] (differences, or ratios), (mean, low, high)"""
    a = np.array([r.held_out[measure] for r in runs_a])
    b = np.array([r.held_out[measure] for r in runs_b])
    if not ratio:
        return a - b, seed_interval(a - b)
    mean, lo, hi = seed_interval(np.log(a / b))
    return a / b, (float(np.exp(mean)), float(np.exp(lo)), float(np.exp(hi)))
