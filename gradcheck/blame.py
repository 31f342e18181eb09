"""Blame the line: where in the learner's backward pass the gradient first goes wrong.

Both passes are recorded line by line (gradcheck.capture). The forward pass (the loss) gives
the *known quantities*: each named intermediate (`z1`, `h`, `out`), its exact adjoint
dL/d(intermediate) (by JAX, adding a zero perturbation to each intermediate and taking one
gradient with respect to all of them; by finite differences on the recorded intermediates
where JAX cannot run the loss or the check runs without JAX, which is then never imported),
the parameters and their gradients, the data, and the usual local derivatives (`h * (1 - h)`,
`1 - h**2`, `(z > 0)`). Every value the backward pass binds is matched against them, exactly or
up to a pattern (sign, scale, transpose); where none explains a value, the data part of a
regularised gradient is known too if the backward pass shows it (`data_parts`).

The search starts from the failing parameter's gradient, which should equal dL/dparameter,
and walks back through the statements that computed it. At each statement it asks, for each
local the statement read: would re-running this statement with that local replaced by
another known quantity give what the statement should give? If so, that local is where the
error came from, and it should have held that quantity: the search goes on from the line that
bound it. A local that holds a correct quantity, computed by a line of its own, is not
followed (the statement used the wrong variable), unless nothing in the backward pass ever
held what was needed (then that line computed the wrong quantity). The blamed line is the one
whose value is wrong while every value it read is a known quantity.

Where the gradient is one expression of the parameters and data, or the values it was made
of match nothing known, no line is blamed: the Blame says why (`reason`).
"""

from __future__ import annotations

import functools
import gc
import heapq
import itertools
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, Iterator, NamedTuple, Sequence, TypeVar, overload

import numpy as np

from .usercode.capture import Binding, Recording, RecordingTooLarge, environment, is_number, record, substituting
from .model import Blame
from .objective import fresh
from .tree import flatten, flatten_like, unflatten, validate_leaf

#: Seconds blame may spend (recordings, the adjoints, the search), and a size past which it does not try.
BLAME_SECONDS = 2.0
MAX_PARAMS = 200_000
#: Finite differences on the intermediates (where JAX cannot run) visit at most this many elements.
FD_ELEMENTS = 1_000
#: How close a value must be to a known quantity (relative to the quantity's largest entry).
RTOL = {"exact": 1e-7, "numeric": 1e-5}
#: Re-runs of statements the search may make.
MAX_RERUNS = 3_000


# --------------------------------------------------------------------------- fingerprints

#: The fixed random vector of each size a value is projected on ((r, sum |r|, |r|) by size), and the
#: transposed copies of 2-D ones; kept across blames, up to PROBE_ELEMENTS elements in all.
_PROBES: dict[int, tuple[np.ndarray, float, float, float, float]] = {}
_TRANSPOSED: dict[tuple, np.ndarray] = {}
PROBE_ELEMENTS = 4_000_000
#: The elements a local derivative is first compared on (_Slopes), before it is computed in full.
SAMPLES = 8
_SAMPLED: dict[int, np.ndarray] = {}
_T = TypeVar("_T")
_EPS = float(np.finfo(np.float64).eps)


def _probe_vector(n: int) -> tuple[np.ndarray, float, float, float, float]:
    """(r, sum |r|, |r|, sqrt(n), 2 n eps max(|r|, 1)): the fixed random vector of n elements, the same
    in every blame, with the constants a Print of that size carries."""
    got = _PROBES.get(n)
    if got is None:
        if n + sum(_PROBES) + sum(r.size for r in _TRANSPOSED.values()) > PROBE_ELEMENTS:
            _PROBES.clear()
            _TRANSPOSED.clear()
        r = np.random.default_rng(n + 7919).standard_normal(n)
        length = math.sqrt(float(r @ r))
        got = _PROBES[n] = (r, float(np.abs(r).sum()), length, math.sqrt(n), 2.0 * n * _EPS * max(length, 1.0))
    return got


def _transposed_probe(shape: tuple) -> np.ndarray:
    """R (flat, of a value of 2-D `shape`) with a . R = a.T . r: the projection of a's transpose."""
    got = _TRANSPOSED.get(shape)
    if got is None:
        r = _probe_vector(shape[0] * shape[1])[0]
        got = _TRANSPOSED[shape] = np.ascontiguousarray(r.reshape(shape[::-1]).T).reshape(-1)
    return got


def _samples(a: np.ndarray) -> list:
    """a's elements at SAMPLES fixed places (the same for every value of its size), as Python numbers:
    a value is not within t per element of another whose elements there are more than t apart."""
    flat = a.reshape(-1)
    at = _SAMPLED.get(flat.size)
    if at is None:
        if len(_SAMPLED) > 10_000:
            _SAMPLED.clear()
        at = _SAMPLED[flat.size] = np.random.default_rng(flat.size + 104_729).permutation(flat.size)[:SAMPLES]
    return flat[at].tolist()


def _within(a: list, b: list, t: float) -> bool:
    """Whether every sample of a is within t of b's: False rules out a within t of b. (With room for the
    last bits in which a local derivative computed on the samples may differ from the whole value's, where
    exp or tanh gives it: at most 1e-15 for those forms, whose values lie in [0, 1].)"""
    return all(abs(x - y) <= t + 1e-12 * (abs(x) + abs(y)) + 1e-14 for x, y in zip(a, b))


def _products_within(a: list, d: list, b: list, t: float) -> bool:
    """Whether every sample of a x d is within t of b's: False rules out a x d within t of b (d a local
    derivative's samples, room left as in _within)."""
    return all(abs(x * y - z) <= t + 1e-12 * (abs(x * y) + abs(z)) + 1e-14 * (1 + abs(x))
               for x, y, z in zip(a, d, b))


class _once(Generic[_T]):
    """A cached property without functools.cached_property's lock (blame runs in one thread): the value
    computed on first access is stored in the instance's __dict__, which later reads find first."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn, self.name = fn, fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _once[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _once[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


class Print(NamedTuple):
    """A value reduced to two numbers: its norm and its projection on the fixed random vector of its
    size; with the constants of that size the bounds below use."""

    norm: float
    proj: Any       # float (complex for a complex value)
    size: int
    root: float     # sqrt(size)
    spread: float   # sum |r|
    grain: float    # the rounding of a dot product, per unit of |a|: 2 n eps |r|


def fingerprint(a: np.ndarray) -> Print:
    """The Print of a float or complex array (two dot products, no copy of a contiguous array)."""
    flat = a.reshape(-1)
    n = flat.size
    r, spread, _, root, grain = _probe_vector(n)
    if a.dtype.kind == "c":
        return Print(math.sqrt(float(np.vdot(flat, flat).real)), complex(flat @ r), n, root, spread, grain)
    return Print(math.sqrt(float(flat @ flat)), float(flat @ r), n, root, spread, grain)


def _near(p: Print, proj: Any, norm: float, other: Any, t: float) -> bool:
    """False when a value (print p, projection proj) cannot be within t per element of a value of the
    same size with this norm and projection `other`: |a - b| <= t per element bounds the norms'
    difference by sqrt(n) t and the projections' by t sum |r| (besides the dot products' rounding)."""
    s = p.grain * (p.norm + norm) + 1e-300
    return abs(p.norm - norm) <= p.root * t + s and abs(proj - other) <= p.spread * t + s


# --------------------------------------------------------------------------- known quantities


@dataclass(eq=False)
class Quantity:
    """A value the backward pass may legitimately hold."""

    label: str          # 'dL/dh', 'h', 'h * (1 - h)'
    what: str           # 'the gradient with respect to h'
    value: np.ndarray
    kind: str           # 'adjoint', 'derivative', 'forward', 'param', 'data', 'fix'
    of: str = ""        # the forward name it belongs to
    rtol: float = RTOL["exact"]

    @_once
    def print(self) -> Print:
        return fingerprint(self.value)

    @property
    def norm(self) -> float:
        return self.print.norm

    @_once
    def samples(self) -> list:
        """The value's elements at the fixed places of its size (_samples)."""
        return _samples(self.value)

    @_once
    def scale(self) -> float:
        """The largest entry's magnitude."""
        v = self.value
        return float(max(v.max(), -v.min())) if v.size else 0.0

    @_once
    def tol(self) -> float:
        """How far a value may be from this quantity, per element, and still be it (see close)."""
        return self.rtol * max(self.scale, 1e-12) + 1e-15

    @_once
    def loose_tol(self) -> float:
        """An upper bound on tol from the norm alone (no element is larger than the norm)."""
        return self.rtol * max(self.norm, 1e-12) + 1e-15

    def may_be(self, p: Print, proj: Any, sign: float = 1.0) -> bool:
        """False when a value (its print p, its projection proj) cannot be sign x this quantity: |a - q| <= t
        per element bounds the norms' difference by sqrt(n) t and the projections' by t sum|r|."""
        q = self.print
        return p.size == q.size and _near(p, proj, q.norm, sign * q.proj, 1.01 * self.loose_tol)

    def may_scale(self, p: Print) -> bool:
        """False when a value (its print) cannot be c x this quantity for any c, within c x its tolerance."""
        q = self.print
        if p.size != q.size or q.norm == 0 or isinstance(p.proj, complex):
            return False
        a = self.rtol * q.root
        if a >= 0.5:
            return True
        # |c| |q| is |a| within sqrt(n) t, and t (c x q's tolerance) is at most this:
        t = 1.01 * (self.rtol * max(p.norm, 1e-12) + 1e-15) / (1 - a)
        k, s = p.norm / q.norm, 2 * p.grain * p.norm + 1e-300
        bound = t * (q.spread + q.root * abs(q.proj) / q.norm) + s
        return min(abs(p.proj - k * q.proj), abs(p.proj + k * q.proj)) <= bound

    def holds(self, value: Any, p: Print | None = None, quick: bool = False) -> bool:
        """close(value, self.value, self.rtol), with this quantity's tolerance worked out once; the
        value's print (given), or where quick its elements at a few places, rule most other values out
        in O(1) numpy calls."""
        a = _array(value)
        if a.dtype.kind not in "fc" or not (a.shape == self.value.shape or a.size == self.value.size == 1):
            return False
        if p is not None:
            if not self.may_be(p, p.proj):
                return False
        elif quick and a.size > 1 and not _within(_samples(a), self.samples, self.tol):
            return False
        return self.equals(a)

    def equals(self, a: np.ndarray) -> bool:
        """Every element of a (of this quantity's size) within the tolerance of this quantity's (the
        search runs with numpy's warnings off: a value that is not finite is simply not equal)."""
        d = np.subtract(a.reshape(self.value.shape), self.value)
        if d.dtype.kind == "c":
            return bool(np.all(np.abs(d) <= self.tol))
        if d.size == 0:
            return True
        return bool(max(d.max(), -d.min()) <= self.tol)  # no NaN passes: NaN <= tol is False

    def scaled(self, a: np.ndarray, p: Print) -> float | None:
        """c where a = c x this quantity (c neither 0 nor 1; within the tolerance of c x it), else None."""
        flat, q = a.reshape(-1), self.value.reshape(-1)
        with np.errstate(all="ignore"):
            c = float(flat @ q) / self.norm ** 2
            loose = self.rtol * max(abs(c) * self.norm, 1e-12) + 1e-15
            # what is left of a beside c x q, squared, is at most n tol^2 where a is c x q
            if p.norm ** 2 - c * c * self.norm ** 2 > 1.02 * flat.size * loose ** 2 or c == 0 or abs(c - 1) <= 1e-6:
                return None
            tol = self.rtol * max(abs(c) * self.scale, 1e-12) + 1e-15
            return c if bool(np.all(np.abs(flat - c * q) <= tol)) else None


@dataclass(frozen=True)
class Match:
    """A value is `factor` x a quantity (pattern 'exact', 'sign', 'scale') or its transpose."""

    quantity: Quantity
    pattern: str
    factor: float = 1.0

    def describe(self) -> str:
        q = self.quantity
        if self.pattern == "exact":
            return f"{q.label}, {q.what}" if q.what else q.label
        if self.pattern == "transposed":
            return f"the transpose of {q.label} ({q.what})"
        return f"{_factor(self.factor)} x {q.label} ({q.what})"


def _factor(c: float) -> str:
    return "-1" if c == -1 else f"{c:.6g}"


def _array(value: Any) -> np.ndarray:
    a = np.asarray(value)
    return a if a.dtype == np.float64 or a.dtype.kind not in "bif" else a.astype(np.float64)


def close(value: Any, target: np.ndarray, rtol: float = RTOL["exact"]) -> bool:
    """value == target up to rtol x the target's largest entry."""
    a, b = _array(value), _array(target)
    if a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return False
    if a.shape != b.shape:
        if a.size != 1 or b.size != 1:
            return False
        a, b = a.reshape(()), b.reshape(())
    if not b.size:
        return True
    with np.errstate(all="ignore"):
        if a.dtype.kind == "c" or b.dtype.kind == "c":
            return bool(np.all(np.abs(a - b) <= rtol * max(float(np.max(np.abs(b))), 1e-12) + 1e-15))
        d = np.subtract(a, b)
        # max(d) and -min(d) are max |d| (NaN, where any element is, fails the comparison)
        return bool(max(d.max(), -d.min()) <= _tolerance(b, rtol))


def _shape_key(shape: tuple) -> tuple:
    """Quantities are compared with values of their shape; single numbers with each other."""
    return ("number",) if math.prod(shape) == 1 else tuple(shape)


def _derivatives(name: str, v: np.ndarray) -> list[tuple[str, str, Callable[[], np.ndarray]]]:
    """The local derivatives a backward pass forms from a forward value v (as the activation or
    as the pre-activation), each computed when asked for."""
    def sigmoid_slope() -> np.ndarray:
        s = 1 / (1 + np.exp(-v))
        return s * (1 - s)

    return [(f"{name} * (1 - {name})", f"the sigmoid's derivative, if {name} = sigmoid(...)", lambda: v * (1 - v)),
            (f"1 - {name}**2", f"the tanh's derivative, if {name} = tanh(...)", lambda: 1 - v ** 2),
            (f"({name} > 0)", f"the ReLU's derivative at {name}", lambda: (v > 0).astype(np.float64)),
            (f"1 - {name}", "", lambda: 1 - v),
            (f"sigmoid'({name})", f"the sigmoid's derivative at {name}", sigmoid_slope),
            (f"tanh'({name})", f"the tanh's derivative at {name}", lambda: 1 - np.tanh(v) ** 2)]


FORMS = len(_derivatives("v", np.zeros(0)))
#: Whether each form is a named derivative (what _why may say is missing).
NAMED = [bool(what) for _, what, _ in _derivatives("v", np.zeros(0))]


class _Shelf:
    """The known quantities of one shape, in order: each made (a local derivative computed) and checked
    against the earlier ones (zero, not finite or a duplicate: dropped) when the first reader reaches it."""

    def __init__(self, raw: list[tuple[int, Quantity | tuple[str, np.ndarray, int], bool]]) -> None:
        # (position in the order, the quantity or the local derivative (name, value, form) to make, whether
        # it is known to be distinct)
        self.raw = raw
        self.next = 0
        self.kept: list[tuple[int, Quantity]] = []
        self.made: dict[int, Quantity] = {}  # the local derivatives made so far, by their index in raw
        self.decided: dict[int, Quantity | None] = {}  # kept_at's answers ahead of the order

    def items(self, upto: float = math.inf) -> Iterator[tuple[int, Quantity]]:
        """(position, quantity) of the kept quantities before position upto."""
        i = 0
        while True:
            if i < len(self.kept):
                if self.kept[i][0] >= upto:
                    return
                i += 1
                yield self.kept[i - 1]
            elif self.next < len(self.raw) and self.raw[self.next][0] < upto:
                pos, _, checked = self.raw[self.next]
                q = self.make(self.next)
                self.next += 1
                if checked or self._new(q):
                    self.kept.append((pos, q))
            else:
                return

    def make(self, k: int) -> Quantity:
        """The quantity of raw entry k (a local derivative is computed once)."""
        make = self.raw[k][1]
        if isinstance(make, Quantity):
            return make
        q = self.made.get(k)
        if q is None:
            q = self.made[k] = _derivative(*make)
        return q

    def kept_at(self, k: int, sampled: Callable[[int], list]) -> Quantity | None:
        """The quantity of raw entry k if the shelf keeps it, else None; `sampled(j)` gives raw entry j's
        samples (_samples). The entries before k not yet decided are not made where their samples show
        that none is a duplicate of k's."""
        if k < self.next:
            pos = self.raw[k][0]
            return next((q for p, q in self.kept if p == pos), None)
        if k not in self.decided:
            q = self.make(k)
            if not self.raw[k][2] and self.next < k:
                p = q.print
                # a value within close()'s tolerance of q's is within this of it (its largest entry is
                # at most q's plus that tolerance, and q's at most its norm)
                t = (q.rtol * max(p.norm, 1e-12) + 1e-15) / (1 - q.rtol) * (1 + 1e-9)
                mine = sampled(k)
                if not math.isfinite(t) or any(_within(mine, sampled(j), t) for j in range(self.next, k)):
                    for _ in self.items(self.raw[k][0] + 1):  # decide every entry up to k, in order
                        pass
                    return self.kept_at(k, sampled)
            # the entries between the decided ones and k are no duplicates of it: the kept ones decide
            self.decided[k] = q if self.raw[k][2] or self._new(q) else None
        return self.decided[k]

    def _new(self, q: Quantity) -> bool:
        p = q.print
        if not math.isfinite(p.norm) or p.norm == 0:  # the norm overflows only where an element is not finite
            return False
        return not any(k.may_be(p, p.proj) and close(q.value, k.value, min(k.rtol, q.rtol)) for _, k in self.kept)


class Known:
    """The known quantities in their order (adjoints, the parameters' gradients, parameters, forward
    values, data, local derivatives, data parts), each shape's made and cleared of duplicates only as
    far as a reader of that shape gets: a local derivative is computed when one reaches it."""

    def __init__(self, eager: list[Quantity], forms: list[tuple[str, np.ndarray]], extra: Sequence[Quantity] = ()
                 ) -> None:
        self.eager, self.forms, self.extra = eager, forms, list(extra)
        raw: dict[tuple, list] = {}
        for i, q in enumerate(eager):
            raw.setdefault(q.value.shape, []).append((i, q, False))
        self.derived = base = len(eager)  # the local derivatives' positions start here
        for i in range(FORMS):  # the activation forms first: h * (1 - h)
            for j, (name, v) in enumerate(forms):
                raw.setdefault(v.shape, []).append((base + i * len(forms) + j, (name, v, i), False))
        base += FORMS * len(forms)
        for i, q in enumerate(self.extra):  # distinct among themselves already (data_parts)
            raw.setdefault(q.value.shape, []).append((base + i, q, True))
        self._shelves = {s: _Shelf(items) for s, items in raw.items()}
        self._keys: dict[tuple, list[tuple]] = {}
        for s in self._shelves:
            self._keys.setdefault(_shape_key(s), []).append(s)

    def shelf(self, shape: tuple) -> _Shelf | None:
        """The quantities of exactly this shape."""
        return self._shelves.get(shape)

    def with_extra(self, extra: Sequence[Quantity]) -> Known:
        return Known(self.eager, self.forms, self.extra + list(extra))

    def like(self, shape: tuple) -> list[tuple]:
        """The shapes of the quantities a value of this shape is compared with."""
        return self._keys.get(_shape_key(shape), [])

    def of(self, shapes: Sequence[tuple] | None = None, eager: bool = False) -> Iterator[Quantity]:
        """The quantities of these shapes (default: all) in order; with eager=True, no local derivative."""
        upto = self.derived if eager else math.inf
        shelves = [self._shelves[s] for s in dict.fromkeys(self._shelves if shapes is None else shapes)
                   if s in self._shelves]
        if len(shelves) == 1:
            return (q for _, q in shelves[0].items(upto))
        return (q for _, q in heapq.merge(*(s.items(upto) for s in shelves), key=lambda item: item[0]))

    def match(self, value: Any, p: Print | None = None) -> Match | None:
        """The best description of a value by the known quantities: exact, then sign, transpose, scale;
        decided on prints, each candidate confirmed element by element."""
        a = _array(value)
        if a.dtype.kind not in "fc":
            return None
        p = p if p is not None else fingerprint(a)
        if not math.isfinite(p.norm) or p.norm == 0:
            return None
        seen = []  # every quantity of the shape, once the exact pass has made them all
        for q in self.of(self.like(a.shape)):
            if q.may_be(p, p.proj) and q.equals(a):
                return Match(q, "exact", 1.0)
            seen.append(q)
        for q in seen:
            if q.may_be(p, p.proj, -1.0) and q.equals(-a):
                return Match(q, "sign", -1.0)
        if a.ndim == 2 and a.shape[0] > 1 and a.shape[1] > 1:
            tp = a.reshape(-1) @ _transposed_probe(a.shape)
            for q in self.of([a.shape[::-1]]):
                if q.may_be(p, tp) and q.equals(a.T):
                    return Match(q, "transposed")
        if a.size > 2:
            for q in seen:
                c = q.scaled(a, p) if q.may_scale(p) else None
                if c is not None:
                    return Match(q, "scale", float(np.round(c, 9)))
        return None


def _derivative(name: str, v: np.ndarray, i: int) -> Quantity:
    label, what, make = _derivatives(name, v)[i]
    with np.errstate(all="ignore"):
        return Quantity(label, what, make(), "derivative", name)


# --------------------------------------------------------------------------- the forward pass


@dataclass
class Case:
    """What blame needs: the learner's functions, their parameters and data."""

    loss: Callable
    grad: Callable          # params, *args -> gradient tree (or (loss, grads) with pair=True)
    names: list
    leaves: list            # the parameters as the learner gave them (private copies)
    treedef: Any
    scalar: list
    args: tuple
    kwargs: dict
    pair: bool = False
    seconds: float = BLAME_SECONDS
    deadline: float = math.inf  # set when blame starts, after the array libraries are imported
    use_jax: bool = True    # False: the adjoints by finite differences, and JAX is never imported
    objective: Any = None   # the check's Objective: the JAX re-run it already built is reused
    call_seconds: float = 0.0  # one call of the loss, as the check measured it (0: not known)
    timings: dict = field(default_factory=dict)  # seconds per phase of the last blame (benchmarks read them)

    def params(self) -> Any:
        out = [np.asarray(x).item() if s else np.array(x, copy=True) for x, s in zip(self.leaves, self.scalar)]
        return unflatten(self.treedef, out)

    def call_loss(self, params: Any) -> float:
        return loss_value(self.loss(params, *fresh(self.args), **fresh(self.kwargs)))

    def jax_objective(self) -> Any:
        """The Objective the JAX re-run is built for: the check's, else one made for this blame."""
        if self.objective is None:
            from .objective import Objective

            self.objective = Objective(self.loss, self.treedef, self.leaves, self.args, self.kwargs,
                                       scalar_leaves=self.scalar)
        return self.objective


def loss_value(value: Any) -> float:
    """The loss a function returned, as a float (the real part of a complex one)."""
    return float(np.real(np.asarray(value, dtype=np.complex128 if np.iscomplexobj(value) else np.float64)
                         ).reshape(-1)[0])


def _intermediates(rec: Recording, leaf_ids: set) -> list[Binding]:
    """The forward pass's float intermediates: plain names bound by a line, not parameters."""
    out = []
    for b in rec.bindings:
        # A helper's argument computed in the call (`nonlin(np.dot(X, syn0))`) is an intermediate too.
        made_here = b.kind == "line" or (b.kind == "argument" and b.rank > 0 and b.alias is None)
        if not made_here or "[" in b.label or id(b.obj) in leaf_ids or not is_number(b.value):
            continue
        if _array(b.value).dtype.kind == "f" and np.asarray(b.obj).dtype != bool:
            out.append(b)
    return out


def _names(bindings: Sequence[Binding]) -> dict[int, str]:
    """A display name per binding: the variable, h#2 for its second value, helper.var where needed."""
    owners: dict[str, set] = {}
    for b in bindings:
        owners.setdefault(b.label, set()).add(b.function)
    seen: dict[tuple, int] = {}
    out = {}
    for b in bindings:
        k = seen[(b.function, b.label)] = seen.get((b.function, b.label), 0) + 1
        base = b.label if k == 1 else f"{b.label}#{k}"
        out[b.seq] = f"{b.function}.{base}" if len(owners[b.label]) > 1 and b.rank else base
    return out


def start_adjoints(case: Case, forward: list[Binding]) -> tuple[Callable[[], tuple] | None, float]:
    """The JAX pass giving every intermediate's adjoint, dispatched (see
    references.jax.adjoints.start_adjoints): what to call for its result (None if the case does
    not use JAX or JAX cannot run the loss), and the seconds it took to dispatch."""
    if not case.use_jax:
        return None, 0.0
    start = time.perf_counter()
    shapes = {b.key: b.value.shape if isinstance(b.value, np.ndarray) else np.shape(b.value) for b in forward}
    try:
        from .references.jax.adjoints import start_adjoints as dispatch

        pending = dispatch(case.jax_objective(), case.leaves, shapes)
    except Exception:  # noqa: BLE001 - JAX cannot run this loss: finite differences instead
        pending = None
    return pending, time.perf_counter() - start


def adjoints(case: Case, forward: list[Binding], f0: float, started: tuple) -> tuple[list, dict, str, float]:
    """(dL/dparameters, {binding key: dL/dintermediate}, method, rtol): JAX (if the case allows it and
    its re-run gives the loss f0 the recorded run gave), else finite differences. `started`: what
    start_adjoints returned."""
    pending, spent = started
    if pending is not None:
        start = time.perf_counter()
        try:
            value, grads, adj = pending()
            if abs(value - f0) <= 1e-6 * max(1.0, abs(f0)):
                return grads, adj, "jax", RTOL["exact"]
        except Exception:  # noqa: BLE001 - JAX cannot run this loss: finite differences instead
            pass
        spent += time.perf_counter() - start
    # The JAX pass is not the blame's time, whether it gave the adjoints or not: the finite
    # differences get what they would have had without it (a slow trace spends none of theirs).
    case.deadline += spent
    return _numeric_adjoints(case, forward)


def _numeric_adjoints(case: Case, forward: list[Binding]) -> tuple[list, dict, str, float]:
    """Central differences on every element of every parameter and of every intermediate the loss
    depends on, once per site.

    A probe moves each intermediate along one random direction: a value the loss ignores (the
    backward values a `(loss, grads)` function binds) leaves it bit for bit the same; an equal
    value, moved the same way, that gives bit for bit the same losses is the same site (a value
    a helper returns, then named by its caller) and shares its adjoint.
    """
    why = "JAX cannot run the loss" if case.use_jax else "without JAX"
    params = sum(np.size(x) for x in case.leaves)
    _affordable(params, why)
    pace = _Pace(case, 2 * len(forward) + 2 * params, why)
    sites: dict[tuple, Binding] = {}   # (losses of the probe, shape) -> the first binding probed so
    twin: dict[tuple, Binding] = {}    # binding key -> the binding whose adjoint it shares
    for b in forward:
        up, down = _probe(case, b, pace)
        first = sites.setdefault((up, down, np.shape(b.value)), b)
        if up != down:
            twin[b.key] = first if np.array_equal(first.value, b.value) else b
    live = [b for b in forward if twin.get(b.key) is b]
    total = sum(np.size(b.value) for b in live) + params
    _affordable(total, why)
    pace.calls += 2 * (total - params)
    grads = [_differences(functools.partial(_loss_moved, case, k), np.asarray(x, float), pace)
             for k, x in enumerate(case.leaves)]
    adj = {b.key: _differences(functools.partial(_loss_element, case, b.key), np.asarray(b.value, float), pace)
           for b in live}
    return grads, {key: adj[b.key] for key, b in twin.items()}, "finite differences", RTOL["numeric"]


def _affordable(elements: int, why: str) -> None:
    if elements > FD_ELEMENTS:
        raise _NotLocated(f"{why}, the adjoints come from finite differences on the intermediates, and the "
                          f"{elements:,} parameter and intermediate elements are more than the {FD_ELEMENTS:,} "
                          f"they visit; a check with JAX (against='auto') blames larger problems")


def _probe(case: Case, b: Binding, pace: _Pace) -> tuple[float, float]:
    """The loss with this intermediate moved either way along a random direction (the same one for
    every value of its size, so that one site bound twice is moved alike)."""
    x = np.asarray(b.value, float)
    direction = np.random.default_rng(x.size).standard_normal(x.shape)
    h = 1e-5 * max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
    up = _loss_with(case, b.key, lambda v: _plus(v, h * direction))
    down = _loss_with(case, b.key, lambda v: _plus(v, -h * direction))
    pace.step(2)
    return up, down


def _plus(value: Any, delta: np.ndarray) -> Any:
    """value + delta, as a new float64 array (or a Python number for a number)."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) + delta
    return value + float(delta)


def _element(i: int, h: float) -> Callable[[Any], Any]:
    """The change that moves element i of a value by h."""
    def change(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = value.astype(np.float64, copy=True)
            value.reshape(-1)[i] += h
            return value
        return value + h

    return change


class _Pace:
    """The loss calls finite differences on the intermediates make, against the blame's clock: they
    stop as soon as what is left clearly cannot fit, not only once the time is up."""

    def __init__(self, case: Case, calls: int, why: str) -> None:
        self.case, self.calls, self.why = case, calls, why
        self.done, self.start = 0, time.perf_counter()
        if case.call_seconds * calls > case.deadline - self.start:  # known not to fit: not started
            self._stop(case.call_seconds)

    def step(self, calls: int) -> None:
        now = time.perf_counter()
        self.done += calls
        left = self.case.deadline - now
        per_call = (now - self.start) / self.done
        if left <= 0 or (self.done >= 8 and per_call * (self.calls - self.done) > 2 * left):
            self._stop(per_call)

    def _stop(self, per_call: float) -> None:
        need = per_call * self.calls
        have = max(self.case.deadline - self.start, 0.0)  # what was left when they started
        left_of = f"{have:.2g} s left of the " if have < 0.99 * self.case.seconds else ""
        raise _NotLocated(f"{self.why}, the adjoints come from finite differences on the intermediates: "
                          f"{self.calls:,} calls of the loss, about {need:.2g} s, more than the "
                          f"{left_of}{self.case.seconds:.2g} s blame may spend")


def _differences(f: Callable[[int, float], float], x: np.ndarray, pace: _Pace) -> np.ndarray:
    out = np.empty(x.size)
    for i, xi in enumerate(x.reshape(-1)):
        h = 1e-5 * max(1.0, abs(float(xi)))
        out[i] = (f(i, h) - f(i, -h)) / (2 * h)
        pace.step(2)
    return out.reshape(x.shape)


def _loss_with(case: Case, key: tuple, change: Callable[[Any], Any]) -> float:
    """The loss with one intermediate changed right after the line that binds it."""
    with substituting(lambda k, value: change(value) if k == key else None,
                      only=(key[0], key[1], key[3])):  # only that function's frames and that name
        return case.call_loss(case.params())


def _loss_element(case: Case, key: tuple, i: int, h: float) -> float:
    """The loss with element i of one intermediate moved by h."""
    return _loss_with(case, key, _element(i, h))


def _loss_moved(case: Case, k: int, i: int, h: float) -> float:
    leaves = [np.array(x, dtype=np.float64, copy=True) for x in case.leaves]
    leaves[k].reshape(-1)[i] += h
    out = [x.item() if s else x for x, s in zip(leaves, case.scalar)]
    return case.call_loss(unflatten(case.treedef, out))


def known_quantities(case: Case, fwd: Recording, forward: list[Binding], grads: list, adj: dict, rtol: float,
                     leaf_ids: set) -> Known:
    """Every quantity the backward pass may hold, adjoints first, duplicates (by value) dropped as they
    are reached; `forward` is the recording's intermediates (_intermediates)."""
    names = _names([b for b in fwd.bindings if b.kind in ("line", "argument") and "[" not in b.label])
    qs: list[Quantity] = []
    # Only what the loss depends on: a (loss, grads) function's own backward values are no forward quantity.
    forward = [b for b in forward if b.key in adj and adj[b.key].any()]
    ordered = sorted(forward, key=lambda b: (b.kind != "line", b.rank, b.seq))
    for b in ordered:
        n = names[b.seq]
        of = f", the argument of {b.function}(...)" if b.kind == "argument" else ""
        qs.append(Quantity(f"dL/d{n}", f"the gradient with respect to {n}{of}", adj[b.key], "adjoint", n, rtol))
    for name, g in zip(case.names, grads):
        qs.append(Quantity(f"dL/d{name}", f"the gradient of the loss with respect to the parameter {name}",
                           np.asarray(g, float), "adjoint", name, rtol))
    for name, x in zip(case.names, case.leaves):
        qs.append(Quantity(name, f"the parameter {name}", np.asarray(x, float), "param", name))
    for b in ordered:
        n = names[b.seq]
        qs.append(Quantity(n, f"the forward value {n}", _array(b.value), "forward", n))
    for b in fwd.bindings:
        if b.kind == "argument" and b.rank == 0 and id(b.obj) not in leaf_ids and is_number(b.value):
            qs.append(Quantity(b.label, f"the data {b.label}", _array(b.value), "data", b.label))
    return Known(qs, [(names[b.seq], _array(b.value)) for b in ordered])


def _distinct(qs: list[Quantity]) -> list[Quantity]:
    """The quantities in order, each dropped if it is zero, not finite, or an earlier one's value."""
    return list(Known(qs, []).of())


def data_parts(known: Known, bwd: Recording, returned: set) -> list[Quantity]:
    """The gradients of the data part of a regularised loss, where the backward pass shows them.

    A loss `data + 0.5 * reg * sum(W**2)` has dL/dW = d(data)/dW + reg * W, and a backward pass
    names d(data)/dW (CS231n's `dW2` before `grads["W2"] = dW2 + reg * W2`). Where a value it binds
    (not a gradient it returns) is dL/dW - c x W for a weight W (more than two elements, c not 0),
    c is the regularisation: dL/dV - c x V is then a known quantity for every weight V of W's rank.
    """
    qs = list(known.of(eager=True))
    params = {q.of: q for q in qs if q.kind == "param" and q.value.size > 2}
    grads = {q.of: q for q in qs if q.kind == "adjoint" and q.of in params and q.what.startswith("the gradient of")}
    found: dict[float, int] = {}  # coefficient -> the rank of the weight that showed it
    for b in bwd.bindings:
        if id(b.obj) in returned or not is_number(b.value):
            continue
        for name, p in params.items():
            g = grads.get(name)
            if g is not None and np.shape(b.value) == p.value.shape:
                c = _coefficient(g, p, _array(b.value))
                if c is not None:
                    found.setdefault(c, p.value.ndim)
    out = []
    for c, rank in found.items():
        for name, p in params.items():
            g = grads.get(name)
            if g is not None and p.value.ndim == rank:
                out.append(Quantity(f"dL/d{name} - {_factor(c)} x {name}", f"the gradient of the data part of the "
                                    f"loss with respect to {name} (without the regularisation {_factor(c)} x {name})",
                                    g.value - c * p.value, "adjoint", name, g.rtol))
    return _distinct(out)


def _coefficient(g: Quantity, p: Quantity, v: np.ndarray) -> float | None:
    """c where v = g - c x p (c not 0; within g's tolerance), else None."""
    with np.errstate(all="ignore"):
        d = (g.value - v).reshape(-1)
        flat = p.value.reshape(-1)
        c = float(d @ flat) / float(flat @ flat)
        if not math.isfinite(c) or abs(c) < 1e-9 or not np.all(np.abs(d - c * flat) <= g.tol):
            return None
    return float(np.round(c, 9))


# --------------------------------------------------------------------------- the search


class _NotLocated(Exception):
    """No line can be blamed; the message says why."""


class _Search:
    def __init__(self, rec: Recording, known: Known, deadline: float, param_ids: set) -> None:
        self.rec, self.known, self.deadline, self.param_ids = rec, known, deadline, param_ids
        self.reruns = 0
        self._prints: dict[int, Print | None] = {}
        self._matches: dict[int, Match | None] = {}
        self.expected: dict[int, Quantity] = {}  # binding -> what the search found it should hold
        self.blamed: dict[int, tuple] = {}       # binding -> the blame found from it
        self._held: dict[tuple, bool] = {}
        self.described: dict[tuple, Blame] = {}  # (binding, expected, hint) -> its Blame
        self._copies: dict[int, bool] = {}
        self._located: dict[tuple, tuple] = {}  # (binding, id of what it should be) -> locate's result
        self._origins: dict[int, Binding] = {}
        self._parents: dict[int, list] = {}

    def matched(self, b: Binding) -> Match | None:
        if b.seq not in self._matches:
            p = self.print_of(b)
            self._matches[b.seq] = self.known.match(b.value, p) if p is not None else None
        return self._matches[b.seq]

    def print_of(self, b: Binding) -> Print | None:
        """The print of a bound number (None for anything else), taken once."""
        if b.seq not in self._prints:
            a = _array(b.value) if is_number(b.value) else None
            self._prints[b.seq] = fingerprint(a) if a is not None and a.dtype.kind in "fc" else None
        return self._prints[b.seq]

    def origin(self, b: Binding) -> Binding:
        """The binding that computed this value: through the calls that passed or returned it."""
        got = self._origins.get(b.seq)
        if got is None:
            got = self._origins[b.seq] = self._origin(b)
        return got

    def _origin(self, b: Binding) -> Binding:
        for _ in range(64):
            if b.alias is not None:
                b = b.alias
                continue
            if b.kind in ("return", "argument"):
                same = next((o for o in reversed(self.rec.bindings[:b.seq])
                             if o.call == b.call and o.obj is b.obj and o.kind == "line"), None)
                if same is not None:
                    b = same
                    continue
            break
        return b

    def parents(self, b: Binding) -> list[tuple[str, Binding]]:
        """(label in b's statement, binding) for the numbers b's statement read (found once)."""
        got = self._parents.get(b.seq)
        if got is None:
            got = self._parents[b.seq] = self._read(b)
        return got

    def _read(self, b: Binding) -> list[tuple[str, Binding]]:
        out = []
        targets = b.statement.target_names()
        for name in b.statement.reads(b.label):
            token = b.env.get(name)
            if isinstance(token, Binding):
                out.append((name, token))
            elif token is not None and hasattr(token, "entries") and name not in targets:
                out.extend((f"{name}{_suffix(path)}", e) for path, e in token.entries.items())
        return out

    def rerun(self, b: Binding, substitute: dict) -> Any:
        if time.perf_counter() > self.deadline:
            raise _NotLocated("the time for blame ran out while following the backward pass")
        if self.reruns >= MAX_RERUNS:
            raise _NotLocated(f"following the backward pass took more than {MAX_RERUNS:,} re-runs of its statements")
        if not b.statement.rerunnable:
            return None
        self.reruns += 1
        try:  # the search runs with numpy's warnings off (_blame_case)
            return b.statement.rerun(environment(b, substitute), b.globals, b.label)
        except Exception:  # noqa: BLE001 - a statement that does not run on other values tells nothing
            return None

    def explained(self, b: Binding) -> bool:
        """Whether a value is a known quantity (up to a pattern), zero, computed from data alone, or
        not a number at all."""
        b = self.origin(b)
        p = self.print_of(b)
        if p is None or p.norm == 0:
            return True
        return self.matched(b) is not None or self._data_only(b)

    def _data_only(self, b: Binding, depth: int = 0) -> bool:
        b = self.origin(b)
        if not is_number(b.value):
            return True
        m = self.matched(b)
        if m is not None:
            return m.quantity.kind == "data"
        if b.kind == "argument":  # the data the gradient function was given, or a parameter
            return b.rank == 0 and id(b.obj) not in self.param_ids
        if depth > 30:
            return False
        return all(self._data_only(p, depth + 1) for _, p in self.parents(b))

    def copies(self, b: Binding) -> bool:
        """Whether b's line only renamed or copied a value read on it."""
        if b.seq not in self._copies:
            shape, mine = np.shape(b.value), self.print_of(b)
            self._copies[b.seq] = mine is not None and any(
                is_number(p.value) and (np.shape(p.value) == shape or np.size(p.value) == np.size(b.value) == 1)
                and self._near(mine, p) and close(b.value, p.value) for _, p in self.parents(b))
        return self._copies[b.seq]

    def held(self, q: Quantity, before: int) -> bool:
        """Whether some value bound before binding `before` is this quantity."""
        key = (id(q), before)
        if key not in self._held:
            shape = q.value.shape
            self._held[key] = any(is_number(o.value) and np.shape(o.value) == shape
                                  and q.holds(o.value, self.print_of(o)) for o in self.rec.bindings[:before])
        return self._held[key]

    def _near(self, mine: Print, other: Binding) -> bool:
        """False where the prints show that b's value (print `mine`) is not close to other's."""
        p = self.print_of(other)
        if p is None or p.size != mine.size:
            return p is None  # close() decides (a size apart: not close)
        # close()'s tolerance is at most this
        return _near(mine, mine.proj, p.norm, p.proj, 1.01 * (RTOL["exact"] * max(p.norm, 1e-12) + 1e-15))

    def candidates(self, b: Binding, shape: tuple | None = None) -> Iterator[Quantity]:
        """Known quantities b could have held instead, in order as the loop reaches them: of its shape
        (or `shape`), the one it is a pattern of first."""
        v, p = _array(b.value), self.print_of(b)
        m = self.matched(b)
        if m is not None and m.pattern != "exact":
            yield m.quantity
        shapes = list(self.known.like(v.shape)) if v.size == 1 else [v.shape]
        for q in self.known.of(shapes + ([shape] if shape is not None else [])):
            if q.kind in ("adjoint", "derivative", "forward", "param") and (
                    q.value.shape != v.shape or not q.holds(v, p)):
                yield q

    def locate(self, node: Binding, expected: Quantity, depth: int = 0) -> tuple[Binding, Quantity, str]:
        """(blamed binding, what it should be, a hint) for a node that should equal `expected` (found
        once: a line two parameters' gradients go through is followed back once)."""
        node = self.origin(node)
        key = (node.seq, id(expected))
        if key not in self._located:
            self._located[key] = self._locate(node, expected, depth)
        return self._located[key]

    def _locate(self, node: Binding, expected: Quantity, depth: int) -> tuple[Binding, Quantity, str]:
        self.expected[node.seq] = expected
        hint = ""
        for label, p in self.parents(node):
            po = self.origin(p)
            m = self.matched(po)
            if not is_number(po.value) or (m is not None and m.quantity.kind == "data"):
                continue
            correct = m is not None and m.pattern == "exact"
            # a line that passes its input on unchanged may also pass on a wrong shape
            shape = expected.value.shape if _array(node.value).shape == _array(po.value).shape else None
            for q in itertools.chain(self.candidates(po, shape), _lazy(self._scaled, node, label, po, expected)):
                value = self.rerun(node, {label: q.value})
                if value is None or not expected.holds(value, quick=True):
                    continue
                if correct and not self.copies(po) and self.copies(node):
                    break  # a renaming line: the step that turns one quantity into the next is missing here
                entry = "[" in label  # a right value taken from the wrong place in a list or dict
                if correct and (entry or not self.copies(po)) and self.held(q, node.seq):
                    same = q_label(m) == label
                    hint = hint or f"it uses {label}{'' if same else f' (= {q_label(m)})'} where {q.label} is needed"
                    break
                if depth < 40:
                    return self._found(self.locate(po, q, depth + 1))
        unexplained = [(label, p) for label, p in self.parents(node) if not self.explained(p)]
        if unexplained:
            joint = self._joint(node, expected, unexplained, depth)
            if joint is not None:
                return joint
            # an input that the search (for another parameter) found should hold something else is wrong:
            # the first wrong line is at or before the line that bound it
            wrong = [(self.origin(p), self.expected[self.origin(p).seq]) for _, p in unexplained
                     if self.origin(p).seq in self.expected and self.origin(p).seq != node.seq]
            if wrong and depth < 40:
                found = [self.blamed.get(po.seq) or self.locate(po, q, depth + 1) for po, q in wrong]
                return min(found, key=lambda r: r[0].seq)
            names = ", ".join(label for label, _ in unexplained)
            raise _NotLocated(f"{_where(node)} is wrong, but it is computed from {names}, which "
                              f"{'match' if len(unexplained) > 1 else 'matches'} no known quantity, so the line "
                              f"where the error entered cannot be told")
        if not node.statement.rerunnable and any(
                (m := self.matched(self.origin(p))) is not None and m.pattern != "exact"
                for _, p in self.parents(node)):
            raise _NotLocated(f"{_where(node)} is wrong, but it cannot be re-run to tell whether the error "
                              f"entered there or in a value it read")
        return self._found((node, expected, hint))

    def _found(self, result: tuple) -> tuple:
        self.blamed[result[0].seq] = result
        return result

    def _scaled(self, node: Binding, label: str, po: Binding, expected: Quantity) -> list[Quantity]:
        """For a parent that matches nothing: the value it must hold if the line only scales it."""
        if self.matched(po) is not None or self.copies(node):
            return []
        v, e, p = _array(node.value), expected.value, _array(po.value)
        if v.shape != e.shape or p.shape != v.shape or not np.all(v):
            return []
        with np.errstate(all="ignore"):
            need = p * (e / v)
        m = self.known.match(need)
        return [Quantity(m.describe() if m is not None else f"what {label} must hold for {_where(node)}", "", need,
                         "fix", label, expected.rtol)]

    def _joint(self, node: Binding, expected: Quantity, unexplained: list, depth: int) -> tuple | None:
        """Several wrong inputs at once: put in what the search found each should be (for another
        parameter) or the quantity each is a pattern of; blame the first of their lines."""
        if depth >= 40:
            return None
        fixes = {}
        for label, p in unexplained:
            po = self.origin(p)
            m = self.matched(po)
            q = self.expected.get(po.seq) or (m.quantity if m is not None else None)
            if q is None:
                return None
            fixes[label] = (po, q)
        value = self.rerun(node, {label: q.value for label, (_, q) in fixes.items()})
        if value is None or not expected.holds(value, quick=True):
            return None
        found = [self.blamed.get(po.seq) or self.locate(po, q, depth + 1) for po, q in fixes.values()]
        return min(found, key=lambda r: r[0].seq)

def _lazy(fn: Callable, *args: Any) -> Iterator[Any]:
    """fn(*args)'s items, computed only if the loop gets that far."""
    yield from fn(*args)


def _suffix(path: tuple) -> str:
    return "".join(f"[{k!r}]" for k in path)


def q_label(m: Match | None) -> str:
    return "?" if m is None else (m.quantity.label if m.pattern == "exact" else m.describe())


def _where(b: Binding) -> str:
    return f"{os.path.basename(b.statement.filename)}:{b.statement.line} ({b.statement.source})"


# --------------------------------------------------------------------------- describing the blame


def _why(search: _Search, node: Binding, expected: Quantity) -> str:
    """What is missing or extra, from how the value relates to what it should be."""
    v = _array(node.value)
    e = expected.value
    pv = search.print_of(node)
    if (v.shape == e.shape or v.size == e.size == 1) and pv is not None:
        if expected.may_be(pv, pv.proj, -1.0) and expected.equals(-v):
            return "the sign is flipped"
        if e.any() and expected.may_scale(pv):
            c = float(np.vdot(v.reshape(e.shape), e) / np.vdot(e, e))
            # a single number is a multiple of any other: say so only for a whole number or its inverse
            round_ = any(abs(x - round(x)) < 1e-9 and round(x) > 1 for x in (abs(c), 1 / abs(c) if c else 0))
            if (v.size > 2 or round_) and close(v, c * e.reshape(v.shape), expected.rtol):
                return f"it is {c:.6g} times the right value: a factor is missing or extra"
        for p in _weights(search.known, e.shape):
            reg = _coefficient(expected, p, v)
            if reg is not None:
                return (f"it is {expected.label} {'-' if reg > 0 else '+'} {_factor(abs(reg))} x {p.label}: the "
                        f"regularisation's gradient is off by that much")
    if v.ndim == 2 and v.shape[::-1] == e.shape and expected.holds(v.T):
        return "it is transposed"
    m = search.matched(node)
    slopes = _Slopes(search.known, e.shape)
    if m is not None and m.pattern == "exact" and m.quantity.kind == "adjoint":
        for d in slopes.times(m.quantity.value, e, expected.tol):
            if expected.holds(m.quantity.value * d.value, quick=True):
                return f"{expected.label} = {m.quantity.label} * {_paren(d.label)}: {d.what.split(',')[0]} is missing"
    for d, a in slopes.pairs(e, expected.tol):
        if expected.holds(a.value * d.value, quick=True):
            for wrong in slopes.times(a.value, v, _tolerance(v, expected.rtol)):
                if wrong is not d and close(a.value * wrong.value, v, expected.rtol):
                    return (f"{expected.label} = {a.label} * {_paren(d.label)} ({d.what.split(',')[0]}); this "
                            f"line multiplies by {_paren(wrong.label)} instead")
            if close(a.value, v, expected.rtol):
                return f"{expected.label} = {a.label} * {_paren(d.label)}: {d.what.split(',')[0]} is missing"
    return ""


def _weights(known: Known, shape: tuple) -> list[Quantity]:
    """The parameters of this shape with more than two elements (the quantities of the shape are made and
    cleared of duplicates only where a parameter has it)."""
    shelf = known.shelf(shape)
    if shelf is None or not any(isinstance(q, Quantity) and q.kind == "param" for _, q, _ in shelf.raw):
        return []
    return [q for q in known.of([shape], eager=True) if q.kind == "param" and q.value.size > 2]


def _tolerance(target: np.ndarray, rtol: float) -> float:
    """The tolerance close(value, target, rtol) allows per element (for a real target)."""
    if not target.size or target.dtype.kind != "f":
        return math.inf
    return rtol * max(float(max(target.max(), -target.min())), 1e-12) + 1e-15


class _Slopes:
    """The named local derivatives of one shape in the known order (the order _why reads them in), each
    compared first on a few elements (_samples): a derivative is computed, and checked against the earlier
    quantities of its shape, only where those elements leave it possible."""

    def __init__(self, known: Known, shape: tuple) -> None:
        shelf = known.shelf(shape)
        self.shelf, self.shape, self.derived = shelf, shape, known.derived
        raw = shelf.raw if shelf is not None else []
        self.entries = [k for k, (_, make, _) in enumerate(raw) if isinstance(make, tuple) and NAMED[make[2]]]
        self._sampled: dict[int, list] = {}

    def times(self, a: np.ndarray, target: np.ndarray, t: float) -> Iterator[Quantity]:
        """The kept derivatives d, in order, except those for which a x d is not within t of target."""
        fast = a.shape == target.shape == self.shape and a.dtype.kind == target.dtype.kind == "f"
        a_s, t_s = (_samples(a), _samples(target)) if fast else ([], [])
        for k in self.entries:
            if fast and not _products_within(a_s, self._samples(k), t_s, t):
                continue
            d = self._kept(k)
            if d is not None:
                yield d

    def pairs(self, target: np.ndarray, t: float) -> Iterator[tuple[Quantity, Quantity]]:
        """(d, a) for the kept derivatives d and the adjoints a of this shape, d by d in order, except those
        for which a x d is not within t of target."""
        if self.shelf is None:
            return
        for _ in self.shelf.items(self.derived):  # the quantities before the derivatives decided
            pass
        # the kept adjoints: those before the derivatives, then the data parts (all kept)
        adjoints = [q for pos, q in self.shelf.kept if pos < self.derived and q.kind == "adjoint"]
        adjoints += [q for _, q, checked in self.shelf.raw
                     if checked and isinstance(q, Quantity) and q.kind == "adjoint"]
        fast = target.dtype.kind == "f" and all(a.value.dtype.kind == "f" for a in adjoints)
        t_s = _samples(target) if fast else []
        a_s = [_samples(a.value) if fast else [] for a in adjoints]
        for k in self.entries:
            for a, a_k in zip(adjoints, a_s):
                if fast and not _products_within(a_k, self._samples(k), t_s, t):
                    continue
                d = self._kept(k)
                if d is None:
                    break
                yield d, a

    def _kept(self, k: int) -> Quantity | None:
        return self.shelf.kept_at(k, self._samples) if self.shelf is not None else None

    def _samples(self, k: int) -> list:
        """The samples of raw entry k: a local derivative's computed on the samples of the value it is
        formed from, where it is not made yet."""
        got = self._sampled.get(k)
        if got is None:
            make = self.shelf.raw[k][1]  # type: ignore[union-attr]
            made = make if isinstance(make, Quantity) else self.shelf.made.get(k)  # type: ignore[union-attr]
            if made is not None:
                got = made.samples
            else:  # the form computed on v's samples is the form's samples
                name, v, form = make  # type: ignore[misc]
                got = _sampled_form(_samples(v), form)
            self._sampled[k] = got
        return got


def _sampled_form(xs: list, form: int) -> list:
    """Local derivative `form` (_derivatives' order) of the numbers xs: the same arithmetic as numpy's, and
    exp and tanh within a last bit of its (_within leaves room for that)."""
    try:
        if form == 0:
            return [x * (1 - x) for x in xs]
        if form == 1:
            return [1 - x * x for x in xs]
        if form == 2:
            return [1.0 if x > 0 else 0.0 for x in xs]
        if form == 3:
            return [1 - x for x in xs]
        if form == 4:
            return [(1 / (1 + math.exp(-x))) * (1 - 1 / (1 + math.exp(-x))) for x in xs]
        return [1 - math.tanh(x) ** 2 for x in xs]
    except (OverflowError, ValueError):  # where math overflows, numpy's inf and nan
        with np.errstate(all="ignore"):
            return np.asarray(_derivatives("v", np.asarray(xs, dtype=float))[form][2](), dtype=float).tolist()


def _paren(label: str) -> str:
    return f"({label})" if label.startswith("1 - ") else label


def _blame(node: Binding, expected: Quantity, hint: str, search: _Search) -> Blame:
    """The Blame of a line (the same line found for several parameters is described once)."""
    key = (node.seq, id(expected), hint)
    if key not in search.described:
        search.described[key] = _describe_blame(node, expected, hint, search)
    return search.described[key]


def _describe_blame(node: Binding, expected: Quantity, hint: str, search: _Search) -> Blame:
    m = search.matched(node)
    equals = m.describe() if m is not None else "none of the forward values, gradients or local derivatives"
    why = _why(search, node, expected) or hint
    should = f"{expected.label}" + (f" ({expected.what})" if expected.what else "")
    if why.startswith(f"{expected.label} ="):
        should = why
    elif why:
        should += f": {why}"
    return Blame(file=_display_path(node.statement.filename), line=node.statement.line, function=node.function,
                 source=node.statement.source, equals=equals, should_be=should)


def _display_path(path: str) -> str:
    return _relative(path, os.getcwd())


@functools.lru_cache(maxsize=256)
def _relative(path: str, cwd: str) -> str:
    """The path relative to cwd where it lies below it."""
    try:
        rel = os.path.relpath(path, cwd)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# --------------------------------------------------------------------------- the API


def blame(loss: Callable | None = None, grad: Callable | None = None, params: Any = None, args: Sequence[Any] = (),
          *, value_and_grad: Callable | None = None, kwargs: dict | None = None,
          leaves: Sequence[str] | None = None, seconds: float = BLAME_SECONDS, use_jax: bool = True
          ) -> dict[str, Blame]:
    """For each parameter in `leaves` (default: all), the line of `grad` where its gradient goes wrong.

    The adjoints come from JAX where it can run the loss, else (and always with use_jax=False,
    which never imports JAX) from finite differences on the recorded intermediates; `seconds`
    bounds the time blame spends besides the JAX pass, which is one gradient.

    Every named parameter gets a Blame: `line` is None and `reason` says why when no line is
    blamed (its gradient is right, it is one expression, the code could not be followed).
    """
    names, values, treedef = flatten(params)
    arrays = [validate_leaf(n, v) for n, v in zip(names, values)]
    scalar = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in values]
    pair = value_and_grad is not None
    gradient = _gradient_function(grad, value_and_grad)
    case = Case(loss if loss is not None else (lambda p, *a, **k: gradient(p, *a, **k)[0]),
                gradient, names, arrays, treedef, scalar, tuple(args), dict(kwargs or {}),
                pair, seconds, use_jax=use_jax)
    return blame_case(case, list(leaves) if leaves is not None else names)


def _gradient_function(grad: Callable | None, value_and_grad: Callable | None) -> Callable:
    """value_and_grad if given, else grad; with neither, a function that fails as calling None would."""
    given = value_and_grad if value_and_grad is not None else grad
    if given is not None:
        return given

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("neither grad nor value_and_grad was given")

    return missing


def blame_case(case: Case, wanted: list[str]) -> dict[str, Blame]:
    """blame() on a prepared Case; never raises for the learner's code (a reason says what failed).

    The cyclic garbage collector is paused meanwhile (and restored as it was): the recordings
    make thousands of small objects, and a full collection in their midst walks every object of
    the process (after a check with SymPy, hundreds of thousands): more than the blame itself."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return _blame_case(case, wanted)
    except _NotLocated as exc:
        return {n: Blame(reason=str(exc)) for n in wanted}
    except RecordingTooLarge as exc:
        return {n: Blame(reason=f"the code binds too many values to record ({exc})") for n in wanted}
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - blame never makes a check fail (sys.exit included)
        return {n: Blame(reason=f"the backward pass could not be followed ({type(exc).__name__}: {exc})")
                for n in wanted}
    finally:
        if paused:
            gc.enable()


def _blame_case(case: Case, wanted: list[str]) -> dict[str, Blame]:
    if sum(np.size(x) for x in case.leaves) > MAX_PARAMS:
        raise _NotLocated(f"more than {MAX_PARAMS:,} parameters: blame records small and medium problems only")
    if case.use_jax:
        try:  # importing JAX is a one-off cost, not the blame's
            import gradcheck.references.jax.adjoints  # noqa: F401
        except ImportError:
            case.use_jax = False
    if not case.use_jax:  # finite differences visit every parameter element: known before recording
        _affordable(sum(np.size(x) for x in case.leaves), "without JAX")
    clock = _Stopwatch(case.timings)
    case.deadline = time.perf_counter() + case.seconds
    params = case.params()
    leaf_ids = {id(x) for x in flatten(params)[1]}
    fwd = record(case.loss, params, *fresh(case.args), **fresh(case.kwargs))
    clock("record_forward")
    forward = _intermediates(fwd, leaf_ids)
    started = start_adjoints(case, forward)  # JAX computes them while the backward pass is recorded
    clock("adjoints")
    params = case.params()
    bwd = record(case.grad, params, *fresh(case.args), **fresh(case.kwargs))
    clock("record_backward")
    grads, adj, method, rtol = adjoints(case, forward, loss_value(fwd.result), started)
    clock("adjoints")
    if method == "jax":  # one gradient (compiled the first time): the clock is for the rest
        case.deadline = time.perf_counter() + case.seconds - case.timings["record_backward"]
    quantities = known_quantities(case, fwd, forward, grads, adj, rtol, leaf_ids)
    clock("quantities")
    with np.errstate(all="ignore"):  # values that overflow or are not finite match nothing, silently
        out = _search(case, wanted, quantities, bwd, {id(x) for x in flatten(params)[1]}, grads, rtol)
    clock("search")
    return out


def _search(case: Case, wanted: list[str], quantities: Known, bwd: Recording, param_ids: set, grads: list,
            rtol: float) -> dict[str, Blame]:
    """Each wanted parameter's Blame from the recorded backward pass (param_ids: the parameters it was given)."""
    objs = flatten_like(case.treedef, bwd.result[1] if case.pair else bwd.result)
    out: dict[str, Blame] = {}
    pending = list(wanted)
    for more in (False, True):  # where values match nothing, what the backward pass shows may be known too
        if more:
            extra = data_parts(quantities, bwd, {id(o) for o in objs}) if pending else []
            if not extra:
                break
            quantities = quantities.with_extra(extra)
        search = _Search(bwd, quantities, case.deadline, param_ids)
        for _ in range(2):  # a second pass uses what the first found the other parameters' lines should hold
            for name in list(pending):
                k = case.names.index(name)
                expected = Quantity(f"dL/d{name}", "", np.asarray(grads[k], float), "adjoint", name, rtol)
                out[name], again = _blame_leaf(search, bwd, objs[k], expected, name)
                if not again:
                    pending.remove(name)
    return out


class _Stopwatch:
    """Seconds per phase: the time between calls, recorded under the phase's name."""

    def __init__(self, into: dict) -> None:
        self.into, self.last = into, time.perf_counter()
        into.clear()

    def __call__(self, phase: str) -> None:
        """Add the seconds since the last call to `phase` (a phase may come in several parts)."""
        now = time.perf_counter()
        self.into[phase], self.last = self.into.get(phase, 0.0) + now - self.last, now


def _blame_leaf(search: _Search, bwd: Recording, obj: Any, expected: Quantity, name: str) -> tuple[Blame, bool]:
    """The parameter's Blame, and whether a second try could do better (what the search learns from
    the other parameters may explain the values it could not)."""
    final = bwd.by_object(obj)
    if final is None or not is_number(final.value):
        return Blame(reason=f"the gradient of {name} is not bound to a name in the learner's code, so its "
                            f"computation cannot be followed line by line"), False
    final = search.origin(final)
    if expected.holds(final.value, quick=True):
        return Blame(reason=f"the gradient of {name} matches dL/d{name} as the backward pass computes it"), False
    try:
        node, should, hint = search.locate(final, expected)
    except _NotLocated as exc:
        return Blame(reason=str(exc)), True
    if node is final and not any((m := search.matched(search.origin(p))) is not None
                                 and m.quantity.kind not in ("param", "data")
                                 for _, p in search.parents(node)):
        return Blame(reason=f"the gradient of {name} is one expression of the parameters and data "
                            f"({_where(node)}): there is no named intermediate to compare; name its steps "
                            f"(the error, the deltas) to have the wrong one found"), True
    return _blame(node, should, hint, search), False


def attach_blame(results: Sequence[Any], prep: Any, grad: Callable | None, value_and_grad: Callable | None,
                 budget: float = 20.0, use_jax: bool = True, left: float | None = None) -> list:
    """The check's results with a Blame on each failing parameter (unchanged if blame cannot run).

    Blame may spend BLAME_SECONDS, or a quarter of the check's budget if that is less, or `left`
    (what remains of the check's budget) if that is less still (besides
    the JAX pass, one gradient, which reuses the check's JAX re-run); with use_jax=False (the
    check ran without JAX) JAX is not imported and finite differences give the adjoints. The
    check settles the learner's state after it (one call of loss and gradient at their parameters).
    """
    failing = [p.name for p in results if not p.passed]
    if not failing:
        return list(results)
    try:
        obj = prep.objective
        case = Case(obj.loss, _gradient_function(grad, value_and_grad), list(prep.names),
                    [np.array(x, copy=True) for x in obj.x0_user], obj.treedef, list(obj.scalar_leaves),
                    tuple(obj.user_args), dict(obj.user_kwargs), value_and_grad is not None,
                    min(BLAME_SECONDS, 0.25 * budget, float("inf") if left is None else max(left, 0.0)),
                    use_jax=use_jax, objective=obj, call_seconds=getattr(prep, "t_loss", 0.0))
        found = blame_case(case, failing)
        return [replace(p, blame=found[p.name]) if p.name in found else p for p in results]
    except (Exception, SystemExit):  # noqa: BLE001 - blame never makes a check fail
        return list(results)
