"""The case: the check's inputs validated, the user's loss and gradient called once, a frozen record.

`prepare` refuses what cannot be checked (naming the parameter and the way out), wraps the loss
in the safe Objective (copies in, copies out, the user's exceptions as UserCodeError), calls the
user's gradient on fresh copies, and measures what the plan needs: the time of one call of each,
the user's own round-off, the batch sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import InvalidCase, NondeterministicGradient, NondeterministicLoss
from .objective import Objective, fresh, mutations, widen
from .tree import flatten, flatten_like, validate_leaf
from .usercode.frames import call_user, user_error


@dataclass(frozen=True)
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
    if not callable(loss):
        raise _not_a_function("loss", loss)
    if not callable(grad):
        raise _not_a_function("grad", grad)
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
                shared = np.shares_memory(a, b, max_work=10_000)  # type: ignore[arg-type]  # numpy's stub allows only -1 and 0
            except Exception:  # noqa: BLE001 - numpy's TooHardError: too costly to decide, assume shared
                shared = True
            if shared:
                out.append(f"parameters '{n1}' and '{n2}' share memory (one is a view of the other, or the same "
                           f"array): gradcheck checks each as an independent copy, as your loss sees them, but in "
                           f"a training loop an update to one also changes the other")
    return out


def _not_a_function(what: str, value: Any) -> InvalidCase:
    return InvalidCase(f"{what} must be a function {what}(params, *args), got {type(value).__name__}.")


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



