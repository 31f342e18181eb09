"""Mazur's walkthrough for any small network: the chain rule for one parameter, factor by factor.

Mazur's post explains dE_total/dw5 as

    dE_total/dout_o1 x dout_o1/dnet_o1 x dnet_o1/dw5 = 0.74136507 x 0.186815602 x 0.593269992
                                                      = 0.082167041

`explain` produces that walkthrough for a learner's own plain-numpy loss. It runs the loss
on *traced scalars* (`Node`): every parameter element becomes a number that remembers the
local partial derivatives of each operation applied to it. numpy's object-dtype arrays
carry them through `+ - * / ** @`, `np.sum`, `np.mean`, `np.max`, comparisons, and the
math ufuncs (`np.exp(obj_array)` calls `.exp()` on each element). While the loss runs, a
trace hook reads the learner's local variables, so the graph's nodes get the learner's
names (`out_o1`, or `out_o[0]` for an element of an array).

The chain shown is made of the named nodes that lie on *every* path from the parameter to
the loss. Each factor is the total derivative between consecutive chain nodes, summed over
all paths between them, so their product is exactly the parameter's derivative. A factor
of exactly 1 is kept (E_total = E_o1 + E_o2 gives dE_total/dE_o1 = 1): only renaming
(`E = E_total`, `+x`) adds none, because the renamed node is the same node.

Where numpy cannot apply a function to traced numbers (np.logaddexp, or np.log of the plain
constant np.clip put in an array), `explain(..., namespace=module)` runs the loss with its
`np` rebound to `module` through gradcheck.usercode.rebind.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from dataclasses import dataclass
from types import FrameType, ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from .usercode.capture import tracing, user_tracer
from .tolerances import default_tolerances
from .errors import InvalidCase, ReferenceUnavailable, UserCodeError
from .objective import fresh
from .usercode.frames import user_location, user_traceback
from .tree import flatten, flatten_like, unflatten, validate_leaf

#: Networks above these sizes are refused: a walkthrough is for networks you can draw.
MAX_OPS = 5_000
MAX_PARAMS = 1_000

#: Absolute slack when deciding whether the learner's value matches the chain's product.
ATOL = 1e-12


# --------------------------------------------------------------------------- traced scalars


class _Tape:
    """Counts the operations of one traced run, so that large networks are refused early."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.ops = 0


class _Untraceable(TypeError):
    """A traced number was forced into a plain float, which would cut the graph."""


class Node:
    """A float that remembers the local partial derivatives of the operation that made it."""

    __slots__ = ("value", "parents", "tape")
    __hash__ = object.__hash__  # identity: two nodes with equal values are different quantities

    def __init__(self, value: Any, parents: tuple = (), tape: _Tape | None = None) -> None:
        self.value = np.float64(value)
        self.parents = parents  # ((parent node, d self / d parent), ...)
        self.tape = tape

    def _make(self, value: Any, parents: tuple) -> Node:
        tape = self.tape
        if tape is not None:
            tape.ops += 1
            if tape.ops > tape.limit:
                raise InvalidCase(
                    f"the loss takes more than {tape.limit:,} scalar operations; explain walks through "
                    f"small networks only. Explain a smaller case (fewer examples in args, fewer "
                    f"units), or use check() for the whole network."
                )
        return Node(value, parents, tape)

    def __repr__(self) -> str:
        return f"Node({float(self.value):.9g})"

    # Arithmetic. Against an ndarray we return NotImplemented so numpy broadcasts elementwise.
    def __add__(self, other: Any) -> Any:
        if isinstance(other, Node):
            return self._make(self.value + other.value, ((self, 1.0), (other, 1.0)))
        if _is_number(other):
            return self._make(self.value + other, ((self, 1.0),))
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, Node):
            return self._make(self.value - other.value, ((self, 1.0), (other, -1.0)))
        if _is_number(other):
            return self._make(self.value - other, ((self, 1.0),))
        return NotImplemented

    def __rsub__(self, other: Any) -> Any:
        if _is_number(other):
            return self._make(other - self.value, ((self, -1.0),))
        return NotImplemented

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, Node):
            return self._make(self.value * other.value, ((self, other.value), (other, self.value)))
        if _is_number(other):
            return self._make(self.value * other, ((self, np.float64(other)),))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        if isinstance(other, Node):
            q = self.value / other.value
            return self._make(q, ((self, 1.0 / other.value), (other, -q / other.value)))
        if _is_number(other):
            return self._make(self.value / other, ((self, 1.0 / np.float64(other)),))
        return NotImplemented

    def __rtruediv__(self, other: Any) -> Any:
        if _is_number(other):
            q = other / self.value
            return self._make(q, ((self, -q / self.value),))
        return NotImplemented

    def __pow__(self, other: Any) -> Any:
        if isinstance(other, Node):
            y = self.value ** other.value
            d_base = other.value * self.value ** (other.value - 1)
            d_exp = y * np.log(self.value) if self.value > 0 else np.float64(0.0)
            return self._make(y, ((self, d_base), (other, d_exp)))
        if _is_number(other):
            c = np.float64(other)
            return self._make(self.value ** c, ((self, c * self.value ** (c - 1)),))
        return NotImplemented

    def __rpow__(self, other: Any) -> Any:
        if _is_number(other):
            y = np.float64(other) ** self.value
            return self._make(y, ((self, y * np.log(np.float64(other))),))
        return NotImplemented

    def __neg__(self) -> Node:
        return self._make(-self.value, ((self, -1.0),))

    def __pos__(self) -> Node:
        return self  # pure renaming: the same quantity, no factor

    def __abs__(self) -> Node:
        return self._make(abs(self.value), ((self, np.sign(self.value)),))

    # Comparisons act on values: they choose branches (np.maximum, np.where, if), they are
    # not differentiated.
    def __lt__(self, other: Any) -> bool:
        return bool(self.value < _value(other))

    def __le__(self, other: Any) -> bool:
        return bool(self.value <= _value(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self.value > _value(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self.value >= _value(other))

    def __eq__(self, other: Any) -> bool:
        return bool(self.value == _value(other))

    def __ne__(self, other: Any) -> bool:
        return bool(self.value != _value(other))

    # np.var and friends take x * conj(x) and .real on object arrays; a real number is its own.
    def conjugate(self) -> Node:
        return self

    @property
    def real(self) -> Node:
        return self

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        raise _Untraceable(
            "a traced number was turned into a plain float (float(), .item(), or storing it into a "
            "float array such as np.zeros(n)), which cuts it off from the parameters"
        )

    __int__ = __index__ = __float__


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, np.ndarray)


def _value(x: Any) -> Any:
    return x.value if isinstance(x, Node) else x


# The math ufuncs numpy calls as methods on object arrays: name -> d f(x) / dx given (x, f(x)).
_UNARY: dict[str, Callable[[np.float64, np.float64], np.float64]] = {
    "exp": lambda x, y: y,
    "expm1": lambda x, y: y + 1.0,
    "exp2": lambda x, y: y * np.log(2.0),
    "log": lambda x, y: 1.0 / x,
    "log1p": lambda x, y: 1.0 / (1.0 + x),
    "log2": lambda x, y: 1.0 / (x * np.log(2.0)),
    "log10": lambda x, y: 1.0 / (x * np.log(10.0)),
    "sqrt": lambda x, y: 0.5 / y,
    "cbrt": lambda x, y: 1.0 / (3.0 * y * y),
    "tanh": lambda x, y: 1.0 - y * y,
    "sinh": lambda x, y: np.cosh(x),
    "cosh": lambda x, y: np.sinh(x),
    "sin": lambda x, y: np.cos(x),
    "cos": lambda x, y: -np.sin(x),
    "tan": lambda x, y: 1.0 + y * y,
    "arctan": lambda x, y: 1.0 / (1.0 + x * x),
    "arcsin": lambda x, y: 1.0 / np.sqrt(1.0 - x * x),
    "arccos": lambda x, y: -1.0 / np.sqrt(1.0 - x * x),
    "arcsinh": lambda x, y: 1.0 / np.sqrt(x * x + 1.0),
    "arctanh": lambda x, y: 1.0 / (1.0 - x * x),
}


def _unary_method(name: str, derivative: Callable) -> Callable[[Node], Node]:
    f = getattr(np, name)

    def method(self: Node) -> Node:
        y = f(self.value)
        return self._make(y, ((self, derivative(self.value, y)),))

    method.__name__ = name
    method.__doc__ = f"np.{name} of a traced number."
    return method


for _unary_name, _unary_derivative in _UNARY.items():
    setattr(Node, _unary_name, _unary_method(_unary_name, _unary_derivative))


# --------------------------------------------------------------------------- naming


def _element_label(base: str, index: tuple) -> str:
    return f"{base}[{', '.join(map(str, index))}]" if index else base


class _Namer:
    """Gives graph nodes the names of the learner's variables that hold them.

    A name from the loss itself beats one from a helper it calls (rank 0 < rank 1 ...);
    among equals the first name seen wins, so `b = a` keeps the name `a`. A variable that
    is rebound to new values (a loop's `h = np.tanh(...)`) names them h, h#2, h#3, ... The
    string keys of dicts (a `cache`, or a dict a helper returns) name their values too. A
    helper's name is shown as `helper.var` only where two functions use the same name.
    """

    def __init__(self) -> None:
        # id(node) -> (rank, function, variable, binding number, index, node); the node is
        # kept alive so that ids stay unique while we trace.
        self.names: dict[int, tuple] = {}
        self.bindings: dict[tuple[str, str], list[Any]] = {}  # (function, variable) -> values held
        self._owners: dict[str, set[str]] | None = None

    def fix(self, node: Node, label: str) -> None:
        """A name that nothing overrides (parameter elements)."""
        self.names[id(node)] = (-1, "", label, 1, (), node)

    def has_name(self, node: Node) -> bool:
        return id(node) in self.names

    def label(self, node: Node) -> str | None:
        entry = self.names.get(id(node))
        if entry is None:
            return None
        rank, function, var, k, index, _ = entry
        if rank < 0:
            return var
        base = var if k == 1 else f"{var}#{k}"
        if function and len(self._owners_of(var)) > 1:
            base = f"{function}.{base}"
        return _element_label(base, index)

    def _owners_of(self, var: str) -> set[str]:
        if self._owners is None:
            self._owners = {}
            for rank, function, name, *_ in self.names.values():
                if rank >= 0:
                    self._owners.setdefault(name, set()).add(function)
        return self._owners[var]

    def scan(self, items: Iterator[tuple[str, Any]], rank: int, function: str) -> None:
        """Name the nodes held by these (variable, value) pairs."""
        for var, holder, index, node in _named_nodes(items):
            self._propose(node, function, var, holder, index, rank)

    def _propose(self, node: Node, function: str, var: str, holder: Any, index: tuple, rank: int) -> None:
        old = self.names.get(id(node))
        if old is not None and old[0] <= rank:
            return
        held = self.bindings.setdefault((function, var), [])
        k = next((i for i, h in enumerate(held, 1) if h is holder), None)
        if k is None:
            held.append(holder)
            k = len(held)
        self.names[id(node)] = (rank, function, var, k, index, node)
        self._owners = None

    # The trace hook (gradcheck.capture): each call into the learner's code gets a local tracer
    # that reads its locals before each line and on return, and the dict it returns, if any.
    def tracer(self, stop: FrameType) -> Callable:
        def on_frame(frame: FrameType, rank: int) -> Callable:
            function = frame.f_code.co_name if rank else ""

            def on_event(frame: FrameType, event: str, arg: Any) -> Callable:
                if event in ("line", "return"):
                    self.scan(iter(list(frame.f_locals.items())), rank, function)
                if event == "return":
                    self.scan(_returned_dicts(arg), rank, function)
                return on_event

            return on_event

        return user_tracer(stop, on_frame)


def _named_nodes(items: Iterator[tuple[str, Any]], depth: int = 0) -> Iterator[tuple[str, Any, tuple, Node]]:
    """(variable, holder, index, node) for the nodes in these values: a node, an object array,
    a short list or tuple of nodes, or (one level down) the values of a dict with string keys."""
    for var, value in items:
        if isinstance(value, Node):
            yield var, value, (), value
        elif isinstance(value, np.ndarray) and value.dtype == object and value.size <= MAX_OPS:
            for index, item in np.ndenumerate(value):
                if isinstance(item, Node):
                    yield var, value, index, item
        elif isinstance(value, (list, tuple)) and len(value) <= 64:
            for i, item in enumerate(value):
                if isinstance(item, Node):
                    yield var, value, (i,), item
        elif isinstance(value, dict) and depth == 0 and len(value) <= 64:
            yield from _named_nodes(((k, v) for k, v in value.items() if isinstance(k, str)), depth + 1)


def _returned_dicts(value: Any) -> Iterator[tuple[str, Any]]:
    """The string-keyed entries of a returned dict, or of the dicts in a returned tuple (out, cache)."""
    if isinstance(value, dict):
        dicts = [value]
    elif isinstance(value, (list, tuple)) and len(value) <= 8:
        dicts = [v for v in value if isinstance(v, dict)]
    else:
        dicts = []
    for d in dicts:
        if len(d) <= 64:
            yield from ((k, v) for k, v in d.items() if isinstance(k, str))


# --------------------------------------------------------------------------- the graph


def _topological(root: Node) -> list[Node]:
    """Every node the root depends on, parents before children."""
    order: list[Node] = []
    seen: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((parent, False) for parent, _ in node.parents if id(parent) not in seen)
    return order


def _between(order: list[Node], source: Node) -> list[Node]:
    """The nodes on some path from source to the root (the last of `order`), in order."""
    reached = {id(source)}
    for node in order:
        if any(id(parent) in reached for parent, _ in node.parents):
            reached.add(id(node))
    return [node for node in order if id(node) in reached]


def _on_every_path(path_nodes: list[Node]) -> list[bool]:
    """Which nodes every source-to-root path passes through.

    In topological order a path only moves forward, so it avoids node v exactly when some
    edge jumps over v's position; mark the positions each edge jumps over.
    """
    pos = {id(node): i for i, node in enumerate(path_nodes)}
    jumps = [0] * (len(path_nodes) + 1)
    for j, node in enumerate(path_nodes):
        for parent, _ in node.parents:
            i = pos.get(id(parent))
            if i is not None and j - i > 1:
                jumps[i + 1] += 1
                jumps[j] -= 1
    covered, out = 0, []
    for j in range(len(path_nodes)):
        covered += jumps[j]
        out.append(covered == 0)
    return out


def _derivative(path_nodes: list[Node], start: int, end: int) -> float:
    """d path_nodes[end] / d path_nodes[start], summed over every path between them."""
    tangent = {id(path_nodes[start]): 1.0}
    for node in path_nodes[start + 1:end + 1]:
        tangent[id(node)] = sum(tangent.get(id(p), 0.0) * float(d) for p, d in node.parents)
    return tangent[id(path_nodes[end])]


def _reverse(order: list[Node], leaf: Node) -> float:
    """d root / d leaf by reverse accumulation over the whole graph (the reference)."""
    adjoint = {id(order[-1]): 1.0}
    for node in reversed(order):
        a = adjoint.get(id(node), 0.0)
        if a:
            for parent, d in node.parents:
                adjoint[id(parent)] = adjoint.get(id(parent), 0.0) + a * float(d)
    return adjoint.get(id(leaf), 0.0)


def _chain(loss: Node, leaf: Node, namer: _Namer, loss_label: str, leaf_label: str):
    """(factors from the loss down to the leaf, reference derivative)."""
    order = _topological(loss)
    if leaf is loss:
        return (), 1.0
    path_nodes = _between(order, leaf)
    if not path_nodes or path_nodes[-1] is not loss:
        return (), 0.0
    every = _on_every_path(path_nodes)
    stops = [0] + [i for i in range(1, len(path_nodes) - 1)
                   if every[i] and namer.has_name(path_nodes[i])] + [len(path_nodes) - 1]
    labels = {0: leaf_label, len(path_nodes) - 1: loss_label}
    factors = []
    for lo, hi in zip(stops, stops[1:]):
        top = labels.get(hi) or namer.label(path_nodes[hi])
        bottom = labels.get(lo) or namer.label(path_nodes[lo])
        factors.append((f"d{top}/d{bottom}", _derivative(path_nodes, lo, hi)))
    return tuple(reversed(factors)), _reverse(order, leaf)


# --------------------------------------------------------------------------- the public API


@dataclass(frozen=True)
class Explanation:
    """The chain rule for one parameter element, as Mazur writes it out."""

    leaf: str                           # parameter name, as gradcheck.tree names it
    index: tuple                        # element of that parameter (() for a scalar)
    factors: tuple                      # ((label, value), ...), from the loss down to the parameter
    product: float                      # the product of the factor values
    reference: float                    # d loss / d parameter, accumulated over the whole graph
    yours: float | None = None          # the learner's gradient at this element, if given
    loss_label: str = "loss"            # the learner's name for the loss, if it had one
    target: str = ""                    # the element's label, e.g. "w5" or "W2[0, 0]"
    rtol: float = 1e-8
    atol: float = ATOL

    @property
    def matches(self) -> bool | None:
        """Whether `yours` is within atol + rtol |reference| of the reference (None if not given)."""
        if self.yours is None:
            return None
        return abs(self.yours - self.reference) <= self.atol + self.rtol * abs(self.reference)


def explain(loss: Callable, params: Any, args: tuple = (), *, leaf: str, index: Any = (),
            grad: Any = None, namespace: ModuleType | None = None,
            max_ops: int = MAX_OPS, max_params: int = MAX_PARAMS) -> Explanation:
    """Walk the chain rule from `loss(params, *args)` down to one element of parameter `leaf`.

    `grad`, if given, is the learner's gradient (same structure as params); its value at the
    element is shown beside the chain. `namespace` is an array module to run the loss under
    instead of numpy (via gradcheck.usercode.rebind) for operations numpy cannot apply to traced numbers.
    """
    names, leaves, treedef = flatten(params)
    arrays = _small_leaves(names, leaves, leaf, max_params)
    k = names.index(leaf)
    index = _normalise_index(leaf, index, arrays[k].shape)
    namer, tape = _Namer(), _Tape(max_ops)
    traced = [_traced_leaf(name, a, tape, namer) for name, a in zip(names, arrays)]
    # Python-float leaves stay scalars (a Node or a float), arrays stay arrays.
    scalar = [isinstance(v, (float, np.floating)) for v in leaves]
    tree = unflatten(treedef, [t[()] if s else t for t, s in zip(traced, scalar)])
    plain = unflatten(treedef, [a.item() if s else a for a, s in zip(arrays, scalar)])
    result = _run(_rebind(loss, namespace), tree, plain, tuple(args), namer)
    target = _element_label(leaf, index)
    factors, reference, loss_label = (), 0.0, "loss"
    if isinstance(result, Node):
        loss_label = namer.label(result) or "loss"
        factors, reference = _chain(result, traced[k][index], namer, loss_label, target)
    product = math.prod(v for _, v in factors) if factors else reference
    yours, rtol = _yours(treedef, grad, leaf, k, index, arrays[k].shape)
    return Explanation(leaf, index, factors, float(product), float(reference), yours, loss_label, target, rtol)


def _small_leaves(names: list[str], leaves: list, leaf: str, max_params: int) -> list[np.ndarray]:
    """The parameters as float arrays, after checking `leaf` exists and the network is small."""
    if leaf not in names:
        raise InvalidCase(f"unknown parameter '{leaf}'; the parameters are {names}.")
    arrays = [validate_leaf(name, value) for name, value in zip(names, leaves)]
    total = sum(a.size for a in arrays)
    if total > max_params:
        raise InvalidCase(
            f"the network has {total:,} parameters; explain walks through small networks only "
            f"(at most {max_params:,}). Explain a smaller version of it, or use check()."
        )
    return arrays


def _traced_leaf(name: str, array: np.ndarray, tape: _Tape, namer: _Namer) -> np.ndarray:
    """An object array of fresh nodes, each named after its parameter element."""
    out = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        node = Node(value, (), tape)
        namer.fix(node, _element_label(name, index))
        out[index] = node
    return out


def _normalise_index(leaf: str, index: Any, shape: tuple) -> tuple:
    try:
        index = (int(index),) if isinstance(index, (int, np.integer)) else tuple(int(i) for i in index)
    except (TypeError, ValueError):
        raise InvalidCase(f"index {index!r} for parameter '{leaf}' (shape {shape}) must be a tuple of ints.") from None
    if index == () and int(np.prod(shape)) == 1:
        return (0,) * len(shape)
    if len(index) != len(shape) or any(not -n <= i < n for i, n in zip(index, shape)):
        raise InvalidCase(
            f"index {index} is not an element of parameter '{leaf}', which has shape {shape}; "
            f"give one index per axis, each within the axis' length."
        )
    return tuple(i % n for i, n in zip(index, shape))


def _rebind(loss: Callable, namespace: ModuleType | None) -> Callable:
    if namespace is None:
        return loss
    try:
        from .usercode.rebind import rebind
    except ImportError as exc:
        raise ReferenceUnavailable(
            f"explain(namespace=...) needs gradcheck.usercode.rebind, which could not be imported: {exc}"
        ) from exc
    return rebind(loss, namespace)


def _run(fn: Callable, tree: Any, plain: Any, args: tuple, namer: _Namer) -> Any:
    """Call the loss on traced parameters with the naming hook on; return its (unwrapped) value."""
    error: Exception | None = None
    try:
        with tracing(namer.tracer(sys._getframe())):
            value = fn(tree, *fresh(args))
    except InvalidCase:
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code, or our tracing of it, failed
        error = exc
    if error is not None:
        raise _failure(fn, plain, args, error) from error
    return _unwrap(value)


def _failure(fn: Callable, plain: Any, args: tuple, traced_error: Exception) -> Exception:
    """Blame the learner's code if it fails on plain numbers too, else the tracing."""
    try:
        fn(plain, *fresh(args))
    except Exception as exc:  # noqa: BLE001
        return UserCodeError(f"your loss raised {type(exc).__name__}: {exc}", where=user_location(exc),
                             user_traceback=user_traceback(exc))
    where = user_location(traced_error)
    return ReferenceUnavailable(
        f"explain cannot follow the loss through {where or 'an operation'}: {traced_error}. "
        + _hint(traced_error)
    )


def _hint(error: Exception) -> str:
    """The way out for the common ways a traced run fails."""
    found = re.search(r"argument \d+ of type (int|float|bool) which has no callable (\w+) method", str(error))
    if found:
        return (f"np.{found.group(2)} met a plain number where a traced one was expected: np.maximum, "
                f"np.clip or np.where put a constant there (the 0 of a ReLU, a clipped probability). "
                f"Write that step with arithmetic instead (z * (z > 0) for a ReLU, np.log(p + eps) for "
                f"a clipped log), or pass namespace=.")
    return ("It follows + - * / ** @, np.sum/mean/max, np.maximum/where/clip/abs and the math ufuncs "
            "(np.exp, np.log, np.tanh, ...) on arrays; build arrays with np.array([...]) rather than "
            "writing into np.zeros(...), or pass namespace=.")


def _unwrap(value: Any) -> Any:
    """The loss as a Node (or a plain number when it does not depend on the parameters)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidCase(
                f"the loss returned an array of shape {value.shape}; a loss must be a single number. "
                f"Reduce it with np.sum(...) or np.mean(...)."
            )
        value = value.reshape(-1)[0]
    if isinstance(value, Node) or _is_number(value):
        return value
    raise InvalidCase(f"the loss returned {type(value).__name__}; it must return the loss as a single number.")


def _yours(treedef: Any, grad: Any, leaf: str, k: int, index: tuple, shape: tuple) -> tuple:
    """(the learner's value at the element or None, the rtol to judge it by)."""
    if grad is None:
        return None, default_tolerances("float64")[0]
    g = np.asarray(flatten_like(treedef, grad)[k])
    if g.shape != shape and not (g.size == 1 and int(np.prod(shape)) == 1):
        raise InvalidCase(f"gradient for '{leaf}' has shape {g.shape}, but the parameter has shape {shape}.")
    g = g.reshape(shape)
    rtol = default_tolerances(g.dtype)[0]
    return float(g[index]), rtol


# --------------------------------------------------------------------------- rendering


def format_number(x: float) -> str:
    """Nine decimals, trailing zeros dropped, as Mazur prints (0.74136507, 0.05); tiny or huge
    values in 6-significant-digit scientific notation."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    if 1e-4 <= abs(x) < 1e9:
        return f"{x:.9f}".rstrip("0").rstrip(".")
    return f"{x:.6g}"


def render_explanation(expl: Explanation) -> str:
    """The chain as labels, then as numbers, then the learner's value beside it."""
    head = f"d{expl.loss_label}/d{expl.target}"
    if not expl.factors:
        lines = [f"{head} = {format_number(expl.reference)}"]
        if expl.reference == 0:
            lines[0] = f"{expl.loss_label} does not depend on {expl.target}: " + lines[0]
    elif len(expl.factors) == 1:
        lines = [f"{head} = {format_number(expl.product)}",
                 f"(no named quantity lies on every path from {expl.target} to {expl.loss_label})"]
    else:
        labels = " x ".join(label for label, _ in expl.factors)
        values = " x ".join(format_number(v) for _, v in expl.factors) + f" = {format_number(expl.product)}"
        lines = [f"{head} = {labels}", " " * len(head) + f" = {values}"]
    if expl.yours is not None:
        if expl.matches:
            verdict = "matches"
        else:
            verdict = f"differs by {format_number(expl.yours - expl.reference)}"
        lines.append(f"yours: {format_number(expl.yours)} ({verdict})")
    return "\n".join(lines)
