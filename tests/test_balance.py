"""Load-balancing math: against transformers' load_balancing_loss_func, closed forms, and finite differences."""
import itertools

import numpy as np
import pytest

from miniqwen3 import balance as b
from miniqwen3 import ops, routing


def cyclic_logits(n_experts, k, big=6.0):
    """E tokens; token t prefers experts t..t+k-1 (mod E) equally, every other expert equally less.
    Every expert is chosen by exactly k tokens and the mean probability is uniform: perfect balance."""
    logits = np.zeros((n_experts, n_experts), np.float32)
    for t in range(n_experts):
        logits[t, (t + np.arange(k)) % n_experts] = big
    return logits


@pytest.mark.parametrize("E,k", [(8, 1), (8, 2), (16, 4), (128, 8)])
def test_perfect_balance_gives_k(E, k):
    logits = cyclic_logits(E, k)
    probs, experts, _ = ops.router(logits, k, False)
    np.testing.assert_allclose(b.routed_fraction(experts, E), np.full(E, k / E))
    np.testing.assert_allclose(b.mean_probability(probs), np.full(E, 1 / E), rtol=1e-6)
    assert b.load_balancing_loss(logits, k) == pytest.approx(k, rel=1e-6)


@pytest.mark.parametrize("E,k", [(8, 1), (8, 2), (128, 8)])
def test_all_tokens_on_the_same_k_experts_gives_E(E, k):
    # f = 1 on experts 0..k-1; P = 1/k there (the probability is split evenly): E * k * (1 * 1/k) = E
    logits = np.zeros((50, E), np.float32)
    logits[:, :k] = 40.0
    assert b.load_balancing_loss(logits, k) == pytest.approx(E, rel=1e-5)


def test_uniform_probabilities_give_k_whatever_the_choice():
    # P = 1/E everywhere, so E * sum f / E = sum f = k
    logits = np.zeros((30, 16), np.float32)
    assert b.load_balancing_loss(logits, 4) == pytest.approx(4.0)


def transformers_loss(layers, k, mask=None):
    torch = pytest.importorskip("torch")
    mod = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
    gate = tuple(torch.from_numpy(l) for l in layers)
    m = None if mask is None else torch.from_numpy(mask)
    return float(mod.load_balancing_loss_func(gate, layers[0].shape[1], k, m))


@pytest.mark.parametrize("E,k,n_layers", [(8, 2, 1), (16, 4, 3), (128, 8, 2)])
def test_matches_transformers(E, k, n_layers):
    rng = np.random.default_rng(E + k)
    layers = [rng.normal(size=(24, E)).astype(np.float32) * 2 for _ in range(n_layers)]
    assert b.load_balancing_loss(layers, k) == pytest.approx(transformers_loss(layers, k), rel=1e-5)


def test_matches_transformers_with_padding_mask():
    rng = np.random.default_rng(0)
    batch, seq, E, k = 3, 8, 16, 2
    layers = [rng.normal(size=(batch * seq, E)).astype(np.float32) for _ in range(2)]
    mask = np.ones((batch, seq), np.int64)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    ours = b.load_balancing_loss(layers, k, mask)
    assert ours == pytest.approx(transformers_loss(layers, k, mask), rel=1e-5)
    assert ours != pytest.approx(b.load_balancing_loss(layers, k), rel=1e-3)   # the mask matters here


def test_per_layer_form_is_what_trained_the_tiny_model():
    """scripts/train_tiny.py's torch loss (the one with gradients) equals load_balancing_loss(per_layer=True);
    with one layer both forms are the same."""
    torch = pytest.importorskip("torch")
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "train_tiny.py"
    spec = importlib.util.spec_from_file_location("train_tiny", path)
    train_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_tiny)
    rng = np.random.default_rng(1)
    E, k = 16, 4
    layers = [rng.normal(size=(40, E)).astype(np.float32) * 2 for _ in range(3)]
    att = torch.ones(1, 40, dtype=torch.int64)
    probs, counts = train_tiny.router_stats([torch.from_numpy(l) for l in layers], att, k)
    theirs = float(train_tiny.load_balancing_loss(probs, counts, E))
    assert b.load_balancing_loss(layers, k, per_layer=True) == pytest.approx(theirs, rel=1e-5)
    assert b.load_balancing_loss(layers, k, per_layer=True) != pytest.approx(b.load_balancing_loss(layers, k), rel=1e-4)
    assert b.load_balancing_loss(layers[0], k, per_layer=True) == pytest.approx(b.load_balancing_loss(layers[0], k))


def test_micro_vs_global_closed_form():
    # M micro-batches, each routing all its tokens (top-1, p one-hot) to an expert of its own:
    # micro: each micro-batch has f = P = one-hot, loss E. global: f = 1/M on M experts, E * (1/M) per micro-batch.
    E, M, n = 8, 4, 10
    experts = np.repeat(np.arange(M), n)[:, None]
    probs = np.eye(E)[experts[:, 0]]
    assert b.micro_batch_loss(probs, experts, n) == pytest.approx(E)
    assert b.global_batch_loss(probs, experts, n) == pytest.approx(E / M)
    # one micro-batch holding everything: the two are the same loss
    assert b.micro_batch_loss(probs, experts, M * n) == pytest.approx(b.global_batch_loss(probs, experts, M * n))


def test_global_batch_loss_is_the_loss_of_the_whole_batch_for_equal_micro_batches():
    rng = np.random.default_rng(1)
    probs, experts, _ = ops.router(rng.normal(size=(64, 8)), 2, False)
    whole = b.balance_loss(b.routed_fraction(experts, 8), b.mean_probability(probs))
    assert b.global_batch_loss(probs, experts, 16) == pytest.approx(whole)


@pytest.mark.parametrize("E", [4, 8, 128])
def test_imbalance_measures_closed_forms(E):
    balanced = np.full(E, 1 / E)
    assert b.imbalance(balanced) == {"max/min": 1.0, "cv": 0.0, "max_violation": 0.0}
    assert b.max_min_ratio(np.r_[3.0, 1.0, 1.0, 1.0]) == 3.0
    assert b.max_min_ratio(np.eye(E)[0]) == float("inf")
    # by the definitions: CV = population std / mean, MaxVio = max / mean - 1 (scale-free: counts or shares)
    load = np.r_[6.0, 2.0, 1.0, 3.0]                  # mean 3, deviations 3, -1, -2, 0
    assert b.coefficient_of_variation(load) == pytest.approx(np.sqrt((9 + 1 + 4 + 0) / 4) / 3)
    assert b.max_violation(load) == pytest.approx(6 / 3 - 1)
    assert b.imbalance(load) == pytest.approx(b.imbalance(load / load.sum()))


@pytest.mark.parametrize("E,k,T", [(4, 1, 3), (5, 2, 3), (6, 3, 2), (6, 2, 3), (7, 3, 2)])
def test_worst_case_cv_and_max_violation_by_brute_force(E, k, T):
    """Every way T tokens can each choose k distinct experts out of E: the largest CV and MaxVio of the loads
    are sqrt(E/k - 1) and E/k - 1 (every token on the same k experts), not sqrt(E - 1) and E - 1 (one expert
    taking everything, which top-k routing with k > 1 cannot do)."""
    subsets = [np.bincount(c, minlength=E) for c in itertools.combinations(range(E), k)]
    cv, vio = 0.0, 0.0
    for choice in itertools.product(subsets, repeat=T):
        load = np.sum(choice, axis=0)
        cv, vio = max(cv, b.coefficient_of_variation(load)), max(vio, b.max_violation(load))
    assert cv == pytest.approx(b.worst_case_cv(E, k)) and cv == pytest.approx(np.sqrt(E / k - 1))
    assert vio == pytest.approx(b.worst_case_max_violation(E, k)) and vio == pytest.approx(E / k - 1)
    if k > 1:
        assert cv < np.sqrt(E - 1) - 0.1 and vio < E - 1 - 0.1


def test_worst_case_from_a_router():
    # all tokens prefer the same k experts: the router's own loads reach the closed forms
    E, k = 16, 4
    logits = np.zeros((40, E), np.float32)
    logits[:, 5:5 + k] = 10.0
    load = routing.expert_load(ops.router(logits, k, True)[1], E)
    assert b.coefficient_of_variation(load) == pytest.approx(np.sqrt(E / k - 1))
    assert b.max_violation(load) == pytest.approx(E / k - 1)


def test_expert_load_and_share():
    experts = np.array([[0, 1], [0, 2], [3, 0]])
    np.testing.assert_allclose(routing.expert_load(experts, 5), [3 / 6, 1 / 6, 1 / 6, 1 / 6, 0])
    share = routing.domain_expert_share(experts, np.array([0, 0, 1]), 5, 3)
    np.testing.assert_allclose(share, [[0.5, 0.25, 0.25, 0, 0], [0.5, 0, 0, 0.5, 0], [0, 0, 0, 0, 0]])


def test_specialisation_closed_forms():
    assert routing.specialisation(np.eye(4)) == pytest.approx(2.0)                 # log2(G) bits: own experts
    assert routing.specialisation(np.tile([0.1, 0.2, 0.3, 0.4], (3, 1))) == pytest.approx(0.0)
    half = np.array([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    assert routing.specialisation(half) == pytest.approx(1.0)


def test_bias_changes_the_choice_not_the_weights():
    x = np.array([[1.0, 0.0]])
    w = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    p, chosen, g = b.route(x, w, 1)
    assert chosen[0, 0] == 0 and g[0, 0] == 1.0
    p2, chosen2, _ = b.route(x, w, 2, bias=np.array([-1.0, 0.0, 0.0]))
    assert list(chosen2[0]) == [1, 2] and np.array_equal(p, p2)


@pytest.mark.parametrize("E,k", [(8, 2), (16, 4), (256, 8)])
def test_sigmoid_router_matches_deepseek_v3_in_torch(E, k):
    """DeepSeek-V3 (arXiv 2412.19437, eqs. 13-16): s = sigmoid(u . e_i); top-k of s + b; g = chosen s / their sum.
    The oracle is written in torch from those equations."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(E)
    logits = rng.normal(size=(20, E)).astype(np.float32) * 2
    bias = rng.normal(size=E).astype(np.float32) * 0.3
    s, experts, weights = ops.router(logits, k, True, selection_bias=bias, scoring="sigmoid")
    ts = torch.sigmoid(torch.from_numpy(logits))
    idx = torch.topk(ts + torch.from_numpy(bias), k, dim=-1).indices
    tw = ts.gather(1, idx)
    tw = tw / tw.sum(-1, keepdim=True)
    np.testing.assert_allclose(s, ts.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.sort(experts, axis=1), np.sort(idx.numpy(), axis=1))
    order = np.argsort(experts, axis=1)
    np.testing.assert_allclose(np.take_along_axis(weights, order, 1),
                               np.take_along_axis(tw.numpy(), np.argsort(idx.numpy(), axis=1), 1), rtol=1e-6)
    # the bias changed some choices here, and the weights are still the unbiased scores of the chosen
    assert not np.array_equal(np.sort(experts, 1), np.sort(ops.router(logits, k, True, scoring="sigmoid")[1], 1))
    with pytest.raises(ValueError, match="scoring 'tanh'"):
        ops.router(logits, k, True, scoring="tanh")


def test_sigmoid_router_drop_wins_over_the_bias():
    logits = np.array([[3.0, 0.0, -1.0, -2.0]], np.float32)
    _, experts, _ = ops.router(logits, 2, True, drop=[0], selection_bias=np.array([5.0, 0, 0, 0]), scoring="sigmoid")
    assert list(experts[0]) == [1, 2]


def test_bias_update_by_hand():
    """DeepSeek-V3 sec. 2.1.2: at the end of a step, b_i -= gamma for an overloaded expert, += gamma for an
    underloaded one. Loads 9, 1, 5, 5 (mean 5) with gamma 0.01: -0.01, +0.01, 0, 0."""
    bias = np.array([0.0, 0.5, -0.2, 0.1])
    np.testing.assert_allclose(b.update_bias(bias, [9, 1, 5, 5], 0.01), [-0.01, 0.51, -0.2, 0.1])
    np.testing.assert_allclose(b.update_bias(np.zeros(3), [0, 3, 6], 0.5), [0.5, 0.0, -0.5])


def test_lab_bias_moves_by_gamma_against_the_load():
    # two steps: each bias is a sum of two +-gamma or 0 moves; the busiest expert of the first step went down
    r = b.train_router("bias", steps=1, gamma=0.25, seed=3)
    np.testing.assert_allclose(r.bias, 0.25 * np.sign(r.load[0].mean() - r.load[0]))
    r2 = b.train_router("bias", steps=2, gamma=0.25, seed=3)
    np.testing.assert_allclose(r2.bias, r.bias + 0.25 * np.sign(r2.load[1].mean() - r2.load[1]))


def test_sequence_balance_loss_by_hand():
    # one sequence of 2 tokens, E = 4, k = 1; token 0 -> expert 0, token 1 -> expert 1
    s = np.array([[0.8, 0.2, 0.0, 0.0], [0.1, 0.3, 0.0, 0.0]])
    experts = np.array([[0], [1]])
    f = np.array([4 / 2 * 1, 4 / 2 * 1, 0, 0])                   # E / (K T) * count
    P = (np.array([0.8, 0.2, 0, 0]) / 1.0 + np.array([0.1, 0.3, 0, 0]) / 0.4) / 2
    assert b.sequence_balance_loss(s, experts, 2) == pytest.approx(np.sum(f * P))
    # balanced: every expert routed equally, affinities uniform -> 1; per sequence, averaged over sequences
    E, k = 8, 2
    cyc = np.stack([(t + np.arange(k)) % E for t in range(E)])
    assert b.sequence_balance_loss(np.full((E, E), 0.3), cyc, E) == pytest.approx(1.0)
    # a second sequence whose tokens all go to experts 0 and 1, their affinity there only: f = E/k, P = 1/k there
    two = np.concatenate([cyc, np.zeros((E, k), int) + np.arange(k)])
    scores = np.full((2 * E, E), 0.3)
    scores[E:] = 0.0
    scores[E:, :k] = 0.9
    assert b.sequence_balance_loss(scores, two, E) == pytest.approx((1 + E / k) / 2)


@pytest.mark.parametrize("T,k,E,cf,want", [(512, 2, 8, 1.0, 128), (512, 2, 8, 1.25, 160), (10, 2, 8, 1.1, 3),
                                           (7, 1, 4, 1.0, 2), (100, 8, 128, 1.0, 7)])
def test_expert_capacity(T, k, E, cf, want):
    assert b.expert_capacity(T, k, E, cf) == want == int(np.ceil(cf * T * k / E - 1e-9))


def test_capacity_drops_against_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        T, E, k = int(rng.integers(1, 40)), int(rng.integers(2, 9)), 0
        k = int(rng.integers(1, E))
        experts = np.stack([rng.choice(E, k, replace=False, p=np.r_[0.5, np.full(E - 1, 0.5 / (E - 1))])
                            for _ in range(T)])
        cap = b.expert_capacity(T, k, E, float(rng.choice([0.5, 1.0, 1.25])))
        for priority in ("token", "slot"):
            keep = b.capacity_keep(experts, E, cap, priority)
            # brute force: serve the assignments one by one (token by token, or all first choices first),
            # each expert until it is full
            walk = [(t, j) for t in range(T) for j in range(k)] if priority == "token" else \
                   [(t, j) for j in range(k) for t in range(T)]
            used, want = [0] * E, np.zeros((T, k), bool)
            for t, j in walk:
                e = int(experts[t, j])
                if used[e] < cap:
                    used[e] += 1
                    want[t, j] = True
            np.testing.assert_array_equal(keep, want)
            counts = np.bincount(experts.ravel(), minlength=E)
            assert (~keep).sum() == np.maximum(counts - cap, 0).sum()
    with pytest.raises(ValueError, match="capacity_factor=0"):
        b.expert_capacity(10, 2, 8, 0)
    with pytest.raises(ValueError, match="priority 'random'"):
        b.capacity_keep(np.zeros((2, 1), int), 2, 1, "random")
    # the two orders differ: token 0's second choice against token 1's first, for one place
    experts = np.array([[0, 1], [1, 0]])
    assert b.capacity_keep(experts, 2, 1, "token").tolist() == [[True, True], [False, False]]
    assert b.capacity_keep(experts, 2, 1, "slot").tolist() == [[True, False], [True, False]]


def test_capacity_groups_and_the_worst_case():
    # every token on the same k experts: all but `capacity` of each of them dropped, per group
    E, k, T = 8, 2, 32
    experts = np.tile([3, 5], (T, 1))
    keep = b.capacity_keep_groups(experts, E, 1.0, 16)           # capacity ceil(16 * 2 / 8) = 4 per group of 16
    assert keep.sum() == 2 * 2 * 4 and keep[:4].all() and not keep[4:16].any() and keep[16:20].all()
    assert b.capacity_keep_groups(experts, E, None, 16).all()


@pytest.mark.parametrize("scoring,capacity", [("softmax", False), ("softmax", True), ("sigmoid", True)])
def test_lab_gradients_match_finite_differences(scoring, capacity):
    rng = np.random.default_rng(1)
    T, F, O, E, k = 14, 5, 3, 6, 2
    x, y = rng.normal(size=(T, F)), rng.normal(size=(T, O))
    router_w, experts_w = rng.normal(size=(E, F)), rng.normal(size=(E, O, F))
    f_rows = rng.uniform(size=(T, E))
    bias = rng.normal(size=E) * 0.1 if scoring == "sigmoid" else None
    coef = 0.7
    keep = rng.uniform(size=(T, k)) > 0.3 if capacity else np.ones((T, k), bool)

    def objective(rw, ew):
        s, chosen, g = b.route(x, rw, k, bias, scoring)
        y_hat = np.einsum("tk,tko->to", g * keep, np.einsum("tkof,tf->tko", ew[chosen], x))
        q = s if scoring == "softmax" else s / s.sum(axis=1, keepdims=True)
        return 0.5 * np.sum((y_hat - y) ** 2) / T + coef / T * np.sum(q * f_rows)

    _, g_router, g_experts, _, chosen = b.lab_gradients(x, y, router_w, experts_w, k, f_rows, coef, bias, scoring,
                                                        keep if capacity else None)
    eps = 1e-6
    for idx in [(0, 0), (2, 3), (5, 4), (1, 1)]:
        d = np.zeros_like(router_w)
        d[idx] = eps
        assert np.array_equal(b.route(x, router_w + d, k, bias, scoring)[1], chosen)
        num = (objective(router_w + d, experts_w) - objective(router_w - d, experts_w)) / (2 * eps)
        assert g_router[idx] == pytest.approx(num, rel=1e-5, abs=1e-8)
    for idx in [(int(chosen[0, 0]), 1, 2), (int(chosen[3, 1]), 0, 4), (int(chosen[7, 0]), 2, 1)]:
        d = np.zeros_like(experts_w)
        d[idx] = eps
        num = (objective(router_w, experts_w + d) - objective(router_w, experts_w - d)) / (2 * eps)
        assert g_experts[idx] == pytest.approx(num, rel=1e-5, abs=1e-8)


def test_domains_sample():
    d = b.Domains.make(n_domains=4, seed=0)
    x, y, dom = d.sample(6, 3, np.random.default_rng(0))
    seqs = dom.reshape(6, 3)
    assert (seqs == seqs[:, :1]).all()                                        # one domain per sequence
    assert sorted(np.bincount(seqs[:, 0], minlength=4)) == [1, 1, 2, 2]       # the mix as even as 6 / 4 allows
    np.testing.assert_allclose(y, np.einsum("tof,tf->to", d.maps[dom], x))    # y = A_domain x


@pytest.fixture(scope="module")
def lab():
    return {m: b.train_router(m, capacity_factor=1.0, seed=0) for m in b.METHODS}


def test_lab_story(lab):
    """What the notebook shows (capacity factor 1, assignments beyond it dropped): without balancing the load is
    uneven, so more tokens are dropped and the held-out task loss is higher than with the global-batch loss or
    DeepSeek-V3's bias; the per-micro-batch loss (one sequence, one domain per micro-batch) forbids domain experts
    and hurts the task most."""
    h = {m: r.held_out for m, r in lab.items()}
    assert h["none"]["cv"] > 2 * max(h["global"]["cv"], h["bias"]["cv"])
    assert h["none"]["dropped"] > 2 * max(h["global"]["dropped"], h["bias"]["dropped"])
    assert h["none"]["task loss"] > 1.5 * max(h["global"]["task loss"], h["bias"]["task loss"])
    assert min(h["global"]["specialisation"], h["bias"]["specialisation"]) > 2 * h["micro"]["specialisation"]
    assert h["micro"]["task loss"] > 2 * max(h["global"]["task loss"], h["bias"]["task loss"])
    assert all(0 < h[m]["dropped weight"] < 1 for m in h)
    free = b.train_router("none", steps=5)                          # no capacity: nothing dropped
    assert free.held_out["dropped"] == free.held_out["dropped weight"] == 0 and not free.dropped.any()
    for r in lab.values():
        np.testing.assert_allclose(r.load.sum(axis=1), 1.0)
        assert r.task_loss[-1] < r.task_loss[0] / 3
        np.testing.assert_allclose(r.share.sum(axis=1), 1.0)


def test_seed_interval_by_hand():
    # 1..5: mean 3, sd 1.5811 (ddof 1), t(4) = 2.776 -> 3 +- 2.776 * 1.5811 / sqrt(5) = 3 +- 1.963
    mean, lo, hi = b.seed_interval([1, 2, 3, 4, 5])
    assert mean == 3 and hi - mean == pytest.approx(1.963, abs=1e-3) and mean - lo == pytest.approx(hi - mean)
    assert b.seed_interval([2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="1 values"):
        b.seed_interval([1.0])


def test_seed_summary(lab):
    rows = b.seed_summary({m: [lab[m], lab[m]] for m in ("none", "bias")})
    assert [r["method"] for r in rows] == ["none", "bias"]
    assert rows[0]["dropped"] == (lab["none"].held_out["dropped"],) * 3 and rows[1]["seeds"] == 2


def test_paired_difference(lab):
    a, b_ = [lab["none"], lab["micro"]], [lab["global"], lab["bias"]]
    d, (mean, lo, hi) = b.paired_difference(a, b_, "dropped")
    want = [lab["none"].held_out["dropped"] - lab["global"].held_out["dropped"],
            lab["micro"].held_out["dropped"] - lab["bias"].held_out["dropped"]]
    np.testing.assert_allclose(d, want)
    assert mean == pytest.approx(np.mean(want)) and lo < mean < hi
    r, (gmean, _, _) = b.paired_difference(a, b_, "task loss", ratio=True)
    np.testing.assert_allclose(r, [lab["none"].held_out["task loss"] / lab["global"].held_out["task loss"],
                                   lab["micro"].held_out["task loss"] / lab["bias"].held_out["task loss"]])
    assert gmean == pytest.approx(np.sqrt(r[0] * r[1]))             # the geometric mean of the ratios


def test_lab_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method 'switch'"):
        b.train_router("switch")
    with pytest.raises(ValueError, match="micro_batch=0"):
        b.train_router("micro", micro_batch=0)
    with pytest.raises(ValueError, match="capacity_seqs=17"):
        b.train_router("none", capacity_factor=1.0, capacity_seqs=17)
