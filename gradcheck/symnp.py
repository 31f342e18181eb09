"""A numpy-compatible namespace over object arrays of SymPy expressions (the SymPy reference's numpy).

The SymPy reference re-runs the learner's loss with `np` bound to this module. Parameters
arrive as `SymArray`s: ndarrays of dtype object whose elements are SymPy expressions. Numpy's
own machinery does the structure (indexing, broadcasting, reshape, `@`, sum, mean, var), and
`SymArray.__array_ufunc__` gives each elementwise function its symbolic meaning, so array
methods (`z.max(axis=1)`, `x.sum()`) work as well as module functions (`np.exp(z)`).

Floats are lifted to SymPy Floats at the working precision, so data-only arithmetic is also
done to ~`dps` digits rather than float64. `maximum`, `minimum`, `clip`, `abs` and `sign` stay
symbolic (Max, Min, Abs, sign): their derivatives exist away from ties. Comparisons such as
`z > 0` are evaluated at the point being differentiated (as numpy, JAX and any autodiff do),
giving plain boolean masks; a comparison that is an exact tie is recorded, because the
derivative may have a kink there. Anything without a symbolic counterpart raises
`NoSymbolicCounterpart` (an AttributeError) naming the numpy function.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import sympy


class NoSymbolicCounterpart(AttributeError):
    """A numpy function the SymPy reference cannot run symbolically."""

    def __init__(self, op: str, hint: str = "") -> None:
        self.op = op
        message = f"SymPy reference: numpy function np.{op} has no symbolic counterpart"
        super().__init__(message + (f"; {hint}" if hint else ""))


@dataclass
class Evaluation:
    """Where symbolic values are evaluated: working precision, the point, ties seen."""

    dps: int = 50
    point: dict | None = None  # Symbol -> exact value; None: comparisons stay symbolic
    ties: list = field(default_factory=list)  # free symbols of comparisons that tied


_EVALUATION: contextvars.ContextVar[Evaluation] = contextvars.ContextVar("gradcheck_symnp")


def current() -> Evaluation:
    """The active evaluation settings (a default one outside `evaluation(...)`)."""
    try:
        return _EVALUATION.get()
    except LookupError:
        return Evaluation()


@contextlib.contextmanager
def evaluation(point: dict | None = None, dps: int = 50) -> Iterator[Evaluation]:
    """Run symbolic code with comparisons decided at `point`, numbers lifted to `dps` digits."""
    state = Evaluation(dps=dps, point=point)
    token = _EVALUATION.set(state)
    try:
        yield state
    finally:
        _EVALUATION.reset(token)


# --- lifting numbers and arrays -------------------------------------------------------------

def _number(x: Any) -> Any:
    """A Python/numpy scalar as an exact or `dps`-digit SymPy number; expressions unchanged."""
    if isinstance(x, (builtins.bool, np.bool_)):
        return sympy.Integer(int(x))
    if isinstance(x, (int, np.integer)):
        return sympy.Integer(int(x))
    if isinstance(x, (float, np.floating)):
        return sympy.Float(float(x), current().dps)  # a float64 is exact at any precision
    return x


_lift_elements = np.frompyfunc(_number, 1, 1)


def _operand(x: Any) -> Any:
    """An input for an object-dtype numpy loop: plain object arrays or SymPy scalars."""
    if isinstance(x, SymArray):
        return x.view(np.ndarray)
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return x
        if x.dtype.kind == "b":
            return x.astype(np.int64).astype(object)  # sympy cannot multiply by True
        if x.dtype.kind in "iu":
            return x
        return np.asarray(_lift_elements(x), dtype=object)
    if isinstance(x, (list, tuple)):
        return _operand(asarray(x))
    return _number(x)


def _wrap(result: Any) -> Any:
    """Object arrays become SymArrays and 0-d results scalars, as numpy returns scalars."""
    if isinstance(result, np.ndarray):
        if result.dtype != object:
            return result
        if result.ndim == 0:
            return result[()]
        return result.view(SymArray)
    return result


def is_symbolic(x: Any) -> bool:
    """Whether x is (or contains) a SymPy object."""
    if isinstance(x, sympy.Basic):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype == object and builtins.any(isinstance(v, sympy.Basic) for v in x.flat)
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    return False


def lift(x: Any) -> Any:
    """x as a symbolic value: float arrays become SymArrays of `dps`-digit Floats."""
    if isinstance(x, SymArray):
        return x
    if isinstance(x, np.ndarray):
        return _wrap(np.asarray(_operand(x), dtype=object)) if x.dtype.kind in "fcO" else x
    if isinstance(x, (list, tuple)):
        return lift(asarray(x))
    return _number(x)


def _sym(x: Any) -> "SymArray":
    """x as a SymArray, 0-d for scalars: numpy ufuncs then dispatch to __array_ufunc__."""
    if isinstance(x, SymArray):
        return x
    arr = np.empty((), dtype=object)
    if isinstance(x, (list, tuple)) or isinstance(x, np.ndarray):
        arr = np.asarray(_operand(x), dtype=object)
    else:
        arr[()] = _number(x)
    return arr.view(SymArray)


# --- elementwise semantics ------------------------------------------------------------------

def _log1p(x: Any) -> Any:
    return sympy.log(1 + x)


def _logaddexp(a: Any, b: Any) -> Any:
    return sympy.log(sympy.exp(a) + sympy.exp(b))


def _logaddexp2(a: Any, b: Any) -> Any:
    return sympy.log(2**a + 2**b, 2)


def _clip(x: Any, lo: Any, hi: Any) -> Any:
    if lo is not None:
        x = sympy.Max(x, lo)
    return x if hi is None else sympy.Min(x, hi)


def _heaviside(x: Any, h0: Any) -> Any:
    return sympy.Heaviside(x, h0)


def _finite_at_point(x: Any) -> bool:
    return builtins.bool(np.isfinite(float(_value(x))))


_UNARY: dict[str, Callable] = {
    "exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "tanh": sympy.tanh, "sinh": sympy.sinh,
    "cosh": sympy.cosh, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "arcsin": sympy.asin,
    "arccos": sympy.acos, "arctan": sympy.atan, "arcsinh": sympy.asinh, "arccosh": sympy.acosh,
    "arctanh": sympy.atanh, "absolute": sympy.Abs, "fabs": sympy.Abs, "sign": sympy.sign,
    "log1p": _log1p, "expm1": lambda x: sympy.exp(x) - 1, "exp2": lambda x: 2**x,
    "log2": lambda x: sympy.log(x, 2), "log10": lambda x: sympy.log(x, 10), "square": lambda x: x**2,
    "reciprocal": lambda x: 1 / x, "cbrt": lambda x: sympy.real_root(x, 3),
    "conjugate": sympy.conjugate, "isfinite": _finite_at_point,
}
_BINARY: dict[str, Callable] = {
    "maximum": sympy.Max, "minimum": sympy.Min, "fmax": sympy.Max, "fmin": sympy.Min,
    "logaddexp": _logaddexp, "logaddexp2": _logaddexp2, "arctan2": sympy.atan2,
    "hypot": lambda a, b: sympy.sqrt(a**2 + b**2), "heaviside": _heaviside,
}
#: Ufuncs numpy's own object loops already compute with Python operators.
_ARITHMETIC = {"add", "subtract", "multiply", "true_divide", "divide", "power", "float_power", "pow",
               "matmul", "negative", "positive", "vecdot", "matvec", "vecmat"}
_COMPARISONS: dict[str, Callable] = {
    "greater": operator.gt, "greater_equal": operator.ge, "less": operator.lt,
    "less_equal": operator.le, "equal": operator.eq, "not_equal": operator.ne,
}
_EXTREMA = {"maximum": sympy.Max, "minimum": sympy.Min, "fmax": sympy.Max, "fmin": sympy.Min}
_ALIASES = {"abs": "absolute", "conj": "conjugate", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
            "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "atan2": "arctan2"}


def _value(x: Any) -> Any:
    """x evaluated at the current point (a SymPy Float or number), at the working precision."""
    state = current()
    if not isinstance(x, sympy.Basic):
        return sympy.sympify(x)
    if x.free_symbols and state.point is None:
        raise TypeError(f"cannot evaluate {x} without a point")
    return x.evalf(state.dps, subs=state.point) if x.free_symbols else x.evalf(state.dps)


def _decide(op: Callable, a: Any, b: Any) -> Any:
    """One comparison: decided numerically, at the point when the operands are symbolic."""
    a, b = _number(a), _number(b)
    if not (getattr(a, "free_symbols", None) or getattr(b, "free_symbols", None)):
        symbolic = isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic)
        return builtins.bool(op(_value(a), _value(b)) if symbolic else op(a, b))
    state = current()
    if state.point is None:
        return op(a, b)  # a Relational, as sympy itself would give
    va, vb = _value(a), _value(b)
    if builtins.abs(va - vb) <= 1e-13 * (1 + builtins.max(builtins.abs(va), builtins.abs(vb))):
        state.ties.append(frozenset(sympy.sympify(a - b).free_symbols))
    return builtins.bool(op(va, vb))


def _boolify(out: Any) -> Any:
    """An object result holding only Python bools as a bool array (numpy's dtype for masks)."""
    if isinstance(out, np.ndarray):
        return out.astype(bool) if builtins.all(isinstance(v, builtins.bool) for v in out.flat) else out
    return np.bool_(out) if isinstance(out, builtins.bool) else out


def _compare(name: str, a: Any, b: Any) -> Any:
    return _boolify(np.frompyfunc(functools.partial(_decide, _COMPARISONS[name]), 2, 1)(a, b))


def _reduce_with(fn: Callable, a: np.ndarray, axis: Any, keepdims: bool, many: bool) -> Any:
    """Reduce `a` over `axis` with fn(*row) (many=True) or a pairwise fold."""
    a = np.asarray(a, dtype=object)
    axes = tuple(range(a.ndim)) if axis is None else tuple(np.atleast_1d(axis).tolist())
    axes = tuple(ax % a.ndim for ax in axes) if a.ndim else ()
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    rows = moved.reshape(moved.shape[:a.ndim - len(axes)] + (-1,))
    if rows.shape[-1] == 0:
        raise ValueError("zero-size array to reduction operation which has no identity")
    out = np.empty(rows.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        row = list(rows[idx])
        out[idx] = fn(*row) if many else functools.reduce(fn, row)
    if keepdims:
        out = np.expand_dims(out, axes)
    return out


def _ufunc_call(ufunc: np.ufunc, args: list, kwargs: dict) -> Any:
    name = _ALIASES.get(ufunc.__name__, ufunc.__name__)
    if name in _ARITHMETIC:
        return getattr(np, ufunc.__name__)(*args, **kwargs)
    if name in _COMPARISONS:
        return _compare(name, *args)
    if name == "clip":
        return np.frompyfunc(_clip, 3, 1)(*args)
    if name in _UNARY and len(args) == 1:
        return _boolify(np.frompyfunc(_UNARY[name], 1, 1)(*args))
    if name in _BINARY and len(args) == 2:
        return np.frompyfunc(_BINARY[name], 2, 1)(*args)
    raise NoSymbolicCounterpart(name)


def _ufunc_reduce(ufunc: np.ufunc, arr: Any, kwargs: dict) -> Any:
    name = ufunc.__name__
    axis, keepdims = kwargs.pop("axis", 0), kwargs.pop("keepdims", False)
    initial, where = kwargs.pop("initial", np._NoValue), kwargs.pop("where", True)
    kwargs.pop("dtype", None)
    if where is not True:
        raise NoSymbolicCounterpart(f"{name}.reduce(where=...)")
    if name in _EXTREMA:
        result = _reduce_with(_EXTREMA[name], arr, axis, keepdims, many=True)
    elif name in ("add", "multiply"):
        result = getattr(np, name).reduce(arr, axis=axis, keepdims=keepdims, dtype=object)
    elif name in _BINARY:
        result = _reduce_with(_BINARY[name], arr, axis, keepdims, many=False)
    else:
        raise NoSymbolicCounterpart(f"{name}.reduce")
    if initial is not np._NoValue:
        combine = {"add": operator.add, "multiply": operator.mul}.get(name) or _EXTREMA.get(name)
        if combine is None:
            raise NoSymbolicCounterpart(f"{name}.reduce(initial=...)")
        result = np.frompyfunc(combine, 2, 1)(result, _number(initial))
    return result


# --- the symbolic array ---------------------------------------------------------------------

class SymArray(np.ndarray):
    """An object ndarray of SymPy expressions that gives numpy functions their symbolic meaning."""

    __array_priority__ = 50.0

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None,
                        **kwargs: Any) -> Any:
        args = [_operand(x) for x in inputs]
        if method == "__call__":
            result = _ufunc_call(ufunc, args, kwargs)
        elif method == "reduce":
            result = _ufunc_reduce(ufunc, args[0], kwargs)
        elif ufunc.__name__ in _ARITHMETIC:
            result = getattr(ufunc, method)(*args, **kwargs)
            if method == "at":
                return None
        else:
            raise NoSymbolicCounterpart(f"{ufunc.__name__}.{method}")
        if out is not None:
            target = out[0]
            plain = target.view(np.ndarray) if isinstance(target, SymArray) else target
            plain[...] = result
            return target
        return _wrap(result)

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        kind = np.dtype(dtype).kind
        if kind in "fcO":
            return self.copy()  # symbolic values have no float dtype; keep them exact
        raise NoSymbolicCounterpart(f"ndarray.astype({np.dtype(dtype).name}) of a symbolic array",
                                    "casting a parameter-dependent value to an integer or bool")

    def argmax(self, axis: Any = None, out: Any = None, **kwargs: Any) -> Any:
        return np.argmax(_values_at_point(self), axis=axis, **kwargs)

    def argmin(self, axis: Any = None, out: Any = None, **kwargs: Any) -> Any:
        return np.argmin(_values_at_point(self), axis=axis, **kwargs)

    def std(self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
            keepdims: bool = False, **kwargs: Any) -> Any:
        return sqrt(self.var(axis=axis, ddof=ddof, keepdims=keepdims))

    def __float__(self) -> float:
        raise TypeError("Cannot convert expression to float")


def _values_at_point(a: Any) -> np.ndarray:
    """A float array of a symbolic array's values at the current point (for argmax and the like)."""
    return np.asarray(np.frompyfunc(lambda v: float(_value(v)), 1, 1)(np.asarray(a, dtype=object)),
                      dtype=np.float64)


# --- the namespace: elementwise functions ---------------------------------------------------

def _elementwise(name: str) -> Callable:
    ufunc = getattr(np, name)

    @functools.wraps(ufunc)
    def apply(*args: Any, **kwargs: Any) -> Any:
        return _wrap(ufunc(*[_sym(a) for a in args], **kwargs))

    apply.__name__ = name
    return apply


_ELEMENTWISE = [*_UNARY, *_BINARY, *_ARITHMETIC - {"vecdot", "matvec", "vecmat", "pow"}, *_COMPARISONS,
                "abs", "conj", "arcsin", "arctan2", "clip"]
for _name in sorted(set(_ELEMENTWISE)):
    if hasattr(np, _name) and isinstance(getattr(np, _name), np.ufunc):
        globals()[_name] = _elementwise(_name)
abs = absolute  # noqa: A001,F821 - numpy's name
asin, acos, atan, atan2 = arcsin, arccos, arctan, arctan2  # noqa: F821


def clip(a: Any, a_min: Any = None, a_max: Any = None, **kwargs: Any) -> Any:
    """Elementwise Min(Max(a, a_min), a_max); either bound may be None."""
    return _wrap(np.frompyfunc(_clip, 3, 1)(_operand(_sym(a)), _operand(a_min) if a_min is not None else None,
                                            _operand(a_max) if a_max is not None else None))


def where(condition: Any, x: Any = None, y: Any = None) -> Any:
    """np.where; a symbolic condition (no point set) becomes a Piecewise."""
    if x is None and y is None:
        return np.where(condition)
    cond = np.asarray(condition)
    if cond.dtype != object:
        return _wrap(np.where(cond, _operand(x), _operand(y)))
    pick = np.frompyfunc(lambda c, a, b: sympy.Piecewise((a, c), (b, True)), 3, 1)
    return _wrap(pick(cond, _operand(x), _operand(y)))


# --- the namespace: reductions and structure ------------------------------------------------

def _structural(name: str) -> Callable:
    fn = getattr(np, name)

    @functools.wraps(fn)
    def apply(*args: Any, **kwargs: Any) -> Any:
        if name in _REDUCTIONS and args and isinstance(args[0], (list, tuple)) and is_symbolic(args[0]):
            args = (_sym(args[0]), *args[1:])  # np.max([a, b]) must reduce symbolically
        return _wrap(fn(*args, **kwargs))

    apply.__name__ = name
    return apply


_REDUCTIONS = {"sum", "mean", "prod", "cumsum", "cumprod", "var", "max", "min", "amax", "amin", "average"}


_STRUCTURAL = [
    "sum", "mean", "prod", "cumsum", "cumprod", "var", "max", "min", "amax", "amin", "dot", "vdot", "inner",
    "outer", "tensordot", "einsum", "kron", "trace", "reshape", "ravel", "transpose", "swapaxes", "moveaxis",
    "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack", "hstack", "vstack", "column_stack",
    "atleast_1d", "atleast_2d", "atleast_3d", "tile", "repeat", "split", "array_split", "flip", "fliplr",
    "flipud", "roll", "diag", "diagonal", "triu", "tril", "take", "take_along_axis", "copy", "append",
    "delete", "insert", "full_like", "zeros_like", "ones_like", "empty_like", "average", "pad",
]
for _name in _STRUCTURAL:
    globals()[_name] = _structural(_name)
_sum = globals()["sum"]


def std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
        keepdims: bool = False, **kwargs: Any) -> Any:
    """sqrt(var(a)), symbolically."""
    return sqrt(var(a, axis=axis, ddof=ddof, keepdims=keepdims))  # noqa: F821


def argmax(a: Any, axis: Any = None, **kwargs: Any) -> Any:
    """Index of the largest value at the point being differentiated."""
    return np.argmax(_values_at_point(a), axis=axis, **kwargs) if is_symbolic(a) else np.argmax(a, axis=axis,
                                                                                               **kwargs)


def argmin(a: Any, axis: Any = None, **kwargs: Any) -> Any:
    """Index of the smallest value at the point being differentiated."""
    return np.argmin(_values_at_point(a), axis=axis, **kwargs) if is_symbolic(a) else np.argmin(a, axis=axis,
                                                                                               **kwargs)


def matmul(a: Any, b: Any, **kwargs: Any) -> Any:
    """a @ b on symbolic arrays."""
    return _wrap(np.matmul(_operand(a), _operand(b), **kwargs))


# --- the namespace: array creation ----------------------------------------------------------

def _floating(dtype: Any) -> bool:
    return dtype is None or np.dtype(dtype).kind in "fcO"


def array(obj: Any, dtype: Any = None, copy: bool = True, **kwargs: Any) -> Any:
    """np.array; anything holding SymPy values becomes a SymArray (float dtypes are ignored)."""
    if isinstance(obj, SymArray) or is_symbolic(obj):
        if not _floating(dtype):
            raise NoSymbolicCounterpart(f"array(..., dtype={np.dtype(dtype).name}) of symbolic values")
        out = np.array(_operand(obj) if isinstance(obj, np.ndarray) else obj, dtype=object, copy=copy)
        return _wrap(out) if out.ndim else out[()]
    return np.array(obj, dtype=dtype, copy=copy, **kwargs)


def asarray(obj: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """np.asarray; see `array`."""
    if isinstance(obj, SymArray) and _floating(dtype):
        return obj
    return array(obj, dtype=dtype, copy=None if not is_symbolic(obj) else True, **kwargs)


asanyarray = asarray


def zeros(shape: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """Float zeros are an object array, so symbolic values can be written into them."""
    if _floating(dtype):
        return np.zeros(shape, dtype=object).view(SymArray)
    return np.zeros(shape, dtype=dtype, **kwargs)


def ones(shape: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """Float ones as an object array (see `zeros`)."""
    if _floating(dtype):
        return np.ones(shape, dtype=object).view(SymArray)
    return np.ones(shape, dtype=dtype, **kwargs)


def empty(shape: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """Like `zeros`: never uninitialised garbage in a reference."""
    return zeros(shape, dtype=dtype, **kwargs)


def full(shape: Any, fill_value: Any, dtype: Any = None, **kwargs: Any) -> Any:
    """A float-valued full array is an object array of the lifted fill value."""
    if _floating(dtype) and (dtype is not None or not isinstance(fill_value, (int, bool, np.integer))):
        out = np.empty(shape, dtype=object)
        out[...] = _number(fill_value) if not isinstance(fill_value, np.ndarray) else _operand(fill_value)
        return out.view(SymArray)
    return np.full(shape, fill_value, dtype=dtype, **kwargs)


class float64(np.float64):
    """np.float64: a dtype as usual; called on a symbolic value it returns the value unchanged."""

    def __new__(cls, x: Any = 0.0) -> Any:  # type: ignore[misc]
        if is_symbolic(x):
            return _wrap(x) if isinstance(x, np.ndarray) else x
        return np.float64(x)


float_ = double = float64

# --- the namespace: submodules and constants ------------------------------------------------


class _Linalg:
    """np.linalg: only norm has a symbolic counterpart."""

    def norm(self, x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
        vector = np.ndim(x) == 1 or axis is not None
        if ord in (None, "fro") or (ord == 2 and vector):
            return sqrt(_sum(_sym(x) * _sym(x), axis=axis, keepdims=keepdims))  # noqa: F821
        if ord == 1 and vector:
            return _sum(absolute(_sym(x)), axis=axis, keepdims=keepdims)  # noqa: F821
        raise NoSymbolicCounterpart(f"linalg.norm(ord={ord!r})")

    def __getattr__(self, name: str) -> Any:
        raise NoSymbolicCounterpart(f"linalg.{name}")


class _Unavailable:
    """A numpy submodule (np.random, np.fft) the SymPy reference cannot provide."""

    def __init__(self, module: str, hint: str) -> None:
        self._module, self._hint = module, hint

    def __getattr__(self, name: str) -> Any:
        raise NoSymbolicCounterpart(f"{self._module}.{name}", self._hint)


linalg = _Linalg()
random = _Unavailable("random", "a loss that draws random numbers cannot be differentiated symbolically; "
                      "draw them outside the loss and pass them in args")
fft = _Unavailable("fft", "")

_PASSTHROUGH = [
    "pi", "e", "inf", "nan", "newaxis", "euler_gamma", "float32", "float16", "int64", "int32", "int8", "uint8",
    "intp", "bool_", "int_", "dtype", "finfo", "iinfo", "ndarray", "arange", "linspace", "eye", "identity",
    "indices", "meshgrid", "nonzero", "flatnonzero", "argwhere", "unique", "bincount", "isscalar", "ndim",
    "shape", "size", "errstate", "seterr", "geterr", "broadcast_shapes", "result_type", "iterable",
    "logical_and", "logical_or", "logical_not", "logical_xor", "any", "all", "count_nonzero",
    "integer", "floating", "number", "bool", "ravel_multi_index", "unravel_index", "ix_",
]
for _name in _PASSTHROUGH:
    if hasattr(np, _name):
        globals()[_name] = getattr(np, _name)
del _name


def __getattr__(name: str) -> Any:
    # Module-level fallback (PEP 562): every numpy name without a symbolic meaning.
    if name.startswith("__"):
        raise AttributeError(name)
    raise NoSymbolicCounterpart(name)


