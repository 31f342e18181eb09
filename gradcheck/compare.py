"""Per-element comparison of the user's gradient with the combined reference.

An element passes when |yours - ref| <= atol + rtol |ref| + 3 err, where err is the
reference's own error estimate. The defaults depend on the dtype the user's gradient was
computed in; atol is relative to the largest reference entry of the same leaf (and at least
ROUNDOFF eps of the largest over all leaves), so tiny gradients next to large ones (saturated
units, exact zeros) do not cause false failures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tolerances import ERROR_BAR, RESOLVE, tolerances_for

@dataclass(frozen=True)
class Combined:
    """The references merged for one leaf: best value, error bar, kink interval."""

    value: np.ndarray     # best reference value, NaN where unchecked
    error: np.ndarray     # absolute error estimate
    checked: np.ndarray   # bool
    kink: np.ndarray      # bool: the references disagree or see a one-sided gap here
    low: np.ndarray       # kink interval (one-sided derivatives and every reference value)
    high: np.ndarray
    source: str           # name of the reference the value mostly comes from
    scale: float = 0.0    # largest reference entry over ALL leaves (the gradient's overall size)
    lost: np.ndarray | None = None  # bool: meant to be checked, but no reference could estimate it


@dataclass(frozen=True)
class Comparison:
    """Element-wise outcome for one leaf."""

    yours: np.ndarray
    ref: Combined
    tol: np.ndarray          # allowed absolute difference per element
    ok: np.ndarray           # bool per element (True where unchecked)
    rel_error: np.ndarray    # |y - r| / max(|y|, |r|, floor) (at a kink: the part outside the interval), 0 where unchecked
    rtol: float
    atol: float              # absolute atol actually used
    unresolved: np.ndarray | None = None  # bool: passes only because the reference's error bar is wide

    @property
    def unchecked(self) -> np.ndarray:
        """Elements meant to be checked that were not: no estimate, or an error bar too wide to judge."""
        out = np.zeros(self.yours.shape, bool)
        for m in (self.ref.lost, self.unresolved):
            if m is not None and m.shape == out.shape:
                out |= m
        return out

    @property
    def mask(self) -> np.ndarray:
        """Elements that count: checked and not at a kink."""
        return self.ref.checked & ~self.ref.kink

    def close(self, a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> bool:
        """All counted elements of a are within tolerance of b."""
        m = self.mask
        if not m.any():
            return False
        return bool(np.all(np.abs(a[m] - b[m]) <= scale * self.tol[m]))


def compare_leaf(yours: np.ndarray, ref: Combined, dtype, rtol: float | None = None,
                 atol: float | None = None, slack: np.ndarray | None = None) -> Comparison:
    """Compare one leaf element-wise (shapes must already agree); `slack` is the user's own round-off."""
    rtol, atol = tolerances_for(ref, dtype, rtol, atol)
    y = np.asarray(yours, dtype=np.float64)
    r = np.where(ref.checked, ref.value, 0.0)
    tol = atol + rtol * np.abs(r) + ERROR_BAR * np.where(ref.checked, ref.error, 0.0)
    if slack is not None and np.shape(slack) == y.shape:
        tol = tol + 2 * slack
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(y - r)
        smooth_ok = diff <= tol
        in_interval = (y >= ref.low - tol) & (y <= ref.high + tol)
    ok = np.where(ref.checked, np.where(ref.kink, in_interval, smooth_ok), True) & (np.isfinite(y) | ~ref.checked)
    floor = max(atol, 1e-300)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = diff / np.maximum(np.maximum(np.abs(y), np.abs(r)), floor)
        # At a kink the distance that counts is the one outside the interval of valid slopes.
        outside = np.maximum(ref.low - y, y - ref.high)
        rel_kink = np.maximum(outside, 0.0) / np.maximum(np.maximum(np.abs(y), np.abs(r)), floor)
    rel = np.where(ref.kink, np.nan_to_num(rel_kink, nan=np.inf), np.nan_to_num(rel, nan=np.inf))
    rel = np.where(ref.checked, rel, 0.0)
    rel = np.where(np.isfinite(y) | ~ref.checked, rel, np.inf)
    # A pass that rests on an error bar wider than RESOLVE of the reference proves nothing.
    with np.errstate(invalid="ignore"):
        unresolved = ok & ref.checked & ~ref.kink & (ERROR_BAR * ref.error > RESOLVE * np.abs(r) + atol)
    return Comparison(yours=y, ref=ref, tol=tol, ok=ok, rel_error=rel, rtol=rtol, atol=atol, unresolved=unresolved)


def worst_index(cmp: Comparison) -> tuple | None:
    """Index (in the leaf's shape) of the largest relative error among the failing elements
    (among all checked ones when none fails): the element `max_rel_error` reports."""
    if cmp.yours.size == 0 or not cmp.ref.checked.any():
        return None
    score = np.where(cmp.ref.checked & (cmp.ok.all() | ~cmp.ok), cmp.rel_error, -1.0).reshape(-1)
    # Ties (every element 100% off, as for a zero gradient) go to the largest difference.
    top = score >= score.max() * (1 - 1e-9)
    r = np.where(cmp.ref.checked, cmp.ref.value, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.nan_to_num(np.abs(cmp.yours - r), nan=np.inf).reshape(-1)
    flat = int(np.argmax(np.where(top, diff, -1.0)))
    return tuple(int(i) for i in np.unravel_index(flat, cmp.yours.shape))
