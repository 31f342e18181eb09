"""A leaf whose elements live on scales 10^9 apart: no verdict is read from a step too long.

The default finite-difference step of an element is scaled to the larger of its own size and
its leaf's typical size. An element far smaller than its leaf is then moved by a step of the
leaf's size; where the loss varies on that element's own scale (here sin(x / s) with s a
millionth), the difference aliases: the sine, swept over thousands of periods, differences to
nearly nothing while a quadratic term differences exactly, and Richardson's error estimate,
made from the same steps, stays small. The example is the one a loaded CI machine found
(the hypothesis property of tests/test_layout_properties.py): its exact gradient failed a
projection ("yours 1.03e6 vs finite differences 589809") and the check said FAILED.

Pairs: the exact gradient passes on every plan (all the references, differences alone, short
budgets that leave only projections, or only a few elements); a wrong gradient on the same
problem still fails, and in the tiny element itself.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

import gradcheck
from gradcheck.case import prepare
from gradcheck.fast import (measure, confirm, confirming_steps, directional, inconclusive, project, scaled_direction,
                            shorter_stands)
from gradcheck.references import numeric as numeric_module
from gradcheck.references.numeric import numeric_gradient
from gradcheck.tolerances import default_tolerances, relative_atol

#: Per element: the scale s the loss varies on, and the coefficients of
#: a sin(x/s + phi) + b (x/s)^2 / 2. The third and fourth elements are a millionth of the leaf's
#: largest (2.5e3), and so is the scale the loss varies on there.
S = np.array([2.34216169e+00, 4.98731889e-04, 2.56882926e-06, 1.46310790e-06,
              1.35738296e+02, 1.34139219e+03, 1.16508539e+00, 1.97226655e+01])
A = np.array([1.79476838, 1.31219183, 0.94956784, 1.13403083, 0.54247951, 0.68642491, 1.50593662, 1.47078427])
PHI = np.array([3.8769262, 2.41716859, 6.2824226, 6.17926263, 4.3189145, 4.09789344, 4.3372144, 2.45020497])
B = np.array([0.22158685, 0.74933951, 0.57281889, 0.37921769, 0.53725182, 0.90053905, 0.94063916, 0.42201568])
X = np.array([4.08707135e-01, 8.67937966e-04, 3.24549541e-06, -2.91018892e-06,
              1.94053790e+02, -2.50257866e+03, 1.07027282e+00, -2.55877429e+01])
TINY = 3  # X[3] = -2.9e-6, in a leaf whose typical size is 1.8e3


def loss(p):
    u = p["w"] / S
    return np.sum(A * np.sin(u + PHI) + 0.5 * B * u ** 2) + 0.5 * np.sum(p["b"] ** 2)


def grad(p):
    u = p["w"] / S
    return {"w": (A * np.cos(u + PHI) + B * u) / S, "b": p["b"].copy()}


def params():
    return {"w": X.copy(), "b": np.array([0.3, -0.7])}


def wrong_tiny(p):
    g = grad(p)
    g["w"][TINY] *= -1  # the sign of the one tiny element
    return g


def quiet(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gradcheck.check(*a, **kw)


def _projection(gradient):
    prep = prepare(loss, gradient, params(), ())
    k = prep.names.index("w")
    v = [None] * len(prep.x0)
    v[k] = scaled_direction(prep.x0[k], np.sign(prep.yours[k]))
    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(a, y) for (_, a), y in zip(tol, prep.yours)]
    return prep, v, [r for r, _ in tol], atols


def test_the_default_step_aliases_and_its_error_estimate_does_not_see_it():
    """The failure being guarded against, shown: at the default step, the difference along the
    exact gradient is 0.57 of the true slope with an error bar a thousandth of the gap."""
    prep, v, *_ = _projection(grad)
    true = float(sum(float((y * d).sum()) for y, d in zip(prep.yours, v) if d is not None))
    est, err, _ = directional(prep.objective, prep.x0, v, prep.loss_value)
    assert abs(est - true) > 1e3 * err
    assert 0.3 < est / true < 0.8


def test_a_failing_projection_is_retried_down_to_the_tiny_elements_scale():
    prep, v, rtols, atols = _projection(grad)
    steps = confirming_steps(prep.x0, v, None)
    # down to a step that moves 2.9e-6 by 1e-3 of itself, 1e3 apart
    assert len(steps) >= 2 and steps[-1] < 1e-8
    assert all(b / a == pytest.approx(steps[0]) for a, b in zip(steps, steps[1:]))
    p = project(prep.objective, prep.x0, prep.yours, v, prep.loss_value, rtols, atols, "along yours")
    assert p.ok, p
    assert p.calls == 4 * (1 + len(steps))


def test_the_confirmed_projection_still_fails_a_wrong_tiny_element():
    prep, v, rtols, atols = _projection(wrong_tiny)
    p = project(prep.objective, prep.x0, prep.yours, v, prep.loss_value, rtols, atols, "along yours")
    assert not p.ok, p


def test_without_small_elements_nothing_is_retried():
    x = np.linspace(1.0, 2.0, 8)
    assert confirming_steps([x], [scaled_direction(x, np.ones(8))], None) == []


def test_the_shorter_step_stands_only_against_evidence():
    assert shorter_stands((1.0, 1e-6), (2.0, 1e-3))  # apart beyond both error bars
    assert not shorter_stands((1.0, 1e-6), (1.0005, 1e-3))  # within them: the smaller error
    assert shorter_stands((1.0, 1e-3), (1.0001, 1e-6))
    assert not shorter_stands((1.0, 1e-6), (float("nan"), 0.0))


@pytest.mark.parametrize("against", ["auto", "numeric"])
@pytest.mark.parametrize("budget", [None, 0.3, 0.1, 0.05])
def test_the_exact_gradient_passes_on_every_plan(against, budget):
    kw = {} if budget is None else {"budget": budget}
    try:
        report = quiet(loss, grad, params(), against=against, **kw)
    except gradcheck.BudgetTooShort:
        return  # a clear refusal, not a verdict
    assert report.passed, str(report)
    assert all(p.diagnosis == "ok" for p in report.parameters), str(report)


@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_a_wrong_tiny_element_is_found_where_it_is(against):
    report = quiet(loss, wrong_tiny, params(), against=against)
    assert [p.name for p in report.failures] == ["w"], str(report)
    assert report["w"].worst_index == (TINY,), str(report)


class _Clock:
    """A clock that advances only when the loss is called: `seconds` a call."""

    def __init__(self, seconds):
        self.seconds, self.now = seconds, 0.0

    def perf_counter(self):
        return self.now

    def loss(self, p):
        self.now += self.seconds
        return loss(p)


def test_differences_cut_short_leave_a_suspect_unchecked_rather_than_judge_it_at_the_long_step(monkeypatch):
    """With time for the first pass over the elements but not for the retries at shorter steps,
    the small elements are not checked (and a note says so) rather than judged at the leaf's
    step, where the tiny ones alias; every element checked is within its error bars of the truth."""
    clock = _Clock(0.004)
    monkeypatch.setattr(numeric_module, "time", clock)
    prep = prepare(clock.loss, grad, params(), ())
    selection = [np.arange(x.size) for x in prep.x0]
    # The loss at x0, the noise probe (8 calls), 6 calls per element for 10 elements: 69 calls;
    # retrying one suspect takes 30 more, which the deadline leaves no room for.
    start = clock.now
    ref = numeric_gradient(prep.objective, selection, use_complex=False, call_seconds=clock.seconds,
                           deadline=start + 69 * clock.seconds + 0.06)
    true = grad(params())
    for k, name in enumerate(prep.names):
        ok = ref.checked[k]
        gap = np.abs(ref.values[k] - true[name])[ok]
        assert (gap <= 3 * ref.errors[k][ok] + 1e-9 * np.abs(true[name][ok])).all(), (name, gap, ref.errors[k])
    w = prep.names.index("w")
    small = np.abs(X) < 1e-2 * np.sqrt(np.mean(X ** 2))
    assert not ref.checked[w][small].any(), ref.checked[w]
    assert ref.checked[w][[4, 5]].all()  # the leaf's largest: their step is their own
    assert ref.checked[prep.names.index("b")].all()
    left = int((~ref.checked[w]).sum())
    assert any(f"{left} element(s) needing shorter steps" in n for n in ref.notes), ref.notes


def test_with_time_for_the_retries_every_element_is_checked_and_right(monkeypatch):
    clock = _Clock(0.004)
    monkeypatch.setattr(numeric_module, "time", clock)
    prep = prepare(clock.loss, grad, params(), ())
    ref = numeric_gradient(prep.objective, [np.arange(x.size) for x in prep.x0], use_complex=False,
                           call_seconds=clock.seconds, deadline=clock.now + 1e3)
    w = prep.names.index("w")
    assert ref.checked[w].all()
    np.testing.assert_allclose(ref.values[w], grad(params())["w"], rtol=1e-6)


# ------------------------------------------------ a pass that only a wide error bar let through

S4 = np.array([2700.0, 2700.0, 0.026, 1.0])  # the third element's scale is 1e5 times below its leaf's


def loss4(p):
    return float(np.sum(np.sin(p["w"] / S4)))


def grad4(p, factor=1.0):
    return {"w": factor * np.cos(p["w"] / S4) / S4}


def _default_step(gradient, seed=0):
    prep = prepare(loss4, gradient, {"w": np.array([2500.0, -4000.0, 4e-3, 0.5])}, ())
    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(a, y) for (_, a), y in zip(tol, prep.yours)]
    v = [scaled_direction(prep.x0[0], np.random.default_rng(seed).choice((-1.0, 1.0), size=4))]
    return prep, v, [r for r, _ in tol], atols


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_right_gradient_failing_at_the_default_step_passes_once_confirmed(seed):
    prep, v, rtols, atols = _default_step(grad4, seed)
    p = measure(prep.objective, prep.x0, prep.yours, v, prep.loss_value, rtols, atols, "w", None)
    assert abs(p.yours - p.numeric) > p.tol + 3 * p.error  # aliased beyond its error bar
    assert confirm(prep.objective, prep.x0, v, prep.loss_value, None, p).ok


def test_a_pass_by_a_wide_truncation_error_is_retried_and_a_wrong_gradient_then_fails():
    prep, v, rtols, atols = _default_step(lambda p: grad4(p, 1.002))
    p = measure(prep.objective, prep.x0, prep.yours, v, prep.loss_value, rtols, atols, "w", None)
    true = float((grad4({"w": prep.x0[0]})["w"] * v[0]).sum())
    # As the default step might have said it: the right slope, with an error bar of 1%, truncation.
    lenient = replace(p, numeric=true, error=0.01 * abs(true), truncation=0.01 * abs(true))
    assert replace(lenient, tol=lenient.tol + 3 * lenient.error).ok
    assert inconclusive(lenient.tol, lenient.error, lenient.truncation)
    out = confirm(prep.objective, prep.x0, v, prep.loss_value, None, lenient)
    assert not out.ok and out.calls > p.calls


def test_a_round_off_error_bar_is_not_retried():
    """Shorter steps make round-off larger: a float32 loss's wide error bar stays as it is."""
    assert not inconclusive(tol=1e-9, error=1e-6, truncation=1e-8)
    assert inconclusive(tol=1e-9, error=1e-6, truncation=0.9e-6)
    assert not inconclusive(tol=1e-5, error=1e-6, truncation=1e-6)  # the error bar does not decide


def test_a_wrong_parameter_is_confirmed_once_not_once_per_projection():
    """A projection per parameter along your gradient, then one along random signs: once the first
    has failed and been confirmed the parameter is wrong, and the second is not confirmed again
    (a gradient wrong everywhere, a sign flipped, costs one confirmation per parameter)."""
    import nets
    from gradcheck.fast import PAIR_CALLS, localise

    net = nets.tanh_softmax(N=8, D=20, H=16, C=4, seed=1)

    def flipped(p, *args):
        return {k: -g for k, g in net.grad(p, *args).items()}
    prep = prepare(net.loss, flipped, net.params, net.args)
    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(a, y) for (_, a), y in zip(tol, prep.yours)]
    _, tests, bad = localise(prep.objective, prep.x0, prep.yours, prep.names, prep.loss_value,
                             [r for r, _ in tol], atols, max_tests=400)
    assert all(bad)
    for name in prep.names:
        mine = [t for t in tests if t.label in (f"{name}: along your gradient", f"{name}: random signs")]
        assert len(mine) == 2 and all(not t.ok for t in mine)
        assert mine[1].calls == PAIR_CALLS  # the second, not confirmed
