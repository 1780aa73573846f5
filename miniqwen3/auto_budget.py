"""Auto-budget: a thinking budget B chosen per question from the prompt alone, under a mean cost per question.

The report's thinking budget is one B for every question (section 4.3, and the accuracy-against-budget curves of
its figures). A question that needs 15 tokens of thinking wastes nothing at B = 64; one that needs 54 fails at
B = 32. Choosing B per question should buy the same accuracy for fewer thinking tokens, if the need can be told
before any thinking is done. This module holds the pieces of that experiment (notebook 08):

- `prompt_features`: the prompt's last hidden state, the final RMSNorm's output at the prompt's last token (what
  the output head reads to choose the reply's first token, `<think>`)  -> [N, H];
- `fit_probe`: ridge regression from those features to the thinking length of the question's unlimited (greedy)
  run, in closed form on standardized features; `choose_l2` picks its penalty by k-fold cross-validation;
- `outcomes`: a table of held-out questions run at a grid of budgets (`miniqwen3.evaluate.budget_records`):
  correct [Q, G] and spent [Q, G], spent being the thinking tokens the model wrote (the budget counter's n,
  `GenerationResult.thinking_tokens`; the forced stop sentence is not counted, as the counter does not count it);
- three ways to give each question one of the G budgets, each a point (mean thinking tokens spent, accuracy):
    fixed      the same B for every question;
    scheduler  for a mean cost: the questions the probe says need least, served first, each with the smallest
               grid budget >= its predicted length + a margin, while their predicted spend fits the cost; the
               rest get the smallest budget (B = 0: no thinking) (`scheduler_choice`);
    oracle     knows every question's outcome at every budget: the most questions right for a mean cost
               (`oracle_choice`; optimal, checked against every assignment in tests/test_auto_budget.py).
  A fixed B spends min(B, length) on every question, so it is the long questions that cost: each one cut at B
  spends B tokens and, in arithmetic, is usually wrong all the same. The scheduler spends the tokens where they
  finish a question.

Cost is what a user pays per question, the mean thinking tokens spent; accuracy carries a 95% Wilson interval, and
two policies on the same questions are compared by a paired bootstrap over questions (`difference_interval`).
Shape letters: N prompts, H hidden, Q questions, G budgets in the grid (None, unlimited, last).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chat import prompt_for_generation
from .evaluate import rate


# --- the probe -----------------------------------------------------------------------------------

def prompt_features(model, prompts, enable_thinking=True) -> np.ndarray:
    """The final RMSNorm's output at the last token of each generation prompt (the chat template as
    `model.generate` renders it for these messages).  prompts: N messages lists (or strings) -> [N, H]"""
    rows = []
    for messages in prompts:
        ids = model.tokenizer.encode(prompt_for_generation(messages, enable_thinking))
        seen = {}
        model.forward(ids, last_only=True, record=lambda layer, **v: seen.update(v) if layer is None else None)
        rows.append(seen["norm"][-1])
    return np.array(rows, dtype=np.float64)


@dataclass
class Probe:
    """y ~ ((x - mean) / scale) . weights + bias, fitted by `fit_probe`."""
    mean: np.ndarray      # [H] the training features' means
    scale: np.ndarray     # [H] their standard deviations (1 where a feature is constant)
    weights: np.ndarray   # [H] on the standardized features
    bias: float           # the training targets' mean
    l2: float

    def predict(self, X) -> np.ndarray:
        """[N, H] -> [N]"""
        return ((np.asarray(X, np.float64) - self.mean) / self.scale) @ self.weights + self.bias


def fit_probe(X, y, l2: float) -> Probe:
    """Ridge regression on standardized features Z, the bias not penalized:
        bias = mean(y),  weights = argmin |Z w - (y - bias)|^2 + l2 |w|^2 = (Z^T Z + l2 I)^-1 Z^T (y - bias),
    solved as the least squares of Z stacked over sqrt(l2) I (so that l2 = 0 with a constant or repeated feature
    gives the smallest weights that fit, not a singular matrix).  X: [N, H], y: [N]"""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"fit_probe needs X [N, H] and y [N], got {X.shape} and {y.shape}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    Z, bias = (X - mean) / scale, float(y.mean())
    H = Z.shape[1]
    A = np.vstack([Z, np.sqrt(l2) * np.eye(H)])
    weights = np.linalg.lstsq(A, np.concatenate([y - bias, np.zeros(H)]), rcond=None)[0]
    return Probe(mean, scale, weights, bias, float(l2))


def cross_validated(X, y, l2: float, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each sample's prediction by a probe fitted on the other folds (k folds, shuffled by seed).  -> [N]"""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    out = np.empty(len(y))
    for f in range(folds):
        out[fold == f] = fit_probe(X[fold != f], y[fold != f], l2).predict(X[fold == f])
    return out


def choose_l2(X, y, l2s, folds: int = 5, seed: int = 0) -> tuple[float, dict]:
    """The penalty with the lowest cross-validated mean absolute error, and that error for each penalty."""
    errors = {l2: float(np.abs(cross_validated(X, y, l2, folds, seed) - np.asarray(y)).mean()) for l2 in l2s}
    return min(errors, key=errors.get), errors


# --- the outcome table ---------------------------------------------------------------------------

def outcomes(rows, budgets) -> tuple[np.ndarray, np.ndarray]:
    """`miniqwen3.evaluate.budget_records` rows (one per question and budget, the budgets in the order given
    for each question in turn) as arrays: correct [Q, G] bool, spent [Q, G] thinking tokens."""
    budgets = list(budgets)
    if len(rows) % len(budgets):
        raise ValueError(f"{len(rows)} rows are not whole questions of {len(budgets)} budgets each")
    got = [r["budget"] for r in rows]
    if got != budgets * (len(rows) // len(budgets)):
        raise ValueError(f"rows must give each question the budgets {budgets} in that order")
    G = len(budgets)
    correct = np.array([r["correct"] for r in rows], bool).reshape(-1, G)
    spent = np.array([r["spent"] for r in rows], np.int64).reshape(-1, G)
    return correct, spent


def point(correct, spent, choice) -> dict:
    """What giving question q the budget choice[q] costs and buys: the mean thinking tokens spent ("cost") and the
    accuracy with its Wilson interval (`rate`: k, n, rate, low, high).  choice: [Q] indices into the grid"""
    q = np.arange(len(choice))
    return {"cost": float(spent[q, choice].mean()), **rate(correct[q, choice])}


def fixed_points(correct, spent, budgets) -> list[dict]:
    """The same budget for every question, each budget of the grid in turn."""
    Q = correct.shape[0]
    return [{"budget": b, **point(correct, spent, np.full(Q, g))} for g, b in enumerate(budgets)]


def full_budget(predicted, budgets, margin: float = 0.0) -> np.ndarray:
    """For each question the smallest grid budget >= predicted + margin (unlimited, None, when none is); budgets
    ascending, None last.  predicted: [Q] -> [Q] indices into the grid"""
    finite = [b for b in budgets if b is not None]
    if finite != sorted(finite) or None in budgets[:len(finite)]:
        raise ValueError(f"budgets must ascend, unlimited (None) last: {budgets}")
    want = np.asarray(predicted, np.float64) + margin
    return np.minimum(np.searchsorted(np.array(finite, np.float64), want, side="left"), len(budgets) - 1)


def scheduler_choice(predicted, budgets, mean_cost: float, margin: float = 0.0) -> np.ndarray:
    """The probe's schedule for a mean cost per question. In order of predicted length (shortest first), each
    question gets its `full_budget` while the predicted spend of the questions served so far (their predicted
    lengths, at least 0) averages at most mean_cost; the others get the grid's first budget (B = 0: no thinking).
    The cost actually spent is what the runs spend (`point`), not the prediction.  predicted: [Q] -> [Q]"""
    predicted = np.asarray(predicted, np.float64)
    full = full_budget(predicted, budgets, margin)
    choice = np.zeros(len(predicted), np.int64)
    spend, allowed = np.maximum(predicted, 0.0), mean_cost * len(predicted)
    total = 0.0
    for q in np.argsort(predicted, kind="stable"):
        if total + spend[q] > allowed:
            break
        choice[q], total = full[q], total + spend[q]
    return choice


def scheduler_points(correct, spent, budgets, predicted, costs, margin: float = 0.0) -> list[dict]:
    """`scheduler_choice` at each mean cost allowed ("allowed"; "cost" is what the choice spends)."""
    return [{"allowed": float(c), **point(correct, spent, scheduler_choice(predicted, budgets, c, margin))}
            for c in costs]


def oracle_choice(correct, spent, mean_cost: float) -> np.ndarray:
    """The choice that gets the most questions right with mean spent <= mean_cost, knowing every outcome.
    Each question costs at least its cheapest budget's spend m_q; being right costs at least k_q, its cheapest
    right budget's. Any choice that gets a set S right costs >= sum_q m_q + sum_{q in S} (k_q - m_q), so the most
    right for a cost is the questions of smallest k_q - m_q, taken in that order while the cost allows.  -> [Q]"""
    Q = correct.shape[0]
    cheapest = spent.argmin(1)
    choice = cheapest.copy()
    total = spent[np.arange(Q), cheapest].sum()
    right_cost = np.where(correct, spent, np.iinfo(np.int64).max)
    cheapest_right = right_cost.argmin(1)
    extra = np.where(correct.any(1), right_cost[np.arange(Q), cheapest_right] - spent[np.arange(Q), cheapest],
                     np.iinfo(np.int64).max)
    for q in np.argsort(extra, kind="stable"):
        if extra[q] == np.iinfo(np.int64).max or total + extra[q] > mean_cost * Q:
            break
        choice[q], total = cheapest_right[q], total + extra[q]
    return choice


def oracle_points(correct, spent, costs) -> list[dict]:
    """`oracle_choice` at each mean cost."""
    return [{"allowed": float(c), **point(correct, spent, oracle_choice(correct, spent, c))} for c in costs]


def best_within(points, cost: float) -> dict | None:
    """The most accurate of the points whose mean cost is at most `cost` (the cheaper one on a tie), or None."""
    ok = [p for p in points if p["cost"] <= cost + 1e-9]
    return max(ok, key=lambda p: (p["rate"], -p["cost"])) if ok else None


def difference_interval(right_a, right_b, rounds: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the same questions, and its 95% paired bootstrap interval (questions
    resampled with replacement).  right_a, right_b: [Q] bool -> (difference, low, high)"""
    a, b = np.asarray(right_a, np.float64), np.asarray(right_b, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(a), (rounds, len(a)))
    diffs = a[idx].mean(1) - b[idx].mean(1)
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(a.mean() - b.mean()), float(low), float(high)
