"""The plan: how a check spends its time budget, as pure rules on sizes and measured timings.

Nothing here calls the user's code or a reference: each rule takes what the case measured
(one call of the loss, the parameters' sizes) and what is left of the budget, and says how
many elements finite differences visit, what share JAX's tracing and SymPy may take, and
which elements a sample holds. The pipeline applies the rules; the references read their
share from the `Allowance` they are given.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .tolerances import default_tolerances

if TYPE_CHECKING:
    from .case import Prepared
    from .model import ReferenceGradient

#: Default seconds a check may spend; references and sampling are planned to fit.
DEFAULT_BUDGET = 20.0
#: Loss calls one directional test of an exact reference costs (see gradcheck.consensus).
VET_CALLS = 6
#: Loss calls the two projections validating an exact gradient cost.
VALIDATION_CALLS = 8
#: Loss calls one projection of localisation costs.
PROJECTION_CALLS = 4
#: Localisation makes at most this many projections.
MAX_PROJECTIONS = 400
#: The shortest call of the user's loss a plan assumes (seconds): a timer's resolution.
MIN_CALL = 2e-5
#: Problems up to this many parameters give every element a SymPy symbol.
SYMPY_ALL_SYMBOLS = 64
#: Seconds of tracing under JAX any budget allows (a small loss traces in milliseconds).
TRACE_FLOOR = 0.25
#: How many trace shares a loss that must run op by op may take on its first run.
EAGER_FACTOR = 3.0
#: At most this share of the default budget (2 s) goes to the every-element-a-symbol plan.
SYMPY_ALL_SYMBOLS_SHARE = 0.1
#: Elements SymPy differentiates on larger problems (each with the rest held as numbers).
SYMPY_SAMPLE = 12
#: Share of the budget SymPy may use on a sampled problem, and the size above which "auto"
#: leaves it out (one symbolic pass over a network this big takes seconds per element).
SYMPY_BUDGET_SHARE = 0.05
#: ... and at most this many seconds: SymPy confirms a few elements exactly, the other references
#: compare every element, and a learner waits for the whole check.
SYMPY_SAMPLE_SECONDS = 0.2
SYMPY_AUTO_LIMIT = 20_000
#: Share of the budget element-wise finite differences may spend on every element: small when
#: an exact reference (JAX) already compares every element, larger when differences are the reference.
EXHAUSTIVE_SHARE = {True: 0.1, False: 0.4}
#: ... and beside an exact reference at most this many seconds: JAX compares every element
#: already, and a learner waits for the check (a validation sample stands in past it).
EXHAUSTIVE_BESIDE_EXACT = 0.05
#: Seconds the element-wise sample beside a validated JAX gradient may take (2 per leaf at least).
VALIDATION_SECONDS = 0.1
#: Element-wise differences expected to take longer than this (seconds) are worth compiling a
#: batched loss for; a batch call costs at least this fraction of a numpy loss call per row.
BATCH_WORTH = 0.5
BATCH_BEST_CASE = 1 / 8
#: ... and, once an earlier check compiled the batch, longer than this (its probes and timing
#: cost a few calls; a batch also gives up the complex step).
BATCH_WORTH_COMPILED = 0.05
#: The share of the budget blame may use past it (a check stays within 10% of its budget).
BLAME_OVERRUN = 0.05
#: Seconds importing JAX takes (and compiling a first gradient), paid once per process: a
#: budget that cannot pay it twice over leaves JAX out.
JAX_IMPORT_SECONDS = 1.5
#: Seconds importing SymPy takes, paid by the first check that uses it in a process.
SYMPY_IMPORT_SECONDS = 1.0
#: Calls of the user's loss a SymPy run makes (value checks, the symbolic run, one-sided re-runs).
SYMPY_CALLS = 12
#: Seconds the first sampled element of a larger problem can take symbolically (0.1-0.3 s on
#: networks of 1e3-1e4 parameters): one numpy operation on symbols is not interruptible.
SYMPY_FIRST_ELEMENT_SECONDS = 0.3
#: How far past its budget a check may run (a share of the budget).
OVERRUN = 0.1


@dataclass(frozen=True)
class Allowance:
    """What one reference may spend: the seconds left of the check's budget, and how to spend them."""

    seconds: float = DEFAULT_BUDGET
    seed: int = 0
    asked: bool = False                # named in against=: its share is not capped for the others
    deadline: float | None = None      # finite differences stop starting elements after it
    batched: Any = None                # finite differences evaluated in batches (jax's BatchedLoss)
    progress: Any = None               # a progress tick for finite differences


def call_seconds(prep: Prepared) -> float:
    """Seconds one call of the user's loss takes, as the plan counts it."""
    return max(prep.t_loss, MIN_CALL)


def total_elements(prep: Prepared) -> int:
    """How many scalars the parameters hold."""
    return int(sum(x.size for x in prep.x0))


def element_seconds(prep: Prepared, batched: Any = None) -> float:
    """Seconds of finite differences per element: 6 loss calls, numpy or batched."""
    numpy_cost = 6 * call_seconds(prep) + 1e-5
    return min(numpy_cost, 6 * batched.seconds_per_row) if batched is not None else numpy_cost


def affordable_elements(prep: Prepared, budget: float, max_elements: int | None, *, exact: bool = False,
                        batched: Any = None) -> int:
    """How many elements element-wise finite differences can visit within their share of the budget."""
    if max_elements is not None:
        return int(max_elements)
    seconds = budget * EXHAUSTIVE_SHARE[exact]
    return int((min(seconds, EXHAUSTIVE_BESIDE_EXACT) if exact else seconds) / element_seconds(prep, batched))


def worth_batching(prep: Prepared, elements: int, seconds: float, compiled: bool = False) -> bool:
    """Whether a batched loss can pay off: a float64 loss whose `elements` differences would take
    numpy longer than BATCH_WORTH seconds, yet could fit in `seconds` batched; or, `compiled` by
    an earlier check (nothing left to pay), longer than BATCH_WORTH_COMPILED."""
    if prep.objective.eps > np.finfo(np.float64).eps:
        return False
    numpy_cost = elements * element_seconds(prep)
    if compiled:
        return min(BATCH_WORTH, BATCH_WORTH_COMPILED) <= numpy_cost
    return BATCH_WORTH <= numpy_cost and numpy_cost * BATCH_BEST_CASE <= seconds


def validation_per_leaf(prep: Prepared, affordable: int, batched: Any = None) -> int:
    """Elements per leaf of the sample confirming a validated exact gradient element-wise: at
    least 2 (the differences' deadline cuts a costly loss short), at most VALIDATION_SECONDS'
    worth beyond the projections, a learner waits for it."""
    leaves = len(prep.x0)
    quick = int(VALIDATION_SECONDS / (element_seconds(prep, batched) * leaves))
    return max(2, min(8, affordable // (3 * leaves), quick))


def localisation_tests(prep: Prepared, budget: float) -> int:
    """Projections localisation may make: as many as half of the budget pays for."""
    return int(min(MAX_PROJECTIONS, 0.5 * budget / (PROJECTION_CALLS * call_seconds(prep))))


def localisation_per_leaf(prep: Prepared, affordable: int) -> int:
    """Elements per leaf of the sample beside projections and localisation."""
    return max(2, min(16, affordable // (2 * len(prep.x0))))


def floor_calls(prep: Prepared, exact: bool = False) -> int:
    """Loss calls the least check makes once its case is prepared, and the call settling the
    user's state: by finite differences, one projection over every parameter and one more per
    level of the search over halves of the leaves if it fails, and one confirming the failing
    leaf's at a shorter step (gradcheck.fast.confirm); beside an exact reference that ran, the
    one directional test validating it."""
    if exact:
        return VET_CALLS + 1
    leaves = sum(1 for x in prep.x0 if x.size)
    return PROJECTION_CALLS * (2 + math.ceil(math.log2(max(leaves, 1)))) + 1


def floor_seconds(prep: Prepared, exact: bool = False) -> float:
    """Seconds the least check takes once its case is prepared (see floor_calls; the gradient
    is called once more, settling the user's state)."""
    return floor_calls(prep, exact) * call_seconds(prep) + prep.t_grad


def least_fits(prep: Prepared, spent: float, budget: float, exact: bool = False) -> bool:
    """Whether the least check, `spent` seconds into the check, ends within OVERRUN of `budget`."""
    return spent + floor_seconds(prep, exact) <= (1 + OVERRUN) * budget


def jax_shares(seconds: float, asked: bool, trace_seconds: float) -> tuple[float, float]:
    """(seconds JAX may trace, seconds a loss run op by op may take on its first run).

    Tracing may take half of what is left (compiling takes about as long again); asked for by
    name, `trace_seconds` if that is more, within what is left; else at most `trace_seconds` or a
    tenth of the budget: other references wait.
    A small loss traces in milliseconds: TRACE_FLOOR lets it, within what is left. Op by op
    (Python control flow on values) each operation compiles on its first use: EAGER_FACTOR times
    the share, within half of what is left.
    """
    share = min(max(0.5 * seconds, trace_seconds), seconds) if asked \
        else min(0.5 * seconds, max(trace_seconds, 0.1 * seconds))
    share = max(share, min(TRACE_FLOOR, seconds))
    return share, max(share, min(EAGER_FACTOR * share, 0.5 * seconds))


def sympy_every_element(prep: Prepared) -> bool:
    """Whether the problem is small enough for a symbol per element."""
    return total_elements(prep) <= SYMPY_ALL_SYMBOLS


def sympy_time(prep: Prepared, seconds: float, asked: bool) -> float:
    """Seconds SymPy may take: with a symbol per element, what is left (a tenth of the default
    budget unless asked for by name: a learner's small network waits that long at most); on a
    sample, SYMPY_BUDGET_SHARE of it, at most SYMPY_SAMPLE_SECONDS."""
    if sympy_every_element(prep):
        return seconds if asked else min(seconds, SYMPY_ALL_SYMBOLS_SHARE * DEFAULT_BUDGET)
    return min(SYMPY_SAMPLE_SECONDS, SYMPY_BUDGET_SHARE * seconds)


def sympy_reserve(budget: float) -> float:
    """Seconds kept back from the differences for SymPy's sample."""
    return min(SYMPY_SAMPLE_SECONDS, SYMPY_BUDGET_SHARE * budget)


def sympy_seconds(prep: Prepared) -> float:
    """A floor on what the SymPy reference costs here: its import if not loaded, its loss calls,
    and on a sampled problem its first element."""
    start = 0.0 if "sympy" in sys.modules else SYMPY_IMPORT_SECONDS
    first = 0.0 if sympy_every_element(prep) else SYMPY_FIRST_ELEMENT_SECONDS
    return start + first + (SYMPY_CALLS + VET_CALLS) * call_seconds(prep)


def per_leaf_sample(pools: Sequence[Any], count: int, rng: np.random.Generator) -> list:
    """Up to `count` distinct elements per leaf, drawn from each pool (a size or an index array)."""
    out = []
    for pool in pools:
        n = pool if isinstance(pool, (int, np.integer)) else len(pool)
        out.append(np.sort(rng.choice(pool, size=min(n, count), replace=False)) if n else np.arange(0))
    return out


def sample(selection: list, count: int, seed: int) -> list:
    """At most `count` elements of a selection, spread over the leaves."""
    per_leaf = max(1, count // max(len(selection), 1))
    return per_leaf_sample(selection, per_leaf, np.random.default_rng(seed + 1))


def union(a: list, b: list) -> list:
    """Per leaf, the elements in either selection."""
    return [np.union1d(x, y).astype(np.int64) for x, y in zip(a, b)]


def ahead(first: list, then: list) -> list:
    """Per leaf, the elements of `first`, then those of `then` not among them: differences cut
    short by the deadline visit `first` (the suspects) before the rest."""
    return [np.concatenate([np.asarray(x, np.int64), np.setdiff1d(y, x).astype(np.int64)]) for x, y in zip(first, then)]


def disagreeing(prep: Prepared, ref: ReferenceGradient, per_leaf: int) -> list:
    """Per leaf, the elements where the user's gradient differs most from an exact reference."""
    out = []
    for k, y in enumerate(prep.yours):
        g = ref.values[k]
        if y.shape != g.shape or g.size == 0:
            out.append(np.arange(0))
            continue
        rtol, atol_rel = default_tolerances(prep.dtypes[k])
        scale = float(np.nanmax(np.abs(g))) if np.isfinite(g).any() else 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            excess = np.abs(y.astype(np.float64) - g) - (rtol * np.abs(g) + atol_rel * scale)
        excess = np.nan_to_num(excess, nan=np.inf).reshape(-1)
        bad = np.flatnonzero(excess > 0)
        out.append(bad[np.argsort(-excess[bad])][:per_leaf])
    return out
