"""Trusted gradients: finite differences (numeric), JAX autodiff (jax), SymPy (sympy).

Each reference module exposes a function `(objective, selection, ...) -> ReferenceGradient`;
`selection[k]` is an int array of flat indices of leaf k to compute. jax and sympy are
imported only by their own modules, and only when those run.
"""

from __future__ import annotations

#: Every reference name, most accurate first (the order triangulation prefers).
REFERENCE_NAMES = ("sympy", "jax", "numeric")


def unavailable(reference: str, explanation: str, exc: BaseException):
    """The ReferenceUnavailable a reference raises when the user's code cannot run under it."""
    from ..errors import ReferenceUnavailable
    from ..retrace import user_location

    error = ReferenceUnavailable(f"the {reference} reference cannot run this loss: {explanation}")
    error.where = user_location(exc)  # type: ignore[attr-defined]
    return error
