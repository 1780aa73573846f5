"""Distillation losses in plain NumPy, each with its gradient with respect to the student's logits in closed form.

Strong-to-weak distillation (Qwen3 report, arXiv 2505.09388, section 4.5) trains a small student from a large
teacher in two stages: off-policy, on text the student did not write, and on-policy, where the student samples
and is trained to bring its logits close to the teacher's on those samples by minimising a KL divergence.
The losses here are the ones such a training run needs; the network's own gradient is left to an autograd
engine: with `r = forward_kl_topk(...)`, `student_logits.backward(torch.from_numpy(r.grad))` back-propagates.

With the student's logits s and the teacher's t at one position, V the vocabulary and tau the temperature,

    q = softmax(s / tau)  (the student),   p = softmax(t / tau)  (the teacher)

  * `cross_entropy`: -log softmax(s)[y] for the next token y of the corpus (the plain baseline, no tau).
    d CE / d s = softmax(s) - onehot(y).
  * `forward_kl_topk`, off-policy: KL(p || q) = sum_v p_v (log p_v - log q_v), with the teacher known only by its
    top-k logits (`top_k_logits`). Stored top-k logits keep no normaliser, so the teacher's distribution is the
    softmax over its k stored ids, renormalised to sum 1; the student keeps its full softmax over V. This
    truncation is the "Top-K" sparse distillation that Anshumann et al. 2025 (arXiv 2503.16870) show to be a
    biased estimate of the full teacher (the tail's mass goes to the head); with k = V it is the full KL.
    d KL / d s = (q - p_scattered) / tau, p_scattered being p at the k stored ids and 0 elsewhere.
  * `reverse_kl`, on-policy with the teacher's full logits: KL(q || p) = sum_v q_v (log q_v - log p_v), the
    mode-seeking direction used for on-policy distillation (MiniLLM, Gu et al. 2024, arXiv 2306.08543; GKD,
    Agarwal et al. 2024, arXiv 2306.13649). d KL / d s = q * (log q - log p - KL) / tau.
  * `reverse_kl_sampled`, on-policy with one sampled token: y ~ q, the estimator log q(y) - log p(y), whose
    mean over y ~ q is KL(q || p) (the "k1" of Schulman 2020, "Approximating KL divergence"; the per-token
    signal of Thinking Machines' blog post "On-policy distillation", 2025). Its gradient is the score-function
    (REINFORCE) one, (log q(y) - log p(y)) * d log q(y) / d s, whose mean over y ~ q is d KL(q || p) / d s above.

Every KL is multiplied by tau^2: the gradients of soft targets shrink as 1/tau^2 (Hinton, Vinyals and Dean 2015,
"Distilling the knowledge in a neural network", arXiv 1503.02531, section 2), and this keeps their size
comparable across temperatures. `per_token` reports the KL itself (nats, at temperature tau, not scaled).

Shapes: T positions (flatten a batch to [T, V]), V vocabulary, k stored teacher logits per position.
Every loss is the mean over the positions a `mask` [T] counts (1 or True; 0 or False leaves a position out,
e.g. the prompt); its gradient is 0 at the positions left out. Arithmetic is float64; the gradient is returned
in the student logits' float dtype. Malformed input raises ValueError naming the argument.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LossAndGrad(NamedTuple):
    loss: float                 # tau^2 * mean over the counted positions of per_token (cross-entropy: no tau)
    per_token: np.ndarray       # [T] float64: the KL (or cross-entropy) at every position, counted or not
    grad: np.ndarray            # [T, V] d loss / d student_logits, 0 at the positions the mask leaves out


# --- shared pieces -------------------------------------------------------------------------------

def log_softmax(x: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """log softmax(x / tau) over the last axis, in float64.  x: [..., V] -> [..., V]"""
    z = np.asarray(x, dtype=np.float64) / tau
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_k_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits of every position and their token ids, largest first: what an off-policy run stores
    of the teacher.  logits: [T, V] -> ids [T, k] int64, values [T, k] (the logits' dtype)"""
    logits = _logits("logits", logits)
    V = logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= V:
        raise ValueError(f"k must be an integer in [1, V = {V}], got {k!r}")
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]                     # [T, k] the top k, unordered
    order = np.argsort(-np.take_along_axis(logits, part, axis=1), axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return ids, np.take_along_axis(logits, ids, axis=1)


def _logits(name: str, x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be [T, V] with T, V >= 1, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite (found nan or inf)")
    return x


def _ids(name: str, ids, shape: tuple, V: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"{name} must be token ids in [0, V = {V}), got values in [{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64)


def _tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) \
            or not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau (the temperature) must be a finite number > 0, got {tau!r}")
    return float(tau)


def _weights(mask, T: int) -> np.ndarray:
    """[T] float64: 1 / (number of counted positions) where the mask counts, 0 elsewhere."""
    if mask is None:
        return np.full(T, 1.0 / T)
    mask = np.asarray(mask)
    if mask.shape != (T,):
        raise ValueError(f"mask must have shape ({T},), one entry per position, got {mask.shape}")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold booleans or 0/1 (1: the position counts)")
    counted = mask.astype(bool)
    if not counted.any():
        raise ValueError("mask leaves out every position: the mean over counted positions is undefined")
    return counted / counted.sum()


def _result(per_token: np.ndarray, w: np.ndarray, scale: float, grad: np.ndarray, dtype) -> LossAndGrad:
    """The weighted mean of per_token times scale, and the per-position gradient times scale and weight."""
    grad *= (scale * w)[:, None]
    return LossAndGrad(float(scale * (w @ per_token)), per_token, grad.astype(dtype, copy=False))


# --- the baseline --------------------------------------------------------------------------------

def cross_entropy(logits: np.ndarray, targets: np.ndarray, mask=None) -> LossAndGrad:
    """Next-token cross-entropy: per token -log softmax(logits)[target]; mean over the counted positions.
    logits: [T, V], targets: [T] token ids, mask: [T] or None.  grad = (softmax(logits) - onehot(target)) / n"""
    logits = _logits("logits", logits)
    T, V = logits.shape
    targets = _ids("targets", targets, (T,), V)
    w = _weights(mask, T)
    logq = log_softmax(logits)                                              # [T, V]
    rows = np.arange(T)
    per_token = -logq[rows, targets]                                        # [T]
    grad = np.exp(logq)
    grad[rows, targets] -= 1.0
    return _result(per_token, w, 1.0, grad, logits.dtype)


# --- off-policy: forward KL on the teacher's stored top-k ---------------------------------------

def forward_kl_topk(student_logits: np.ndarray, teacher_ids: np.ndarray, teacher_values: np.ndarray,
                    tau: float = 1.0, mask=None) -> LossAndGrad:
    """tau^2 * mean over counted positions of KL(p || q), the teacher p known by its top-k logits.

        p = softmax(teacher_values / tau) over the k stored ids (renormalised: the tail is dropped)   [T, k]
        log q = log_softmax(student_logits / tau) over all V                                           [T, V]
        KL_t = sum_j p_j (log p_j - log q[ids_j])
        d loss / d student_logits = tau * (q - p_scattered) * weight_t

    student_logits: [T, V]; teacher_ids: [T, k] distinct ids per row (from `top_k_logits`); teacher_values:
    [T, k] the teacher's logits at those ids; mask: [T] or None."""
    s = _logits("student_logits", student_logits)
    T, V = s.shape
    tau = _tau(tau)
    values = np.asarray(teacher_values)
    if values.ndim != 2 or values.shape[0] != T:
        raise ValueError(f"teacher_values must be [T = {T}, k], got shape {values.shape}")
    k = values.shape[1]
    if not 1 <= k <= V:
        raise ValueError(f"k (teacher_values.shape[1]) must be in [1, V = {V}], got {k}")
    values = _logits("teacher_values", values)
    ids = _ids("teacher_ids", teacher_ids, (T, k), V)
    if k > 1 and (np.diff(np.sort(ids, axis=1), axis=1) == 0).any():
        raise ValueError("teacher_ids must not repeat an id within a position")
    w = _weights(mask, T)
    logp = log_softmax(values, tau)                                         # [T, k]
    logq = log_softmax(s, tau)                                              # [T, V]
    p = np.exp(logp)
    rows = np.arange(T)[:, None]
    per_token = (p * (logp - logq[rows, ids])).sum(axis=1)                  # [T]
    grad = np.exp(logq)                                                     # d KL / d (s / tau) = q - p_scattered
    grad[rows, ids] -= p
    return _result(per_token, w, tau * tau, grad / tau, s.dtype)


# --- on-policy: reverse KL -----------------------------------------------------------------------

def _student_teacher(student_logits, teacher_logits, tau):
    s = _logits("student_logits", student_logits)
    t = _logits("teacher_logits", teacher_logits)
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits must have the student's shape {s.shape}, got {t.shape}")
    return s, log_softmax(s, tau), log_softmax(t, tau)


def reverse_kl(student_logits: np.ndarray, teacher_logits: np.ndarray, tau: float = 1.0, mask=None) -> LossAndGrad:
    """tau^2 * mean over counted positions of KL(q || p) over the full vocabulary.

        KL_t = sum_v q_v (log q_v - log p_v)
        d loss / d student_logits = tau * q * (log q - log p - KL_t) * weight_t

    (d KL / d z_j for z = s / tau is q_j (d_j - sum_v q_v d_v) with d = log q - log p: moving z changes the
    weights q; the change of log q inside the sum, sum_v q_v d log q_v / d z_j, is 0.)
    student_logits, teacher_logits: [T, V]; mask: [T] or None."""
    tau = _tau(tau)
    s, logq, logp = _student_teacher(student_logits, teacher_logits, tau)
    w = _weights(mask, s.shape[0])
    q = np.exp(logq)
    d = logq - logp                                                         # [T, V]
    per_token = (q * d).sum(axis=1)                                         # [T]
    grad = q * (d - per_token[:, None])
    return _result(per_token, w, tau * tau, grad / tau, s.dtype)


def reverse_kl_sampled(student_logits: np.ndarray, teacher_logits: np.ndarray, tokens: np.ndarray,
                       tau: float = 1.0, mask=None) -> LossAndGrad:
    """The one-sample estimate of tau^2 * KL(q || p) at the tokens y the student sampled (y_t ~ q_t, at the
    same tau), and its score-function gradient.

        per_token_t = log q(y_t) - log p(y_t)                    mean over y ~ q: KL(q_t || p_t)
        grad = tau * per_token_t * (onehot(y_t) - q_t) * weight_t
             = tau^2 * per_token_t * d log q(y_t) / d s_t * weight_t

    The estimate is a number, not a function to differentiate: with y held fixed, the gradient of log q(y)
    averages to 0 over y ~ q, so differentiating the estimator itself would teach nothing in expectation.
    The score-function gradient averages to the exact gradient of `reverse_kl` (the per-token value acts as a
    negative reward on the sampled token). It is the gradient of the surrogate
    tau^2 * mean(stop_gradient(per_token) * log q(y)).
    student_logits, teacher_logits: [T, V]; tokens: [T] the sampled ids; mask: [T] or None."""
    tau = _tau(tau)
    s, logq, logp = _student_teacher(student_logits, teacher_logits, tau)
    T, V = s.shape
    y = _ids("tokens", tokens, (T,), V)
    w = _weights(mask, T)
    rows = np.arange(T)
    per_token = logq[rows, y] - logp[rows, y]                               # [T]
    grad = -np.exp(logq)                                                    # d log q(y) / d z = onehot(y) - q
    grad[rows, y] += 1.0
    grad *= per_token[:, None]
    return _result(per_token, w, tau * tau, grad / tau, s.dtype)


# --- looking at one position (notebook 09) --------------------------------------------------------

def compare_position(teacher_row: np.ndarray, student_row: np.ndarray, n: int = 6, tau: float = 1.0):
    """The teacher's and the student's next-token probabilities at one position, over the tokens either ranks in
    its top n (teacher's order first, then the student's own).  teacher_row, student_row: [V] logits
    -> ids [m], p [m], q [m] (m <= 2n; full-softmax probabilities at temperature tau)"""
    t = _logits("teacher_row", np.asarray(teacher_row)[None])
    s = _logits("student_row", np.asarray(student_row)[None])
    if t.shape != s.shape:
        raise ValueError(f"teacher_row and student_row must have the same length, got {t.shape[1]} and {s.shape[1]}")
    ids = list(dict.fromkeys([*top_k_logits(t, n)[0][0].tolist(), *top_k_logits(s, n)[0][0].tolist()]))
    ids = np.array(ids, np.int64)
    return ids, np.exp(log_softmax(t[0], tau))[ids], np.exp(log_softmax(s[0], tau))[ids]
