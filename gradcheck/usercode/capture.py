"""Watching the learner's code run, line by line: the one sys.settrace capturer of gradcheck.

`user_tracer` is the hook itself: it follows calls into the learner's own code (not numpy,
not gradcheck, not the standard library; lambdas and comprehensions are skipped, their
locals are not the learner's names) and hands each such frame to a handler. Two handlers
are built on it here:

- `record(fn, *args)` runs a function and returns every value bound to a local name, line
  by line: plain names (`dz1`), the entries of short lists, tuples and dicts held in locals
  (`grads['W1']`, `nabla_w[1]`), the arguments a call received, and what it returned. Each
  binding keeps a private copy of its value, the statement that made it, and the locals
  that statement read, so the statement can be re-run on other inputs (`Statement.rerun`).
  An in-place write (`dscores /= N`, `dz[z <= 0] = 0`) is a binding too.
- `substituting(replace)` runs code while `replace(key, value)` may swap the value a plain
  name was just bound to (the next line sees the new value): how a perturbation is added
  to an intermediate of the forward pass. A binding's key (file, function, line, name, how
  many times that line bound that name before) is the same in both, so a recorded binding
  can be perturbed in a later run, under numpy or under another array namespace.

- `outer_locals(fn, *args)` runs a function and returns the locals of the learner's outermost
  function as it returned: SymPy's reference reads them to write its formulas in the learner's
  own names (`out_o1`, `out_h1`).

explain (naming traced numbers after the learner's variables), blame (which line of a backward
pass goes wrong) and SymPy's readable formulas all run on this module; nothing else in gradcheck
calls sys.settrace.
"""

from __future__ import annotations

import ast
import copy
import ctypes
import functools
import itertools
import linecache
import sys

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Iterator

import numpy as np

from .frames import is_user_file

#: Containers held in locals are looked into when they are at most this long, this deep.
MAX_ITEMS = 64
MAX_DEPTH = 2
#: A recording stops (RecordingTooLarge) past this many bindings or copied elements.
MAX_BINDINGS = 20_000
MAX_ELEMENTS = 50_000_000


# --------------------------------------------------------------------------- whose code


Handler = Callable[[FrameType, str, Any], Any]


def user_tracer(stop: FrameType | None, on_frame: Callable[[FrameType, int], Handler | None], *,
                packages: bool = True, anonymous: bool = False) -> Handler:
    """A sys.settrace function: each call into the learner's named code gets `on_frame(frame, rank)`,
    which returns the frame's local trace function (or None); `rank` counts the learner's named
    functions between the frame and `stop` (0: the function gradcheck called). `packages`: code of
    installed packages counts as the learner's (see `frames.is_user_file`); `anonymous`: lambdas
    and comprehensions get `on_frame` too (not counted in ranks)."""
    known: dict[Any, bool] = {}

    def is_user(frame: FrameType) -> bool:
        code = frame.f_code
        mine = known.get(code)
        if mine is None:
            mine = known[code] = is_user_file(code.co_filename, packages=packages)
        return mine

    def rank(frame: FrameType) -> int:
        n, f = 0, frame.f_back
        while f is not None and f is not stop:
            if is_user(f) and not f.f_code.co_name.startswith("<"):
                n += 1
            f = f.f_back
        return n

    def on_call(frame: FrameType, event: str, arg: Any) -> Handler | None:
        if event != "call" or not is_user(frame):
            return None
        name = frame.f_code.co_name
        if name.startswith("<") and name != "<module>" and not anonymous:
            return None
        return on_frame(frame, rank(frame))

    return on_call


@contextmanager
def tracing(tracer: Handler) -> Iterator[None]:
    """sys.settrace(tracer) for the block; the previous trace function (a debugger's) is restored."""
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Statement:
    """One simple statement of the learner's source: where it is, what it reads, how to re-run it."""

    filename: str
    line: int
    end: int
    source: str
    node: ast.stmt | None = field(default=None, compare=False, repr=False)

    def reads(self, label: str = "") -> tuple[str, ...]:
        """The local names this statement reads to compute `label` (narrowed to the element of a
        tuple or dict the label names, where the statement builds one)."""
        key = (self, label)
        found = _READS.get(key)
        if found is None:
            found = _READS[key] = self._reads(label)
        return found

    def _reads(self, label: str) -> tuple[str, ...]:
        if self.node is None:
            return ()
        node = _narrow(self.node, label)
        names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
        for target in _targets(self.node):
            base = _base_name(target)
            if base and (isinstance(self.node, ast.AugAssign) or not isinstance(target, ast.Name)):
                names.append(base)  # `a += b` and `a[i] = b` read `a` as well
        return tuple(dict.fromkeys(names))

    def target_names(self) -> tuple[str, ...]:
        """The local names this statement assigns to (or into)."""
        key = (self, None)
        found = _READS.get(key)
        if found is None:
            found = _READS[key] = self._target_names()
        return found

    def _target_names(self) -> tuple[str, ...]:
        if self.node is None:
            return ()
        out = []
        for target in _targets(self.node):
            for t in (target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]):
                out.append(_base_name(t))
        return tuple(n for n in out if n)

    @property
    def rerunnable(self) -> bool:
        return isinstance(self.node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr))

    def rerun(self, env: dict, globals_: dict, label: str) -> Any:
        """The value `label` would hold if this statement ran on the locals `env` (a private copy).

        A `return` building a dict or tuple evaluates only the entry `label` names (`return {"W1":
        X.T @ dz1, "b1": ...}` re-runs `X.T @ dz1`), where the entries are plain enough for that
        to be the same value."""
        scope = dict(globals_)
        scope.update(env)
        if isinstance(self.node, ast.Return):
            path = _path(label)[1:] if label.startswith("return") else ()
            code, rest = self._code(path)
            value = eval(code, scope)  # noqa: S307 - the learner's own statement
            return _item(value, rest)
        exec(self._code(())[0], scope)  # noqa: S102 - the learner's own statement
        base, path = _split_label(label)
        return _item(scope[base], path)

    def _code(self, path: tuple) -> tuple[Any, tuple]:
        """The compiled statement (for a `return`, the part of its value at `path`) and the rest
        of `path`, still to be indexed in what it computes."""
        key = (self, path)
        found = _CODE.get(key)
        if found is None:
            node = self.node
            if isinstance(node, ast.Return):
                if node.value is None:
                    raise ValueError("field 'body' is required for Expression")  # a bare `return`
                expr, used = _entry(node.value, path)
                found = (compile(ast.Expression(expr), self.filename, "eval"), path[used:])
            else:
                if node is None:
                    raise ValueError("None disallowed in statement list")
                found = (compile(ast.Module([node], []), self.filename, "exec"), path)
            _CODE[key] = found
        return found


def _targets(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        return [node.target]
    return []


def _base_name(target: ast.expr) -> str:
    while isinstance(target, (ast.Subscript, ast.Attribute, ast.Starred)):
        target = target.value
    return target.id if isinstance(target, ast.Name) else ""


def _narrow(node: ast.stmt, label: str) -> ast.AST:
    """The part of a statement that computes `label`: `return {"W1": ..., ...}` -> the W1 entry."""
    value = getattr(node, "value", None)
    if value is None or not isinstance(node, (ast.Return, ast.Assign)):
        return node
    base, path = _split_label(label)
    if isinstance(node, ast.Assign):
        if len(node.targets) != 1:
            return node
        target = node.targets[0]
        if isinstance(target, ast.Tuple):
            names = [_base_name(t) for t in target.elts]
            if base in names and isinstance(value, ast.Tuple) and len(value.elts) == len(names):
                return value.elts[names.index(base)]
            return node
        if not isinstance(target, ast.Name):
            return node
    for key in path:
        if isinstance(value, ast.Dict):
            keys = [k.value if isinstance(k, ast.Constant) else None for k in value.keys]
            if key not in keys:
                return node
            value = value.values[keys.index(key)]
        elif isinstance(value, (ast.Tuple, ast.List)) and isinstance(key, int) and key < len(value.elts):
            value = value.elts[key]
        else:
            break
    return value


def _entry(value: ast.expr, path: tuple) -> tuple[ast.expr, int]:
    """The sub-expression of a returned `value` that computes its item at `path`, and how many
    keys of `path` it takes: into dict displays whose keys are all constants (no `**`) and tuple
    or list displays without `*`, as far as the path goes. Evaluating the entry alone gives the
    same item (the other entries are not needed for it), at a fraction of the cost."""
    used = 0
    for key in path:
        if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
            keys = [k.value for k in value.keys if isinstance(k, ast.Constant)]
            if key not in keys:
                break
            value = value.values[len(keys) - 1 - keys[::-1].index(key)]  # the last wins, as in a dict
        elif isinstance(value, (ast.Tuple, ast.List)) and isinstance(key, int) and 0 <= key < len(value.elts) \
                and not any(isinstance(e, ast.Starred) for e in value.elts):
            value = value.elts[key]
        else:
            break
        used += 1
    return value, used


_TREES: dict[str, ast.Module | None] = {}
_CODE: dict[tuple, tuple] = {}
_READS: dict[tuple, tuple] = {}
_STATEMENTS: dict[tuple[str, int], Statement] = {}


def statement_at(filename: str, lineno: int) -> Statement:
    """The innermost simple statement of the file that spans line `lineno` (its first line is
    where a binding is reported); a bare line when the source cannot be parsed."""
    found = _STATEMENTS.get((filename, lineno))
    if found is None:
        found = _STATEMENTS[(filename, lineno)] = _statement_at(filename, lineno)
    return found


def _statement_at(filename: str, lineno: int) -> Statement:
    if filename not in _TREES:
        try:
            _TREES[filename] = ast.parse("".join(linecache.getlines(filename)))
        except (SyntaxError, ValueError):
            _TREES[filename] = None  # not Python source: no statement to be found
    tree = _TREES[filename]
    best = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.stmt) and node.lineno <= lineno <= (node.end_lineno or node.lineno):
                if best is None or (node.lineno, -(node.end_lineno or 0)) > (best.lineno, -(best.end_lineno or 0)):
                    best = node
    if best is None or isinstance(best, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return Statement(filename, lineno, lineno, linecache.getline(filename, lineno).strip())
    compound = isinstance(best, (ast.For, ast.While, ast.If, ast.With, ast.Try))
    end = best.lineno if compound else (best.end_lineno or best.lineno)
    source = " ".join(linecache.getline(filename, i).strip() for i in range(best.lineno, end + 1))
    return Statement(filename, best.lineno, end, source.strip(), None if compound else best)


# --------------------------------------------------------------------------- labels and values


@functools.lru_cache(maxsize=4096)
def _path(label: str) -> tuple:
    """'grads["W1"][0]' -> ('grads', 'W1', 0) (labels recur in every recording: parsed once)."""
    base, _, rest = label.partition("[")
    out: list[Any] = [base]
    if rest:
        for part in ("[" + rest).split("]")[:-1]:
            out.append(ast.literal_eval(part[1:]))
    return tuple(out)


def _split_label(label: str) -> tuple[str, tuple]:
    p = _path(label)
    return p[0], p[1:]


def _item(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def label_of(base: str, path: tuple) -> str:
    return base + "".join(f"[{k!r}]" for k in path)


def is_number(value: Any) -> bool:
    """A float (or bool mask) the learner computed: floats, float/bool arrays, numpy floats."""
    if isinstance(value, (bool, int)) or value is None:
        return False
    if isinstance(value, (float, np.floating)):
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "fcb" and value.dtype != object


def _items(value: Any, depth: int = 0) -> Iterator[tuple[tuple, Any]]:
    """(path, number) for the numbers in a short container, up to MAX_DEPTH levels down."""
    if depth >= MAX_DEPTH:
        return
    if isinstance(value, dict) and len(value) <= MAX_ITEMS:
        pairs: Any = ((k, v) for k, v in value.items() if isinstance(k, (str, int)))
    elif isinstance(value, (list, tuple)) and len(value) <= MAX_ITEMS:
        pairs = enumerate(value)
    else:
        return
    for k, v in pairs:
        if is_number(v):
            yield (k,), v
        else:
            for path, item in _items(v, depth + 1):
                yield (k, *path), item


def private(value: Any) -> Any:
    """A copy that later in-place writes by the learner's code cannot reach."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple, dict)):
        try:
            return copy.deepcopy(value)
        except Exception:  # noqa: BLE001 - an uncopyable object inside: share it
            return copy.copy(value)
    return value


def _same(old: tuple, new: Any) -> bool:
    """Whether a value is unchanged since it was recorded as (object, copy)."""
    obj, kept = old[0], old[1]
    if obj is not new:
        return False
    if isinstance(new, np.ndarray):
        return kept.shape == new.shape and np.array_equal(kept, new, equal_nan=True)
    return True


# --------------------------------------------------------------------------- recording


class RecordingTooLarge(RuntimeError):
    """The code binds more values than a recording keeps."""


@dataclass
class Binding:
    """A value bound to a local name (or a container entry, or returned) by one statement."""

    seq: int
    call: int                 # serial number of the call (frame) it happened in
    function: str
    rank: int
    label: str                # 'dz1', "grads['W1']", "return['W1']", 'return'
    kind: str                 # 'line', 'argument' or 'return'
    statement: Statement
    value: Any                # a private copy
    obj: Any = field(repr=False)  # the object itself, kept alive for identity links
    env: dict = field(default_factory=dict, repr=False)  # label -> Binding or object, before the statement
    globals: dict = field(default_factory=dict, repr=False)
    key: tuple = ()
    alias: "Binding | None" = field(default=None, repr=False)  # the same object bound in another call

    @property
    def base(self) -> str:
        return _split_label(self.label)[0]


@dataclass
class Recording:
    """Everything `record` saw, in execution order, and what the function returned."""

    bindings: list
    result: Any = None

    def by_object(self, obj: Any) -> Binding | None:
        """The last binding of this very object."""
        return next((b for b in reversed(self.bindings) if b.obj is obj), None)


class _Recorder:
    def __init__(self, max_bindings: int, max_elements: int) -> None:
        self.bindings: list[Binding] = []
        self.calls = itertools.count()
        self.counts: dict[tuple, int] = {}
        self.max_bindings, self.max_elements, self.elements = max_bindings, max_elements, 0
        self.by_id: dict[int, Binding] = {}  # id(object) -> the binding that last bound it
        self.latest: dict[int, Binding] = {}  # id(object) -> its latest binding of any kind

    def add(self, frame: FrameType, call: int, rank: int, label: str, kind: str, stmt: Statement, obj: Any,
            env: dict) -> Binding:
        if len(self.bindings) >= self.max_bindings or self.elements > self.max_elements:
            raise RecordingTooLarge(f"more than {self.max_bindings:,} bindings or {self.max_elements:,} elements")
        self.elements += int(np.size(obj)) if isinstance(obj, np.ndarray) else 1
        key = binding_key(self.counts, frame.f_code, stmt.line, label)
        b = Binding(len(self.bindings), call, frame.f_code.co_name, rank, label, kind, stmt, private(obj), obj, env,
                    frame.f_globals, key)
        # The same object bound in another call: an argument passed in, or a value a call returned
        # (a line that renames a value this call already held is a statement of its own).
        last = self.by_id.get(id(obj))
        latest = self.latest.get(id(obj))
        arrived = kind != "line" or latest is None or latest.call != call
        b.alias = last if arrived and last is not None and last.obj is obj and last.call != call else None
        self.latest[id(obj)] = b
        if last is None or kind == "line" or (kind == "return" and last.call != call):
            self.by_id[id(obj)] = b
        self.bindings.append(b)
        return b

    def on_frame(self, frame: FrameType, rank: int) -> Handler:
        call = next(self.calls)
        state: dict[str, tuple] = {}     # label -> (object, copy) as last seen
        env: dict[str, Any] = {}         # local name -> Binding (numbers, containers' entries) or object
        where: list[int] = [frame.f_code.co_firstlineno]
        self._scan(frame, call, rank, state, env, "argument", statement_at(frame.f_code.co_filename, where[0]))

        def on_event(frame: FrameType, event: str, arg: Any) -> Handler:
            if event in ("line", "return"):
                stmt = statement_at(frame.f_code.co_filename, where[0])
                self._scan(frame, call, rank, state, env, "line", stmt)
                where[0] = frame.f_lineno
            if event == "return":
                stmt = statement_at(frame.f_code.co_filename, frame.f_lineno)
                before = dict(env)
                for path, item in ([((), arg)] if is_number(arg) else list(_items(arg))):
                    self.add(frame, call, rank, label_of("return", path), "return", stmt, item, before)
            return on_event

        return on_event

    def _scan(self, frame: FrameType, call: int, rank: int, state: dict, env: dict, kind: str,
              stmt: Statement) -> None:
        """Record what changed since the last event: the previous statement bound it."""
        before = dict(env)
        for name, value in list(frame.f_locals.items()):
            entries = [((), value)] if is_number(value) else list(_items(value))
            if not entries:
                env[name] = value
                continue
            if not is_number(value):
                env[name] = _Container(copy.copy(value))
            for path, item in entries:
                label = label_of(name, path)
                old = state.get(label)
                if old is not None and _same(old, item):
                    if path:
                        env[name].entries[path] = old[2]
                    continue
                b = self.add(frame, call, rank, label, kind, stmt, item, before)
                state[label] = (item, b.value, b)
                if path:
                    env[name].entries[path] = b
                else:
                    env[name] = b


@dataclass
class _Container:
    """A container in the locals, with the bindings of its number entries."""

    value: Any
    entries: dict = field(default_factory=dict)


def binding_key(counts: dict, code: Any, line: int, label: str) -> tuple:
    """(file, function, line, label, occurrence): the same binding in every run of the same code."""
    base = (code.co_filename, code.co_name, line, label)
    n = counts.get(base, 0)
    counts[base] = n + 1
    return (*base, n)


def record(fn: Callable, *args: Any, max_bindings: int = MAX_BINDINGS, max_elements: int = MAX_ELEMENTS,
           **kwargs: Any) -> Recording:
    """Run fn(*args, **kwargs) and record every value the learner's code binds (see the module docstring).

    Exceptions of fn propagate; RecordingTooLarge stops a run that binds too much.
    """
    rec = _Recorder(max_bindings, max_elements)
    with tracing(user_tracer(sys._getframe(), rec.on_frame)):
        result = fn(*args, **kwargs)
    return Recording(rec.bindings, result)


def outer_locals(fn: Callable, *args: Any, packages: bool = False, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Run fn(*args, **kwargs); return its result and the locals of the function gradcheck called
    (the learner's outermost function, a lambda too; the last such call's) as it returned.

    Only that frame is traced, for its return alone: the rest runs nearly at its own speed.
    """
    captured: dict[str, Any] = {}

    def on_return(frame: FrameType, event: str, arg: Any) -> Handler:
        if event == "return":
            captured.clear()
            captured.update(frame.f_locals)
        return on_return

    def on_frame(frame: FrameType, rank: int) -> Handler | None:
        if rank:
            return None
        frame.f_trace_lines = False
        return on_return

    with tracing(user_tracer(sys._getframe(), on_frame, packages=packages, anonymous=True)):
        result = fn(*args, **kwargs)
    return result, captured


def environment(b: Binding, substitute: dict | None = None) -> dict:
    """The locals statement `b` reads, as private copies, with `substitute` {label: value} swapped in.

    Only what the statement names is built; containers it assigns into are deep copies, the
    others shallow ones (their arrays copied), so re-running it changes no recorded value.
    """
    substitute = substitute or {}
    targets = b.statement.target_names()
    out: dict[str, Any] = {}
    for name in b.statement.reads():
        token = b.env.get(name, _MISSING)
        if token is _MISSING:
            continue
        if isinstance(token, Binding):
            out[name] = private(substitute.get(name, token.value))
        elif isinstance(token, _Container):
            value = private(token.value) if name in targets else _shallow(token.value)
            for path, entry in token.entries.items():
                try:
                    _set(value, path, private(substitute.get(label_of(name, path), entry.value)))
                except (TypeError, IndexError, KeyError):
                    pass
            out[name] = value
        else:
            out[name] = token
    return out


_MISSING = object()


def _shallow(value: Any) -> Any:
    """A copy of a container whose nested lists and dicts are copies too (not the leaves)."""
    if isinstance(value, dict):
        return {k: _shallow(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shallow(v) for v in value]
    return value


def _set(container: Any, path: tuple, value: Any) -> None:
    holder = _item(container, path[:-1])
    if isinstance(holder, tuple):
        raise TypeError("a tuple entry")
    holder[path[-1]] = value


# --------------------------------------------------------------------------- substituting


def _write_local(frame: FrameType, name: str, value: Any) -> None:
    """Rebind a local of a running frame (the frame sees it from its next bytecode on)."""
    frame.f_locals[name] = value
    if sys.version_info < (3, 13):  # from 3.13 f_locals writes through (PEP 667)
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


@contextmanager
def substituting(replace: Callable[[tuple, Any], Any], *, content: bool = True,
                 only: tuple[str, str, str] | None = None) -> Iterator[None]:
    """Run a block while `replace(key, value)` may swap the value a plain local name was just bound to.

    `replace` returns the new value, or None to keep it. `content` also treats an in-place write
    into a numpy array as a binding (as `record` does); off for immutable arrays (JAX). `only`,
    a (file, function, name) triple, watches that name in that function's frames alone, with the
    same keys: the rest of the code runs untraced, nearly at its own speed.
    """
    counts: dict[tuple, int] = {}
    names = None if only is None else (only[2],)

    def on_frame(frame: FrameType, rank: int) -> Handler | None:
        if only is not None and (frame.f_code.co_filename, frame.f_code.co_name) != only[:2]:
            return None
        state: dict[str, tuple] = {}
        where = [frame.f_code.co_firstlineno]
        # the arguments, keyed as `record` keys them (at the line of the def)
        first = statement_at(frame.f_code.co_filename, where[0]).line
        _substitute(frame, state, counts, replace, content, first, names)

        def on_event(frame: FrameType, event: str, arg: Any) -> Handler:
            if event in ("line", "return"):
                line = statement_at(frame.f_code.co_filename, where[0]).line
                _substitute(frame, state, counts, replace, content, line, names)
                where[0] = frame.f_lineno
            return on_event

        return on_event

    with tracing(user_tracer(sys._getframe(), on_frame)):
        yield


def _substitute(frame: FrameType, state: dict, counts: dict, replace: Callable, content: bool, line: int,
                names: tuple[str, ...] | None = None) -> None:
    local = frame.f_locals
    pairs = list(local.items()) if names is None else [(n, local[n]) for n in names if n in local]
    for name, value in pairs:
        if not _numeric_like(value):
            continue
        old = state.get(name)
        unchanged = old is not None and (old[0] is value if not content or not isinstance(value, np.ndarray)
                                         else _same(old, value))
        if unchanged:
            continue
        key = binding_key(counts, frame.f_code, line, name)
        new = replace(key, value)
        if new is not None:
            _write_local(frame, name, new)
            value = new
        state[name] = (value, value.copy() if content and isinstance(value, np.ndarray) else None)


def _numeric_like(value: Any) -> bool:
    """A number, or an array of any array library (a JAX tracer has shape and dtype)."""
    if is_number(value):
        return True
    return not isinstance(value, (np.ndarray, bool, int, str)) and hasattr(value, "shape") and hasattr(value, "dtype")
