"""The exact adjoint dL/dv of each named intermediate v of a learner's numpy loss, by JAX.

The loss is re-run under jax.numpy (gradcheck.retrace, as the JAX reference does). While it
runs, gradcheck.capture swaps the value each recorded intermediate is bound to for
`value + delta`, where `delta` is a zero array of the value's shape; one jax.grad with
respect to the parameters and all the deltas gives the parameters' gradient and every
intermediate's adjoint at once: one gradient's worth of work.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..capture import substituting
from ..retrace import rebind
from ..tree import unflatten
from .jax_ref import float64, namespace


def _index_range(*args: int) -> np.ndarray:
    """range(...) as an index array: JAX refuses Python sequences as indices."""
    return np.arange(*args)


def intermediate_adjoints(loss: Any, treedef: Any, leaves: Sequence[np.ndarray], args: tuple, kwargs: dict,
                          shapes: dict) -> tuple[float, list, dict]:
    """(loss value, dL/dparameter per leaf, {key: dL/dintermediate}) under JAX, in float64.

    `shapes` maps binding keys (gradcheck.capture.binding_key) of the numpy run to their value's
    shape; a key the JAX run never binds, or binds with another shape, is left out of the result.
    """
    fn, (args, kwargs) = rebind(loss, namespace(), builtins={"range": _index_range}, data=(args, kwargs),
                                functional_writes=True)
    hit: set = set()

    def run(params: list, deltas: dict) -> Any:
        def replace(key: tuple, value: Any) -> Any:
            delta = deltas.get(key)
            if delta is None or tuple(jnp.shape(value)) != tuple(delta.shape):
                return None
            hit.add(key)
            return value + delta

        with substituting(replace, content=False):
            value = fn(unflatten(treedef, list(params)), *args, **kwargs)
        return jnp.real(jnp.reshape(jnp.asarray(value), ()))

    with float64():
        params = [jnp.asarray(np.asarray(x, dtype=np.float64)) for x in leaves]
        deltas = {k: jnp.zeros(s, dtype=jnp.float64) for k, s in shapes.items()}
        # Eager, not jitted: a new jit program per check costs more than the few operations it runs.
        value, (g_params, g_deltas) = jax.value_and_grad(run, argnums=(0, 1))(params, deltas)
        out = {k: np.asarray(g, dtype=np.float64) for k, g in g_deltas.items() if k in hit}
        return float(value), [np.asarray(g, dtype=np.float64).reshape(np.shape(x)) for g, x in zip(g_params, leaves)], out
