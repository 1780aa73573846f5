"""Auto-budget (miniqwen3/auto_budget.py): the probe against ridge's normal equations, the oracle against every
assignment of budgets on small tables, the scheduler's choice worked by hand, and the cost accounting (the
thinking tokens spent) against a direct count of the tokens inside the think block of real tiny-model replies."""
import itertools
from pathlib import Path

import numpy as np
import pytest

from miniqwen3 import auto_budget as ab

TINY = Path(__file__).resolve().parent.parent / "miniqwen3" / "data" / "tiny" / "config.json"


# --- the probe -----------------------------------------------------------------------------------

@pytest.mark.parametrize("l2", [0.0, 0.5, 30.0])
def test_probe_is_the_ridge_closed_form(l2):
    # the normal equations (Z^T Z + l2 I) w = Z^T (y - mean y), solved directly
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6)) * [1, 2, 3, 0.5, 5, 1] + 3
    y = X @ rng.normal(size=6) + rng.normal(size=40)
    p = ab.fit_probe(X, y, l2)
    Z = (X - X.mean(0)) / X.std(0)
    w = np.linalg.solve(Z.T @ Z + l2 * np.eye(6), Z.T @ (y - y.mean()))
    np.testing.assert_allclose(p.weights, w, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p.predict(X), Z @ w + y.mean(), rtol=1e-9)


def test_probe_recovers_an_exact_linear_law_and_ignores_a_constant_feature():
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(size=30), np.full(30, 7.0), rng.normal(size=30)])
    y = 4 * X[:, 0] - 2 * X[:, 2] + 9
    p = ab.fit_probe(X, y, 0.0)
    np.testing.assert_allclose(p.predict(X), y, atol=1e-9)
    assert p.weights[1] == 0


def test_choose_l2_returns_the_penalty_of_least_cross_validated_error():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 20))
    y = X[:, 0] + 0.5 * rng.normal(size=60)          # one real feature among 20: some shrinkage helps
    best, errors = ab.choose_l2(X, y, [0.0, 1.0, 10.0, 1e6])
    assert best == min(errors, key=errors.get)
    assert errors[1e6] > errors[best]                 # shrinking everything to the mean is worse


def test_fit_probe_rejects_bad_shapes():
    with pytest.raises(ValueError, match="X \\[N, H\\] and y \\[N\\]"):
        ab.fit_probe(np.zeros((3, 2)), np.zeros(4), 1.0)


# --- choosing budgets ----------------------------------------------------------------------------

def test_full_budget_by_hand():
    budgets = [0, 16, 32, 48, None]
    # predicted + margin: 10 -> 16, 16 -> 16 (smallest >= want), 16.5 -> 32, 60 -> unlimited, -3 -> 0
    got = ab.full_budget([6, 12, 12.5, 56, -7], budgets, margin=4)
    assert [budgets[g] for g in got] == [16, 16, 32, None, 0]


def test_full_budget_needs_ascending_budgets_unlimited_last():
    with pytest.raises(ValueError, match="ascend"):
        ab.full_budget([1.0], [16, 8, None], 0)
    with pytest.raises(ValueError, match="ascend"):
        ab.full_budget([1.0], [None, 8], 0)


def test_scheduler_serves_the_shortest_predictions_first_within_the_mean_cost():
    budgets = [0, 16, 32, 48, 64, None]
    predicted = [30, 10, 50, 20]
    # 4 questions at a mean of 15: 60 predicted tokens in all. Shortest first: 10, 20, 30 (total 60) fit, 50 does
    # not; each served question gets the grid budget just above its prediction + 4, the last one B = 0
    got = ab.scheduler_choice(predicted, budgets, mean_cost=15, margin=4)
    assert [budgets[g] for g in got] == [48, 16, 0, 32]
    assert [budgets[g] for g in ab.scheduler_choice(predicted, budgets, 0, 4)] == [0, 0, 0, 0]
    assert [budgets[g] for g in ab.scheduler_choice(predicted, budgets, 100, 4)] == [48, 16, 64, 32]


def test_cross_validated_predictions_of_an_exact_law_are_exact():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(25, 3))
    y = X @ [1.0, -2.0, 0.5] + 3
    np.testing.assert_allclose(ab.cross_validated(X, y, 0.0, folds=5), y, atol=1e-9)


def brute_force_most_right(correct, spent, mean_cost):
    """The most questions right over every assignment of a grid budget to each question, mean spent <= mean_cost."""
    Q, G = correct.shape
    best = -1
    for choice in itertools.product(range(G), repeat=Q):
        q = np.arange(Q)
        if spent[q, choice].sum() <= mean_cost * Q:
            best = max(best, int(correct[q, choice].sum()))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_oracle_gets_the_most_right_of_every_assignment(seed):
    rng = np.random.default_rng(seed)
    Q, G = 5, 3
    spent = np.sort(rng.integers(0, 30, (Q, G)), axis=1)          # more budget spends at least as much
    correct = rng.random((Q, G)) < 0.5
    for mean_cost in (0, 5, 12, 20, 30):
        choice = ab.oracle_choice(correct, spent, mean_cost)
        q = np.arange(Q)
        want = brute_force_most_right(correct, spent, mean_cost)
        if want < 0:                                               # nothing fits: the cheapest budgets
            np.testing.assert_array_equal(choice, spent.argmin(1))
            continue
        assert spent[q, choice].sum() <= mean_cost * Q
        assert correct[q, choice].sum() == want


def test_point_fixed_and_best_within_by_hand():
    correct = np.array([[False, True], [False, False], [True, True]])
    spent = np.array([[4, 10], [4, 20], [2, 2]])
    fixed = ab.fixed_points(correct, spent, [4, None])
    assert [(p["budget"], p["cost"], p["k"]) for p in fixed] == [(4, 10 / 3, 1), (None, 32 / 3, 2)]
    assert ab.best_within(fixed, 5)["budget"] == 4
    assert ab.best_within(fixed, 3) is None


def test_difference_interval_of_identical_answers_is_zero_and_of_a_clear_gap_excludes_zero():
    a = np.array([True] * 80 + [False] * 20)
    assert ab.difference_interval(a, a) == (0.0, 0.0, 0.0)
    b = np.array([True] * 40 + [False] * 60)
    d, low, high = ab.difference_interval(a, b)
    assert d == pytest.approx(0.4) and 0 < low < d < high


def test_outcomes_checks_the_row_order():
    rows = [{"budget": b, "correct": c, "spent": s} for b, c, s in [(0, False, 0), (None, True, 9), (0, True, 0),
                                                                    (None, True, 3)]]
    correct, spent = ab.outcomes(rows, [0, None])
    np.testing.assert_array_equal(correct, [[False, True], [True, True]])
    np.testing.assert_array_equal(spent, [[0, 9], [0, 3]])
    with pytest.raises(ValueError, match="in that order"):
        ab.outcomes(rows[::-1], [0, None])


# --- on the tiny model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    if not TINY.is_file():
        pytest.skip("the embedded tiny model is not installed")
    import miniqwen3
    return miniqwen3.load()


def inside_think_block(model, r, stop_text):
    """A direct count: the tokens between <think> and </think> in the reply's ids, less the ones the budget counter
    forced there (its stop sentence, or for B = 0 the gap)."""
    tok = model.tokenizer
    ids = r.token_ids
    inner = ids[ids.index(tok.think_id) + 1:ids.index(tok.end_think_id)]
    forced = len(tok.encode("\n\n" if r.budget == 0 else stop_text)) if r.budget_tripped else 0
    return len(inner) - forced


def test_spent_is_the_thinking_tokens_counted_directly(tiny):
    from miniqwen3.corpus import arithmetic_eval_set, parse_answer
    from miniqwen3.evaluate import budget_records
    from miniqwen3.generate import stop_text_for
    convs = arithmetic_eval_set(n_per_level=1, seed=7)
    budgets = [0, 8, 24, None]
    prompts = [c.messages[:-1] for c in convs]
    rows = budget_records(tiny, prompts, [c.problem.result for c in convs], [c.problem.level for c in convs],
                          budgets, parse_answer, enable_thinking=True, temperature=0)
    correct, spent = ab.outcomes(rows, budgets)
    stop = stop_text_for(tiny)
    for q, prompt in enumerate(prompts):
        for g, b in enumerate(budgets):
            r = tiny.generate(prompt, budget=b, enable_thinking=True, temperature=0, max_new_tokens=160)
            assert spent[q, g] == r.thinking_tokens == inside_think_block(tiny, r, stop)
            if b is not None:
                assert spent[q, g] <= b
    assert spent[:, 0].sum() == 0 and (spent[:, -1] > 24).any()    # B = 0 spends nothing; level 4 needs > 24
    choice = np.array([1, 3, 0, 2])
    assert ab.point(correct, spent, choice)["cost"] == np.mean([spent[q, g] for q, g in enumerate(choice)])


def test_prompt_features_are_the_final_norm_at_the_prompts_last_token(tiny):
    from miniqwen3.chat import prompt_for_generation
    from miniqwen3.model import Recording
    prompts = ["What is 12+7?", [{"role": "user", "content": "1234*5 /think"}]]
    X = ab.prompt_features(tiny, prompts)
    assert X.shape == (2, tiny.config.hidden_size)
    for row, p in zip(X, prompts):
        rec = Recording()
        tiny.forward(tiny.tokenizer.encode(prompt_for_generation(p, True)), record=rec)   # every position
        np.testing.assert_allclose(row, rec.get("norm")[-1], rtol=1e-5, atol=1e-6)
