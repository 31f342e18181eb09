"""Every malformed input and awkward piece of learner code gets a clear, tested answer.

Each test asserts the exact error type or finding, and that the message names the leaf and the
way out. Every check here runs through `checked`, which also asserts that the caller's
parameters and data are bitwise identical afterwards: on pass, on failure and on exception.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pytest

import gradcheck
from gradcheck import (GradcheckError, InvalidCase, NondeterministicLoss, StructureMismatch,
                       UserCodeError)

import nets
from nets import assert_identical, snapshot

HERE = os.path.basename(__file__)


# ---------------------------------------------------------------------------------------------
# The caller's arrays are never touched: every check in this file goes through `checked`
# ---------------------------------------------------------------------------------------------

def checked(loss, grad, params, args=(), *, check=None, **options):
    """Run gradcheck.check (or `check`) and assert params and args are untouched, whatever happens."""
    options.setdefault("against", "numeric")
    before = snapshot((params, args))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (check or gradcheck.check)(loss, grad, params, args, **options)
    finally:
        assert_identical((params, args), before)


def quad_loss(p, X):
    return 0.5 * np.sum((X @ p["W"] + p["b"]) ** 2)


def quad_grad(p, X):
    r = X @ p["W"] + p["b"]
    return {"W": X.T @ r, "b": r.sum(axis=0)}


def quad_case(seed=0):
    rng = np.random.default_rng(seed)
    return {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}, (rng.standard_normal((4, 2)),)


# ---------------------------------------------------------------------------------------------
# Structure of the gradient
# ---------------------------------------------------------------------------------------------

def test_missing_key():
    params, args = quad_case()
    with pytest.raises(StructureMismatch) as info:
        checked(quad_loss, lambda p, X: {"W": quad_grad(p, X)["W"]}, params, args)
    assert "missing key 'b'" in str(info.value) and "Return exactly the keys ['W', 'b']" in str(info.value)


def test_extra_key():
    params, args = quad_case()
    with pytest.raises(StructureMismatch) as info:
        checked(quad_loss, lambda p, X: {**quad_grad(p, X), "lr": 0.1}, params, args)
    assert "extra key 'lr'" in str(info.value) and "Return exactly the keys" in str(info.value)


def test_misspelt_key():
    params, args = quad_case()

    def grad(p, X):
        g = quad_grad(p, X)
        return {"W": g["W"], "db": g["b"]}
    with pytest.raises(StructureMismatch) as info:
        checked(quad_loss, grad, params, args)
    assert "missing key 'b' (you returned 'db': a misspelling?)" in str(info.value)


def test_list_of_wrong_length():
    net = nets.nielsen()

    def grad(p, X, Y):
        g = net.grad(p, X, Y)
        g["weights"] = g["weights"][:1]
        return g
    with pytest.raises(StructureMismatch) as info:
        checked(net.loss, grad, net.params, net.args)
    msg = str(info.value)
    assert "weights" in msg and "length 1" in msg and "2 entries" in msg and "one gradient per parameter" in msg


def test_leaf_none_is_an_unfinished_stub():
    params, args = quad_case()
    with pytest.raises(StructureMismatch) as info:
        checked(quad_loss, lambda p, X: {"W": quad_grad(p, X)["W"], "b": None}, params, args)
    assert "parameter 'b' is None" in str(info.value) and "Return an array of the parameter's shape" in str(info.value)


def test_gradient_not_a_number_array():
    params, args = quad_case()
    with pytest.raises(InvalidCase) as info:
        checked(quad_loss, lambda p, X: {"W": quad_grad(p, X)["W"], "b": "todo"}, params, args)
    assert "'b'" in str(info.value) and "Return a float array" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

def test_transposed_shape():
    params, args = quad_case()
    report = checked(quad_loss, lambda p, X: {**quad_grad(p, X), "W": quad_grad(p, X)["W"].T}, params, args)
    p = report["W"]
    assert (p.diagnosis, p.expected_shape, p.actual_shape) == ("wrong_shape", (2, 3), (3, 2))
    assert "transposed (its transpose is right)" in p.detail and report["b"].passed


def test_row_instead_of_vector():
    params, args = quad_case()
    report = checked(quad_loss, lambda p, X: {**quad_grad(p, X), "b": quad_grad(p, X)["b"][None, :]}, params, args)
    p = report["b"]
    assert (p.diagnosis, p.expected_shape, p.actual_shape) == ("wrong_shape", (3,), (1, 3))
    assert "keepdims" in p.detail and "reshape" in p.detail and "(the values are right)" in p.detail


def test_scalar_where_vector_expected():
    params, args = quad_case()
    report = checked(quad_loss, lambda p, X: {**quad_grad(p, X), "b": quad_grad(p, X)["b"].sum()}, params, args)
    p = report["b"]
    assert (p.diagnosis, p.actual_shape) == ("wrong_shape", ())
    assert "single number where the parameter is an array" in p.detail
    text = str(report)
    assert "b" in text and "wrong_shape" in text


# ---------------------------------------------------------------------------------------------
# Parameter types and dtypes
# ---------------------------------------------------------------------------------------------

def test_integer_array_parameter_is_refused():
    with pytest.raises(InvalidCase) as info:
        checked(lambda p: np.sum(p["W"] ** 2.0), lambda p: {"W": 2.0 * p["W"]}, {"W": np.arange(4)})
    msg = str(info.value)
    assert "parameter 'W' has integer dtype" in msg and ".astype(float)" in msg and "meaningless" in msg


def test_integer_python_parameter_is_refused_with_the_float_spelling():
    with pytest.raises(InvalidCase) as info:
        checked(lambda p: p["a"] ** 3.0, lambda p: {"a": 3.0 * p["a"] ** 2}, {"a": 2})
    assert "parameter 'a'" in str(info.value) and "2 -> 2.0" in str(info.value)


def test_bool_and_string_parameters_are_refused():
    for bad in (True, "0.5", None):
        with pytest.raises(InvalidCase) as info:
            checked(lambda p: 0.0, lambda p: p, {"flag": bad})
        assert "'flag'" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_parameters(dtype):
    x = np.linspace(-1, 1, 6).astype(dtype)
    report = checked(lambda w: np.sum(w ** 3), lambda w: 3 * w ** 2, x)
    assert report.passed, str(report)
    assert report["params"].dtype == np.dtype(dtype).name
    bad = checked(lambda w: np.sum(w ** 3), lambda w: 6 * w ** 2, x)
    assert bad["params"].diagnosis == "scaled" and bad["params"].factor == 2.0


def test_python_scalar_parameters():
    assert checked(lambda w: w ** 3, lambda w: 3 * w ** 2, 2.0).passed
    assert checked(lambda w: w ** 3, lambda w: 3 * w ** 2, np.float64(2.0)).passed
    mixed = {"a": 0.5, "W": np.array([1.0, -2.0])}
    loss = lambda p: p["a"] * np.sum(p["W"] ** 2)  # noqa: E731
    assert checked(loss, lambda p: {"a": float(np.sum(p["W"] ** 2)), "W": 2 * p["a"] * p["W"]}, mixed).passed
    report = checked(loss, lambda p: {"a": float(np.sum(p["W"] ** 2)), "W": p["a"] * p["W"]}, mixed)
    assert [p.name for p in report.failures] == ["W"] and report["W"].factor == 0.5


def test_params_none_and_empty_containers():
    with pytest.raises(InvalidCase, match="params is None"):
        checked(lambda p: 0.0, lambda p: p, None)
    with pytest.raises(InvalidCase, match="no leaves"):
        checked(lambda p: 0.0, lambda p: p, {})


# ---------------------------------------------------------------------------------------------
# NaN and inf
# ---------------------------------------------------------------------------------------------

def test_nan_loss_at_the_base_point():
    with pytest.raises(InvalidCase) as info:
        checked(lambda p: np.sum(np.log(p)), lambda p: 1 / p, np.array([1.0, -1.0]))
    assert "the loss is nan" in str(info.value) and "log(0)" in str(info.value)


def test_inf_loss_at_the_base_point():
    with pytest.raises(InvalidCase, match="the loss is inf"):
        checked(lambda p: np.sum(np.exp(p)), lambda p: np.exp(p), np.array([1.0, 1000.0]))


def test_nan_in_the_gradient():
    report = checked(lambda p: np.sum(p ** 2), lambda p: np.where(p > 0, 2 * p, np.nan), np.array([1.0, -2.0, 3.0]))
    p = report["params"]
    assert p.diagnosis == "nonfinite" and "params[1]" in p.detail and "NaN" in p.cause


def test_nan_only_at_perturbed_points_a_smaller_step_recovers():
    """log near 0 next to a large element: the leaf-scaled step crosses 0, the element-scaled one does not."""
    w = np.array([1e-4, 10.0, 5.0])
    report = checked(lambda p: np.sum(np.log(p)), lambda p: 1 / p, w)
    assert report.passed and report["params"].checked == 3, str(report)
    bad = checked(lambda p: np.sum(np.log(p)), lambda p: np.array([1.1 / p[0], 1 / p[1], 1 / p[2]]), w)
    assert bad["params"].diagnosis == "partial" and bad["params"].wrong_indices == ((0,),)


def test_nan_only_at_perturbed_points_is_reported_not_passed_silently():
    """sqrt(1 - w) at w a hair below 1: every step crosses the edge; the element is named as unchecked."""
    w = np.array([0.5, 1 - 1e-12])
    report = checked(lambda p: np.sum(np.sqrt(1 - p)), lambda p: -0.5 / np.sqrt(1 - p), w)
    assert report["params"].checked == 1 and report["params"].total == 2
    warning = next(w for w in report.warnings if "NOT checked" in w)
    assert warning.startswith("params:") and "[1]" in warning and "NaN or inf" in warning and "clip" in warning
    assert "warning: params: 1 element(s) were NOT checked" in str(report)


# ---------------------------------------------------------------------------------------------
# What the loss returns
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("returned,message", [
    (lambda p: p ** 2, "returned an array of shape (3,); a loss must be a single number"),
    (lambda p: list(p ** 2), "returned a list; it must return the loss as a single number"),
    (lambda p: "0.5", "returned a string"),
    (lambda p: None, "returned None"),
    (lambda p: {"loss": 1.0}, "returned a dict"),
    (lambda p: object(), "not a number"),
])
def test_loss_returning_something_else(returned, message):
    with pytest.raises(InvalidCase) as info:
        checked(returned, lambda p: 2 * p, np.ones(3))
    assert message in str(info.value)
    assert "np.sum" in str(info.value) or "number" in str(info.value)


def test_loss_returning_a_one_element_array_or_0d_is_fine():
    assert checked(lambda p: np.sum(p ** 2, keepdims=True), lambda p: 2 * p, np.ones(3)).passed
    assert checked(lambda p: np.array(np.sum(p ** 2)), lambda p: 2 * p, np.ones(3)).passed


# ---------------------------------------------------------------------------------------------
# User code that raises: the user's traceback, not gradcheck's frames
# ---------------------------------------------------------------------------------------------

def _assert_users_traceback(exc: UserCodeError, line_text: str) -> None:
    text = str(exc)
    assert "Your code raised:" in text and HERE in text and line_text in text
    shown = exc.user_traceback
    assert HERE in shown
    assert os.path.dirname(gradcheck.__file__) + os.sep not in shown   # none of gradcheck's own frames
    assert exc.where.startswith(HERE)


def test_loss_raising_at_the_base_point():
    def loss(p):
        return np.sum(p ** 2) + undefined_name  # noqa: F821
    with pytest.raises(UserCodeError) as info:
        checked(loss, lambda p: 2 * p, np.ones(2))
    assert "your loss raised NameError" in str(info.value)
    _assert_users_traceback(info.value, "undefined_name")
    assert isinstance(info.value.__cause__, NameError)


def test_loss_raising_only_at_a_perturbed_point():
    def loss(p):
        if p[0] > 1.0:
            raise ValueError("p[0] above 1")
        return np.sum(p ** 2)
    with pytest.raises(UserCodeError) as info:
        checked(loss, lambda p: 2 * p, np.array([1.0, 2.0]))
    msg = str(info.value)
    assert "only at a perturbed point: params[0] set to" in msg and "branch that raises" in msg
    _assert_users_traceback(info.value, "raise ValueError")


def test_gradient_function_raising():
    def grad(p, X):
        return {"W": X.T @ p["missing"], "b": 0}
    params, args = quad_case()
    with pytest.raises(UserCodeError) as info:
        checked(quad_loss, grad, params, args)
    assert "your gradient function raised KeyError" in str(info.value)
    _assert_users_traceback(info.value, "p[\"missing\"]")


# ---------------------------------------------------------------------------------------------
# Nondeterminism and hidden state
# ---------------------------------------------------------------------------------------------

def test_nondeterministic_loss():
    rng = np.random.default_rng()

    def loss(p):
        mask = rng.random(p.shape) > 0.5       # unseeded dropout
        return np.sum((p * mask) ** 2)
    with pytest.raises(NondeterministicLoss) as info:
        checked(loss, lambda p: 2 * p, np.linspace(0.1, 2.0, 50))   # distinct values: no two masks tie
    assert "different values for the same parameters" in str(info.value)
    assert "seed" in str(info.value) and "dropout mask in args" in str(info.value)
    assert isinstance(info.value, GradcheckError) and isinstance(info.value, RuntimeError)


def test_loss_depending_on_state_the_gradient_changes():
    state = {"calls": 0}

    def loss(p):
        return np.sum(p ** 2) + state["calls"]

    def grad(p):
        state["calls"] += 1                     # e.g. a step counter kept in a global
        return 2 * p
    with pytest.raises(NondeterministicLoss) as info:
        checked(loss, grad, np.ones(3))
    assert "changed after your gradient function ran" in str(info.value) and "pure functions" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Code that writes into its inputs
# ---------------------------------------------------------------------------------------------

def softmax_loss_in_place(p, X, y):
    scores = X @ p["W"]
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(scores[np.arange(len(y)), y]))
    X[0] = 0.0                                  # "clean up" the data ...
    p["W"] *= 0.99                              # ... and sneak an update into the parameters
    return loss


def softmax_grad(p, X, y):
    scores = X @ p["W"]
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    probs[np.arange(len(y)), y] -= 1
    return {"W": X.T @ probs / len(y)}


def _softmax_case():
    rng = np.random.default_rng(3)
    return {"W": rng.standard_normal((3, 4))}, (rng.standard_normal((5, 3)), rng.integers(0, 4, 5))


def test_loss_mutating_params_and_data():
    params, args = _softmax_case()
    report = checked(softmax_loss_in_place, softmax_grad, params, args)
    assert report.passed, str(report)
    warning = next(w for w in report.warnings if "your loss modifies its inputs in place" in w)
    assert "parameter 'W'" in warning and "argument args[0]" in warning
    bad = checked(softmax_loss_in_place, lambda p, X, y: {"W": 2 * softmax_grad(p, X, y)["W"]}, params, args)
    assert bad["W"].diagnosis == "scaled"


def test_loss_writing_destructively_into_data():
    """A loss that normalises X in place would see different data on every call without copies."""
    def loss(p, X):
        X -= X.mean(axis=0)
        X /= 2.0
        return np.sum((X @ p) ** 2)

    def grad(p, X):
        Xc = (X - X.mean(axis=0)) / 2.0
        return 2 * Xc.T @ (Xc @ p)
    X = np.random.default_rng(0).standard_normal((6, 3)) + 1.0
    report = checked(loss, grad, np.ones(3), (X,))
    assert report.passed, str(report)
    assert any("argument args[0]" in w for w in report.warnings)


def test_gradient_mutating_params_and_data():
    params, args = _softmax_case()

    def grad(p, X, y):
        g = softmax_grad(p, X, y)
        p["W"] -= 0.1 * g["W"]                  # the update applied inside the gradient function
        X[:] = 0.0
        return g
    report = checked(lambda p, X, y: softmax_loss_in_place(copy.deepcopy(p), X.copy(), y), grad, params, args)
    assert report.passed, str(report)
    warning = next(w for w in report.warnings if "your gradient function modifies its inputs in place" in w)
    assert "parameter 'W'" in warning and "argument args[0]" in warning


def _bn_layer_inputs():
    net = nets.batchnorm()
    return (net.params["x"], net.params["gamma"], net.params["beta"])


@pytest.mark.parametrize("bug,warning", [("mutates_dout", "modifies dout in place"),
                                         ("mutates_cache", "modifies the cache in place")])
def test_backward_mutating_dout_or_cache(bug, warning):
    inputs = _bn_layer_inputs()
    before = snapshot(inputs)
    dout = np.random.default_rng(1).standard_normal(inputs[0].shape)
    dout_before = dout.copy()
    report = gradcheck.check_layer(nets.batchnorm_forward,
                                   lambda d, c: nets.batchnorm_layer_backward(d, c, bug), inputs,
                                   dout=dout, against="numeric")
    assert report.passed, str(report)
    assert any(warning in w for w in report.warnings), report.warnings
    assert_identical(inputs, before)
    assert dout.tobytes() == dout_before.tobytes()


def test_backward_returning_none_is_missing():
    inputs = _bn_layer_inputs()
    report = gradcheck.check_layer(nets.batchnorm_forward, lambda d, c: nets.batchnorm_layer_backward(d, c, "stub"),
                                   inputs, against="numeric")
    p = report["[2]"]
    assert p.diagnosis == "missing" and "None" in p.detail and "stub" in p.cause


# ---------------------------------------------------------------------------------------------
# Memory shared between parameters
# ---------------------------------------------------------------------------------------------

def test_same_array_twice():
    W = np.arange(6.0).reshape(2, 3)
    params = {"a": W, "b": W}
    loss = lambda p: np.sum(p["a"] ** 2) + np.sum(p["b"] ** 3)  # noqa: E731
    report = checked(loss, lambda p: {"a": 2 * p["a"], "b": 3 * p["b"] ** 2}, params)
    assert report.passed, str(report)
    assert any("'a' and 'b' share memory" in w for w in report.warnings)
    bad = checked(loss, lambda p: {"a": 2 * p["a"], "b": 2 * p["b"]}, params)
    assert [p.name for p in bad.failures] == ["b"]


def test_overlapping_views():
    W = np.arange(1.0, 7.0).reshape(2, 3)
    params = [W[0], W[:, 1]]                   # share W[0, 1]
    loss = lambda p: np.sum(p[0] ** 2) + np.sum(np.sin(p[1]))  # noqa: E731
    report = checked(loss, lambda p: [2 * p[0], np.cos(p[1])], params)
    assert report.passed, str(report)
    assert any("'[0]' and '[1]' share memory" in w for w in report.warnings)
    disjoint = checked(loss, lambda p: [2 * p[0], np.cos(p[1])], [W[0], W[1]])
    assert not any("share memory" in w for w in disjoint.warnings)


# ---------------------------------------------------------------------------------------------
# Empty arrays and extreme scales
# ---------------------------------------------------------------------------------------------

def test_empty_arrays():
    params = {"W": np.ones(3), "unused": np.zeros((0, 4))}
    loss = lambda p: np.sum(p["W"] ** 2) + np.sum(p["unused"])  # noqa: E731
    report = checked(loss, lambda p: {"W": 2 * p["W"], "unused": np.zeros((0, 4))}, params)
    assert report.passed and report["unused"].checked == 0 and report["unused"].total == 0
    wrong = checked(loss, lambda p: {"W": 2 * p["W"], "unused": np.zeros((4, 0))}, params)
    assert wrong["unused"].diagnosis == "wrong_shape"
    only_empty = checked(lambda p: np.sum(p), lambda p: np.zeros(0), np.zeros(0))
    assert only_empty.passed


@pytest.mark.parametrize("scale", [1e8, 1e-12])
def test_extreme_parameter_scales(scale):
    """Parameters of size 1e8 or 1e-12: correct passes, a 1e-6 relative error or a 2x is caught."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 3))
    w = rng.standard_normal(3) * scale
    y = rng.standard_normal(5)

    def loss(p):                                # loss in natural units, parameters in scaled ones
        return np.sum(np.tanh(A @ p / scale - y) ** 2)

    def grad(p):
        t = np.tanh(A @ p / scale - y)
        return A.T @ (2 * t * (1 - t ** 2)) / scale
    assert checked(loss, grad, w).passed
    assert not checked(loss, lambda p: grad(p) * (1 + 1e-6), w).passed
    assert checked(loss, lambda p: 2 * grad(p), w)["params"].factor == 2.0

    def loss2(p):                               # loss and gradient in the parameters' own units
        return 0.5 * np.sum((A @ p) ** 2)
    assert checked(loss2, lambda p: A.T @ (A @ p), w).passed
    assert not checked(loss2, lambda p: A.T @ (A @ p) * (1 + 1e-6), w).passed


# ---------------------------------------------------------------------------------------------
# Bad options
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    ({"rtol": -1.0}, "rtol=-1.0 is not a valid rtol"),
    ({"atol": "tiny"}, "atol='tiny' is not a valid atol"),
    ({"against": "torch"}, "unknown reference 'torch'"),
])
def test_bad_options(options, message):
    params, args = quad_case()
    with pytest.raises(InvalidCase) as info:
        checked(quad_loss, quad_grad, params, args, **options)
    assert message in str(info.value)


def test_loss_and_grad_must_be_functions():
    with pytest.raises(InvalidCase, match="loss must be a function"):
        checked("loss", quad_grad, *quad_case())
    with pytest.raises(InvalidCase, match="grad must be a function"):
        checked(quad_loss, None, *quad_case())


# ---------------------------------------------------------------------------------------------
# Bitwise identity of the caller's arrays, for every outcome, on every net
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(nets.ALL_NETS))
def test_caller_arrays_untouched_on_pass_fail_and_exception(name):
    net = nets.ALL_NETS[name]()
    assert checked(net.loss, net.grad, net.params, net.args).passed
    first_bug = next(iter(net.bugs.values()))
    assert not checked(net.loss, first_bug, net.params, net.args).passed
    calls = {"n": 0}

    def flaky(p, *args):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("boom midway")
        return net.loss(p, *args)
    with pytest.raises(UserCodeError):
        checked(flaky, net.grad, net.params, net.args)
