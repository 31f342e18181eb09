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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import UserCodeError
from ..model import ReferenceGradient
from ..objective import Objective

if TYPE_CHECKING:
    from ..case import Prepared
    from ..plan import Allowance

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
    est, err, left, right, kink, _ = extrapolate(np.array(fp), np.array(fm), f0, h, eps, noise)
    return float(est), float(err), float(left), float(right), bool(kink)


def extrapolate(fp: np.ndarray, fm: np.ndarray, f0: float, h: Any, eps: float = EPS, noise: float = 0.0
                ) -> tuple[np.ndarray, ...]:
    """(estimate, error, left, right, kink, truncation) from the loss at x +- h, h/2, h/4 (rows of fp, fm).

    `truncation` is the part of `error` that shorter steps would reduce (the gap between the
    last two Richardson levels); the rest is round-off, which shorter steps increase.

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
        trunc = np.abs(r2 - r1[1])
        if eps > EPS:
            # The longer low-precision step may straddle a kink at h or h/2; the first-level gap shows it.
            trunc = trunc + np.abs(r1[1] - r1[0])
        error = trunc + np.maximum(8 * eps * fmax, 12 * noise) / h + eps * np.abs(r2)
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
    return r2, error, left, right, kink, trunc


def loss_noise(objective: Objective, leaves: list, f0: float, points: int = 4) -> float:
    """Standard deviation of the loss's round-off noise near the point (0 if it cannot be measured).

    ECnoise (More & Wild 2011), simplified: along a random direction with a step far below the
    finite-difference steps, sixth differences of 2 points + 1 values cancel the smooth part, and
    their mean square, scaled by (6!)^2 / 12!, estimates the noise variance.
    """
    rng = np.random.default_rng(0)
    # Each element moves by a fraction of its own size (of its leaf's where it is 0): a tiny element
    # beside large ones moved by the leaf's scale would make the loss look noisy where it only varies fast.
    v = [rng.choice((-1.0, 1.0), size=x.shape) * np.where(x != 0, 1e-5 * np.abs(x), element_steps(x, 1e-5).reshape(x.shape))
         for x in leaves]
    values = []
    try:
        with np.errstate(all="ignore"):
            for j in range(-points, points + 1):
                values.append(f0 if j == 0 else objective([x + j * d for x, d in zip(leaves, v)]))
    except Exception:  # noqa: BLE001 - a probe only; the finite differences themselves will say why
        return 0.0
    d6 = np.diff(np.asarray(values, dtype=np.float64), 6)
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


#: An estimate whose truncation error (the gap between Richardson levels) exceeds its round-off
#: and this fraction of its size is retried at shorter steps: the loss varies along that element
#: on a scale shorter than the step (a small element beside large ones in its leaf).
REFINE_RTOL = 1e-9
#: Each rung of the retry ladder divides the step by this; at most LADDER rungs above the
#: element's own scale, in at most REFINE_ROUNDS rounds.
SHRINK = 100.0
LADDER = 4
REFINE_ROUNDS = 2
#: Elements this much smaller than their leaf's typical size also try a step of their own scale.
SMALL_ELEMENT = 1e-2


@dataclass
class _Estimates:
    """Per leaf, per element: the estimate and what it rests on (step, error, one-sided slopes)."""

    values: list
    errors: list
    lower: list
    upper: list
    checked: list
    steps: list
    trunc: list  # truncation part of the error (the Richardson gap), for the refinement
    kinks: list

    @classmethod
    def empty(cls, shapes: Sequence[tuple]) -> "_Estimates":
        def full(value: Any, dtype: Any = float) -> list:
            return [np.full(s, value, dtype=dtype) for s in shapes]

        return cls(values=full(np.nan), errors=full(np.inf), lower=full(np.nan), upper=full(np.nan),
                   checked=full(False, bool), steps=full(np.nan), trunc=full(np.inf), kinks=full(False, bool))

    def store(self, k: int, i: Any, out: tuple, h: Any) -> None:
        """Write extrapolate()'s output for element(s) i of leaf k, estimated with step(s) h."""
        est, err, left, right, kink, trunc = out
        finite = np.isfinite(est)
        for arr, v in ((self.values, est), (self.errors, err), (self.lower, np.minimum(left, right)),
                       (self.upper, np.maximum(left, right)), (self.steps, h), (self.checked, finite),
                       (self.trunc, trunc), (self.kinks, kink & finite)):
            arr[k].reshape(-1)[i] = v

    def get(self, k: int, i: np.ndarray) -> tuple:
        """extrapolate()-shaped arrays for elements i of leaf k (left/right as lower/upper)."""
        return tuple(a[k].reshape(-1)[i] for a in (self.values, self.errors, self.lower, self.upper,
                                                   self.kinks, self.trunc))


def numeric_gradient(objective: Objective, selection: Sequence[np.ndarray], *, f0: float | None = None,
                     names: Sequence[str] = (), use_complex: bool | str = "auto", base_step: float = BASE_STEP,
                     progress=None, batched: Any = None, deadline: float | None = None,
                     call_seconds: float = 0.0) -> ReferenceGradient:
    """Richardson-extrapolated central differences on the selected elements (plus complex step).

    Every element starts with a step scaled to itself and its leaf; where its error estimate
    shows truncation (the loss varies faster than the step) or a kink, shorter steps are tried
    and the estimate with the smallest error is kept. A kink is declared only where the
    one-sided slopes still differ at the shorter step. `batched` (a `jax_ref.BatchedLoss`)
    evaluates the loss at many perturbed points per call; it is used only after it reproduces
    the numpy loss's differences on a few probe elements, and only for a loss computed in float64.
    With `deadline` (a time.perf_counter() value), elements are visited round-robin over the
    leaves and no chunk is started that would end past it; the rest stay unchecked (nothing at
    all is evaluated if the noise probe and one element, at `call_seconds` a call, would not fit).
    """
    start = time.perf_counter()
    calls_at_start = getattr(objective, "calls", 0)  # for the cost per call (see _element_cost)
    leaves = list(objective.x0)  # read-only: perturbations copy the one leaf they change
    if deadline is not None and start + 14 * call_seconds > deadline:
        return _nothing(leaves, f"not affordable: the time budget had {max(deadline - start, 0):.2g} s left; "
                                f"one element costs 6 calls of the loss after an 8-call noise probe "
                                f"({call_seconds:.2g} s a call)", start)
    f0 = objective(leaves) if f0 is None else f0
    # A loss computed in lower precision (it casts to float32 itself) needs a longer step: the
    # round-off eps |f| / h then dominates, and the h^6 truncation left by Richardson stays small.
    base_step = base_step * (max(EPS, getattr(objective, "eps", EPS)) / EPS) ** 0.2
    noise = loss_noise(objective, leaves, f0)
    est = _Estimates.empty([x.shape for x in leaves])
    notes = []
    selection = [np.asarray(idx, dtype=np.int64).reshape(-1) for idx in selection]
    h_leaves = [element_steps(x, base_step) for x in leaves]
    method = "central differences, Richardson over h, h/2, h/4"
    numpy_eval = _numpy_evaluator(objective, leaves, f0, names, noise)
    evaluate = numpy_eval
    if batched is not None and getattr(objective, "eps", EPS) <= EPS:
        note = _batch_trusted(objective, batched, leaves, selection, h_leaves, noise, f0, names)
        if note:
            notes.append(note)
        else:
            evaluate = _batched_evaluator(batched, leaves, noise, numpy_eval)
            method += " (batched: the loss re-run under jax.numpy, many points per call)"
    per_element = _element_cost(getattr(objective, "calls", 0) - calls_at_start, start,
                                batched if evaluate is not numpy_eval else None)
    done, wanted = 0, int(sum(idx.size for idx in selection))
    for k, chunk in _chunks(selection, per_element):
        if deadline is not None and time.perf_counter() + per_element * chunk.size > deadline:
            notes.append(f"stopped at the time budget: {done} of {wanted} selected elements differenced")
            break
        est.store(k, chunk, evaluate(k, chunk, h_leaves[k][chunk]), h_leaves[k][chunk])
        done += chunk.size
        if progress is not None:
            progress(done)
    unsettled = 0
    for k, idx in enumerate(selection):
        visited = idx[np.isfinite(est.steps[k].reshape(-1)[idx])]
        unsettled += _refine(evaluate, est, k, visited, leaves[k], h_leaves[k], base_step, deadline, per_element)
    if unsettled:
        notes.append(f"{unsettled} element(s) needing shorter steps (a kink or curvature seen, or far smaller than "
                     f"their parameter) were not retried within the time budget and are not checked")
    # Complex step costs per-element calls of the numpy loss: not after a batch spared them,
    # nor when the time budget would not cover them.
    spare = deadline is None or time.perf_counter() + 4 * per_element * done < deadline
    probes = _probes(est, selection) if evaluate is numpy_eval and spare else []
    if use_complex and _complex_safe(objective, leaves, probes, f0):
        method = "complex step (checked against central differences)"
        _refine_complex(objective, leaves, selection, est.values, est.errors, est.kinks, est.steps)
    elif use_complex is True:
        notes.append("complex step requested, but the loss is not complex-safe; used central differences")
    for k in range(len(leaves)):
        # At a kink the central difference is only the mean of the one-sided slopes.
        m = est.kinks[k]
        est.errors[k][m] = np.maximum(est.errors[k][m], est.upper[k][m] - est.lower[k][m])
    return ReferenceGradient(
        name="numeric", method=method, values=tuple(est.values), errors=tuple(est.errors),
        checked=tuple(est.checked), lower=tuple(est.lower), upper=tuple(est.upper), steps=tuple(est.steps),
        notes=tuple(notes), seconds=time.perf_counter() - start, exact=False, kinks=tuple(est.kinks),
    )


def _nothing(leaves: list, note: str, start: float) -> ReferenceGradient:
    """A reference that checked no element, saying why."""
    est = _Estimates.empty([x.shape for x in leaves])
    return ReferenceGradient(name="numeric", method="central differences (none afforded)", values=tuple(est.values),
                             errors=tuple(est.errors), checked=tuple(est.checked), lower=tuple(est.lower),
                             upper=tuple(est.upper), steps=tuple(est.steps), notes=(note,),
                             seconds=time.perf_counter() - start, exact=False, kinks=tuple(est.kinks))


def _element_cost(calls: int, start: float, batched: Any) -> float:
    """Seconds one element's six evaluations take, from the `calls` made since `start` (the noise probe)."""
    if batched is not None:
        return 6 * batched.seconds_per_row
    return 6 * (time.perf_counter() - start) / max(calls, 1)


def _chunks(selection: list, per_element: float):
    """(leaf, element indices) in chunks of about 50 ms of work, round-robin over the leaves, so
    that a run stopped by the time budget has visited every leaf."""
    size = int(max(1, min(256, 0.05 / max(per_element, 1e-9))))
    pieces = [[idx[j:j + size] for j in range(0, idx.size, size)] for idx in selection]
    for r in range(max((len(p) for p in pieces), default=0)):
        for k, p in enumerate(pieces):
            if r < len(p):
                yield k, p[r]


def _numpy_evaluator(objective: Objective, leaves: list, f0: float, names: Sequence[str], noise: float):
    """evaluate(k, idx, h) -> extrapolate() arrays, from the user's own numpy loss (6 calls each)."""
    eps = max(EPS, getattr(objective, "eps", EPS))

    def evaluate(k: int, idx: np.ndarray, h: np.ndarray) -> tuple:
        fp = np.empty((len(STEP_FRACTIONS), idx.size))
        fm = np.empty_like(fp)
        for j, (i, step) in enumerate(zip(idx, h)):
            name = _element_name(names, k, leaves[k].shape, int(i))
            x = float(leaves[k].reshape(-1)[i])
            fp[:, j] = [_eval(objective, leaves, k, int(i), x + step * s, name) for s in STEP_FRACTIONS]
            fm[:, j] = [_eval(objective, leaves, k, int(i), x - step * s, name) for s in STEP_FRACTIONS]
        return extrapolate(fp, fm, f0, np.asarray(h, dtype=np.float64), eps, noise)

    return evaluate


def _batched_evaluator(batched: Any, leaves: list, noise: float, fallback):
    """evaluate() through the batched JAX loss; points it cannot evaluate go to the numpy loss,
    which reports the user's own error if their code raises there."""
    def evaluate(k: int, idx: np.ndarray, h: np.ndarray) -> tuple:
        out = _batched_leaf(batched, leaves, k, idx, h, noise)
        bad = ~np.isfinite(out[0])
        if bad.any():
            redo = fallback(k, idx[bad], h[bad])
            out = tuple(np.where(bad, r_all, o) if np.ndim(o) else o
                        for o, r_all in zip(out, (_scatter(bad, r) for r in redo)))
        return out

    return evaluate


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An array of mask's length holding `values` at mask's True entries (zeros elsewhere)."""
    out = np.zeros(mask.shape, dtype=np.asarray(values).dtype)
    out[mask] = values
    return out


def _refine(evaluate, est: _Estimates, k: int, idx: np.ndarray, x: np.ndarray, h0: np.ndarray,
            base_step: float, deadline: float | None = None, per_element: float = 0.0) -> int:
    """Retry suspect elements of leaf k at shorter steps and keep the best-supported estimate.

    Suspect: truncation dominates a non-negligible error, a kink was seen, the loss was not
    finite a step away, or the element is far smaller than its leaf. A kink stands only if the
    one-sided slopes still differ at a step SHRINK times shorter (a real kink's gap does not
    shrink with the step; curvature's and aliasing's do). Retries that would end past
    `deadline` (at `per_element` seconds each) are not made, and a suspect never retried is
    left unchecked. Returns how many were left so.
    """
    flat = x.reshape(-1)
    first, dropped = True, 0
    for _ in range(REFINE_ROUNDS):
        value, error, low, high, kink, trunc = est.get(k, idx)
        h = est.steps[k].reshape(-1)[idx]
        mag = np.abs(flat[idx])
        with np.errstate(invalid="ignore"):
            truncated = (trunc > error - trunc) & (error > REFINE_RTOL * np.abs(value))
        small = (mag > 0) & (mag * base_step < SMALL_ELEMENT * h)
        suspect = (truncated | kink | ~np.isfinite(value) | small) & np.isfinite(h) & (h > 0)
        if not suspect.any():
            return dropped
        if deadline is not None:
            # Retry what the time left pays for; a suspect never retried is not checked: its
            # estimate rests on a step that may be longer than the loss's scale there.
            room = max(deadline - time.perf_counter(), 0.0) / max((LADDER + 1) * per_element, 1e-300)
            pos = np.flatnonzero(suspect)
            if room < pos.size:
                if first:
                    est.checked[k].reshape(-1)[idx[pos[int(room):]]] = False
                    dropped += pos.size - int(room)
                suspect[pos[int(room):]] = False
                if not suspect.any():
                    return dropped
        sel, h_sel = idx[suspect], h[suspect]
        # A ladder of shorter steps, SHRINK apart, down to the element's own scale (when that is
        # far shorter): the one that straddles no kink with the smallest error wins.
        own = np.where(mag[suspect] * base_step < h_sel / 10, mag[suspect] * base_step, 0.0)
        for rung in range(1, LADDER + 1):
            h_new = h_sel / SHRINK ** rung
            if rung > 1:
                h_new = np.maximum(h_new, own)
            # Above the element's own scale; an element at exactly 0 has none: two rungs suffice.
            live = np.where(own > 0, h_new > own, rung <= 2)
            if live.any():
                _keep_better(est, k, sel[live], evaluate(k, sel[live], h_new[live]), h_new[live])
        if own.any():
            live = own > 0
            _keep_better(est, k, sel[live], evaluate(k, sel[live], own[live]), own[live])
        small_only = small & ~(truncated | kink | ~np.isfinite(value))
        idx = idx[suspect & ~small_only]  # an element retried for its size alone is settled
        first = False
        if not idx.size:
            return dropped
    return dropped


def _keep_better(est: _Estimates, k: int, sel: np.ndarray, new: tuple, h_new: np.ndarray) -> None:
    """Take the new estimates where they are better supported than the stored ones."""
    old = est.get(k, sel)
    o_val, o_err, o_low, o_high, o_kink = old[:5]
    n_val, n_err, n_left, n_right, n_kink = new[:5]
    with np.errstate(invalid="ignore"):
        o_gap, n_gap = o_high - o_low, np.abs(n_right - n_left)
        # The gap held up at the shorter step: a kink after all (a small gap the finer noise floor hides).
        held = o_kink & (n_gap > 0.5 * o_gap) & (n_gap > 4 * n_err)
        n_kink = np.isfinite(n_val) & (n_kink | held)
        # Only a step precise enough to have seen the gap can say it is gone.
        sees = 4 * n_err < o_gap
        # Two smooth estimates that disagree beyond their error bars: the longer step's truncation
        # error was underestimated (aliasing can fool Richardson's gap, round-off does not fool the
        # noise term), so the shorter step stands. Otherwise the smaller error wins.
        o_h = est.steps[k].reshape(-1)[sel]
        apart = np.abs(n_val - o_val) > 3 * (n_err + o_err)
        smooth_better = np.where(apart, h_new < o_h, n_err < o_err)
        better = np.isfinite(n_val) & (~np.isfinite(o_val) | (o_kink & ~n_kink & sees) | (n_kink & o_kink)
                                       | (~o_kink & ~n_kink & smooth_better))
    if better.any():
        est.store(k, sel[better], tuple(np.asarray(a)[better] for a in (n_val, n_err, n_left, n_right, n_kink,
                                                                             new[5])), h_new[better])
    # A kink seen at the longer step that the shorter one does not confirm was not one.
    unconfirmed = o_kink & ~better & np.isfinite(n_val) & ~n_kink & sees
    est.kinks[k].reshape(-1)[sel[unconfirmed]] = False


def _probes(est: _Estimates, selection: list) -> list:
    """Up to 3 smooth, nonzero estimates (k, i, h, value, error) for the complex-step test."""
    out = []
    for k, idx in enumerate(selection):
        for i in idx:
            v = est.values[k].reshape(-1)[i]
            if np.isfinite(v) and v != 0 and not est.kinks[k].reshape(-1)[i]:
                out.append((k, int(i), float(est.steps[k].reshape(-1)[i]), float(v),
                            float(est.errors[k].reshape(-1)[i])))
                if len(out) == 3:
                    return out
    return out


#: Elements whose batched differences are checked against the numpy loss's before the batch is trusted.
BATCH_PROBES = 3


def _batch_trusted(objective: Objective, batched: Any, leaves: list, selection: list, h_leaves: list,
                   noise: float, f0: float, names: Sequence[str]) -> str:
    """'' if the batch reproduces the numpy loss's differences on a few probe elements, else why not.

    The batch runs the loss as re-run under JAX; if it disagrees with the user's own numpy loss
    beyond the estimates' errors, it is not used at all.
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
    return ""


def _batched_leaf(batched: Any, leaves: list, k: int, idx: np.ndarray, h: np.ndarray, noise: float) -> tuple:
    """extrapolate() for elements idx of leaf k, from 6 batched loss values each."""
    x = leaves[k].reshape(-1)[idx]
    shifts = np.multiply.outer(STEP_FRACTIONS, h)
    points = np.concatenate([x + shifts, x - shifts])  # (6, m): x + h, h/2, h/4, then x - ...
    index = np.broadcast_to(batched.offsets[k] + idx, points.shape)
    f = batched(index.reshape(-1), points.reshape(-1)).reshape(points.shape)
    return extrapolate(f[:3], f[3:], batched.f0, h, EPS, noise)


def _refine_complex(objective: Objective, leaves: list, selection: list, values: list, errors: list,
                    kinks: list, steps: list) -> None:
    """Replace smooth elements' estimates by complex-step ones, accurate to round-off."""
    for k, idx in enumerate(selection):
        for i in np.asarray(idx, dtype=np.int64):
            h = steps[k].reshape(-1)[i]
            if kinks[k].reshape(-1)[i] or not np.isfinite(h):
                continue
            cs = complex_step(objective, leaves, k, int(i), float(h) * (COMPLEX_STEP / BASE_STEP))
            old, err = values[k].reshape(-1)[i], errors[k].reshape(-1)[i]
            if cs is not None and np.isfinite(cs) and abs(cs - old) <= 4 * err + 1e-10 * abs(old):
                values[k].reshape(-1)[i] = cs
                errors[k].reshape(-1)[i] = 4 * EPS * abs(cs) + 1e-300


def _element_name(names: Sequence[str], k: int, shape: tuple, i: int) -> str:
    leaf = names[k] if k < len(names) else f"leaf {k}"
    if not shape:
        return leaf
    return f"{leaf}[{', '.join(map(str, np.unravel_index(i, shape)))}]"


def run(case: Prepared, selection: Sequence[np.ndarray], allowance: Allowance) -> ReferenceGradient:
    """The numeric reference on a prepared case (the registry's protocol, see gradcheck.references).

    Complex step refines every element it visits at up to 4x a real call's cost: worth it when
    the differences are the reference for every element, not for a sample beside JAX or projections.
    """
    sampled = sum(len(s) for s in selection) < sum(x.size for x in case.x0)
    return numeric_gradient(case.objective, selection, f0=case.loss_value, names=case.names,
                            use_complex=not sampled and "auto", batched=allowance.batched,
                            deadline=allowance.deadline, call_seconds=case.t_loss, progress=allowance.progress)
