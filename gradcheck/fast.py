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

A direction moves each element by its default finite-difference step, which for an element far
smaller than its leaf is a step of the leaf's size. Where the loss varies on that element's own
scale the difference aliases, and its error estimate, made from the same steps, does not show
it; so a test that would name a parameter wrong, or pass only by its own truncation error, is
differenced again at shorter steps down to the elements' own scale (`confirm`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .objective import Objective
from .references.numeric import BASE_STEP, EPS, element_steps

#: Bisection stops refining a leaf once this many subsets fail at one level: the error is
#: spread out, and a sample of elements diagnoses it better than locating each one.
BROAD = 8
#: Subsets this small are handed to element-wise finite differences.
LEAF_CHUNK = 4
#: Loss calls of one directional difference.
PAIR_CALLS = 4
#: A projection is confirmed at shorter steps (see `confirm`) only where the default step moves
#: some element by more than twice its own step (the step it needs is below this fraction of
#: the default); the retries are RUNG apart.
CONFIRM_BELOW = 0.5
RUNG = 1e3
#: A leaf whose share of a weighted projection is below the round-off over this (so that even
#: an error of 1% in it would not show) sets no level for the others (see weighted_direction).
LEVEL_FLOOR = 1e-2
#: The shortest confirming step, as a fraction of the default (an element at 1e-300 beside
#: elements of 1 would otherwise ask for a step no difference can resolve).
SHRINK_FLOOR = 1e-10


@dataclass(frozen=True)
class Projection:
    """One directional test: yours <y, v> against the finite-difference derivative along v."""

    label: str
    yours: float
    numeric: float
    error: float
    tol: float
    #: The part of `error` that shorter steps reduce.
    truncation: float = 0.0
    #: Loss calls made: 4 a difference (a test confirmed at shorter steps made several).
    calls: int = PAIR_CALLS

    @property
    def ok(self) -> bool:
        return bool(abs(self.yours - self.numeric) <= self.tol)

    def to_dict(self) -> dict:
        return {"direction": self.label, "yours": self.yours, "numeric": self.numeric, "error": self.error,
                "tol": self.tol, "ok": self.ok}


def directional(objective: Objective, x0: Sequence[np.ndarray], v: Sequence[np.ndarray | None],
                f0: float, spread: float | None = None, shrink: float = 1.0) -> tuple[float, float, float]:
    """Richardson central difference of t -> f(x0 + t v) at 0 (4 loss calls), its error, and
    the part of the error that shorter steps reduce (the Richardson gap; the rest is round-off).

    `spread`: the squared length of v counted in elements' steps (by default, its nonzeros);
    `shrink`: the step as a fraction of the default one."""
    def at(t: float) -> float:
        return objective([x if d is None else x + t * d for x, d in zip(x0, v)])

    h = shrink * _unit_step(v, spread)
    d1 = (at(h) - at(-h)) / (2 * h)
    d2 = (at(h / 2) - at(-h / 2)) / h
    est = (4 * d2 - d1) / 3
    return est, abs(est - d2) + 16 * EPS * max(abs(f0), 1e-300) / h, abs(est - d2)


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


def _unit_step(v: Sequence[np.ndarray | None], spread: float | None) -> float:
    """The default t of a directional difference along v: perturbing m elements at once moves the
    point about sqrt(m) element steps, so t is shrunk by sqrt(m)."""
    if spread is None:
        spread = sum(int(np.count_nonzero(d)) for d in v if d is not None)
    return 1.0 / float(np.sqrt(max(spread, 1.0)))


def confirming_steps(x0: Sequence[np.ndarray], v: Sequence[np.ndarray | None], spread: float | None) -> list[float]:
    """Shorter steps (fractions of the default one) at which a failing directional difference is
    retried: RUNG apart, down to the step at which every nonzero element along v moves by at most
    its own finite-difference step (BASE_STEP times its own magnitude; not below SHRINK_FLOOR).
    Empty when the default step already does.

    The default step moves an element far smaller than its leaf by a step of the leaf's size; if
    the loss varies on that element's own scale, the difference aliases (a sine over thousands of
    periods differences to nearly nothing, a quadratic term exactly), and its error estimate, made
    from the same steps, cannot see it."""
    h = _unit_step(v, spread)
    shrink = 1.0
    for x, d in zip(x0, v):
        if d is None or not x.size:
            continue
        move = h * np.abs(d.reshape(-1))
        own = BASE_STEP * np.abs(x.reshape(-1).astype(np.float64))
        live = (move > 0) & (own > 0)
        if live.any():
            shrink = min(shrink, float(np.min(own[live] / move[live])))
    shrink = max(shrink, SHRINK_FLOOR)
    if shrink >= CONFIRM_BELOW:
        return []
    rungs = max(1, int(np.ceil(np.log(1.0 / shrink) / np.log(RUNG))))
    return [shrink ** (j / rungs) for j in range(1, rungs + 1)]


def inconclusive(tol: float, error: float, truncation: float) -> bool:
    """Whether a directional test passes only by its difference's error bar: three times the
    error is more than the tolerance it is added to, and truncation (which shorter steps reduce)
    is most of it. Round-off-dominated errors (a float32 loss) are not retried: shorter steps
    would make them larger."""
    return bool(3 * error > tol and truncation > 0.5 * error)


def shorter_stands(old: tuple[float, float], new: tuple[float, float]) -> bool:
    """Whether the estimate `new` (estimate, error) at a shorter step replaces `old`: where two
    smooth estimates disagree beyond their error bars the longer step's truncation was
    underestimated (aliasing fools Richardson's gap; round-off does not fool the noise term), so
    the shorter stands; otherwise the smaller error wins (the per-element rule, numeric._keep_better)."""
    if not np.isfinite(new[0]):
        return False
    if not np.isfinite(old[0]):
        return True
    return bool(abs(new[0] - old[0]) > 3 * (new[1] + old[1]) or new[1] < old[1])


def project(objective: Objective, x0: list, yours: list, v: list, f0: float, rtols: Sequence[float],
            atols: Sequence[float], label: str, spread: float | None = None, rungs: int | None = None) -> Projection:
    """Test one direction; tolerance sums the per-element tolerances of the leaves involved.

    A direction that fails is confirmed (see `confirm`) with up to `rungs` shorter steps (all it
    needs by default; 0 for a projection that only points at suspects)."""
    return confirm(objective, x0, v, f0, spread, measure(objective, x0, yours, v, f0, rtols, atols, label, spread),
                   rungs)


def measure(objective: Objective, x0: list, yours: list, v: list, f0: float, rtols: Sequence[float],
             atols: Sequence[float], label: str, spread: float | None) -> Projection:
    """The projection at the default step, its `tol` not yet widened by the difference's error."""
    mine, tol = _yours_along(yours, v, rtols, atols)
    est, err, trunc = directional(objective, x0, v, f0, spread)
    return Projection(label=label, yours=mine, numeric=est, error=err, tol=tol, truncation=trunc)


def confirm(objective: Objective, x0: list, v: list, f0: float, spread: float | None, p: Projection,
            rungs: int | None = None, failures: bool = True) -> Projection:
    """`p` (made at the default step, its `tol` without the difference's error) as it stands: a
    pass as it is; a failure differenced again (4 calls a rung, at most `rungs` of them) at the
    shorter steps of `confirming_steps` (the shortest ones when not all are afforded), by the
    rule of `shorter_stands`, so that a failure is not read from a step longer than the loss's
    scale where a shorter one resolves it. So is a pass that only the difference's truncation
    error let through (see `inconclusive`). Without `failures`, only such a pass is (the
    failure of a test that only leads a search names nothing)."""
    est, err = p.numeric, p.error
    out = replace(p, tol=p.tol + 3 * err)
    if (out.ok and not inconclusive(p.tol, err, p.truncation)) or (not out.ok and not failures):
        return out
    steps = confirming_steps(x0, v, spread)
    # Short of rungs, the shortest ones: the last moves every element by its own step.
    afforded = steps if rungs is None else steps[len(steps) - min(max(rungs, 0), len(steps)):]
    trunc = p.truncation
    for shrink in afforded:
        retry = directional(objective, x0, v, f0, spread, shrink)
        if shorter_stands((est, err), retry[:2]):
            est, err, trunc = retry
    return replace(p, numeric=est, error=err, tol=p.tol + 3 * err, truncation=trunc,
                   calls=p.calls + PAIR_CALLS * len(afforded))


class _Tests(list):
    """The projections localisation made, and what is left of `max_tests` (projections' worth
    of loss calls)."""

    def __init__(self, objective: Objective, x0: list, f0: float, max_tests: int):
        super().__init__()
        self.objective, self.x0, self.f0, self.max_tests = objective, x0, f0, max_tests

    def spent(self) -> int:
        return sum(p.calls for p in self) // PAIR_CALLS

    def add(self, p: Projection, v: list, spread: float | None, verdict: bool = True,
            names_a_leaf: bool = True) -> Projection:
        """Record p (made by `measure`, along v), confirmed (see `confirm`) if it is a verdict,
        with the rungs that are left and at least the shortest one (the least check pays for
        one, plan.floor_calls). A pass is a verdict on the leaves it covers; a failure only if it
        `names_a_leaf`. A bisection's tests are no verdict: they point at suspects, which
        element-wise differences judge."""
        rungs = max(self.max_tests - self.spent() - (p.calls // PAIR_CALLS), 1) if verdict else 0
        out = confirm(self.objective, self.x0, v, self.f0, spread, p, rungs, names_a_leaf)
        self.append(out)
        return out


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
    tests = _Tests(objective, x0, f0, max_tests)

    def run(v: list, label: str, verdict: bool = True) -> bool:
        # A projection deciding a leaf's verdict is confirmed if it fails; one of bisection only
        # points at suspects, which element-wise differences judge.
        return tests.add(measure(objective, x0, yours, v, f0, rtols, atols, label, None), v, None, verdict).ok

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
            # once the first has failed (confirmed), the leaf is wrong: the second needs no confirming
            ok = run(_only(k, n, masked_direction(x, rng, np.arange(x.size))), f"{name}: random signs", ok) and ok
            leaf_bad[k] = not ok
    else:
        leaf_bad = _leaf_search(objective, x0, yours, names, f0, rtols, atols, rng, live, tests)
    suspects = []
    for k, x in enumerate(x0):
        if not leaf_bad[k]:
            suspects.append(np.arange(0))
            continue
        suspects.append(_bisect(run, k, n, x, rng, names[k], max_tests - tests.spent()))
    return suspects, list(tests), leaf_bad


def weighted_direction(x0: Sequence[np.ndarray], yours: Sequence[np.ndarray], rng: np.random.Generator,
                       f0: float | None = None) -> tuple[list, list[float]]:
    """Random signs on every element of every leaf, each leaf scaled (by at most 1) so that its
    expected share of <yours, v> is the same as every other leaf's. A leaf wrong by a relative
    error e then moves the projection by e times its share whatever the leaf's size, and every
    leaf is tested as finely as the hardest of them would be on its own. Also each leaf's weight
    (1 for a leaf whose gradient is zero: its share is the loss's slope alone).

    Given the loss value `f0`, a leaf whose share is so small that 1% of it (LEVEL_FLOOR) is below
    the difference's round-off sets no level: the projection cannot test it whatever the others'
    weights, and equalising to it would sink every other leaf under the round-off (a scalar with
    a tiny gradient beside a matrix would shrink the matrix's part a million-fold)."""
    v = [masked_direction(x, rng, np.arange(x.size)) if x.size else None for x in x0]
    shares = [float(np.linalg.norm(y.astype(np.float64) * d)) if d is not None else 0.0 for y, d in zip(yours, v)]
    floor = 0.0
    if f0 is not None:
        nnz = sum(int(np.count_nonzero(d)) for d in v if d is not None)
        floor = 3 * 16 * EPS * max(abs(f0), 1e-300) * np.sqrt(max(nnz, 1)) / LEVEL_FLOOR  # directional()'s, x3
    level = min((t for t in shares if t > floor), default=0.0)
    weights = [min(1.0, level / t) if t > 0 and level > 0 else 1.0 for t in shares]
    return [None if d is None else w * d for d, w in zip(v, weights)], weights


def _leaf_search(objective: Objective, x0: list, yours: list, names: Sequence[str], f0: float,
                 rtols: Sequence[float], atols: Sequence[float], rng: np.random.Generator, live: list[int],
                 tests: _Tests) -> list[bool]:
    """Which leaves fail: one weighted projection over all of them, then halves of a failing
    group, the second half tested when the tests left afford it and otherwise inferred (whole
    minus first half: no loss call). A group that fails while neither half does has each of its
    leaves tested on its own. Only a one-leaf group's failure names a leaf: it is confirmed."""
    v, weights = weighted_direction(x0, yours, rng, f0)
    nnz = [0 if d is None else int(np.count_nonzero(d)) for d in v]

    def label(group: Sequence[int]) -> str:
        return ("every parameter" if len(group) == len(live) and len(live) > 1
                else ", ".join(names[k] for k in group)) + ": random signs, weighted per parameter"

    def part(group: Sequence[int]) -> list:
        return [d if k in group else None for k, d in enumerate(v)]

    def spread(group: Sequence[int]) -> float:
        return sum(weights[k] ** 2 * nnz[k] for k in group)

    def measured(group: Sequence[int]) -> Projection:
        p = measure(objective, x0, yours, part(group), f0, rtols, atols, label(group), spread(group))
        return tests.add(p, part(group), spread(group), names_a_leaf=len(group) == 1)

    def inferred(group: Sequence[int], whole: Projection, other: Projection) -> Projection:
        mine, tol = _yours_along(yours, part(group), rtols, atols)
        p = Projection(label=label(group) + f" (inferred: {whole.label.split(':')[0]} minus "
                       f"{other.label.split(':')[0]})", yours=mine, numeric=whole.numeric - other.numeric,
                       error=whole.error + other.error, tol=tol, calls=0,
                       truncation=whole.truncation + other.truncation)
        return tests.add(p, part(group), spread(group), names_a_leaf=len(group) == 1)

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
        b = measured(second) if tests.spent() < tests.max_tests else inferred(second, whole, a)
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
                if not run(_only(k, n, masked_direction(x, rng, half)), f"{name}: {len(half)} elements", False):
                    failing.append(half)
        if len(failing) > BROAD:
            # Spread-out error: a sample of the failing subsets is enough to diagnose it.
            found += [s[:LEAF_CHUNK] for s in failing[:BROAD]]
            break
        frontier = failing
    return np.unique(np.concatenate(found)) if found else np.arange(0)
