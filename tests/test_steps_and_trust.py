"""Finite differences pick each element's step by its error estimate; a kink needs evidence; an
exact reference judges only once it agrees with the user's own loss.

Pairs: the correct gradient passes, each planted error fails with a report whose headline, worst
index, largest relative error and diagnosis agree.
"""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gradcheck
from gradcheck import references
from gradcheck.model import ReferenceGradient

from nets import W_MIXED, mixed_grad, mixed_loss  # a small element beside large ones

# --- a small element beside large ones in one leaf -----------------------------------------------



def consistent(p) -> None:
    """The row of the table describes one element: the worst index carries max_rel_error."""
    if p.worst_index is not None and p.rel_errors is not None:
        assert p.max_rel_error == pytest.approx(float(p.rel_errors[p.worst_index]), rel=1e-12, abs=0)
    if not p.passed and p.diagnosis not in ("wrong_shape", "missing"):
        assert p.max_rel_error > 0, p


@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_small_element_beside_large_ones_passes(against):
    report = gradcheck.check(mixed_loss, mixed_grad, W_MIXED, against=against)
    assert report.passed, str(report)
    assert report.parameters[0].diagnosis == "ok", str(report)


@pytest.mark.parametrize("against", ["auto", "numeric"])
@pytest.mark.parametrize("factor", [0.5, 0.1, 2.0, -1.0])
def test_small_element_wrong_by_a_factor_is_caught_at_its_index(against, factor):
    def grad(w):
        g = mixed_grad(w)
        g[0] *= factor
        return g

    report = gradcheck.check(mixed_loss, grad, W_MIXED, against=against)
    p = report.parameters[0]
    assert not report.passed and p.diagnosis == "partial", str(report)
    assert p.worst_index == (0,) and p.wrong_indices == ((0,),)
    assert p.max_rel_error == pytest.approx(abs(1 - factor) / max(1, abs(factor)), rel=1e-6)
    assert not p.nondifferentiable_indices
    consistent(p)


def gaussian_nll(p, x):
    """Nine means near 10 and one scale 0.02 in one vector: p = [mu_1..mu_9, sigma]."""
    mu, sigma = p[:9], p[9]
    return float(np.sum(np.log(sigma) + (x - mu) ** 2 / (2 * sigma ** 2)))


def gaussian_grad(p, x):
    mu, sigma = p[:9], p[9]
    g = np.empty_like(p)
    g[:9] = -(x - mu) / sigma ** 2
    g[9] = np.sum(1 / sigma - (x - mu) ** 2 / sigma ** 3)
    return g


P_GAUSS = np.concatenate([10 + np.linspace(-0.3, 0.3, 9), [0.02]])
X_GAUSS = 10 + np.linspace(-0.31, 0.29, 9) + 0.01


@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_means_beside_a_small_scale(against):
    assert gradcheck.check(gaussian_nll, gaussian_grad, P_GAUSS, args=(X_GAUSS,), against=against).passed

    def half_sigma(p, x):
        g = gaussian_grad(p, x)
        g[9] *= 0.5
        return g

    bad = gradcheck.check(gaussian_nll, half_sigma, P_GAUSS, args=(X_GAUSS,), against=against)
    p = bad.parameters[0]
    assert not bad.passed and p.worst_index == (9,) and p.diagnosis == "partial", str(bad)
    consistent(p)


def test_relu_kink_still_recognised_by_shrinking_steps():
    """z = 0 exactly: the one-sided gap does not shrink with the step, so it stays a kink."""
    x = np.array([1.0, -2.0, 0.5])

    def loss(w):
        return float(np.sum(np.maximum(w * x, 0.0)))

    w = np.array([0.0, 0.3, -0.4])  # the first unit sits exactly on its kink
    right = lambda w: (w * x > 0) * x  # noqa: E731
    report = gradcheck.check(loss, right, w, against="numeric")
    assert report.passed and report.parameters[0].diagnosis == "nondifferentiable"
    assert report.parameters[0].nondifferentiable_indices == ((0,),)
    wrong = gradcheck.check(loss, lambda w: right(w) + np.array([5.0, 0, 0]), w, against="numeric")
    assert not wrong.passed and wrong.parameters[0].worst_index == (0,)
    consistent(wrong.parameters[0])


def test_curvature_at_a_long_step_is_not_a_kink():
    """A bump much narrower than the leaf's step: the first step sees a gap, a shorter one does not."""
    w0 = np.array([1e-6, 50.0, -40.0])

    def loss(w):
        return float(np.exp(-(w[0] / 1e-5) ** 2) + 1e-3 * np.sum(w[1:] ** 2))

    def grad(w):
        return np.array([-2 * w[0] / 1e-10 * np.exp(-(w[0] / 1e-5) ** 2), 2e-3 * w[1], 2e-3 * w[2]])

    ok = gradcheck.check(loss, grad, w0, against="numeric")
    assert ok.passed and ok.parameters[0].diagnosis == "ok", str(ok)

    def halved(w):
        g = grad(w)
        g[0] *= 0.5
        return g

    bad = gradcheck.check(loss, halved, w0, against="numeric")
    assert not bad.passed and bad.parameters[0].worst_index == (0,), str(bad)


# --- a reference that is silently wrong never judges ----------------------------------------------

def _zero_jax(prep, selection, allowance):
    """A JAX reference gone wrong: exactly zero everywhere, and claiming to be exact."""
    shapes = [x.shape for x in prep.x0]
    return ReferenceGradient(name="jax", method="autodiff (jax.grad)", values=tuple(np.zeros(s) for s in shapes),
                             errors=tuple(np.zeros(s) for s in shapes), checked=tuple(np.ones(s, bool) for s in shapes),
                             exact=True)


@pytest.fixture
def zero_jax(monkeypatch):
    monkeypatch.setitem(references.RUNNERS, "jax", _zero_jax)


def test_identically_zero_reference_is_set_aside(zero_jax):
    x = np.array([1.0, 2.0, 3.0])
    loss = lambda p, x: float(np.sum((p["w"] * x - 1.0) ** 2))  # noqa: E731
    grad = lambda p, x: {"w": float(np.sum(2 * (p["w"] * x - 1.0) * x))}  # noqa: E731
    report = gradcheck.check(loss, grad, {"w": 0.7}, args=(x,), against=("numeric", "jax"))
    assert report.passed and report["w"].diagnosis == "ok", str(report)
    jax = next(s for s in report.references if s.name == "jax")
    assert not jax.ran and "random direction" in jax.reason
    x4 = gradcheck.check(loss, lambda p, x: {"w": 4 * grad(p, x)["w"]}, {"w": 0.7}, args=(x,),
                         against=("numeric", "jax"))
    assert x4["w"].diagnosis == "scaled" and x4["w"].factor == 4.0, str(x4)


def test_zero_reference_alone_is_unavailable_not_a_verdict(zero_jax):
    with pytest.raises(gradcheck.ReferenceUnavailable, match="random direction"):
        gradcheck.check(lambda w: float(np.sum(w ** 2)), lambda w: 2 * w, np.array([1.0, 2.0]), against="jax")


coefficients = st.lists(st.floats(0.2, 3.0), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(a=coefficients, seed=st.integers(0, 2**16), scale=st.sampled_from([1e-6, 1e-2, 1.0, 1e3]))
def test_no_kink_where_smooth_beside_a_zero_reference(a, seed, scale):
    """Smooth sums of sin and squares: never a kink, the right gradient passes, one wrong element fails."""
    rng = np.random.default_rng(seed)
    a = np.array(a)
    w0 = rng.standard_normal(a.size) * scale
    loss = lambda w: float(np.sum(np.sin(a * w / scale) + a * (w / scale) ** 2))  # noqa: E731
    grad = lambda w: (a * np.cos(a * w / scale) + 2 * a * w / scale) / scale  # noqa: E731
    runners = dict(references.RUNNERS)
    try:
        references.RUNNERS["jax"] = _zero_jax
        good = gradcheck.check(loss, grad, w0, against=("numeric", "jax"))
        k = int(rng.integers(a.size))

        def bad(w):
            g = grad(w)
            g[k] += 0.1 * max(abs(g[k]), 1.0 / scale)
            return g

        wrong = gradcheck.check(loss, bad, w0, against=("numeric", "jax"))
    finally:
        references.RUNNERS.clear()
        references.RUNNERS.update(runners)
    for report in (good, wrong):
        assert all(not p.nondifferentiable_indices for p in report.parameters), str(report)
    assert good.passed, str(good)
    assert not wrong.passed and wrong.parameters[0].worst_index == (k,), str(wrong)
    consistent(wrong.parameters[0])
