"""Trusted gradients: finite differences (numeric), JAX autodiff (jax), SymPy (sympy).

Each reference module exposes a function `(objective, selection, ...) -> ReferenceGradient`;
`selection[k]` is an int array of flat indices of leaf k to compute. jax and sympy are
imported only by their own modules, and only when those run.
"""

from __future__ import annotations

from typing import Callable

#: Every reference name, most accurate first (the order triangulation prefers).
REFERENCE_NAMES = ("sympy", "jax", "numeric")


def unavailable(reference: str, exc: BaseException, explain: Callable[[BaseException, str, str], str | None]):
    """The ReferenceUnavailable a reference raises when the user's code cannot run under it.

    `explain(exc, text, at)` names what `reference` could not do (None: nothing it knows), from
    the error's first line and " at file:line (source)" of the user's line; an indexing error and
    anything else get the words every reference shares.
    """
    from ..errors import ReferenceUnavailable
    from ..usercode.frames import user_location
    from ..usercode.rebind import INDEX_ERRORS, INDEX_REWRITE

    where = user_location(exc)
    at = f" at {where}" if where else ""
    text = str(exc).split("\n")[0]
    explanation = explain(exc, text, at)
    if explanation is None and isinstance(exc, (IndexError, TypeError)) and any(e in text for e in INDEX_ERRORS):
        explanation = f"{INDEX_REWRITE}{at}: {text}"
    if explanation is None:
        explanation = f"the loss raised {type(exc).__name__} under {reference}{at}: {text}"
    error = ReferenceUnavailable(f"the {reference} reference cannot run this loss: {explanation}")
    error.where = where  # type: ignore[attr-defined]
    return error
