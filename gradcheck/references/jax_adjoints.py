"""The exact adjoint dL/dv of each named intermediate v of a learner's numpy loss, by JAX.

The loss is re-run under jax.numpy (gradcheck.retrace, as the JAX reference does). While it
runs, gradcheck.capture swaps the value each recorded intermediate is bound to for
`value + delta`, where `delta` is a zero array of the value's shape; one jax.grad with
respect to the parameters and all the deltas gives the parameters' gradient and every
intermediate's adjoint at once: one gradient's worth of work.

The gradient is compiled with jax.jit, so the trace hook runs once, while JAX traces the
loss; the program is kept per (loss, data layout, intermediates) and reused by later blames
of the same loss. Code that branches on values runs eagerly instead.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .jax_ref import jax, jnp  # jax_ref imports jax leaving numpy's global random state as it was

from ..capture import substituting
from ..retrace import rebind_guarded
from ..tree import unflatten
from .jax_ref import _callable_key, _fill, _freeze, _split, float64, namespace

_CONCRETIZATION = (jax.errors.ConcretizationTypeError, jax.errors.NonConcreteBooleanIndexError,
                   jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)
_CACHE: "OrderedDict[Any, _Program]" = OrderedDict()
_CACHE_SIZE = 16


def _index_range(*args: int) -> np.ndarray:
    """range(...) as an index array: JAX refuses Python sequences as indices."""
    return np.arange(*args)


@dataclass
class _Program:
    """The rebound loss with its perturbation points, differentiated (jitted and eager)."""

    eager: Callable
    unchanged: Callable[[], bool]
    owner: Any  # the learner's loss, kept alive so its id stays unique while cached
    hit: set = field(default_factory=set)  # the keys the run bound (filled while JAX traces)
    jitted: Callable | None = None


def _program(loss: Any, treedef: Any, template: Any) -> _Program:
    fn, unchanged, template = rebind_guarded(loss, namespace(), builtins={"range": _index_range}, data=template,
                                             functional_writes=True)
    hit: set = set()

    def run(params: list, deltas: dict, arrays: list) -> Any:
        def replace(key: tuple, value: Any) -> Any:
            delta = deltas.get(key)
            if delta is None or tuple(jnp.shape(value)) != tuple(delta.shape):
                return None
            hit.add(key)
            return value + delta

        args, kwargs = _fill(template, arrays)
        with substituting(replace, content=False):
            value = fn(unflatten(treedef, list(params)), *args, **kwargs)
        return jnp.real(jnp.reshape(jnp.asarray(value), ()))

    vg = jax.value_and_grad(run, argnums=(0, 1))
    return _Program(eager=vg, unchanged=unchanged, owner=loss, hit=hit, jitted=jax.jit(vg))


def _cached(loss: Any, treedef: Any, template: Any, shapes: dict) -> _Program:
    try:
        key = (_callable_key(loss), treedef, _freeze(template), tuple(sorted((k, tuple(s)) for k, s in shapes.items())))
    except TypeError:
        key = None  # unhashable static data: a program for this call only
    program = _CACHE.get(key) if key is not None else None
    if program is None or not program.unchanged():
        program = _program(loss, treedef, template)
        if key is not None:
            _CACHE[key] = program
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return program


def intermediate_adjoints(loss: Any, treedef: Any, leaves: Sequence[np.ndarray], args: tuple, kwargs: dict,
                          shapes: dict) -> tuple[float, list, dict]:
    """(loss value, dL/dparameter per leaf, {key: dL/dintermediate}) under JAX, in float64.

    `shapes` maps binding keys (gradcheck.capture.binding_key) of the numpy run to their value's
    shape; a key the JAX run never binds, or binds with another shape, is left out of the result.
    """
    with float64():
        arrays: list = []
        template = (_split(args, arrays), _split(kwargs, arrays))
        program = _cached(loss, treedef, template, shapes)
        params = [jnp.asarray(np.asarray(x, dtype=np.float64)) for x in leaves]
        deltas = {k: jnp.zeros(s, dtype=jnp.float64) for k, s in shapes.items()}
        if program.jitted is not None:
            try:
                value, (g_params, g_deltas) = program.jitted(params, deltas, arrays)
            except _CONCRETIZATION:  # Python control flow on values: run eagerly from now on
                program.jitted = None
        if program.jitted is None:
            program.hit.clear()
            value, (g_params, g_deltas) = program.eager(params, deltas, arrays)
        out = {k: np.asarray(g, dtype=np.float64) for k, g in g_deltas.items() if k in program.hit}
        grads = [np.asarray(g, dtype=np.float64).reshape(np.shape(x)) for g, x in zip(g_params, leaves)]
        return float(value), grads, out
