"""One projection over every parameter, when the budget cannot pay one per parameter.

With a slow loss and a short budget, localisation cannot afford a projection (4 loss calls)
per leaf. One projection over all leaves stands in, each leaf's part weighted so that it
carries the same share of the projection; if it fails, halves of the leaves are tested, the
half not afforded inferred as the whole minus the tested one. These tests pair correct
gradients (never a failing leaf) with a bug in each leaf of a network whose leaves range
from 10 to 90,000 elements (always that leaf, and only it), and show why the weighting is
needed: unweighted, a wrong small leaf beside a large one passes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck import check
from gradcheck.case import prepare
from gradcheck.fast import localise, masked_direction, project, weighted_direction
from gradcheck.tolerances import default_tolerances, relative_atol

import nets

NET = nets.tanh_softmax(N=16, D=300, H=300, C=10, seed=7)  # W1 90,000, b1 300, W2 3,000, b2 10
LEAVES = ("W1", "b1", "W2", "b2")
N = 16


def _transposed(g):
    return g.T.copy() if g.ndim == 2 and g.shape[0] == g.shape[1] else None


#: Whole-leaf bugs as learners make them: each maps the right leaf gradient to a wrong one.
BUGS = {
    "sign flipped": lambda g: -g,
    "halved": lambda g: 0.5 * g,
    "missing (zero)": lambda g: np.zeros_like(g),
    "times the batch size": lambda g: N * g,
    "divided by the batch size": lambda g: g / N,
    "plus one percent": lambda g: 1.01 * g,
}


def wrong_in(leaf: str, bug):
    def grad(p, *args):
        g = dict(NET.grad(p, *args))
        g[leaf] = bug(g[leaf])
        return g
    return grad


def search(grad, max_tests: int = 0, seed: int = 0):
    """localise() on the net with `grad`, the tolerances the check would use."""
    prep = prepare(NET.loss, grad, NET.params, NET.args)
    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(a, y) for (_, a), y in zip(tol, prep.yours)]
    rtols = [r for r, _ in tol]
    suspects, tests, bad = localise(prep.objective, prep.x0, prep.yours, prep.names, prep.loss_value,
                                    rtols, atols, seed=seed, max_tests=max_tests)
    return dict(zip(prep.names, bad)), tests, prep, rtols, atols


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_correct_gradient_passes_one_weighted_projection(seed):
    bad, tests, *_ = search(NET.grad, seed=seed)
    assert not any(bad.values()), tests
    assert len(tests) == 1 and tests[0].ok
    assert tests[0].label.startswith("every parameter:")


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("kind", sorted(BUGS))
def test_a_wrong_leaf_is_found_and_no_other(leaf, kind):
    bad, tests, *_ = search(wrong_in(leaf, BUGS[kind]))
    assert [k for k, b in bad.items() if b] == [leaf], [t.to_dict() for t in tests]
    # The least that names one wrong leaf of four: the whole, then one half per level.
    assert sum("inferred" not in t.label for t in tests) == 3


@pytest.mark.parametrize("leaf", ["W1", "b2"])
def test_with_tests_to_spare_the_second_half_is_measured_not_inferred(leaf):
    bad, tests, *_ = search(wrong_in(leaf, BUGS["halved"]), max_tests=3)
    assert [k for k, b in bad.items() if b] == [leaf]
    # the whole and both halves measured; in the failing half, one leaf measured, one inferred
    assert [("inferred" in t.label) for t in tests] == [False, False, False, False, True]


def test_a_transposed_square_leaf_is_found():
    bad, *_ = search(wrong_in("W1", _transposed))
    assert [k for k, b in bad.items() if b] == ["W1"]


def test_wrong_leaves_in_both_halves_are_all_found():
    def grad(p, *args):
        g = dict(NET.grad(p, *args))
        return {**g, "W1": -g["W1"], "b2": 0.5 * g["b2"]}

    bad, *_ = search(grad)
    assert [k for k, b in bad.items() if b] == ["W1", "b2"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(LEAVES), kind=st.sampled_from(sorted(BUGS)), seed=st.integers(0, 2**32 - 1),
       max_tests=st.integers(0, 6))
def test_any_seed_finds_exactly_the_wrong_leaf(leaf, kind, seed, max_tests):
    bad, tests, *_ = search(wrong_in(leaf, BUGS[kind]), max_tests=max_tests, seed=seed)
    assert [k for k, b in bad.items() if b] == [leaf], [t.to_dict() for t in tests]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_any_seed_passes_the_right_gradient(seed):
    bad, tests, *_ = search(NET.grad, seed=seed)
    assert not any(bad.values()), [t.to_dict() for t in tests]


def test_unweighted_a_wrong_small_leaf_passes_so_the_weights_are_needed():
    """b2 (10 elements) one percent too large beside W1 (90,000): the plain random-sign
    direction over all leaves stays within its tolerance; the weighted one fails."""
    grad = wrong_in("b2", BUGS["plus one percent"])
    _, _, prep, rtols, atols = search(grad)
    rng = np.random.default_rng(0)
    plain = [masked_direction(x, rng, np.arange(x.size)) for x in prep.x0]
    unweighted = project(prep.objective, prep.x0, prep.yours, plain, prep.loss_value, rtols, atols, "plain")
    weighted, _ = weighted_direction(prep.x0, prep.yours, np.random.default_rng(0))
    assert unweighted.ok
    assert not project(prep.objective, prep.x0, prep.yours, weighted, prep.loss_value, rtols, atols, "weighted").ok


def test_an_inferred_half_agrees_with_the_measured_one():
    grad = wrong_in("b1", BUGS["sign flipped"])
    _, inferred_run, *_ = search(grad, max_tests=0)
    _, measured_run, *_ = search(grad, max_tests=3)
    inferred = next(t for t in inferred_run if t.label.startswith("W2, b2:"))
    measured = next(t for t in measured_run if t.label.startswith("W2, b2:"))
    assert "inferred" in inferred.label and "inferred" not in measured.label
    assert inferred.yours == pytest.approx(measured.yours, rel=1e-12)
    assert abs(inferred.numeric - measured.numeric) <= 3 * (inferred.error + measured.error)
    assert inferred.ok and measured.ok


# ------------------------------------------------------------------- through check(), timed

class Slow:
    """The net's loss, `seconds` per call: a budget of a few calls cannot pay a projection per leaf."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self, *a):
        self.calls += 1
        time.sleep(self.seconds)
        return NET.loss(*a)


def test_check_on_a_short_budget_names_the_wrong_leaf_within_the_budget():
    loss = Slow(0.05)
    start = time.perf_counter()
    # 1.5 s: a little more than the least check of a 50 ms loss (about 1.2 s), far less than a
    # projection per parameter with their localisation
    report = check(loss, wrong_in("b1", BUGS["halved"]), NET.params, NET.args, against="numeric", budget=1.5)
    assert time.perf_counter() - start < 1.5 * 1.1 + 0.1  # a 10% overrun, and slack for a loaded machine
    assert not report.passed
    assert [p.name for p in report.parameters if not p.passed] == ["b1"]
    assert any("stood in" in s for s in report.plan["not_afforded"])


def test_check_on_a_short_budget_passes_the_right_gradient():
    report = check(Slow(0.05), NET.grad, NET.params, NET.args, against="numeric", budget=1.5)
    assert report.passed, report
    assert [p["direction"] for p in report.plan["projections"]] == [
        "every parameter: random signs, weighted per parameter"]


# ------------------------------------------- a share under the round-off sinks no other leaf

def _tiny_beside(scale: float):
    """A 3x4 matrix whose gradient is of order 1 beside a scalar whose gradient is `scale`."""
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(3, 4)), "c": 0.7}

    def loss(p):
        return float(np.sum(np.sin(p["W"])) + scale * p["c"] ** 2)

    def grad(p):
        return {"W": np.cos(p["W"]), "c": 2 * scale * p["c"]}
    return loss, grad, params


def _localise(loss, grad, params, max_tests=0):
    prep = prepare(loss, grad, params, ())
    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(a, y) for (_, a), y in zip(tol, prep.yours)]
    _, tests, bad = localise(prep.objective, prep.x0, prep.yours, prep.names, prep.loss_value,
                             [r for r, _ in tol], atols, max_tests=max_tests)
    return dict(zip(prep.names, bad)), tests


@pytest.mark.parametrize("scale", [1e-6, 1e-12])
def test_a_scalar_with_a_tiny_gradient_does_not_shrink_the_matrix_under_the_round_off(scale):
    loss, grad, params = _tiny_beside(scale)
    bad, tests = _localise(loss, grad, params)
    assert not any(bad.values()), [t.to_dict() for t in tests]

    def wrong(p):
        g = grad(p)
        g["W"] = g["W"].copy()
        g["W"][1, 2] *= 1.001  # a tenth of a percent on one element of twelve
        return g
    bad, tests = _localise(loss, wrong, params)
    assert [k for k, b in bad.items() if b] == ["W"], [t.to_dict() for t in tests]


def test_a_share_under_the_round_off_sets_no_level():
    loss, grad, params = _tiny_beside(1e-12)
    prep = prepare(loss, grad, params, ())
    plain, w_plain = weighted_direction(prep.x0, prep.yours, np.random.default_rng(0))
    floored, w_floored = weighted_direction(prep.x0, prep.yours, np.random.default_rng(0), prep.loss_value)
    k = prep.names.index("W")
    assert w_plain[k] < 1e-9  # shrunk to the scalar's share
    assert w_floored == [1.0, 1.0]  # the scalar's share is under the round-off: it sets no level
