"""Layouts and scales never change a verdict (Hypothesis).

Random smooth functions over random pytrees (dicts, lists, tuples and namedtuples of arrays and
Python floats),
each array in a random memory layout (C or Fortran order, a transposed view, a strided view, a
reversed view, read-only, `np.broadcast_to`) and with a random scale per element (1e-6 to 1e4,
mixed within one leaf):

(e) the exact gradient always passes;
(f) one corrupted element, by more than the documented bound (`atol + rtol * |ref|`, atol being
    1e-10 of the leaf's largest entry and at least 100 eps of the largest over all leaves; here by
    a factor of 1e3 to 1e8 over it), always fails its parameter alone, with the corrupted element
    as the worst index, in the parameter's own shape.

The normal suite runs a few examples per property; `GRADCHECK_SLOW=1` (the profile registered in
tests/conftest.py) runs 500 or more.
"""

from __future__ import annotations

import collections
import warnings
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck
from gradcheck.tree import flatten

from test_adversarial import fingerprint

SLOW = settings.default.max_examples >= 500
LAYOUT = settings(max_examples=settings.default.max_examples if SLOW else 12, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: float64 defaults (gradcheck.tolerances): rtol; atol as a fraction of the leaf's largest entry, and at
#: least ROUNDOFF eps of the largest entry over all leaves
RTOL, ATOL_FRACTION, ROUNDOFF_EPS = 1e-8, 1e-10, 100 * np.finfo(np.float64).eps

LAYOUTS = ("C", "F", "transposed", "strided", "reversed", "readonly", "broadcast")


def _realise(values: np.ndarray, layout: str) -> np.ndarray:
    """`values` (C order) as an array of the same logical content in the given memory layout."""
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "transposed":
        return np.ascontiguousarray(values.T).T
    if layout == "strided":
        big = np.zeros(values.shape[:-1] + (2 * values.shape[-1],)) if values.ndim else None
        if big is None:
            return values.copy()
        big[..., ::2] = values
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(values[::-1])[::-1] if values.ndim else values.copy()
    if layout == "readonly":
        out = values.copy()
        out.flags.writeable = False
        return out
    if layout == "broadcast":
        return np.broadcast_to(values[:1], values.shape) if values.ndim else values.copy()
    return values.copy()


@st.composite
def leaf_specs(draw, mixed: bool) -> dict:
    """One leaf: its value as the caller passes it, and the function's coefficients per element.

    `mixed`: every element has its own scale; else one scale per leaf (leaves still differ).
    """
    kind = draw(st.sampled_from(["array", "array", "array", "float"]))
    shape = () if kind == "float" else tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    layout = draw(st.sampled_from(LAYOUTS)) if shape else "C"
    scales = 10.0 ** rng.uniform(-6, 4, size=shape if mixed else ()) * np.ones(shape)
    u = rng.uniform(-2, 2, size=shape)
    if layout == "broadcast":
        u = np.broadcast_to(u[:1], shape).copy()
        scales = np.broadcast_to(scales[:1], shape).copy()
    coeffs = {"s": scales, "a": rng.uniform(0.5, 2, size=shape), "phi": rng.uniform(0, 6.3, size=shape),
              "b": rng.uniform(0.1, 1, size=shape), "w": rng.uniform(-1, 1, size=shape)}
    x = u * scales
    value: Any = float(x) if kind == "float" else _realise(x, layout)
    return {"value": value, "layout": layout, **coeffs}


def _tree_of(items: list, draw, depth: int = 0) -> Any:
    """The leaves, in this order, in a random nesting of dicts, lists and tuples."""
    if len(items) == 1 and (depth > 0 or draw(st.booleans())):
        return items[0]
    kind = draw(st.sampled_from(["dict", "list", "tuple", "namedtuple"]))
    if len(items) > 1 and depth < 2 and draw(st.booleans()):
        cut = draw(st.integers(1, len(items) - 1))
        children = [_tree_of(items[:cut], draw, depth + 1), _tree_of(items[cut:], draw, depth + 1)]
    else:
        children = list(items)
    if kind == "dict":
        return {f"k{i}": child for i, child in enumerate(children)}
    if kind == "namedtuple":
        return collections.namedtuple(f"Layer{len(children)}", [f"p{i}" for i in range(len(children))])(*children)
    return children if kind == "list" else tuple(children)


@st.composite
def problems(draw, mixed: bool) -> tuple:
    specs = draw(st.lists(leaf_specs(mixed), min_size=1, max_size=4))
    return _tree_of([s["value"] for s in specs], draw), specs


def _leaves(tree: Any) -> list:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _leaves(v)]
    return [tree]


def make_loss(specs: list):
    def loss(p):
        total = 0.0
        for x, c in zip(_leaves(p), specs):
            u = np.asarray(x) / c["s"]
            total = (total + np.sum(c["a"] * np.sin(u + c["phi"]) + 0.5 * c["b"] * u ** 2)
                     + 0.1 * np.sum(c["w"] * u) ** 2)
        return total
    return loss


def true_gradient(params: Any, specs: list) -> list:
    out = []
    for x, c in zip(_leaves(params), specs):
        u = np.asarray(x, dtype=np.float64) / c["s"]
        g = (c["a"] * np.cos(u + c["phi"]) + c["b"] * u + 0.2 * np.sum(c["w"] * u) * c["w"]) / c["s"]
        out.append(float(g) if isinstance(x, float) else np.asarray(g))
    return out


def _rebuild(tree: Any, leaves: list) -> Any:
    it = iter(leaves)

    def build(t: Any) -> Any:
        if isinstance(t, dict):
            return {k: build(v) for k, v in t.items()}
        if isinstance(t, (list, tuple)):
            items = [build(v) for v in t]
            return items if isinstance(t, list) else tuple(items)
        return next(it)
    return build(tree)


def make_grad(specs: list, corrupt: tuple | None = None):
    def grad(p):
        g = true_gradient(p, specs)
        if corrupt is not None:
            k, flat, delta = corrupt
            if isinstance(g[k], float):
                g[k] += delta
            else:
                g[k] = g[k].copy()
                g[k].reshape(-1)[flat] += delta
        return _rebuild(p, g)
    return grad


def quiet_check(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gradcheck.check(*a, **kw)


AGAINST = st.sampled_from(["numeric", "numeric", "auto"])


def _exact_passes(problem, against) -> None:
    params, specs = problem
    before = fingerprint(params)
    report = quiet_check(make_loss(specs), make_grad(specs), params, against=against)
    assert report.passed, str(report)
    assert fingerprint(params) == before


def _corruption_found(problem, against, data) -> None:
    params, specs = problem
    names, leaves, _ = flatten(params)
    candidates = [k for k, x in enumerate(leaves) if np.size(x) > 0]
    k = data.draw(st.sampled_from(candidates), label="leaf")
    shape = np.shape(leaves[k])
    flat = data.draw(st.integers(0, int(np.prod(shape)) - 1), label="flat index")
    every = [np.abs(np.asarray(t, dtype=np.float64)).reshape(-1) for t in true_gradient(params, specs)]
    overall = max(float(t.max()) for t in every if t.size)
    g = np.asarray(true_gradient(params, specs)[k], dtype=np.float64).reshape(-1)
    atol = max(ATOL_FRACTION * float(np.abs(g).max()), ROUNDOFF_EPS * overall)
    bound = atol + RTOL * abs(float(g[flat]))
    factor = 10.0 ** data.draw(st.floats(3, 8), label="log10 of the error over the bound")
    delta = data.draw(st.sampled_from([-1.0, 1.0]), label="sign") * factor * bound
    before = fingerprint(params)
    report = quiet_check(make_loss(specs), make_grad(specs, (k, flat, delta)), params, against=against)
    assert [p.name for p in report.failures] == [names[k]], str(report)
    where = tuple(int(i) for i in np.unravel_index(flat, shape))
    assert report[names[k]].worst_index == where, str(report)
    assert fingerprint(params) == before


@LAYOUT
@given(problem=problems(mixed=False), against=AGAINST)
def test_e_exact_gradient_always_passes_in_any_layout(problem, against):
    _exact_passes(problem, against)


@LAYOUT
@given(problem=problems(mixed=False), against=AGAINST, data=st.data())
def test_f_one_corrupted_element_is_found_at_its_index_in_any_layout(problem, against, data):
    _corruption_found(problem, against, data)


@LAYOUT
@given(problem=problems(mixed=True), against=AGAINST)
def test_e_exact_gradient_always_passes_with_mixed_scales_in_a_leaf(problem, against):
    _exact_passes(problem, against)


@LAYOUT
@given(problem=problems(mixed=True), against=AGAINST, data=st.data())
def test_f_one_corrupted_element_is_found_with_mixed_scales_in_a_leaf(problem, against, data):
    _corruption_found(problem, against, data)
