"""The JAX and SymPy re-runs follow code written the way learners write it, in pairs.

Each idiom: the correct gradient passes with numeric, jax and sympy all run, and a planted bug is
caught with the right diagnosis. What a re-run still cannot follow fails at once (well under a
second) with a message naming the user's line and the rewrite that makes it run.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import gradcheck
from gradcheck.errors import NondeterministicLoss, ReferenceUnavailable
from gradcheck.objective import Objective
from gradcheck.references.jax import reference as jax_ref
from gradcheck.references.sympy import reference as sympy_ref
from gradcheck.tree import flatten, validate_leaf

ALL = {"numeric", "jax", "sympy"}
X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
Y = np.array([1.0, -2.0])
W0 = {"w": np.array([0.3, -0.1, 0.2]), "b": 0.1}


def ran(report) -> set:
    return {s.name for s in report.references if s.ran}


def why(report) -> str:
    return "; ".join(f"{s.name}: {s.reason}" for s in report.references if not s.ran)


def assert_pair(loss, grad, buggy, params, args, diagnosis, factor=None):
    """The correct gradient passes with all three references; the bug gets `diagnosis` everywhere."""
    good = gradcheck.check(loss, grad, params, args=args)
    assert good.passed and all(p.diagnosis == "ok" for p in good.parameters), str(good)
    assert ran(good) == ALL, why(good)
    bad = gradcheck.check(loss, buggy, params, args=args)
    assert not bad.passed and ran(bad) == ALL, why(bad)
    for p in bad.parameters:
        assert p.diagnosis == diagnosis, str(bad)
        if factor is not None:
            assert p.factor == pytest.approx(factor), str(bad)


# --- scalar conversions of the loss's value: float(), np.float64(), .item(), int() on data -------

def linreg_grad(p, X, y, scale=1.0):
    r = X @ p["w"] + p["b"] - y
    return {"w": scale * X.T @ r / len(y), "b": scale * float(np.mean(r))}


def loss_float(p, X, y):
    r = X @ p["w"] + p["b"] - y
    return float(0.5 * np.mean(r ** 2))


def loss_float64(p, X, y):
    r = X @ p["w"] + p["b"] - y
    return np.float64(0.5 * np.sum(r ** 2) / len(y))


def loss_item(p, X, y):
    r = X @ p["w"] + p["b"] - y
    return (0.5 * np.mean(r ** 2)).item()


def loss_int_on_data(p, X, y):
    m = int(X.shape[0])                  # int() of data: a shape, stays a Python int
    total = 0.0
    for i in range(int(len(y))):
        r = float(X[i] @ p["w"] + p["b"] - y[i])   # float() of a traced element: the element
        total += r * r
    return float(total / (2 * m))


@pytest.mark.parametrize("loss", [loss_float, loss_float64, loss_item, loss_int_on_data])
def test_scalar_conversions_are_the_value_traced(loss):
    assert_pair(loss, linreg_grad, lambda p, X, y: linreg_grad(p, X, y, scale=2.0), W0, (X, Y), "scaled", 2.0)


# --- pure-Python scalar code: Mazur's own style ----------------------------------------------------

class Neuron:
    def __init__(self, bias):
        self.bias = bias
        self.weights = []

    def output(self, inputs):
        self.net = sum(w * i for w, i in zip(self.weights, inputs)) + self.bias
        self.out = 1 / (1 + math.exp(-self.net))
        return self.out


class NeuronLayer:
    def __init__(self, n, bias):
        self.neurons = [Neuron(bias) for _ in range(n)]

    def feed_forward(self, inputs):
        return [neuron.output(inputs) for neuron in self.neurons]


class Hyper:
    """A class holding scalars, as learners keep their constants."""
    half = 0.5


class Net:
    def __init__(self):
        self.hidden, self.output = NeuronLayer(2, 0.35), NeuronLayer(2, 0.6)

    def set_weights(self, p):
        for layer, ws, b in ((self.hidden, p["hidden"], p["hidden_bias"]), (self.output, p["output"], p["output_bias"])):
            for h, neuron in enumerate(layer.neurons):
                neuron.weights = [ws[2 * h], ws[2 * h + 1]]
                neuron.bias = b

    def error(self, inputs, targets):
        outs = self.output.feed_forward(self.hidden.feed_forward(inputs))
        return sum(Hyper.half * (t - o) ** 2 for t, o in zip(targets, outs))


NET = Net()   # the learner's network object, a global the loss writes its weights into
MAZUR = {"hidden": [0.15, 0.2, 0.25, 0.3], "hidden_bias": 0.35, "output": [0.4, 0.45, 0.5, 0.55], "output_bias": 0.6}
INPUTS, TARGETS = [0.05, 0.1], [0.01, 0.99]


def mazur_loss(p, inputs, targets):
    NET.set_weights(p)
    return float(NET.error(inputs, targets))


def mazur_grad(p, inputs, targets, sign=1.0):
    NET.set_weights(p)
    NET.error(inputs, targets)
    hid, out = NET.hidden.neurons, NET.output.neurons
    d_out = [sign * -(t - n.out) * n.out * (1 - n.out) for t, n in zip(targets, out)]
    d_hid = [sum(d_out[o] * out[o].weights[h] for o in range(2)) * hid[h].out * (1 - hid[h].out) for h in range(2)]
    return {"hidden": [d_hid[h] * inputs[i] for h in range(2) for i in range(2)], "hidden_bias": sum(d_hid),
            "output": [d_out[o] * hid[i].out for o in range(2) for i in range(2)], "output_bias": sum(d_out)}


def test_mazur_style_classes_get_all_three_references():
    assert_pair(mazur_loss, mazur_grad, lambda p, i, t: mazur_grad(p, i, t, sign=-1.0), MAZUR, (INPUTS, TARGETS),
                "sign_flipped")
    assert all(n.weights == [0.0, 0.0] or all(type(w) is float for w in n.weights)
               for layer in (NET.hidden, NET.output) for n in layer.neurons), "the re-runs never wrote NET"


def test_mazur_size_warm_check_is_quick():
    """Ten parameters, default options, once warm: a behavioural bound, not a benchmark."""
    gradcheck.check(mazur_loss, mazur_grad, MAZUR, args=(INPUTS, TARGETS))
    start = time.perf_counter()
    report = gradcheck.check(mazur_loss, mazur_grad, MAZUR, args=(INPUTS, TARGETS))
    assert time.perf_counter() - start < 1.0 and ran(report) == ALL


# --- draws inside the loss with a fixed seed ------------------------------------------------------

KEEP = 0.5


def dropout_loss(p, X, y):
    np.random.seed(1)
    h = np.tanh(X @ p["w"] + p["b"])
    mask = (np.random.rand(*h.shape) < KEEP) / KEEP   # inverted dropout, drawn inside the loss: [2, 0]
    return float(np.sum((h * mask - y) ** 2))


def dropout_grad(p, X, y, scale=1.0):
    np.random.seed(1)
    h = np.tanh(X @ p["w"] + p["b"])
    mask = (np.random.rand(*h.shape) < KEEP) / KEEP
    dh = scale * 2 * (h * mask - y) * mask * (1 - h ** 2)
    return {"w": X.T @ dh, "b": float(np.sum(dh))}


def test_seeded_draws_inside_the_loss_are_constants():
    assert_pair(dropout_loss, dropout_grad, lambda p, X, y: dropout_grad(p, X, y, scale=KEEP), W0, (X, Y),
                "scaled", KEEP)  # the bug: the mask not divided by keep_prob in the backward pass


def unseeded_loss(p, X, y):
    h = np.tanh(X @ p["w"] + p["b"])
    return float(np.sum((h - y) ** 2) * (1 + 0.1 * np.random.rand()))   # unseeded noise


@pytest.mark.parametrize("reference", [jax_ref.jax_gradient, sympy_ref.sympy_gradient])
def test_unseeded_draws_are_refused_naming_the_line_and_the_seed(reference):
    with pytest.raises(NondeterministicLoss):
        gradcheck.check(unseeded_loss, linreg_grad, W0, args=(X, Y))
    names, leaves, treedef = flatten(W0)
    obj = Objective(unseeded_loss, treedef, [validate_leaf(n, v) for n, v in zip(names, leaves)], (X, Y), {},
                    scalar_leaves=[isinstance(v, float) for v in leaves])
    start = time.perf_counter()
    with pytest.raises(ReferenceUnavailable, match=r"np\.random\.rand draws random numbers .*without a fixed seed.*"
                                                   r"np\.random\.seed\(0\).*test_rerun_idioms\.py:\d+"):
        reference(obj, [np.arange(x.size) for x in obj.x0])
    assert time.perf_counter() - start < 1.0


# --- what still cannot run fails at once, naming the line and the rewrite ----------------------

SOURCELESS = '''
import numpy as np
def loss(p, X, y):
    r = X @ p["w"] + p["b"] - y
    return float(0.5 * np.mean(r ** 2))
'''


def sourceless_loss():
    """A loss defined in an exec'd string: its source cannot be read, so float() is not followed."""
    namespace: dict = {}
    exec(compile(SOURCELESS, "<learner-cell>", "exec"), namespace)
    return namespace["loss"]


def test_a_conversion_that_cannot_be_followed_fails_fast_naming_line_and_rewrite():
    loss = sourceless_loss()
    gradcheck.check(loss, linreg_grad, W0, args=(X, Y))  # warm: JAX loaded and the like
    start = time.perf_counter()
    report = gradcheck.check(loss, linreg_grad, W0, args=(X, Y))
    seconds = time.perf_counter() - start
    assert report.passed and ran(report) == {"numeric"}
    assert seconds < 1.0
    for status in report.references:
        if status.name != "numeric":
            assert "<learner-cell>:5" in status.reason, status.reason
            assert "return np.sum(...)" in status.reason and "not `return float(np.sum(...))`" in status.reason


def if_on_parameters(p, X, y):
    r = X @ p["w"] + p["b"] - y
    loss = 0.0
    for v in r:
        if v > 0:                      # Python control flow on a parameter-dependent value
            loss += v ** 2
        else:
            loss += -v
    return float(loss)


def test_control_flow_runs_under_jax_and_sympy():
    def grad(p, X, y):
        r = X @ p["w"] + p["b"] - y
        d = np.where(r > 0, 2 * r, -1.0)
        return {"w": X.T @ d, "b": float(np.sum(d))}

    gradcheck.check(if_on_parameters, grad, W0, args=(X, Y))
    start = time.perf_counter()
    report = gradcheck.check(if_on_parameters, grad, W0, args=(X, Y))
    assert time.perf_counter() - start < 1.0
    assert report.passed and ran(report) == {"numeric", "jax", "sympy"}, why(report)  # `if v > 0` at the point


def int_as_a_slice_bound(p, X, y):
    n = int(np.sum(np.abs(p["w"])) * 3)        # a length computed from the parameters
    return float(np.sum(p["w"][:n] ** 2) + p["b"])


def test_an_index_from_the_parameters_fails_fast_naming_line_and_rewrite():
    grad = lambda p, X, y: {"w": 2 * p["w"] * (np.arange(3) < 1), "b": 1.0}   # n = int(0.6 * 3) = 1
    gradcheck.check(int_as_a_slice_bound, grad, W0, args=(X, Y))
    start = time.perf_counter()
    report = gradcheck.check(int_as_a_slice_bound, grad, W0, args=(X, Y))
    assert time.perf_counter() - start < 1.0
    assert report.passed and ran(report) == {"numeric"}, why(report)
    for status in report.references:
        if not status.ran:
            assert "return float(np.sum(p[\"w\"][:n] ** 2)" in status.reason, status.reason
            assert "take it from the data" in status.reason and "test_rerun_idioms.py:" in status.reason


# --- a mask made from the data: CS224n's yhat[labels == 1] with one-hot labels -------------------

def masked_ce_loss(W, X, onehot):
    z = X.dot(W)
    yhat = np.exp(z) / np.sum(np.exp(z), axis=1, keepdims=True)
    return np.sum(-np.log(yhat[onehot == 1]))


def masked_ce_grad(W, X, onehot, bug=False):
    z = X.dot(W)
    yhat = np.exp(z) / np.sum(np.exp(z), axis=1, keepdims=True)
    return X.T.dot(onehot - yhat if bug else yhat - onehot)


def test_a_mask_made_from_the_data_still_compiles_under_jax():
    """The mask is traced when the data is a jit argument; with the data as constants it is
    known while JAX traces, as in numpy, and the loss compiles instead of running op by op."""
    rng = np.random.default_rng(5)
    W, X = rng.normal(size=(3, 2)), rng.normal(size=(5, 3))
    onehot = np.eye(2)[[0, 1, 1, 0, 1]]   # floats, as CS224n's labels are
    report = gradcheck.check(masked_ce_loss, masked_ce_grad, W, args=(X, onehot), against=("numeric", "jax"))
    assert report.passed, str(report)
    obj = Objective(masked_ce_loss, flatten(W)[2], [W.copy()], (X, onehot), {})
    compiled = jax_ref._program(obj).compiled
    assert compiled.eager and compiled.constant.programs and not compiled.constant.fails
    bad = gradcheck.check(masked_ce_loss, lambda *a: masked_ce_grad(*a, bug=True), W, args=(X, onehot),
                          against=("numeric", "jax"))
    assert not bad.passed and bad["params"].diagnosis == "sign_flipped", str(bad)
