"""Merge the references' gradients for one leaf: agree, pick the most accurate, or call a kink.

An element is a kink only on evidence that the loss is not smooth there: finite differences
whose one-sided slopes differ at shrinking steps, or SymPy finding a non-smooth operation at
a tie (ReLU at 0, a max tie, abs at 0). There the user is held only to the interval spanned
by the one-sided derivatives and the references' values. Where references merely disagree,
the most precise one stands (see gradcheck.consensus for how an exact reference earns trust).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .compare import Combined
from .model import ReferenceGradient
from .references import REFERENCE_NAMES

#: Relative slack when two references are compared with each other.
AGREE_RTOL = 1e-9


def _rank(ref: ReferenceGradient) -> int:
    return REFERENCE_NAMES.index(ref.name) if ref.name in REFERENCE_NAMES else len(REFERENCE_NAMES)


def disagreement(a: ReferenceGradient, b: ReferenceGradient, k: int) -> np.ndarray:
    """Elements of leaf k where both references ran and differ beyond their error bars."""
    both = a.checked[k] & b.checked[k]
    va, vb = np.where(both, a.values[k], 0.0), np.where(both, b.values[k], 0.0)
    ea, eb = np.where(both, a.errors[k], 0.0), np.where(both, b.errors[k], 0.0)
    scale = np.maximum(np.abs(va), np.abs(vb))
    with np.errstate(invalid="ignore"):
        return both & (np.abs(va - vb) > 3 * (ea + eb) + AGREE_RTOL * scale)


def combine(refs: Sequence[ReferenceGradient], k: int, shape: tuple) -> tuple[Combined, list[str]]:
    """The combined reference for leaf k, and warnings about references that look unreliable."""
    refs = sorted(refs, key=_rank)
    warnings: list[str] = []
    numeric = next((r for r in refs if r.name == "numeric"), None)
    kink = np.zeros(shape, bool)
    for ref in refs:  # finite differences see a one-sided gap; SymPy sees a tie at the point
        if ref.kinks is not None:
            kink |= ref.kinks[k] & ref.checked[k]
    if numeric is not None and numeric.steps is not None:
        warnings += _not_finite_warning(numeric, k)
    trusted = list(refs)
    for a in refs:
        for b in refs:
            if _rank(a) >= _rank(b):
                continue
            bad = disagreement(a, b, k)
            if numeric is not None and b is numeric and bad.sum() > max(2, 0.1 * (a.checked[k] & b.checked[k]).sum()) \
                    and not (bad & kink).all():
                # Too many smooth disagreements is not a kink: the exact reference mis-ran.
                warnings.append(
                    f"the {a.name} reference disagrees with finite differences at {int(bad.sum())} elements; "
                    f"it was set aside for this parameter (is the loss using state {a.name} cannot see?)"
                )
                if a in trusted:
                    trusted.remove(a)
            # Otherwise the more precise reference (ranked first) stands: a disagreement alone is
            # no evidence of a kink (a step too long for the element disagrees too).
    value = np.full(shape, np.nan)
    error = np.full(shape, np.inf)
    checked = np.zeros(shape, bool)
    low = np.full(shape, np.inf)
    high = np.full(shape, -np.inf)
    source = ""
    for ref in trusted:
        m = ref.checked[k] & ~checked
        if m.any() and not source:
            source = ref.name
        value = np.where(m, ref.values[k], value)
        error = np.where(m, ref.errors[k], error)
        checked |= ref.checked[k]
        for bound in (ref.values[k], *(b[k] for b in (ref.lower, ref.upper) if b is not None)):
            ok = ref.checked[k] & np.isfinite(bound)
            low = np.where(ok, np.minimum(low, bound), low)
            high = np.where(ok, np.maximum(high, bound), high)
    lost = None
    if numeric is not None and numeric.steps is not None:
        lost = np.isfinite(numeric.steps[k]) & ~numeric.checked[k] & ~checked
    return Combined(value=value, error=error, checked=checked, kink=kink & checked, low=low, high=high,
                    source=source, scale=_overall_scale(trusted), lost=lost), warnings


def _overall_scale(refs: Sequence[ReferenceGradient]) -> float:
    """The largest finite, checked reference entry over every leaf."""
    biggest = 0.0
    for ref in refs:
        for values, checked in zip(ref.values, ref.checked):
            v = np.abs(values[checked & np.isfinite(values)])
            if v.size:
                biggest = max(biggest, float(v.max()))
    return biggest


def _not_finite_warning(numeric: ReferenceGradient, k: int) -> list[str]:
    """A warning for elements finite differences visited (a step is set) but could not estimate."""
    lost = np.isfinite(numeric.steps[k]) & ~numeric.checked[k]
    if not lost.any():
        return []
    where = [tuple(int(i) for i in ix) for ix in np.argwhere(lost)]
    shown = ", ".join("[" + ", ".join(map(str, ix)) + "]" for ix in where[:5]) + (" ..." if len(where) > 5 else "")
    return [f"{len(where)} element(s) were NOT checked ({shown}): the loss is NaN or inf at points a finite-"
            f"difference step away (log or sqrt of a value the step pushed to 0 or below, or overflow); "
            f"move the parameters away from the edge of the loss's domain, e.g. clip before log"]
