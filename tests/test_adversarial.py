"""Never a wrong verdict: the inputs a learner or a hostile caller produces, each in a pair.

Every input below is checked twice: with a correct gradient (which passes, or gets a clear,
documented error naming the parameter and the way out) and with a wrong one (which never
passes: it fails, or gets the same clear error). Every check goes through `run`, which also
asserts that the caller's parameters and data are bitwise what they were (bytes, dtype, shape,
strides, flags and the very objects), whatever happened: a pass, a failure, an error, the
user's code raising, exiting or writing into its inputs, or a KeyboardInterrupt.

The table of these inputs and their answers is in docs/errors.md ("Inputs that were tried").
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest

import gradcheck
from gradcheck.errors import (GradcheckError, InvalidCase, NondeterministicGradient, StructureMismatch,
                              UserCodeError)
from gradcheck.tree import flatten, is_dataclass_instance, unflatten

from nets import W_MIXED, mixed_grad, mixed_loss  # a small element beside large ones

# The hostile inputs' own warnings (np.matrix is pending deprecation; one loss warns on purpose).
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore:deprecated activation")

# ---------------------------------------------------------------------------------------------
# Fingerprints: the caller's objects, bitwise
# ---------------------------------------------------------------------------------------------


def fingerprint(tree: Any) -> Any:
    """Everything a check could change about the caller's objects: identity, layout, flags and bytes."""
    if isinstance(tree, np.ndarray):
        return ("array", id(tree), type(tree), tree.dtype.str, tree.shape, tree.strides,
                tree.flags.writeable, tree.flags.c_contiguous, tree.flags.f_contiguous, tree.tobytes())
    if is_dataclass_instance(tree):
        return ("dataclass", id(tree), type(tree),
                tuple((f.name, fingerprint(getattr(tree, f.name))) for f in dataclasses.fields(tree)))
    if isinstance(tree, dict):
        return ("dict", id(tree), type(tree), tuple((k, fingerprint(v)) for k, v in tree.items()))
    if isinstance(tree, (list, tuple)):
        return ("seq", id(tree), type(tree), tuple(fingerprint(v) for v in tree))
    if isinstance(tree, float) and np.isnan(tree):
        return ("nan", type(tree))
    return ("value", type(tree), repr(tree))


def run(loss: Callable | None, grad: Callable | None, params: Any, args: tuple = (), **options: Any):
    """gradcheck.check, asserting the caller's params and args are untouched whatever happens."""
    before = [fingerprint(params), fingerprint(args)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return gradcheck.check(loss, grad, params, args, **options)
    finally:
        assert [fingerprint(params), fingerprint(args)] == before, "the caller's parameters or data changed"


def consistent(report) -> None:
    """A failing row describes one element: its worst index carries its largest relative error."""
    assert not report.passed and "FAILED" in str(report)
    for p in report.failures:
        if p.diagnosis in ("wrong_shape", "missing"):
            continue
        assert p.worst_index is not None and p.max_rel_error > 0, p
        if p.rel_errors is not None:
            # the same element (the lead's exact agreement is asserted apart, on fewer cases)
            assert p.max_rel_error == pytest.approx(float(p.rel_errors[p.worst_index]), rel=1e-6, abs=0)


def passes(report) -> None:
    assert report.passed, str(report)
    assert "FAILED" not in str(report)


def raises_clearly(error: type, *needles: str) -> Callable:
    """A checker: the call raises `error` (a GradcheckError) whose message holds every needle."""
    def check(call: Callable) -> None:
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, GradcheckError)
        message = str(info.value)
        for needle in needles:
            assert needle in message, message
    return check


# ---------------------------------------------------------------------------------------------
# A loss that works on any pytree, and its gradient (right, or scaled by `factor`)
# ---------------------------------------------------------------------------------------------

def tree_loss(p: Any) -> float:
    return sum(np.sum(np.sin(np.asarray(x, dtype=np.float64)) ** 2) for x in flatten(p)[1])


def tree_grad(p: Any, factor: float = 1.0) -> Any:
    _, leaves, td = flatten(p)
    out = []
    for x in leaves:
        a = np.asarray(x, dtype=np.float64)
        out.append(factor * np.sin(2 * a))
    return unflatten(td, out)


def tree_bad(p: Any) -> Any:
    return tree_grad(p, 1.001)


A = np.arange(1.0, 13.0).reshape(3, 4) / 7.0


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


# ---------------------------------------------------------------------------------------------
# 1. Layouts, dtypes and array kinds of the parameters
# ---------------------------------------------------------------------------------------------

LAYOUTS = {
    "transposed view": lambda: A.T,
    "fortran order": lambda: np.asfortranarray(A),
    "strided slice": lambda: A[:, ::2],
    "negative strides": lambda: A[::-1, ::-1],
    "read-only": lambda: readonly(A),
    "broadcast_to (zero strides, read-only)": lambda: np.broadcast_to(np.array([0.1, 0.2, 0.3]), (4, 3)),
    "0-d array": lambda: np.array(0.7),
    "longdouble": lambda: A.astype(np.longdouble),
    "float32": lambda: A.astype(np.float32),
    "a jax array": lambda: __import__("jax.numpy").numpy.asarray(A),
}


@pytest.mark.parametrize("make", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_layouts_pass_right_and_fail_wrong(make):
    params = make()
    passes(run(tree_loss, tree_grad, params))
    bad = run(tree_loss, tree_bad, params)
    consistent(bad)
    if params.size > 1:
        assert bad.parameters[0].diagnosis == "scaled" and bad.parameters[0].factor == pytest.approx(1.001, rel=1e-3)


def affine_forward(x, w):
    return x @ w, (x, w)


def affine_backward(dout, cache, factor=1.0):
    x, w = cache
    return dout @ w.T, factor * x.T @ dout


def test_layer_inputs_in_any_layout():
    rng = np.random.default_rng(0)
    x = np.broadcast_to(rng.standard_normal((1, 4)), (3, 4))            # one example repeated, read-only
    w = np.asfortranarray(rng.standard_normal((2, 4)).T)               # a transposed view, F order
    before = [fingerprint(x), fingerprint(w)]
    passes(gradcheck.check_layer(affine_forward, affine_backward, (x, w)))
    bad = gradcheck.check_layer(affine_forward, lambda d, c: affine_backward(d, c, 2.0), (x, w))
    consistent(bad)
    assert [p.name for p in bad.failures] == ["[1]"] and bad["[1]"].diagnosis == "scaled"
    assert [fingerprint(x), fingerprint(w)] == before


@pytest.mark.parametrize("make", [lambda: A.T, lambda: np.asfortranarray(A), lambda: A[:, ::2], lambda: A[::-1]],
                         ids=["transposed", "fortran", "strided", "reversed"])
def test_one_wrong_element_of_a_view_is_found_at_its_own_index(make):
    """The flat index the checker perturbs and reports means the element of the array as the caller sees it."""
    params = make()
    target = (params.shape[0] - 1, 1)

    def grad(p):
        g = tree_grad(p)
        g[target] += 0.5
        return g

    report = run(tree_loss, grad, params)
    consistent(report)
    assert report.parameters[0].worst_index == target and report.parameters[0].wrong_indices == (target,)


def test_gradient_in_fortran_order_or_broadcast_is_read_by_element():
    x = np.asfortranarray(A)
    passes(run(tree_loss, lambda p: np.asfortranarray(tree_grad(p)), x))
    passes(run(lambda p: float(np.sum(p)), lambda p: np.broadcast_to(1.0, p.shape), x))
    bad = run(lambda p: float(np.sum(p)), lambda p: np.broadcast_to(2.0, p.shape), x)
    consistent(bad)
    assert bad.parameters[0].diagnosis == "scaled"


def test_memmap_parameter(tmp_path):
    path = tmp_path / "weights.dat"
    mm = np.memmap(path, dtype=np.float64, mode="w+", shape=(3, 4))
    mm[:] = A
    mm.flush()
    on_disk = path.read_bytes()
    passes(run(tree_loss, tree_grad, mm))
    consistent(run(tree_loss, tree_bad, mm))
    assert path.read_bytes() == on_disk
    ro = np.memmap(path, dtype=np.float64, mode="r", shape=(3, 4))
    passes(run(tree_loss, tree_grad, ro))
    assert path.read_bytes() == on_disk


REFUSED = {
    "np.matrix": (lambda: np.matrix(A), "parameter 'params' is a numpy.matrix", "np.asarray(params)"),
    "masked array": (lambda: np.ma.masked_less(A, 0.5), "numpy.ma", "np.asarray(params)"),
    "complex128": (lambda: A.astype(complex), "parameter 'params' is complex", "params.real, params.imag"),
    "bool": (lambda: A > 0.5, "parameter 'params' has boolean dtype", "args"),
    "object dtype": (lambda: A.astype(object), "parameter 'params' is an array of Python objects",
                     "np.asarray(params, dtype=float)"),
    "int in a dict": (lambda: {"w": np.arange(3)}, "parameter 'w' has integer dtype", ".astype(float)"),
    "string leaf": (lambda: {"w": A, "lr": "0.1"}, "parameter 'lr'", "float"),
    "a set": (lambda: {"w": {0.1, 0.2}}, "parameter 'w' is a set", "pass a list"),
}


@pytest.mark.parametrize("make,needles", [(m, n) for m, *n in REFUSED.values()], ids=list(REFUSED))
def test_parameters_that_cannot_be_checked_get_a_clear_error(make, needles):
    params = make()
    clear = raises_clearly(InvalidCase, *needles)
    clear(lambda: run(tree_loss, tree_grad, params))
    clear(lambda: run(tree_loss, tree_bad, params))


def test_matrix_arithmetic_would_change_the_loss():
    """Why np.matrix is refused: as a plain array, W * x is elementwise, not the product the learner meant."""
    W, x = np.matrix([[1.0, 2.0]]), np.matrix([[3.0], [4.0]])
    assert (W * x).shape == (1, 1) and (np.asarray(W) * np.asarray(x)).shape == (2, 2)
    raises_clearly(InvalidCase, "matrix product", "@")(
        lambda: run(lambda p, x: float(p * x), lambda p, x: x.T, W, (x,)))


def test_empty_arrays_beside_a_real_one():
    params = {"W": A.copy(), "unused": np.zeros((0, 3))}
    passes(run(tree_loss, tree_grad, params))
    bad = run(tree_loss, lambda p: {**tree_grad(p), "unused": np.zeros((3, 0))}, params)
    consistent(bad)
    assert bad["unused"].diagnosis == "wrong_shape" and bad["W"].passed
    consistent(run(tree_loss, tree_bad, params))


def test_nan_at_the_start_point():
    w = np.array([np.nan, 1.0, 2.0])
    clear = raises_clearly(InvalidCase, "the loss is nan at the given parameters")
    clear(lambda: run(tree_loss, tree_grad, w))
    clear(lambda: run(tree_loss, tree_bad, w))


# ---------------------------------------------------------------------------------------------
# 2. Scales: mixed within one leaf, a large constant offset, large logits, saturated float32
# ---------------------------------------------------------------------------------------------



@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_mixed_scales_within_one_leaf(against):
    passes(run(mixed_loss, mixed_grad, W_MIXED, against=against))
    # the small element halved; a large element's tiny gradient (-2e-4) made 1.0, above the leaf's atol
    for k, wrong in ((0, lambda g: 0.5 * g), (3, lambda g: 1.0)):
        def bad(w, k=k, wrong=wrong):
            g = mixed_grad(w)
            g[k] = wrong(g[k])
            return g
        report = run(mixed_loss, bad, W_MIXED, against=against)
        consistent(report)
        assert report.parameters[0].worst_index == (k,) and report.parameters[0].wrong_indices == ((k,),)


@pytest.mark.parametrize("against", ["auto", "numeric", "jax"])
def test_loss_with_a_large_constant_offset(against):
    """A complex step or an exact reference is blind to the offset: a 1e-4 relative error is caught."""
    x = np.array([0.3, -0.7, 1.1])
    loss = lambda p: 1e8 + np.sum(np.sin(p) ** 2)  # noqa: E731
    passes(run(loss, lambda p: np.sin(2 * p), x, against=against))
    consistent(run(loss, lambda p: np.sin(2 * p) * (1 + 1e-4), x, against=against))


def test_loss_with_a_large_constant_offset_central_differences_only():
    """float() stops the complex step, JAX and SymPy: central differences of 1e8 + f lose 8 digits,
    and their error estimate widens the tolerance; a 1e-3 relative error is still caught."""
    x = np.array([0.3, -0.7, 1.1])
    loss = lambda p: 1e8 + float(np.sum(np.sin(p) ** 2))  # noqa: E731
    passes(run(loss, lambda p: np.sin(2 * p), x))
    consistent(run(loss, lambda p: np.sin(2 * p) * (1 + 1e-3), x))


def stable_xent(z, y):
    m = z.max()
    return m + np.log(np.sum(np.exp(z - m))) - z[y]


def stable_xent_grad(z, y):
    e = np.exp(z - z.max())
    s = e / e.sum()
    s[y] -= 1
    return s


Z_BIG = np.array([1000.0, 999.0, 1001.5, 998.0])


@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_logits_near_1e3(against):
    passes(run(stable_xent, stable_xent_grad, Z_BIG, (2,), against=against))

    def off(z, y):
        g = stable_xent_grad(z, y)
        g[0] *= 1.01
        return g
    report = run(stable_xent, off, Z_BIG, (2,), against=against)
    consistent(report)
    assert report.parameters[0].worst_index == (0,)


def test_naive_softmax_at_large_logits_is_a_clear_error():
    def naive(z, y):
        return -np.log(np.exp(z[y]) / np.sum(np.exp(z)))          # exp(1000) overflows
    clear = raises_clearly(InvalidCase, "the loss is nan", "overflow in exp")
    with np.errstate(all="ignore"):
        clear(lambda: run(naive, stable_xent_grad, Z_BIG, (2,)))
        clear(lambda: run(naive, lambda z, y: 2 * stable_xent_grad(z, y), Z_BIG, (2,)))


W32 = np.array([8.0, -9.0, 0.5], dtype=np.float32)
X32 = np.array([[1.0, 0.5, 2.0], [0.3, 1.0, -1.0]], dtype=np.float32)


def tanh_loss(p, X):
    return np.sum(np.tanh(X @ p) ** 2)


def tanh_grad(p, X):
    t = np.tanh(X @ p)
    return X.T @ (2 * t * (1 - t ** 2))


def test_float32_code_at_saturated_units():
    passes(run(tanh_loss, tanh_grad, W32, (X32,)))
    report = run(tanh_loss, lambda p, X: X.T @ (2 * np.tanh(X @ p) * (1 - np.tanh(X @ p))), W32, (X32,))
    consistent(report)
    consistent(run(tanh_loss, lambda p, X: 2 * tanh_grad(p, X), W32, (X32,)))


@pytest.mark.parametrize("against", ["auto", "numeric", "jax"])
@pytest.mark.parametrize("wrong", [0.0, 0.5])
def test_near_a_kink_but_not_on_it_the_derivative_is_the_judge(against, wrong):
    """|w| at w = 1e-9: the derivative is 1; a 0 or 1/2 there is wrong, not a subgradient."""
    w = np.array([1e-9, 0.5, -0.3])
    loss = lambda p: np.sum(np.abs(p))  # noqa: E731
    passes(run(loss, np.sign, w, against=against))
    report = run(loss, lambda p: np.r_[wrong, np.sign(p[1:])], w, against=against)
    consistent(report)
    p = report.parameters[0]
    assert p.worst_index == (0,) and not p.nondifferentiable_indices, str(report)


# ---------------------------------------------------------------------------------------------
# 3. Containers: the same array twice, unusual keys, OrderedDict, namedtuple, dataclass
# ---------------------------------------------------------------------------------------------

Pair = collections.namedtuple("Pair", "w b")


@dataclasses.dataclass
class Params:
    w: np.ndarray
    b: float


@dataclasses.dataclass(frozen=True)
class FrozenParams:
    w: np.ndarray
    b: float


def attr_loss(p):
    return float(np.sum(np.sin(p.w) ** 2) + np.cos(p.b))


def attr_grad(p, factor=1.0):
    return type(p)(factor * np.sin(2 * p.w), -np.sin(p.b))


X3 = np.array([0.3, -0.7, 1.1])

CONTAINERS = {
    "same array twice": lambda: [X3, X3],
    "same array under two keys": lambda: {"a": X3, "b": X3},
    "int keys": lambda: {0: X3, 1: X3 + 1},
    "tuple keys": lambda: {(0, "W"): X3, (1, "W"): X3 - 1},
    "OrderedDict": lambda: collections.OrderedDict([("b", X3), ("a", X3 * 2)]),
    "list of Python floats": lambda: [0.3, -1.2, 2.0],
    "nested dict/list/tuple": lambda: {"layers": [(X3, 0.5), (X3[:2], -0.25)]},
}


@pytest.mark.parametrize("make", list(CONTAINERS.values()), ids=list(CONTAINERS))
def test_containers_pass_right_and_fail_wrong(make):
    params = make()
    passes(run(tree_loss, tree_grad, params))
    bad = run(tree_loss, tree_bad, params)
    consistent(bad)
    # a factor needs two resolvable elements: a single number off by 0.1% is just wrong
    assert all(p.diagnosis == ("scaled" if p.total > 1 else "wrong") for p in bad.parameters), str(bad)


def test_same_array_twice_warns_and_blames_the_right_one():
    report = run(lambda p: float(np.sum(p[0] ** 2) + np.sum(p[1] ** 3)), lambda p: [2 * p[0], 3 * p[1] ** 2],
                 [X3, X3])
    passes(report)
    assert any("'[0]' and '[1]' share memory" in w for w in report.warnings)
    bad = run(lambda p: float(np.sum(p[0] ** 2) + np.sum(p[1] ** 3)), lambda p: [2 * p[0], 2 * p[1]], [X3, X3])
    assert [p.name for p in bad.failures] == ["[1]"]


@pytest.mark.parametrize("make,names", [
    (lambda: {"layer.W": X3, "layer": {"W": X3 + 1}}, ["['layer.W']", "['layer']['W']"]),
    (lambda: {0: X3, "0": X3 + 1}, ["[0]", "['0']"]),
], ids=["dotted key beside a nested one", "0 and '0'"])
def test_leaves_whose_names_would_collide_are_told_apart(make, names):
    """Results are found by name: one name for two leaves would judge one against the other's reference."""
    params = make()
    report = run(tree_loss, tree_grad, params)
    passes(report)
    assert [p.name for p in report.parameters] == names

    def second_wrong(p):
        g = tree_grad(p)
        key = list(g)[1]
        g[key] = tree_grad(p[key], 2.0) if not isinstance(g[key], dict) else {"W": tree_grad(p[key]["W"], 2.0)}
        return g
    bad = run(tree_loss, second_wrong, params)
    consistent(bad)
    assert [p.name for p in bad.failures] == [names[1]] and bad[names[1]].factor == 2.0


def test_gradient_dict_in_another_key_order():
    params = {"W": A.copy(), "b": X3.copy()}
    passes(run(tree_loss, lambda p: dict(reversed(list(tree_grad(p).items()))), params))
    bad = run(tree_loss, lambda p: {"b": tree_grad(p)["b"], "W": 2 * tree_grad(p)["W"]}, params)
    assert [p.name for p in bad.failures] == ["W"]


def test_unusual_keys_name_the_leaves():
    report = run(tree_loss, tree_bad, {0: X3, (1, "W"): X3})
    assert [p.name for p in report.parameters] == ["0", "(1, 'W')"]


@pytest.mark.parametrize("make", [lambda: Pair(X3, 0.5), lambda: Params(X3, 0.5), lambda: FrozenParams(X3, 0.5)],
                         ids=["namedtuple", "dataclass", "frozen dataclass"])
@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_namedtuple_and_dataclass_params_reach_the_loss_as_themselves(make, against):
    params = make()
    report = run(attr_loss, attr_grad, params, against=against)
    passes(report)
    assert [p.name for p in report.parameters] == ["w", "b"]
    bad = run(attr_loss, lambda p: attr_grad(p, -1.0), params, against=against)
    consistent(bad)
    assert bad.parameters[0].diagnosis == "sign_flipped" and bad.parameters[1].passed


def test_dataclass_gradient_may_be_a_dict_of_its_fields():
    passes(run(attr_loss, lambda p: {"w": np.sin(2 * p.w), "b": -np.sin(p.b)}, Params(X3, 0.5)))
    raises_clearly(StructureMismatch, "missing key 'b'")(
        lambda: run(attr_loss, lambda p: {"w": np.sin(2 * p.w)}, Params(X3, 0.5)))


# ---------------------------------------------------------------------------------------------
# 4. What the gradient function returns
# ---------------------------------------------------------------------------------------------

def sq_loss(p):
    return float(np.sum(np.sin(p) ** 2))


def sq_grad(p):
    return np.sin(2 * p)


GRADIENT_FORMS = {
    "jax array": lambda g: __import__("jax.numpy").numpy.asarray(g),
    "list of floats": lambda g: [float(v) for v in g],
    "tuple of numpy scalars": lambda g: tuple(np.float64(v) for v in g),
    "float32 for float64 params": lambda g: g.astype(np.float32),
    "transposed copy in F order": lambda g: np.asfortranarray(g),
}


@pytest.mark.parametrize("form", list(GRADIENT_FORMS.values()), ids=list(GRADIENT_FORMS))
def test_gradient_forms(form):
    passes(run(sq_loss, lambda p: form(sq_grad(p)), X3))
    bad = run(sq_loss, lambda p: form(sq_grad(p) * 1.01), X3)
    consistent(bad)
    assert bad.parameters[0].diagnosis == "scaled"


def test_float32_gradient_is_held_to_float32_tolerance():
    report = run(sq_loss, lambda p: sq_grad(p).astype(np.float32), X3)
    assert report.parameters[0].dtype == "float32" and report.parameters[0].rtol >= 1e-5
    consistent(run(sq_loss, lambda p: (sq_grad(p) * (1 + 1e-3)).astype(np.float32), X3))


def test_gradient_for_a_python_float_may_be_a_numpy_scalar_or_0d():
    for form in (np.float64, np.array, float, lambda v: np.array([v])[0]):
        passes(run(lambda w: np.sin(w), lambda w, f=form: f(np.cos(w)), 0.4))
        consistent(run(lambda w: np.sin(w), lambda w, f=form: f(2 * np.cos(w)), 0.4))


def test_complex_gradient_is_a_clear_error():
    raises_clearly(InvalidCase, "parameter 'params' is complex", "real part")(
        lambda: run(sq_loss, lambda p: sq_grad(p) + 0j, X3))


def test_list_gradient_of_the_wrong_length_is_a_wrong_shape():
    report = run(sq_loss, lambda p: list(sq_grad(p))[:2], X3)
    assert report.parameters[0].diagnosis == "wrong_shape"
    raises_clearly(StructureMismatch, "parameter 'params'", "one array per parameter")(
        lambda: run(sq_loss, lambda p: [sq_grad(p), None], X3))


# ---------------------------------------------------------------------------------------------
# 5. What the loss returns
# ---------------------------------------------------------------------------------------------

LOSS_FORMS = {
    "shape (1,)": lambda v: np.array([v]),
    "shape (1, 1)": lambda v: np.array([[v]]),
    "jax array": lambda v: __import__("jax.numpy").numpy.asarray(v),
    "float32 scalar": lambda v: np.float32(v),
    "Python float": float,
}


@pytest.mark.parametrize("form", list(LOSS_FORMS.values()), ids=list(LOSS_FORMS))
def test_loss_forms(form):
    loss = lambda p: form(np.sum(np.sin(p) ** 2))  # noqa: E731
    passes(run(loss, sq_grad, X3))
    consistent(run(loss, lambda p: 1.01 * sq_grad(p), X3))


@pytest.mark.parametrize("value", [np.True_, True, np.array([True])], ids=["numpy bool", "bool", "bool array"])
def test_loss_returning_a_boolean_is_a_clear_error(value):
    clear = raises_clearly(InvalidCase, "loss returned a boolean", "comparison")
    clear(lambda: run(lambda p: value, sq_grad, X3))
    clear(lambda: run(lambda p: value, lambda p: 2 * sq_grad(p), X3))


def test_loss_returning_loss_and_grads_points_to_value_and_grad():
    def cs231n(p):
        return sq_loss(p), sq_grad(p)
    raises_clearly(InvalidCase, "returned a tuple", "value_and_grad=")(lambda: run(cs231n, sq_grad, X3))
    passes(run(None, None, X3, value_and_grad=cs231n))
    consistent(run(None, None, X3, value_and_grad=lambda p: (sq_loss(p), 2 * sq_grad(p))))


def test_gradient_reading_the_forward_passs_cache():
    """CS231n style: the loss stores its activations and the gradient reads them, not its arguments."""
    cache: dict = {}

    def loss(p, X):
        cache["t"], cache["X"] = np.tanh(X @ p), X
        return np.sum(cache["t"] ** 2)

    def grad(p, X, factor=1.0):
        t, Xc = cache["t"], cache["X"]
        return factor * Xc.T @ (2 * t * (1 - t ** 2))
    data = (np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]]),)
    passes(run(loss, grad, np.array([0.4, -0.2]), data))
    consistent(run(loss, lambda p, X: grad(p, X, 1.1), np.array([0.4, -0.2]), data))


def test_loss_built_with_jax_numpy():
    import jax.numpy as jnp
    loss = lambda p: jnp.sum(jnp.sin(p) ** 2)  # noqa: E731
    passes(run(loss, sq_grad, X3))
    consistent(run(loss, lambda p: -sq_grad(p), X3))


# ---------------------------------------------------------------------------------------------
# 6. User code that warns, prints, raises, exits, or keeps state
# ---------------------------------------------------------------------------------------------

def test_loss_that_warns_on_every_call():
    def loss(p):
        warnings.warn("deprecated activation", DeprecationWarning)
        return sq_loss(p)
    before = list(warnings.filters)
    passes(run(loss, sq_grad, X3))
    consistent(run(loss, lambda p: 2 * sq_grad(p), X3))
    assert list(warnings.filters) == before


def test_loss_that_warns_with_errors_turned_on_is_a_user_error():
    def loss(p):
        warnings.warn("overflow ahead", UserWarning)
        return sq_loss(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        raises_clearly(UserCodeError, "your loss raised UserWarning", "overflow ahead")(
            lambda: gradcheck.check(loss, sq_grad, X3.copy()))


def test_loss_that_prints_a_lot(capsys):
    def loss(p):
        print("epoch", p, "x" * 2000)
        return sq_loss(p)
    passes(run(loss, sq_grad, X3))
    consistent(run(loss, lambda p: 2 * sq_grad(p), X3))
    assert len(capsys.readouterr().out) > 10_000   # the user's output is theirs: nothing is swallowed


class Interrupt:
    """A loss or gradient that raises KeyboardInterrupt on its n-th call (Ctrl-C mid-check)."""

    def __init__(self, fn: Callable, n: int) -> None:
        self.fn, self.n, self.calls = fn, n, 0

    def __call__(self, *a: Any) -> Any:
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return self.fn(*a)


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("where", ["loss", "grad"])
def test_keyboard_interrupt_propagates_and_the_arrays_are_intact(where, n):
    params = {"W": np.asfortranarray(A), "b": readonly(np.ones(4))}

    def loss(p):
        p["W"][0, 0] = 99.0                 # writes into its inputs (read-only views make it retry on copies)
        return tree_loss(p)
    for grad in (tree_grad, tree_bad):
        f = Interrupt(loss, n) if where == "loss" else loss
        g = Interrupt(grad, min(n, 3)) if where == "grad" else grad    # 1st, 2nd (repeat) or 3rd call
        with pytest.raises(KeyboardInterrupt):
            run(f, g, params)


def exits(code):
    def fn(*a):
        sys.exit(code)
    return fn


@pytest.mark.parametrize("code", [0, 1, "bye"])
def test_sys_exit_in_the_loss_is_a_user_error_not_an_exit(code):
    clear = raises_clearly(UserCodeError, "your loss called sys.exit(", "Remove the exit")
    clear(lambda: run(exits(code), sq_grad, X3))
    clear(lambda: run(exits(code), lambda p: 2 * sq_grad(p), X3))


def test_sys_exit_in_the_gradient_is_a_user_error():
    raises_clearly(UserCodeError, "your gradient function called sys.exit(2)")(lambda: run(sq_loss, exits(2), X3))


@pytest.mark.parametrize("call", [2, 3, 4])
def test_sys_exit_in_a_later_call_of_the_gradient(call):
    """The gradient is called again (repeatability, wider precision): an exit there is the user's error too."""
    calls = []

    def grad(p):
        calls.append(1)
        if len(calls) == call:
            sys.exit(4)
        return sq_grad(p)
    raises_clearly(UserCodeError, "your gradient function called sys.exit(4)")(lambda: run(sq_loss, grad, X3))


def test_sys_exit_only_at_a_perturbed_point():
    def loss(p):
        if p[0] > X3[0]:
            sys.exit("stepped too far")
        return sq_loss(p)
    clear = raises_clearly(UserCodeError, "sys.exit('stepped too far')")
    clear(lambda: run(loss, sq_grad, X3.copy(), against="numeric"))
    clear(lambda: run(loss, lambda p: 2 * sq_grad(p), X3.copy(), against="numeric"))


def test_accumulating_gradient_is_never_a_pass():
    """Right on the first call, doubled on the second: the gradient buffer is never zeroed."""
    buffer = np.zeros(3)

    def accumulating(p):
        buffer[:] += sq_grad(p)
        return buffer.copy()
    clear = raises_clearly(NondeterministicGradient, "different values for the same parameters: params[0]",
                           "reset to zero")
    clear(lambda: run(sq_loss, accumulating, X3))
    buffer[:] = 0.0
    state = {"calls": 0}

    def right_then_wrong(p):
        state["calls"] += 1
        return sq_grad(p) * (1.0 if state["calls"] == 1 else 1.5)
    clear(lambda: run(sq_loss, right_then_wrong, X3))


def test_gradient_returning_its_own_accumulating_buffer_is_never_a_pass():
    """`dW += ...; return dW`: the returned array is the buffer that later calls keep writing into."""
    dW = np.zeros(3)

    def accumulating(p):
        dW[...] += sq_grad(p)
        return dW
    raises_clearly(NondeterministicGradient, "different values for the same parameters")(
        lambda: run(sq_loss, accumulating, X3))

    def overwriting(p):                    # the same buffer, reset on every call: a right gradient
        dW[...] = sq_grad(p)
        return dW
    passes(run(sq_loss, overwriting, X3))


def test_harmless_state_in_the_gradient_passes():
    calls = []

    def counting(p):
        calls.append(1)                    # a call counter that does not change the result
        return sq_grad(p)
    passes(run(sq_loss, counting, X3))
    consistent(run(sq_loss, lambda p: (calls.append(1), 2 * sq_grad(p))[1], X3))


def test_loss_that_writes_into_its_inputs_then_raises():
    params = {"W": A.copy()}
    data = np.ones(4)

    def loss(p, d):
        p["W"] *= 2.0
        d[:] = -1.0
        raise ValueError("half-way through the forward pass")
    clear = raises_clearly(UserCodeError, "your loss raised ValueError", "half-way")
    clear(lambda: run(loss, lambda p, d: p, params, (data,)))


def test_gradient_that_writes_into_its_inputs():
    params = {"W": A.copy()}

    def grad(p):
        g = tree_grad(p)
        p["W"] -= 0.1 * g["W"]             # the update step inside the gradient function
        return g
    report = run(tree_loss, grad, params)
    passes(report)
    assert any("your gradient function modifies its inputs in place" in w for w in report.warnings)

    def bad(p):
        g = tree_bad(p)
        p["W"][:] = 0.0
        return g
    consistent(run(tree_loss, bad, params))


def test_user_code_raising_keeps_its_traceback_and_type():
    def loss(p):
        return sq_loss(p) + {}["missing"]
    with pytest.raises(UserCodeError) as info:
        run(loss, sq_grad, X3)
    assert isinstance(info.value.__cause__, KeyError) and "test_adversarial.py" in info.value.where


# ---------------------------------------------------------------------------------------------
# 7. The lead's behaviours: kinks on evidence, one story per report, exact references earn trust,
#    budget as wall time
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("against", ["auto", "numeric"])
@pytest.mark.parametrize("traceable", [True, False], ids=["array loss", "float() loss"])
def test_a_kink_is_declared_only_with_evidence(against, traceable):
    """ReLU exactly at 0 excuses that element (0 is a valid subgradient there, whatever the method:
    central differences, a complex step, JAX); a wrong value elsewhere in the leaf is still caught."""
    w = np.array([0.0, 0.7, -0.4, 1.3])

    def loss(p):
        value = np.sum(np.maximum(p, 0.0) ** 1.5 + np.maximum(p, 0.0))
        return value if traceable else float(value)

    def grad(p):
        return np.where(p > 0, 1.5 * np.sqrt(np.maximum(p, 0.0)) + 1.0, 0.0)
    report = run(loss, grad, w, against=against)
    passes(report)
    assert report.parameters[0].nondifferentiable_indices == ((0,),), str(report)
    bad = run(loss, lambda p: grad(p) * np.array([1.0, 1.0, 1.0, 0.9]), w, against=against)
    consistent(bad)
    p = bad.parameters[0]
    assert p.worst_index == (3,) and (3,) not in p.nondifferentiable_indices


def test_exact_reference_that_computes_another_function_is_set_aside():
    """A loss that branches on the array type: the JAX re-run takes the other branch and computes
    another function; it must be set aside (finite differences of the user's loss decide)."""
    def loss(p):
        scale = 3.0 if type(p).__module__ == "numpy" else 1.0     # numpy: 3; a traced array: 1
        return scale * np.sum(np.sin(p) ** 2)
    right = run(loss, lambda p: 3.0 * sq_grad(p), X3, against="auto")
    passes(right)
    assert any("jax" in w and "disagrees with finite differences" in w for w in right.warnings) or \
        not any(r.name == "jax" and r.ran for r in right.references), str(right)
    consistent(run(loss, sq_grad, X3, against="auto"))        # JAX's gradient, not the loss's


def test_an_element_that_could_not_be_checked_is_never_a_bare_pass():
    """sqrt(1 - w) at w a hair below 1: no finite-difference step stays in the domain. A wrong value
    there may not be passed as if it had been checked: the headline says what was not checked."""
    w = np.array([0.5, 1 - 1e-12])
    loss = lambda p: np.sum(np.sqrt(1 - p))  # noqa: E731
    report = run(loss, lambda p: np.array([-0.5 / np.sqrt(1 - p[0]), 123.0]), w, against="numeric")
    headline = str(report).splitlines()[0].lower()
    assert not report.passed or "not checked" in headline, str(report)
    consistent(run(loss, lambda p: np.array([-0.5 / np.sqrt(1 - p[0]), 123.0]), w, against="auto"))


def test_budget_bounds_the_wall_time():
    def slow(p):
        time.sleep(0.01)
        return sq_loss(p)
    w = np.linspace(-1, 1, 300)
    start = time.perf_counter()
    report = run(slow, sq_grad, w, budget=1.0, against="numeric")
    assert time.perf_counter() - start < 3.0
    passes(report)
    start = time.perf_counter()
    bad = run(slow, lambda p: sq_grad(p) * 1.01, w, budget=1.0, against="numeric")
    assert time.perf_counter() - start < 3.0
    if any(p.checked for p in bad.parameters):
        consistent(bad)
    else:  # on a loaded machine the budget may pay projections alone: a verdict that says so
        assert not bad.passed and "random direction(s) only" in str(bad).splitlines()[0], str(bad)
        assert all("fails a projection check" in p.detail for p in bad.failures), str(bad)


@pytest.mark.parametrize("make", [lambda: A.T, lambda: {"W": A, "b": X3}, lambda: W_MIXED],
                         ids=["view", "dict", "mixed scales"])
def test_the_worst_element_carries_exactly_the_largest_relative_error(make):
    params = make()

    def grad(p):
        g = tree_grad(p)
        leaf = g["W"] if isinstance(g, dict) else g
        leaf.reshape(-1)[1] *= 1.5
        return g
    report = run(tree_loss, grad, params)
    consistent(report)
    for p in report.failures:
        assert p.max_rel_error == pytest.approx(float(p.rel_errors[p.worst_index]), rel=1e-12, abs=0)


# ---------------------------------------------------------------------------------------------
# The count of inputs documented in docs/errors.md
# ---------------------------------------------------------------------------------------------

def test_the_documented_count_of_inputs():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    section = text.split("\n## Inputs that were tried\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| input")]
    assert len(rows) >= 40
    assert f"{len(rows)} inputs" in section and "wrong verdicts: 0" in section
