"""The check, composed: case -> references -> consensus -> findings -> blame -> report.

Each stage has its module: gradcheck.case validates and prepares (a frozen record),
gradcheck.plan holds the budget's rules, gradcheck.references runs the peers behind one
protocol, gradcheck.consensus decides which of them judge and merges them, gradcheck.diagnose
makes every finding, gradcheck.blame finds the line. This module only says in which order
they run and hands each what is left of the budget.
"""

from __future__ import annotations

import sys
import time
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import plan as rules
from .case import Prepared, prepare
from .consensus import set_aside, validate_by_projections, vet
from .diagnose import findings, projection_failures
from .errors import BudgetTooShort, GradientMismatch, ReferenceUnavailable
from .model import ReferenceGradient, ReferenceStatus, Report
from .options import normalize_against, validate_numbers
from .plan import Allowance
from .references import run as run_reference
from .tolerances import default_tolerances, relative_atol


def check(loss: Callable | None = None, grad: Callable | None = None, params: Any = None,
          args: Sequence[Any] = (), *, value_and_grad: Callable | None = None, kwargs: dict | None = None,
          against: Any = "auto", rtol: float | None = None, atol: float | None = None, seed: int | None = 0,
          budget: float | None = None, max_elements: int | None = None, title: str = "",
          progress: Any = "auto") -> Report:
    """Check a hand-written gradient against the references; returns a Report (never raises on mismatch).

    `loss(params, *args) -> float` and `grad(params, *args) -> same structure as params` (or one
    `value_and_grad(params, *args) -> (loss, grads)`). `against` names references among
    "numeric", "jax", "sympy" ("auto": every one that can run). `rtol`/`atol` override the
    dtype-based defaults (`gradcheck.tolerances.TOLERANCES`); `seed` fixes any sampling; `budget`
    (seconds) bounds the wall time of the whole check: the references, the plan and the calls of
    the user's code are fitted into it (finite differences are exhaustive when they fit, evaluated
    in batches under JAX when the loss traces and that is cheaper); what did not fit is listed
    in `report.plan["not_afforded"]`. The least check (the user's own calls, and one projection
    over the parameters with the search for a wrong one) is kept back from the rest; a `budget`
    too short for it raises BudgetTooShort (the default budget runs it, with a warning).
    `max_elements` caps element-wise differences. `progress` shows the differences'
    progress ("auto": on a terminal or in a notebook; False: off; see `gradcheck.progress`).
    """
    started = time.perf_counter()
    names, explicit = normalize_against(against)
    validate_numbers(rtol, atol, budget, seed, max_elements)
    seed = 0 if seed is None else int(seed)
    budget_given = budget is not None
    budget = rules.DEFAULT_BUDGET if budget is None else float(budget)
    prep = prepare(loss, grad, params, args, value_and_grad=value_and_grad, kwargs=kwargs)
    # Settling the user's state at the end calls the loss and the gradient once more: kept back.
    deadline = started + budget - (prep.t_loss + prep.t_grad)
    spent = time.perf_counter() - started
    # Too short for the least check by finite differences, the budget may still pay for an
    # exact reference (JAX compiled by an earlier check) and its one directional test.
    exact_only = "numeric" not in names
    short = not rules.least_fits(prep, spent, budget, exact=exact_only)
    too_short = _too_short(prep, budget, spent, explicit=budget_given, exact=exact_only) \
        if short and "jax" not in names else []
    # The user's state (a global the loss sets) is left at their parameters, not a perturbed point.
    with prep.objective.settled():
        refs: dict[str, ReferenceGradient] = {}
        statuses: dict[str, ReferenceStatus] = {}
        everything = [np.arange(x.size) for x in prep.x0]
        not_afforded: list[str] = []

        def left() -> float:
            return max(0.0, deadline - time.perf_counter())

        def run(name: str, selection: list, reserve: float = 0.0, **allowance: Any) -> None:
            ref, statuses[name] = run_reference(name, prep, selection, Allowance(max(left() - reserve, 0.0), seed,
                                                                                 **allowance), explicit=explicit)
            if ref is not None:
                refs[name] = ref

        if "jax" in names and not explicit and "jax" not in sys.modules and left() < 2 * rules.JAX_IMPORT_SECONDS:
            statuses["jax"] = ReferenceStatus(name="jax", ran=False, reason=f"not affordable: importing JAX takes "
                                              f"about {rules.JAX_IMPORT_SECONDS:g} s and the time budget "
                                              f"(budget={budget:g} s) had {left():.2g} s left")
            not_afforded.append("the JAX reference (importing jax)")
        elif "jax" in names:
            # The least check by finite differences stays affordable if JAX cannot run after all.
            run("jax", everything, reserve=rules.floor_seconds(prep, exact=short or exact_only), asked=explicit)
        if short:
            exact, now = "jax" in refs, time.perf_counter() - started
            if not exact or not rules.least_fits(prep, now, budget, exact=True):
                too_short = _too_short(prep, budget, now if exact else spent, explicit=budget_given,
                                       jax=statuses.get("jax"), exact=exact)
        numeric = NumericPlan(selection=everything, plan={}, projections=[], failed_leaves=[False] * len(prep.x0),
                              warnings=[])
        total = rules.total_elements(prep)
        sympy_next = "sympy" in names and (explicit or (total <= rules.SYMPY_AUTO_LIMIT
                                                        and left() >= 2 * rules.sympy_seconds(prep)))
        # Kept back from the differences: SymPy's share, and a directional test for each exact reference.
        reserve = rules.sympy_reserve(budget) if sympy_next else 0.0
        if "numeric" in names:
            numeric = plan_numeric(prep, refs, statuses, max(left() - reserve, 0.0), max_elements, seed)
            tests = sum(1 for n in refs if n not in numeric.validated) + int(sympy_next)
            reserve += tests * rules.VET_CALLS * rules.call_seconds(prep)
            # With no exact reference beside them, the differences are the verdict: with no
            # projection made (none fitted), the planned sample runs whatever the clock says.
            unbounded = not any(r.exact for r in refs.values()) and not numeric.projections
            from .progress import stage

            with stage(progress, "finite differences", numeric.plan["numeric_elements"]) as tick:
                run("numeric", numeric.selection, batched=numeric.batched,
                    deadline=None if unbounded else deadline - reserve, progress=tick)
            not_afforded += numeric.plan.pop("not_afforded", [])
            done = statuses["numeric"].elements if statuses["numeric"].ran else 0
            by_projections = not any(r.exact for r in refs.values()) and numeric.projections
            if done == 0 and "numeric" in refs and total and not by_projections:
                set_aside(refs, statuses, "numeric", " ".join(refs["numeric"].notes) or "no element could be differenced")
            if done < numeric.plan["numeric_elements"]:
                not_afforded.append(f"finite differences on {numeric.plan['numeric_elements'] - done} of the "
                                    f"{numeric.plan['numeric_elements']} planned elements (6 calls of your loss each)")
        if "sympy" in names and not explicit and total > rules.SYMPY_AUTO_LIMIT:
            statuses["sympy"] = ReferenceStatus(
                name="sympy", ran=False, reason=f"{total} parameters is more than the {rules.SYMPY_AUTO_LIMIT} that "
                f"auto gives SymPy; ask for it with against=('sympy', ...) to sample a few elements symbolically")
        elif "sympy" in names and not explicit and left() < rules.sympy_seconds(prep):
            statuses["sympy"] = ReferenceStatus(name="sympy", ran=False, reason=f"not affordable: SymPy needs about "
                                                f"{rules.sympy_seconds(prep):.2g} s and the time budget "
                                                f"(budget={budget:g} s) had {left():.2g} s left")
            not_afforded.append("the SymPy reference")
        elif "sympy" in names:
            run("sympy", numeric.selection, reserve=rules.VET_CALLS * rules.call_seconds(prep), asked=explicit)
        vetted = vet(prep.objective, prep.x0, prep.loss_value, refs, statuses, prep.names, seed,
                     skip=numeric.validated, deadline=deadline, call_seconds=prep.t_loss, not_afforded=not_afforded)
        ordered = [statuses[n] for n in names if n in statuses]
        if not refs:
            raise ReferenceUnavailable("no reference could run: " + "; ".join(f"{s.name}: {s.reason}" for s in ordered))
        results, warnings = findings(prep, list(refs.values()), rtol, atol)
        results = projection_failures(results, numeric.failed_leaves, numeric.projections)
        plan = dict(numeric.plan)
        if numeric.projections:
            plan["projections"] = [p.to_dict() for p in numeric.projections]
        plan["elements"] = total
        if not_afforded:
            plan["not_afforded"] = not_afforded
        plan["seconds"] = round(time.perf_counter() - started, 4)
        warnings = prep.warnings + too_short + numeric.warnings + vetted + warnings + [
            f"{s.name} reference skipped: {s.reason}" for s in ordered if not s.ran]
        # SymPy's formulas are worked out when read: keep its mapping as it is (a ChainMap only
        # writes to a map when written to, and a report's formulas are read only).
        formulas: Mapping[str, Any] = ChainMap(*(r.formulas for r in refs.values() if r.formulas))  # type: ignore[arg-type]
        if not all(p.passed for p in results):
            results = _blame(results, prep, grad, value_and_grad, refs, plan, budget, left())
            plan["seconds"] = round(time.perf_counter() - started, 4)
        return Report(parameters=tuple(results), references=tuple(ordered), warnings=tuple(warnings),
                      loss_value=prep.loss_value, seed=seed, plan=plan, formulas=formulas, title=title)


def _too_short(prep: Prepared, budget: float, spent: float, explicit: bool,
               jax: ReferenceStatus | None = None, exact: bool = False) -> list[str]:
    """Raise BudgetTooShort: `budget=` cannot pay the least check of this loss (see
    gradcheck.plan.floor_calls; `exact`: beside the JAX gradient) within its 10%; with the
    default budget, say so and go on."""
    least = spent + rules.floor_seconds(prep, exact)
    why = (f"one call of your loss takes {rules.call_seconds(prep):.2g} s, and the least check (preparing it"
           f"{' and the JAX gradient' if exact and jax is not None and jax.ran else ''}, {spent:.2g} s, then "
           f"{rules.floor_calls(prep, exact)} more calls of your loss and one of your gradient) takes about "
           f"{least:.2g} s")
    if jax is not None and not jax.ran:
        why += f" (JAX, which would need fewer, could not run: {jax.reason})"
    if explicit:
        raise BudgetTooShort(f"budget={budget:g} s is too short to check this loss: {why}. Pass budget="
                             f"{_round_up(least):g} or more, or leave budget out (the default is "
                             f"{rules.DEFAULT_BUDGET:g} s).")
    return [f"this check runs past the default time budget of {budget:g} s: {why}; pass budget= to say how long "
            f"a check of this loss may take"]


def _round_up(seconds: float) -> float:
    """`seconds` rounded up to two significant digits."""
    digits = 1 - int(np.floor(np.log10(max(seconds, 1e-9))))
    return float(np.ceil(seconds * 10**digits) / 10**digits)


def _blame(results: list, prep: Prepared, grad: Callable | None, value_and_grad: Callable | None, refs: dict,
           plan: dict, budget: float, left: float) -> list:
    """The line where each failing gradient goes wrong (never raises), within the budget's 10%
    tolerance: blame, which records one call of the loss and of the gradient, never takes a
    check past it. What it could not afford goes to the plan."""
    allowance = left + rules.BLAME_OVERRUN * budget
    if allowance < 2 * (prep.t_loss + prep.t_grad):
        plan.setdefault("not_afforded", []).append(
            f"blame (it records a call of your loss and of your gradient; {allowance:.2g} s were left)")
        return results
    from .blame import attach_blame

    use_jax = "jax" in refs and _jax_adjoints_affordable(prep, allowance)
    if "jax" in refs and not use_jax:
        plan.setdefault("not_afforded", []).append(
            f"blame's JAX pass (it compiles once per loss; {allowance:.2g} s were left): blame "
            f"fell back to finite differences on the intermediates")
    return attach_blame(results, prep, grad, value_and_grad, budget=budget, left=allowance, use_jax=use_jax)


def _jax_adjoints_affordable(prep: Prepared, seconds: float) -> bool:
    """Whether blame's JAX pass fits in `seconds`: compiled before, or its first run (one
    gradient's compilation, as the JAX reference's first gradient took) fits twice over."""
    from .references.jax import adjoints as jax_adjoints, reference as jax_ref

    first = jax_ref.first_gradient_seconds(prep.objective)
    return jax_adjoints.ready(prep.objective) or (first is not None and 2 * first <= seconds)


@dataclass
class NumericPlan:
    """Which elements finite differences visit, and the checks that chose them."""

    selection: list
    plan: dict
    projections: list
    failed_leaves: list
    warnings: list
    batched: Any = None  # jax_ref.BatchedLoss when the differences are evaluated in batches
    validated: list = field(default_factory=list)  # exact references these projections validated


def plan_numeric(prep: Prepared, refs: dict, statuses: dict, budget: float, max_elements: int | None,
                 seed: int) -> NumericPlan:
    """Spend the budget: every element if affordable; else, beside an exact JAX gradient, a
    validation sample plus two projections; else projections, localisation and a sample.

    A JAX gradient that fails its projections is set aside (removed from `refs`, its status updated).
    """
    total = rules.total_elements(prep)
    exact = "jax" in refs
    batched = _batched_differences(prep, refs, total if max_elements is None else min(total, max_elements),
                                   budget * rules.EXHAUSTIVE_SHARE[exact])
    affordable = rules.affordable_elements(prep, budget, max_elements, exact=exact, batched=batched)
    rng = np.random.default_rng(seed)
    out = NumericPlan(selection=[np.arange(x.size) for x in prep.x0], plan={"numeric": "exhaustive"}, projections=[],
                      failed_leaves=[False] * len(prep.x0), warnings=[])
    call = rules.call_seconds(prep)
    sizes = [x.size for x in prep.x0]
    if total > affordable and exact:
        if rules.VALIDATION_CALLS * call <= 0.5 * budget:
            out.projections, warnings = validate_by_projections(prep, refs, statuses, "jax", seed)
            out.validated.append("jax")
            out.warnings += warnings
        else:  # the one directional test of gradcheck.consensus still validates it, if affordable
            out.plan.setdefault("not_afforded", []).append(
                f"two finite-difference projections validating the jax gradient ({rules.VALIDATION_CALLS} calls "
                f"of your loss, {rules.VALIDATION_CALLS * call:.2g} s)")
        if "jax" in refs:
            per_leaf = rules.validation_per_leaf(prep, affordable, batched)
            sample = rules.per_leaf_sample(sizes, per_leaf, rng)
            out.selection = rules.union(sample, rules.disagreeing(prep, refs["jax"], per_leaf))
            out.plan["numeric"] = "validation sample (every element compared against jax)"
        else:
            batched = None  # the same re-run of the loss: not to be trusted either
    if total > affordable and "jax" not in refs:
        max_tests = rules.localisation_tests(prep, budget)
        leaves = sum(1 for size in sizes if size)
        if max_tests < leaves:
            out.plan.setdefault("not_afforded", []).append(
                f"a projection per parameter ({leaves} projections of {rules.PROJECTION_CALLS} calls of your loss each, "
                f"{rules.PROJECTION_CALLS * call:.2g} s): one projection over all of them, weighted per "
                f"parameter, stood in")
        elif max_tests < rules.MAX_PROJECTIONS:
            out.plan.setdefault("not_afforded", []).append(
                f"more than {max_tests} projections for localisation ({rules.PROJECTION_CALLS} calls of your loss "
                f"each, {rules.PROJECTION_CALLS * call:.2g} s)")
        suspects, tests, out.failed_leaves = _localise(prep, seed, max_tests)
        out.projections += tests
        per_leaf = rules.localisation_per_leaf(prep, affordable)
        out.selection = rules.ahead(suspects, rules.per_leaf_sample(sizes, per_leaf, rng))
        out.plan["numeric"] = "projections, localisation and a sample"
    out.plan["numeric_elements"] = int(sum(len(s) for s in out.selection))
    if batched is not None:
        out.plan["numeric_batch"] = {"rows_per_call": batched.rows, "seconds_per_row": batched.seconds_per_row}
    out.batched = batched
    return out


def _batched_differences(prep: Prepared, refs: dict, elements: int, seconds: float) -> Any:
    """The loss batched under JAX (see references.jax.reference.batched_loss) when it can pay off
    (gradcheck.plan.worth_batching, with the JAX reference running; at once if an earlier check
    compiled it), kept only if a row is cheaper than a call; else None."""
    if "jax" not in refs:
        return None
    from .references.jax.reference import batch_compiled, batched_loss

    if not rules.worth_batching(prep, elements, seconds, compiled=batch_compiled(prep.objective)):
        return None
    batched = batched_loss(prep.objective)
    return batched if batched is not None and batched.seconds_per_row < prep.t_loss else None


def _localise(prep: Prepared, seed: int, max_tests: int) -> tuple[list, list, list]:
    """Projections that find the failing leaves and bisect to their wrong elements (gradcheck.fast)."""
    from .fast import localise

    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = [relative_atol(atol_rel, y) for (_, atol_rel), y in zip(tol, prep.yours)]
    yours = [y if y.shape == x.shape else np.zeros_like(x) for y, x in zip(prep.yours, prep.x0)]
    return localise(prep.objective, prep.x0, yours, prep.names, prep.loss_value,
                    [t[0] for t in tol], atols, seed=seed, max_tests=max_tests)


def assert_gradients(*a: Any, **kw: Any) -> Report:
    """Run `check` with the same arguments; raise GradientMismatch (an AssertionError) if it fails."""
    report = check(*a, **kw)
    if not report.passed:
        raise GradientMismatch(report)
    return report
