"""Finite differences batched under JAX: the same numbers as one numpy call per point, or not used.

`jax_ref.batched_loss` evaluates the loss (re-run under jax.numpy) at many one-element
perturbations per jitted call; `numeric_gradient(..., batched=...)` uses it only after it
reproduces the numpy loss's differences on probe elements. Each test pairs the batched
result with the per-element one.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck.objective import Objective
from gradcheck.references.jax import reference as jax_ref
from gradcheck.references.numeric import numeric_gradient
from gradcheck.tree import flatten
from gradcheck.tree import validate_leaf

import nets

plan_module = importlib.import_module("gradcheck.plan")


def objective(loss, params, *args) -> Objective:
    names, leaves, treedef = flatten(params)
    return Objective(loss, treedef, [validate_leaf(n, v) for n, v in zip(names, leaves)], args,
                     scalar_leaves=[isinstance(v, float) for v in leaves])


def everything(obj: Objective) -> list:
    return [np.arange(x.size) for x in obj.x0]


def both(obj: Objective, selection=None):
    """(per-element, batched) finite differences of the same elements."""
    selection = everything(obj) if selection is None else selection
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = numeric_gradient(obj, selection, use_complex=False)
        batched = numeric_gradient(obj, selection, use_complex=False, batched=jax_ref.batched_loss(obj))
    return plain, batched


def assert_same_differences(plain, batched) -> None:
    """Both estimates within their error bars of each other; the same elements checked and kinked."""
    assert "batched" in batched.method and "batched" not in plain.method
    for k in range(len(plain.values)):
        np.testing.assert_array_equal(plain.checked[k], batched.checked[k])
        np.testing.assert_array_equal(plain.kinks[k], batched.kinks[k])
        ok = plain.checked[k]
        gap = np.abs(plain.values[k] - batched.values[k])[ok]
        allowed = (3 * (plain.errors[k] + batched.errors[k]) + 1e-9 * np.abs(plain.values[k]))[ok]
        assert (gap <= allowed).all(), (gap - allowed).max()


@pytest.mark.parametrize("name", ["tanh_softmax", "nielsen", "batchnorm", "mazur"])
def test_batched_matches_per_element(name):
    net = nets.ALL_NETS[name]()
    assert_same_differences(*both(objective(net.loss, net.params, *net.args)))


def test_batched_sees_the_relu_kink():
    net = nets.relu_mlp(kink=True)
    plain, batched = both(objective(net.loss, net.params, *net.args))
    assert_same_differences(plain, batched)
    assert batched.kinks[1][1]  # b1[1]: the unit whose pre-activation is exactly 0
    np.testing.assert_allclose(batched.lower[1], plain.lower[1], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(batched.upper[1], plain.upper[1], rtol=1e-6, atol=1e-12)


def log_loss(p, c):
    return np.sum(c * np.log(p["w"]))


def test_points_outside_the_domain_fall_back_to_numpy_with_a_shorter_step():
    # w[1] = 1e-6 next to entries ~1: the leaf-scaled step (1e-3) takes it below 0, where the
    # JAX loss is NaN; the per-element loop retries with a step scaled to the element.
    obj = objective(log_loss, {"w": np.array([1.0, 1e-6, 2.0, 0.5])}, np.array([1.0, 2.0, 3.0, 4.0]))
    plain, batched = both(obj)
    assert_same_differences(plain, batched)
    assert batched.checked[0].all()
    np.testing.assert_allclose(batched.values[0], [1.0, 2e6, 1.5, 8.0], rtol=1e-8)


class Misleading:
    """A batch whose loss is not the user's (as a re-run that misreads the code would be)."""

    def __init__(self, real):
        self.real, self.offsets, self.f0 = real, real.offsets, real.f0

    def __call__(self, index, values):
        return self.real(index, values) * 1.001


def test_batch_that_disagrees_with_numpy_is_not_used():
    net = nets.tanh_softmax()
    obj = objective(net.loss, net.params, *net.args)
    plain = numeric_gradient(obj, everything(obj), use_complex=False)
    ref = numeric_gradient(obj, everything(obj), use_complex=False, batched=Misleading(jax_ref.batched_loss(obj)))
    assert "batched" not in ref.method
    assert any("where your numpy loss gives" in n for n in ref.notes), ref.notes
    for a, b in zip(plain.values, ref.values):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 3.0))
def test_batched_equals_per_element_for_random_points(seed, scale):
    rng = np.random.default_rng(seed)
    net = nets.tanh_softmax()
    params = {k: scale * rng.standard_normal(np.shape(v)) for k, v in net.params.items()}
    assert_same_differences(*both(objective(net.loss, params, *net.args)))


def test_not_traceable_means_no_batch():
    def branching(p, X):
        h = X @ p["W"]
        if np.sum(h) > 0:  # Python control flow on a traced value: jit cannot compile it
            return np.sum(h ** 2)
        return -np.sum(h)

    obj = objective(branching, {"W": np.ones((2, 2))}, np.array([[1.0, -2.0], [0.5, 3.0]]))
    assert jax_ref.batched_loss(obj) is None


def test_relu_written_in_place_is_batched():
    def relu_in_place(p, X):
        h = X @ p["W"]
        h[h < 0] = 0.0  # rewritten for JAX as a select, which jit compiles
        h[h > 2] *= 0.5
        return np.sum(h ** 2)

    obj = objective(relu_in_place, {"W": np.array([[0.3, -0.7], [1.1, 0.4]])}, np.array([[1.0, -2.0], [0.5, 3.0]]))
    batched = jax_ref.batched_loss(obj)
    assert batched is not None and batched.f0 == pytest.approx(obj(obj.x0), rel=1e-14)
    assert_same_differences(*both(obj))


# --- the plan ---------------------------------------------------------------------------------

@pytest.fixture
def batch_every_size(monkeypatch):
    monkeypatch.setattr(plan_module, "BATCH_WORTH", 0.0)


def numeric_status(report):
    return next(r for r in report.references if r.name == "numeric")


def test_check_batches_and_leaves_callers_arrays_alone(batch_every_size):
    net = nets.tanh_softmax()
    before = (nets.snapshot(net.params), nets.snapshot(net.args))
    report = gradcheck.check(net.loss, net.grad, net.params, net.args, against=("numeric", "jax"))
    assert report.passed, str(report)
    assert "batched" in numeric_status(report).method
    batch = report.plan["numeric_batch"]
    assert batch["rows_per_call"] >= 8 and batch["seconds_per_row"] > 0
    assert report.plan["numeric"] == "exhaustive"
    nets.assert_identical(net.params, before[0])
    nets.assert_identical(net.args, before[1])


def test_no_batch_without_the_jax_reference(batch_every_size):
    net = nets.tanh_softmax()
    report = gradcheck.check(net.loss, net.grad, net.params, net.args, against="numeric")
    assert "numeric_batch" not in report.plan and "batched" not in numeric_status(report).method


def squared_error32(p, X, y):
    r = X.astype(np.float32) @ p["w"].astype(np.float32) - y.astype(np.float32)
    return np.sum(r * r)


def test_no_batch_for_a_loss_computed_in_float32(batch_every_size):
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal(3)
    def grad(p, X, y, factor=1.0):
        return {"w": factor * 2 * X.T @ (X @ p["w"] - y)}

    report = gradcheck.check(squared_error32, grad, {"w": w}, (X, y), against=("numeric", "jax"))
    # JAX follows the loss's casts: its values carry float32 rounding, and its error bars say so.
    assert report.passed, str(report)
    assert "numeric_batch" not in report.plan
    bad = gradcheck.check(squared_error32, lambda *a: grad(*a, factor=1.001), {"w": w}, (X, y),
                          against=("numeric", "jax"))
    assert not bad.passed and bad["w"].diagnosis == "scaled", str(bad)


def test_small_problems_are_not_worth_compiling_a_batch():
    net = nets.mazur()
    report = gradcheck.check(net.loss, net.grad, net.params, net.args, against=("numeric", "jax"))
    assert "numeric_batch" not in report.plan  # 10 elements: numpy is done before a batch compiles
