"""One sys.settrace capturer: usercode/capture.py. SymPy's readable formulas run on it."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

import gradcheck
from gradcheck.objective import Objective
from gradcheck.tree import flatten, validate_leaf
from gradcheck.usercode.capture import outer_locals

PACKAGE = pathlib.Path(gradcheck.__file__).parent


def test_settrace_is_called_in_capture_alone():
    calling = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "settrace(" in p.read_text())
    assert calling == [str(pathlib.Path("usercode", "capture.py"))]


def _square(v):
    doubled = 2 * v
    return doubled * doubled


def _outer(x):
    y = _square(x + 1)
    z = [y + k for k in range(2)]
    return z[0] + z[1]


def test_outer_locals_are_those_of_the_outermost_function_as_it_returned():
    result, captured = outer_locals(_outer, 1.0)
    assert result == 33.0
    assert captured["x"] == 1.0 and captured["y"] == 16.0 and captured["z"] == [16.0, 17.0]
    assert "doubled" not in captured


def test_outer_locals_restores_the_previous_trace_function():
    def previous(frame, event, arg):
        return None

    old = sys.gettrace()
    sys.settrace(previous)
    try:
        outer_locals(_outer, 1.0)
        assert sys.gettrace() is previous
    finally:
        sys.settrace(old)


def _neuron(p, x, t):
    def sigmoid(u):
        return 1.0 / (1.0 + np.exp(-u))

    hidden = sigmoid(p["w"] * x + p["b"])
    return 0.5 * (t - hidden) ** 2


def test_sympy_formulas_are_written_in_the_learners_own_names():
    from gradcheck.references.sympy import reference

    names, leaves, treedef = flatten({"w": 0.3, "b": -0.1})
    obj = Objective(_neuron, treedef, [validate_leaf(n, v) for n, v in zip(names, leaves)], (0.5, 0.25), {},
                    scalar_leaves=[True, True])
    text = reference.sympy_formula(obj, "w", in_terms="locals")
    head, where, definition = text.splitlines()
    assert head == "dloss/dw = -0.5*hidden*(0.25 - hidden)*(1 - hidden)"
    assert where == "where" and definition.strip().startswith("hidden = ")


def test_outer_locals_of_a_lambda_are_the_lambdas():
    _, captured = outer_locals(lambda x: _outer(x), 1.0)
    assert captured == {"x": 1.0}
