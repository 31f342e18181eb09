"""SymPy reference: the learner's numpy loss re-run on symbols and differentiated exactly.

The loss runs with `np` bound to `gradcheck.references.sympy.symnp` (see `gradcheck.usercode.rebind`), so it returns a
SymPy expression. Numbers (the data, the parameters held fixed) are mpmath numbers holding the
exact binary values of the float64 inputs; arithmetic is done at `digits + 15` digits.

Derivatives are exact: the chain rule over the expression graph (each node's partial
derivatives are the textbook rules or SymPy's own `fdiff`), accumulated in reverse and
evaluated at the float64 point taken as exact rationals. This is what `sympy.diff` followed by
`evalf` computes, without expanding the shared subexpressions of a network into a tree, which
takes minutes on a two-layer net. Each value is computed again with 20 more digits; the gap
is its error estimate (about 10**-digits relative). `sympy.diff` itself serves the formulas.

Two plans, by size:

* **All symbols** (at most `all_symbols_limit` parameter elements, 64 by default): every
  element is a symbol named after its leaf (`w5`, `W1_0_1`); one symbolic run gives every
  derivative, and a readable formula for any element (`sympy_formula`, or the reference's
  `formulas`, derived when read).
* **Sampled** (larger problems): at most `max_elements` of the selected elements, taken
  round-robin over the leaves in index order, each differentiated in a run of its own in
  which only that element is a symbol and every other parameter is a number. The expression
  then depends on one variable and never holds the whole network. Elements not reached (over
  `max_elements`, or past `time_budget` seconds) stay unchecked; `checked` says which were
  done and the notes how many.

`time_budget` bounds both plans: past it, the next symbolic operation (in the learner's code
or in the evaluator) raises `symnp.OutOfTime` and the work in progress is dropped. What it
would have given stays unchecked, with a note; if that is everything (an all-symbols run that
did not finish), the reference raises `ReferenceUnavailable` saying so, since a reference that
ran must have checked something. A sampled plan's first element runs whatever the budget.

Where the loss has a kink at the point (a tie in max, min, abs or clip, or a comparison such
as `z > 0` exactly at 0), the one-sided derivatives come from high-precision re-runs at
x +- 1e-25 (in `lower`/`upper`) and the element is marked in `kinks`. Code SymPy cannot run (a
numpy function without a symbolic counterpart, an `if` on a symbolic value) raises
`ReferenceUnavailable` naming the operation and the user's line.
"""

from __future__ import annotations

import contextlib
import gc
import operator
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import mpmath
import numpy as np
import sympy
from sympy.core.parameters import evaluate as sympy_evaluate

from . import symnp
from ...errors import ReferenceUnavailable
from ...model import ReferenceGradient
from .. import unavailable
from ...objective import Objective
from ...usercode.capture import outer_locals
from ...usercode.rebind import SCALAR_REWRITE, UnseededDraw, rebind
from ...tree import leaf_names, map_data, unflatten

#: Extra working digits beyond the requested ones: data and constants carry these.
GUARD_DIGITS = 15
#: One-sided derivatives are difference quotients with this relative step, at working precision.
ONE_SIDED_STEP = sympy.Rational(1, 10**25)
#: Problems with at most this many parameter elements make every element a symbol.
ALL_SYMBOLS_LIMIT = 64
#: A one-sided gap larger than this (relative) is a kink.
KINK_RTOL = 1e-10
#: Expressions with at most this many distinct subexpressions get formulas in the report.
FORMULA_NODES = 400
_NONSMOOTH = (sympy.Max, sympy.Min, sympy.Abs, sympy.sign, sympy.Heaviside)


# --- evaluating expressions and their derivatives -------------------------------------------

class Evaluator:
    """Values and derivatives of SymPy expressions at one point, in mpmath at `dps` digits.

    A forward pass builds the loss as a graph whose subexpressions are shared (each hidden unit
    feeds every output), so walking it as a tree, as `sympy.diff` and `evalf` do, repeats work
    exponentially. Here each node is evaluated once (memoized across calls), and derivatives
    accumulate in reverse over the graph: the chain rule, with each node's partial derivatives
    from the standard rules or, for other functions, SymPy's own `fdiff`. Nodes at a tie of a
    non-smooth operation (Max, Min, Abs, sign, Heaviside) are recorded in `kinks`.

    Nodes are memoized by identity, not by SymPy's equality: hashing a SymPy Float converts it
    to a float every time, and was a fifth of the time. `_alive` keeps every node seen alive,
    so an identity is never reused while the memo lasts.
    """

    def __init__(self, point: dict, dps: int, deadline: float | None = None) -> None:
        self.ctx = mpmath.MPContext()
        self.ctx.dps = dps
        self.dps = dps
        self.point = point
        self.deadline = deadline  # time.perf_counter() past which it raises symnp.OutOfTime
        self.values: dict[int, Any] = {}  # id(node) -> value
        self.kinks: list = []
        self._alive: list = []
        self._orders: dict[int, list] = {}  # id(expr) -> its whole graph, when __call__ walked it all

    # -- values ---------------------------------------------------------------------------------

    def number(self, x: Any) -> Any:
        """A SymPy number as an mpf of this context."""
        ctx = self.ctx
        if x.is_Integer:
            return ctx.mpf(int(x))
        if x.is_Rational:
            return ctx.mpf(int(x.p)) / int(x.q)
        if x.is_Float:
            return ctx.make_mpf(x._mpf_)
        value = x.evalf(self.dps + 5)
        if value.is_Float:
            return ctx.make_mpf(value._mpf_)
        return ctx.nan if value.has(sympy.zoo, sympy.nan) or not value.is_real else ctx.mpf(str(value))

    def __call__(self, expr: Any) -> Any:
        """The value of expr at the point."""
        key = id(expr)
        if key in self.values:
            return self.values[key]
        order = self._postorder(expr, skip_known=True)
        if not self.values:
            self._orders[key] = order  # nothing was known: the whole graph, for order(expr)
        self._fill(order)
        return self.values[key]

    def _fill(self, order: list) -> None:
        """Evaluate the nodes of `order` (children first) not known yet."""
        values = self.values
        self._alive.append(order)
        for n, node in enumerate(order):
            if not n & 255:
                symnp.on_time(self.deadline)
            if id(node) not in values:
                values[id(node)] = self._evaluate(node)

    @staticmethod
    def _children(node: Any) -> tuple:
        if isinstance(node, sympy.Piecewise):
            out = []
            for e, c in node.args:
                out.append(e)
                if isinstance(c, sympy.core.relational.Relational):
                    out += [c.lhs, c.rhs]
            return tuple(out)
        return node.args if isinstance(node, sympy.Expr) and not node.is_Atom else ()

    def _postorder(self, expr: Any, skip_known: bool) -> list:
        """Every node under expr, each after its children (iterative: graphs can be deep)."""
        order, seen, known = [], set(), self.values if skip_known else {}
        stack = [(expr, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            key = id(node)
            if key in seen or key in known:
                continue
            seen.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in self._children(node))
        return order

    def _evaluate(self, node: Any) -> Any:
        ctx = self.ctx
        rule = _SMOOTH_RULES.get(type(node))
        if rule is not None:  # the common nodes, looked up by class
            value = rule(ctx, *[self.values[id(a)] for a in node.args])
            return value if isinstance(value, ctx.mpf) else ctx.nan
        if type(node) is sympy.Float:
            return ctx.make_mpf(node._mpf_)
        if node.is_Symbol:
            if node not in self.point:
                raise ValueError(f"no value for symbol {node}")
            return self.number(self.point[node])
        if node.is_Number or node.is_NumberSymbol:
            return self.number(node)
        if isinstance(node, sympy.Piecewise):
            return self.values[id(self._branch(node))]
        args = [self.values[id(a)] for a in node.args]
        rule = _VALUE_RULES.get(type(node).__name__) if node.is_Function or node.is_Add or node.is_Mul \
            or node.is_Pow else None
        value = rule(ctx, *args) if rule is not None else self._generic(node, args)
        if isinstance(node, _NONSMOOTH) and _at_tie(node, args, value):
            self.kinks.append(node)
        return value if isinstance(value, ctx.mpf) else ctx.nan

    def _generic(self, node: Any, args: list) -> Any:
        floats = [sympy.Float(a, self.dps) if self.ctx.isfinite(a) else sympy.nan for a in args]
        return self.number(node.func(*floats))

    def _branch(self, node: Any) -> Any:
        for e, c in node.args:
            if c == sympy.true or (isinstance(c, sympy.core.relational.Relational)
                                   and bool(_RELATIONS[c.rel_op](self.values[id(c.lhs)],
                                                                 self.values[id(c.rhs)]))):
                return e
        return sympy.nan

    # -- derivatives ----------------------------------------------------------------------------

    def order(self, expr: Any) -> list:
        """Every node of expr, each after its children (shareable between evaluators)."""
        known = self._orders.get(id(expr))
        return known if known is not None else self._postorder(expr, skip_known=False)

    def gradient(self, expr: Any, wrt: Sequence[Any], order: list | None = None) -> list:
        """d expr / d s for each symbol s in wrt (mpf), by reverse accumulation over `order`
        (`self.order(expr)`, computed here if not given)."""
        order = self.order(expr) if order is None else order
        self._fill(order)
        adjoint = {id(expr): self.ctx.one}
        found: dict = {}

        def add(child: Any, contribution: Any) -> None:
            if not child.is_Number:
                key = id(child)
                before = adjoint.get(key)
                adjoint[key] = contribution if before is None else before + contribution

        for n, node in enumerate(reversed(order)):
            if not n & 255:
                symnp.on_time(self.deadline)
            bar = adjoint.pop(id(node), None)
            if bar is None or not bar:  # no path to the loss, or a zero one (a ReLU's dead side)
                continue
            if node.is_Symbol:
                found[node] = found.get(node, 0) + bar
            elif node.is_Add:  # most nodes: each term's partial is 1
                for child in node.args:
                    add(child, bar)
            else:
                for child, partial in self._partials(node):
                    add(child, bar * partial)
        return [found.get(s, self.ctx.zero) for s in wrt]

    def _partials(self, node: Any) -> list:
        ctx, value = self.ctx, self.values[id(node)]
        args = node.args
        vals = [self.values[id(a)] for a in args] if not isinstance(node, sympy.Piecewise) else []
        if node.is_Add:
            return [(a, ctx.one) for a in args]
        if node.is_Mul:
            if len(args) == 2:
                return [(args[0], vals[1]), (args[1], vals[0])]
            return [(a, ctx.fprod(vals[:i] + vals[i + 1:])) for i, a in enumerate(args)]
        if node.is_Pow:
            (b, e), (vb, ve) = args, vals
            out = [(b, ve * ctx.power(vb, ve - 1))] if not b.is_Number else []
            if not e.is_Number:
                out.append((e, value * ctx.log(vb)))
            return out
        if isinstance(node, sympy.Piecewise):
            return [(self._branch(node), ctx.one)]
        rule = _PARTIAL_RULES.get(type(node).__name__)
        if rule is not None:
            return rule(ctx, args, vals, value)
        return [(a, self._fdiff(node, i, vals)) for i, a in enumerate(args) if not a.is_Number]

    def _fdiff(self, node: Any, i: int, vals: list) -> Any:
        floats = {a: sympy.Float(v, self.dps) for a, v in zip(node.args, vals)}
        return self.number(node.fdiff(i + 1).xreplace(floats))

    def size(self, expr: Any) -> int:
        """How many distinct nodes the expression graph has."""
        return len(set(self.order(expr)))


def _extremum_partials(ctx: Any, args: tuple, vals: list, value: Any) -> list:
    tied = [a for a, v in zip(args, vals) if v == value]
    return [(a, ctx.one / len(tied)) for a in tied]  # a tie splits the derivative evenly (SymPy's H(0)=1/2)


_VALUE_RULES: dict[str, Callable] = {
    # Two terms: one rounding either way, without fsum's and fprod's set-up (most nodes have two).
    "Add": lambda ctx, *v: v[0] + v[1] if len(v) == 2 else ctx.fsum(v),
    "Mul": lambda ctx, *v: v[0] * v[1] if len(v) == 2 else ctx.fprod(v),
    "Pow": lambda ctx, b, e: ctx.power(b, e), "exp": lambda ctx, x: ctx.exp(x),
    "log": lambda ctx, x: ctx.log(x) if x > 0 else (ctx.ninf if x == 0 else ctx.nan),
    "tanh": lambda ctx, x: ctx.tanh(x), "Abs": lambda ctx, x: abs(x), "sign": lambda ctx, x: ctx.sign(x),
    "Max": lambda ctx, *v: max(v), "Min": lambda ctx, *v: min(v),
    "Heaviside": lambda ctx, x, h0=None: ctx.one if x > 0 else ctx.zero if x < 0 else
    (h0 if h0 is not None else ctx.mpf(0.5)),
}
#: Value rules by class for the smooth operations most nodes are (no tie to watch for).
_SMOOTH_RULES: dict[type, Callable] = {getattr(sympy, name): _VALUE_RULES[name]
                                       for name in ("Add", "Mul", "Pow", "exp", "log", "tanh")}
_PARTIAL_RULES: dict[str, Callable] = {
    "exp": lambda ctx, a, v, y: [(a[0], y)],
    "log": lambda ctx, a, v, y: [(a[0], 1 / v[0])],
    "tanh": lambda ctx, a, v, y: [(a[0], 1 - y * y)],
    "Abs": lambda ctx, a, v, y: [(a[0], ctx.sign(v[0]))],
    "sign": lambda ctx, a, v, y: [],
    "Heaviside": lambda ctx, a, v, y: [],
    "Max": _extremum_partials, "Min": _extremum_partials,
}
_RELATIONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
              "!=": operator.ne}


def _at_tie(node: Any, args: list, value: Any) -> bool:
    """Whether a non-smooth node sits at its kink (to 1e-13 relative)."""
    if isinstance(node, (sympy.Max, sympy.Min)):
        rest = sorted(args, reverse=isinstance(node, sympy.Max))
        return len(rest) > 1 and abs(rest[0] - rest[1]) <= 1e-13 * (1 + abs(rest[0]))
    return abs(args[0]) <= 1e-13 if args else False


# --- symbols and values ----------------------------------------------------------------------

def symbol_names(names: Sequence[str], shapes: Sequence[tuple]) -> list[np.ndarray]:
    """Per leaf, an object array of readable, unique symbol names: w5, W1_0_1, layers_0_W_2."""
    taken: set[str] = set()
    out = []
    for name, shape in zip(names, shapes):
        base = re.sub(r"\W+", "_", name).strip("_") or "p"
        base = base if not base[0].isdigit() else f"p_{base}"
        arr = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            candidate = "_".join([base, *map(str, index)])
            while candidate in taken:
                candidate += "_"
            taken.add(candidate)
            arr[index] = candidate
        out.append(arr)
    return out


def _exact(x: float) -> sympy.Rational:
    return sympy.Rational(float(x))  # the float64's exact binary value


@dataclass
class _State:
    """An objective under SymPy: the rebound loss and, once built, the all-symbols expression."""

    fn: Any
    data: tuple  # (args, kwargs) with the user's objects and functions in them rebound
    names: list
    symbols: list = field(default_factory=list)  # per leaf: object array of Symbols
    expression: Any = None
    ties: list = field(default_factory=list)
    evaluator: Any = None
    dps: int = 0
    readable: Any = None  # (expression built with simplification, the loss's local variables)


_STATES: "weakref.WeakKeyDictionary[Objective, _State]" = weakref.WeakKeyDictionary()


def _state(objective: Objective) -> _State:
    state = _STATES.get(objective)
    if state is None:
        fn, data = rebind(objective.loss, symnp, data=(objective.args, objective.kwargs),
                          functional_writes=True)  # for float(), .item(); writes stay in place on object arrays
        state = _State(fn=fn, data=data, names=leaf_names(objective.treedef))
        _STATES[objective] = state
    return state


def _leaf_value(objective: Objective, k: int, values: np.ndarray) -> Any:
    """A leaf as the loss receives it: a SymArray, or a scalar for Python-number parameters."""
    if objective.scalar_leaves[k] and values.ndim == 0:
        return symnp.scalar(values[()])
    return values.view(symnp.SymArray)


def _data(tree: Any) -> Any:
    """Fresh data as symnp sees it: floats as exact mpmath numbers, ints and bools copied."""
    return map_data(tree, _datum)


def _datum(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _exact_numbers(value).view(symnp.SymArray) if value.dtype.kind in "fc" else value.copy()
    return symnp.lift(value) if isinstance(value, float) else value


#: Float arrays recently turned into exact numbers: {(shape, dtype, hash of bytes): (values, numbers)}.
_LIFTED: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
#: At most this many arrays are kept, each of at most this many elements (memory stays small).
_LIFTED_ARRAYS, _LIFTED_SIZE = 8, 1 << 17


def _exact_numbers(x: np.ndarray) -> np.ndarray:
    """A float array as a fresh object array of exact mpmath numbers (see symnp.lift).

    Every sampled element's run, and every check of the same problem, lifts the same parameters
    and data again; making ten thousand mpmath numbers was a sixth of a sampled element's time.
    Recent results are kept by content (the key's hash, then the values themselves, compared
    exactly) and handed out as copies: the numbers are immutable, the arrays are not.
    """
    if x.size > _LIFTED_SIZE:
        return np.asarray(symnp.lift(x), dtype=object)
    key = (x.shape, x.dtype.str, hash(x.tobytes()))
    known = _LIFTED.get(key)
    if known is None or not np.array_equal(known[0], x, equal_nan=True):
        known = (x.copy(), np.asarray(symnp.lift(x), dtype=object))
        _LIFTED[key] = known
        while len(_LIFTED) > _LIFTED_ARRAYS:
            _LIFTED.popitem(last=False)
    _LIFTED.move_to_end(key)
    return known[1].copy()


def _as_expression(value: Any) -> Any:
    """The loss value as a SymPy expression (a SymScalar, a one-element array or a number)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TypeError(f"the loss is an array of shape {value.shape} under SymPy, not a single number")
        value = value.reshape(-1)[0]
    return sympy.sympify(symnp.plain(value))


def _run(objective: Objective, state: _State, leaves: list, evaluator: Evaluator, *, simplify: bool = False
         ) -> tuple[Any, list]:
    """The loss at symbolic/numeric leaves (object arrays), and the comparison ties it hit.

    Without `simplify` the expression is built unevaluated (no collecting of like terms, no
    sorting of arguments): three to ten times faster, and the evaluator does not care. Formulas
    are built with it, to read well.
    """
    with symnp.evaluation(point=evaluator.point, dps=evaluator.dps, evaluate=evaluator,
                          deadline=evaluator.deadline) as evaluation, \
            sympy_evaluate(simplify):
        try:
            params = unflatten(objective.treedef, [_leaf_value(objective, k, v) for k, v in enumerate(leaves)])
            args, kwargs = state.data
            value = state.fn(params, *_data(args), **_data(kwargs))
            return _as_expression(value), evaluation.ties
        except ReferenceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - anything SymPy cannot run is a reference limitation
            raise _unavailable(exc) from exc


#: How far the symbolic loss value may stray from the numpy one before the re-run is distrusted.
VALUE_RTOL, VALUE_ATOL = 1e-6, 1e-9


def _check_value(objective: Objective, value: Any, f0: float | None) -> None:
    """The re-run must compute the user's loss: compare its value with the numpy loss's."""
    expected = objective(objective.x0) if f0 is None else f0
    got = float(value)
    if not abs(got - expected) <= VALUE_RTOL * abs(expected) + VALUE_ATOL:
        raise ReferenceUnavailable(
            f"the SymPy reference cannot run this loss: re-run symbolically it gives {got!r}, but your numpy "
            f"code gives {expected!r}. The loss depends on something the re-run does not see the same way "
            f"(global state, a numpy call that was not swapped, float32 casts)")


def _numbers(x: np.ndarray) -> np.ndarray:
    """A float64 leaf as an object array of exact mpmath numbers (symnp's numbers)."""
    return _exact_numbers(np.asarray(x, dtype=np.float64))


# --- explaining failures -----------------------------------------------------------------------

def _explain(exc: BaseException, text: str, at: str) -> str | None:
    """Why SymPy could not run the user's loss, naming the operation (None: no known cause)."""
    if isinstance(exc, (symnp.NoSymbolicCounterpart, UnseededDraw)):
        return f"{text}{at}"
    if isinstance(exc, TypeError) and "truth value of Relational" in text:
        return (f"Python control flow on a value that depends on the parameters{at} (an `if`, `while`, "
                f"`and`/`or`, `max()` or `min()` on a symbolic value); use np.where / np.maximum instead")
    if isinstance(exc, TypeError) and "convert expression to" in text:
        return (f"a parameter-dependent value is converted to a Python number{at} (float(), int(), .item(), "
                f"or writing it into a float array made outside np.zeros/np.empty). {SCALAR_REWRITE}")
    if isinstance(exc, TypeError) and ("loop of ufunc does not support" in text or "has no callable" in text):
        return (f"a numpy function was called on symbolic values without being swapped for its symbolic "
                f"counterpart{at} (a numpy call reached through an object or a library): {text}")
    return None


def _unavailable(exc: BaseException) -> ReferenceUnavailable:
    return unavailable("SymPy", exc, _explain)


# --- the two plans -----------------------------------------------------------------------------

def _all_symbols(objective: Objective, dps: int, deadline: float | None = None) -> _State:
    """The loss as one expression in a symbol per parameter element (built once per objective)."""
    state = _state(objective)
    if state.expression is None or state.dps < dps:
        shapes = [x.shape for x in objective.x0]
        names = symbol_names(state.names, shapes)
        state.symbols = [np.vectorize(lambda n: sympy.Symbol(n, real=True), otypes=[object])(a)
                         if a.size else np.empty(a.shape, dtype=object) for a in names]
        state.evaluator = Evaluator(_point(objective, state.symbols), dps, deadline)
        state.expression, state.ties = _run(objective, state, [s.copy() for s in state.symbols],
                                            state.evaluator)
        state.dps = dps
    return state


def _point(objective: Objective, symbols: Sequence[np.ndarray]) -> dict:
    return {s: _exact(x) for syms, leaf in zip(symbols, objective.x0) for s, x in zip(syms.flat, leaf.flat)}


def _order(selection: Sequence[np.ndarray], limit: int) -> list[tuple[int, int]]:
    """(leaf, flat index) pairs, round-robin over the leaves, at most `limit`."""
    queues = [list(np.asarray(s, dtype=np.int64)) for s in selection]
    out: list[tuple[int, int]] = []
    while len(out) < limit and any(queues):
        for k, q in enumerate(queues):
            if q and len(out) < limit:
                out.append((k, int(q.pop(0))))
    return out


@dataclass
class _Result:
    """Per-leaf arrays being filled in."""

    values: list
    errors: list
    checked: list
    lower: list
    upper: list
    kinks: list
    notes: list = field(default_factory=list)

    @classmethod
    def empty(cls, shapes: Sequence[tuple]) -> "_Result":
        def nans() -> list:
            return [np.full(s, np.nan) for s in shapes]

        def falses() -> list:
            return [np.zeros(s, bool) for s in shapes]

        return cls(values=nans(), errors=nans(), checked=falses(), lower=nans(), upper=nans(), kinks=falses())

    def set(self, k: int, i: int, value: Any, check: Any, digits: int) -> None:
        """Store a derivative computed at two precisions: their gap bounds its error."""
        v = float(value)
        self.values[k].reshape(-1)[i] = v
        self.errors[k].reshape(-1)[i] = max(float(abs(value - check)), 10.0**-digits * abs(v), 1e-300)
        self.checked[k].reshape(-1)[i] = bool(np.isfinite(v))


def _derivatives(expr: Any, wrt: list, point: dict, evaluator: Evaluator) -> tuple[list, list]:
    """The derivatives at the evaluator's precision, and again with 20 more digits (a check)."""
    order = evaluator.order(expr)
    finer = Evaluator(point, evaluator.dps + 20, evaluator.deadline)
    return evaluator.gradient(expr, wrt, order), finer.gradient(expr, wrt, order)


def _kinked(evaluator: Evaluator, ties: list) -> set:
    """Symbols feeding a non-smooth operation or a comparison that sits exactly at a tie."""
    out: set = set().union(*ties) if ties else set()
    for node in evaluator.kinks:
        out |= node.free_symbols
    return out


def _one_sided(objective: Objective, state: _State, k: int, i: int, dps: int, deadline: float | None
               ) -> tuple[float, float]:
    """(left, right) derivatives of element (k, i) from numeric re-runs at working precision."""
    x = _exact(objective.x0[k].reshape(-1)[i])
    h = ONE_SIDED_STEP * max(abs(x), 1)
    leaves = [_numbers(leaf) for leaf in objective.x0]
    results = []
    for shift in (-h, 0, h):
        moved = [a.copy() for a in leaves]
        with mpmath.workdps(dps):
            moved[k].reshape(-1)[i] = mpmath.mpf(int((x + shift).p)) / int((x + shift).q)
        evaluator = Evaluator({}, dps, deadline)
        expr, _ = _run(objective, state, moved, evaluator)
        results.append(evaluator(expr))
    left, mid, right = results
    return float((mid - left) / h), float((right - mid) / h)


def _mark_kinks(objective: Objective, state: _State, result: _Result, candidates: list, dps: int,
                deadline: float | None = None) -> None:
    """One-sided derivatives of the elements at a tie; past the deadline, the rest are unchecked
    (at a tie the two-sided value alone cannot be judged)."""
    for n, (k, i) in enumerate(candidates):
        try:
            left, right = _one_sided(objective, state, k, i, dps, deadline)
        except symnp.OutOfTime:
            for k2, i2 in candidates[n:]:
                result.checked[k2].reshape(-1)[i2] = False
            result.notes.append(f"time budget: {len(candidates) - n} element(s) at a tie left unchecked (their "
                                f"one-sided derivatives were not computed in time)")
            return
        lo, hi = min(left, right), max(left, right)
        result.lower[k].reshape(-1)[i], result.upper[k].reshape(-1)[i] = lo, hi
        if hi - lo > KINK_RTOL * max(abs(lo), abs(hi), 1e-300):
            result.kinks[k].reshape(-1)[i] = True


def _gradient_all_symbols(objective: Objective, selection: Sequence[np.ndarray], digits: int,
                          result: _Result, formula_nodes: int, f0: float | None, time_budget: float | None
                          ) -> Mapping:
    dps = digits + GUARD_DIGITS
    deadline = None if time_budget is None else time.perf_counter() + time_budget
    pairs = [(k, int(i)) for k, idx in enumerate(selection) for i in np.asarray(idx, dtype=np.int64)]
    state = _state(objective)
    try:
        _all_symbols(objective, dps, deadline)
        state.evaluator.deadline = deadline
        wrt = [state.symbols[k].reshape(-1)[i] for k, i in pairs]
        _check_value(objective, state.evaluator(state.expression), f0)
        values, checks = _derivatives(state.expression, wrt, state.evaluator.point, state.evaluator)
    except symnp.OutOfTime as exc:  # nothing checked is no verdict: the reference did not run, and says why
        message = (f"with every parameter a symbol, the symbolic run did not finish within its time budget "
                   f"({time_budget:.2g} s); give the check more time (budget=...) or leave SymPy out")
        raise unavailable("SymPy", exc, lambda *_: message) from None
    finally:
        if state.evaluator is not None:
            state.evaluator.deadline = None  # the cached evaluator serves later calls, with their own budget
    kinked = _kinked(state.evaluator, state.ties)
    for (k, i), value, check in zip(pairs, values, checks):
        result.set(k, i, value, check, digits)
    _mark_kinks(objective, state, result, [p for p, s in zip(pairs, wrt) if s in kinked], dps, deadline)
    if state.evaluator.size(state.expression) > formula_nodes:
        result.notes.append("formulas: the expression is too large to show; sympy_formula(...) gives one anyway")
        return {}
    keys = [(state.names[k], tuple(int(j) for j in np.unravel_index(i, objective.x0[k].shape))) for k, i in pairs]
    return Formulas(objective, keys, digits)


def _gradient_sampled(objective: Objective, selection: Sequence[np.ndarray], digits: int, max_elements: int,
                      time_budget: float | None, result: _Result, f0: float | None,
                      first_budget: float | None = None) -> None:
    dps = digits + GUARD_DIGITS
    start = time.perf_counter()  # the budgets count building the symbolic re-run too
    state = _state(objective)
    wanted = sum(len(s) for s in selection)
    order = _order(selection, max_elements)
    leaves = [_numbers(leaf) for leaf in objective.x0]
    deadline = None if time_budget is None else start + time_budget
    first_deadline = None if first_budget is None else start + first_budget
    done = 0
    t = sympy.Symbol("t", real=True)
    for k, i in order:
        elapsed = time.perf_counter() - start
        # Stop before an element that, at the pace so far, would end past the budget.
        if time_budget is not None and done and elapsed * (done + 1) / done > time_budget:
            break
        try:  # the first element within the first budget; the others only within the budget
            _sampled_element(objective, state, leaves, (k, i), t, dps, deadline if done else first_deadline,
                             result, f0 if not done else None, digits)
        except symnp.OutOfTime:
            break
        done += 1
    if done < wanted:
        why = "time budget" if done < len(order) else f"max_elements={max_elements}"
        result.notes.append(f"sampled: {done} of {wanted} selected elements differentiated ({why}), each with the "
                            f"other parameters held as numbers")
    else:
        result.notes.append(f"sampled: each of the {done} elements differentiated with the other parameters held "
                            f"as numbers")


def _sampled_element(objective: Objective, state: _State, leaves: list, element: tuple[int, int], t: Any,
                     dps: int, deadline: float | None, result: _Result, f0: float | None, digits: int) -> None:
    """Differentiate one element in a run where it alone is a symbol (`f0` given: check the value too)."""
    k, i = element
    moved = [a.copy() for a in leaves]  # copies: the loss may write into its parameters
    moved[k].reshape(-1)[i] = t
    evaluator = Evaluator({t: _exact(objective.x0[k].reshape(-1)[i])}, dps, deadline)
    expr, ties = _run(objective, state, moved, evaluator)
    if f0 is not None:
        _check_value(objective, evaluator(expr), f0)
    (value,), (check,) = _derivatives(expr, [t], evaluator.point, evaluator)
    result.set(k, i, value, check, digits)
    if t in _kinked(evaluator, ties):
        _mark_kinks(objective, state, result, [(k, i)], dps, deadline)


class Formulas(Mapping):
    """{(leaf name, index): formula}, each derived when first read (a formula costs ~0.1 s).

    Formulas are in the user's own variables where the loss has them (see `sympy_formula`,
    in_terms="locals"), else in the parameters.
    """

    def __init__(self, objective: Objective, keys: Sequence[tuple], digits: int) -> None:
        self._objective, self._keys, self._digits = objective, list(keys), digits
        self._done: dict = {}

    def __getitem__(self, key: tuple) -> str:
        if key not in self._done:
            if key not in self._keys:
                raise KeyError(key)
            name, index = key
            self._done[key] = sympy_formula(self._objective, name, index, in_terms="locals", digits=self._digits)
        return self._done[key]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<{len(self._keys)} formulas, each derived when read>"


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Python's cycle collector paused while expressions are built and evaluated.

    A symbolic run allocates hundreds of thousands of SymPy nodes and mpmath numbers, freed by
    reference counting; each allocation burst started a collection that walked the whole heap
    (JAX's objects included), a third of a sampled element's time within a check.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def sympy_gradient(objective: Objective, selection: Sequence[np.ndarray], *, digits: int = 35,
                   all_symbols_limit: int = ALL_SYMBOLS_LIMIT, max_elements: int = 32,
                   time_budget: float | None = 10.0, formula_nodes: int = FORMULA_NODES,
                   f0: float | None = None, first_budget: float | None = None) -> ReferenceGradient:
    """Exact derivatives of the selected elements, evaluated to `digits` significant digits.

    Up to `all_symbols_limit` parameter elements in total, every element is a symbol (one run);
    beyond, at most `max_elements` selected elements are differentiated one at a time. Work past
    `time_budget` seconds (None: no limit) stops at the next symbolic operation and leaves the
    elements not done unchecked, with a note, or raises ReferenceUnavailable if none is done
    (see the module docstring). Formulas are filled in for expressions of
    at most `formula_nodes` distinct subexpressions. `f0`, the numpy loss at x0 if the caller has
    it, spares one loss call (the symbolic value is checked against it). A sample's first element
    is differentiated even past `time_budget`, within `first_budget` seconds (None: no limit).
    """
    start = time.perf_counter()
    shapes = [x.shape for x in objective.x0]
    result = _Result.empty(shapes)
    total = sum(int(np.prod(s)) for s in shapes)
    formulas: Mapping = {}
    with _without_cyclic_gc():
        if total <= all_symbols_limit:
            formulas = _gradient_all_symbols(objective, selection, digits, result, formula_nodes, f0, time_budget)
            plan = "every parameter a symbol"
        else:
            _gradient_sampled(objective, selection, digits, max_elements, time_budget, result, f0, first_budget)
            plan = "one symbol per sampled element"
    count = sum(int(m.sum()) for m in result.kinks)
    if count:
        result.notes.append(f"{count} element(s) sit at a kink (a tie in max/abs/clip or a comparison); their "
                            f"one-sided derivatives are in lower/upper")
    errors = tuple(np.where(c, e, np.inf) for c, e in zip(result.checked, result.errors))
    return ReferenceGradient(
        name="sympy", method=f"symbolic (SymPy, exact to {digits} digits; {plan})", values=tuple(result.values),
        errors=errors, checked=tuple(result.checked), lower=tuple(result.lower), upper=tuple(result.upper),
        notes=tuple(result.notes), seconds=time.perf_counter() - start, exact=True, formulas=formulas,
        kinks=tuple(result.kinks),
    )


# --- formulas ----------------------------------------------------------------------------------

def _traced_run(objective: Objective, state: _State, leaves: list, point: dict, dps: int) -> tuple[Any, dict]:
    """A symbolic run that also returns the local variables of the user's outermost function."""
    (expr, _), captured = outer_locals(_run, objective, state, leaves, Evaluator(point, dps), simplify=True)
    return expr, captured


def _readable_numbers(expr: Any) -> Any:
    """Floats as the shortest decimals of their float64 values (0.05, not 0.05000000000000000277),
    held as exact rationals so that 1.0*x reads x and terms cancel."""
    return expr.xreplace({f: sympy.Rational(repr(float(f))) for f in expr.atoms(sympy.Float)})


def _named_locals(captured: dict, parameters: set) -> list[tuple[Any, Any]]:
    """(symbol, value) for the user's local variables that are expressions in the parameters."""
    out = []
    for name, value in captured.items():
        value = symnp.plain(value)
        if isinstance(value, np.ndarray) and value.dtype == object and 0 < value.size <= 64:
            items = [(f"{name}[{', '.join(map(str, i))}]" if value.ndim else name, symnp.plain(value[i]))
                     for i in np.ndindex(*value.shape)]
        elif isinstance(value, sympy.Basic):
            items = [(name, value)]
        else:
            continue
        for label, v in items:
            if isinstance(v, sympy.Basic) and v.free_symbols and v not in parameters:
                out.append((sympy.Symbol(label, real=True), _readable_numbers(v)))
    return out


def _name_subexpressions(expr: Any, named: list) -> tuple[Any, list]:
    """Rewrite expr (and later locals) with each local's name; a logistic 1/(1 + exp(a)) named s
    also turns exp(a) into (1 - s)/s, so sigmoid derivatives read s (1 - s)."""
    named = list(named)
    for n in range(len(named)):
        symbol, value = named[n]

        def rewrite(e: Any) -> Any:
            e = e.subs(value, symbol)
            if isinstance(value, sympy.Pow) and value.exp == -1 and isinstance(value.base, sympy.Add):
                exps = [a for a in value.base.args if isinstance(a, sympy.exp)]
                if len(exps) == 1 and value.base - exps[0] == 1:
                    e = e.subs(exps[0], (1 - symbol) / symbol)
            return e

        expr = rewrite(expr)
        named[n + 1:] = [(s, rewrite(v)) for s, v in named[n + 1:]]
    return expr, named


def _decimal_text(expr: Any) -> str:
    """Print with terminating rationals as decimals (0.01, not 1/100)."""
    def decimal(r: Any) -> Any:
        q = int(r.q)
        while q % 2 == 0:
            q //= 2
        while q % 5 == 0:
            q //= 5
        return sympy.Float(repr(float(r)), 17) if q == 1 else r

    rationals = {r: decimal(r) for r in expr.atoms(sympy.Rational) if not r.is_Integer}
    return sympy.sstr(expr.xreplace(rationals), full_prec=False)


def _in_locals(label: str, derivative: Any, captured: dict, parameters: set) -> str:
    named = _named_locals(captured, parameters)
    expr, named = _name_subexpressions(_readable_numbers(derivative), named)
    definitions = dict(named)
    used: list = []
    pending = list(expr.free_symbols)
    while pending:  # the definitions the formula needs, transitively
        s = pending.pop()
        if s in definitions and s not in used:
            used.append(s)
            pending.extend(definitions[s].free_symbols)
    order = [s for s, _ in named if s in used]
    lines = [f"{label} = {_decimal_text(expr if order else sympy.factor_terms(expr))}"]
    if order:
        lines.append("where")
        lines += [f"  {s} = {_decimal_text(definitions[s])}" for s in order]
    return "\n".join(lines)


def sympy_formula(objective: Objective, leaf_name: str, index: Any = (), *, in_terms: str = "parameters",
                  digits: int = 35, all_symbols_limit: int = ALL_SYMBOLS_LIMIT) -> str:
    """d loss / d leaf[index] as a readable formula.

    in_terms="parameters": one expression in the parameter symbols (data as numbers).
    in_terms="locals": in the user's own variables (the local variables of the loss function,
    e.g. out_o1 and out_h1 for Mazur's dE/dw5), followed by "where" lines defining them.
    in_terms="steps": repeated subexpressions named u0, u1, ... (sympy.cse), one per line.
    Small problems give formulas in every parameter; larger ones in this element only, the
    other parameters held as numbers.
    """
    if in_terms not in ("parameters", "locals", "steps"):
        raise ValueError(f"in_terms must be 'parameters', 'locals' or 'steps', not {in_terms!r}")
    state = _state(objective)
    if leaf_name not in state.names:
        raise KeyError(f"no parameter named {leaf_name!r}; parameters are {state.names}")
    k = state.names.index(leaf_name)
    shape = objective.x0[k].shape
    flat = int(np.ravel_multi_index(tuple(int(j) for j in np.atleast_1d(index)), shape)) if shape else 0
    dps = digits + GUARD_DIGITS
    if sum(x.size for x in objective.x0) <= all_symbols_limit:
        state = _all_symbols(objective, dps)
        symbol = state.symbols[k].reshape(-1)[flat]
        if state.readable is None:  # one readable run serves every element's formula
            leaves = [s.copy() for s in state.symbols]
            state.readable = _traced_run(objective, state, leaves, _point(objective, state.symbols), dps)
        expr, captured = state.readable
        parameters = {s for leaf in state.symbols for s in leaf.flat}
    else:
        symbol = sympy.Symbol(symbol_names([leaf_name], [shape])[0].reshape(-1)[flat], real=True)
        leaves = [_numbers(leaf) for leaf in objective.x0]
        leaves[k].reshape(-1)[flat] = symbol
        expr, captured = _traced_run(objective, state, leaves, {symbol: _exact(objective.x0[k].reshape(-1)[flat])},
                                     dps)
        parameters = {symbol}
    label = f"d{objective.name}/d{symbol}"
    if in_terms == "locals":
        return _in_locals(label, sympy.diff(expr, symbol), captured, parameters)
    derivative = _readable_numbers(sympy.diff(expr, symbol))
    if in_terms == "steps":
        replacements, (reduced,) = sympy.cse(derivative, symbols=sympy.numbered_symbols("u"))
        lines = [f"{s} = {_decimal_text(e)}" for s, e in replacements]
        return "\n".join([*lines, f"{label} = {_decimal_text(sympy.factor_terms(reduced))}"])
    return _decimal_text(sympy.factor_terms(derivative))
