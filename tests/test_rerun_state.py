"""State set from the parameters before the call: the JAX and SymPy re-runs see it as the user's code does.

A tutorial's loss often sets a module's, an object's or a class's attributes from the parameters
and then calls a forward function that reads them. The re-runs must follow those writes (without
writing the user's real module, object or class), so that every reference runs and agrees; a
planted x4 bug is then caught as "scaled x4".
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap

import numpy as np
import pytest

import gradcheck

X = np.array([1.0, -0.5, 2.0])
PARAMS = {"w": 0.7, "W": np.array([0.1, -0.2, 0.3])}
_names = itertools.count()

#: Five-line tutorial modules: a float global and an array global read by forward(x), set on the
#: module itself, on an object, on a class, or by the module's own setter (a `global` statement).
MODULES = {
    "module": """
        import numpy as np
        w = 0.0
        W = np.zeros(3)
        def forward(x):
            return w * x + W * x
    """,
    "object": """
        class Model:
            pass
        MODEL = Model()
        def forward(x):
            return MODEL.w * x + MODEL.W * x
    """,
    "class": """
        import numpy as np
        class Model:
            w = 0.0
            W = np.zeros(3)
        def forward(x):
            return Model.w * x + Model.W * x
    """,
    "setter": """
        import numpy as np
        w, W = 0.0, np.zeros(3)
        def set_params(p):
            global w, W
            w, W = p["w"], p["W"]
        def forward(x):
            return w * x + W * x
    """,
}


def load(tmp_path, source: str):
    """A tutorial module written to a file and imported (the re-runs need its source)."""
    name = f"tutorial_state_{next(_names)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def setter(kind: str, tut):
    """How the learner's loss puts the parameters where forward reads them."""
    def on_module(p):
        tut.w = p["w"]
        tut.W = p["W"]

    def on_object(p):
        tut.MODEL.w = p["w"]
        tut.MODEL.W = p["W"]

    def on_class(p):
        tut.Model.w = p["w"]
        tut.Model.W = p["W"]

    return {"module": on_module, "object": on_object, "class": on_class, "setter": lambda p: tut.set_params(p)}[kind]


def case(kind: str, tmp_path):
    tut = load(tmp_path, MODULES[kind])
    set_params = setter(kind, tut)

    def loss(p, x):
        set_params(p)
        return float(np.sum(tut.forward(x) ** 2))

    def grad(p, x, factor=1.0):
        r = p["w"] * x + p["W"] * x
        return {"w": factor * float(np.sum(2 * r * x)), "W": factor * 2 * r * x}

    return tut, loss, grad


def ran(report) -> dict:
    return {s.name: (s.ran, s.reason) for s in report.references}


KINDS = sorted(MODULES)


@pytest.mark.parametrize("kind", KINDS)
def test_correct_gradient_passes_with_every_reference(kind, tmp_path):
    tut, loss, grad = case(kind, tmp_path)
    report = gradcheck.check(loss, grad, PARAMS, args=(X,))
    assert report.passed, str(report)
    assert all(p.diagnosis == "ok" for p in report.parameters), str(report)
    assert all(r for r, _ in ran(report).values()) and set(ran(report)) == {"numeric", "jax", "sympy"}, ran(report)


@pytest.mark.parametrize("kind", KINDS)
def test_planted_x4_bug_reads_scaled_x4(kind, tmp_path):
    tut, loss, grad = case(kind, tmp_path)
    report = gradcheck.check(loss, lambda p, x: grad(p, x, factor=4.0), PARAMS, args=(X,))
    assert not report.passed
    for p in report.parameters:
        assert p.diagnosis == "scaled" and p.factor == pytest.approx(4.0), str(report)
    assert "scaled x4" in str(report)
    assert all(r for r, _ in ran(report).values()), ran(report)


@pytest.mark.parametrize("kind", KINDS)
def test_the_user_state_is_never_written_by_a_re_run(kind, tmp_path):
    tut, loss, grad = case(kind, tmp_path)
    gradcheck.check(loss, grad, PARAMS, args=(X,))
    owner = tut.MODEL if kind == "object" else tut.Model if kind == "class" else tut
    # Only the user's own (numpy) calls wrote here: plain numbers, never a tracer or a symbol.
    assert type(owner.w) is float and type(owner.W) is np.ndarray and owner.W.dtype == np.float64
    assert owner.w == pytest.approx(PARAMS["w"], abs=1e-3)  # near the parameters, where the loss was called


@pytest.mark.parametrize("kind", KINDS)
def test_a_later_check_at_other_parameters_sees_them(kind, tmp_path):
    """The JAX program compiled for the first check is reused; the state it reads is the new one."""
    tut, loss, grad = case(kind, tmp_path)
    gradcheck.check(loss, grad, PARAMS, args=(X,))
    other = {"w": -1.3, "W": np.array([0.5, 0.25, -2.0])}
    report = gradcheck.check(loss, grad, other, args=(X,))
    assert report.passed and all(r for r, _ in ran(report).values()), str(report)
    report = gradcheck.check(loss, lambda p, x: grad(p, x, factor=4.0), other, args=(X,))
    assert {p.diagnosis for p in report.parameters} == {"scaled"}, str(report)


def test_the_forward_imported_by_name_reads_what_the_loss_set(tmp_path):
    """`from tutorial import forward` beside `tutorial.w = p["w"]`: one module, one state."""
    tut = load(tmp_path, MODULES["module"])
    forward = tut.forward

    def loss(p, x):
        tut.w, tut.W = p["w"], p["W"]
        return np.sum(forward(x) ** 2).item()

    def grad(p, x):
        r = p["w"] * x + p["W"] * x
        return {"w": float(np.sum(2 * r * x)), "W": 2 * r * x}

    report = gradcheck.check(loss, grad, PARAMS, args=(X,))
    assert report.passed and all(r for r, _ in ran(report).values()), str(report)
