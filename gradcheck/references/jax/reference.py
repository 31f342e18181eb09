"""JAX reference: the learner's numpy loss re-run under jax.numpy and differentiated by jax.grad.

The only module of gradcheck that imports jax. The loss is rebound (see `gradcheck.usercode.rebind`)
so that `np.*` means `jax.numpy.*`, and runs in float64 inside
`jax.enable_x64(True)`: the user's own JAX configuration is left as it was. The gradient is
compiled with `jax.jit` when the code allows it (and reused by later checks of the same loss);
code with Python control flow on data or parameters (`if loss > 0`, `range(y.max())`) falls
back to eager `jax.grad`, which handles it. `range(n)` is given to the loss as an index array,
so the tutorials' `probs[range(n), y]` works.

`batched_loss` serves the finite-difference reference: the same rebound loss, jitted and
vectorised (jax.vmap) over many one-element perturbations of the parameters per call.

Assignment into a local array (`dscores[range(N), y] -= 1`) is recompiled as a functional
update (gradcheck.writes). `float(...)`, `int(...)` and `.item()` of a parameter-dependent
value are that value, traced. `np.random` is numpy's own once the loss fixes the seed: draws
inside a loss (a dropout mask after `np.random.seed(0)`) are constants to the derivative. Code JAX cannot run at all
(assignment through an attribute, a numpy function jax.numpy lacks) raises
`ReferenceUnavailable` naming the operation and the line of the user's code.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

_RANDOM_STATE = np.random.get_state()  # importing jax draws from numpy's global generator: put it back
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

np.random.set_state(_RANDOM_STATE)

from ...errors import ReferenceUnavailable  # noqa: E402
from ...model import ReferenceGradient
from .. import unavailable
from ...objective import Objective
from ...usercode.frames import PACKAGE_DIR, is_user_file
from ...usercode.rebind import SCALAR_REWRITE, SeededRandom, UnseededDraw, rebind_guarded
from ...tree import map_data, unflatten

EPS = float(np.finfo(np.float64).eps)
#: Autodiff is exact up to rounding in the forward and backward passes: float64 rounding, or
#: that of the lower precision a loss casts itself to (objective.eps), whose casts JAX follows.
ROUNDING = 64
#: How far the JAX loss value may stray from the numpy one before the re-run is distrusted.
VALUE_RTOL, VALUE_ATOL = 1e-6, 1e-9

_CONCRETIZATION = (jax.errors.ConcretizationTypeError, jax.errors.NonConcreteBooleanIndexError)


def float64() -> Any:
    """A context in which JAX computes in float64; the user's global setting is untouched."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # type: ignore[attr-defined, unused-ignore]  # jax < 0.5

    return enable_x64(True)


class JaxUnsupported(AttributeError):
    """A numpy function jax.numpy does not provide."""

    def __init__(self, op: str, reason: str = "has no counterpart in jax.numpy") -> None:
        self.op = op
        super().__init__(f"JAX reference: numpy function np.{op} {reason}")


#: numpy helpers with no numerical content that jax.numpy lacks; numpy's own are harmless.
_NUMPY_HELPERS = ("errstate", "seterr", "geterr", "printoptions", "set_printoptions", "ndim", "shape",
                  "isscalar", "newaxis")


@functools.lru_cache(maxsize=1)
def namespace() -> types.ModuleType:
    """numpy as the JAX reference sees it: jax.numpy, plus clear errors for what it lacks."""
    ns = types.ModuleType("numpy", "numpy under the JAX reference (jax.numpy)")
    ns.__dict__.update({k: getattr(jnp, k) for k in dir(jnp) if not k.startswith("_")})
    for name in _NUMPY_HELPERS:
        ns.__dict__.setdefault(name, getattr(np, name))
    # Draws do not depend on the parameters: numpy's own, constants to the derivative. A loss
    # that draws without a fixed seed is refused before any reference runs (NondeterministicLoss).
    ns.__dict__["random"] = SeededRandom()

    def missing(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise JaxUnsupported(name)

    ns.__dict__["__getattr__"] = missing
    return ns


def _scipy_mapping() -> dict:
    """scipy.special functions the user may call, mapped to jax.scipy.special (if scipy is loaded)."""
    special = sys.modules.get("scipy.special")
    if special is None:
        return {}
    import jax.scipy.special as jsp

    names = ("expit", "logit", "logsumexp", "softmax", "log_softmax", "erf", "erfc", "gammaln", "xlogy", "xlog1py")
    return {getattr(special, n): getattr(jsp, n) for n in names if hasattr(special, n) and hasattr(jsp, n)}


def _index_range(*args: int) -> np.ndarray:
    """range(...) for the user's code under JAX: an int array, so `probs[range(n), y]` indexes
    (JAX refuses Python sequences as indices); loops over it work as over a range."""
    return np.arange(*args)


# --- data: arrays are traced arguments, everything else stays static ----------------------------

@dataclass(frozen=True)
class _Slot:
    index: int


def _device_copy(array: np.ndarray, dtype: Any = None) -> Any:
    """A JAX array holding a private copy of `array`, never the caller's memory.

    device_put compiles nothing (jnp.array compiles a copy per shape), which is most of the
    first check's cost on a small problem.
    """
    return jax.device_put(np.array(array, dtype=dtype, copy=True))


def _split(tree: Any, arrays: list) -> Any:
    """A template of `tree` with numeric ndarrays replaced by slots (their values go to `arrays`)."""
    def slot(value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiubc":
            arrays.append(_device_copy(value))
            return _Slot(len(arrays) - 1)
        return value

    return map_data(tree, slot)


def _fill(template: Any, arrays: Sequence[Any]) -> Any:
    return map_data(template, lambda v: arrays[v.index] if isinstance(v, _Slot) else v)


def _as_loss(value: Any) -> Any:
    value = jnp.asarray(value)
    if value.size != 1:
        raise TypeError(f"the loss under JAX has shape {value.shape}, not a single number")
    value = value.reshape(())
    if jnp.iscomplexobj(value):
        value = value.real
    return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(jnp.float64)


def _freeze(template: Any) -> Any:
    """A hashable image of the static part of the data (raises TypeError if there is none)."""
    if isinstance(template, _Slot):
        return template
    if isinstance(template, dict):
        return ("dict", tuple((k, _freeze(v)) for k, v in template.items()))
    if isinstance(template, (list, tuple)):
        return (type(template), tuple(_freeze(v) for v in template))
    hash(template)
    return (type(template), template)


def _callable_key(fn: Any) -> Any:
    """An identity key for the user's loss; bound methods are new objects on every access.

    The loss taken from a `value_and_grad=` function is made anew by each check: its key is
    the user's function's, so repeated checks of it compile once.
    """
    whole = getattr(fn, "gradcheck_part_of", None)
    if whole is not None:
        return ("value of", _callable_key(whole))
    if isinstance(fn, types.MethodType):
        return ("method", id(fn.__func__), id(fn.__self__))
    return ("callable", id(fn))


@dataclass
class _Compiled:
    """The loss rebound to jax.numpy and its compiled gradient, shared by checks of the same loss."""

    loss: Callable  # (leaves, arrays) -> scalar
    unchanged: Callable[[], bool]  # whether the user's globals it was built from still hold
    owner: Any  # the user's loss, kept alive so its id stays unique while cached
    jitted: Callable | None = None
    eager: bool = False  # True once jit is known not to work on this code
    first_seconds: float | None = None  # the first gradient's wall time, compiling included
    too_slow: float = 0.0  # seconds of tracing that were not enough (not tried again with as few)
    constant: "ConstantData" = field(default_factory=lambda: ConstantData())  # where jit needs the data known
    notes: list = field(default_factory=list)
    batched: dict = field(default_factory=dict)  # jitted batched losses, by leaf shapes
    # The compiled gradient by its inputs' shapes and dtypes; a Future while XLA compiles it.
    executables: dict = field(default_factory=dict)
    compile_seconds: float = 0.0  # how long XLA took compiling the gradient (in the worker thread)


@dataclass
class _Program:
    """One objective under JAX: its compiled loss, and private device copies of its data."""

    compiled: _Compiled
    arrays: list
    batched: Any = None  # the BatchedLoss, False when the code cannot be batched


#: Compiled losses by (loss, parameter structure, static data): repeated checks of one loss
#: (a test suite, a planted-bug pair) compile once. Small: each entry holds XLA executables.
_CACHE: "OrderedDict[Any, _Compiled]" = OrderedDict()
_CACHE_SIZE = 32
_PROGRAMS: "weakref.WeakKeyDictionary[Objective, _Program]" = weakref.WeakKeyDictionary()


def _compile(objective: Objective, template: tuple) -> _Compiled:
    try:
        key = (_callable_key(objective.loss), objective.treedef, _freeze(template))
    except TypeError:
        key = None  # unhashable static data: compile for this objective only
    cached = _CACHE.get(key) if key is not None else None
    if cached is not None and cached.unchanged():
        _CACHE.move_to_end(key)
        return cached
    # The data's objects (a model passed in args, an activation function) are rebound with the loss.
    fn, unchanged, template = rebind_guarded(objective.loss, namespace(), mapping=_scipy_mapping(),
                                             builtins={"range": _index_range}, data=template, functional_writes=True)
    treedef = objective.treedef

    def loss(leaves: Sequence[Any], arrays: Sequence[Any]) -> Any:
        args, kwargs = _fill(template, arrays)
        return _as_loss(fn(unflatten(treedef, list(leaves)), *args, **kwargs))

    compiled = _Compiled(loss=loss, unchanged=unchanged, owner=objective.loss)
    if key is not None:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def _program(objective: Objective) -> _Program:
    program = _PROGRAMS.get(objective)
    if program is None:
        with float64():
            arrays: list = []
            template = (_split(objective.args, arrays), _split(objective.kwargs, arrays))
        program = _Program(compiled=_compile(objective, template), arrays=arrays)
        _PROGRAMS[objective] = program
    return program


def rebound_loss(objective: Objective) -> tuple[Callable, list]:
    """(loss(leaves, arrays) -> scalar, arrays): the loss re-run under jax.numpy and its data's device
    copies, shared with this reference (the same function while the loss's globals are unchanged)."""
    program = _program(objective)
    return program.compiled.loss, program.arrays


# --- explaining failures -----------------------------------------------------------------------

def _explain(exc: BaseException, text: str, at: str) -> str | None:
    """Why JAX could not run the user's loss, naming the operation and the user's line."""
    if isinstance(exc, (JaxUnsupported, UnseededDraw)):
        return f"{text}{at}"
    if isinstance(exc, TypeError) and ("does not support item assignment" in text or "immutable" in text):
        return (f"in-place assignment into an array{at}: JAX arrays are immutable. gradcheck rewrites "
                f"`name[i] = v` for JAX when `name` is a local variable, but not through an attribute "
                f"(`self.a[i] = v`), into a global's array or in code whose "
                f"source file it cannot read. Work on a local copy (`a = self.a.copy(); a[i] = v`), or "
                f"accept the other references' results")
    if isinstance(exc, jax.errors.TracerBoolConversionError):
        return (f"Python control flow on a value that depends on the parameters{at} (an `if`, `while`, `and`/"
                f"`or` or `max()` on a traced value); use np.where / np.maximum instead")
    if isinstance(exc, (jax.errors.TracerIntegerConversionError, jax.errors.ConcretizationTypeError)):
        return (f"a parameter-dependent value is used where a concrete number is needed{at} (int(), float(), "
                f"range(), a shape or an index): {text}. {SCALAR_REWRITE}")
    if isinstance(exc, jax.errors.TracerArrayConversionError):
        return (f"a parameter-dependent value is passed to plain numpy{at} (np.asarray, a numpy function that "
                f"could not be swapped for jax.numpy, or a library written in numpy)")
    return None


def _unavailable(exc: BaseException) -> ReferenceUnavailable:
    return unavailable("JAX", exc, _explain)


# --- gradients ---------------------------------------------------------------------------------

class _OutOfTime(BaseException):
    """Tracing the loss under JAX ran past its time (a BaseException: the loss's own
    `except Exception` does not swallow it)."""


#: Seconds tracing a loss may take at most (compiling it takes about as long again).
TRACE_SECONDS = 3.0


def _interruptible(code: types.CodeType, cache: dict = {}) -> bool:
    """Whether the deadline may be raised in a frame running `code`: only in the learner's code
    and gradcheck's own (the rebinding the loss runs through). Anywhere else (JAX, the standard
    library, numpy, another installed package) the frame may be a weakref finalizer, `__del__`
    or a gc callback (a test runner's), which would swallow the exception, and CPython would
    then drop the profile hook, leaving the trace unbounded."""
    known = cache.get(code)
    if known is None:
        name = code.co_filename
        ours = not name.startswith("<") and os.path.realpath(name).startswith(PACKAGE_DIR)
        known = cache[code] = code.co_name != "__del__" and (ours or is_user_file(name))
    return known


@dataclass
class _Clock:
    """The deadline of a first run; running op by op (after jit failed) may move it."""

    deadline: float | None


@contextlib.contextmanager
def _traced_until(clock: _Clock) -> Iterator[None]:
    """Stop tracing (JAX runs the learner's Python) once `deadline` passes.

    A loss that loops over elements in Python (`for i in range(N)` with array operations inside)
    makes JAX trace, and then compile, every iteration: thousands of iterations take many
    seconds, and neither can be cut short from outside. The profile hook sees each Python and
    C call while JAX traces and, once the deadline has passed, stops the trace at the next event
    in code outside JAX and the standard library (the learner's loss, or gradcheck's rebinding).
    Under a profiler of the user's own nothing is installed.
    """
    if clock.deadline is None or sys.getprofile() is not None:
        yield
        return
    calls = 0
    late = False

    def watch(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls, late
        calls += 1
        if not late:
            late = not calls & 1023 and time.perf_counter() > clock.deadline  # type: ignore[operator]
        if late and _interruptible(frame.f_code):
            raise _OutOfTime()

    sys.setprofile(watch)
    try:
        yield
    finally:
        sys.setprofile(None)


def _too_slow(seconds: float) -> str:
    return (f"the JAX reference cannot run this loss in time: tracing it under JAX takes more than {seconds:.2g} s "
            f"(its share of the time budget). A Python loop over elements with array operations inside is "
            f"traced, and compiled, iteration by iteration; vectorise the loop, or give the check more time "
            f"(budget=...)")


def _run(program: _Program, leaves: Sequence[Any], trace_seconds: float | None = None,
         eager_seconds: float | None = None) -> tuple[Any, list]:
    """(value, grads) of the loss at float64 leaves, jitted when possible; the first run (which
    traces and compiles) stops after `trace_seconds`, or `eager_seconds` when it must run op by
    op (each operation compiled on its first use, and the loop run in Python)."""
    compiled = program.compiled
    if compiled.too_slow and trace_seconds is not None and trace_seconds <= compiled.too_slow:
        raise ReferenceUnavailable(_too_slow(compiled.too_slow))
    if compiled.first_seconds is None:
        start = time.perf_counter()
        clock = _Clock(None if trace_seconds is None else start + trace_seconds)

        def op_by_op() -> None:
            if trace_seconds is not None:
                clock.deadline = start + max(trace_seconds, eager_seconds or 0.0)

        try:
            with _traced_until(clock):
                out = _gradient(program, leaves, op_by_op, clock)
        except _OutOfTime:
            if _compiling(compiled):  # the trace was done: the deadline passed waiting for XLA
                raise ReferenceUnavailable(_STILL_COMPILING) from None
            compiled.too_slow = float(trace_seconds or 0.0)
            raise ReferenceUnavailable(_too_slow(compiled.too_slow)) from None
        # Compiled in the background by an earlier check, it was still compiled for this loss.
        compiled.first_seconds = max(time.perf_counter() - start, compiled.compile_seconds)
        return out
    return _gradient(program, leaves)


def first_gradient_seconds(objective: Objective) -> float | None:
    """Wall time of the first JAX gradient of this loss, compiling included (None before one)."""
    program = _PROGRAMS.get(objective)
    return None if program is None else program.compiled.first_seconds


def _gradient(program: _Program, leaves: Sequence[Any], op_by_op: Callable[[], None] = lambda: None,
              clock: _Clock | None = None) -> tuple[Any, list]:
    compiled = program.compiled
    vg = jax.value_and_grad(compiled.loss)
    if not compiled.eager:
        if compiled.jitted is None:
            compiled.jitted = jax.jit(vg)
        try:
            return _executable(compiled, leaves, program.arrays, clock)(leaves, program.arrays)
        except _CONCRETIZATION:
            compiled.eager = True
    op_by_op()
    out = compiled.constant.run(vg, leaves, program.arrays)
    if out is not None:
        if not compiled.notes:
            compiled.notes.append("compiled with the data as constants: the loss makes a mask or a shape from its data")
        return out
    if compiled.eager and not any(n.startswith("traced eagerly") for n in compiled.notes):
        compiled.notes.append("traced eagerly (without jit): the loss uses Python control flow or "
                              "shapes that depend on values")
    return vg(leaves, program.arrays)


_COMPILER: list = []  # the one worker thread XLA compiles in (made on first use)
_STILL_COMPILING = ("the JAX reference cannot run this loss in time: XLA compiling its gradient takes longer than its "
                    "share of the time budget; it goes on compiling, and a later check of this loss uses it (or give "
                    "the check more time, budget=...)")


def _compiling(compiled: _Compiled) -> bool:
    """Whether XLA is compiling one of this loss's gradients in the worker thread."""
    from concurrent.futures import Future

    return any(isinstance(found, Future) for found in compiled.executables.values())


def _signature(tree: Any) -> tuple:
    """The structure, shapes and dtypes of a program's inputs: what its executable is compiled for."""
    parts, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in parts)


def _executable(compiled: _Compiled, leaves: Sequence[Any], arrays: Sequence[Any], clock: _Clock | None) -> Callable:
    """The jitted gradient compiled for these inputs. Tracing runs here, under the first run's
    clock; XLA compiles in a worker thread (it releases the GIL) and is waited for until the
    clock's deadline: past it, the reference is unavailable this time, the compilation goes on,
    and a later check of the loss uses it."""
    from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout

    key = _signature((list(leaves), list(arrays)))
    found = compiled.executables.get(key)
    if found is None:
        lowered = compiled.jitted.lower(leaves, arrays)  # type: ignore[union-attr]
        if not _COMPILER:
            _COMPILER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="gradcheck-xla"))

        def compile_timed() -> Any:
            start = time.perf_counter()
            executable = lowered.compile()
            compiled.compile_seconds = time.perf_counter() - start
            return executable

        found = compiled.executables[key] = _COMPILER[0].submit(compile_timed)
    if isinstance(found, Future):
        deadline = None if clock is None else clock.deadline
        try:
            found = found.result(None if deadline is None else max(deadline - time.perf_counter(), 0.0))
        except FutureTimeout:
            raise ReferenceUnavailable(_STILL_COMPILING) from None
        except BaseException:
            del compiled.executables[key]  # not kept: a later check compiles again
            raise
        compiled.executables[key] = found
    return found


#: Data of at most this many elements in all is compiled into the program as constants when
#: the loss cannot be compiled with its data as arguments (see `_with_constant_data`).
CONSTANT_DATA = 1 << 16
_CONSTANT_PROGRAMS = 4


def _constant_key(arrays: Sequence[Any]) -> tuple | None:
    """The data's contents, as the key of a program compiled with them as constants; None when
    the data is too large to be constants (more than CONSTANT_DATA elements)."""
    if sum(int(np.size(a)) for a in arrays) > CONSTANT_DATA:
        return None
    return tuple((tuple(np.shape(a)), str(a.dtype), np.asarray(a).tobytes()) for a in arrays)


@dataclass
class ConstantData:
    """Programs compiled with the data as constants, kept by the data's contents.

    A mask or an index made from the data (`yhat[labels == 1]` with one-hot labels) cannot be
    compiled while the data is a traced argument, and running op by op compiles each
    operation on its first use (seconds on a small network). With the data as constants the
    mask is known when JAX traces, as in numpy (`jax.ensure_compile_time_eval`: operations on
    the data alone run as JAX traces). Serves the JAX reference and blame's adjoint pass.
    """

    programs: "OrderedDict[tuple, Callable]" = field(default_factory=OrderedDict)
    fails: bool = False  # jit fails even with the data known (control flow on the parameters)

    def run(self, fn: Callable, params: Any, arrays: Sequence[Any], tracing: Callable[[], None] | None = None
            ) -> Any:
        """fn(params, arrays) compiled with `arrays` as constants, or None for large data or where
        that does not compile either; `tracing()` is called before a new program is traced."""
        key = _constant_key(arrays)
        if self.fails or key is None:
            return None
        program = self.programs.get(key)
        if program is not None:
            self.programs.move_to_end(key)
            return program(params)

        def with_constants(p: Any) -> Any:
            with jax.ensure_compile_time_eval():  # what depends on the data alone is computed as JAX traces
                return fn(p, arrays)

        program = jax.jit(with_constants)
        if tracing is not None:
            tracing()
        try:
            out = program(params)
        except _CONCRETIZATION:
            self.fails = True
            return None
        self.programs[key] = program
        while len(self.programs) > _CONSTANT_PROGRAMS:
            self.programs.popitem(last=False)
        return out


def jax_value_and_grad(objective: Objective, leaves: Sequence[np.ndarray] | None = None,
                       trace_seconds: float | None = None,
                       eager_seconds: float | None = None) -> tuple[float, list[np.ndarray]]:
    """The loss and its full gradient (float64, one array per leaf) at `leaves` (default: x0);
    a first run stops tracing after `trace_seconds` (ReferenceUnavailable)."""
    program = _program(objective)
    leaves = objective.x0 if leaves is None else leaves
    with float64():
        inputs = [_device_copy(x, np.float64) for x in leaves]
        try:
            value, grads = _run(program, inputs, trace_seconds, eager_seconds)
        except ReferenceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - anything JAX cannot run is a reference limitation
            raise _unavailable(exc) from exc
        out = [np.array(g, dtype=np.float64).reshape(np.shape(x)) for g, x in zip(grads, leaves)]
        return float(value), out


def jax_full_gradient(objective: Objective, leaves: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """The full gradient (every element of every leaf) by jax.grad, float64."""
    return jax_value_and_grad(objective, leaves)[1]


def jax_gradient(objective: Objective, selection: Sequence[np.ndarray], *, f0: float | None = None,
                 trace_seconds: float | None = None, eager_seconds: float | None = None) -> ReferenceGradient:
    """The JAX reference at objective.x0, reported on the selected flat indices of each leaf.

    `f0`, the numpy loss at x0 if the caller has it, spares one loss call: the JAX value is
    compared with it to make sure the re-run computes the same loss. Tracing the loss (the
    first time) stops after `trace_seconds` (`eager_seconds` when it must run op by op).
    """
    start = time.perf_counter()
    value, grads = jax_value_and_grad(objective, trace_seconds=trace_seconds, eager_seconds=eager_seconds)
    expected = objective(objective.x0) if f0 is None else f0
    if not abs(value - expected) <= VALUE_RTOL * abs(expected) + VALUE_ATOL:
        raise ReferenceUnavailable(
            f"the JAX reference cannot run this loss: re-run under jax.numpy it gives {value!r}, but your "
            f"numpy code gives {expected!r}. The loss depends on something the re-run does not see the same "
            f"way (global state, a numpy call that was not swapped, float32 casts)")
    values, errors, checked = [], [], []
    rounding = ROUNDING * max(EPS, objective.eps)
    for g, sel in zip(grads, selection):
        mask = np.zeros(g.shape, dtype=bool)
        mask.reshape(-1)[np.asarray(sel, dtype=np.int64)] = True
        finite = np.abs(g[np.isfinite(g)])
        scale = float(finite.max()) if finite.size else 0.0
        values.append(np.where(mask, g, np.nan))
        errors.append(np.where(mask, rounding * (np.abs(g) + scale), np.inf))
        checked.append(mask)
    notes = tuple(_program(objective).compiled.notes)
    return ReferenceGradient(name="jax", method="autodiff (jax.grad)", values=tuple(values), errors=tuple(errors),
                             checked=tuple(checked), notes=notes, seconds=time.perf_counter() - start, exact=True)


#: Bytes of parameter copies one batched call may hold (rows x parameters x 8): a few MB keeps
#: the rows in cache, which matters more than fewer calls once a row costs microseconds.
BATCH_BYTES = 4 << 20
MIN_ROWS, MAX_ROWS = 8, 1024


@dataclass
class BatchedLoss:
    """The loss at many copies of x0, each with one element set to a new value, in jitted batches.

    `batched(index, values)[r]` is the loss with flat element `index[r]` of the concatenated
    leaves (leaf k starts at `offsets[k]`) set to `values[r]`, everything else at x0. It runs
    the loss as re-run under jax.numpy, in calls of `rows` rows; `f0` is that loss at x0 and
    `seconds_per_row` the measured cost of one row once compiled.
    """

    offsets: tuple
    rows: int
    f0: float
    seconds_per_row: float
    fn: Callable
    x0: Any
    arrays: list

    def __call__(self, index: np.ndarray, values: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        pending = []
        with float64():
            for start in range(0, index.size, self.rows):  # dispatch every chunk, then collect
                idx, val = index[start:start + self.rows], values[start:start + self.rows]
                pad = self.rows - idx.size
                if pad:
                    idx = np.concatenate([idx, np.zeros(pad, np.int64)])
                    val = np.concatenate([val, np.full(pad, float(self.x0[0]))])
                pending.append(self.fn(idx, val, self.x0, self.arrays))
            out = [np.asarray(p, dtype=np.float64) for p in pending]
        return np.concatenate(out)[:index.size] if out else np.zeros(0)


def _leaf_bounds(shapes: tuple) -> np.ndarray:
    """Where each leaf starts in the concatenated flat vector, and (last entry) its length."""
    return np.cumsum([0] + [int(np.prod(s)) for s in shapes])


def _batched_fn(compiled: _Compiled, shapes: tuple) -> Callable:
    """jit(vmap(...)) of the loss at x0 with one flat element set, compiled once per leaf structure."""
    fn = compiled.batched.get(shapes)
    if fn is None:
        bounds = _leaf_bounds(shapes)

        def one(index: Any, value: Any, x0: Any, arrays: Sequence[Any]) -> Any:
            x = x0.at[index].set(value)
            return compiled.loss([x[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)], arrays)

        fn = compiled.batched[shapes] = jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))
    return fn


#: Timed batch calls; the fastest is the cost (one call can be slowed by anything else running).
TIMINGS = 3


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def batch_compiled(objective: Objective) -> bool:
    """Whether an earlier check compiled this loss's batched form (building it again costs only
    its timing, a few calls): nothing is compiled here."""
    program = _PROGRAMS.get(objective)
    if program is None or program.batched is False:
        return False
    return program.compiled.batched.get(tuple(np.shape(x) for x in objective.x0)) is not None


def batched_loss(objective: Objective) -> BatchedLoss | None:
    """The loss at one-element perturbations of x0, evaluated in jitted batches, or None.

    None when the loss cannot be traced under jit and vmap (Python control flow on values,
    in-place assignment, ...): the caller then calls the numpy loss once per point. Building
    it compiles the batch and times one call.
    """
    program = _program(objective)
    if program.batched is not None:
        return program.batched or None
    compiled = program.compiled
    shapes = tuple(np.shape(x) for x in objective.x0)
    flat = np.concatenate([np.ravel(x) for x in objective.x0])
    if compiled.eager or flat.size == 0 or (shapes in compiled.batched and compiled.batched[shapes] is None):
        program.batched = False
        return None
    rows = int(np.clip(BATCH_BYTES // (8 * flat.size), MIN_ROWS, MAX_ROWS))
    rows = 1 << (rows.bit_length() - 1)  # a power of two
    fn = _batched_fn(compiled, shapes)
    index, values = np.zeros(rows, np.int64), np.full(rows, flat[0])
    try:
        with float64():
            x0 = _device_copy(flat)
            first = np.asarray(fn(index, values, x0, program.arrays))  # compiles
            per_row = min(_seconds(lambda: np.asarray(fn(index, values, x0, program.arrays)))
                          for _ in range(TIMINGS)) / rows
    except Exception:  # noqa: BLE001 - any failure means "not batchable"; callers fall back
        program.batched = False
        compiled.batched[shapes] = None  # not tried again for this loss
        return None
    offsets = tuple(int(b) for b in _leaf_bounds(shapes)[:-1])
    program.batched = BatchedLoss(offsets=offsets, rows=rows, f0=float(first[0]), seconds_per_row=per_row,
                                  fn=fn, x0=x0, arrays=program.arrays)
    return program.batched
