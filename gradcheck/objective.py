"""The user's loss as a safe function of flat parameter leaves.

Every call sees inputs that cannot hurt the caller: the caller's arrays are copied once,
and each evaluation gets either read-only views (cheap) or, once the user's code is seen to
write into its inputs, fresh copies.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import InvalidCase
from .tree import TreeDef, fresh, readonly, unflatten, widen  # fresh, widen: also imported from here
from .usercode.frames import USER_FAILURES, user_error


def value_eps(value: Any) -> float:
    """Machine epsilon of the precision a loss value was computed in (float64 for Python floats)."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and dtype.kind in "fc":
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def as_scalar(value: Any, who: str, *, allow_complex: bool = False) -> Any:
    """Check a loss value is one number; return it as float (or complex)."""
    if value is None:
        raise InvalidCase(f"{who} returned None: it must return the loss as a single number (did you forget `return`?).")
    if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_:
        raise InvalidCase(f"{who} returned a boolean ({value!r}); it must return the loss as a number "
                          f"(a comparison such as `loss > 0` returned by mistake?).")
    if isinstance(value, (str, bytes)):
        raise InvalidCase(f"{who} returned a string ({value!r:.40}); it must return the loss as a number.")
    if isinstance(value, (list, tuple, dict)):
        raise InvalidCase(
            f"{who} returned a {type(value).__name__}; it must return the loss as a single number "
            f"(sum or average the per-example losses, e.g. np.mean(losses))."
            + (" If it returns (loss, grads), pass it as value_and_grad=f instead of loss and grad."
               if isinstance(value, (tuple, list)) and len(value) == 2 else "")
        )
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001
        raise InvalidCase(f"{who} returned {type(value).__name__}, not a number.") from None
    if arr.dtype == object or arr.dtype.kind not in "biufc":
        raise InvalidCase(f"{who} returned {type(value).__name__} of dtype {arr.dtype}, not a number.")
    if arr.size != 1:
        raise InvalidCase(
            f"{who} returned an array of shape {arr.shape}; a loss must be a single number. "
            f"Reduce it with np.sum(...) or np.mean(...) over the examples."
        )
    scalar = arr.reshape(()).item()
    if isinstance(scalar, complex) and not allow_complex:
        scalar = scalar.real
    return scalar if allow_complex else float(scalar)


class Objective:
    """loss(params, *args) viewed as a function of a list of float leaves."""

    def __init__(self, loss: Callable, treedef: TreeDef, x0: Sequence[np.ndarray], args: tuple,
                 kwargs: dict | None = None, scalar_leaves: Sequence[bool] = (), name: str = "loss") -> None:
        self.loss = loss
        self.treedef = treedef
        self.x0 = [np.asarray(x, dtype=np.float64, order="C") for x in x0]  # flat index = C order
        self.x0_user = list(x0)  # private copies in the caller's dtypes (never written: calls get copies)
        try:
            self.user_args = fresh(args)  # private copy in the caller's dtypes: what the user's gradient sees
            self.user_kwargs = fresh(kwargs or {})
        except RecursionError:
            raise InvalidCase("args nest too deeply or contain themselves (a list that holds itself?).") from None
        self.args = widen(self.user_args)  # what the loss sees: low-precision floats widened to float64
        self.kwargs = widen(self.user_kwargs)
        self._ro_args, self._ro_kwargs = readonly(self.args), readonly(self.kwargs)  # views made once
        self.eps = float(np.finfo(np.float64).eps)  # precision the loss computes in (raised if it casts down)
        self.scalar_leaves = list(scalar_leaves) or [False] * len(self.x0)
        self.name = name
        self.copy_mode = False  # becomes True once the user's code is seen writing into its inputs
        self.mutates: list[str] = []
        self.calls = 0
        self.after_settle: Callable[[], Any] | None = None  # the user's gradient at x0, run by settle()

    def params(self, leaves: Sequence[Any]) -> Any:
        """A pytree of the given leaves, scalars restored to Python numbers."""
        out = [x.item() if s and np.ndim(x) == 0 else x for x, s in zip(leaves, self.scalar_leaves)]
        return unflatten(self.treedef, out)

    def __call__(self, leaves: Sequence[np.ndarray], *, allow_complex: bool = False) -> Any:
        """The loss at these leaves (which are never modified)."""
        self.calls += 1
        if not self.copy_mode:
            try:
                value = self._call(_readonly_leaves(leaves), self._ro_args, self._ro_kwargs)
                return self._scalar(value, allow_complex)
            except InvalidCase:
                raise
            except USER_FAILURES:  # maybe a write into a read-only input; retry with copies
                self.copy_mode = True
        leaves_c, args_c, kwargs_c = fresh(list(leaves)), fresh(self.args), fresh(self.kwargs)
        try:
            value = self._call(leaves_c, args_c, kwargs_c)
        except USER_FAILURES as exc:
            raise user_error(exc, self.name) from exc
        self._note_mutation(leaves, leaves_c, args_c)
        return self._scalar(value, allow_complex)

    def settle(self) -> None:
        """Call the user's loss (then gradient) once more at the caller's parameters.

        Finite differences and complex steps call the loss at perturbed points; a loss that keeps
        state (a module global, a class attribute, a cache on `self`) would otherwise be left
        holding the last perturbed, possibly complex, value. After a check the user's state is
        what one call of loss and gradient at their own parameters leaves. Errors are not raised
        again here: the check has already reported them, or the loss ran at this point before.
        """
        try:
            self._call(fresh(self.x0_user), fresh(self.user_args), fresh(self.user_kwargs))
            if self.after_settle is not None:
                self.after_settle()
        except USER_FAILURES:  # noqa: S110 - see the docstring
            pass

    @contextmanager
    def settled(self) -> Iterator[None]:
        """Run a check's body, then settle(): on return and on errors, not after Ctrl-C (the user
        asked to stop, so their code is not called again)."""
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException:
            self.settle()
            raise
        self.settle()

    def _scalar(self, value: Any, allow_complex: bool) -> Any:
        scalar = as_scalar(value, self.name, allow_complex=allow_complex)
        self.eps = max(self.eps, value_eps(value))
        return scalar

    def _call(self, leaves: list, args: tuple, kwargs: dict) -> Any:
        return self.loss(self.params(leaves), *args, **kwargs)

    def _note_mutation(self, leaves: Sequence[np.ndarray], leaves_c: list, args_c: tuple) -> None:
        if not self.mutates:
            from .tree import leaf_names

            self.mutates = mutations(leaf_names(self.treedef), leaves, leaves_c, self.args, args_c)

    def perturb(self, leaves: Sequence[np.ndarray], k: int, flat_index: int, value: Any) -> list:
        """A copy of `leaves` with one element of leaf k replaced (only that leaf is copied)."""
        out = list(leaves)
        leaf = np.array(out[k], dtype=np.result_type(out[k], np.asarray(value)), copy=True, order="C")
        leaf.reshape(-1)[flat_index] = value
        out[k] = leaf
        return out


def _readonly_leaves(leaves: Sequence[Any]) -> list:
    """Leaves as read-only arrays, reusing those that already are."""
    return [x if isinstance(x, np.ndarray) and not x.flags.writeable else readonly(x) for x in leaves]


def mutations(names: Sequence[str], before: Sequence[Any], after: Sequence[Any], args_before: Sequence[Any],
              args_after: Sequence[Any]) -> list[str]:
    """The parameters and arguments the user's code wrote into, e.g. ["parameter 'W'", "argument args[0]"]."""
    from .tree import flatten

    out = [f"parameter '{name}'" for name, b, a in zip(names, before, after) if not same_value(b, a)]
    arg_names, arg_before, _ = flatten(list(args_before))
    _, arg_after, _ = flatten(list(args_after))
    out += [f"argument args{name}" for name, b, a in zip(arg_names, arg_before, arg_after)
            if isinstance(b, np.ndarray) and not same_value(b, a)]
    return out


def same_value(a: Any, b: Any) -> bool:
    """Whether a and b hold the same values (NaN equal to NaN), incomparable counting as different."""
    try:
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    except Exception:  # noqa: BLE001 - incomparable means changed
        return False
