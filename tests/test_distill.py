"""The distillation losses of miniqwen3.distill: values and gradients against torch (log_softmax, kl_div,
cross_entropy and autograd, float64, the same random inputs), and against closed forms: the KL of a distribution
with itself, a two-token vocabulary, Hinton's high-temperature limit, k = V, and the sampled reverse-KL estimator
and its gradient averaged over many seeded samples."""
import numpy as np
import pytest

from miniqwen3 import distill

T, V, K = 9, 13, 5
MASK = np.array([0, 0, 1, 1, 0, 1, 1, 1, 1], dtype=bool)      # the first two positions are a "prompt"


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def random_logits(seed, shape=(T, V), scale=2.0):
    return np.random.default_rng(seed).normal(0.0, scale, shape)


def masked_mean(torch, per_token, mask):
    w = torch.as_tensor(np.ones(T) if mask is None else mask.astype(np.float64))
    return (per_token * w).sum() / w.sum()


def autograd(torch, fn, s):
    """fn's value at the student logits s, and its gradient d fn / d s, by torch autograd in float64."""
    x = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    value = fn(x)
    value.backward()
    return value.item(), x.grad.numpy()


# --- against torch -------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [None, MASK])
def test_cross_entropy_equals_torch(torch, mask):
    F = torch.nn.functional
    s = random_logits(0)
    y = np.random.default_rng(1).integers(0, V, T)
    r = distill.cross_entropy(s, y, mask)
    per_token = F.cross_entropy(torch.tensor(s), torch.tensor(y), reduction="none").numpy()
    value, grad = autograd(torch, lambda x: masked_mean(torch, F.cross_entropy(x, torch.tensor(y), reduction="none"),
                                                        mask), s)
    np.testing.assert_allclose(r.per_token, per_token, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.loss, value, rtol=1e-12)
    np.testing.assert_allclose(r.grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tau,mask", [(1.0, None), (2.5, MASK), (0.6, MASK)])
def test_forward_kl_topk_equals_torch(torch, tau, mask):
    """p = softmax over the k stored teacher logits, renormalised; KL(p || q) with q over the full vocabulary."""
    F = torch.nn.functional
    s, t = random_logits(2), random_logits(3)
    ids, values = distill.top_k_logits(t, K)
    r = distill.forward_kl_topk(s, ids, values, tau, mask)
    p = torch.softmax(torch.tensor(values) / tau, dim=-1)                                   # [T, k]
    index = torch.tensor(ids)

    def kl(x):        # kl_div(input = log q at the ids, target = p) = p (log p - log q), summed over the k ids
        logq_at_ids = F.log_softmax(x / tau, dim=-1).gather(1, index)
        return F.kl_div(logq_at_ids, p, reduction="none").sum(-1)

    value, grad = autograd(torch, lambda x: tau ** 2 * masked_mean(torch, kl(x), mask), s)
    np.testing.assert_allclose(r.per_token, kl(torch.tensor(s)).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.loss, value, rtol=1e-12)
    np.testing.assert_allclose(r.grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tau,mask", [(1.0, None), (2.5, MASK), (0.6, MASK)])
def test_reverse_kl_equals_torch(torch, tau, mask):
    F = torch.nn.functional
    s, t = random_logits(4), random_logits(5)
    r = distill.reverse_kl(s, t, tau, mask)
    logp = F.log_softmax(torch.tensor(t) / tau, dim=-1)

    def kl(x):        # kl_div(input = log p, target = log q, log_target) = q (log q - log p): KL(q || p)
        return F.kl_div(logp, F.log_softmax(x / tau, dim=-1), reduction="none", log_target=True).sum(-1)

    value, grad = autograd(torch, lambda x: tau ** 2 * masked_mean(torch, kl(x), mask), s)
    np.testing.assert_allclose(r.per_token, kl(torch.tensor(s)).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.loss, value, rtol=1e-12)
    np.testing.assert_allclose(r.grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tau,mask", [(1.0, None), (1.7, MASK)])
def test_reverse_kl_sampled_equals_torch_surrogate(torch, tau, mask):
    """The estimate log q(y) - log p(y), and the gradient of tau^2 * mean(stop_gradient(estimate) * log q(y))."""
    F = torch.nn.functional
    s, t = random_logits(6), random_logits(7)
    y = torch.tensor(np.random.default_rng(8).integers(0, V, T))
    r = distill.reverse_kl_sampled(s, t, y.numpy(), tau, mask)
    logp_y = F.log_softmax(torch.tensor(t) / tau, dim=-1).gather(1, y[:, None])[:, 0]
    estimate = F.log_softmax(torch.tensor(s) / tau, dim=-1).gather(1, y[:, None])[:, 0] - logp_y

    def surrogate(x):
        logq_y = F.log_softmax(x / tau, dim=-1).gather(1, y[:, None])[:, 0]
        return tau ** 2 * masked_mean(torch, (logq_y - logp_y).detach() * logq_y, mask)

    _, grad = autograd(torch, surrogate, s)
    np.testing.assert_allclose(r.per_token, estimate.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.loss, tau ** 2 * masked_mean(torch, estimate, mask).item(), rtol=1e-12)
    np.testing.assert_allclose(r.grad, grad, rtol=1e-10, atol=1e-14)


def test_top_k_logits_equals_torch_topk(torch):
    t = random_logits(9).astype(np.float32)
    ids, values = distill.top_k_logits(t, K)
    expected = torch.topk(torch.tensor(t), K, dim=-1)          # sorted, largest first
    np.testing.assert_array_equal(ids, expected.indices.numpy())
    np.testing.assert_array_equal(values, expected.values.numpy())
    assert ids.dtype == np.int64 and values.dtype == np.float32


# --- closed forms --------------------------------------------------------------------------------

def test_kl_of_a_distribution_with_itself_is_zero():
    s = random_logits(10)
    all_ids = np.tile(np.arange(V), (T, 1))
    for r in (distill.forward_kl_topk(s, all_ids, s, 1.5), distill.reverse_kl(s, s + 3.0, 1.5),
              distill.reverse_kl_sampled(s, s, np.arange(T) % V, 1.5)):
        np.testing.assert_allclose(r.per_token, 0.0, atol=1e-13)
        np.testing.assert_allclose(r.grad, 0.0, atol=1e-13)
        assert abs(r.loss) < 1e-13


def test_two_token_vocabulary_closed_form():
    """V = 2, logits (0, a) and (0, b): q = sigmoid(a / tau), p = sigmoid(b / tau), two Bernoulli KLs."""
    a, b, tau = 1.3, -0.4, 2.0
    s, t = np.array([[0.0, a]]), np.array([[0.0, b]])
    q, p = 1 / (1 + np.exp(-a / tau)), 1 / (1 + np.exp(-b / tau))

    def bernoulli_kl(x, z):
        return x * np.log(x / z) + (1 - x) * np.log((1 - x) / (1 - z))

    forward = distill.forward_kl_topk(s, np.array([[0, 1]]), t, tau)
    reverse = distill.reverse_kl(s, t, tau)
    np.testing.assert_allclose(forward.per_token, [bernoulli_kl(p, q)], rtol=1e-12)
    np.testing.assert_allclose(forward.loss, tau ** 2 * bernoulli_kl(p, q), rtol=1e-12)
    np.testing.assert_allclose(reverse.loss, tau ** 2 * bernoulli_kl(q, p), rtol=1e-12)
    # d/da of tau^2 KL(p || q) = tau^2 * (q - p) / tau
    np.testing.assert_allclose(forward.grad[0], tau * (q - p) * np.array([-1.0, 1.0]), rtol=1e-12)


def test_temperature_scales_logits_and_loss_by_tau_squared():
    """Multiplying both logits and tau by c leaves the KL per token as it was and the loss times c^2."""
    s, t = random_logits(11), random_logits(12)
    ids, values = distill.top_k_logits(t, K)
    c = 3.0
    for fn, args in ((distill.forward_kl_topk, (ids, values)), (distill.reverse_kl, (t,))):
        base = fn(s, *args, 1.0)
        scaled = fn(c * s, *(c * a if a.dtype.kind == "f" else a for a in args), c)
        np.testing.assert_allclose(scaled.per_token, base.per_token, rtol=1e-12)
        np.testing.assert_allclose(scaled.loss, c ** 2 * base.loss, rtol=1e-12)
        np.testing.assert_allclose(scaled.grad, c * base.grad, rtol=1e-10, atol=1e-14)   # d/d(c s) = (1/c) d/ds


def test_high_temperature_limit_is_logit_matching():
    """Hinton et al. 2015, section 2.1: as tau grows, tau^2 KL tends to (1 / 2V) sum_v (d_v - mean d)^2 with
    d = t - s, in both directions (without the tau^2 it would vanish as 1/tau^2)."""
    s, t = random_logits(13, scale=1.0), random_logits(14, scale=1.0)
    d = t - s
    limit = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1) / (2 * V)                # [T]
    all_ids = np.tile(np.arange(V), (T, 1))
    tau = 1e3
    for r in (distill.forward_kl_topk(s, all_ids, t, tau), distill.reverse_kl(s, t, tau)):
        np.testing.assert_allclose(tau ** 2 * r.per_token, limit, rtol=1e-2)
        np.testing.assert_allclose(r.loss, limit.mean(), rtol=1e-2)


def test_top_k_with_k_equal_to_vocabulary_is_the_full_forward_kl():
    s, t = random_logits(15), random_logits(16)
    tau = 1.4
    ids, values = distill.top_k_logits(t, V)
    r = distill.forward_kl_topk(s, ids, values, tau, MASK)
    logp, logq = distill.log_softmax(t, tau), distill.log_softmax(s, tau)
    full = (np.exp(logp) * (logp - logq)).sum(axis=1)
    np.testing.assert_allclose(r.per_token, full, rtol=1e-12)
    np.testing.assert_allclose(r.loss, tau ** 2 * full[MASK].mean(), rtol=1e-12)
    # and the stored ids may come in any order
    perm = np.random.default_rng(17).permutation(V)
    np.testing.assert_allclose(distill.forward_kl_topk(s, ids[:, perm], values[:, perm], tau, MASK).grad, r.grad,
                               rtol=1e-12, atol=1e-15)
    # with k < V the tail is dropped: the KL differs from the full one
    small = distill.forward_kl_topk(s, *distill.top_k_logits(t, 3), tau, MASK)
    assert np.all(np.abs(small.per_token - full) > 1e-3)


def test_sampled_reverse_kl_averages_to_the_full_one():
    """Seeded: 40,000 samples y ~ q at each of 3 positions. The mean of the estimates is within 5 standard errors
    (about 0.03) of KL(q || p), and the mean of the score-function gradients within 5 standard errors of the
    exact gradient (`reverse_kl`), component by component."""
    n, positions, tau = 40_000, 3, 1.3
    s, t = random_logits(18, (positions, 6), 1.5), random_logits(19, (positions, 6), 1.5)
    q = np.exp(distill.log_softmax(s, tau))
    rng = np.random.default_rng(20)
    u = rng.random((positions, n, 1))
    y = (u > np.cumsum(q, axis=1)[:, None, :]).sum(axis=2)                                 # [positions, n] y ~ q
    y = np.minimum(y, 5)
    r = distill.reverse_kl_sampled(np.repeat(s, n, axis=0), np.repeat(t, n, axis=0), y.ravel(), tau)
    exact = distill.reverse_kl(s, t, tau)

    estimates = r.per_token.reshape(positions, n)
    se = estimates.std(axis=1) / np.sqrt(n)
    assert np.all(np.abs(estimates.mean(axis=1) - exact.per_token) < 5 * se)
    assert np.all(exact.per_token > 20 * se)                          # the check is not trivially small

    per_sample = r.grad.reshape(positions, n, -1) * (positions * n)   # undo the mean over all rows
    mean, se = per_sample.mean(axis=1), per_sample.std(axis=1) / np.sqrt(n)
    assert np.all(np.abs(mean - exact.grad * positions) < 5 * se + 1e-12)
    assert np.abs(exact.grad * positions).max() > 20 * se.max()


# --- masks, dtypes ---------------------------------------------------------------------------------

def test_mask_leaves_positions_out_of_loss_and_gradient():
    s, t = random_logits(21), random_logits(22)
    r = distill.reverse_kl(s, t, 1.0, MASK)
    assert np.all(r.grad[~MASK] == 0)
    changed = s.copy()
    changed[~MASK] += random_logits(23)[~MASK]
    assert distill.reverse_kl(changed, t, 1.0, MASK).loss == r.loss
    np.testing.assert_allclose(r.loss, r.per_token[MASK].mean(), rtol=1e-12)
    np.testing.assert_allclose(distill.reverse_kl(s, t, 1.0, MASK.astype(int)).loss, r.loss, rtol=0)


def test_gradient_comes_back_in_the_logits_dtype():
    s = random_logits(24).astype(np.float32)
    r = distill.cross_entropy(s, np.zeros(T, dtype=int))
    assert r.grad.dtype == np.float32 and r.per_token.dtype == np.float64
    np.testing.assert_allclose(r.grad, distill.cross_entropy(s.astype(np.float64), np.zeros(T, dtype=int)).grad,
                               atol=1e-8)


# --- bad input -------------------------------------------------------------------------------------

def test_bad_input_raises_value_error():
    s, t = random_logits(25), random_logits(26)
    ids, values = distill.top_k_logits(t, K)
    cases = [
        (lambda: distill.top_k_logits(t, V + 1), "k must be"),
        (lambda: distill.top_k_logits(t, 0), "k must be"),
        (lambda: distill.forward_kl_topk(s, np.zeros((T, V + 1), int), np.zeros((T, V + 1)), 1.0), r"k \(teacher"),
        (lambda: distill.forward_kl_topk(s, ids[:, :3], values, 1.0), "teacher_ids must have shape"),
        (lambda: distill.forward_kl_topk(s, ids, values[:-1], 1.0), "teacher_values must be"),
        (lambda: distill.forward_kl_topk(s, ids + V, values, 1.0), r"token ids in \[0, V"),
        (lambda: distill.forward_kl_topk(s, ids - V, values, 1.0), r"token ids in \[0, V"),
        (lambda: distill.forward_kl_topk(s, ids.astype(float), values, 1.0), "integer token ids"),
        (lambda: distill.forward_kl_topk(s, np.zeros((T, K), int), values, 1.0), "repeat"),
        (lambda: distill.forward_kl_topk(s, ids, values, 0.0), "tau"),
        (lambda: distill.reverse_kl(s, t, -1.0), "tau"),
        (lambda: distill.reverse_kl(s, t, float("nan")), "tau"),
        (lambda: distill.reverse_kl(s, t[:, :-1]), "teacher_logits must have"),
        (lambda: distill.reverse_kl(s[0], t[0]), r"student_logits must be \[T, V\]"),
        (lambda: distill.reverse_kl(np.where(MASK[:, None], s, np.nan), t), "finite"),
        (lambda: distill.reverse_kl_sampled(s, t, np.zeros(T - 1, int)), "tokens must have shape"),
        (lambda: distill.reverse_kl_sampled(s, t, np.full(T, V)), "token ids"),
        (lambda: distill.cross_entropy(s, np.full(T, -1)), "token ids"),
        (lambda: distill.cross_entropy(s, np.zeros(T, int), np.zeros(T, bool)), "every position"),
        (lambda: distill.cross_entropy(s, np.zeros(T, int), MASK[:-1]), "mask must have shape"),
        (lambda: distill.cross_entropy(s, np.zeros(T, int), np.full(T, 0.5)), "mask must hold"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_compare_position_gives_both_distributions_over_both_top_lists():
    """The union of the teacher's and the student's top n, the teacher's order first, with each model's full-softmax
    probability at those ids (against a softmax written out here)."""
    t = np.array([0.0, 3.0, 1.0, -2.0, 2.0, 0.5])
    s = np.array([4.0, 0.0, 1.0, 3.5, -1.0, 0.0])
    ids, p, q = distill.compare_position(t, s, n=2, tau=2.0)
    assert ids.tolist() == [1, 4, 0, 3]
    np.testing.assert_allclose(p, (np.exp(t / 2) / np.exp(t / 2).sum())[ids], rtol=1e-12)
    np.testing.assert_allclose(q, (np.exp(s / 2) / np.exp(s / 2).sum())[ids], rtol=1e-12)
    with pytest.raises(ValueError):
        distill.compare_position(t, s[:5])
