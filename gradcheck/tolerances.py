"""The one source of the check's tolerances: the defaults by dtype and the atol actually used.

An element passes when |yours - ref| <= atol + rtol |ref| + ERROR_BAR err; compare.py applies
them; the plan's disagreeing elements, localisation's projections, the validation of an exact
gradient and explain's verdict on one element take theirs from the same defaults.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Default tolerances by the dtype of the user's values: (rtol, atol as a fraction of the
#: leaf's largest reference entry). float64 catches a relative error of 1e-7; float32 and
#: float16 leave room for their own round-off (about 1e2-1e3 eps of accumulated error).
TOLERANCES = {
    "float64": (1e-8, 1e-10),
    "float32": (2e-4, 1e-5),
    "float16": (2e-2, 2e-3),
}
#: Absolute floor of atol: differences below it are at the bottom of float64's range.
TINY = 1e-290
#: The reference error bar is widened by this factor before it excuses a difference.
ERROR_BAR = 3.0
#: An element whose reference error bar (times ERROR_BAR) exceeds this fraction of the reference
#: (plus atol) cannot be judged: it is reported as not checked, never as a pass.
RESOLVE = 0.1
#: atol is at least ROUNDOFF eps(dtype) times the largest reference entry over all leaves: the
#: user's own round-off (1 - tanh^2 of a saturated unit cancels) is relative to the gradient's
#: overall size, not to a leaf that is tiny throughout.
ROUNDOFF = 100.0


def default_tolerances(dtype: np.dtype | str) -> tuple[float, float]:
    """(rtol, relative atol) for values computed in `dtype` (wider floats and integers: float64's)."""
    return TOLERANCES.get(np.dtype(dtype).name, TOLERANCES["float64"])


class Reference(Protocol):
    """What the tolerance of one leaf reads of its combined reference."""

    @property
    def value(self) -> np.ndarray: ...

    @property
    def checked(self) -> np.ndarray: ...

    @property
    def scale(self) -> float: ...


def relative_atol(atol_rel: float, values: np.ndarray) -> float:
    """atol as a fraction of the largest entry of `values` (0 when empty or not finite)."""
    return atol_rel * (float(np.abs(values).max()) if values.size and np.isfinite(values).all() else 0.0)


def tolerances_for(ref: Reference, dtype: np.dtype | str, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """The (rtol, absolute atol) to use for one leaf."""
    d_rtol, d_atol = default_tolerances(dtype)
    rtol = d_rtol if rtol is None else float(rtol)
    if atol is None:
        atol = relative_atol(d_atol, ref.value[ref.checked])
        if np.isfinite(ref.scale):
            dt = np.dtype(dtype)
            eps = float(np.finfo(dt if dt.kind == "f" else np.float64).eps)
            atol = max(atol, ROUNDOFF * eps * ref.scale)
    return rtol, max(float(atol), TINY)
