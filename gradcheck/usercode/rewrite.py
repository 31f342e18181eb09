"""Assignment into arrays, rewritten so that the same code runs on arrays that cannot be written to.

JAX arrays are immutable, so a learner's `dscores[range(N), y] -= 1` stops the JAX re-run.
`functional_code(fn)` recompiles fn from its source with every `name[index] = value` and
`name[index] op= value` turned into `name = setitem(name, index, value[, op])`. `setitem`
writes in place into whatever supports it (numpy arrays, lists, dicts: the original
behaviour, views and all) and returns an updated copy of a JAX array
(`x.at[index].set(...)`, or a `where` for a boolean mask of x's shape and one value, which
jit can compile), reading `x[index] op value` first as numpy's buffered in-place operators
do (a repeated index is updated once, not accumulated).

The rewrite is used only when the source compiles, unmodified, to the function's own
bytecode (so a file edited since it was imported is never mistaken for the running code).
Nested subscripts of a local name (`xs[t][i] = 1`, an array in a dict) update each level in
turn. Assignments through attributes (`self.W[i] = v`), to several targets, or into a global's
or an enclosing function's array are left as they are.

Scalar conversions are rewritten too: `x.item()`, `float(x)` and `int(x)` give Python's number
for a numpy value and the value itself for a JAX tracer or a SymPy expression, as they mean to
a derivative (`return float(np.sum(...))` is the sum). The names `float` and `int` themselves
(`astype(int)`, `isinstance(v, float)`) are left as they are, and so is `round` (a step).

A call written for its effect on a local array, `np.clip(dparam, -5, 5, out=dparam)`, becomes
`dparam = into(np.clip, dparam, dparam, -5, 5)`: numpy's in-place call on a numpy array, and
on a JAX array the call without `out=`, its result bound to the name.
"""

from __future__ import annotations

import ast
import copy
import dis
import functools
import inspect
import operator
import sys
import textwrap
import types
from typing import Any, Callable, cast

import numpy as np

#: Names the rewritten code calls; they are added to the copy's globals.
SETITEM = "__gradcheck_setitem__"
SLICE = "__gradcheck_slice__"
ITEM = "__gradcheck_item__"
INTO = "__gradcheck_into__"
#: Python's scalar conversions, called in rewritten code as these names (see `scalar`).
SCALARS = {"float": "__gradcheck_float__", "int": "__gradcheck_int__"}

_OPERATORS: dict[str, tuple[Callable, Callable]] = {
    "Add": (operator.add, operator.iadd), "Sub": (operator.sub, operator.isub),
    "Mult": (operator.mul, operator.imul), "Div": (operator.truediv, operator.itruediv),
    "FloorDiv": (operator.floordiv, operator.ifloordiv), "Mod": (operator.mod, operator.imod),
    "Pow": (operator.pow, operator.ipow), "MatMult": (operator.matmul, operator.imatmul),
    "BitAnd": (operator.and_, operator.iand), "BitOr": (operator.or_, operator.ior),
    "BitXor": (operator.xor, operator.ixor), "LShift": (operator.lshift, operator.ilshift),
    "RShift": (operator.rshift, operator.irshift),
}


def setitem(target: Any, index: Any, value: Any, op: str | None = None) -> Any:
    """`target[index] = value` (or `op=`), in place where target allows it, else on a copy."""
    if hasattr(target, "at") and not isinstance(target, np.ndarray):  # a JAX array or tracer
        if _is_mask(index, target) and np.ndim(value) == 0:
            # `h[h < 0] = 0`: a select, which jit can compile (a boolean index it cannot).
            return target.__array_namespace__().where(index, value if op is None else _OPERATORS[op][0](target, value), target)
        if op is not None:
            value = _OPERATORS[op][0](target[index], value)
        return target.at[index].set(value)
    if op is not None:
        value = _OPERATORS[op][1](target[index], value)
    target[index] = value
    return target


def into(function: Callable, out: Any, *args: Any, **kwargs: Any) -> Any:
    """`function(*args, out=out, **kwargs)` in rewritten code, returning what `out` then holds:
    out itself, written in place, when it allows it; else (a JAX array) the result."""
    if hasattr(out, "at") and not isinstance(out, np.ndarray):  # a JAX array or tracer
        return function(*args, **kwargs)
    function(*args, out=out, **kwargs)
    return out


def item(x: Any) -> Any:
    """`x.item()` in rewritten code: numpy's Python number, or for a traced or symbolic value
    the value itself (to a derivative, `.item()` is the identity)."""
    if isinstance(x, (np.ndarray, np.generic)) and x.dtype != object:
        return x.item()
    traced = _traced_value(x)
    if traced is not None:
        return traced
    method = getattr(x, "item", None)
    return method() if method is not None else x


def to_float(x: Any = 0.0, *rest: Any) -> Any:
    """`float(x)` in rewritten code: Python's, except that a traced or symbolic x stays the value."""
    traced = _traced_value(x) if not rest else None
    if traced is None:
        return float(x, *rest)
    if _is_tracer(traced) and not np.issubdtype(traced.dtype, np.inexact):
        return traced.astype(np.float64)
    return traced


def to_int(x: Any = 0, *rest: Any) -> Any:
    """`int(x)` in rewritten code: Python's, except that a traced or symbolic x stays the value
    (an index or a shape made from it then fails where it is used, naming the line)."""
    traced = _traced_value(x) if not rest else None
    return int(x, *rest) if traced is None else traced


def _traced_value(x: Any) -> Any:
    """A JAX tracer or SymPy value as a one-element value of its kind, or None for anything else."""
    if _is_tracer(x):
        return x.reshape(())
    sympy = sys.modules.get("sympy")  # never imported here: a SymPy value exists only once it is loaded
    if sympy is None:
        return None
    if isinstance(x, np.ndarray) and x.dtype == object:
        if x.size != 1 or not isinstance(x.reshape(-1)[0], sympy.Basic):
            return None
        x = x.reshape(-1)[0]
    return x if isinstance(x, sympy.Basic) or hasattr(x, "_sympy_") else None  # _sympy_: stands for one


def _is_tracer(x: Any) -> bool:
    jax = sys.modules.get("jax")  # never imported here: a tracer exists only once jax is loaded
    return jax is not None and isinstance(x, jax.core.Tracer)


def _is_mask(index: Any, target: Any) -> bool:
    """Whether index is a boolean array of target's shape."""
    dtype = getattr(index, "dtype", None)
    return dtype is not None and np.dtype(dtype) == np.bool_ and np.shape(index) == np.shape(target)


def helpers() -> dict[str, Any]:
    """The globals the rewritten code needs."""
    return {SETITEM: setitem, SLICE: slice, ITEM: item, INTO: into, SCALARS["float"]: to_float,
            SCALARS["int"]: to_int}


def _writes_into_items(code: types.CodeType) -> bool:
    """Whether the code (or a function nested in it) assigns to a subscript."""
    if any(i.opname == "STORE_SUBSCR" for i in dis.get_instructions(code)):
        return True
    return any(isinstance(c, types.CodeType) and _writes_into_items(c) for c in code.co_consts)


def _converts_scalars(code: types.CodeType) -> bool:
    """Whether the code (or a function nested in it) may call `.item()`, `float()` or `int()`."""
    return not {"item", *SCALARS}.isdisjoint(code.co_names) or any(
        isinstance(c, types.CodeType) and _converts_scalars(c) for c in code.co_consts)


def _writes_out(code: types.CodeType) -> bool:
    """Whether the code (or a function nested in it) may pass `out=` to a call."""
    return any(isinstance(c, tuple) and "out" in c for c in code.co_consts) or any(
        isinstance(c, types.CodeType) and _writes_out(c) for c in code.co_consts)


def _load(node: ast.expr) -> ast.expr:
    """A copy of an assignment target's inner part (`xs[t]` in `xs[t][i] = v`), read again."""
    return copy.deepcopy(node)  # inner parts of a target are already loads; the user's line numbers kept


def _index(node: ast.expr) -> ast.expr:
    """An index as an ordinary expression: slices `a:b:c` become `slice(a, b, c)` calls."""
    if isinstance(node, ast.Slice):
        parts = [p if p is not None else ast.Constant(None) for p in (node.lower, node.upper, node.step)]
        return ast.Call(ast.Name(SLICE, ast.Load()), parts, [])
    if isinstance(node, ast.Tuple):
        return ast.Tuple([_index(e) for e in node.elts], ast.Load())
    return node


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def _local_names(function: ast.FunctionDef) -> set[str]:
    """The names local to a function: its parameters and what it binds, less global/nonlocal."""
    a = function.args
    names = {arg.arg for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if arg is not None}
    declared: set[str] = set()
    todo: list[ast.AST] = list(function.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if not isinstance(node, _SCOPES):  # a nested scope binds its own names
            todo.extend(ast.iter_child_nodes(node))
    return names - declared


class _Rewrite(ast.NodeTransformer):
    """Rewrites writes into local names only: making a global or a closure's name local
    (by assigning to it) would break the function."""

    def __init__(self) -> None:
        self.scopes: list[set[str]] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.scopes.append(_local_names(node))
        self.generic_visit(node)
        self.scopes.pop()
        return node

    def _update(self, node: ast.stmt, target: ast.expr, value: ast.expr, op: str | None) -> ast.stmt:
        chain = []  # the subscripts, innermost (the one written) first: xs[t][i] -> [xs[t][i], xs[t]]
        root = target
        while isinstance(root, ast.Subscript):
            chain.append(root)
            root = root.value
        if not (chain and isinstance(root, ast.Name) and self.scopes and root.id in self.scopes[-1]):
            return node
        # `xs[t][i] = v` is `xs = setitem(xs, t, setitem(xs[t], i, v))`: each level updated in turn.
        for level, sub in enumerate(chain):
            args = [_load(sub.value), _index(sub.slice), value]
            if op is not None and level == 0:
                args.append(ast.Constant(op))
            value = ast.Call(ast.Name(SETITEM, ast.Load()), args, [])
        return ast.copy_location(ast.Assign([ast.Name(root.id, ast.Store())], value), node)

    def visit_Assign(self, node: ast.Assign) -> ast.stmt:
        self.generic_visit(node)
        return self._update(node, node.targets[0], node.value, None) if len(node.targets) == 1 else node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "item" and not node.args and not node.keywords:
            return ast.copy_location(ast.Call(ast.Name(ITEM, ast.Load()), [func.value], []), node)
        if isinstance(func, ast.Name) and func.id in SCALARS and not (self.scopes and func.id in self.scopes[-1]):
            node.func = ast.copy_location(ast.Name(SCALARS[func.id], ast.Load()), func)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.stmt:
        """`f(..., out=name)` as a statement, name a local: `name = into(f, name, ...)`."""
        self.generic_visit(node)
        call = node.value
        if not isinstance(call, ast.Call):
            return node
        outs = [k for k in call.keywords if k.arg == "out"]
        if len(outs) != 1 or not isinstance(outs[0].value, ast.Name) or not self.scopes \
                or outs[0].value.id not in self.scopes[-1]:
            return node
        name = outs[0].value.id
        keywords = [k for k in call.keywords if k.arg != "out"]
        value = ast.Call(ast.Name(INTO, ast.Load()), [call.func, ast.Name(name, ast.Load()), *call.args], keywords)
        return ast.copy_location(ast.Assign([ast.Name(name, ast.Store())], value), node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        self.generic_visit(node)
        op = type(node.op).__name__
        return self._update(node, node.target, node.value, op) if op in _OPERATORS else node


def _compiled(definition: ast.FunctionDef, code: types.CodeType) -> types.CodeType | None:
    """The code object of `definition`, compiled as `code` was (inside a factory that
    provides its free variables), or None."""
    definition.decorator_list = []
    body: list[ast.stmt] = [definition]
    if code.co_freevars:  # make each free variable a cell of an enclosing function
        factory = ast.FunctionDef(
            name="__gradcheck_factory__",
            args=ast.arguments(posonlyargs=[], args=[ast.arg(v) for v in code.co_freevars], kwonlyargs=[],
                               kw_defaults=[], defaults=[]),
            body=[definition, ast.Return(ast.Name(definition.name, ast.Load()))], decorator_list=[], returns=None)
        if sys.version_info >= (3, 12):  # FunctionDef has type_params from 3.12
            factory.type_params = []
        body = [factory]
    module = ast.fix_missing_locations(ast.Module(body, type_ignores=[]))
    found = _find_code(compile(module, code.co_filename, "exec"), definition.name)
    return found if found is not None and set(found.co_freevars) == set(code.co_freevars) else None


def _find_code(code: types.CodeType, name: str) -> types.CodeType | None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_name == name:
                return const
            found = _find_code(const, name)
            if found is not None:
                return found
    return None


#: Instructions the interpreter rewrites in place once a function has run (3.11 turns a
#: module's LOAD_METHOD into LOAD_ATTR), compared as one.
_SAME_OP = {"LOAD_METHOD": "LOAD_ATTR"}
_JUMPS = set(dis.hasjrel) | set(dis.hasjabs)


def _signature(code: types.CodeType) -> tuple:
    """What a code object does, without what running it or its cache layout changes: each
    instruction's name and argument (jump offsets left out), nested functions included."""
    out = []
    for ins in dis.get_instructions(code):
        arg = ins.argval
        if isinstance(arg, types.CodeType):
            arg = _signature(arg)
        elif ins.opcode in _JUMPS or ins.opname == "CACHE":
            arg = None
        if ins.opname == "EXTENDED_ARG":  # a prefix for a long jump: differs with the jump's length only
            continue
        out.append((_SAME_OP.get(ins.opname, ins.opname), repr(arg)))
    return (code.co_varnames, code.co_freevars, tuple(out))


def _same_bytecode(a: types.CodeType, b: types.CodeType) -> bool:
    return _signature(a) == _signature(b)


@functools.lru_cache(maxsize=256)
def functional_code(code: types.CodeType) -> types.CodeType | None:
    """`code` with assignments into items rewritten (see the module docstring), or None when
    there are none, the source cannot be read or does not match, or it is not a plain def."""
    if not (_writes_into_items(code) or _converts_scalars(code) or _writes_out(code)) \
            or "__class__" in code.co_freevars \
            or code.co_name == "<lambda>":
        return None
    try:
        source = textwrap.dedent(inspect.getsource(code))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].name != code.co_name:
        return None
    ast.increment_lineno(tree, code.co_firstlineno - 1)  # the user's line numbers in tracebacks
    original = _compiled(cast(ast.FunctionDef, ast.parse(source).body[0]), code)  # the same source as tree
    if original is None or not _same_bytecode(original, code):
        return None  # the file changed since the function was defined: do not guess
    definition = tree.body[0]
    return _compiled(_Rewrite().visit(definition), code)
