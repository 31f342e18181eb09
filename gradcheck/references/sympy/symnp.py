"""A numpy-compatible namespace over object arrays of SymPy expressions (the SymPy reference's numpy).

The SymPy reference re-runs the learner's loss with `np` bound to this module. Parameters
arrive as `SymArray`s: ndarrays of dtype object whose elements are SymPy expressions. Numpy's
own machinery does the structure (indexing, broadcasting, reshape, `@`, sum, mean, var), and
`SymArray.__array_ufunc__` gives each elementwise function its symbolic meaning, so array
methods (`z.max(axis=1)`, `x.sum()`) work as well as module functions (`np.exp(z)`).

Floats become mpmath numbers holding their exact binary values, and arithmetic on numbers is
done in mpmath at `dps` digits (ten times faster than SymPy Floats); a number becomes a SymPy
Float only when it meets a symbolic value. Matrix products sum their numeric terms exactly, on
integers, and round each entry once. Symbolic results are built without SymPy's
automatic simplification (which queries assumptions about whole subexpressions and costs
seconds on a small network), and function nodes (exp, Max, ...) are made directly, Max and Min
without SymPy's sorting of their arguments. `maximum`, `minimum`, `clip`, `abs` and `sign`
stay symbolic (Max, Min, Abs, sign): their derivatives exist away from ties. Comparisons such
as `z > 0` are evaluated at the point being differentiated (as numpy, JAX and any autodiff do),
giving plain boolean masks; a comparison that is an exact tie is recorded, because the
derivative may have a kink there. Anything without a symbolic counterpart raises
`NoSymbolicCounterpart` (an AttributeError) naming the numpy function.

Where numpy hands out a scalar (an element, `for v in arr`, a full reduction, `np.dot` of
vectors), symnp hands out a `SymScalar`: a symbolic number that, like a float64, can be
branched on (`if margin > 0:`, `max(a, b)`, `while err > tol:`, decided at the point, ties
recorded) and mixed with bools as 0/1 (`p[j] - (j == y[i])`). Arrays store its expression.
Past an evaluation's `deadline` every symbolic operation raises `OutOfTime`.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import functools
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import mpmath
import numpy as np
import sympy
from sympy.core.parameters import global_parameters


class NoSymbolicCounterpart(AttributeError):
    """A numpy function the SymPy reference cannot run symbolically."""

    def __init__(self, op: str, hint: str = "") -> None:
        self.op = op
        message = f"SymPy reference: numpy function np.{op} has no symbolic counterpart"
        super().__init__(message + (f"; {hint}" if hint else ""))


class OutOfTime(BaseException):
    """A symbolic run went past its deadline (`evaluation(deadline=...)`).

    Raised by the next symbolic operation, through the learner's code: a BaseException, as
    KeyboardInterrupt is, so that their `except Exception:` does not take it for their error.
    """


@dataclass
class Evaluation:
    """Where symbolic values are evaluated: working precision, the point, ties seen."""

    dps: int = 50
    point: dict | None = None  # Symbol -> exact value; None: comparisons stay symbolic
    ties: list = field(default_factory=list)  # free symbols of comparisons that tied
    evaluate: Callable | None = None  # expr -> number at the point (default: evalf with subs)
    deadline: float | None = None  # time.perf_counter() past which operations raise OutOfTime


_EVALUATION: contextvars.ContextVar[Evaluation] = contextvars.ContextVar("gradcheck_symnp")


def current() -> Evaluation:
    """The active evaluation settings (a default one outside `evaluation(...)`)."""
    try:
        return _EVALUATION.get()
    except LookupError:
        return Evaluation()


@contextlib.contextmanager
def evaluation(point: dict | None = None, dps: int = 50, evaluate: Callable | None = None,
               deadline: float | None = None) -> Iterator[Evaluation]:
    """Run symbolic code with comparisons decided at `point`, numbers lifted to `dps` digits.

    `evaluate(expr)` computes an expression's value at the point; the SymPy reference passes a
    memoizing one, since expressions built by a forward pass share most of their subtrees.
    Past `deadline` (a time.perf_counter() value) every symbolic operation raises OutOfTime.
    """
    state = Evaluation(dps=dps, point=point, evaluate=evaluate, deadline=deadline)
    token = _EVALUATION.set(state)
    try:
        with mpmath.workdps(dps), _quiet_conversions():  # mpf arithmetic rounds at dps digits
            yield state
    finally:
        _EVALUATION.reset(token)


def on_time(deadline: float | None = None) -> None:
    """Raise OutOfTime once `deadline` (by default the active evaluation's) has passed."""
    if deadline is None:
        deadline = current().deadline
    if deadline is not None and time.perf_counter() > deadline:
        raise OutOfTime()


def _refuse_symbolic(fallback: Callable) -> Callable:
    """mpmath's conversion of unknown operands, refusing SymPy values without printing them."""

    def convert(x: Any, strings: Any) -> Any:
        if isinstance(x, sympy.Basic):
            raise TypeError("cannot create mpf from a SymPy expression")
        return fallback(x, strings)

    return convert


@contextlib.contextmanager
def _quiet_conversions() -> Iterator[None]:
    """`mpf * expr`, while the evaluation lasts, without mpmath formatting expr into a message.

    mpmath tries to convert the SymPy operand, fails, and builds its TypeError from repr(expr)
    before Python hands the product to SymPy: printing a network's expression cost seconds.
    mpmath's context is global (as its working precision is), so the hook is undone on exit.
    """
    ctx = mpmath.mp
    before = vars(ctx).get("_convert_fallback")
    ctx._convert_fallback = _refuse_symbolic(type(ctx)._convert_fallback.__get__(ctx))
    try:
        yield
    finally:
        if before is None:
            vars(ctx).pop("_convert_fallback", None)
        else:
            ctx._convert_fallback = before


# --- lifting numbers and arrays -------------------------------------------------------------

def _number(x: Any) -> Any:
    """A Python/numpy scalar as an exact int or an mpmath mpf (exact: a float64 fits in any
    precision); SymPy values unchanged. Numbers stay mpmath numbers, ten times faster than
    SymPy Floats, until they meet a symbolic value (SymPy then converts them exactly)."""
    if isinstance(x, SymScalar):
        return x.expr
    if isinstance(x, (builtins.bool, np.bool_)):
        return int(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return mpmath.mpf(float(x))
    return x


def _numeric(x: Any) -> builtins.bool:
    if isinstance(x, SymScalar):
        return builtins.bool(x.expr.is_Number)
    return not isinstance(x, sympy.Basic) or builtins.bool(x.is_Number)


def _mp(x: Any) -> Any:
    """A number (int, float, mpf or SymPy number) as an mpf at the working precision."""
    if isinstance(x, mpmath.mpf):
        return x
    if isinstance(x, sympy.Basic):
        if x.is_Rational:
            return mpmath.mpf(int(x.p)) / int(x.q)
        return mpmath.mpf(x.evalf(current().dps))
    return mpmath.mpf(x)


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
            return scalar(result[()])
        return result.view(SymArray)
    return scalar(result)


def scalar(value: Any) -> Any:
    """A value as numpy would hand it out: a SymPy expression as a SymScalar, numbers as they are."""
    return SymScalar(value) if isinstance(value, sympy.Expr) else value  # an undecided Relational stays one


def plain(x: Any) -> Any:
    """x with SymScalars (also inside lists and tuples) as their SymPy expressions (for SymPy and arrays)."""
    if isinstance(x, SymScalar):
        return x.expr
    if type(x) in (list, tuple):
        return type(x)(plain(v) for v in x)
    return x


def _scalars(tree: Any) -> Any:
    """Nested lists (`tolist()`) with each SymPy expression as a SymScalar."""
    return [_scalars(v) for v in tree] if isinstance(tree, list) else scalar(tree)


def is_symbolic(x: Any) -> bool:
    """Whether x is (or contains) a SymPy object."""
    if isinstance(x, (sympy.Basic, SymScalar)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype == object and builtins.any(isinstance(v, sympy.Basic) for v in x.view(np.ndarray).flat)
    if isinstance(x, (list, tuple)):
        return builtins.any(is_symbolic(v) for v in x)
    return False


def lift(x: Any) -> Any:
    """x as symnp sees it: float arrays become SymArrays of exact mpmath numbers."""
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

def _real(value: Any) -> Any:
    """numpy's answer outside a real function's domain: nan, not a complex number."""
    return mpmath.nan if isinstance(value, mpmath.mpc) else value


def _dual(fn: Callable, numeric: Callable) -> Callable:
    """fn on symbolic arguments (left unsimplified), `numeric` in mpmath on numbers.

    On symbolic arguments SymPy's Max, Min, Abs, exp and tanh query assumptions about whole
    subexpressions (is it positive? real? zero?), which costs seconds on a small network and
    buys nothing here: the reference only evaluates and differentiates the expression.
    """

    build = _node(fn)

    def apply(*args: Any) -> Any:
        if builtins.all(_numeric(a) for a in args):
            return _real(numeric(*[_mp(a) for a in args]))
        operands = [_number(a) for a in args]
        return fn(*operands, evaluate=False) if global_parameters.evaluate else build(*operands)

    apply.__name__ = getattr(fn, "__name__", "fn")
    return apply


def _node(cls: Callable) -> Callable:
    """cls(*args, evaluate=False) built directly, for expressions that are only evaluated and
    differentiated (formulas, built with evaluation on, keep SymPy's own constructors).

    SymPy's unevaluated Max and Min still sort their arguments by its canonical keys, which
    walks each whole argument: that was most of a sampled element's time on a softmax over a
    network's logits. Here the arguments keep their order, numbers among them are folded into
    the one that can win (the others are never the extremum), and identical ones appear once.
    """
    if isinstance(cls, type) and issubclass(cls, sympy.Function):  # exp(x): the node itself
        return lambda *args: sympy.Basic.__new__(cls, *map(sympy.sympify, args))
    if not (isinstance(cls, type) and issubclass(cls, (sympy.Max, sympy.Min))):
        return lambda *args: cls(*args, evaluate=False)
    pick = builtins.max if cls is sympy.Max else builtins.min

    def extremum(*args: Any) -> Any:
        numbers = [a for a in args if _numeric(a)]
        operands = list(args)
        if len(numbers) > 1:
            operands = [a for a in args if not _numeric(a)] + [pick(numbers, key=_mp)]
        unique = tuple({id(a): a for a in map(sympy.sympify, operands)}.values())
        if len(unique) == 1:
            return unique[0]
        node = sympy.Expr.__new__(cls, *unique)
        node._argset = frozenset(unique)
        return node

    return extremum


def _mp_log(x: Any) -> Any:
    return mpmath.log(x) if x > 0 else (mpmath.ninf if x == 0 else mpmath.nan)


def _mp_heaviside(x: Any, h0: Any) -> Any:
    return mpmath.mpf(1) if x > 0 else (mpmath.mpf(0) if x < 0 else h0)


_Max = _dual(sympy.Max, lambda *v: builtins.max(v))
_Min = _dual(sympy.Min, lambda *v: builtins.min(v))
_Abs = _dual(sympy.Abs, builtins.abs)
_sign = _dual(sympy.sign, mpmath.sign)
_exp, _log = _dual(sympy.exp, mpmath.exp), _dual(sympy.log, _mp_log)
_pow = _dual(sympy.Pow, lambda b, e: mpmath.power(b, e) if b >= 0 or e == int(e) else mpmath.nan)
_heaviside = _dual(sympy.Heaviside, _mp_heaviside)
_HALF = sympy.Rational(1, 2)


def _sqrt(x: Any) -> Any:
    return _pow(x, _HALF)


def _log1p(x: Any) -> Any:
    return _log(1 + x)


def _logaddexp(a: Any, b: Any) -> Any:
    return _log(_exp(a) + _exp(b))


def _logaddexp2(a: Any, b: Any) -> Any:
    return _log(2**a + 2**b) / _log(2)


def _clip(x: Any, lo: Any, hi: Any) -> Any:
    if lo is not None:
        x = _Max(x, lo)
    return x if hi is None else _Min(x, hi)


def _finite_at_point(x: Any) -> bool:
    return builtins.bool(np.isfinite(float(_value(x))))


def _nan_at_point(x: Any) -> bool:
    return builtins.bool(mpmath.isnan(_value(x)))


def _inf_at_point(x: Any) -> bool:
    return builtins.bool(mpmath.isinf(_value(x)))


_UNARY: dict[str, Callable] = {
    "exp": _exp, "log": _log, "sqrt": _sqrt, "absolute": _Abs, "fabs": _Abs, "sign": _sign,
    **{name: _dual(getattr(sympy, name), getattr(mpmath, name)) for name in (
        "tanh", "sinh", "cosh", "sin", "cos", "tan", "asin", "acos", "atan", "asinh", "acosh", "atanh")},
    "log1p": _log1p, "expm1": lambda x: _exp(x) - 1, "exp2": lambda x: 2**x,
    "log2": lambda x: _log(x) / _log(2), "log10": lambda x: _log(x) / _log(10),
    "square": lambda x: x**2, "reciprocal": lambda x: 1 / x, "cbrt": lambda x: sympy.real_root(x, 3),
    "conjugate": lambda x: x,  # every value here is real (parameters, data, real functions)
    "isfinite": _finite_at_point, "isnan": _nan_at_point, "isinf": _inf_at_point,  # `if np.isnan(loss):`
}
_BINARY: dict[str, Callable] = {
    "maximum": _Max, "minimum": _Min, "fmax": _Max, "fmin": _Min,
    "logaddexp": _logaddexp, "logaddexp2": _logaddexp2, "arctan2": _dual(sympy.atan2, mpmath.atan2),
    "hypot": lambda a, b: _sqrt(a**2 + b**2), "heaviside": _heaviside,
}
#: Ufuncs numpy's own object loops already compute with Python operators.
_ARITHMETIC = {"add", "subtract", "multiply", "true_divide", "divide", "power", "float_power", "pow",
               "matmul", "negative", "positive", "vecdot", "matvec", "vecmat"}
_COMPARISONS: dict[str, Callable] = {
    "greater": operator.gt, "greater_equal": operator.ge, "less": operator.lt,
    "less_equal": operator.le, "equal": operator.eq, "not_equal": operator.ne,
}
_EXTREMA = {"maximum": _Max, "minimum": _Min, "fmax": _Max, "fmin": _Min}
_ALIASES = {"abs": "absolute", "conj": "conjugate", "arcsin": "asin", "arccos": "acos", "arctan": "atan",
            "arcsinh": "asinh", "arccosh": "acosh", "arctanh": "atanh", "atan2": "arctan2"}


def _value(x: Any) -> Any:
    """x evaluated at the current point (a number), at the working precision."""
    state = current()
    x = _number(x)
    if _numeric(x):
        return _mp(x)
    if state.evaluate is not None:
        return state.evaluate(x)
    if state.point is None and x.free_symbols:
        raise TypeError(f"cannot evaluate {x} without a point")
    return x.evalf(state.dps, subs=state.point or {})


def _decide(op: Callable, a: Any, b: Any) -> Any:
    """One comparison: decided numerically, at the point when the operands are symbolic."""
    a, b = _number(a), _number(b)
    if _numeric(a) and _numeric(b):
        return builtins.bool(op(_mp(a), _mp(b)))
    state = current()
    if state.point is None:
        if isinstance(a, sympy.Basic) and a.free_symbols or isinstance(b, sympy.Basic) and b.free_symbols:
            return op(a, b)  # a Relational, as sympy itself would give
        return builtins.bool(op(_value(a), _value(b)))
    va, vb = _value(a), _value(b)
    if builtins.abs(va - vb) <= 1e-13 * (1 + builtins.max(builtins.abs(va), builtins.abs(vb))):
        symbols = _free_symbols(a) | _free_symbols(b)
        if symbols:  # a tie in the parameters: the loss may have a kink here
            state.ties.append(frozenset(symbols))
    return builtins.bool(op(va, vb))


def _free_symbols(x: Any) -> set:
    return set(x.free_symbols) if isinstance(x, sympy.Basic) else set()


def _boolify(out: Any) -> Any:
    """An object result holding only Python bools as a bool array (numpy's dtype for masks)."""
    if isinstance(out, np.ndarray):
        return out.astype(bool) if builtins.all(isinstance(v, builtins.bool) for v in out.flat) else out
    return np.bool_(out) if isinstance(out, builtins.bool) else out


def _compare(name: str, a: Any, b: Any) -> Any:
    return _boolify(np.frompyfunc(functools.partial(_decide, _COMPARISONS[name]), 2, 1)(a, b))


def _reduce_with(fn: Callable, a: np.ndarray, axis: Any, keepdims: bool, many: bool,
                 identity: Any = None) -> Any:
    """Reduce `a` over `axis` with fn(*row) (many=True) or a pairwise fold."""
    a = np.asarray(a, dtype=object)
    axes = tuple(range(a.ndim)) if axis is None else tuple(np.atleast_1d(axis).tolist())
    axes = tuple(ax % a.ndim for ax in axes) if a.ndim else ()
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    rows: np.ndarray = moved.reshape(moved.shape[:a.ndim - len(axes)] + (-1,))
    if rows.shape[-1] == 0:
        if identity is None:
            raise ValueError("zero-size array to reduction operation which has no identity")
        rows = np.full(rows.shape[:-1] + (1,), identity, dtype=object)
    out = np.empty(rows.shape[:-1], dtype=object)
    for idx in np.ndindex(out.shape):
        row = list(rows[idx])
        out[idx] = fn(*row) if many else functools.reduce(fn, row)
    if keepdims:
        out = np.expand_dims(out, axes)
    return out


def _sum_terms(*terms: Any) -> Any:
    """A sum, numbers added in mpmath and the symbolic terms in one SymPy Add.

    numpy's object loops add term by term: once a symbolic term comes first, every further
    number makes a new SymPy Add, and a hidden layer's matmul turns into thousands of them.
    """
    numbers = [t for t in terms if _numeric(t)]
    symbolic = [t for t in terms if not _numeric(t)]
    total = mpmath.fsum([_mp(t) for t in numbers]) if numbers else 0
    if not symbolic:
        return total
    return sympy.Add(*symbolic, total) if total != 0 else sympy.Add(*symbolic)


#: A row or column whose numbers need wider integers than this (from the lowest set bit of the
#: smallest to the top bit of the largest) multiplies term by term in mpmath instead: exact
#: integers that wide would make every product slow.
_MAX_SPAN_BITS = 4096
#: mpmath exponents beyond this are left to mpmath (and exponent arithmetic stays in int64).
_MAX_EXPONENT = 2**40
#: `_binary`'s answer for a value with no exact (mantissa, exponent) form.
_INEXACT = (0, 0, -1)


def _binary(x: Any) -> tuple[int, int, int] | None:
    """A number as (mantissa, exponent, bits): x == mantissa * 2**exponent exactly, `bits` the
    mantissa's bit length; None for a symbol, inf, nan or a number with no finite binary form."""
    raw = getattr(x, "_mpf_", None)  # mpmath's and SymPy's Floats (most entries): their exact binary value
    if raw is not None:
        sign, man, exp, bits = raw
        if not man:
            return (0, 0, 0) if not bits else None  # a zero mantissa with bits set is inf or nan
        return ((-man if sign else man), exp, bits) if -_MAX_EXPONENT < exp < _MAX_EXPONENT else None
    if isinstance(x, (int, np.integer, np.bool_)):
        x = int(x)
        return x, 0, x.bit_length()
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return None
        fraction, exp = math.frexp(x)
        man = int(fraction * 2**53)  # exact: a double's mantissa has 53 bits
        return man, exp - 53, builtins.abs(man).bit_length()
    if isinstance(x, sympy.Rational) and not x.q & (x.q - 1):  # p / 2**n
        return int(x.p), 1 - int(x.q).bit_length(), int(x.p).bit_length()
    return None


def _scaled(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m's numbers as exact integers over one power of two per row (axis=1) or column (axis=0).

    Returns (ints, exponents, exact): for axis=1, m[i, k] == ints[i, k] * 2**exponents[i] wherever
    exact[i, k]; ints is 0 elsewhere (symbols, values without a binary form, too wide a row).
    """
    man_, exp_, bits_ = zip(*[_binary(x) or _INEXACT for x in m.flat])
    man = np.array(man_, dtype=object).reshape(m.shape)
    exp, bits = (np.array(v, dtype=np.int64).reshape(m.shape) for v in (exp_, bits_))
    live = bits > 0  # the nonzero numbers set the scale
    low = np.where(live, exp, _MAX_EXPONENT).min(axis=axis, keepdims=True)
    high = np.where(live, exp + bits, -_MAX_EXPONENT).max(axis=axis, keepdims=True)
    exact = (bits >= 0) & (high - low <= _MAX_SPAN_BITS)
    low = np.where(high > low, low, 0)  # all zeros: any exponent will do
    shift = np.where(live & exact, exp - low, 0)
    ints = np.where(exact, man << shift, 0)
    return ints, low.reshape(-1), exact


def _from_binary(man: int, exp: int) -> Any:
    """man * 2**exp as an mpf, rounded once at the working precision."""
    return mpmath.mpf((man, exp))


_rounded = np.frompyfunc(_from_binary, 2, 1)


def _int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b, exactly, for 2-D object arrays of Python integers.

    The integers are cut into limbs so narrow that a product of two limb matrices, summed over
    the inner dimension, stays below 2**53: BLAS then computes it exactly in float64, and the
    limb products are put together again on Python integers. Where that costs more than numpy's
    object matmul (a Python multiplication and addition per term), numpy's is used.
    """
    plan = _limb_plan(a.shape[0], a.shape[1], b.shape[1], _bit_width(a), _bit_width(b))
    if plan is None:
        return a @ b
    limb, la, lb = plan
    m, n = a.shape[0], b.shape[1]
    limbs_a, limbs_b = _limbs(a, limb, la), _limbs(b, limb, lb)
    diagonals = np.zeros((la + lb - 1, m, n), dtype=np.int64)  # < min(la, lb) * 2**53: no overflow
    for i, part_a in enumerate(limbs_a):
        for j, part_b in enumerate(limbs_b):
            diagonals[i + j] += (part_a @ part_b).astype(np.int64)
    out = diagonals[-1].astype(object)
    for diagonal in diagonals[-2::-1]:
        out = (out << limb) + diagonal.astype(object)
    return out


def _limb_plan(m: int, k: int, n: int, width_a: int, width_b: int) -> tuple[int, int, int] | None:
    """(limb bits, limbs of a, limbs of b) for an (m, k) @ (k, n) product of integers this wide,
    or None where numpy's object matmul is as fast (tiny products, or limbs too many to pay)."""
    limb = (53 - k.bit_length()) // 2  # k * (2**limb)**2 < 2**53
    if limb < 8 or not width_a or not width_b or m * n < 64 or k < 16:
        return None
    la, lb = -(-width_a // limb), -(-width_b // limb)
    return (limb, la, lb) if la * lb <= 256 else None


def _bit_width(ints: np.ndarray) -> int:
    """The widest magnitude's bit length in an object array of Python integers."""
    return int(builtins.max((builtins.abs(int(v)).bit_length() for v in ints.flat), default=0))


def _limbs(ints: np.ndarray, limb: int, count: int) -> list[np.ndarray]:
    """Signed float64 arrays l_0, l_1, ... with ints == sum(l_i * 2**(limb * i)), each |l_i| < 2**limb."""
    negative = ints < 0
    magnitude = np.where(negative, -ints, ints)
    mask = (1 << limb) - 1
    out = []
    for i in range(count):
        part = ((magnitude >> (limb * i)) & mask).astype(np.float64)  # exact: below 2**limb
        out.append(np.where(negative, -part, part))
    return out


def _matmul_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for nonempty 2-D object arrays.

    Products of numbers are summed exactly on Python integers and each entry rounded once:
    more exact than rounding every product, and over ten times faster than mpmath term by
    term (a hidden layer's product dominated a sampled SymPy element's time).
    Terms with a symbolic (or inexact) factor are multiplied one by one, as numpy would, and
    summed by `_sum_terms` with the entry's exact part, so the expression keeps its structure.
    """
    ints_a, exp_a, exact_a = _scaled(a, axis=1)
    ints_b, exp_b, exact_b = _scaled(b, axis=0)
    out = _rounded(_int_matmul(ints_a, ints_b), exp_a[:, None] + exp_b[None, :])
    loose_a, loose_b = np.logical_not(exact_a), np.logical_not(exact_b)
    mixed = loose_a.any(axis=1)[:, None] | loose_b.any(axis=0)[None, :]
    for i, j in zip(*np.nonzero(mixed)):
        terms = np.flatnonzero(loose_a[i] | loose_b[:, j])
        out[i, j] = _sum_terms(*(a[i, k] * b[k, j] for k in terms), out[i, j])
    return out


def _matmul(a: np.ndarray, b: np.ndarray) -> Any:
    """a @ b for 1-D and 2-D object arrays (see `_matmul_2d`)."""
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned")
    if a2.size and b2.size:
        out = _matmul_2d(a2, b2)
    else:  # no entries, or empty sums: integer zeros, as numpy's object loops give
        out = np.zeros((a2.shape[0], b2.shape[1]), dtype=object)
    if a.ndim == 1:
        out = out[0]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def _arithmetic_node(op: Callable, build: Callable) -> Callable:
    """Elementwise `op`: on numbers as Python computes it, else the unevaluated node made directly.

    Unevaluated, SymPy's operators (a + b, a * b) spend most of their time outside the node:
    dispatch decorators, and a construction cache that hashes every argument (a Float's hash
    converts it to a float each time). `build` makes the node they make.
    """

    def apply(a: Any, b: Any) -> Any:
        if not isinstance(a, sympy.Basic) and not isinstance(b, sympy.Basic):
            return op(a, b)
        return build(sympy.sympify(a), sympy.sympify(b))

    apply.__name__ = f"{op.__name__}_node"
    return apply


#: Arithmetic that builds its nodes directly while expressions are built unevaluated: a - b is
#: a + (-b) and a / b is a * b**-1, as in SymPy.
_OPERATOR_NODES: dict[Callable, Callable] = {op: _arithmetic_node(op, build) for op, build in {
    operator.add: lambda a, b: sympy.Add._from_args((a, b)),
    operator.sub: lambda a, b: sympy.Add._from_args((a, -b)),
    operator.mul: lambda a, b: sympy.Mul._from_args((a, b)),
    operator.truediv: lambda a, b: sympy.Mul._from_args((a, sympy.Pow(b, sympy.S.NegativeOne))),
}.items()}
_NODE_LOOPS = {name: np.frompyfunc(_OPERATOR_NODES[op], 2, 1) for name, op in (
    ("add", operator.add), ("subtract", operator.sub), ("multiply", operator.mul), ("divide", operator.truediv),
    ("true_divide", operator.truediv))}


def _ufunc_call(ufunc: np.ufunc, args: list, kwargs: dict) -> Any:
    name = _ALIASES.get(ufunc.__name__, ufunc.__name__)
    if name == "matmul" and builtins.all(np.ndim(x) in (1, 2) for x in args) and len(args) == 2:
        return _matmul(*(np.asarray(x, dtype=object) for x in args))
    if name in _NODE_LOOPS and not kwargs and len(args) == 2 and not global_parameters.evaluate:
        return _NODE_LOOPS[name](*args)
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
    if not builtins.any(is_symbolic(a) for a in args):
        # Data only (np.floor of inputs, a rounding step): numpy's own function, in float64.
        return ufunc(*[_floats(a) for a in args], **kwargs)
    raise NoSymbolicCounterpart(name)


def _floats(x: Any) -> Any:
    """Numbers (mpmath, SymPy, Python) as float64, arrays as float64 arrays."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return np.asarray(np.frompyfunc(float, 1, 1)(x), dtype=np.float64)
    return float(x) if isinstance(x, (mpmath.mpf, sympy.Basic)) else x


def _ufunc_reduce(ufunc: np.ufunc, arr: Any, kwargs: dict) -> Any:
    name = ufunc.__name__
    axis, keepdims = kwargs.pop("axis", 0), kwargs.pop("keepdims", False)
    initial, where = kwargs.pop("initial", np._NoValue), kwargs.pop("where", True)
    kwargs.pop("dtype", None)
    if where is not True:
        raise NoSymbolicCounterpart(f"{name}.reduce(where=...)")
    if name in _EXTREMA:
        result = _reduce_with(_EXTREMA[name], arr, axis, keepdims, many=True)
    elif name == "add":
        result = _reduce_with(_sum_terms, arr, axis, keepdims, many=True, identity=0)
    elif name == "multiply":
        result = np.multiply.reduce(arr, axis=axis, keepdims=keepdims, dtype=object)
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

def _apply_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, out: Any, kwargs: dict) -> Any:
    """A numpy ufunc call on symbolic operands (SymArrays, SymScalars), with its symbolic meaning."""
    on_time()
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
        raw = target.view(np.ndarray) if isinstance(target, SymArray) else target
        raw[...] = result
        return target
    return _wrap(result)


class SymArray(np.ndarray):
    """An object ndarray of SymPy expressions that gives numpy functions their symbolic meaning.

    Elements come out as SymScalars (indexing, iteration, `item()`, `tolist()`), as numpy hands
    out numpy scalars; SymScalars written in are stored as their expressions.
    """

    __array_priority__ = 50.0

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None,
                        **kwargs: Any) -> Any:
        return _apply_ufunc(ufunc, method, inputs, out, kwargs)

    def __getitem__(self, index: Any) -> Any:
        out = np.ndarray.__getitem__(self, index)
        return SymScalar(out) if isinstance(out, sympy.Expr) else out

    def __setitem__(self, index: Any, value: Any) -> None:
        np.ndarray.__setitem__(self, index, plain(value))

    def __iter__(self) -> Iterator[Any]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return map(self.__getitem__, range(len(self)))

    def item(self, *args: Any) -> Any:
        return scalar(np.ndarray.item(self, *args))

    def dot(self, b: Any, out: Any = None) -> Any:
        return dot(self, b, out)  # symnp's, so x.dot(w) is a product like x @ w

    def tolist(self) -> Any:
        return _scalars(np.ndarray.tolist(self))

    @property  # type: ignore[override]  # a _Flat, not numpy's flatiter: its items are SymScalars
    def flat(self) -> "_Flat":
        return _Flat(np.ndarray.flat.__get__(self))

    @flat.setter
    def flat(self, value: Any) -> None:
        # numpy's stub types ndarray.flat as a read-only property; at run time it is assignable
        np.ndarray.flat.__set__(self, plain(value))  # type: ignore[attr-defined]

    def __bool__(self) -> bool:
        if self.size == 1:
            return builtins.bool(self.reshape(-1)[0])  # a SymScalar decides at the point
        return np.ndarray.__bool__(self)

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        kind = np.dtype(dtype).kind
        if kind in "fcO":
            return self.copy()  # symbolic values have no float dtype; keep them exact
        if not is_symbolic(self):
            return _floats(self.view(np.ndarray)).astype(dtype)  # data: numpy's own cast
        raise NoSymbolicCounterpart(f"ndarray.astype({np.dtype(dtype).name}) of a symbolic array",
                                    "casting a parameter-dependent value to an integer or bool")

    def argmax(self, axis: Any = None, out: Any = None, **kwargs: Any) -> Any:
        return np.argmax(_values_at_point(self), axis=axis, **kwargs)

    def argmin(self, axis: Any = None, out: Any = None, **kwargs: Any) -> Any:
        return np.argmin(_values_at_point(self), axis=axis, **kwargs)

    def std(self, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0,
            keepdims: Any = False, **kwargs: Any) -> Any:
        return sqrt(self.var(axis=axis, ddof=ddof, keepdims=keepdims))

    def __float__(self) -> float:
        if self.size == 1 and not is_symbolic(self):
            return float(self.reshape(-1)[0])
        raise TypeError("Cannot convert expression to float")


class _Flat:
    """`SymArray.flat`: numpy's flat iterator, handing out SymScalars as indexing does."""

    __slots__ = ("_flat",)

    def __init__(self, flat: Any) -> None:
        self._flat = flat

    def __iter__(self) -> Iterator[Any]:
        return map(scalar, self._flat)

    def __len__(self) -> int:
        return len(self._flat)

    def __getitem__(self, index: Any) -> Any:
        return _wrap(self._flat[index])

    def __setitem__(self, index: Any, value: Any) -> None:
        self._flat[index] = plain(value)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._flat.copy(), dtype=dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flat, name)  # base, coords, index, copy


def _scalar_operand(x: Any) -> Any:
    """The other operand of a SymScalar's operator as symnp holds it (bools as 0/1, floats as
    exact mpmath numbers), or NotImplemented for arrays (numpy's turn) and non-numbers."""
    if isinstance(x, (SymScalar, builtins.bool, int, float, np.bool_, np.number, mpmath.mpf, sympy.Basic)):
        return _number(x)
    return NotImplemented


def _operator(op: Callable, reflected: bool = False) -> Callable:
    """A SymScalar's arithmetic operator: `op` on the expressions, the result a SymScalar."""
    node = _OPERATOR_NODES.get(op)

    def apply(self: "SymScalar", other: Any) -> Any:
        value = _scalar_operand(other)
        if value is NotImplemented:
            return NotImplemented
        on_time()
        fn = node if node is not None and not global_parameters.evaluate else op
        return scalar(fn(value, self.expr) if reflected else fn(self.expr, value))

    apply.__name__ = f"__{'r' if reflected else ''}{op.__name__.strip('_')}__"
    return apply


def _relation(op: Callable) -> Callable:
    """A SymScalar's comparison: decided at the point, as for arrays (a tie is recorded)."""

    def compare(self: "SymScalar", other: Any) -> Any:
        value = _scalar_operand(other)
        if value is NotImplemented:
            return NotImplemented
        on_time()
        decided = _decide(op, self.expr, value)
        return np.bool_(decided) if isinstance(decided, builtins.bool) else decided

    compare.__name__ = f"__{op.__name__.strip('_')}__"
    return compare


class SymScalar:
    """A symbolic number where numpy would hand out a numpy scalar: an element, a full reduction.

    A bare SymPy expression refuses what learners do with numpy scalars: `if margin > 0:` (a
    Relational has no truth value), `p[j] - (j == y[i])` (no arithmetic with bools). A
    SymScalar behaves as a float64 does: comparisons and truth are decided at the point being
    differentiated (ties recorded, as for arrays), bools count as 0 and 1, numpy's functions and
    the rebound math functions give their symbolic meaning (`__array_ufunc__`). It holds no
    value of its own: `expr` is the expression, and SymPy takes it as one (`_sympy_`), so the
    SymPy reference unwraps the loss value wherever it is returned.
    """

    __slots__ = ("expr",)
    _op_priority = 20.0  # above SymPy's 10: `expr + s` is handed to s.__radd__ (sympy.core.decorators)
    ndim, shape, size = 0, (), 1

    def __init__(self, expr: Any) -> None:
        self.expr = expr

    def _sympy_(self) -> Any:
        return self.expr

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, out: Any = None,
                        **kwargs: Any) -> Any:
        return _apply_ufunc(ufunc, method, inputs, out, kwargs)

    __add__, __radd__ = _operator(operator.add), _operator(operator.add, True)
    __sub__, __rsub__ = _operator(operator.sub), _operator(operator.sub, True)
    __mul__, __rmul__ = _operator(operator.mul), _operator(operator.mul, True)
    __truediv__, __rtruediv__ = _operator(operator.truediv), _operator(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _operator(operator.floordiv), _operator(operator.floordiv, True)
    __mod__, __rmod__ = _operator(operator.mod), _operator(operator.mod, True)
    __pow__, __rpow__ = _operator(operator.pow), _operator(operator.pow, True)
    __lt__, __le__, __gt__, __ge__ = (_relation(op) for op in (operator.lt, operator.le, operator.gt, operator.ge))
    __eq__, __ne__ = _relation(operator.eq), _relation(operator.ne)

    def __neg__(self) -> "SymScalar":
        return SymScalar(-self.expr)

    def __pos__(self) -> "SymScalar":
        return self

    def __abs__(self) -> Any:
        return scalar(_Abs(self.expr))

    def __hash__(self) -> int:
        return hash(self.expr)

    def __bool__(self) -> bool:
        decided = _decide(operator.ne, self.expr, 0)  # numpy: a float is true unless it is 0
        return builtins.bool(decided)  # a Relational (no point to decide at) refuses, naming itself

    def __float__(self) -> float:
        if self.expr.free_symbols:
            raise TypeError("Cannot convert expression to float")  # SymPy's words: see reference._explain
        return float(_value(self.expr))

    def __int__(self) -> int:
        return int(float(self))

    def item(self, *args: Any) -> "SymScalar":
        return self  # the value itself, as `.item()` means to a derivative

    def __format__(self, spec: str) -> str:
        value = self._at_point() if spec else None
        return format(value, spec) if value is not None else format(str(self), spec)

    def __str__(self) -> str:
        value = self._at_point()
        return str(value) if value is not None else str(self.expr)

    def __repr__(self) -> str:
        value = self._at_point()
        return f"SymScalar({value if value is not None else self.expr})"

    def _at_point(self) -> float | None:
        """The value at the point (what numpy would print), None where there is no point."""
        try:
            return float(_value(self.expr))
        except (TypeError, ValueError):
            return None


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
                "abs", "conj", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "arctan2", "clip"]
sqrt, absolute = _elementwise("sqrt"), _elementwise("absolute")  # also used below
abs = absolute  # noqa: A001 - numpy's name
for _name in sorted(set(_ELEMENTWISE)):
    if _name not in globals() and isinstance(getattr(np, _name, None), np.ufunc):
        globals()[_name] = _elementwise(_name)


def clip(a: Any, a_min: Any = None, a_max: Any = None, out: Any = None, **kwargs: Any) -> Any:
    """Elementwise Min(Max(a, a_min), a_max); either bound may be None; into `out` if given."""
    result = np.frompyfunc(_clip, 3, 1)(_operand(_sym(a)), _operand(a_min) if a_min is not None else None,
                                        _operand(a_max) if a_max is not None else None)
    if out is None:
        return _wrap(result)
    (out.view(np.ndarray) if isinstance(out, SymArray) else out)[...] = result
    return out


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
        return _wrap(fn(*map(_structure_operand, args), **kwargs))

    apply.__name__ = name
    return apply


def _structure_operand(x: Any) -> Any:
    """An argument of a structural function: SymScalars (alone or in lists) as 0-d SymArrays, so
    that numpy stores their expressions (np.stack([a, b]), np.append(v, s))."""
    if isinstance(x, SymScalar):
        return _sym(x)
    if type(x) in (list, tuple):
        items = [_structure_operand(v) for v in x]
        if builtins.any(a is not b for a, b in zip(items, x)):
            return type(x)(items)
    return x


_REDUCTIONS = {"sum", "mean", "prod", "cumsum", "cumprod", "var", "max", "min", "amax", "amin", "average"}


_STRUCTURAL = [
    "sum", "mean", "prod", "cumsum", "cumprod", "var", "max", "min", "amax", "amin", "vdot", "inner",
    "outer", "tensordot", "einsum", "kron", "trace", "reshape", "ravel", "transpose", "swapaxes", "moveaxis",
    "expand_dims", "squeeze", "broadcast_to", "concatenate", "stack", "hstack", "vstack", "column_stack",
    "atleast_1d", "atleast_2d", "atleast_3d", "tile", "repeat", "split", "array_split", "flip", "fliplr",
    "flipud", "roll", "diag", "diagonal", "triu", "tril", "take", "take_along_axis", "copy", "append",
    "delete", "insert", "full_like", "zeros_like", "ones_like", "empty_like", "average", "pad",
]
_sum, var = _structural("sum"), _structural("var")  # also used below
for _name in _STRUCTURAL:
    if _name != "var":
        globals()[_name] = _structural(_name)


def std(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: int = 0,
        keepdims: bool = False, **kwargs: Any) -> Any:
    """sqrt(var(a)), symbolically."""
    return sqrt(var(a, axis=axis, ddof=ddof, keepdims=keepdims))


def _all_finite(a: Any, op: str) -> None:
    """The nan-handling functions have a derivative only where every value is finite."""
    if not builtins.all(np.isfinite(_values_at_point(a)).flat):
        raise NoSymbolicCounterpart(op, "a value is not finite at the parameters, where the loss has no derivative")


def nan_to_num(x: Any, copy: bool = True, nan: Any = 0.0, posinf: Any = None, neginf: Any = None) -> Any:
    """np.nan_to_num: x itself where every value is finite at the point (the case with a derivative)."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return np.nan_to_num(x, copy=copy, nan=nan, posinf=posinf, neginf=neginf)
    _all_finite(x, "nan_to_num")
    return x


def nansum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any) -> Any:
    """np.nansum: the sum, where every value is finite at the point."""
    _all_finite(a, "nansum")
    return _sum(_sym(a), axis=axis, keepdims=keepdims)


def nanmean(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **kwargs: Any
            ) -> Any:
    """np.nanmean: the mean, where every value is finite at the point."""
    _all_finite(a, "nanmean")
    return globals()["mean"](_sym(a), axis=axis, keepdims=keepdims)


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
    return _wrap(np.matmul(_sym(a), _sym(b), **kwargs))


def dot(a: Any, b: Any, out: Any = None) -> Any:
    """np.dot: matmul for 1-D and 2-D arrays, numpy's own rules otherwise."""
    if np.ndim(a) in (1, 2) and np.ndim(b) in (1, 2):
        return matmul(a, b)
    return _wrap(np.dot(_operand(a), _operand(b)))


# --- the namespace: array creation ----------------------------------------------------------

def _floating(dtype: Any) -> bool:
    return dtype is None or np.dtype(dtype).kind in "fcO"


def array(obj: Any, dtype: Any = None, copy: bool | None = True, **kwargs: Any) -> Any:
    """np.array; anything holding SymPy values becomes a SymArray (float dtypes are ignored)."""
    if isinstance(obj, SymArray) or is_symbolic(obj):
        if not _floating(dtype):
            raise NoSymbolicCounterpart(f"array(..., dtype={np.dtype(dtype).name}) of symbolic values")
        out = np.array(_operand(obj) if isinstance(obj, np.ndarray) else plain(obj), dtype=object, copy=copy)
        return _wrap(out)
    out = np.array(obj, dtype=dtype, copy=copy, **kwargs)
    return out.view(SymArray) if out.dtype == object and out.ndim else out  # e.g. a list of mpmath numbers


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

    def __new__(cls, x: Any = 0.0) -> Any:
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
            return sqrt(_sum(_sym(x) * _sym(x), axis=axis, keepdims=keepdims))
        if ord == 1 and vector:
            return _sum(absolute(_sym(x)), axis=axis, keepdims=keepdims)
        raise NoSymbolicCounterpart(f"linalg.norm(ord={ord!r})")

    def __getattr__(self, name: str) -> Any:
        raise NoSymbolicCounterpart(f"linalg.{name}")


class _Unavailable:
    """A numpy submodule (np.random, np.fft) the SymPy reference cannot provide."""

    def __init__(self, module: str, hint: str) -> None:
        self._module, self._hint = module, hint

    def __getattr__(self, name: str) -> Any:
        raise NoSymbolicCounterpart(f"{self._module}.{name}", self._hint)


def _seeded_random() -> Any:
    from ...usercode.rebind import SeededRandom  # retrace imports no sympy: no cycle at import time

    return SeededRandom()


linalg = _Linalg()
# Draws do not depend on the parameters: numpy's own once the loss fixes the seed, constants to
# the derivative (gradcheck.usercode.rebind.SeededRandom).
random = _seeded_random()
fft = _Unavailable("fft", "")

_PASSTHROUGH = [
    "pi", "e", "inf", "nan", "newaxis", "euler_gamma", "float32", "float16", "int64", "int32", "int8", "uint8",
    "intp", "bool_", "int_", "dtype", "finfo", "iinfo", "ndarray", "arange", "linspace", "eye", "identity",
    "indices", "meshgrid", "nonzero", "flatnonzero", "argwhere", "unique", "bincount", "isscalar", "ndim",
    "shape", "size", "errstate", "seterr", "geterr", "broadcast_shapes", "result_type", "iterable",
    "logical_and", "logical_or", "logical_not", "logical_xor", "any", "all", "count_nonzero",
    "integer", "floating", "number", "bool", "ravel_multi_index", "unravel_index", "ix_", "c_", "r_",
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


