"""Tests in pairs: each network's correct gradient passes, each planted bug fails with the right finding.

The networks live in nets.py. For every bug the test names exactly which leaves must fail and with
which diagnosis (plus `factor`, `swapped_with`, `wrong_indices` or the shape hint where they apply);
every other leaf must pass.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import gradcheck
from gradcheck.tree import flatten, unflatten

import nets

AGAINST = ["numeric", "jax"]
AGAINST_SMALL = AGAINST + ["sympy"]
SMALL = ("mazur", "logreg")   # few enough parameters, and fast enough, for SymPy
ALL = ["mazur", "logreg", "tanh_softmax", "nielsen", "relu_mlp", "batchnorm"]


#: Finite differences batched under JAX (forced on whatever the size), beside the JAX reference.
BATCHED = "numeric+jax, batched"


@pytest.fixture(autouse=True)
def _batch_every_size(request, monkeypatch):
    """Tests run with against=BATCHED plan batched differences even for tiny nets."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("against") == BATCHED:
        import importlib

        monkeypatch.setattr(importlib.import_module("gradcheck.plan"), "BATCH_WORTH", 0.0)


def run(net, grad=None, against="numeric", **options):
    if against == BATCHED:
        report = run(net, grad, against=("numeric", "jax"), **options)
        numeric = next(r for r in report.references if r.name == "numeric")
        assert "numeric_batch" in report.plan and "batched" in numeric.method, (report.plan, numeric)
        return report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # planted NaN/inf bugs warn while computing
        return gradcheck.check(net.loss, grad or net.grad, net.params, net.args, against=against, **options)


def leaf_names(net) -> list[str]:
    return flatten(net.params)[0]


def expect(report, findings: dict) -> None:
    """Exactly the leaves in `findings` fail, each with its diagnosis and attributes."""
    nets.assert_findings(report, findings)
    d = report.to_dict()
    for entry in d["parameters"]:
        if entry["name"] in findings and "factor" in findings[entry["name"]][1]:
            assert "factor" in entry
        if entry["diagnosis"] == "swapped":
            assert "swapped_with" in entry


def every(net, diagnosis, **attrs) -> dict:
    return {name: (diagnosis, attrs) for name in leaf_names(net)}


# ---------------------------------------------------------------------------------------------
# Correct versions pass
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("against", AGAINST + [BATCHED])
@pytest.mark.parametrize("name", ALL)
def test_correct_float64_passes(name, against):
    report = run(nets.ALL_NETS[name](), against=against)
    assert report.passed, str(report)
    assert all(p.diagnosis == "ok" for p in report.parameters), str(report)


@pytest.mark.parametrize("against", ["sympy"])
@pytest.mark.parametrize("name", SMALL)
def test_correct_small_passes_sympy(name, against):
    report = run(nets.ALL_NETS[name](), against=against)
    assert report.passed, str(report)


@pytest.mark.parametrize("name", ALL)
def test_correct_float32_passes(name):
    """Parameters and data in float32, the user's forward and backward computed in float32."""
    net = nets.ALL_NETS[name](dtype=np.float32)
    g = net.grad(net.params, *net.args)
    assert all(np.asarray(x).dtype == np.float32 for x in flatten(g)[1] if np.ndim(x)), "net is float32"
    report = run(net)
    assert report.passed, str(report)
    assert {p.dtype for p in report.parameters} == {"float32"}


def _to32(tree):
    names, leaves, td = flatten(tree)
    cast = [np.float32(x) if isinstance(x, float) else
            x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x for x in leaves]
    return unflatten(td, cast)


@pytest.mark.parametrize("name", ALL)
def test_loss_that_casts_to_float32_itself(name):
    """A loss that computes in float32 whatever it is given: correct passes, a 2x bug is still caught."""
    net = nets.ALL_NETS[name](dtype=np.float32)

    def loss32(p, *args):
        return np.float32(net.loss(_to32(p), *_to32(list(args))))

    net32 = nets.Net(name, loss32, net.grad, net.params, net.args)
    report = run(net32)
    assert report.passed, str(report)

    def doubled(p, *args):
        names, leaves, td = flatten(net.grad(p, *args))
        return unflatten(td, [2 * np.asarray(x) for x in leaves])

    bad = run(net32, doubled)
    assert not bad.passed, str(bad)


# ---------------------------------------------------------------------------------------------
# Planted bugs, one per diagnosis kind that applies to each net
# ---------------------------------------------------------------------------------------------

MAZUR_HIDDEN = ("w1", "w2", "w3", "w4", "b1")
BUGS = {
    # Mazur's 2-2-2 network, every parameter a Python float
    ("mazur", "scaled2"): lambda net: every(net, "scaled", factor=2.0, cause_has="1/2"),
    ("mazur", "sign"): lambda net: every(net, "sign_flipped", cause_has="target - output"),
    ("mazur", "wrong"): lambda net: {n: ("wrong", {}) for n in MAZUR_HIDDEN},
    ("mazur", "swapped"): lambda net: {"w5": ("swapped", {"swapped_with": "w6"}),
                                       "w6": ("swapped", {"swapped_with": "w5"})},
    ("mazur", "zero"): lambda net: {"b1": ("zero", {}), "b2": ("zero", {})},
    ("mazur", "nonfinite"): lambda net: {"w3": ("nonfinite", {})},
    ("mazur", "keepdims"): lambda net: {"b2": ("wrong_shape", {"expected_shape": (), "actual_shape": (1,),
                                                               "detail_has": "keepdims"})},
    # logistic regression, N = 8, D = 5
    ("logreg", "scaledN"): lambda net: every(net, "scaled", factor=8.0, cause_has="batch size 8"),
    ("logreg", "sign"): lambda net: every(net, "sign_flipped"),
    ("logreg", "nonfinite"): lambda net: every(net, "nonfinite"),
    ("logreg", "wrong"): lambda net: every(net, "wrong"),
    ("logreg", "partial"): lambda net: {"w": ("partial", {"wrong_indices": ((4,),), "worst_index": (4,)})},
    ("logreg", "not_summed"): lambda net: {"w": ("wrong_shape", {"expected_shape": (5,), "actual_shape": (8, 5),
                                                                 "detail_has": "not summed over axis 0"})},
    ("logreg", "zero"): lambda net: {"b": ("zero", {})},
    # tanh + softmax cross-entropy + L2, N = 6
    ("tanh_softmax", "scaledN"): lambda net: {"W1": ("wrong", {}), "W2": ("wrong", {}),   # L2 part not scaled
                                              "b1": ("scaled", {"factor": 6.0}), "b2": ("scaled", {"factor": 6.0})},
    ("tanh_softmax", "tanh"): lambda net: {"W1": ("wrong", {}), "b1": ("wrong", {})},
    ("tanh_softmax", "no_l2"): lambda net: {"W1": ("regularisation", {"factor": -0.1}),
                                            "W2": ("regularisation", {"factor": -0.1})},
    ("tanh_softmax", "clipped"): lambda net: {"W1": ("clipped", {"detail_has": "2 element(s)"})},
    ("logreg", "eps"): lambda net: every(net, "tiny_mismatch", cause_has="log(p + 1e-7)"),
    ("tanh_softmax", "swapped"): lambda net: {"b1": ("swapped", {"swapped_with": "b2"}),
                                              "b2": ("swapped", {"swapped_with": "b1"})},
    ("tanh_softmax", "update"): lambda net: every(net, "sign_flipped", cause_has="update direction"),
    # Nielsen: lists of weights, column biases, mini-batch of m = 4 columns
    ("nielsen", "scaledm"): lambda net: every(net, "scaled", factor=4.0),
    ("nielsen", "transposed"): lambda net: {"weights[0]": ("transposed", {})},
    ("nielsen", "not_summed"): lambda net: {"biases[0]": ("wrong_shape", {
        "expected_shape": (3, 1), "actual_shape": (3, 4), "detail_has": "not summed over axis 1"})},
    ("nielsen", "flat_bias"): lambda net: {"biases[1]": ("wrong_shape", {
        "expected_shape": (2, 1), "actual_shape": (2,), "detail_has": "keepdims"})},
    # ReLU MLP with squared error, N = 6
    ("relu_mlp", "scaled_half"): lambda net: every(net, "scaled", factor=0.5, cause_has="factor 2"),
    ("relu_mlp", "partial"): lambda net: {
        "W1": ("partial", {"wrong_indices": ((0, 0), (1, 0), (2, 0), (3, 0))}),
        "b1": ("partial", {"wrong_indices": ((0,),), "worst_index": (0,)})},
    ("relu_mlp", "zero"): lambda net: {"W1": ("zero", {})},
    ("relu_mlp", "shapes"): lambda net: {
        "b1": ("wrong_shape", {"actual_shape": (6, 5), "detail_has": "not summed over axis 0"}),
        "W2": ("wrong_shape", {"actual_shape": (2, 5), "detail_has": "transposed"}),
        "b2": ("wrong_shape", {"actual_shape": (1, 2), "detail_has": "keepdims"})},
    # batch norm seen through sum(G * out), N = 5
    ("batchnorm", "naive"): lambda net: {"x": ("wrong", {})},
    ("batchnorm", "scaledN"): lambda net: {"x": ("scaled", {"factor": 5.0, "cause_has": "batch size 5"})},
    ("batchnorm", "sign"): lambda net: {"gamma": ("sign_flipped", {})},
    ("batchnorm", "zero"): lambda net: {"beta": ("zero", {})},
    ("batchnorm", "not_summed"): lambda net: {"gamma": ("wrong_shape", {"detail_has": "not summed over axis 0"})},
    ("batchnorm", "keepdims"): lambda net: {"beta": ("wrong_shape", {"actual_shape": (1, 3),
                                                                     "detail_has": "keepdims"})},
}


@pytest.mark.parametrize("against", AGAINST + [BATCHED])
@pytest.mark.parametrize("name,bug", list(BUGS), ids=[f"{n}-{b}" for n, b in BUGS])
def test_planted_bug_is_caught_and_named(name, bug, against):
    net = nets.ALL_NETS[name]()
    report = run(net, net.bug(bug), against=against)
    assert not report.passed
    expect(report, BUGS[name, bug](net))


SYMPY_BUGS = [("mazur", "scaled2"), ("mazur", "swapped"), ("logreg", "partial"), ("logreg", "not_summed")]


@pytest.mark.parametrize("against", ["sympy"])
@pytest.mark.parametrize("name,bug", SYMPY_BUGS, ids=[f"{n}-{b}" for n, b in SYMPY_BUGS])
def test_planted_bug_small_sympy(name, bug, against):
    net = nets.ALL_NETS[name]()
    expect(run(net, net.bug(bug), against=against), BUGS[name, bug](net))


def test_every_diagnosis_kind_is_planted_somewhere():
    planted = {diag for key, make in BUGS.items() for diag, _ in make(nets.ALL_NETS[key[0]]()).values()}
    # ok: the correct versions; nondifferentiable: the ReLU kink below; missing: check_layer below
    assert planted | {"ok", "nondifferentiable", "missing"} == set(gradcheck.model.DIAGNOSES)


def test_transposed_on_square_weights_detail():
    net = nets.nielsen()
    p = run(net, net.bug("transposed"))["weights[0]"]
    assert p.shape == (3, 3) and "transpose" in p.detail and "X.T @ delta" in p.cause


def test_partial_lists_wrong_indices_in_report():
    net = nets.relu_mlp()
    d = run(net, net.bug("partial")).to_dict()
    w1 = next(p for p in d["parameters"] if p["name"] == "W1")
    assert w1["wrong_indices"] == [[0, 0], [1, 0], [2, 0], [3, 0]]
    assert "W1[0, 0]" in w1["detail"]


def test_stale_mazur_is_wrong_not_scaled():
    """A single-element leaf off by an arbitrary ratio is 'wrong', not 'scaled by 0.83'."""
    net = nets.mazur()
    report = run(net, net.bug("stale"))
    expect(report, {n: ("wrong", {}) for n in MAZUR_HIDDEN})


# ---------------------------------------------------------------------------------------------
# Kinks: correct ReLU code at a pre-activation of exactly 0 is never counted against the user
# ---------------------------------------------------------------------------------------------

def test_relu_at_kink_passes_as_nondifferentiable():
    net = nets.relu_mlp(kink=True)
    report = run(net)
    assert report.passed, str(report)
    assert report["b1"].diagnosis == "nondifferentiable"
    assert (1,) in report["b1"].nondifferentiable_indices
    # a planted bug elsewhere is still caught
    bad = run(net, net.bug("zero"))
    assert {p.name for p in bad.failures} == {"W1"}


# ---------------------------------------------------------------------------------------------
# check_layer on the batch-norm layer
# ---------------------------------------------------------------------------------------------

def _bn_inputs():
    net = nets.batchnorm()
    return (net.params["x"], net.params["gamma"], net.params["beta"])


def test_batchnorm_layer_correct_and_stub():
    inputs = _bn_inputs()
    report = gradcheck.check_layer(nets.batchnorm_forward, nets.batchnorm_layer_backward, inputs, against="numeric")
    assert report.passed, str(report)
    stub = gradcheck.check_layer(nets.batchnorm_forward, lambda d, c: nets.batchnorm_layer_backward(d, c, "stub"),
                                 inputs, against="numeric")
    assert [p.name for p in stub.failures] == ["[2]"]
    assert stub["[2]"].diagnosis == "missing"


@pytest.mark.parametrize("reference", ["jax", "sympy"])
def test_layer_forward_is_re_run_by_the_exact_references(reference):
    # forward uses np.sqrt: the reference must follow check_layer into it.
    inputs = _bn_inputs()
    report = gradcheck.check_layer(nets.batchnorm_forward, nets.batchnorm_layer_backward, inputs,
                                   against=(reference,))
    assert report.passed and [r.name for r in report.references if r.ran] == [reference], str(report)
    wrong = gradcheck.check_layer(nets.batchnorm_forward, lambda d, c: nets.batchnorm_layer_backward(d, c, "stub"),
                                  inputs, against=(reference,))
    assert [p.name for p in wrong.failures] == ["[2]"] and wrong["[2]"].diagnosis == "missing"


# ---------------------------------------------------------------------------------------------
# Sensitivity, measured: float64 catches 1e-6 and 1e-7; torch-like tolerances would not catch 1e-4
# ---------------------------------------------------------------------------------------------

def off_by(grad, rel, only_first_element=False):
    """`grad` with every element (or only the first element of the first leaf) times (1 + rel)."""
    def wrong(p, *args):
        names, leaves, td = flatten(grad(p, *args))
        out = []
        for k, leaf in enumerate(leaves):
            arr = np.array(leaf, dtype=np.float64)
            if not only_first_element:
                arr = arr * (1 + rel)
            elif k == 0:
                arr.reshape(-1)[0] *= 1 + rel
            out.append(arr)
        return unflatten(td, out)
    return wrong


@pytest.mark.parametrize("rel", [1e-6, 1e-7])
@pytest.mark.parametrize("name", ALL)
def test_float64_catches_small_relative_errors(name, rel):
    net = nets.ALL_NETS[name]()
    everywhere = run(net, off_by(net.grad, rel))
    assert len(everywhere.failures) == len(everywhere.parameters), str(everywhere)
    one = run(net, off_by(net.grad, rel, only_first_element=True))
    first = leaf_names(net)[0]
    assert [p.name for p in one.failures] == [first], str(one)
    assert one[first].worst_index == (0,) * len(one[first].shape)


@pytest.mark.parametrize("name", ALL)
def test_torch_like_tolerances_miss_1e_4(name):
    """The peer comparison: with rtol=1e-3, atol=1e-5 (torch.autograd.gradcheck's defaults) a gradient
    off by a relative 1e-4 passes; the defaults catch it."""
    net = nets.ALL_NETS[name]()
    wrong = off_by(net.grad, 1e-4)
    assert run(net, wrong, rtol=1e-3, atol=1e-5).passed
    assert not run(net, wrong).passed


# ---------------------------------------------------------------------------------------------
# Tiny gradients next to large ones
# ---------------------------------------------------------------------------------------------

def test_saturated_sigmoid_units_do_not_fail():
    """One hidden unit saturated (bias 30): its gradients are ~1e-14 next to O(0.1) ones."""
    net = nets.nielsen()
    net.params["biases"][0][1] = 30.0
    g = net.grad(net.params, *net.args)
    tiny = np.abs(g["weights"][0][1]).max()
    assert 0 < tiny < 1e-12 and np.abs(g["weights"][0]).max() > 1e-3
    report = run(net)
    assert report.passed, str(report)


def test_exact_zero_entries_do_not_fail():
    """A dead ReLU unit and an all-zero input feature: whole rows and columns of exact zeros."""
    net = nets.relu_mlp()
    net.params["b1"][3] = -50.0          # unit 3 never fires: W1[:, 3], b1[3], W2[3, :] have zero gradient
    net.args[0][:, 2] = 0.0              # feature 2 is always 0: W1[2, :] has zero gradient
    g = net.grad(net.params, *net.args)
    assert not g["W1"][:, 3].any() and not g["W1"][2].any() and not g["W2"][3].any()
    assert run(net).passed


def test_round_off_in_tiny_entries_is_not_a_failure():
    """Entries 1e-14 of their leaf's largest, computed in another order, may differ relatively a lot."""
    net = nets.nielsen()
    net.params["biases"][0][1] = 30.0

    def reordered(p, *args):
        g = net.grad(p, *args)
        w = g["weights"][0]
        small = np.abs(w) < 1e-10 * np.abs(w).max()
        assert small[1].all() and w[1].all()   # the saturated unit's row: tiny, but not zero
        g["weights"][0] = np.where(small, w * 1.5, w)
        return g

    assert run(net, reordered).passed


@pytest.mark.parametrize("against", ["all", "sympy"])
def test_relu_at_kink_triangulated_with_exact_references(against):
    """JAX alone takes one side at the kink; with finite differences or SymPy beside it the kink is seen."""
    net = nets.relu_mlp(kink=True)
    report = run(net, against=against)
    assert report.passed, str(report)
    assert report["b1"].diagnosis == "nondifferentiable" and (1,) in report["b1"].nondifferentiable_indices
