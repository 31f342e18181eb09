"""SymPy reference: the learner's numpy loss re-run on symbols and differentiated exactly.

The loss runs with `np` bound to `gradcheck.symnp` (see `gradcheck.retrace`). Data floats
become SymPy Floats holding their exact binary values at `digits + 15` digits. Two plans:

* **All symbols** (at most `all_symbols_limit` parameter elements, 64 by default): every
  element is a symbol named after its leaf (`w5`, `W1_0_1`). One symbolic run gives the loss
  as an expression; each selected element's derivative is `sympy.diff` of it, evaluated with
  the float64 parameters substituted as exact rationals, to `digits` significant digits.
  Readable formulas are available for every element (`sympy_formula`).
* **Sampled** (larger problems): at most `max_elements` of the selected elements, taken
  round-robin over the leaves in index order, each differentiated in a run of its own in
  which only that element is a symbol and every other parameter is a number. The expression
  then depends on one variable and never holds the whole network. Elements not reached (over
  `max_elements` or past `time_budget` seconds) stay unchecked, and the notes say how many.

Where the loss has a kink at the point (Max, Abs, a clip or a comparison exactly at a tie),
the one-sided derivatives are computed too, from high-precision re-runs at x +- 1e-25, and the
element is marked in `kinks`. Code SymPy cannot run (a numpy function without a symbolic
counterpart, an `if` on a symbolic value) raises `ReferenceUnavailable` naming the operation
and the user's line.
"""

from __future__ import annotations

import re
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import sympy

from .. import symnp
from ..errors import ReferenceUnavailable
from ..model import ReferenceGradient
from ..objective import Objective
from ..retrace import rebind, user_location
from ..tree import leaf_names, unflatten

#: Extra working digits beyond the requested ones: data and constants carry these.
GUARD_DIGITS = 15
#: One-sided derivatives are difference quotients with this relative step, at working precision.
ONE_SIDED_STEP = sympy.Rational(1, 10**25)
#: Problems with at most this many parameter elements make every element a symbol.
ALL_SYMBOLS_LIMIT = 64
#: A one-sided gap larger than this (relative) is a kink.
KINK_RTOL = 1e-10
_NONSMOOTH = (sympy.Max, sympy.Min, sympy.Abs, sympy.sign, sympy.Heaviside, sympy.Piecewise)


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
    names: list
    symbols: list = field(default_factory=list)  # per leaf: object array of Symbols
    expression: Any = None
    ties: list = field(default_factory=list)
    dps: int = 0


_STATES: "weakref.WeakKeyDictionary[Objective, _State]" = weakref.WeakKeyDictionary()


def _state(objective: Objective) -> _State:
    state = _STATES.get(objective)
    if state is None:
        state = _State(fn=rebind(objective.loss, symnp), names=leaf_names(objective.treedef))
        _STATES[objective] = state
    return state


def _leaf_value(objective: Objective, k: int, values: np.ndarray) -> Any:
    """A leaf as the loss receives it: a SymArray, or a scalar for Python-number parameters."""
    if objective.scalar_leaves[k] and values.ndim == 0:
        return values[()]
    return values.view(symnp.SymArray)


def _data(tree: Any) -> Any:
    """Fresh data, floats lifted to working-precision SymPy Floats (ints and bools copied)."""
    if isinstance(tree, np.ndarray):
        return symnp.lift(tree) if tree.dtype.kind in "fc" else tree.copy()
    if isinstance(tree, dict):
        return {k: _data(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_data(v) for v in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    if isinstance(tree, float):
        return symnp.lift(tree)
    return tree


def _as_expression(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TypeError(f"the loss is an array of shape {value.shape} under SymPy, not a single number")
        value = value.reshape(-1)[0]
    return sympy.sympify(value)


def _run(objective: Objective, state: _State, leaves: list, point: dict | None, dps: int
         ) -> tuple[Any, list]:
    """The loss at symbolic/numeric leaves (object arrays), and the comparison ties it hit."""
    with symnp.evaluation(point=point, dps=dps) as evaluation:
        try:
            params = unflatten(objective.treedef, [_leaf_value(objective, k, v) for k, v in enumerate(leaves)])
            value = state.fn(params, *_data(objective.args), **_data(objective.kwargs))
            return _as_expression(value), evaluation.ties
        except ReferenceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - anything SymPy cannot run is a reference limitation
            raise _unavailable(exc) from exc


def _numbers(x: np.ndarray, dps: int) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(*x.shape):
        out[index] = sympy.Float(float(x[index]), dps)
    return out


# --- explaining failures -----------------------------------------------------------------------

def _explain(exc: BaseException) -> str:
    where = user_location(exc)
    at = f" at {where}" if where else ""
    text = str(exc).split("\n")[0]
    if isinstance(exc, symnp.NoSymbolicCounterpart):
        return f"{text}{at}"
    if isinstance(exc, TypeError) and "truth value of Relational" in text:
        return (f"Python control flow on a value that depends on the parameters{at} (an `if`, `while`, "
                f"`and`/`or`, `max()` or `min()` on a symbolic value); use np.where / np.maximum instead")
    if isinstance(exc, TypeError) and "convert expression to" in text:
        return (f"a parameter-dependent value is converted to a Python number{at} (float(), int(), .item(), "
                f"or writing it into a float array made outside np.zeros/np.empty)")
    if isinstance(exc, TypeError) and ("loop of ufunc does not support" in text or "has no callable" in text):
        return (f"a numpy function was called on symbolic values without being swapped for its symbolic "
                f"counterpart{at} (a numpy call reached through an object or a library): {text}")
    return f"the loss raised {type(exc).__name__} under SymPy{at}: {text}"


def _unavailable(exc: BaseException) -> ReferenceUnavailable:
    error = ReferenceUnavailable(f"the SymPy reference cannot run this loss: {_explain(exc)}")
    error.where = user_location(exc)  # type: ignore[attr-defined]
    return error


# --- the two plans -----------------------------------------------------------------------------

def _all_symbols(objective: Objective, dps: int) -> _State:
    """The loss as one expression in a symbol per parameter element (built once per objective)."""
    state = _state(objective)
    if state.expression is None or state.dps < dps:
        shapes = [x.shape for x in objective.x0]
        names = symbol_names(state.names, shapes)
        state.symbols = [np.vectorize(lambda n: sympy.Symbol(n, real=True), otypes=[object])(a)
                         if a.size else np.empty(a.shape, dtype=object) for a in names]
        state.expression, state.ties = _run(objective, state, [s.copy() for s in state.symbols],
                                            _point(objective, state.symbols), dps)
        state.dps = dps
    return state


def _point(objective: Objective, symbols: Sequence[np.ndarray]) -> dict:
    return {s: _exact(x) for syms, leaf in zip(symbols, objective.x0) for s, x in zip(syms.flat, leaf.flat)}


def _evaluate(expr: Any, point: dict, digits: int) -> float:
    value = expr.evalf(digits, subs=point) if expr.free_symbols else expr.evalf(digits)
    return float(value) if value.is_real is not False else float("nan")


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
        return cls(*([np.full(s, np.nan) for s in shapes] for _ in range(5)), [np.zeros(s, bool) for s in shapes])

    def set(self, k: int, i: int, value: float, digits: int) -> None:
        self.values[k].reshape(-1)[i] = value
        self.errors[k].reshape(-1)[i] = 10.0**-digits * max(abs(value), 1e-300)
        self.checked[k].reshape(-1)[i] = True


def _tied_symbols(expr: Any, point: dict, dps: int, ties: list) -> set:
    """Symbols feeding a non-smooth operation that sits exactly at its kink at the point."""
    out: set = set().union(*ties) if ties else set()
    for atom in expr.atoms(*_NONSMOOTH):
        if _at_kink(atom, point, dps):
            out |= atom.free_symbols
    return out


def _at_kink(atom: Any, point: dict, dps: int) -> bool:
    def value(e: Any) -> Any:
        return e.evalf(dps, subs=point)

    def tied(a: Any, b: Any) -> bool:
        va, vb = value(a), value(b)
        return bool(abs(va - vb) <= 1e-13 * (1 + max(abs(va), abs(vb))))

    if isinstance(atom, (sympy.Max, sympy.Min)):
        vals = sorted((value(a) for a in atom.args), reverse=isinstance(atom, sympy.Max))
        return len(vals) > 1 and bool(abs(vals[0] - vals[1]) <= 1e-13 * (1 + abs(vals[0])))
    if isinstance(atom, sympy.Piecewise):
        conds = [c for _, c in atom.args if isinstance(c, sympy.core.relational.Relational)]
        return any(tied(c.lhs, c.rhs) for c in conds)
    return tied(atom.args[0], 0)


def _one_sided(objective: Objective, state: _State, k: int, i: int, dps: int) -> tuple[float, float]:
    """(left, right) derivatives of element (k, i) from numeric re-runs at working precision."""
    x = _exact(objective.x0[k].reshape(-1)[i])
    h = ONE_SIDED_STEP * max(abs(x), 1)
    leaves = [_numbers(leaf, dps) for leaf in objective.x0]
    results = []
    for shift in (-h, 0, h):
        moved = [a.copy() for a in leaves]
        moved[k].reshape(-1)[i] = sympy.Float(x + shift, dps)
        results.append(_run(objective, state, moved, {}, dps)[0].evalf(dps))
    left, mid, right = results
    return float((mid - left) / h), float((right - mid) / h)


def _mark_kinks(objective: Objective, state: _State, result: _Result, candidates: list, dps: int) -> None:
    for k, i in candidates:
        left, right = _one_sided(objective, state, k, i, dps)
        lo, hi = min(left, right), max(left, right)
        result.lower[k].reshape(-1)[i], result.upper[k].reshape(-1)[i] = lo, hi
        if hi - lo > KINK_RTOL * max(abs(lo), abs(hi), 1e-300):
            result.kinks[k].reshape(-1)[i] = True


def _gradient_all_symbols(objective: Objective, selection: Sequence[np.ndarray], digits: int,
                          result: _Result) -> dict:
    dps = digits + GUARD_DIGITS
    state = _all_symbols(objective, dps)
    point = _point(objective, state.symbols)
    kinked = _tied_symbols(state.expression, point, dps, state.ties)
    formulas: dict = {}
    candidates = []
    for k, idx in enumerate(selection):
        for i in np.asarray(idx, dtype=np.int64):
            symbol = state.symbols[k].reshape(-1)[i]
            derivative = sympy.diff(state.expression, symbol)
            result.set(k, int(i), _evaluate(derivative, point, digits), digits)
            index = np.unravel_index(int(i), objective.x0[k].shape)
            formulas[(state.names[k], tuple(int(j) for j in index))] = _render(derivative)
            if symbol in kinked:
                candidates.append((k, int(i)))
    _mark_kinks(objective, state, result, candidates, dps)
    return formulas


def _gradient_sampled(objective: Objective, selection: Sequence[np.ndarray], digits: int, max_elements: int,
                      time_budget: float | None, result: _Result) -> None:
    dps = digits + GUARD_DIGITS
    state = _state(objective)
    wanted = sum(len(s) for s in selection)
    order = _order(selection, max_elements)
    leaves = [_numbers(leaf, dps) for leaf in objective.x0]
    start = time.perf_counter()
    done = 0
    t = sympy.Symbol("t", real=True)
    for k, i in order:
        if time_budget is not None and done and time.perf_counter() - start > time_budget:
            break
        x = _exact(objective.x0[k].reshape(-1)[i])
        moved = [a.copy() for a in leaves]  # copies: the loss may write into its parameters
        moved[k].reshape(-1)[i] = t
        expr, ties = _run(objective, state, moved, {t: x}, dps)
        result.set(k, i, _evaluate(sympy.diff(expr, t), {t: x}, digits), digits)
        if t in _tied_symbols(expr, {t: x}, dps, ties):
            _mark_kinks(objective, state, result, [(k, i)], dps)
        done += 1
    if done < wanted:
        why = "time budget" if done < len(order) else f"max_elements={max_elements}"
        result.notes.append(f"sampled: {done} of {wanted} selected elements differentiated ({why}), each with the "
                            f"other parameters held as numbers")
    else:
        result.notes.append(f"sampled: each of the {done} elements differentiated with the other parameters held "
                            f"as numbers")


def sympy_gradient(objective: Objective, selection: Sequence[np.ndarray], *, digits: int = 35,
                   all_symbols_limit: int = ALL_SYMBOLS_LIMIT, max_elements: int = 32,
                   time_budget: float | None = 30.0) -> ReferenceGradient:
    """Exact derivatives of the selected elements, evaluated to `digits` significant digits.

    Up to `all_symbols_limit` parameter elements in total, every element is a symbol (one run);
    beyond, at most `max_elements` selected elements are differentiated one at a time, within
    `time_budget` seconds (see the module docstring).
    """
    start = time.perf_counter()
    shapes = [x.shape for x in objective.x0]
    result = _Result.empty(shapes)
    total = sum(int(np.prod(s)) for s in shapes)
    formulas: dict = {}
    if total <= all_symbols_limit:
        formulas = _gradient_all_symbols(objective, selection, digits, result)
        method_plan = "every parameter a symbol"
    else:
        _gradient_sampled(objective, selection, digits, max_elements, time_budget, result)
        method_plan = "one symbol per sampled element"
    if result.kinks and any(m.any() for m in result.kinks):
        count = sum(int(m.sum()) for m in result.kinks)
        result.notes.append(f"{count} element(s) sit at a kink (a tie in max/abs/clip or a comparison); their "
                            f"one-sided derivatives are in lower/upper")
    return ReferenceGradient(
        name="sympy", method=f"symbolic (sympy.diff, {digits} digits; {method_plan})",
        values=tuple(result.values), errors=tuple(np.where(c, e, np.nan) for c, e in zip(result.checked,
                                                                                          result.errors)),
        checked=tuple(result.checked), lower=tuple(result.lower), upper=tuple(result.upper),
        notes=tuple(result.notes), seconds=time.perf_counter() - start, exact=True, formulas=formulas,
        kinks=tuple(result.kinks),
    )


# --- formulas ----------------------------------------------------------------------------------

def _display(expr: Any) -> Any:
    """expr with every Float shown by its shortest float64 repr (0.05, not 0.05000000000000000277)."""
    floats = {f: sympy.Float(repr(float(f)), 17) for f in expr.atoms(sympy.Float)}
    return expr.xreplace(floats)


def _render(expr: Any) -> str:
    return sympy.sstr(_display(expr), full_prec=False)


def _traced_run(objective: Objective, state: _State, leaves: list, point: dict, dps: int) -> tuple[Any, dict]:
    """A symbolic run that also returns the local variables of the user's outermost function."""
    import sys

    from ..retrace import is_user_file

    captured: dict = {}

    def on_return(frame: Any, event: str, arg: Any) -> Any:
        if event == "return":
            captured.clear()
            captured.update(frame.f_locals)  # the outermost user frame returns last
        return on_return

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and is_user_file(frame.f_code.co_filename):
            frame.f_trace_lines = False
            return on_return
        return None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        expr, _ = _run(objective, state, leaves, point, dps)
    finally:
        sys.settrace(previous)
    return expr, captured


def _readable_numbers(expr: Any) -> Any:
    """Floats as the shortest decimals of their float64 values, as exact rationals (for cancelling)."""
    return expr.xreplace({f: sympy.Rational(repr(float(f))) for f in expr.atoms(sympy.Float)})


def _named_locals(captured: dict, parameters: set) -> list[tuple[Any, Any]]:
    """(symbol, value) for the user's local variables that are expressions in the parameters."""
    out = []
    for name, value in captured.items():
        if isinstance(value, np.ndarray) and value.dtype == object and 0 < value.size <= 64:
            items = [(f"{name}[{', '.join(map(str, i))}]" if value.ndim else name, value[i])
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
    lines = [f"{label} = {_decimal_text(expr)}"]
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
        leaves = [s.copy() for s in state.symbols]
        symbol = state.symbols[k].reshape(-1)[flat]
        point = _point(objective, state.symbols)
    else:
        symbol = sympy.Symbol(symbol_names([leaf_name], [shape])[0].reshape(-1)[flat], real=True)
        leaves = [_numbers(leaf, dps) for leaf in objective.x0]
        leaves[k].reshape(-1)[flat] = symbol
        point = {symbol: _exact(objective.x0[k].reshape(-1)[flat])}
    label = f"d{objective.name}/d{symbol}"
    if in_terms == "locals":
        expr, captured = _traced_run(objective, state, leaves, point, dps)
        parameters = {s for leaf in leaves for s in leaf.flat if isinstance(s, sympy.Symbol)}
        return _in_locals(label, sympy.diff(expr, symbol), captured, parameters)
    expr = state.expression if state.expression is not None and symbol in state.expression.free_symbols \
        else _run(objective, state, leaves, point, dps)[0]
    derivative = _display(sympy.diff(expr, symbol))
    if in_terms == "steps":
        replacements, (reduced,) = sympy.cse(derivative, symbols=sympy.numbered_symbols("u"))
        lines = [f"{s} = {sympy.sstr(e, full_prec=False)}" for s, e in replacements]
        return "\n".join([*lines, f"{label} = {sympy.sstr(sympy.factor_terms(reduced), full_prec=False)}"])
    return sympy.sstr(sympy.factor_terms(derivative), full_prec=False)
