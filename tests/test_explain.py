"""explain: Mazur's chain-rule walkthrough, reproduced for a learner's own plain-numpy loss."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gradcheck.errors import InvalidCase, ReferenceUnavailable, UserCodeError
from gradcheck.explanation import MAX_OPS, explain, format_number, render_explanation

from nets import MAZUR_PARAMS, MAZUR_SCALAR_ARGS, mazur_golden, mazur_scalar_loss

MAZUR = dict(MAZUR_PARAMS)
MAZUR_ARGS = MAZUR_SCALAR_ARGS  # i1, i2, target_o1, target_o2

W5_LINE = "0.74136507 x 0.186815602 x 0.593269992 = 0.082167041"
W1_LINE = "0.036350306 x 0.241300709 x 0.05 = 0.000438568"


@pytest.fixture(scope="module")
def golden() -> dict:
    rows = mazur_golden()["printed"]
    return {row["name"]: row for row in rows}


# ----------------------------------------------------------------------------- Mazur, two styles


def sigmoid(z):
    s = 1 / (1 + np.exp(-z))
    return s


def mazur_vectorised(p, x, t):
    """The same network with weight matrices; W1[0] = (w1, w2), W2[0] = (w5, w6)."""
    net_h = p["W1"] @ x + p["b1"]
    out_h = sigmoid(net_h)
    net_o = p["W2"] @ out_h + p["b2"]
    out_o = sigmoid(net_o)
    E = 0.5 * np.sum((t - out_o) ** 2)
    return E


MAZUR_VEC = {"W1": np.array([[0.15, 0.2], [0.25, 0.3]]), "b1": 0.35,
             "W2": np.array([[0.4, 0.45], [0.5, 0.55]]), "b2": 0.6}
MAZUR_VEC_ARGS = (np.array([0.05, 0.1]), np.array([0.01, 0.99]))


def test_mazur_w5_chain_is_the_posts():
    expl = explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w5")
    text = render_explanation(expl)
    assert "dE_total/dw5 = dE_total/dout_o1 x dout_o1/dnet_o1 x dnet_o1/dw5" in text
    assert f"= {W5_LINE}" in text
    assert [label for label, _ in expl.factors] == ["dE_total/dout_o1", "dout_o1/dnet_o1", "dnet_o1/dw5"]


def test_mazur_w1_chain_is_the_posts():
    expl = explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w1")
    text = render_explanation(expl)
    assert "dE_total/dw1 = dE_total/dout_h1 x dout_h1/dnet_h1 x dnet_h1/dw1" in text
    assert f"= {W1_LINE}" in text


@pytest.mark.parametrize("leaf, rows", [
    ("w5", ["dEtotal_dout_o1", "dout_o1_dnet_o1", "dnet_o1_dw5", "dEtotal_dw5"]),
    ("w1", ["dEtotal_dout_h1", "dout_h1_dnet_h1", "dnet_h1_dw1", "dEtotal_dw1"]),
])
def test_mazur_factors_match_golden_float64(golden, leaf, rows):
    expl = explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf=leaf)
    values = [v for _, v in expl.factors] + [expl.product]
    for value, row in zip(values, rows, strict=True):
        assert value == pytest.approx(golden[row]["float64_correct_backprop"], abs=1e-12), row
        assert format_number(value) == golden[row]["printed"], row   # rendered as Mazur printed it
    assert expl.reference == pytest.approx(expl.product, rel=1e-14)


@pytest.mark.parametrize("leaf, index, labels, line", [
    ("W2", (0, 0), ["dE/dout_o[0]", "dout_o[0]/dnet_o[0]", "dnet_o[0]/dW2[0, 0]"], W5_LINE),
    ("W1", (0, 0), ["dE/dout_h[0]", "dout_h[0]/dnet_h[0]", "dnet_h[0]/dW1[0, 0]"], W1_LINE),
])
def test_mazur_vectorised_names_array_elements(golden, leaf, index, labels, line):
    expl = explain(mazur_vectorised, MAZUR_VEC, MAZUR_VEC_ARGS, leaf=leaf, index=index)
    # the loss's own names (out_h) win over the helper's (sigmoid.s, sigmoid.z)
    assert [label for label, _ in expl.factors] == labels
    assert line in render_explanation(expl)
    scalar = explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w5" if leaf == "W2" else "w1")
    for (_, v), (_, s) in zip(expl.factors, scalar.factors, strict=True):
        assert v == pytest.approx(s, abs=1e-12)


def test_named_sum_keeps_its_factor_of_one_but_renaming_adds_none():
    def loss(p, i1, i2, t1, t2):
        net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
        net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
        out_h1, out_h2 = sigmoid(net_h1), sigmoid(net_h2)
        net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
        net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
        out_o1, out_o2 = sigmoid(net_o1), sigmoid(net_o2)
        E_o1 = 0.5 * (t1 - out_o1) ** 2
        E_o2 = 0.5 * (t2 - out_o2) ** 2
        E_total = E_o1 + E_o2
        E = E_total          # a second name for the same quantity: no factor
        return +E

    w5 = explain(loss, MAZUR, MAZUR_ARGS, leaf="w5")
    assert w5.factors[0] == ("dE_total/dE_o1", 1.0)    # a sum's derivative, not a renaming
    assert f"1 x {W5_LINE}" in render_explanation(w5)
    # out_h1 feeds both E_o1 and E_o2, so neither is on every path: the sum over both is one factor
    assert W1_LINE in render_explanation(explain(loss, MAZUR, MAZUR_ARGS, leaf="w1"))


def mazur_forward(p, i, t):
    """Worked-example style: a forward pass that returns its quantities in a dict."""
    net_h1 = p["w1"] * i[0] + p["w2"] * i[1] + p["b1"]
    net_h2 = p["w3"] * i[0] + p["w4"] * i[1] + p["b1"]
    out_h1, out_h2 = sigmoid(net_h1), sigmoid(net_h2)
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
    out_o1, out_o2 = sigmoid(net_o1), sigmoid(net_o2)
    return {"out_o1": out_o1, "out_o2": out_o2,
            "E_total": 0.5 * (t[0] - out_o1) ** 2 + 0.5 * (t[1] - out_o2) ** 2}


def test_names_from_a_helper_and_the_dict_it_returns():
    def loss(p, i, t):
        return mazur_forward(p, i, t)["E_total"]

    expl = explain(loss, MAZUR, (np.array([0.05, 0.1]), np.array([0.01, 0.99])), leaf="w5")
    assert render_explanation(expl).splitlines() == [
        "dE_total/dw5 = dE_total/dout_o1 x dout_o1/dnet_o1 x dnet_o1/dw5",
        f"             = {W5_LINE}",
    ]


def test_helpers_sharing_a_variable_name_are_told_apart():
    def hidden(p, x):
        z = p["W1"] @ x + p["b1"]
        return sigmoid(z)

    def output(p, h):
        z = p["W2"] @ h + p["b2"]
        return sigmoid(z)

    def loss(p, x, t):
        out_o = output(p, hidden(p, x))
        return 0.5 * np.sum((t - out_o) ** 2)

    w1 = explain(loss, MAZUR_VEC, MAZUR_VEC_ARGS, leaf="W1", index=(0, 0))
    w5 = explain(loss, MAZUR_VEC, MAZUR_VEC_ARGS, leaf="W2", index=(0, 0))
    assert [label for label, _ in w5.factors] == ["dloss/dout_o[0]", "dout_o[0]/doutput.z[0]",
                                                  "doutput.z[0]/dW2[0, 0]"]
    assert w1.factors[-1][0] == "dhidden.z[0]/dW1[0, 0]"
    assert W1_LINE in render_explanation(w1) and W5_LINE in render_explanation(w5)


def test_wrapping_lambda_does_not_prefix_names():
    expl = explain(lambda p, *a: mazur_scalar_loss(p, *a), MAZUR, MAZUR_ARGS, leaf="w5")
    assert expl.factors[0][0] == "dE_total/dout_o1"


# ----------------------------------------------------------------------------- other networks


def central_difference(loss, params, args, leaf, index, h=1e-6):
    def at(delta):
        p = {k: np.array(v, dtype=float) for k, v in params.items()}
        p[leaf][index] += delta
        p = {k: (v.item() if np.ndim(params[k]) == 0 and isinstance(params[k], float) else v) for k, v in p.items()}
        return loss(p, *args)
    return (at(h) - at(-h)) / (2 * h)


def logreg_loss(p, X, y):
    z = X @ p["w"] + p["b"]
    prob = 1 / (1 + np.exp(-z))
    nll = -(y * np.log(prob) + (1 - y) * np.log(1 - prob))
    loss = np.mean(nll)
    return loss


LOGREG = {"w": np.array([0.3, -0.2, 0.7]), "b": 0.1}
RNG = np.random.default_rng(7)
LOGREG_ARGS = (RNG.normal(size=(4, 3)), np.array([1.0, 0.0, 1.0, 1.0]))


@pytest.mark.parametrize("leaf, index", [("w", (0,)), ("w", (2,)), ("b", ())])
def test_logistic_regression_product_is_the_derivative(leaf, index):
    expl = explain(logreg_loss, LOGREG, LOGREG_ARGS, leaf=leaf, index=index)
    fd = central_difference(logreg_loss, LOGREG, LOGREG_ARGS, leaf, index)
    assert expl.product == pytest.approx(fd, rel=1e-7, abs=1e-10)
    assert expl.reference == pytest.approx(expl.product, rel=1e-12)
    assert expl.factors[0][0].startswith("dloss/")


def test_single_example_chain_runs_through_its_named_elements():
    expl = explain(logreg_loss, LOGREG, (LOGREG_ARGS[0][:1], LOGREG_ARGS[1][:1]), leaf="w", index=1)
    assert [label for label, _ in expl.factors] == ["dloss/dnll[0]", "dnll[0]/dprob[0]", "dprob[0]/dz[0]",
                                                    "dz[0]/dw[1]"]


def relu_loss(p, X, Y):
    h = X
    for W, b in p["layers"]:
        h = np.maximum(0, h @ W + b)              # rebinding h names the layers h, h#2
    pred = np.clip(h, -5, 5) + np.where(h > 100, h, 0.0)
    return np.mean(np.abs(pred - Y) ** 2) + 0.01 * np.max(h)


def test_branching_ops_follow_the_taken_branch():
    rng = np.random.default_rng(0)
    params = {"layers": [(rng.normal(size=(3, 4)), np.full(4, 0.5)), (rng.normal(size=(4, 2)), np.full(2, 3.0))]}
    X, Y = rng.normal(size=(1, 3)), rng.normal(size=(1, 2))
    j = int(np.argmax(np.maximum(0, X @ params["layers"][0][0] + 0.5)))   # an active hidden unit
    expl = explain(relu_loss, params, (X, Y), leaf="layers[0][0]", index=(0, j))

    def loss_of(w):
        layers = [(w, params["layers"][0][1]), params["layers"][1]]
        return relu_loss({"layers": layers}, X, Y)

    w, h = params["layers"][0][0].copy(), 1e-6
    wp, wm = w.copy(), w.copy()
    wp[0, j] += h
    wm[0, j] -= h
    assert expl.product == pytest.approx((loss_of(wp) - loss_of(wm)) / (2 * h), rel=1e-7)
    assert expl.factors[-1][0] == f"dh[0, {j}]/dlayers[0][0][0, {j}]"


def test_loss_independent_of_the_parameter():
    expl = explain(lambda p: np.sum(p["a"] ** 2), {"a": np.ones(2), "unused": 1.0}, leaf="unused")
    assert expl.factors == () and expl.product == 0.0
    assert "does not depend on unused" in render_explanation(expl)


def test_namespace_is_plugged_in_through_retrace(monkeypatch):
    import types

    def rebind(fn, namespace):   # stands in for gradcheck.usercode.rebind.rebind: swap the np global
        return types.FunctionType(fn.__code__, {**fn.__globals__, "np": namespace}, fn.__name__,
                                  fn.__defaults__, fn.__closure__)

    namespace = types.ModuleType("traced_numpy")
    namespace.__dict__.update({k: getattr(np, k) for k in ("sum", "exp", "log")})
    namespace.logaddexp = lambda a, b: np.log(np.exp(a) + np.exp(b))
    monkeypatch.setitem(sys.modules, "gradcheck.usercode.rebind", types.SimpleNamespace(rebind=rebind))

    def softplus_loss(p, x):
        margin = p * x
        return np.sum(np.logaddexp(0.0, margin))

    with pytest.raises(ReferenceUnavailable, match="logaddexp"):
        explain(softplus_loss, np.array([0.5, -1.0]), (np.array([2.0, 1.0]),), leaf="params", index=0)
    expl = explain(softplus_loss, np.array([0.5, -1.0]), (np.array([2.0, 1.0]),), leaf="params", index=0,
                   namespace=namespace)
    assert [label for label, _ in expl.factors] == ["dloss/dmargin[0]", "dmargin[0]/dparams[0]"]
    assert expl.product == pytest.approx(2.0 / (1.0 + np.exp(-1.0)))


# ----------------------------------------------------------------------------- yours


def test_correct_grad_matches():
    grad = {k: 0.0 for k in MAZUR} | {"w5": 0.08216704056423078}
    text = render_explanation(explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w5", grad=grad))
    assert text.splitlines()[-1] == "yours: 0.082167041 (matches)"


def test_wrong_grad_differs():
    grad = {k: 0.0 for k in MAZUR} | {"w1": 2 * 0.00043856773447434685}
    expl = explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w1", grad=grad)
    assert expl.yours == pytest.approx(0.000877135469) and expl.matches is False
    assert render_explanation(expl).splitlines()[-1] == "yours: 0.000877135 (differs by 0.000438568)"


def test_vectorised_grad_element():
    grad = {"W1": np.zeros((2, 2)), "b1": 0.0, "W2": np.array([[0.08216704056423078, 0], [0, 0]]), "b2": 0.0}
    expl = explain(mazur_vectorised, MAZUR_VEC, MAZUR_VEC_ARGS, leaf="W2", index=(0, 0), grad=grad)
    assert expl.matches is True


# ----------------------------------------------------------------------------- errors


def test_unknown_leaf_lists_the_parameters():
    with pytest.raises(InvalidCase, match=r"unknown parameter 'w9'.*'w1', 'w2'"):
        explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w9")


@pytest.mark.parametrize("index", [(2, 0), (0,), (0, 0, 0)])
def test_bad_index_names_the_shape(index):
    with pytest.raises(InvalidCase, match=r"parameter 'W2', which has shape \(2, 2\)"):
        explain(mazur_vectorised, MAZUR_VEC, MAZUR_VEC_ARGS, leaf="W2", index=index)


def test_too_many_parameters_refused():
    with pytest.raises(InvalidCase, match="1,200 parameters"):
        explain(lambda p: np.sum(p ** 2), np.ones(1200), leaf="params", index=0)


def test_too_many_operations_refused():
    X = np.ones((MAX_OPS, 2))
    with pytest.raises(InvalidCase, match="more than 5,000 scalar operations"):
        explain(lambda p, X: np.sum(X @ p), np.ones(2), (X,), leaf="params", index=0)


def test_loss_that_is_not_a_number():
    with pytest.raises(InvalidCase, match=r"shape \(2,\)"):
        explain(lambda p: p * 2, np.ones(2), leaf="params", index=0)


def test_writing_into_a_float_array_is_named_as_the_culprit():
    def loss(p, x):
        h = np.zeros(2)
        for j in range(2):
            h[j] = p[j] * x[j]
        return h.sum()

    with pytest.raises(ReferenceUnavailable, match=r"test_explain.py:\d+ .*h\[j\] = p\[j\] \* x\[j\].*np.zeros"):
        explain(loss, np.ones(2), (np.ones(2),), leaf="params", index=0)


def test_math_on_a_relu_constant_gets_a_workaround():
    def loss(p):
        return np.sum(np.tanh(np.maximum(0, p)))   # tanh of the plain 0 that np.maximum chose

    with pytest.raises(ReferenceUnavailable, match=r"np.tanh met a plain number.*z \* \(z > 0\)"):
        explain(loss, np.array([1.0, -1.0]), leaf="params", index=0)
    expl = explain(lambda p: np.sum(np.tanh(p * (p > 0))), np.array([1.0, -1.0]), leaf="params", index=0)
    assert expl.product == pytest.approx(1 - np.tanh(1.0) ** 2)


def test_the_learners_own_error_is_reported_as_theirs():
    def loss(p, x):
        return np.sum(p @ x)     # shapes (2,) @ (3,) do not fit

    with pytest.raises(UserCodeError, match="your loss raised ValueError"):
        explain(loss, np.ones(2), (np.ones(3),), leaf="params", index=0)


def test_grad_of_the_wrong_shape():
    grad = {"W1": np.zeros((2, 2)), "b1": 0.0, "W2": np.zeros(4), "b2": 0.0}
    with pytest.raises(InvalidCase, match=r"'W2' has shape \(4,\), but the parameter has shape \(2, 2\)"):
        explain(mazur_vectorised, MAZUR_VEC, MAZUR_VEC_ARGS, leaf="W2", index=(0, 0), grad=grad)


def test_trace_hook_is_restored():
    before = sys.gettrace()
    explain(mazur_scalar_loss, MAZUR, MAZUR_ARGS, leaf="w5")
    with pytest.raises(UserCodeError):
        explain(lambda p: 1 / 0, 1.0, leaf="params")
    assert sys.gettrace() is before


def test_inputs_are_not_modified():
    params = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in MAZUR_VEC.items()}
    explain(mazur_vectorised, params, MAZUR_VEC_ARGS, leaf="W1", index=(1, 1))
    assert all(np.array_equal(params[k], MAZUR_VEC[k]) for k in params)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("x, text", [
    (0.7413650695523157, "0.74136507"), (0.05, "0.05"), (0.00043856773447434685, "0.000438568"),
    (-0.019049118258278114, "-0.019049118"), (0.0, "0"), (1.0, "1"), (2.5e-7, "2.5e-07"),
    (1234.5, "1234.5"),
])
def test_format_number(x, text):
    assert format_number(x) == text
