"""Assignment into arrays under JAX: the user's `a[i] = v` recompiled as a functional update.

Each rewritten function must compute what the original computes, on numpy (in place, views
included) and on JAX arrays (a new array per write), and the rewrite must step aside where
it cannot be sure it reproduces the running code.
"""

from __future__ import annotations

import dis
import importlib
import linecache
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradcheck
from gradcheck.usercode.frames import user_location
from gradcheck.usercode.rebind import rebind
from gradcheck.usercode.rewrite import functional_code, setitem

jnp = pytest.importorskip("jax.numpy")


# --- the learner's code ---------------------------------------------------------------------------

def softmax_loss_and_grad(W, X, y, reg, forget_n=False):
    """CS231n style: one function, the gradient written into a copy of the probabilities."""
    n = X.shape[0]
    scores = X @ W
    scores -= np.max(scores, axis=1, keepdims=True)
    probs = np.exp(scores)
    probs /= np.sum(probs, axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(n), y])) / n + 0.5 * reg * np.sum(W * W)
    dscores = probs.copy()
    dscores[np.arange(n), y] -= 1
    if not forget_n:
        dscores /= n
    return loss, X.T @ dscores + reg * W


def every_kind_of_write(w):
    out = np.zeros((3, 4))
    out[0] = w[:4]                 # a row
    out[1:, ::2] = w[4:8].reshape(2, 2)
    out[..., 3] += w[8]            # an ellipsis
    out[np.array([2, 2]), 1] += 1.0  # a repeated index: updated once, as numpy's += does
    out[(0, 1)] *= w[0]            # a tuple index
    rows = [None, None]
    rows[0] = np.sum(out ** 2)     # a list
    table = {}
    table["k"] = np.tanh(w[1])     # a dict

    def inner(a):
        a[0, 0] = a[0, 0] ** 2     # a nested function writes too
        return a

    return rows[0] + table["k"] + np.sum(inner(out))


def make_closure(k):
    def closure(w):
        buf = np.zeros(3)
        buf[1] = k * w[0]
        return np.sum(buf ** 2)
    return closure


BUFFER = np.zeros(2)


def writes_into_a_global_and_a_closure(w):
    BUFFER[0] = 1.0        # a global's array: rewriting would make BUFFER local, so it stays

    def scale(k):
        rows = np.ones(2)

        def inner():
            rows[1] = k    # the enclosing function's array: stays too
            return rows
        return inner()

    local = np.zeros(2)
    local[1] = w[1]        # rewritten
    return np.sum(BUFFER) + np.sum(scale(w[0])) + np.sum(local)


def no_writes(w):
    return np.sum(w ** 2)


def raises_on_line(w):
    out = np.zeros(2)
    out[0] = w[0]
    raise ValueError("from the learner's line")


def clips_in_place(w, bound=5.0):
    """min-char-rnn's habit: the gradients clipped in place, for their effect, inside the loss."""
    hidden = np.tanh(w[:6].reshape(2, 3))
    scaled = hidden * 3.0
    np.clip(scaled, -bound, bound, out=scaled)
    total = np.zeros(1)
    np.add(total, np.sum(scaled ** 2), out=total)
    for piece in [scaled]:
        np.clip(piece, -bound, bound, out=piece)   # a loop variable: rebound, the list unchanged
    return float(total[0]) + np.sum(w[6:] ** 2)


def clips_into_another_array(w):
    hidden = np.tanh(w[:6])
    kept = np.empty(6)
    np.clip(hidden, -0.5, 0.5, out=kept)   # out= another array: rewritten the same way
    return np.sum(kept ** 2) + np.sum(hidden)


W = np.linspace(-1.0, 1.0, 12) * 0.7


# --- rewriting --------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [every_kind_of_write, make_closure(3.0)], ids=["every kind", "closure"])
def test_rewritten_code_computes_the_same_on_numpy_and_jax(fn):
    assert functional_code(fn.__code__) is not None
    expected = fn(W.copy())
    numpy_copy = rebind(fn, np, functional_writes=True)
    jax_copy = rebind(fn, jnp, functional_writes=True)
    assert numpy_copy(W.copy()) == pytest.approx(expected, rel=1e-15)
    assert float(jax_copy(jnp.asarray(W))) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(TypeError):  # without the rewrite, JAX refuses the first write
        rebind(fn, jnp)(jnp.asarray(W))


@pytest.mark.parametrize("bound", [5.0, 1.5])
def test_out_arguments_write_in_place_on_numpy_and_bind_the_result_on_jax(bound):
    expected = clips_in_place(W.copy(), bound)
    jax_copy = rebind(clips_in_place, jnp, functional_writes=True)
    assert float(jax_copy(jnp.asarray(W), bound)) == pytest.approx(expected, rel=1e-6)
    assert rebind(clips_in_place, np, functional_writes=True)(W.copy(), bound) == pytest.approx(expected, rel=1e-15)
    assert float(rebind(clips_into_another_array, jnp, functional_writes=True)(jnp.asarray(W))) == \
        pytest.approx(clips_into_another_array(W), rel=1e-6)
    with pytest.raises(TypeError):  # jax.numpy takes no out=: without the rewrite JAX stops at the clip
        rebind(clips_in_place, jnp)(jnp.asarray(W), bound)


def test_a_loss_that_clips_in_place_is_checked_three_ways():
    def grad(w):
        g = np.zeros_like(w)
        h = np.tanh(w[:6])
        s = np.clip(3.0 * h, -1.5, 1.5)
        g[:6] = 2 * s * 3.0 * (np.abs(3.0 * h) < 1.5) * (1 - h ** 2)
        g[6:] = 2 * w[6:]
        return g

    def wrong(w):
        return -grad(w)

    kwargs = dict(loss=lambda w: clips_in_place(w, 1.5), params=W.copy())
    report = gradcheck.check(grad=grad, **kwargs)
    assert report.passed, str(report)
    assert {r.name for r in report.references if r.ran} == {"numeric", "jax", "sympy"}, str(report)
    bad = gradcheck.check(grad=wrong, **kwargs)
    assert not bad.passed and bad.parameters[0].diagnosis == "sign_flipped", str(bad)


def test_only_local_names_are_rewritten():
    code = functional_code(writes_into_a_global_and_a_closure.__code__)
    assert code is not None
    expected = writes_into_a_global_and_a_closure(W)
    assert rebind(writes_into_a_global_and_a_closure, np, functional_writes=True)(W) == expected
    stores = [i.argval for i in dis.get_instructions(code) if i.opname == "STORE_FAST"]
    assert "local" in stores and "BUFFER" not in stores and BUFFER[0] == 1.0


def test_rewrite_steps_aside_when_there_is_nothing_to_do_or_no_source():
    assert functional_code(no_writes.__code__) is None
    assert functional_code((lambda w: w).__code__) is None
    namespace: dict = {}
    exec("def f(a):\n    a[0] = 1\n    return a\n", namespace)  # no file to read the source from
    assert functional_code(namespace["f"].__code__) is None


def test_a_file_edited_since_import_is_not_rewritten(tmp_path, monkeypatch):
    module = tmp_path / "edited_learner.py"
    module.write_text("import numpy as np\n\ndef f(w):\n    out = np.zeros(2)\n    out[0] = w[0]\n    return out\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    edited = importlib.import_module("edited_learner")
    try:
        module.write_text("import numpy as np\n\ndef f(w):\n    out = np.zeros(2)\n    out[1] = w[0]\n    return out\n")
        linecache.checkcache(str(module))
        assert functional_code(edited.f.__code__) is None  # the source no longer is the running code
    finally:
        sys.modules.pop("edited_learner", None)


def test_errors_name_the_learners_own_line():
    with pytest.raises(ValueError) as info:
        rebind(raises_on_line, jnp, functional_writes=True)(jnp.asarray(W))
    line = raises_on_line.__code__.co_firstlineno + 3
    assert user_location(info.value).startswith(f"test_writes.py:{line}")


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float64, (5,), elements=st.floats(-3, 3)),
       index=st.lists(st.integers(-5, 4), min_size=1, max_size=6),
       value=st.floats(-2, 2).filter(lambda v: abs(v) > 1e-3),  # JAX runs in float32 here
       op=st.sampled_from(["set", "add", "sub", "mul", "div"]))
def test_setitem_matches_numpy_for_any_index(x, index, value, op):
    # numpy's buffered in-place operators: a repeated index is read once and written once.
    index = np.array(index)
    expected = x.copy()
    if op == "set":
        expected[index] = value
    else:
        expected[index] = {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                           "div": np.true_divide}[op](expected[index], value)
    name = None if op == "set" else {"add": "Add", "sub": "Sub", "mul": "Mult", "div": "Div"}[op]
    inplace = x.copy()
    assert setitem(inplace, index, value, name) is inplace
    np.testing.assert_array_equal(inplace, expected)
    np.testing.assert_allclose(np.asarray(setitem(jnp.asarray(x), index, value, name)), expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("op", [None, "Mult", "Add"])
def test_a_boolean_mask_with_one_value_is_a_select_that_jit_compiles(op):
    import jax

    x = np.array([-1.5, 0.5, 2.5, -0.2])
    expected = x.copy()
    mask = expected < 0
    if op is None:
        expected[mask] = 0.0
    else:
        expected[mask] = {"Mult": np.multiply, "Add": np.add}[op](expected[mask], 0.5)
    jitted = jax.jit(lambda a: setitem(a, a < 0, 0.0 if op is None else 0.5, op))
    np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(x))), expected, rtol=1e-6)


def test_numpy_writes_stay_in_place_through_views():
    base = np.zeros(4)
    view = base[1:]
    assert setitem(view, 0, 5.0) is view and base[1] == 5.0


# --- in a check ---------------------------------------------------------------------------------

def value_and_grad(params, X, y, forget_n=False):
    loss, dW = softmax_loss_and_grad(params["W"], X, y, 0.1, forget_n)
    return loss, {"W": dW}


RNG = np.random.default_rng(3)
CASE = {"params": {"W": RNG.normal(size=(4, 3))}, "args": (RNG.normal(size=(6, 4)), RNG.integers(0, 3, 6))}


def test_cs231n_style_value_and_grad_is_checked_by_jax():
    report = gradcheck.check(value_and_grad=value_and_grad, against="jax", **CASE)
    assert report.passed, str(report)
    everything = gradcheck.check(value_and_grad=value_and_grad, **CASE)
    assert {r.name for r in everything.references if r.ran} == {"numeric", "jax", "sympy"}


def test_a_bug_in_cs231n_style_code_is_named_by_jax():
    def forgot_n(params, X, y):
        return value_and_grad(params, X, y, forget_n=True)

    report = gradcheck.check(value_and_grad=forgot_n, against="jax", **CASE)
    assert not report.passed and report["W"].diagnosis == "wrong", str(report)  # the L2 term is not scaled
