"""Checks planned by cost: what runs when not every element can be differenced.

`max_elements=` (or a small `budget=`) makes a small network behave as a large one would,
so each plan is exercised in milliseconds and deterministically:

- fast mode (no exact reference): projections, bisection localisation and a sample;
- default mode beside JAX: every element compared against JAX, finite differences validate
  JAX on a sample and along random directions; a JAX gradient that fails them is set aside.

Each test pairs a correct gradient that passes with a planted error that is found, located
and counted in far fewer loss calls than there are parameters.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck import check, diagnose, plan as plan_module
from gradcheck.references.jax import reference as jax_ref

import nets

FAST = "numeric"
DEFAULT = ("numeric", "jax")
SAMPLE = 60  # max_elements: far fewer than the network's parameters


def wide_net(D: int = 24, H: int = 24, C: int = 10, N: int = 16) -> nets.Net:
    return nets.tanh_softmax(N=N, D=D, H=H, C=C, seed=7)


NET = wide_net()
TOTAL = sum(v.size for v in NET.params.values())  # 24*24 + 24 + 24*10 + 10 = 850


class Counted:
    """The net's loss, counting its calls."""

    def __init__(self, loss):
        self.loss, self.calls = loss, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.loss(*a, **kw)


def planted(net: nets.Net, edits: dict):
    """The correct gradient with `edits` ({leaf: [(flat index, amount relative to the leaf's
    largest entry), ...]}) added."""
    def grad(p, *args):
        g = {k: v.copy() for k, v in net.grad(p, *args).items()}
        for leaf, changes in edits.items():
            scale = np.abs(g[leaf]).max()
            for index, amount in changes:
                g[leaf].reshape(-1)[index] += amount * scale
        return g
    return grad


def unravel(leaf: str, index: int) -> tuple:
    return tuple(int(i) for i in np.unravel_index(index, NET.params[leaf].shape))


# --------------------------------------------------------------- fast mode: no exact reference

def test_fast_mode_passes_correct_code_by_projections_and_a_sample():
    loss = Counted(NET.loss)
    report = check(loss, NET.grad, NET.params, NET.args, against=FAST, max_elements=SAMPLE)
    assert report.passed, report
    assert report.plan["numeric"] == "projections, localisation and a sample"
    assert report.plan["elements"] == TOTAL
    assert report.plan["numeric_elements"] < TOTAL / 4
    assert all(p["ok"] for p in report.plan["projections"])
    assert sum(p.checked for p in report.parameters) == report.plan["numeric_elements"]
    assert loss.calls < TOTAL  # exhaustive central differences would take 6 per element


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(["W1", "b1", "W2", "b2"]), data=st.data(),
       amount=st.sampled_from([-0.05, 0.01, 0.3]))
def test_fast_mode_locates_one_wrong_element_anywhere(leaf, data, amount):
    index = data.draw(st.integers(0, NET.params[leaf].size - 1), label="index")
    loss = Counted(NET.loss)
    report = check(loss, planted(NET, {leaf: [(index, amount)]}), NET.params, NET.args, against=FAST,
                   max_elements=SAMPLE)
    assert not report.passed
    wrong = report[leaf]
    assert not wrong.passed and wrong.worst_index == unravel(leaf, index), wrong
    assert wrong.diagnosis == "partial" or NET.params[leaf].size <= 4, wrong
    assert [p.name for p in report.failures] == [leaf]
    assert loss.calls < TOTAL


def test_fast_mode_locates_every_wrong_element_in_several_leaves():
    edits = {"W1": [(5, 0.02), (400, -0.02)], "W2": [(17, 0.05)]}
    report = check(NET.loss, planted(NET, edits), NET.params, NET.args, against=FAST, max_elements=SAMPLE)
    assert sorted(p.name for p in report.failures) == ["W1", "W2"]
    assert set(report["W1"].wrong_indices) == {unravel("W1", 5), unravel("W1", 400)}
    assert set(report["W2"].wrong_indices) == {unravel("W2", 17)}
    assert report["b1"].passed and report["b2"].passed


def test_fast_mode_names_errors_spread_over_every_element():
    # Diagnosed from the sampled elements, as when every element is differenced (test_pairs).
    flipped = check(NET.loss, NET.bug("update"), NET.params, NET.args, against=FAST, max_elements=SAMPLE)
    assert {p.name: p.diagnosis for p in flipped.parameters} == dict.fromkeys(NET.params, "sign_flipped")
    batch = check(NET.loss, NET.bug("scaledN"), NET.params, NET.args, against=FAST, max_elements=SAMPLE)
    for leaf in ("b1", "b2"):  # the L2 term of W1 and W2 is not scaled, so only the biases are pure factors
        assert batch[leaf].diagnosis == "scaled" and batch[leaf].factor == pytest.approx(16.0), batch[leaf]
        assert "batch size 16" in batch[leaf].cause
    assert not batch["W1"].passed and not batch["W2"].passed


def test_fast_mode_catches_a_small_offset_on_every_element():
    # 2e-4 of the leaf's scale added to every element (a regulariser term gone astray).
    def grad(p, *args):
        g = NET.grad(p, *args)
        g["W1"] = g["W1"] + 2e-4 * np.abs(g["W1"]).max()
        return g

    report = check(NET.loss, grad, NET.params, NET.args, against=FAST, max_elements=SAMPLE)
    assert not report["W1"].passed
    assert all(p.passed for p in report.parameters if p.name != "W1")


def test_a_leaf_failing_a_projection_fails_even_if_its_sampled_elements_pass():
    from gradcheck.fast import Projection

    results = list(check(NET.loss, NET.grad, NET.params, NET.args, against=FAST).parameters)
    failing = Projection(label="W1: random signs", yours=1.0, numeric=1.1, error=1e-9, tol=1e-6)
    flagged = diagnose.projection_failures(results, [True, False, False, False], [failing])
    assert not flagged[0].passed and flagged[0].diagnosis == "wrong"
    assert "W1: random signs" in flagged[0].detail and "yours 1 vs finite differences 1.1" in flagged[0].detail
    assert flagged[1:] == results[1:]


def test_the_suspects_are_differenced_before_the_sample():
    """Differences cut short by the deadline visit the elements localisation found first."""
    from gradcheck.case import prepare
    from gradcheck.pipeline import plan_numeric

    index = 301
    prep = prepare(NET.loss, planted(NET, {"W1": [(index, 0.5)]}), NET.params, NET.args)
    plan = plan_numeric(prep, {}, {}, 20.0, SAMPLE, seed=0)
    k = prep.names.index("W1")
    suspects = plan.selection[k][:4]
    assert index in suspects
    assert len(set(plan.selection[k].tolist())) == len(plan.selection[k])  # nothing differenced twice
    assert plan.failed_leaves[k] and not any(f for j, f in enumerate(plan.failed_leaves) if j != k)


def test_a_small_budget_plans_the_same_way_as_max_elements():
    net = wide_net(D=40, H=40)
    report = check(net.loss, net.grad, net.params, net.args, against=FAST, budget=0.05)
    assert report.passed and report.plan["numeric"] == "projections, localisation and a sample"
    exhaustive = check(net.loss, net.grad, net.params, net.args, against=FAST, budget=1e6)
    assert exhaustive.plan["numeric"] == "exhaustive"
    assert exhaustive.plan["numeric_elements"] == exhaustive.plan["elements"]


# ---------------------------------------------------- default mode: every element against JAX

def test_default_mode_compares_every_element_against_jax_and_validates_it():
    report = check(NET.loss, NET.grad, NET.params, NET.args, against=DEFAULT, max_elements=SAMPLE)
    assert report.passed, report
    assert report.plan["numeric"] == "validation sample (every element compared against jax)"
    assert [p["direction"] for p in report.plan["projections"]] == [
        "jax gradient: random signs", "jax gradient: random signs (second)"]
    assert sum(p.checked for p in report.parameters) == TOTAL  # JAX covers every element
    assert report.plan["numeric_elements"] < TOTAL / 4


@pytest.mark.parametrize("leaf, index", [("W1", 0), ("W1", 575), ("b1", 11), ("W2", 123), ("b2", 9)])
def test_default_mode_finds_a_wrong_element_outside_the_sample(leaf, index):
    report = check(NET.loss, planted(NET, {leaf: [(index, 0.01)]}), NET.params, NET.args, against=DEFAULT,
                   max_elements=SAMPLE)
    wrong = report[leaf]
    assert not wrong.passed and wrong.worst_index == unravel(leaf, index), wrong
    assert [p.name for p in report.failures] == [leaf]


def test_a_jax_gradient_that_fails_its_projections_is_set_aside(monkeypatch):
    # A broken exact reference (10% off everywhere) must not judge the learner's correct code.
    real = jax_ref.jax_value_and_grad

    def broken(objective, leaves=None, **options):
        value, grads = real(objective, leaves, **options)
        return value, [1.1 * g for g in grads]

    monkeypatch.setattr(jax_ref, "jax_value_and_grad", broken)
    report = check(NET.loss, NET.grad, NET.params, NET.args, against=DEFAULT, max_elements=SAMPLE)
    assert report.passed, report
    status = {r.name: r for r in report.references}["jax"]
    assert not status.ran and "disagrees with finite differences" in status.reason
    assert report.plan["numeric"] == "projections, localisation and a sample"
    assert any("set aside" in w for w in report.warnings)
    caught = check(NET.loss, planted(NET, {"W2": [(40, 0.05)]}), NET.params, NET.args, against=DEFAULT,
                   max_elements=SAMPLE)
    assert [p.name for p in caught.failures] == ["W2"] and caught["W2"].worst_index == unravel("W2", 40)


# ------------------------------------------------------------------------- SymPy stays bounded

def test_sympy_is_sampled_on_a_larger_network():
    report = check(NET.loss, NET.grad, NET.params, NET.args, against=("numeric", "sympy"), max_elements=SAMPLE)
    assert report.passed, report
    sympy = {r.name: r for r in report.references}["sympy"]
    assert sympy.ran and 0 < sympy.elements <= plan_module.SYMPY_SAMPLE


def test_auto_leaves_sympy_out_above_its_limit():
    net = wide_net(D=150, H=150)  # 24,160 parameters
    report = check(net.loss, net.grad, net.params, net.args, max_elements=SAMPLE)
    assert report.passed, report
    sympy = {r.name: r for r in report.references}["sympy"]
    assert not sympy.ran and "against=('sympy'" in sympy.reason


# --------------------------------------------------------------------------------- memory: O(N)

@pytest.mark.parametrize("against", [FAST, DEFAULT])
def test_memory_grows_with_the_parameters_not_their_square(against):
    # numpy allocations are traced; a Jacobian or an N x N intermediate would grow N times faster.
    def peak(width: int) -> tuple[int, int]:
        net = wide_net(D=width, H=width)
        tracemalloc.start()
        try:
            check(net.loss, net.grad, net.params, net.args, against=against, max_elements=SAMPLE)
            return sum(v.size for v in net.params.values()), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(60)  # imports and first-use caches are not the check's memory
    (n1, m1), (n2, m2) = peak(60), peak(120)  # 4,270 and 15,730 parameters
    per_parameter = (m2 - m1) / (n2 - n1)
    assert per_parameter < 40 * 8, (m1, m2)  # a few dozen float64 arrays of N elements at most
    assert m2 < 40 * 8 * n2 + 2**20, (m1, m2)
