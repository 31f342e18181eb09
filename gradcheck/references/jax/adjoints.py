"""The exact adjoint dL/dv of each named intermediate v of a learner's numpy loss, by JAX.

The loss is the JAX reference's own re-run under jax.numpy (`jax_ref.rebound_loss`: the same
rebound function and device copies of the data). While it runs, gradcheck.capture swaps the
value each recorded intermediate is bound to for `value + delta`, where `delta` is a zero
array of the value's shape; one jax.grad with respect to the parameters and all the deltas
gives the parameters' gradient and every intermediate's adjoint at once: one gradient's
worth of work.

The gradient is compiled with jax.jit, the deltas made inside the compiled program (nothing
to transfer), so the trace hook runs once, while JAX traces the loss; the program is kept per
(rebound loss, intermediates, shapes of the inputs) and reused by later blames of the same
loss. Code that branches on values runs eagerly instead. `start_adjoints` dispatches the
program and returns at once: blame records the learner's backward pass while JAX computes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ...usercode.capture import substituting
from ...objective import Objective
from .reference import ConstantData, float64, jax, jnp, rebound_loss

_CONCRETIZATION = (jax.errors.ConcretizationTypeError, jax.errors.NonConcreteBooleanIndexError,
                   jax.errors.TracerBoolConversionError, jax.errors.TracerIntegerConversionError)
_CACHE: "OrderedDict[Any, _Program]" = OrderedDict()
_CACHE_SIZE = 16


@dataclass
class _Program:
    """The rebound loss with a perturbation point at each intermediate, differentiated."""

    eager: Callable  # (params, arrays) -> one flat array: the value, the grads, the adjoints
    owner: Callable  # the rebound loss, kept alive so its id stays unique while cached
    shapes: tuple    # ((key, shape), ...) in the flat array's order
    hit: set = field(default_factory=set)  # the keys the run bound (filled while JAX traces)
    jitted: Callable | None = None
    constant: ConstantData = field(default_factory=ConstantData)  # where jit needs the data known
    #: where each part lies in the flat array: ([(start, end, shape)] per parameter, [(key, start,
    #: end, shape)] per bound intermediate), and the keys bound when it was worked out
    cuts: tuple = ()
    cuts_for: frozenset | None = None

    def slices(self, leaves: Sequence[Any]) -> tuple:
        """The flat array's cuts for the keys bound now (the leaves' shapes are the program's)."""
        if self.cuts_for != self.hit:
            at, grads = 1, []
            for x in leaves:
                shape = np.shape(x)
                n = math.prod(shape)
                grads.append((at, at + n, shape))
                at += n
            adjoints = []
            for key, shape in self.shapes:
                n = math.prod(shape)
                if key in self.hit:
                    adjoints.append((key, at, at + n, shape))
                at += n
            self.cuts, self.cuts_for = (grads, adjoints), frozenset(self.hit)
        return self.cuts


def _program(loss: Callable, shapes: tuple) -> _Program:
    hit: set = set()
    wanted = dict(shapes)

    def run(params: list, deltas: dict, arrays: list) -> Any:
        def replace(key: tuple, value: Any) -> Any:
            delta = deltas.get(key)
            # Only traced values depend on the parameters: a plain number or numpy array (a clock
            # reading, a constant) has no adjoint, and a delta on it could turn a Python `while`
            # or `if` on it into control flow on a traced value.
            if delta is None or not isinstance(value, (jax.Array, jax.core.Tracer)) \
                    or tuple(jnp.shape(value)) != tuple(delta.shape):
                return None
            hit.add(key)
            return value + delta

        with substituting(replace, content=False):
            return loss(list(params), arrays)

    vg = jax.value_and_grad(run, argnums=(0, 1))

    def at_zero(params: list, arrays: list) -> Any:
        value, (g_params, g_deltas) = vg(params, {k: jnp.zeros(s, dtype=jnp.float64) for k, s in wanted.items()},
                                         arrays)
        # one flat array (the value, the parameters' gradients, then the adjoints in `shapes` order):
        # one transfer and one buffer to free instead of one per part
        parts = [jnp.reshape(value, (1,))] + [jnp.ravel(g) for g in g_params] + [jnp.ravel(g_deltas[k])
                                                                                 for k in wanted]
        return jnp.concatenate(parts).astype(jnp.float64)

    return _Program(eager=at_zero, owner=loss, shapes=shapes, hit=hit, jitted=jax.jit(at_zero))


def _layout(values: Sequence[Any]) -> tuple:
    """Each value's shape and dtype (its type for a Python number): arrays read directly, since
    np.shape and str(dtype) cost microseconds each on every blame."""
    return tuple((v.shape, v.dtype) if isinstance(v, (np.ndarray, jax.Array)) else (np.shape(v), type(v))
                 for v in values)


def _cached(loss: Callable, shapes: dict, params: list, arrays: list) -> _Program:
    ordered = tuple(sorted((k, tuple(s)) for k, s in shapes.items()))
    key = (id(loss), ordered, _layout(params), _layout(arrays))
    program = _CACHE.get(key)
    if program is None or program.owner is not loss:
        program = _CACHE[key] = _program(loss, ordered)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return program


def ready(objective: Objective) -> bool:
    """Whether the adjoints of this loss were computed before (their program is compiled)."""
    loss, _ = rebound_loss(objective)
    return any(program.owner is loss and program.hit for program in _CACHE.values())


def start_adjoints(objective: Objective, leaves: Sequence[np.ndarray], shapes: dict
                   ) -> Callable[[], tuple[float, list, dict]]:
    """The JAX pass, dispatched: calling the result waits for it and gives (loss value,
    dL/dparameter per leaf, {key: dL/dintermediate}) under JAX, in float64. JAX computes while
    the caller goes on (its CPU computations run asynchronously once traced and compiled);
    tracing and compiling (the first time), or a loss that must run eagerly, happen here.

    `shapes` maps binding keys (gradcheck.capture.binding_key) of the numpy run to their value's
    shape; a key the JAX run never binds, or binds with another shape, is left out of the result.
    """
    with float64():
        loss, arrays = rebound_loss(objective)
        params = [np.asarray(x, dtype=np.float64) for x in leaves]  # jit transfers them itself
        program = _cached(loss, shapes, params, arrays)
        result: Any = None
        if program.jitted is not None:
            try:
                result = program.jitted(params, arrays)
            except _CONCRETIZATION:  # Python control flow on values: run eagerly from now on
                program.jitted = None
        if program.jitted is None:
            result = program.constant.run(program.eager, params, arrays, tracing=program.hit.clear)
            if result is None:
                program.hit.clear()
                result = program.eager(params, arrays)

    def collect() -> tuple[float, list, dict]:
        """(value, grads, adjoints) as views of the one array transferred."""
        flat = np.asarray(result, dtype=np.float64)
        grads, adjoints = program.slices(leaves)
        return (float(flat[0]), [flat[a:b].reshape(shape) for a, b, shape in grads],
                {key: flat[a:b].reshape(shape) for key, a, b, shape in adjoints})
    return collect
