"""Guarantees proved by property tests (Hypothesis).

(a) The caller's parameters and data are bitwise identical after any check: pass, fail or exception.
(b) Correct gradients of random smooth networks never fail, in float64 and float32 (at scales
    where no single saturated unit carries every gradient: see the documented limit below).
(c) A single-element corruption of one leaf, of at least 1e-6 of the network's largest gradient
    entry (100x the float64 default rtol of 1e-8, 1e4x its atol of 1e-10 x the leaf's largest
    entry), is always found: that leaf alone fails, with the corrupted element as its worst index.
(d) Junk for parameters, gradients, losses or data makes `check` raise only gradcheck's own errors.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck import GradcheckError
from gradcheck.tree import flatten, unflatten

from nets import assert_identical

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def quiet_check(*a, **kw):
    kw.setdefault("against", "numeric")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gradcheck.check(*a, **kw)


# ---------------------------------------------------------------------------------------------
# (a) bitwise identity
# ---------------------------------------------------------------------------------------------

finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)
leaf = st.one_of(
    finite,
    hnp.arrays(st.sampled_from([np.float64, np.float32]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=3),
               elements=st.floats(-3, 3, width=32)),
)
pytrees = st.recursive(leaf, lambda kids: st.one_of(
    st.lists(kids, min_size=1, max_size=3),
    st.lists(kids, min_size=1, max_size=3).map(tuple),
    st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), kids, min_size=1, max_size=3),
), max_leaves=6)
FAILURES = ["none", "wrong_grad", "loss_raises_at_k", "grad_raises", "loss_mutates", "grad_mutates",
            "nan_at_k", "grad_junk"]


def _leaves64(tree):
    return [np.asarray(x, dtype=np.float64) for x in flatten(tree)[1]]


@FAST
@given(params=pytrees, data=hnp.arrays(np.float64, st.integers(1, 4), elements=finite),
       failure=st.sampled_from(FAILURES), k=st.integers(1, 40))
def test_a_callers_arrays_are_bitwise_identical_after_any_check(params, data, failure, k):
    calls = {"n": 0}

    def loss(p, d):
        calls["n"] += 1
        if failure == "loss_raises_at_k" and calls["n"] == k:
            raise RuntimeError("raised at call k")
        if failure == "loss_mutates":
            d += 1.0
            for x in flatten(p)[1]:
                if isinstance(x, np.ndarray):
                    x *= 2.0
        value = sum(float(np.sum(np.sin(x))) for x in _leaves64(p)) + 0.1 * float(np.sum(d ** 2))
        return float("nan") if failure == "nan_at_k" and calls["n"] >= k else value

    def grad(p, d):
        if failure == "grad_raises":
            raise KeyError("W")
        if failure == "grad_mutates":
            d[:] = 0.0
            for x in flatten(p)[1]:
                if isinstance(x, np.ndarray):
                    x[...] = 7.0
        names, leaves, td = flatten(p)
        g = [np.cos(np.asarray(x, dtype=np.float64)) * (2.0 if failure == "wrong_grad" else 1.0) for x in leaves]
        if failure == "grad_junk":
            g[0] = "junk"
        return unflatten(td, g)

    before = copy.deepcopy((params, data))
    try:
        quiet_check(loss, grad, params, (data,))
    except GradcheckError:
        pass
    assert_identical((params, (data,)), (before[0], (before[1],)))


# ---------------------------------------------------------------------------------------------
# Random smooth networks
# ---------------------------------------------------------------------------------------------

ACTIVATIONS = {
    "tanh": (np.tanh, lambda z, a: 1 - a ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, a: a * (1 - a)),
    "softplus": (lambda z: np.logaddexp(0, z), lambda z, a: 1 / (1 + np.exp(-z))),
}


def mlp_loss(p, X, Y, acts):
    a = X
    for i, act in enumerate(acts):
        a = ACTIVATIONS[act][0](a @ p[f"W{i}"] + p[f"b{i}"])
    return 0.5 * np.sum((a - Y) ** 2) / X.shape[0]


def mlp_grad(p, X, Y, acts):
    zs, outs, a = [], [X], X
    for i, act in enumerate(acts):
        z = a @ p[f"W{i}"] + p[f"b{i}"]
        a = ACTIVATIONS[act][0](z)
        zs.append(z)
        outs.append(a)
    g = {}
    delta = (outs[-1] - Y) / X.shape[0]
    for i in reversed(range(len(acts))):
        delta = delta * ACTIVATIONS[acts[i]][1](zs[i], outs[i + 1])
        g[f"W{i}"] = outs[i].T @ delta
        g[f"b{i}"] = delta.sum(axis=0)
        delta = delta @ p[f"W{i}"].T
    return {k: g[k] for k in p}


@st.composite
def networks(draw, scale_choices=(0.3, 0.6, 1.0)):
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(1, 6)) for _ in range(depth + 1)]
    acts = tuple(draw(st.sampled_from(sorted(ACTIVATIONS))) for _ in range(depth))
    w_scale = draw(st.sampled_from(scale_choices))
    x_scale = draw(st.sampled_from(scale_choices))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n = draw(st.integers(1, 5))
    params = {}
    for i in range(depth):
        params[f"W{i}"] = rng.standard_normal((widths[i], widths[i + 1])) * w_scale / np.sqrt(widths[i])
        params[f"b{i}"] = rng.standard_normal(widths[i + 1]) * 0.5
    X = rng.standard_normal((n, widths[0])) * x_scale
    Y = rng.random((n, widths[-1]))
    return params, (X, Y, acts)


def _check_net(net, dtype):
    params, (X, Y, acts) = net
    params = {k: v.astype(dtype) for k, v in params.items()}
    return quiet_check(mlp_loss, mlp_grad, params, (X.astype(dtype), Y.astype(dtype), acts))


@FAST
@given(net=networks(), dtype=st.sampled_from([np.float64, np.float32]))
def test_b_correct_smooth_networks_never_fail(net, dtype):
    """Scales 0.3 to 1 for weights and inputs (the saturated extreme is tested below)."""
    report = _check_net(net, dtype)
    assert report.passed, str(report)


# Beyond: when every gradient flows through one saturated unit, the user's own round-off in
# 1 - tanh(z)^2 or a (1 - a) (cancellation) exceeds the dtype's rtol at every leaf at once, and no
# leaf is large enough for the overall-scale atol to excuse it. gradcheck measures that round-off
# by re-running the user's gradient in wider precision, and allows for it.
SATURATED = {   # one unit at z = -12 (tanh, float64) or z = 10 (sigmoid, float32) carries every gradient
    "float64": ({"W0": np.array([[2.0], [-1.0]]), "b0": np.array([0.0])},
                (np.array([[-5.0, 2.0]]), np.array([[0.1]]), ("tanh",))),
    "float32": ({"W0": np.array([[2.0], [-1.0]]), "b0": np.array([0.0])},
                (np.array([[4.0, -2.0]]), np.array([[0.1]]), ("sigmoid",))),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_b_network_saturated_everywhere(dtype):
    assert _check_net(SATURATED[dtype], np.dtype(dtype).type).passed


@FAST
@given(net=networks(), data=st.data())
def test_c_single_element_corruption_is_found_and_located(net, data):
    params, args = net
    names = list(params)
    target = data.draw(st.sampled_from(names), label="leaf")
    index = data.draw(st.integers(0, params[target].size - 1), label="flat index")
    true = mlp_grad(params, *args)
    biggest = max(float(np.abs(g).max()) for g in true.values())
    rel = data.draw(st.floats(1e-6, 1.0), label="size relative to the largest entry")
    sign = data.draw(st.sampled_from([-1.0, 1.0]), label="sign")
    delta = sign * rel * max(biggest, 1e-8)

    def corrupted(p, *a):
        g = mlp_grad(p, *a)
        g[target] = g[target].copy()
        g[target].reshape(-1)[index] += delta
        return g

    report = quiet_check(mlp_loss, corrupted, params, args)
    assert [p.name for p in report.failures] == [target], str(report)
    where = tuple(int(i) for i in np.unravel_index(index, params[target].shape))
    assert report[target].worst_index == where, str(report)


# ---------------------------------------------------------------------------------------------
# (d) junk in, only gradcheck's errors out
# ---------------------------------------------------------------------------------------------

class Weird:
    """An object that fights conversion to an array."""

    def __array__(self, *a, **kw):
        raise RuntimeError("no array for you")

    def __float__(self):
        raise TypeError("no float either")

    def __len__(self):
        raise ValueError("no length")


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.complex_numbers(),
    st.text(max_size=5), st.binary(max_size=5), st.just(Weird()), st.just(object()), st.just(print),
    st.sampled_from([int, float, str, bytes, complex, frozenset, range, slice]).flatmap(
        lambda t: st.from_type(t)),
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
)
junk = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers(), st.none()), kids, max_size=3),
    st.sets(st.integers(), max_size=3),
), max_leaves=5)


def _safe_loss(p, *a):
    return sum(float(np.sum(x)) for x in _leaves64(p))


@FAST
@given(params=junk)
def test_d_junk_params_raise_only_gradcheck_errors(params):
    try:
        quiet_check(_safe_loss, lambda p, *a: p, params)
    except GradcheckError:
        pass


@FAST
@given(returned=junk, params=pytrees)
def test_d_gradients_returning_junk_raise_only_gradcheck_errors(returned, params):
    try:
        quiet_check(_safe_loss, lambda p, *a: returned, params)
    except GradcheckError:
        pass


@FAST
@given(returned=junk)
def test_d_losses_returning_junk_raise_only_gradcheck_errors(returned):
    try:
        quiet_check(lambda p: returned, lambda p: np.ones(2), np.ones(2))
    except GradcheckError:
        pass


@FAST
@given(args=junk)
def test_d_junk_data_raise_only_gradcheck_errors(args):
    try:
        quiet_check(lambda p, *a: float(np.sum(p ** 2)), lambda p, *a: 2 * p, np.ones(2), args)
    except GradcheckError:
        pass


@pytest.mark.parametrize("options", [
    {"kwargs": [1]},
    {"rtol": "tight"},
    {"budget": float("nan")},
    {"against": ["numeric", 3]},
    {"seed": "x"},
    {"seed": -1},
    {"seed": 1.5},
    {"max_elements": "x"},
    {"max_elements": -3},
    {"against": 5},
], ids=repr)
def test_d_junk_options_raise_only_gradcheck_errors(options):
    options = {"against": "numeric", **options}
    with pytest.raises(GradcheckError):
        quiet_check(lambda p: float(np.sum(p ** 2)), lambda p: 2 * p, np.ones(3), **options)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturated_round_off_allowance_does_not_excuse_a_bug(dtype):
    """The allowance is what wider precision changes; a bug is the same in both, so it is still caught."""
    params, (X, Y, acts) = SATURATED[dtype]
    t = np.dtype(dtype).type
    params = {k: v.astype(t) for k, v in params.items()}

    def doubled(p, *a):
        return {k: 2 * v for k, v in mlp_grad(p, *a).items()}

    report = quiet_check(mlp_loss, doubled, params, (X.astype(t), Y.astype(t), acts))
    assert not report.passed and not any(p.passed for p in report.parameters), str(report)
    if dtype == "float64":  # float32's own round-off here is ~1e-3, too coarse to name the factor
        assert {p.diagnosis for p in report.parameters} == {"scaled"}, str(report)
