"""Trusted gradients, as peers: finite differences (numeric), JAX autodiff (jax), SymPy (sympy).

Every reference follows one protocol, `run(case, selection, allowance) -> ReferenceGradient`:
`case` is the prepared case (gradcheck.case.Prepared), `selection[k]` an int array of flat
indices of leaf k to compute, `allowance` the share of the budget it may spend
(gradcheck.plan.Allowance). `RUNNERS` is the registry; `run` calls one and turns a reference
that cannot run into a status. jax and sympy are imported only by their own packages, and only
when those run.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np

    from ..case import Prepared
    from ..model import ReferenceGradient, ReferenceStatus
    from ..plan import Allowance

#: Every reference name, in the order they run and are reported; triangulation prefers the
#: later ones where they disagree (SymPy is exact, JAX exact up to round-off, differences estimate).
REFERENCE_NAMES = ("numeric", "jax", "sympy")

Runner = Callable[["Prepared", "Sequence[np.ndarray]", "Allowance"], "ReferenceGradient"]


def _lazy(module: str) -> Runner:
    def run(case: Prepared, selection: Sequence[np.ndarray], allowance: Allowance) -> ReferenceGradient:
        reference: Runner = importlib.import_module(module, __name__).run
        return reference(case, selection, allowance)

    run.__qualname__ = run.__name__ = f"run_{module.strip('.')}"
    return run


#: The registry: each reference's runner, imported when it first runs.
RUNNERS: dict[str, Runner] = {name: _lazy(f".{name}") for name in REFERENCE_NAMES}


def run(name: str, case: Prepared, selection: Sequence[np.ndarray], allowance: Allowance, *,
        explicit: bool = False) -> tuple[ReferenceGradient | None, ReferenceStatus]:
    """Run one reference; a failure is an error if it was asked for by name (or is the finite
    differences, which difference the user's own code), else a status saying why it did not run."""
    from ..errors import InvalidCase, NondeterministicLoss, ReferenceUnavailable, UserCodeError
    from ..model import ReferenceStatus

    start = time.perf_counter()
    try:
        ref = RUNNERS[name](case, selection, allowance)
    except ImportError as exc:
        reason = (f"{exc}" if isinstance(exc, ReferenceUnavailable)
                  else f"{name} is not installed ({exc}); install it with: pip install {name}")
        if explicit:
            raise ReferenceUnavailable(f"the {name} reference cannot run: {reason}") from None
        return None, ReferenceStatus(name=name, ran=False, reason=reason, seconds=time.perf_counter() - start)
    except (UserCodeError, InvalidCase, NondeterministicLoss):
        raise
    except Exception as exc:  # noqa: BLE001 - an exact reference tripping over the code is not fatal
        if explicit or name == "numeric":
            raise ReferenceUnavailable(f"the {name} reference failed on this code: {type(exc).__name__}: {exc}") from exc
        reason = f"{type(exc).__name__}: {exc}"
        return None, ReferenceStatus(name=name, ran=False, reason=reason, seconds=time.perf_counter() - start)
    status = ReferenceStatus(name=name, ran=True, method=ref.method, seconds=ref.seconds,
                             elements=int(sum(int(c.sum()) for c in ref.checked)))
    return ref, status


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
