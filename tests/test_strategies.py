"""gradcheck.strategies: well-conditioned values, shapes that shrink, and a learner's property test.

The last test is the point of the module: a backprop bug that only shows when two adjacent
layers differ in width (square weights pass silently) is found by a property test over random
layer sizes and shrunk to the smallest such network, which the failure output shows.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import find, given, settings

import gradcheck
from gradcheck import strategies as gs

FAST = settings(max_examples=25, deadline=None, database=None)


def test_only_the_strategies_module_imports_hypothesis() -> None:
    code = ("import sys, gradcheck, gradcheck.pipeline, gradcheck.layer\n"
            "assert 'hypothesis' not in sys.modules, 'gradcheck imported hypothesis'\n"
            "import gradcheck.strategies\n"
            "assert 'hypothesis' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- values


@FAST
@given(gs.values(bound=0.5))
def test_values_are_bounded_finite_and_not_tiny(x: float) -> None:
    assert abs(x) <= 0.5 and np.isfinite(x)
    assert x == 0 or abs(x) >= gs.TINY


@FAST
@given(gs.inputs((3, 2), kinks=(0.0, 1.0), margin=0.1))
def test_inputs_keep_away_from_kinks(x: np.ndarray) -> None:
    assert x.shape == (3, 2) and x.dtype == np.float64
    assert np.all(np.abs(x) >= 0.1) and np.all(np.abs(x - 1.0) >= 0.1)


def test_kinks_are_reachable_when_asked() -> None:
    assert find(gs.inputs((2,), allow_kinks=True), lambda a: bool(np.any(a == 0.0)),
                settings=settings(database=None)) is not None


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="bound"):
        gs.values(bound=0)
    with pytest.raises(ValueError, match="margin"):
        gs.values(bound=0.1, kinks=(0.0,), margin=0.05)


# --------------------------------------------------------------------------- pytrees and shapes


PARAMS = {"W": np.zeros((2, 3)), "layers": [np.zeros(4, dtype=np.float32), (np.zeros((1, 1)), 0.5)]}


@FAST
@given(gs.params_like(PARAMS))
def test_params_like_keeps_structure_shapes_and_dtypes(p: dict) -> None:
    assert set(p) == {"W", "layers"} and isinstance(p["layers"], list) and isinstance(p["layers"][1], tuple)
    assert p["W"].shape == (2, 3) and p["W"].dtype == np.float64
    assert p["layers"][0].shape == (4,) and p["layers"][0].dtype == np.float32
    assert p["layers"][1][0].shape == (1, 1) and isinstance(p["layers"][1][1], float)
    assert all(np.all(np.abs(leaf) <= 1.0) for leaf in (p["W"], p["layers"][0], p["layers"][1][0]))


@FAST
@given(gs.layer_sizes(min_layers=2, max_layers=4, max_width=5, n_in=7), gs.batch_sizes(2, 3))
def test_layer_and_batch_sizes_respect_bounds(sizes: list, batch: int) -> None:
    assert 3 <= len(sizes) <= 5 and sizes[0] == 7
    assert all(1 <= w <= 5 for w in sizes[1:]) and 2 <= batch <= 3


def test_layer_sizes_shrink_to_the_smallest_network() -> None:
    deep = find(gs.layer_sizes(max_layers=4), lambda s: len(s) >= 4, settings=settings(database=None))
    assert deep == [1, 1, 1, 1]


@FAST
@given(gs.mlp_cases(max_layers=3, max_width=4, targets="classes"), gs.mlp_cases(draw_values=True))
def test_mlp_cases_are_consistent(case: gs.MLPCase, drawn: gs.MLPCase) -> None:
    for c in (case, drawn):
        assert c.X.shape == (c.batch, c.sizes[0])
        for i, (n, m) in enumerate(zip(c.sizes, c.sizes[1:]), start=1):
            assert c.params[f"W{i}"].shape == (n, m) and c.params[f"b{i}"].shape == (m,)
        assert np.all(np.abs(c.X) >= gs.MARGIN)
    assert case.y.shape == (case.batch,) and case.y.dtype.kind == "i" and np.all(case.y < case.sizes[-1])
    assert drawn.y.shape == (drawn.batch, drawn.sizes[-1]) and drawn.seed is None


def test_mlp_case_repr_is_one_line_with_every_value() -> None:
    case = find(gs.mlp_cases(max_layers=1, n_in=1, n_out=2), lambda c: True, settings=settings(database=None))
    text = repr(case)
    assert "\n" not in text and text.startswith("MLPCase(sizes=[1, 2], batch=1, seed=")
    values = ast.literal_eval("{" + re.sub(r"(\w+)=", r"'\1': ", text[text.index("W1="):-1]) + "}")
    assert set(values) == {"W1", "b1", "X", "y"} and np.allclose(values["W1"], case.params["W1"], atol=1e-4)


# --------------------------------------------------------------------------- property tests of backprop


def tanh_mlp_loss(params: dict, X: np.ndarray, y: np.ndarray) -> float:
    h = X
    layers = len(params) // 2
    for i in range(1, layers + 1):
        z = h @ params[f"W{i}"] + params[f"b{i}"]
        h = np.tanh(z) if i < layers else z
    return 0.5 * np.mean(np.sum((h - y) ** 2, axis=1))


def tanh_mlp_grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    layers = len(params) // 2
    hs = [X]
    for i in range(1, layers + 1):
        z = hs[-1] @ params[f"W{i}"] + params[f"b{i}"]
        hs.append(np.tanh(z) if i < layers else z)
    d = (hs[-1] - y) / len(X)
    grads = {}
    for i in range(layers, 0, -1):
        grads[f"W{i}"], grads[f"b{i}"] = hs[i - 1].T @ d, d.sum(axis=0)
        d = (d @ params[f"W{i}"].T) * (1 - hs[i - 1] ** 2)
    return grads


@settings(max_examples=15, deadline=None, database=None)
@given(gs.mlp_cases(max_layers=3, max_width=4))
def test_a_correct_backprop_passes_on_every_shape(case: gs.MLPCase) -> None:
    report = gradcheck.check(tanh_mlp_loss, tanh_mlp_grad, case.params, case.args, against="numeric")
    assert report.passed, report


LEARNER_NET = '''
"""A tanh MLP whose layers divide by sqrt(fan_in), so activations stay O(1) at any width."""
import numpy as np


def forward(params, X):
    hs = [X]
    layers = len(params) // 2
    for i in range(1, layers + 1):
        W, b = params[f"W{i}"], params[f"b{i}"]
        z = hs[-1] @ W / np.sqrt(W.shape[0]) + b          # W is (fan_in, fan_out)
        hs.append(np.tanh(z) if i < layers else z)
    return hs


def loss(params, X, y):
    return 0.5 * np.mean(np.sum((forward(params, X)[-1] - y) ** 2, axis=1))


def make_grad(fan_axis):
    def grad(params, X, y):
        hs = forward(params, X)
        d = (hs[-1] - y) / len(X)
        grads = {}
        for i in range(len(params) // 2, 0, -1):
            W = params[f"W{i}"]
            grads[f"W{i}"] = hs[i - 1].T @ d / np.sqrt(W.shape[fan_axis])
            grads[f"b{i}"] = d.sum(axis=0)
            d = (d @ W.T / np.sqrt(W.shape[0])) * (1 - hs[i - 1] ** 2)
        return grads
    return grad


grad = make_grad(0)
grad_buggy = make_grad(1)   # BUG: fan_out instead of fan_in; identical whenever W is square
'''

LEARNER_PROPERTY = '''
import pytest
from hypothesis import Phase, given, settings
from gradcheck.strategies import mlp_cases

import net

# Hypothesis' "explain" phase re-runs failures under a tracer: slow with numeric checks.
PROPERTY = settings(max_examples=20, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink])


@pytest.mark.gradcheck(against="numeric")
@PROPERTY
@given(case=mlp_cases(max_layers=3, max_width=5))
def test_backprop_any_shape(case, gradcheck):
    gradcheck(net.loss, net.grad, case.params, args=case.args)


@pytest.mark.gradcheck(against="numeric")
@PROPERTY
@given(case=mlp_cases(max_layers=3, max_width=5))
def test_buggy_backprop_any_shape(case, gradcheck):
    gradcheck(net.loss, net.grad_buggy, case.params, args=case.args)


@pytest.mark.gradcheck(against="numeric")
@PROPERTY
@given(case=mlp_cases(max_layers=3, min_width=3, max_width=3))
def test_buggy_backprop_square_layers_only(case, gradcheck):
    gradcheck(net.loss, net.grad_buggy, case.params, args=case.args)
'''


def test_property_test_finds_a_width_bug_and_shrinks_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(net=LEARNER_NET, test_net=LEARNER_PROPERTY)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*::test_backprop_any_shape PASSED*", "*::test_buggy_backprop_any_shape FAILED*",
                                 "*::test_buggy_backprop_square_layers_only PASSED*"])  # square: silent
    result.stdout.fnmatch_lines(["*test_buggy_backprop_any_shape*", "E * W1 * FAIL * scaled x*",
                                 "E *: test_buggy_backprop_any_shape(",  # "Falsifying example" or "Failing test case"
                                 "E *case=MLPCase(sizes=[[]*[]], batch=1, *"])
    sizes = [int(n) for n in re.search(r"MLPCase\(sizes=\[([\d, ]+)\]", result.stdout.str()).group(1).split(",")]
    assert any(a != b for a, b in zip(sizes, sizes[1:])), f"widths {sizes} should differ somewhere"
    assert len(sizes) <= 3 and sum(sizes) <= 5, f"{sizes} is not a small network"
