"""Checks that cost a handful of loss calls whatever the size: projections and localisation.

A projection compares the user's gradient with the finite-difference derivative of the loss
along one direction v: d/dt f(x + t v) = <g, v>. A wrong gradient fails some projection; then
projections restricted to one leaf say which leaves are wrong, and projections restricted to
halves of a leaf (bisection, i.e. adaptive group testing) find the wrong elements in about
2 log2(n) tests instead of n.

When the budget cannot pay a projection per leaf, one projection over every leaf stands in,
each leaf's part weighted so that it carries the same share of the projection (a small leaf
beside a large one is not drowned); if it fails, halves of the leaves are tested in turn.
The directional derivative is linear in the direction, so a half that was not afforded is
the whole minus the tested half: the search names the failing leaves in one test per level.
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
                f0: float, spread: float | None = None) -> tuple[float, float]:
    """Richardson central difference of t -> f(x0 + t v) at 0 (4 loss calls), and its error.

    `spread`: the squared length of v counted in elements' steps (by default, its nonzeros)."""
    def at(t: float) -> float:
        return objective([x if d is None else x + t * d for x, d in zip(x0, v)])

    # Perturbing m elements at once moves the point ~sqrt(m) steps: shrink t to compensate.
    if spread is None:
        spread = sum(int(np.count_nonzero(d)) for d in v if d is not None)
    h = 1.0 / np.sqrt(max(spread, 1.0))
    d1 = (at(h) - at(-h)) / (2 * h)
    d2 = (at(h / 2) - at(-h / 2)) / h
    est = (4 * d2 - d1) / 3
    return est, abs(est - d2) + 16 * EPS * max(abs(f0), 1e-300) / h


def scaled_direction(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """signs times each element's finite-difference step: a perturbation of the right size."""
    return signs * element_steps(x, BASE_STEP).reshape(x.shape)


def _yours_along(yours: Sequence[np.ndarray], v: Sequence[np.ndarray | None], rtols: Sequence[float],
                 atols: Sequence[float]) -> tuple[float, float]:
    """<yours, v>, and the sum of the per-element tolerances along v."""
    mine, tol = 0.0, 0.0
    for y, d, rtol, atol in zip(yours, v, rtols, atols):
        if d is None:
            continue
        yd = y.astype(np.float64) * d
        mine += float(yd.sum())
        tol += rtol * float(np.abs(yd).sum()) + atol * float(np.abs(d).sum())
    return mine, tol


def project(objective: Objective, x0: list, yours: list, v: list, f0: float, rtols: Sequence[float],
            atols: Sequence[float], label: str, spread: float | None = None) -> Projection:
    """Test one direction; tolerance sums the per-element tolerances of the leaves involved."""
    est, err = directional(objective, x0, v, f0, spread)
    mine, tol = _yours_along(yours, v, rtols, atols)
    return Projection(label=label, yours=mine, numeric=est, error=err, tol=tol + 3 * err)


def _only(k: int, n: int, d: np.ndarray) -> list:
    return [d if j == k else None for j in range(n)]


def masked_direction(x: np.ndarray, rng: np.random.Generator, subset: np.ndarray) -> np.ndarray:
    signs = np.zeros(x.size)
    signs[subset] = rng.choice((-1.0, 1.0), size=len(subset))
    return scaled_direction(x, signs.reshape(x.shape))


def localise(objective: Objective, x0: list, yours: list, names: Sequence[str], f0: float,
             rtols: Sequence[float], atols: Sequence[float], seed: int = 0,
             max_tests: int = 400) -> tuple[list[np.ndarray], list[Projection], list[bool]]:
    """Suspect elements per leaf, every projection made, and which leaves failed a projection.

    Two projections per leaf (along the user's gradient, random signs) when `max_tests` pays for
    them, else the random one; below one per leaf, one weighted projection over all leaves and,
    if it fails, the search over halves of the leaves (the least that names a failing leaf)."""
    rng = np.random.default_rng(seed)
    n = len(x0)
    tests: list[Projection] = []

    def run(v: list, label: str) -> bool:
        p = project(objective, x0, yours, v, f0, rtols, atols, label)
        tests.append(p)
        return p.ok

    live = [k for k, x in enumerate(x0) if x.size]
    if max_tests >= len(live):
        leaf_bad = [False] * n
        both = max_tests >= 2 * len(live)
        for k in live:
            x, y, name = x0[k], yours[k], names[k]
            ok = True
            if both:
                aligned = scaled_direction(x, np.sign(y.astype(np.float64)) + (y == 0))
                ok = run(_only(k, n, aligned), f"{name}: along your gradient")
            ok = run(_only(k, n, masked_direction(x, rng, np.arange(x.size))), f"{name}: random signs") and ok
            leaf_bad[k] = not ok
    else:
        leaf_bad = _leaf_search(objective, x0, yours, names, f0, rtols, atols, rng, live, max_tests, tests)
    suspects = []
    for k, x in enumerate(x0):
        if not leaf_bad[k]:
            suspects.append(np.arange(0))
            continue
        suspects.append(_bisect(run, k, n, x, rng, names[k], max_tests - len(tests)))
    return suspects, tests, leaf_bad


def weighted_direction(x0: Sequence[np.ndarray], yours: Sequence[np.ndarray],
                       rng: np.random.Generator) -> tuple[list, list[float]]:
    """Random signs on every element of every leaf, each leaf scaled (by at most 1) so that its
    expected share of <yours, v> is the same as every other leaf's. A leaf wrong by a relative
    error e then moves the projection by e times its share whatever the leaf's size, and every
    leaf is tested as finely as the hardest of them would be on its own. Also each leaf's weight
    (1 for a leaf whose gradient is zero: its share is the loss's slope alone)."""
    v = [masked_direction(x, rng, np.arange(x.size)) if x.size else None for x in x0]
    shares = [float(np.linalg.norm(y.astype(np.float64) * d)) if d is not None else 0.0 for y, d in zip(yours, v)]
    floor = min((t for t in shares if t > 0), default=0.0)
    weights = [floor / t if t > 0 else 1.0 for t in shares]
    return [None if d is None else w * d for d, w in zip(v, weights)], weights


def _leaf_search(objective: Objective, x0: list, yours: list, names: Sequence[str], f0: float,
                 rtols: Sequence[float], atols: Sequence[float], rng: np.random.Generator, live: list[int],
                 max_tests: int, tests: list[Projection]) -> list[bool]:
    """Which leaves fail: one weighted projection over all of them, then halves of a failing
    group, the second half tested when `max_tests` affords it and otherwise inferred (whole
    minus first half: no loss call). A group that fails while neither half does has each of its
    leaves tested on its own."""
    v, weights = weighted_direction(x0, yours, rng)
    nnz = [0 if d is None else int(np.count_nonzero(d)) for d in v]

    def label(group: Sequence[int]) -> str:
        return ("every parameter" if len(group) == len(live) and len(live) > 1
                else ", ".join(names[k] for k in group)) + ": random signs, weighted per parameter"

    def measured(group: Sequence[int]) -> Projection:
        part = [d if k in group else None for k, d in enumerate(v)]
        p = project(objective, x0, yours, part, f0, rtols, atols, label(group),
                    spread=sum(weights[k] ** 2 * nnz[k] for k in group))
        tests.append(p)
        return p

    def inferred(group: Sequence[int], whole: Projection, other: Projection) -> Projection:
        mine, tol = _yours_along(yours, [d if k in group else None for k, d in enumerate(v)], rtols, atols)
        error = whole.error + other.error
        p = Projection(label=label(group) + f" (inferred: {whole.label.split(':')[0]} minus "
                       f"{other.label.split(':')[0]})", yours=mine, numeric=whole.numeric - other.numeric,
                       error=error, tol=tol + 3 * error)
        tests.append(p)
        return p

    bad = [False] * len(x0)
    pending = [(live, measured(live))]
    while pending:
        group, whole = pending.pop()
        if whole.ok:
            continue
        if len(group) == 1:
            bad[group[0]] = True
            continue
        first, second = group[: len(group) // 2], group[len(group) // 2:]
        a = measured(first)
        b = measured(second) if len(tests) < max_tests else inferred(second, whole, a)
        if a.ok and b.ok:
            pending += [([k], measured([k])) for k in group]
        else:
            pending += [(first, a), (second, b)]
    return bad


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
