"""Orchestration: prepare a case, run the references, compare, diagnose, report."""

from __future__ import annotations

import math
import sys
from collections import ChainMap
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .compare import Combined, compare_leaf, default_tolerances
from .consensus import set_aside, vet
from .diagnose import diagnose, diagnose_shape
from .errors import (GradientMismatch, InvalidCase, NondeterministicGradient, NondeterministicLoss,
                     ReferenceUnavailable, UserCodeError)
from .model import ParamResult, ReferenceGradient, ReferenceStatus, Report
from .objective import Objective, fresh, mutations, widen
from .usercode.frames import USER_FAILURES, call_user, user_error
from .tree import flatten, flatten_like, validate_leaf
from .triangulate import combine

#: Every reference `against` may name; "auto" runs each one that can run.
KNOWN_REFERENCES = ("numeric", "jax", "sympy")
#: Default seconds a check may spend; references and sampling are planned to fit.
DEFAULT_BUDGET = 20.0
#: Loss calls one directional test of an exact reference costs (see gradcheck.consensus).
VET_CALLS = 6
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
    roundoff: list | None = None  # per leaf: the user's own round-off, allowed on top of the tolerance


def normalize_against(against: Any) -> tuple[tuple[str, ...], bool]:
    """(reference names, explicit?) from the `against` argument."""
    if against is None or against == "auto":
        return KNOWN_REFERENCES, False
    if isinstance(against, str):
        names = (against,)
    elif isinstance(against, (list, tuple)) and all(isinstance(n, str) for n in against):
        names = tuple(against)
    else:
        raise InvalidCase(f"against={against!r} is not valid: give a reference name, a list of names among "
                          f"{', '.join(KNOWN_REFERENCES)}, 'all' or 'auto'.")
    if "all" in names:
        return KNOWN_REFERENCES, True
    unknown = [n for n in names if n not in KNOWN_REFERENCES]
    if unknown or not names:
        raise InvalidCase(f"unknown reference {unknown[0] if unknown else '(none)'!r} in against=; choose from "
                          f"{', '.join(KNOWN_REFERENCES)}, 'all' or 'auto'.")
    return names, True


def _batch_sizes(args: Sequence[Any]) -> list[int]:
    sizes = []
    for a in args:
        try:
            shape = np.shape(a) if isinstance(a, (np.ndarray, list)) else ()
        except Exception:  # noqa: BLE001 - data numpy cannot size is no batch
            shape = ()
        if shape and shape[0] > 1 and shape[0] not in sizes:
            sizes.append(int(shape[0]))
    return sizes


def _as_leaf_array(name: str, value: Any, what: str) -> np.ndarray:
    """One leaf of the user's gradient as a numeric array (jax arrays, lists and numpy scalars included).

    Always a copy: a gradient function that returns its own buffer (`dW += ...; return dW`) writes
    into it again on its next call, which must not change the gradient being checked.
    """
    try:
        arr = np.array(value, copy=True)
    except Exception:  # noqa: BLE001
        arr = np.asarray(None, dtype=object)
    if arr.dtype.kind == "c":
        raise InvalidCase(f"{what} for parameter '{name}' is complex (dtype {arr.dtype}); the gradient of a real "
                          f"loss is real. Return its real part, and look for a complex step or np.sqrt of a "
                          f"negative number left in the gradient function.")
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InvalidCase(f"{what} for parameter '{name}' is {type(value).__name__} (dtype {arr.dtype}), not an "
                          f"array of numbers. Return a float array of the parameter's shape.")
    return arr


def _same_gradient(names: Sequence[str], first: Sequence[np.ndarray], again: Sequence[np.ndarray]) -> None:
    """Raise NondeterministicGradient unless two calls at the same parameters gave the same gradient."""
    for name, a, b in zip(names, first, again):
        if a.shape != b.shape:
            raise NondeterministicGradient(
                f"your gradient function returned different shapes for '{name}' on two calls at the same "
                f"parameters ({a.shape}, then {b.shape}): it keeps state between calls. {_STATE_FIX}")
        x, y = a.astype(np.float64), b.astype(np.float64)
        eps = float(np.finfo(a.dtype if a.dtype.kind == "f" else np.float64).eps)
        scale = float(np.nanmax(np.abs(x), initial=0.0))
        differ = ~((x == y) | (np.isnan(x) & np.isnan(y)) | (np.abs(x - y) <= 8 * eps * scale))
        if differ.any():
            i = tuple(int(j) for j in np.unravel_index(int(np.flatnonzero(differ)[0]), a.shape))
            where = f"{name}{list(i)}" if i else name
            raise NondeterministicGradient(
                f"your gradient function returned different values for the same parameters: {where} was "
                f"{float(x[i]):.10g} on the first call and {float(y[i]):.10g} on a later one, so no single "
                f"gradient can be checked (right once and wrong on the next training step is still wrong). "
                f"{_STATE_FIX}")


_STATE_FIX = ("Look for a gradient accumulated into a global or an attribute and never reset to zero (dW += ... "
              "without dW = 0 first), a step counter or a cache from the previous call; compute the gradient "
              "from (params, *args) alone.")


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

        loss.gradcheck_part_of = grad.gradcheck_part_of = vag  # type: ignore[attr-defined]
    for fn, what in ((loss, "loss"), (grad, "grad")):
        if not callable(fn):
            raise InvalidCase(f"{what} must be a function {what}(params, *args), got {type(fn).__name__}.")
    if params is None:
        raise InvalidCase("params is None; pass the parameters as an array, a dict, a list or a tuple of arrays.")
    args = tuple(args) if isinstance(args, (list, tuple)) else (args,)
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise InvalidCase(f"kwargs must be a dict of keyword arguments for loss and grad, got {type(kwargs).__name__}.")
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
    user_args = fresh(objective.user_args)
    t0 = time.perf_counter()
    g = call_user(grad, "gradient function", user_params, *user_args, **fresh(objective.user_kwargs))
    t_grad = time.perf_counter() - t0
    written = mutations(names, arrays, flatten(user_params)[1], objective.user_args, user_args)
    if written:
        warnings.append(f"your gradient function modifies its inputs in place ({', '.join(written)}); gradcheck "
                        f"gave it copies, but in a training loop this corrupts your parameters or data")
    warnings += _shared_memory(names, leaves)
    slack = _own_roundoff(grad, objective, arrays, treedef, g)  # before f_b: the state check covers it
    t0 = time.perf_counter()
    f_b = objective(objective.x0)
    t_loss = min(t_loss, time.perf_counter() - t0)  # the first call may include warm-up
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

    def grad_at_x0() -> list:
        g_again = call_user(grad, "gradient function", objective.params([a.copy() for a in arrays]),
                             *fresh(objective.user_args), **fresh(objective.user_kwargs))
        return [_as_leaf_array(n, v, "the gradient") for n, v in zip(names, flatten_like(treedef, g_again))]

    _same_gradient(names, yours, grad_at_x0())
    objective.after_settle = grad_at_x0  # a check leaves the user's state as loss and grad at x0 would
    if objective.mutates:
        warnings.append(f"your loss modifies its inputs in place ({', '.join(objective.mutates)}); gradcheck gave "
                        f"it copies, but in a training loop this corrupts your data")
    dtypes = [_lowest(a.dtype, y.dtype) for a, y in zip(arrays, yours)]
    return Prepared(names=names, x0=objective.x0, dtypes=dtypes, yours=yours, objective=objective,
                    loss_value=f_a, batch_sizes=_batch_sizes(args), warnings=warnings, t_loss=t_loss, t_grad=t_grad,
                    roundoff=slack)


#: Problems up to this size also get their gradient re-run in wider precision (two extra calls).
ROUNDOFF_LIMIT = 200_000
#: The user's measured round-off is allowed up to this fraction of the leaf's largest entry.
ROUNDOFF_CAP = 1e-3


def _own_roundoff(grad: Callable, objective: Objective, arrays: list, treedef: Any, g: Any) -> list | None:
    """Per leaf, how far the user's gradient moves when their code runs in wider precision.

    That is the user's own round-off (1 - tanh(z)**2 at a saturated unit cancels to nothing in
    float64), which is not a bug; a bug is the same in both precisions. A gradient that varies
    between two calls at the same precision gets no allowance, and none exceeds ROUNDOFF_CAP of
    the leaf's scale.
    """
    if sum(a.size for a in arrays) > ROUNDOFF_LIMIT:
        return None
    wide = np.longdouble if any(a.dtype == np.float64 for a in arrays) else np.float64
    if wide is np.longdouble and np.finfo(wide).eps >= np.finfo(np.float64).eps:
        return None  # no wider type on this platform
    try:
        with np.errstate(all="ignore"):
            mine = flatten_like(treedef, g, what="the gradient")
            again = grad(objective.params([a.copy() for a in arrays]), *fresh(objective.user_args),
                         **fresh(objective.user_kwargs))
            if not all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True) for a, b in
                       zip(mine, flatten_like(treedef, again))):
                return None
            params = objective.params([a.astype(wide) for a in arrays])
            g_wide = grad(params, *widen(fresh(objective.user_args), wide),
                          **widen(fresh(objective.user_kwargs), wide))
            theirs = flatten_like(treedef, g_wide, what="the gradient")
            out = []
            for y_user, w in zip(mine, theirs):
                y, w = np.asarray(y_user, dtype=np.float64), np.asarray(w, dtype=np.float64)
                if y.shape != w.shape:
                    return None
                scale = float(np.abs(y).max()) if y.size and np.isfinite(y).all() else 0.0
                cap = ROUNDOFF_CAP * scale
                out.append(np.minimum(np.nan_to_num(np.abs(y - w), nan=0.0, posinf=0.0), cap))
            return out
    except SystemExit as exc:  # a later call of the gradient that ends the program is the user's error
        raise user_error(exc, "gradient function") from exc
    except Exception:  # noqa: BLE001 - code that cannot run wider simply gets no allowance
        return None


def _shared_memory(names: Sequence[str], leaves: Sequence[Any]) -> list[str]:
    """Warnings for parameters that are views of one another (or the same array)."""
    arrays = [(n, x) for n, x in zip(names, leaves) if isinstance(x, np.ndarray) and x.size]
    out = []
    for i, (n1, a) in enumerate(arrays):
        for n2, b in arrays[i + 1:]:
            if not np.may_share_memory(a, b):
                continue
            try:
                shared = np.shares_memory(a, b, max_work=10_000)
            except Exception:  # noqa: BLE001 - numpy's TooHardError: too costly to decide, assume shared
                shared = True
            if shared:
                out.append(f"parameters '{n1}' and '{n2}' share memory (one is a view of the other, or the same "
                           f"array): gradcheck checks each as an independent copy, as your loss sees them, but in "
                           f"a training loop an update to one also changes the other")
    return out


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


def _per_leaf_sample(pools: Sequence[Any], count: int, rng: np.random.Generator) -> list:
    """Up to `count` distinct elements per leaf, drawn from each pool (a size or an index array)."""
    out = []
    for pool in pools:
        n = pool if isinstance(pool, (int, np.integer)) else len(pool)
        out.append(np.sort(rng.choice(pool, size=min(n, count), replace=False)) if n else np.arange(0))
    return out


def _union(a: list, b: list) -> list:
    return [np.union1d(x, y).astype(np.int64) for x, y in zip(a, b)]


#: Share of the budget element-wise finite differences may spend on every element: small when
#: an exact reference (JAX) already compares every element, larger when differences are the reference.
EXHAUSTIVE_SHARE = {True: 0.1, False: 0.4}
#: Seconds the element-wise sample beside a validated JAX gradient may take (2 per leaf at least).
VALIDATION_SECONDS = 0.1
#: Element-wise differences expected to take longer than this (seconds) are worth compiling a
#: batched loss for; a batch call costs at least this fraction of a numpy loss call per row.
BATCH_WORTH = 0.5
BATCH_BEST_CASE = 1 / 8


def element_seconds(prep: Prepared, batched: Any = None) -> float:
    """Seconds of finite differences per element: 6 loss calls, numpy or batched."""
    numpy_cost = 6 * max(prep.t_loss, 2e-5) + 1e-5
    return min(numpy_cost, 6 * batched.seconds_per_row) if batched is not None else numpy_cost


def affordable_elements(prep: Prepared, budget: float, max_elements: int | None, *, exact: bool = False,
                        batched: Any = None) -> int:
    """How many elements element-wise finite differences can visit within their share of the budget."""
    if max_elements is not None:
        return int(max_elements)
    return int(budget * EXHAUSTIVE_SHARE[exact] / element_seconds(prep, batched))


def batched_differences(prep: Prepared, refs: Mapping, elements: int, seconds: float) -> Any:
    """The loss batched under JAX (see jax_ref.batched_loss), when it can pay off, else None.

    Worth building (it compiles) only with the JAX reference running, a float64 loss, and
    `elements` element-wise differences that would take numpy longer than BATCH_WORTH seconds
    yet could fit in `seconds` at the best batched speed. Kept only if a row is cheaper than a call.
    """
    numpy_cost = elements * element_seconds(prep)
    if "jax" not in refs or prep.objective.eps > np.finfo(np.float64).eps or numpy_cost < BATCH_WORTH \
            or numpy_cost * BATCH_BEST_CASE > seconds:
        return None
    from .references.jax.reference import batched_loss

    batched = batched_loss(prep.objective)
    return batched if batched is not None and batched.seconds_per_row < prep.t_loss else None


def disagreeing(prep: Prepared, ref: ReferenceGradient, per_leaf: int) -> list:
    """Per leaf, the elements where the user's gradient differs most from an exact reference."""
    out = []
    for k, (y, x) in enumerate(zip(prep.yours, prep.x0)):
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


def _validate_exact(prep: Prepared, ref: ReferenceGradient, seed: int) -> list:
    """Projections of an exact reference's gradient against finite differences (2 directions)."""
    from .fast import masked_direction, project

    rng = np.random.default_rng(seed + 2)
    n = len(prep.x0)
    grads = [np.nan_to_num(v) for v in ref.values]
    tols = [default_tolerances("float64")[0]] * n
    out = []
    for label in ("random signs", "random signs (second)"):
        v = [masked_direction(x, rng, np.arange(x.size)) if x.size else None for x in prep.x0]
        out.append(project(prep.objective, prep.x0, grads, v, prep.loss_value, tols, [0.0] * n,
                           f"{ref.name} gradient: {label}"))
    return out


def _localise(prep: Prepared, seed: int, max_tests: int = 400) -> tuple[list, list, list]:
    from .fast import localise

    tol = [default_tolerances(d) for d in prep.dtypes]
    atols = []
    for (rtol, atol_rel), y in zip(tol, prep.yours):
        atols.append(atol_rel * (float(np.abs(y).max()) if y.size and np.isfinite(y).all() else 0.0))
    yours = [y if y.shape == x.shape else np.zeros_like(x) for y, x in zip(prep.yours, prep.x0)]
    return localise(prep.objective, prep.x0, yours, prep.names, prep.loss_value,
                    [t[0] for t in tol], atols, seed=seed, max_tests=max_tests)


def run_reference(name: str, prep: Prepared, selection: list, explicit: bool, seed: int,
                  budget: float = DEFAULT_BUDGET, **options: Any) -> tuple[ReferenceGradient | None, ReferenceStatus]:
    """Run one reference; a failure is an error if it was asked for by name, else a status."""
    start = time.perf_counter()
    try:
        ref = _REFERENCE_RUNNERS[name](prep, selection, seed, budget, **options)
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


def _numeric(prep: Prepared, selection: list, seed: int, budget: float = DEFAULT_BUDGET,
             batched: Any = None, deadline: float | None = None, progress: Any = None) -> ReferenceGradient:
    from .references.numeric import numeric_gradient

    # Complex step refines every element it visits at up to 4x a real call's cost: worth it when
    # the differences are the reference for every element, not for a sample beside JAX or projections.
    sampled = sum(len(s) for s in selection) < sum(x.size for x in prep.x0)
    return numeric_gradient(prep.objective, selection, f0=prep.loss_value, names=prep.names,
                            use_complex=not sampled and "auto", batched=batched, deadline=deadline,
                            call_seconds=prep.t_loss, progress=progress)


def _jax(prep: Prepared, selection: list, seed: int, budget: float = DEFAULT_BUDGET, asked: bool = False,
         **_: Any) -> ReferenceGradient:
    from .references.jax.reference import TRACE_SECONDS, jax_gradient

    # Tracing may take half of what is left (compiling takes about as long again); unless JAX was
    # asked for by name, at most TRACE_SECONDS or a tenth of the budget: other references wait.
    # A small loss traces in milliseconds: TRACE_FLOOR lets it, however small the budget.
    share = max(0.5 * budget, TRACE_SECONDS) if asked else min(0.5 * budget, max(TRACE_SECONDS, 0.1 * budget))
    share = max(share, TRACE_FLOOR)
    # Op by op (Python control flow on values) each operation compiles on its first use: three times
    # the share, within half of what is left.
    eager = max(share, min(EAGER_FACTOR * share, 0.5 * budget))
    return jax_gradient(prep.objective, selection, f0=prep.loss_value, trace_seconds=share, eager_seconds=eager)


def _sympy(prep: Prepared, selection: list, seed: int, budget: float = DEFAULT_BUDGET, asked: bool = False,
           **_: Any) -> ReferenceGradient:
    from .references.sympy.reference import sympy_gradient

    total = sum(x.size for x in prep.x0)
    if total <= SYMPY_ALL_SYMBOLS:
        # `budget` is what is left of the check's; unless SymPy was asked for by name, a learner's
        # small network waits a tenth of the default budget for it at most.
        cap = budget if asked else min(budget, SYMPY_ALL_SYMBOLS_SHARE * DEFAULT_BUDGET)
        return sympy_gradient(prep.objective, [np.arange(x.size) for x in prep.x0], f0=prep.loss_value,
                              time_budget=cap)
    return sympy_gradient(prep.objective, _sample(selection, SYMPY_SAMPLE, seed), max_elements=SYMPY_SAMPLE,
                          f0=prep.loss_value, time_budget=min(SYMPY_SAMPLE_SECONDS, SYMPY_BUDGET_SHARE * budget))


def _sample(selection: list, count: int, seed: int) -> list:
    """At most `count` elements of a selection, spread over the leaves."""
    per_leaf = max(1, count // max(len(selection), 1))
    return _per_leaf_sample(selection, per_leaf, np.random.default_rng(seed + 1))


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
    for k, (name, y, dtype) in enumerate(zip(prep.names, prep.yours, prep.dtypes)):
        ref = combined[name]
        if y.shape != ref.value.shape:
            results.append(diagnose_shape(name, y, ref, prep.batch_sizes, dtype=dtype))
            continue
        slack = prep.roundoff[k] if prep.roundoff is not None else None
        cmp = compare_leaf(y, ref, dtype, rtol, atol, slack=slack)
        if cmp.unresolved is not None and cmp.unresolved.any():
            where = ", ".join(f"{name}[{', '.join(map(str, ix))}]" for ix in np.argwhere(cmp.unresolved)[:5])
            warnings.append(f"{name}: {int(cmp.unresolved.sum())} element(s) were NOT checked ({where}): the finite-"
                            f"difference estimate there is too uncertain to judge (the loss is noisy or changes "
                            f"faster than any step can follow); check them with against='jax' or 'sympy'")
        results.append(diagnose(name, cmp, combined, prep.batch_sizes, dtype=dtype, x=prep.x0[k]))
    return results, warnings


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
    total = sum(x.size for x in prep.x0)
    exact = "jax" in refs
    batched = batched_differences(prep, refs, total if max_elements is None else min(total, max_elements),
                                  budget * EXHAUSTIVE_SHARE[exact])
    affordable = affordable_elements(prep, budget, max_elements, exact=exact, batched=batched)
    rng = np.random.default_rng(seed)
    out = NumericPlan(selection=[np.arange(x.size) for x in prep.x0], plan={"numeric": "exhaustive"}, projections=[],
                      failed_leaves=[False] * len(prep.x0), warnings=[])
    call = max(prep.t_loss, 2e-5)
    if total > affordable and exact:
        if 8 * call <= 0.5 * budget:
            out.projections = _validate_exact(prep, refs["jax"], seed)
            out.validated.append("jax")
        else:  # the one directional test of gradcheck.consensus still validates it, if affordable
            out.plan.setdefault("not_afforded", []).append(
                f"two finite-difference projections validating the jax gradient (8 calls of your loss, "
                f"{8 * call:.2g} s)")
        if all(p.ok for p in out.projections):
            # At least 2 per leaf: the time budget (the differences' deadline) cuts a costly loss short.
            # The sample confirms a validated gradient element-wise: a learner waits for it, so it
            # costs at most VALIDATION_SECONDS beyond those two.
            quick = int(VALIDATION_SECONDS / (element_seconds(prep, batched) * len(prep.x0)))
            per_leaf = max(2, min(8, affordable // (3 * len(prep.x0)), quick))
            sample = _per_leaf_sample([x.size for x in prep.x0], per_leaf, rng)
            out.selection = _union(sample, disagreeing(prep, refs["jax"], per_leaf))
            out.plan["numeric"] = "validation sample (every element compared against jax)"
        else:
            out.warnings.append("the jax gradient failed its finite-difference projections; it was set aside and "
                                "the check fell back to projections and localisation")
            set_aside(refs, statuses, "jax", "disagrees with finite differences")
            batched = None  # the same re-run of the loss: not to be trusted either
    if total > affordable and "jax" not in refs:
        # Each projection is 4 calls of the loss: as many as half of the budget pays for.
        max_tests = int(min(400, 0.5 * budget / (4 * call)))
        if max_tests < 400:
            out.plan.setdefault("not_afforded", []).append(
                f"more than {max_tests} projections for localisation (4 calls of your loss each, {4 * call:.2g} s)")
        suspects, tests, out.failed_leaves = _localise(prep, seed, max_tests)
        out.projections += tests
        per_leaf = max(2, min(16, affordable // (2 * len(prep.x0))))
        out.selection = _union(_per_leaf_sample([x.size for x in prep.x0], per_leaf, rng), suspects)
        out.plan["numeric"] = "projections, localisation and a sample"
    out.plan["numeric_elements"] = int(sum(len(s) for s in out.selection))
    if batched is not None:
        out.plan["numeric_batch"] = {"rows_per_call": batched.rows, "seconds_per_row": batched.seconds_per_row}
    out.batched = batched
    return out


def check(loss: Callable | None = None, grad: Callable | None = None, params: Any = None,
          args: Sequence[Any] = (), *, value_and_grad: Callable | None = None, kwargs: dict | None = None,
          against: Any = "auto", rtol: float | None = None, atol: float | None = None, seed: int = 0,
          budget: float | None = None, max_elements: int | None = None, title: str = "",
          progress: Any = "auto") -> Report:
    """Check a hand-written gradient against the references; returns a Report (never raises on mismatch).

    `loss(params, *args) -> float` and `grad(params, *args) -> same structure as params` (or one
    `value_and_grad(params, *args) -> (loss, grads)`). `against` names references among
    "numeric", "jax", "sympy" ("auto": every one that can run). `rtol`/`atol` override the
    dtype-based defaults (`gradcheck.compare.TOLERANCES`); `seed` fixes any sampling; `budget`
    (seconds) bounds the wall time of the whole check: the references, the plan and the calls of
    the user's code are fitted into it (finite differences are exhaustive when they fit, evaluated
    in batches under JAX when the loss traces and that is cheaper); what did not fit is listed
    in `report.plan["not_afforded"]`. Only the least that still gives a verdict (the user's own
    calls, one reference, and with finite differences alone a small sample) runs whatever the
    budget; `max_elements` caps element-wise differences. `progress` shows the differences'
    progress ("auto": on a terminal or in a notebook; False: off; see `gradcheck.progress`).
    """
    started = time.perf_counter()
    names, explicit = normalize_against(against)
    _check_options(rtol, atol, budget, seed, max_elements)
    budget = DEFAULT_BUDGET if budget is None else float(budget)
    deadline = started + budget
    prep = prepare(loss, grad, params, args, value_and_grad=value_and_grad, kwargs=kwargs)
    # The user's state (a global the loss sets) is left at their parameters, not a perturbed point.
    with prep.objective.settled():
        refs: dict[str, ReferenceGradient] = {}
        statuses: dict[str, ReferenceStatus] = {}
        everything = [np.arange(x.size) for x in prep.x0]
        not_afforded: list[str] = []

        def left() -> float:
            return max(0.0, deadline - time.perf_counter())

        def run(name: str, selection: list, **options: Any) -> None:
            ref, statuses[name] = run_reference(name, prep, selection, explicit, seed, left(), **options)
            if ref is not None:
                refs[name] = ref

        if "jax" in names and not explicit and "jax" not in sys.modules and left() < 2 * JAX_IMPORT_SECONDS:
            statuses["jax"] = ReferenceStatus(name="jax", ran=False, reason=f"not affordable: importing JAX takes "
                                              f"about {JAX_IMPORT_SECONDS:g} s and the time budget (budget={budget:g} s) "
                                              f"had {left():.2g} s left")
            not_afforded.append("the JAX reference (importing jax)")
        elif "jax" in names:
            run("jax", everything, asked=explicit)
        numeric = NumericPlan(selection=everything, plan={}, projections=[], failed_leaves=[False] * len(prep.x0),
                              warnings=[])
        total = total_elements(prep)
        sympy_next = "sympy" in names and (explicit or (total <= SYMPY_AUTO_LIMIT and left() >= 2 * sympy_seconds(prep)))
        # Kept back from the differences: SymPy's share, and a directional test for each exact reference.
        reserve = min(SYMPY_SAMPLE_SECONDS, SYMPY_BUDGET_SHARE * budget) if sympy_next else 0.0
        if "numeric" in names:
            numeric = plan_numeric(prep, refs, statuses, max(left() - reserve, 0.0), max_elements, seed)
            tests = sum(1 for n in refs if n not in numeric.validated) + int(sympy_next)
            reserve += tests * VET_CALLS * max(prep.t_loss, 2e-5)
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
        if "sympy" in names and not explicit and total > SYMPY_AUTO_LIMIT:
            statuses["sympy"] = ReferenceStatus(
                name="sympy", ran=False, reason=f"{total} parameters is more than the {SYMPY_AUTO_LIMIT} that auto gives "
                f"SymPy; ask for it with against=('sympy', ...) to sample a few elements symbolically")
        elif "sympy" in names and not explicit and left() < sympy_seconds(prep):
            statuses["sympy"] = ReferenceStatus(name="sympy", ran=False, reason=f"not affordable: SymPy needs about "
                                                f"{sympy_seconds(prep):.2g} s and the time budget (budget={budget:g} s) "
                                                f"had {left():.2g} s left")
            not_afforded.append("the SymPy reference")
        elif "sympy" in names:
            run("sympy", numeric.selection, asked=explicit)
        vetted = vet(prep.objective, prep.x0, prep.loss_value, refs, statuses, prep.names, seed,
                     skip=numeric.validated, deadline=deadline, call_seconds=prep.t_loss, not_afforded=not_afforded)
        ordered = [statuses[n] for n in names if n in statuses]
        if not refs:
            raise ReferenceUnavailable("no reference could run: " + "; ".join(f"{s.name}: {s.reason}" for s in ordered))
        results, warnings = compare_all(prep, list(refs.values()), rtol, atol)
        results = _projection_failures(results, numeric.failed_leaves, numeric.projections)
        plan = dict(numeric.plan)
        if numeric.projections:
            plan["projections"] = [p.to_dict() for p in numeric.projections]
        plan["elements"] = total
        if not_afforded:
            plan["not_afforded"] = not_afforded
        plan["seconds"] = round(time.perf_counter() - started, 4)
        warnings = prep.warnings + numeric.warnings + vetted + warnings + [
            f"{s.name} reference skipped: {s.reason}" for s in ordered if not s.ran]
        # SymPy's formulas are worked out when read: keep its mapping as it is.
        formulas = ChainMap(*(r.formulas for r in refs.values() if r.formulas))
        # The line where each failing gradient goes wrong (never raises); within the budget's 10%
        # tolerance: blame, which records one call of the loss and of the gradient, never takes a
        # check past it.
        allowance = left() + BLAME_OVERRUN * budget
        if not all(p.passed for p in results) and allowance < 2 * (prep.t_loss + prep.t_grad):
            plan.setdefault("not_afforded", []).append(
                f"blame (it records a call of your loss and of your gradient; {allowance:.2g} s were left)")
        elif not all(p.passed for p in results):
            from .blame import attach_blame

            use_jax = "jax" in refs and _jax_adjoints_affordable(prep, allowance)
            if "jax" in refs and not use_jax:
                plan.setdefault("not_afforded", []).append(
                    f"blame's JAX pass (it compiles once per loss; {allowance:.2g} s were left): blame "
                    f"fell back to finite differences on the intermediates")
            results = attach_blame(results, prep, grad, value_and_grad, budget=budget, left=allowance,
                                   use_jax=use_jax)
            plan["seconds"] = round(time.perf_counter() - started, 4)
        return Report(parameters=tuple(results), references=tuple(ordered), warnings=tuple(warnings),
                      loss_value=prep.loss_value, seed=seed, plan=plan, formulas=formulas, title=title)


#: The share of the budget blame may use past it (a check stays within 10% of its budget).
BLAME_OVERRUN = 0.05
#: Seconds importing JAX takes (and compiling a first gradient), paid once per process: a
#: budget that cannot pay it twice over leaves JAX out.
JAX_IMPORT_SECONDS = 1.5
#: Seconds importing SymPy takes, paid by the first check that uses it in a process.
SYMPY_IMPORT_SECONDS = 1.0
#: Calls of the user's loss a SymPy run makes (value checks, the symbolic run, one-sided re-runs).
SYMPY_CALLS = 12


def _jax_adjoints_affordable(prep: Prepared, seconds: float) -> bool:
    """Whether blame's JAX pass fits in `seconds`: compiled before, or its first run (one
    gradient's compilation, as the JAX reference's first gradient took) fits twice over."""
    from .references.jax import adjoints as jax_adjoints, reference as jax_ref

    first = jax_ref.first_gradient_seconds(prep.objective)
    return jax_adjoints.ready(prep.objective) or (first is not None and 2 * first <= seconds)


def sympy_seconds(prep: Prepared) -> float:
    """A floor on what the SymPy reference costs here: its import if not loaded, and its loss calls."""
    start = 0.0 if "sympy" in sys.modules else SYMPY_IMPORT_SECONDS
    return start + SYMPY_CALLS * max(prep.t_loss, 2e-5) + VET_CALLS * max(prep.t_loss, 2e-5)


def total_elements(prep: Prepared) -> int:
    """How many scalars the parameters hold."""
    return int(sum(x.size for x in prep.x0))


def _projection_failures(results: list, failed_leaves: list, projections: list) -> list:
    """A leaf that failed a projection fails, even if its sampled elements happened to pass."""
    out = []
    for p, failed in zip(results, failed_leaves):
        if failed and p.passed:
            bad = [t for t in projections if t.label.startswith(f"{p.name}:") and not t.ok]
            where = bad[0] if bad else None
            detail = (f"{p.name} fails a projection check ({where.label}: yours {where.yours:.6g} vs finite "
                      f"differences {where.numeric:.6g})") if where else f"{p.name} fails a projection check"
            if p.checked:
                detail += " although its sampled elements pass; the error is spread over many small elements"
                cause = "many elements slightly wrong: a small systematic term (a regulariser, a mean) missing"
            else:
                if where is not None and where.numeric:
                    detail += f": along that direction yours is {where.yours / where.numeric:.4g} times the loss's slope"
                cause = (f"the projection shows {p.name}'s gradient is wrong, not where: no element was checked on "
                         f"its own within the budget; give the check more time (budget=...) to find the elements")
            p = replace(p, passed=False, diagnosis="wrong", detail=detail, cause=cause)
        out.append(p)
    return out


def _check_options(rtol: Any, atol: Any, budget: Any, seed: Any, max_elements: Any) -> None:
    """Refuse option values that are not what their documentation says, naming the option."""
    for name, value in (("seed", seed), ("max_elements", max_elements)):
        if value is None and name == "max_elements":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidCase(f"{name}={value!r} is not valid: give a non-negative integer"
                              + (", or None for the default." if name == "max_elements" else "."))
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
