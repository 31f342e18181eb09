"""Finite-difference reference: central differences with Richardson extrapolation, and
complex-step differentiation where the loss is complex-safe.

For an element x_i with step h, the central difference D(h) = (f(x+h) - f(x-h)) / 2h has
error c2 h^2 + c4 h^4 + ... ; combining D(h), D(h/2), D(h/4) (Richardson) cancels the h^2
and h^4 terms. The gap between the last two extrapolation levels, plus a round-off term
eps |f| / h, is the error estimate. The same evaluations give one-sided differences, whose
gap tells a kink (it stays put as h shrinks) from curvature (it shrinks with h).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Sequence

import numpy as np

from ..errors import UserCodeError
from ..model import ReferenceGradient
from ..objective import Objective

EPS = np.finfo(np.float64).eps
#: Base relative step: large enough that round-off stays ~1e-13 |f|, small enough that
#: the h^6 truncation left after two Richardson levels is negligible.
BASE_STEP = 1e-3
#: Complex step: far below any truncation error, and no subtraction, so no round-off.
COMPLEX_STEP = 1e-30


def element_steps(x: np.ndarray, base: float = BASE_STEP) -> np.ndarray:
    """Per-element step scaled to the element's magnitude and its leaf's typical magnitude."""
    flat = np.abs(x.reshape(-1))
    typical = float(np.sqrt(np.mean(flat**2))) if flat.size else 0.0
    scale = np.maximum(flat, typical)
    return base * np.where(scale > 0, scale, 1.0)


def _eval(objective: Objective, leaves: list, k: int, i: int, value: float, name: str) -> float:
    try:
        with np.errstate(all="ignore"):  # NaN/inf a step away is handled (and reported) by the caller
            return objective(objective.perturb(leaves, k, i, value))
    except UserCodeError as exc:
        raise UserCodeError(
            f"{exc.args[0]} (only at a perturbed point: {name} set to {value!r}). A loss that fails "
            f"near the parameters cannot be differentiated there; check for log(0), sqrt of a "
            f"negative, or a branch that raises.",
            where=exc.where, user_traceback=exc.user_traceback,
        ) from exc.__cause__


#: The steps of one Richardson estimate, as fractions of h.
STEP_FRACTIONS = (1.0, 0.5, 0.25)


def richardson(objective: Objective, leaves: list, k: int, i: int, h: float, f0: float, name: str,
               noise: float = 0.0):
    """(estimate, error, left, right, kink) for element i of leaf k, 6 loss calls.

    `noise` is the standard deviation of the loss's round-off near the point (see loss_noise).
    """
    eps = max(EPS, getattr(objective, "eps", EPS))  # round-off of the precision the loss computes in
    x = float(leaves[k].reshape(-1)[i])
    fp = [_eval(objective, leaves, k, i, x + h * s, name) for s in STEP_FRACTIONS]
    fm = [_eval(objective, leaves, k, i, x - h * s, name) for s in STEP_FRACTIONS]
    est, err, left, right, kink = extrapolate(np.array(fp), np.array(fm), f0, h, eps, noise)
    return float(est), float(err), float(left), float(right), bool(kink)


def extrapolate(fp: np.ndarray, fm: np.ndarray, f0: float, h: Any, eps: float = EPS, noise: float = 0.0
                ) -> tuple[np.ndarray, ...]:
    """(estimate, error, left, right, kink) from the loss at x +- h, h/2, h/4 (rows of fp, fm).

    Works on one element (fp, fm of shape (3,)) or on many at once (shape (3, m), h of shape (m,)).
    """
    steps = np.multiply.outer(STEP_FRACTIONS, h)
    with np.errstate(all="ignore"):  # NaN/inf a step away is handled (and reported) by the caller
        d = (fp - fm) / (2 * steps)
        r1 = [(4 * d[1] - d[0]) / 3, (4 * d[2] - d[1]) / 3]
        r2 = (16 * r1[1] - r1[0]) / 15
        fmax = np.maximum(abs(f0), np.maximum(np.abs(fp).max(axis=0), np.abs(fm).max(axis=0)))
        # Round-off: at least eps |f|, or the loss's measured noise when larger (cancellation inside
        # the loss, as in (a - y)^2 near a good fit); 4 delta / h is the noise of r2, x3 for safety.
        error = np.abs(r2 - r1[1]) + np.maximum(8 * eps * fmax, 12 * noise) / h + eps * np.abs(r2)
        if eps > EPS:
            # The longer low-precision step may straddle a kink at h or h/2; the first-level gap shows it.
            error = error + np.abs(r1[1] - r1[0])
        right = (fp[2] - f0) / steps[2]
        left = (f0 - fm[2]) / steps[2]
        # Curvature makes right - left shrink in proportion to h; a kink keeps it constant.
        gap_big = (fp[0] - 2 * f0 + fm[0]) / steps[0]
        gap_small = right - left
        floor_noise = 16 * np.maximum(eps * fmax, noise) / steps[2]
        # 1e3 x the float64 round-off keeps smooth float64 points from looking kinked; a loss computed
        # in float32 has a real, larger noise floor, of which 30x is enough.
        floor = np.maximum(1e3 * floor_noise * EPS / eps, 30 * floor_noise)
        kink = np.abs(gap_small) > np.maximum(np.maximum(0.6 * np.abs(gap_big), floor),
                                              1e-7 * (np.abs(right) + np.abs(left)))
    return r2, error, left, right, kink


def loss_noise(objective: Objective, leaves: list, f0: float, points: int = 4) -> float:
    """Standard deviation of the loss's round-off noise near the point (0 if it cannot be measured).

    ECnoise (More & Wild 2011), simplified: along a random direction with a step far below the
    finite-difference steps, sixth differences of 2 points + 1 values cancel the smooth part, and
    their mean square, scaled by (6!)^2 / 12!, estimates the noise variance.
    """
    rng = np.random.default_rng(0)
    v = [rng.choice((-1.0, 1.0), size=x.shape) * element_steps(x, 1e-5).reshape(x.shape) for x in leaves]
    values = []
    try:
        with np.errstate(all="ignore"):
            for j in range(-points, points + 1):
                values.append(f0 if j == 0 else objective([x + j * d for x, d in zip(leaves, v)]))
    except Exception:  # noqa: BLE001 - a probe only; the finite differences themselves will say why
        return 0.0
    values = np.asarray(values, dtype=np.float64)
    d6 = np.diff(values, 6)
    if d6.size == 0 or not np.isfinite(d6).all():
        return 0.0
    gamma = math.factorial(6) ** 2 / math.factorial(12)
    # A kink on the probe line (ReLU exactly at 0) also survives sixth differences; real round-off
    # stays within ~1e2 eps |f|, so the estimate is capped where it could only be a kink.
    eps = max(EPS, getattr(objective, "eps", EPS))
    return min(float(np.sqrt(gamma * np.mean(d6 ** 2))), 1e3 * eps * float(np.abs(values).max()))


def complex_step(objective: Objective, leaves: list, k: int, i: int, h: float) -> float | None:
    """Im f(x + i h) / h, or None when the loss cannot run on complex numbers."""
    if not (h > 0 and np.isfinite(h)):
        return None  # the step underflowed (parameters near the smallest float)
    cleaves = [np.asarray(x, dtype=np.complex128) for x in leaves]
    x = complex(cleaves[k].reshape(-1)[i])
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            value = objective(objective.perturb(cleaves, k, i, x + 1j * h), allow_complex=True)
    except Exception:  # noqa: BLE001 - any failure means "not complex-safe"
        return None
    if not isinstance(value, complex):
        return None
    return value.imag / h


def _complex_safe(objective: Objective, leaves: list, probes: list, f0: float) -> bool:
    """Complex step agrees with Richardson on the probe elements (and is not identically 0)."""
    if not probes:
        return False
    nonzero = False
    for k, i, h, est, err in probes:
        cs = complex_step(objective, leaves, k, i, h * COMPLEX_STEP / BASE_STEP)
        if cs is None or not np.isfinite(cs):
            return False
        if abs(cs - est) > 4 * err + 1e-10 * abs(est) + 1e-300:
            return False
        nonzero = nonzero or cs != 0.0
    return nonzero


def numeric_gradient(objective: Objective, selection: Sequence[np.ndarray], *, f0: float | None = None,
                     names: Sequence[str] = (), use_complex: bool | str = "auto", base_step: float = BASE_STEP,
                     progress=None, batched: Any = None) -> ReferenceGradient:
    """Richardson-extrapolated central differences on the selected elements (plus complex step).

    `batched` (a `jax_ref.BatchedLoss`) evaluates the loss at many perturbed points per call;
    it is used only after it reproduces the numpy loss's differences on a few probe elements,
    and only for a loss computed in float64.
    """
    start = time.perf_counter()
    leaves = list(objective.x0)  # read-only: perturbations copy the one leaf they change
    f0 = objective(leaves) if f0 is None else f0
    # A loss computed in lower precision (it casts to float32 itself) needs a longer step: the
    # round-off eps |f| / h then dominates, and the h^6 truncation left by Richardson stays small.
    base_step = base_step * (max(EPS, getattr(objective, "eps", EPS)) / EPS) ** 0.2
    noise = loss_noise(objective, leaves, f0)
    shapes = [x.shape for x in leaves]
    values = [np.full(s, np.nan) for s in shapes]
    errors = [np.full(s, np.inf) for s in shapes]
    lower = [np.full(s, np.nan) for s in shapes]
    upper = [np.full(s, np.nan) for s in shapes]
    checked = [np.zeros(s, bool) for s in shapes]
    steps = [np.full(s, np.nan) for s in shapes]
    arrays = (values, errors, lower, upper, checked, steps)
    kinks: list = []
    probes = []
    notes = []
    done = 0
    selection = [np.asarray(idx, dtype=np.int64).reshape(-1) for idx in selection]
    h_leaves = [element_steps(x, base_step) for x in leaves]
    method = "central differences, Richardson over h, h/2, h/4"
    if batched is not None and getattr(objective, "eps", EPS) <= EPS:
        outcome = _batched_pass(objective, batched, leaves, selection, h_leaves, noise, f0, names, arrays)
        if isinstance(outcome, str):
            notes.append(outcome)
        else:
            selection, kinks = outcome  # what is left: points where the batch was not finite
            done = int(sum(c.sum() for c in checked))
            method += " (batched: the loss re-run under jax.numpy, many points per call)"
            if progress is not None:
                progress(done)
    for k, idx in enumerate(selection):
        h_all = h_leaves[k]
        for i in idx:
            name = _element_name(names, k, shapes[k], i)
            h = float(h_all[i])
            est, err, left, right, kink = richardson(objective, leaves, k, int(i), h, f0, name, noise)
            small = base_step * abs(float(leaves[k].reshape(-1)[i])) or h * 1e-3
            if not np.isfinite(est) and small < h:
                # A step scaled to the leaf's typical size can cross a domain edge (log, sqrt) next
                # to a small element; one scaled to the element alone may stay inside.
                h = small
                est, err, left, right, kink = richardson(objective, leaves, k, int(i), h, f0, name, noise)
            # Unchecked but with a finite step: the loss was not finite at the perturbed points.
            _store(arrays, k, i, est, err, left, right, h)
            if kink:
                kinks.append((k, int(i)))
            elif len(probes) < 3 and np.isfinite(est) and est != 0:
                probes.append((k, int(i), h, est, err))
            done += 1
            if progress is not None:
                progress(done)
    if use_complex and _complex_safe(objective, leaves, probes, f0):
        method = "complex step (checked against central differences)"
        _refine_complex(objective, leaves, selection, values, errors, kinks, base_step)
    elif use_complex is True:
        notes.append("complex step requested, but the loss is not complex-safe; used central differences")
    for k, i in kinks:
        # At a kink the central difference is only the mean of the one-sided slopes.
        errors[k].reshape(-1)[i] = max(errors[k].reshape(-1)[i], upper[k].reshape(-1)[i] - lower[k].reshape(-1)[i])
    kink_masks = [np.zeros(s, bool) for s in shapes]
    for k, i in kinks:
        kink_masks[k].reshape(-1)[i] = True
    return ReferenceGradient(
        name="numeric", method=method, values=tuple(values), errors=tuple(errors), checked=tuple(checked),
        lower=tuple(lower), upper=tuple(upper), steps=tuple(steps), notes=tuple(notes),
        seconds=time.perf_counter() - start, exact=False, kinks=tuple(kink_masks),
    )


#: Elements whose batched differences are checked against the numpy loss's before the batch is trusted.
BATCH_PROBES = 3


def _batched_pass(objective: Objective, batched: Any, leaves: list, selection: list, h_leaves: list,
                  noise: float, f0: float, names: Sequence[str], arrays: tuple) -> Any:
    """Batched differences for every selected element, or a note saying why they were not used.

    Writes into `arrays` and returns (per leaf, the elements left for the per-element loop;
    kinks). The batch runs the loss as re-run under JAX; on a few probe elements it must
    reproduce the differences of the user's own numpy loss within their error estimates, else
    the batch is not used at all.
    """
    probes = [(k, int(idx[0])) for k, idx in enumerate(selection) if idx.size][:BATCH_PROBES]
    for k, i in probes:
        h = h_leaves[k][i:i + 1]
        b_est, b_err = _batched_leaf(batched, leaves, k, np.array([i]), h, noise)[:2]
        n_est, n_err = richardson(objective, leaves, k, i, float(h[0]), f0, _element_name(names, k, leaves[k].shape, i),
                                  noise)[:2]
        if not np.isfinite(b_est[0]) and not np.isfinite(n_est):
            continue
        if not abs(b_est[0] - n_est) <= 4 * (b_err[0] + n_err) + 1e-9 * abs(n_est):
            return (f"batched differences (the loss under jax.numpy) gave {b_est[0]!r} for "
                    f"{_element_name(names, k, leaves[k].shape, i)} where your numpy loss gives {n_est!r}; "
                    f"every element was differenced with your numpy loss instead")
    rest, kinks = [], []
    for k, idx in enumerate(selection):
        if not idx.size:
            rest.append(idx)
            continue
        h = h_leaves[k][idx]
        est, err, left, right, kink = _batched_leaf(batched, leaves, k, idx, h, noise)
        ok = np.isfinite(est)
        _store(arrays, k, idx[ok], est[ok], err[ok], left[ok], right[ok], h[ok])
        kinks += [(k, int(i)) for i in idx[ok & kink]]
        # Points where the JAX loss is not finite go to the numpy loop, which retries a shorter
        # step and reports the user's own error if their code raises there.
        rest.append(idx[~ok])
    return rest, kinks


def _store(arrays: tuple, k: int, i: Any, est: Any, err: Any, left: Any, right: Any, h: Any) -> None:
    """Write estimates for element(s) i of leaf k into (values, errors, lower, upper, checked, steps)."""
    values, errors, lower, upper, checked, steps = arrays
    for arr, v in ((values, est), (errors, err), (lower, np.minimum(left, right)),
                   (upper, np.maximum(left, right)), (steps, h), (checked, np.isfinite(est))):
        arr[k].reshape(-1)[i] = v


def _batched_leaf(batched: Any, leaves: list, k: int, idx: np.ndarray, h: np.ndarray, noise: float) -> tuple:
    """extrapolate() for elements idx of leaf k, from 6 batched loss values each."""
    x = leaves[k].reshape(-1)[idx]
    shifts = np.multiply.outer(STEP_FRACTIONS, h)
    points = np.concatenate([x + shifts, x - shifts])  # (6, m): x + h, h/2, h/4, then x - ...
    index = np.broadcast_to(batched.offsets[k] + idx, points.shape)
    f = batched(index.reshape(-1), points.reshape(-1)).reshape(points.shape)
    return extrapolate(f[:3], f[3:], batched.f0, h, EPS, noise)


def _refine_complex(objective, leaves, selection, values, errors, kinks, base_step) -> None:
    """Replace smooth elements' estimates by complex-step ones, accurate to round-off."""
    kink_set = set(kinks)
    for k, idx in enumerate(selection):
        h_all = element_steps(leaves[k], base_step) * (COMPLEX_STEP / base_step)
        for i in np.asarray(idx, dtype=np.int64):
            if (k, int(i)) in kink_set:
                continue
            cs = complex_step(objective, leaves, k, int(i), float(h_all[i]))
            old, err = values[k].reshape(-1)[i], errors[k].reshape(-1)[i]
            if cs is not None and np.isfinite(cs) and abs(cs - old) <= 4 * err + 1e-10 * abs(old):
                values[k].reshape(-1)[i] = cs
                errors[k].reshape(-1)[i] = 4 * EPS * abs(cs) + 1e-300


def _element_name(names: Sequence[str], k: int, shape: tuple, i: int) -> str:
    leaf = names[k] if k < len(names) else f"leaf {k}"
    if not shape:
        return leaf
    return f"{leaf}[{', '.join(map(str, np.unravel_index(i, shape)))}]"
