"""Orchestration: prepare a case, run the references, compare, diagnose, report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .compare import Combined, compare_leaf
from .diagnose import diagnose, diagnose_shape
from .errors import (GradientMismatch, InvalidCase, NondeterministicLoss, ReferenceUnavailable,
                     UserCodeError)
from .model import ParamResult, ReferenceGradient, ReferenceStatus, Report
from .objective import Objective, fresh, user_location, user_traceback
from .tree import flatten, flatten_like, validate_leaf
from .triangulate import combine

#: Every reference `against` may name; "auto" runs each one that can run.
KNOWN_REFERENCES = ("numeric", "jax", "sympy")
#: Default seconds a check may spend; references and sampling are planned to fit.
DEFAULT_BUDGET = 20.0
#: Problems up to this many parameters give every element a SymPy symbol.
SYMPY_ALL_SYMBOLS = 64
#: Elements SymPy differentiates on larger problems (each with the rest held as numbers).
SYMPY_SAMPLE = 12


@dataclass
class Prepared:
    """A validated case: flat leaves, the user's gradient, and the safe loss."""

    names: list
    x0: list               # float64 copies of the parameters
    dtypes: list           # the user's parameter dtypes (names)
    yours: list            # the user's gradient leaves, as arrays
    objective: Objective
    loss_value: float
    batch_sizes: list
    warnings: list = field(default_factory=list)
    t_loss: float = 0.0
    t_grad: float = 0.0


def normalize_against(against: Any) -> tuple[tuple[str, ...], bool]:
    """(reference names, explicit?) from the `against` argument."""
    if against is None or against == "auto":
        return KNOWN_REFERENCES, False
    names = (against,) if isinstance(against, str) else tuple(against)
    if "all" in names:
        return KNOWN_REFERENCES, True
    unknown = [n for n in names if n not in KNOWN_REFERENCES]
    if unknown or not names:
        raise InvalidCase(f"unknown reference {unknown[0] if unknown else '(none)'!r} in against=; choose from "
                          f"{', '.join(KNOWN_REFERENCES)}, 'all' or 'auto'.")
    return names, True


def _call_user(fn: Callable, what: str, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except Exception as exc:  # noqa: BLE001 - the user's code, shown with its own traceback
        raise UserCodeError(f"your {what} raised {type(exc).__name__}: {exc}", where=user_location(exc),
                            user_traceback=user_traceback(exc)) from exc


def _batch_sizes(args: Sequence[Any]) -> list[int]:
    sizes = []
    for a in args:
        shape = np.shape(a) if isinstance(a, (np.ndarray, list)) else ()
        if shape and shape[0] > 1 and shape[0] not in sizes:
            sizes.append(int(shape[0]))
    return sizes


def _as_leaf_array(name: str, value: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001
        arr = np.asarray(None, dtype=object)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InvalidCase(f"{what} for parameter '{name}' is {type(value).__name__} (dtype {arr.dtype}), not an "
                          f"array of numbers. Return a float array of the parameter's shape.")
    return arr


def prepare(loss: Callable | None, grad: Callable | None, params: Any, args: Sequence[Any] = (), *,
            value_and_grad: Callable | None = None, kwargs: dict | None = None) -> Prepared:
    """Validate the case, evaluate the loss and the user's gradient once, on fresh copies."""
    if value_and_grad is not None:
        if loss is not None or grad is not None:
            raise InvalidCase("pass either loss and grad, or value_and_grad=, not both.")
        if not callable(value_and_grad):
            raise InvalidCase(f"value_and_grad must be a function, got {type(value_and_grad).__name__}.")
        vag = value_and_grad

        def loss(p: Any, *a: Any, **kw: Any) -> Any:
            return _pair(vag(p, *a, **kw))[0]

        def grad(p: Any, *a: Any, **kw: Any) -> Any:
            return _pair(vag(p, *a, **kw))[1]
    for fn, what in ((loss, "loss"), (grad, "grad")):
        if not callable(fn):
            raise InvalidCase(f"{what} must be a function {what}(params, *args), got {type(fn).__name__}.")
    if params is None:
        raise InvalidCase("params is None; pass the parameters as an array, a dict, a list or a tuple of arrays.")
    args = tuple(args) if isinstance(args, (list, tuple)) else (args,)
    kwargs = dict(kwargs or {})
    names, leaves, treedef = flatten(params)
    if not leaves:
        raise InvalidCase("params has no leaves: there is nothing to check.")
    arrays = [validate_leaf(n, v) for n, v in zip(names, leaves)]
    scalars = [treedef_leaf.scalar for treedef_leaf in _leaf_defs(treedef)]
    objective = Objective(loss, treedef, arrays, args, kwargs, scalar_leaves=scalars)
    warnings: list[str] = []
    t0 = time.perf_counter()
    f_a = objective(objective.x0)
    t_loss = time.perf_counter() - t0
    user_params = objective.params([a.copy() for a in arrays])  # the user's dtypes, fresh
    t0 = time.perf_counter()
    g = _call_user(grad, "gradient function", user_params, *fresh(objective.args), **fresh(objective.kwargs))
    t_grad = time.perf_counter() - t0
    f_b = objective(objective.x0)
    if not _same_value(f_a, f_b):
        f_c = objective(objective.x0)
        if _same_value(f_b, f_c):
            raise NondeterministicLoss(
                f"the loss changed after your gradient function ran ({f_a!r} before, {f_b!r} after) at the same "
                f"parameters: the gradient function changes state the loss reads (a global, a cache, an object "
                f"attribute). Make both pure functions of (params, *args).")
        raise NondeterministicLoss(
            f"the loss gives different values for the same parameters ({f_a!r}, {f_b!r}, {f_c!r}): it uses "
            f"randomness (unseeded dropout, noise) or changing state. Fix the seed inside the loss or turn the "
            f"randomness off while checking, e.g. pass the dropout mask in args.")
    if not math.isfinite(f_a):
        raise InvalidCase(f"the loss is {f_a} at the given parameters; a gradient cannot be checked there. "
                          f"Look for log(0), overflow in exp or division by zero.")
    glist = flatten_like(treedef, g, what="the gradient")
    yours = [_as_leaf_array(n, v, "the gradient") for n, v in zip(names, glist)]
    if objective.mutates:
        warnings.append(f"your loss modifies its inputs in place ({', '.join(objective.mutates)}); gradcheck gave "
                        f"it copies, but in a training loop this corrupts your data")
    dtypes = [_lowest(a.dtype, y.dtype) for a, y in zip(arrays, yours)]
    return Prepared(names=names, x0=objective.x0, dtypes=dtypes, yours=yours, objective=objective,
                    loss_value=f_a, batch_sizes=_batch_sizes(args), warnings=warnings, t_loss=t_loss, t_grad=t_grad)


def _pair(result: Any) -> tuple:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise InvalidCase(f"value_and_grad must return a pair (loss, grads); it returned {type(result).__name__}"
                          + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "") + ".")
    return tuple(result)


def _leaf_defs(treedef: Any) -> list:
    if treedef.kind == "leaf":
        return [treedef]
    return [leaf for child in treedef.children for leaf in _leaf_defs(child)]


def _same_value(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _lowest(a: np.dtype, b: np.dtype) -> str:
    """The less precise of two dtypes (ints count as float64)."""
    sizes = [d.itemsize if d.kind == "f" else 8 for d in (a, b)]
    return (a if sizes[0] <= sizes[1] else b).name if min(sizes) < 8 else "float64"


def plan_selection(prep: Prepared, budget: float, seed: int, max_elements: int | None) -> tuple[list, dict]:
    """Which elements finite differences visit: all when affordable, else a seeded sample per leaf."""
    sizes = [x.size for x in prep.x0]
    total = sum(sizes)
    per_element = 7 * max(prep.t_loss, 2e-5)
    affordable = int(budget * 0.5 / per_element) if max_elements is None else int(max_elements)
    if total <= affordable:
        return [np.arange(n) for n in sizes], {"numeric": "exhaustive", "numeric_elements": total}
    rng = np.random.default_rng(seed)
    share = max(affordable // max(len(sizes), 1), 4)
    sel = [np.sort(rng.choice(n, size=min(n, share), replace=False)) if n else np.arange(0) for n in sizes]
    return sel, {"numeric": "sampled", "numeric_elements": int(sum(len(s) for s in sel))}


def run_reference(name: str, prep: Prepared, selection: list, explicit: bool, seed: int,
                  ) -> tuple[ReferenceGradient | None, ReferenceStatus]:
    """Run one reference; a failure is an error if it was asked for by name, else a status."""
    start = time.perf_counter()
    try:
        ref = _REFERENCE_RUNNERS[name](prep, selection, seed)
    except ImportError as exc:
        reason = (f"{exc}" if isinstance(exc, ReferenceUnavailable)
                  else f"{name} is not installed ({exc}); install it with: pip install {name}")
        if explicit:
            raise ReferenceUnavailable(f"the {name} reference cannot run: {reason}") from None
        return None, ReferenceStatus(name=name, ran=False, reason=reason, seconds=time.perf_counter() - start)
    except (UserCodeError, InvalidCase, NondeterministicLoss):
        raise
    except Exception as exc:  # noqa: BLE001 - an exact reference tripping over the code is not fatal
        if explicit or name == "numeric":
            raise ReferenceUnavailable(f"the {name} reference failed on this code: {type(exc).__name__}: {exc}") from exc
        reason = f"{type(exc).__name__}: {exc}"
        return None, ReferenceStatus(name=name, ran=False, reason=reason, seconds=time.perf_counter() - start)
    status = ReferenceStatus(name=name, ran=True, method=ref.method, seconds=ref.seconds,
                             elements=int(sum(int(c.sum()) for c in ref.checked)))
    return ref, status


def _numeric(prep: Prepared, selection: list, seed: int) -> ReferenceGradient:
    from .references.numeric import numeric_gradient

    return numeric_gradient(prep.objective, selection, f0=prep.loss_value, names=prep.names)


def _jax(prep: Prepared, selection: list, seed: int) -> ReferenceGradient:
    from .references.jax_ref import jax_gradient

    return jax_gradient(prep.objective, [np.arange(x.size) for x in prep.x0])


def _sympy(prep: Prepared, selection: list, seed: int) -> ReferenceGradient:
    from .references.sympy_ref import sympy_gradient

    total = sum(x.size for x in prep.x0)
    if total <= SYMPY_ALL_SYMBOLS:
        return sympy_gradient(prep.objective, [np.arange(x.size) for x in prep.x0])
    return sympy_gradient(prep.objective, _sample(selection, SYMPY_SAMPLE, seed), max_elements=SYMPY_SAMPLE)


def _sample(selection: list, count: int, seed: int) -> list:
    """At most `count` elements of a selection, spread over the leaves."""
    rng = np.random.default_rng(seed + 1)
    per_leaf = max(1, count // max(len(selection), 1))
    return [np.sort(rng.choice(s, size=min(len(s), per_leaf), replace=False)) if len(s) else s for s in selection]


_REFERENCE_RUNNERS = {"numeric": _numeric, "jax": _jax, "sympy": _sympy}


def compare_all(prep: Prepared, refs: list, rtol: float | None, atol: float | None) -> tuple[list, list]:
    """Combine references per leaf, compare the user's values and diagnose each leaf."""
    combined: dict[str, Combined] = {}
    warnings: list[str] = []
    for k, (name, x) in enumerate(zip(prep.names, prep.x0)):
        c, w = combine(refs, k, x.shape)
        combined[name] = c
        warnings += [f"{name}: {msg}" for msg in w]
    results: list[ParamResult] = []
    for name, y, dtype in zip(prep.names, prep.yours, prep.dtypes):
        ref = combined[name]
        if y.shape != ref.value.shape:
            results.append(diagnose_shape(name, y, ref, prep.batch_sizes, dtype=dtype))
            continue
        cmp = compare_leaf(y, ref, dtype, rtol, atol)
        results.append(diagnose(name, cmp, combined, prep.batch_sizes, dtype=dtype))
    return results, warnings


def check(loss: Callable | None = None, grad: Callable | None = None, params: Any = None,
          args: Sequence[Any] = (), *, value_and_grad: Callable | None = None, kwargs: dict | None = None,
          against: Any = "auto", rtol: float | None = None, atol: float | None = None, seed: int = 0,
          budget: float | None = None, max_elements: int | None = None, title: str = "") -> Report:
    """Check a hand-written gradient against the references; returns a Report (never raises on mismatch).

    `loss(params, *args) -> float` and `grad(params, *args) -> same structure as params` (or one
    `value_and_grad(params, *args) -> (loss, grads)`). `against` names references among
    "numeric", "jax", "sympy" ("auto": every one that can run). `rtol`/`atol` override the
    dtype-based defaults (`gradcheck.compare.TOLERANCES`); `seed` fixes any sampling.
    """
    names, explicit = normalize_against(against)
    _check_tolerances(rtol, atol, budget)
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    prep = prepare(loss, grad, params, args, value_and_grad=value_and_grad, kwargs=kwargs)
    selection, plan = plan_selection(prep, budget, seed, max_elements)
    refs, statuses = [], []
    for name in names:
        ref, status = run_reference(name, prep, selection, explicit, seed)
        statuses.append(status)
        if ref is not None:
            refs.append(ref)
    if not refs:
        raise ReferenceUnavailable("no reference could run: " + "; ".join(f"{s.name}: {s.reason}" for s in statuses))
    results, warnings = compare_all(prep, refs, rtol, atol)
    warnings = prep.warnings + warnings + [f"{s.name} reference skipped: {s.reason}" for s in statuses if not s.ran]
    formulas = {key: f for r in refs for key, f in r.formulas.items()}
    return Report(parameters=tuple(results), references=tuple(statuses), warnings=tuple(warnings),
                  loss_value=prep.loss_value, seed=seed, plan=plan, formulas=formulas, title=title)


def _check_tolerances(rtol: Any, atol: Any, budget: Any) -> None:
    for name, value in (("rtol", rtol), ("atol", atol), ("budget", budget)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(value)) or float(value) < 0:
            raise InvalidCase(f"{name}={value!r} is not a valid {name}: give a non-negative number, or None for the default.")


def assert_gradients(*a: Any, **kw: Any) -> Report:
    """Run `check` with the same arguments; raise GradientMismatch (an AssertionError) if it fails."""
    report = check(*a, **kw)
    if not report.passed:
        raise GradientMismatch(report)
    return report
