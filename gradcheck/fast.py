"""Checks that cost a handful of loss calls whatever the size: projections and localisation.

A projection compares the user's gradient with the finite-difference derivative of the loss
along one direction v: d/dt f(x + t v) = <g, v>. A wrong gradient fails some projection; then
projections restricted to one leaf say which leaves are wrong, and projections restricted to
halves of a leaf (bisection, i.e. adaptive group testing) find the wrong elements in about
2 log2(n) tests instead of n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .objective import Objective
from .references.numeric import BASE_STEP, EPS, element_steps

#: Bisection stops refining a leaf once this many subsets fail at one level: the error is
#: spread out, and a sample of elements diagnoses it better than locating each one.
BROAD = 8
#: Subsets this small are handed to element-wise finite differences.
LEAF_CHUNK = 4


@dataclass(frozen=True)
class Projection:
    """One directional test: yours <y, v> against the finite-difference derivative along v."""

    label: str
    yours: float
    numeric: float
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(abs(self.yours - self.numeric) <= self.tol)

    def to_dict(self) -> dict:
        return {"direction": self.label, "yours": self.yours, "numeric": self.numeric, "error": self.error,
                "tol": self.tol, "ok": self.ok}


def directional(objective: Objective, x0: Sequence[np.ndarray], v: Sequence[np.ndarray | None],
                f0: float) -> tuple[float, float]:
    """Richardson central difference of t -> f(x0 + t v) at 0 (4 loss calls), and its error."""
    def at(t: float) -> float:
        return objective([x if d is None else x + t * d for x, d in zip(x0, v)])

    # Perturbing m elements at once moves the point ~sqrt(m) steps: shrink t to compensate.
    nnz = sum(int(np.count_nonzero(d)) for d in v if d is not None)
    h = 1.0 / np.sqrt(max(nnz, 1))
    d1 = (at(h) - at(-h)) / (2 * h)
    d2 = (at(h / 2) - at(-h / 2)) / h
    est = (4 * d2 - d1) / 3
    return est, abs(est - d2) + 16 * EPS * max(abs(f0), 1e-300) / h


def scaled_direction(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """signs times each element's finite-difference step: a perturbation of the right size."""
    return signs * element_steps(x, BASE_STEP).reshape(x.shape)


def project(objective: Objective, x0: list, yours: list, v: list, f0: float, rtols: Sequence[float],
            atols: Sequence[float], label: str) -> Projection:
    """Test one direction; tolerance sums the per-element tolerances of the leaves involved."""
    est, err = directional(objective, x0, v, f0)
    mine, tol = 0.0, 3 * err
    for y, d, rtol, atol in zip(yours, v, rtols, atols):
        if d is None:
            continue
        yd = y.astype(np.float64) * d
        mine += float(yd.sum())
        tol += rtol * float(np.abs(yd).sum()) + atol * float(np.abs(d).sum())
    return Projection(label=label, yours=mine, numeric=est, error=err, tol=tol)


def _only(k: int, n: int, d: np.ndarray) -> list:
    return [d if j == k else None for j in range(n)]


def masked_direction(x: np.ndarray, rng: np.random.Generator, subset: np.ndarray) -> np.ndarray:
    signs = np.zeros(x.size)
    signs[subset] = rng.choice((-1.0, 1.0), size=len(subset))
    return scaled_direction(x, signs.reshape(x.shape))


def localise(objective: Objective, x0: list, yours: list, names: Sequence[str], f0: float,
             rtols: Sequence[float], atols: Sequence[float], seed: int = 0,
             max_tests: int = 400) -> tuple[list[np.ndarray], list[Projection], list[bool]]:
    """Suspect elements per leaf, every projection made, and which leaves failed a projection."""
    rng = np.random.default_rng(seed)
    n = len(x0)
    tests: list[Projection] = []

    def run(v: list, label: str) -> bool:
        p = project(objective, x0, yours, v, f0, rtols, atols, label)
        tests.append(p)
        return p.ok

    leaf_bad = []
    # Two directions per leaf (along the user's gradient, random signs) when the budget has them,
    # else the random one alone: the least that gives each leaf a verdict.
    both = max_tests >= 2 * sum(1 for x in x0 if x.size)
    for k, (x, y, name) in enumerate(zip(x0, yours, names)):
        if x.size == 0:
            leaf_bad.append(False)
            continue
        ok = True
        if both:
            aligned = scaled_direction(x, np.sign(y.astype(np.float64)) + (y == 0))
            ok = run(_only(k, n, aligned), f"{name}: along your gradient")
        ok = run(_only(k, n, masked_direction(x, rng, np.arange(x.size))), f"{name}: random signs") and ok
        leaf_bad.append(not ok)
    suspects = []
    for k, x in enumerate(x0):
        if not leaf_bad[k]:
            suspects.append(np.arange(0))
            continue
        suspects.append(_bisect(run, k, n, x, rng, names[k], max_tests - len(tests)))
    return suspects, tests, leaf_bad


def _bisect(run, k: int, n: int, x: np.ndarray, rng: np.random.Generator, name: str, budget: int) -> np.ndarray:
    """Halve failing subsets of leaf k until they are small; stop early if the error is broad."""
    frontier = [np.arange(x.size)]
    found: list[np.ndarray] = []
    while frontier and budget > 0:
        failing = []
        for subset in frontier:
            if len(subset) <= LEAF_CHUNK:
                found.append(subset)
                continue
            for half in np.array_split(subset, 2):
                budget -= 1
                if not run(_only(k, n, masked_direction(x, rng, half)), f"{name}: {len(half)} elements"):
                    failing.append(half)
        if len(failing) > BROAD:
            # Spread-out error: a sample of the failing subsets is enough to diagnose it.
            found += [s[:LEAF_CHUNK] for s in failing[:BROAD]]
            break
        frontier = failing
    return np.unique(np.concatenate(found)) if found else np.arange(0)
