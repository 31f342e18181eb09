"""Run a learner's plain-numpy function under another array namespace (jax.numpy, symbolic numpy).

`rebind(fn, namespace)` returns a copy of `fn` whose global names resolve the numpy module
(`np`, `numpy`), numpy submodules (`np.linalg`), numpy functions imported by name
(`from numpy import exp`) and the `math` module's elementwise functions to `namespace`.
Helpers the function reaches are copied the same way: module-level functions of the user's
code, functions in closures, bound methods (re-bound to a copy of `self` whose class has
rebound methods), the user's classes (a rebound subclass, for which isinstance and issubclass
answer as for the original: `cost.fn(a, y)` with a cost class in a closure or on `self`),
the user's objects in globals, closures and attributes (shallow copies of the rebound
class: `net.forward(x)` on a global `net`), `functools.partial` objects and the user's own
modules. The copies get new globals dicts; the user's modules, classes, functions and
objects are never modified (a class's own `__init_subclass__` hook does run for its rebound
subclass).

A function with a parameter named `xp` is taken to choose its namespace itself: it is called
with `xp=namespace` instead of being rebound.

The arguments the function is called with are rebound too when given as `data`. What is
not reached: functions stored in containers (other than the arguments), and library code
(site-packages, the standard library), which is left as it is. The copies read the user's
globals as they were when rebound; `rebind_guarded` says when that is stale.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import inspect
import math
import sys
import types
from typing import Any, Callable

import numpy as np

from ..tree import map_data
from .frames import is_user_code, is_user_file


#: math functions that have a numpy namesake, so a `math.exp(w)` on a parameter can be traced.
MATH_NAMES = ("exp", "log", "log1p", "expm1", "sqrt", "tanh", "sinh", "cosh", "sin", "cos", "tan",
              "atan", "asin", "acos", "atan2", "hypot", "fabs", "pow")
_MATH_TO_NUMPY = {"fabs": "abs", "pow": "power", "atan": "arctan", "asin": "arcsin", "acos": "arccos",
                  "atan2": "arctan2"}
#: numpy submodules whose functions are looked up in the namespace's submodule of the same name.
SUBMODULES = ("linalg", "random", "fft")


@functools.lru_cache(maxsize=1)
def _numpy_index() -> dict[int, tuple[str, tuple[str, ...]]]:
    """id(numpy object) -> (submodule, names it is known by) for numpy's public callables."""
    import builtins
    import warnings

    python_builtins = {id(v) for v in vars(builtins).values()}
    index: dict[int, tuple[str, list[str]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = {sub: getattr(np, sub) for sub in SUBMODULES}  # loads them into vars(np)
    for sub, module in {"": np, **modules}.items():
        # vars(), not dir() + getattr(): lazily loaded submodules (np.testing) stay unloaded.
        for name, obj in list(vars(module).items()):
            if name.startswith("_") or id(obj) in python_builtins:
                continue
            if isinstance(obj, types.ModuleType) or callable(obj):
                entry = index.setdefault(id(obj), (sub, []))
                if entry[0] == sub:
                    entry[1].append(name)
    return {key: (sub, tuple(names)) for key, (sub, names) in index.items()}


class _Missing:
    """Stands for a numpy function the namespace lacks: using it raises the namespace's error."""

    def __init__(self, namespace: Any, path: str) -> None:
        self._namespace, self._path = namespace, path

    def _resolve(self) -> Any:
        target = self._namespace
        for part in self._path.split("."):
            target = getattr(target, part)  # raises the namespace's own AttributeError
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)


_MISSING = object()
#: Error texts of an index, slice bound or length computed from a parameter-dependent value.
INDEX_ERRORS = ("Slice entries must be static", "indices must be integers", "cannot be interpreted as an integer")
INDEX_REWRITE = ("an index, slice bound or length is computed from a value that depends on the parameters "
                 "(int(...) of it, or the value itself); a derivative cannot follow it: take it from the data "
                 "(len(y), X.shape[0]) or compute it with np.where / a mask")
#: The way out when a scalar conversion of a traced value could not be followed.
SCALAR_REWRITE = ("float(x), int(x) and x.item() on the loss's value are followed only in functions whose source "
                  "file can be read (not in exec'd strings); there, return the value itself "
                  "(`return np.sum(...)`, not `return float(np.sum(...))`), and take shapes, indices and "
                  "range() bounds from the data, not from the parameters")
#: Values rebound code sees as they are (the fast path of Rebinder.convert).
_ATOMS = frozenset({float, int, bool, str, bytes, complex, type(None), np.ndarray, np.float64, np.int64})
#: Lists and dicts longer than this are not copied for the re-run (data, not model state).
CONTAINER_LIMIT = 4096


class _Items:
    """The items of a list, dict or SimpleNamespace when it was copied, to tell if it changed since."""

    def __init__(self, value: Any) -> None:
        self.items = list(_item_pairs(value))
        # The values of its arrays, to tell an equal array put in their place since.
        self.arrays = {k: v.copy() for k, v in self.items if isinstance(v, np.ndarray) and v.dtype.kind in "biufc"}

    def same(self, value: Any) -> bool:
        now = list(_item_pairs(value))
        return len(now) == len(self.items) and all(k1 == k2 and v1 is v2 for (k1, v1), (k2, v2)
                                                    in zip(now, self.items))


def _item_pairs(value: Any) -> Any:
    if isinstance(value, list):
        return enumerate(value)
    return (value if isinstance(value, dict) else vars(value)).items()


_NUMBERS = (float, int, bool, complex)


def _equal_number(a: Any, b: Any) -> bool:
    return type(a) is type(b) and type(a) in _NUMBERS and a == b


def _equal_array(current: Any, copy: np.ndarray) -> bool:
    return (type(current) is np.ndarray and current.dtype == copy.dtype and current.shape == copy.shape
            and np.array_equal(current, copy, equal_nan=copy.dtype.kind in "fc"))


def _equal_state(current: Any, value: Any, copy: Any) -> bool:
    """Whether `current`, another object than the `value` the copies were built from, holds the
    same thing: an equal Python number, an equal array of the same dtype, or a list or dict of
    the same items (each the same object, an equal number or an equal array: a net's
    `self.params = params`, set back to the caller's parameters after each check)."""
    if _equal_number(current, value):
        return True
    if isinstance(copy, np.ndarray):
        return _equal_array(current, copy)
    if isinstance(copy, _Items) and type(current) is type(value):
        now = list(_item_pairs(current))
        return len(now) == len(copy.items) and all(
            k1 == k2 and (v1 is v2 or _equal_number(v1, v2)
                          or (k2 in copy.arrays and _equal_array(v1, copy.arrays[k2])))
            for (k1, v1), (k2, v2) in zip(now, copy.items))
    return False


class _ModuleProxy(types.ModuleType):
    """One of the user's modules as rebound code sees it: attributes are read from (and written
    to) the rebound globals its functions share, so `module.w = p["w"]` reaches `module.forward`."""

    def __init__(self, rebinder: "Rebinder", module: types.ModuleType) -> None:
        super().__init__(module.__name__, module.__doc__)
        self.__dict__["_gradcheck_source"] = (rebinder, module)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__") and attr not in ("__file__", "__all__"):
            raise AttributeError(attr)
        rebinder, module = self.__dict__["_gradcheck_source"]
        return rebinder.module_attribute(module, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        rebinder, module = self.__dict__["_gradcheck_source"]
        rebinder.module_write(module, attr, value)

    def __delattr__(self, attr: str) -> None:
        rebinder, module = self.__dict__["_gradcheck_source"]
        rebinder.module_write(module, attr, None, delete=True)


class Rebinder:
    """One rebinding: the namespace, the identity mapping, and a memo shared by all copies."""

    def __init__(self, namespace: Any, mapping: dict | None = None, builtins: dict | None = None,
                 functional_writes: bool = False) -> None:
        self.namespace = namespace
        self.functional_writes = functional_writes  # see gradcheck.writes
        self.builtins = dict(builtins or {})
        self.mapping = {id(k): v for k, v in (mapping or {}).items()}
        self._keep = list((mapping or {}).keys())  # keep ids stable while the memo lives
        self.memo: dict[int, Any] = {id(np): namespace}
        self.globals_memo: dict[int, dict] = {}
        self.user_globals: set[int] = set()
        # (globals dict, attribute dict or cell, name, value seen, a copy of it if an array)
        self.reads: list[tuple[Any, str, Any, Any]] = []
        # (id of rebound globals, name) -> (those globals, value before the run's first write)
        self.writes: dict[tuple[int, str], tuple[dict, Any]] = {}

    # -- values ------------------------------------------------------------------------------

    def convert(self, value: Any, name: str = "") -> Any:
        """The value as it should be seen by rebound code."""
        if type(value) in _ATOMS:
            return value
        key = id(value)
        if key in self.memo:
            return self.memo[key]
        if key in self.mapping:
            return self.mapping[key]
        if value is math:
            return self._math_module()
        replacement = self._convert_new(value, name)
        if replacement is not value:
            self._keep.append(value)
            self.memo[key] = replacement
        return replacement

    def _convert_new(self, value: Any, name: str) -> Any:
        numpy_entry = _numpy_index().get(id(value))
        if numpy_entry is not None:
            return self._numpy_object(value, *numpy_entry, name)
        if isinstance(value, types.FunctionType):
            # The user's own code, or a helper living beside a function already rebound.
            if is_user_code(value) or id(value.__globals__) in self.user_globals:
                return self.function(value)
            return value
        if isinstance(value, types.BuiltinFunctionType) and getattr(value, "__self__", None) is math:
            return self._math_function(value)
        if isinstance(value, types.MethodType):
            return self.method(value)
        if isinstance(value, functools.partial):
            return functools.partial(self.convert(value.func), *map(self.convert, value.args),
                                     **{k: self.convert(v) for k, v in value.keywords.items()})
        if isinstance(value, types.ModuleType) and _is_user_module(value):
            return self._module_proxy(value)
        if isinstance(value, type) and _is_user_class(value):
            return self.cls(value)
        if _is_user_class(type(value)):
            return self.instance(value)  # a model object in a global, a closure or an attribute
        if type(value) in (list, dict, tuple, types.SimpleNamespace):
            return self.container(value)
        return value

    def container(self, value: Any) -> Any:
        """A list, dict or SimpleNamespace as rebound code sees it: a copy (writes into it stay
        in the re-run) holding converted items (`layer.neurons`, a list of Neuron objects).
        Long containers (a data set held as lists) stay as they are."""
        if len(value if not isinstance(value, types.SimpleNamespace) else vars(value)) > CONTAINER_LIMIT:
            return value
        if type(value) is tuple:
            items = tuple(self.convert(v) for v in value)
            return value if all(a is b for a, b in zip(items, value)) else items
        clone = copy.copy(value)
        self._keep.append(value)
        self.memo[id(value)] = clone  # before the items: a container may hold itself
        if isinstance(value, list):
            clone[:] = [self.convert(v) for v in value]
        else:
            target = clone if isinstance(clone, dict) else vars(clone)
            for key, item in list(target.items()):
                target[key] = self.convert(item, key if isinstance(key, str) else "")
        return clone

    def _numpy_object(self, value: Any, sub: str, names: tuple, name: str) -> Any:
        attr = name if name in names else names[0]
        path = f"{sub}.{attr}" if sub else attr
        try:
            return _resolve(self.namespace, path)
        except AttributeError:
            # A dtype or class the namespace lacks stays numpy's; a function or module
            # raises the namespace's own error when it is used (at the user's line).
            return value if isinstance(value, type) else _Missing(self.namespace, path)

    def _math_function(self, value: Any) -> Any:
        name = value.__name__
        if name not in MATH_NAMES:
            return value
        try:
            return getattr(self.namespace, _MATH_TO_NUMPY.get(name, name))
        except AttributeError:
            return value

    def _math_module(self) -> types.ModuleType:
        proxy = types.ModuleType("math", "math, with elementwise functions from the array namespace")
        proxy.__dict__.update({k: v for k, v in vars(math).items() if not k.startswith("__")})
        for name in MATH_NAMES:
            proxy.__dict__[name] = self._math_function(getattr(math, name))
        self.memo[id(math)] = proxy
        return proxy

    def _module_proxy(self, module: types.ModuleType) -> types.ModuleType:
        proxy = _ModuleProxy(self, module)
        self.memo[id(module)] = proxy
        self.user_globals.add(id(vars(module)))
        return proxy

    def module_attribute(self, module: types.ModuleType, attr: str) -> Any:
        """`module.attr` as rebound code sees it: the rebound globals of that module, where the
        functions rebound from it read their globals and where writes through the proxy land."""
        namespace = self._globals(vars(module))
        value = namespace.get(attr, _MISSING)
        if value is _MISSING:
            return self.convert(getattr(module, attr), attr)  # a module-level __getattr__ (PEP 562)
        if value is vars(module).get(attr, _MISSING):  # not converted or written yet
            self._read(vars(module), attr, value)
            value = namespace[attr] = self.convert(value, attr)
        return value

    def module_write(self, module: types.ModuleType, attr: str, value: Any, delete: bool = False) -> None:
        """`module.attr = value` in rebound code: into the rebound globals, never the user's module."""
        namespace = self._globals(vars(module))
        self.writes.setdefault((id(namespace), attr), (namespace, namespace.get(attr, _MISSING)))
        if delete:
            namespace.pop(attr, None)
        else:
            namespace[attr] = value

    def begin_run(self) -> None:
        """Undo the previous run's writes into modules: each run starts from the user's state."""
        for (_, attr), (namespace, before) in self.writes.items():
            if before is _MISSING:
                namespace.pop(attr, None)
            else:
                namespace[attr] = before
        self.writes.clear()

    # -- callables ---------------------------------------------------------------------------

    def function(self, fn: types.FunctionType) -> types.FunctionType:
        """A copy of fn with rebound globals, closure cells and defaults (memoized: recursion works)."""
        if id(fn) in self.memo:
            return self.memo[id(fn)]
        self.user_globals.add(id(fn.__globals__))
        new_globals = self._globals(fn.__globals__)
        code = self._code(fn.__code__, new_globals)
        freevars = code.co_freevars
        cells = tuple(types.CellType() for _ in freevars) if fn.__closure__ else None
        clone = types.FunctionType(code, new_globals, fn.__name__, None, cells)
        self._keep.append(fn)
        self.memo[id(fn)] = clone
        clone.__defaults__ = tuple(self.convert(d) for d in fn.__defaults__) if fn.__defaults__ else None
        clone.__kwdefaults__ = ({k: self.convert(v) for k, v in fn.__kwdefaults__.items()}
                                if fn.__kwdefaults__ else None)
        for attr in ("__module__", "__qualname__", "__doc__", "__annotations__"):
            setattr(clone, attr, getattr(fn, attr))
        clone.__dict__.update(fn.__dict__)
        originals = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
        for name, new in zip(freevars, cells or ()):
            old = originals[name]
            try:
                contents = old.cell_contents
            except ValueError:  # an empty cell (a name not yet assigned in the outer function)
                continue
            # `__class__` is the zero-argument super() cell: it must stay the original class.
            new.cell_contents = contents if name == "__class__" else self.convert(contents, name)
            self._read(old, "", contents)
        for name in _global_names(code):
            if name in fn.__globals__:
                value = fn.__globals__[name]
                # Already converted, or written by rebound code (`module.w = p["w"]`): kept.
                current = new_globals.get(name, _MISSING)
                if current is value or current is _MISSING:
                    self._read(fn.__globals__, name, value)
                    new_globals[name] = self.convert(value, name)
            elif name in self.builtins:  # a builtin the namespace needs replaced, e.g. range
                new_globals[name] = self.builtins[name]
        return clone

    def _code(self, code: types.CodeType, new_globals: dict) -> types.CodeType:
        """The code the copy runs: with assignments into arrays made functional if asked."""
        if not self.functional_writes:
            return code
        from .rewrite import functional_code, helpers

        rewritten = functional_code(code)
        if rewritten is None:
            return code
        new_globals.update(helpers())
        return rewritten

    def unchanged(self) -> bool:
        """Whether every global, closure value and attribute the copies were built from still
        holds what it held: the same object, or (state a loss sets from its parameters, such as
        `neuron.weights = ws[:2]`, settled back at the same point) an equal number, list or array;
        and every array or list among them still the same values."""
        for source, name, value, copy in self.reads:
            try:
                current = source.cell_contents if isinstance(source, types.CellType) else source[name]
            except (KeyError, ValueError):
                return False
            if current is not value and not _equal_state(current, value, copy):
                return False
            if isinstance(copy, _Items):
                if not copy.same(value):
                    return False
            elif copy is not None and not np.array_equal(value, copy, equal_nan=value.dtype.kind in "fc"):
                return False  # written in place: the copies (and what JAX compiled) hold the old values
        return True

    def _read(self, source: Any, name: str, value: Any) -> None:
        """Remember a value the copies were built from, to tell later whether it changed."""
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            copy = value.copy()
        elif type(value) in (list, dict, types.SimpleNamespace):
            copy = _Items(value)  # the copies hold its items as they were
        else:
            copy = None
        self.reads.append((source, name, value, copy))

    def _globals(self, original: dict) -> dict:
        key = id(original)
        if key not in self.globals_memo:
            self.globals_memo[key] = dict(original)  # a snapshot: the user's dict is never written
        return self.globals_memo[key]

    def method(self, bound: types.MethodType) -> Any:
        """A bound method of user code, re-bound to a copy of self whose class is rebound too."""
        func = bound.__func__
        if not isinstance(func, types.FunctionType) or not is_user_code(func):
            return bound
        owner = bound.__self__
        if isinstance(owner, type):  # a classmethod
            return types.MethodType(self.function(func), self.cls(owner))
        return types.MethodType(self.function(func), self.instance(owner))

    def cls(self, klass: type) -> type:
        """A subclass of a user class whose methods are rebound (the original is untouched).

        Each user base gets its own rebound subclass, placed right after the original in the
        MRO, so `super().method()` also reaches rebound code: Sub' -> Sub -> Base' -> Base.
        """
        if id(klass) in self.memo:
            return self.memo[id(klass)]
        self._keep.append(klass)
        self.memo[id(klass)] = klass  # reached again while its bases are rebound: stays itself
        originals = [b for b in klass.__bases__ if b is not object and _is_user_class(b)]
        bases = tuple(r for r in map(self.cls, originals) if r not in originals)
        body: dict[str, Any] = {"__slots__": (), "__module__": klass.__module__, "__doc__": klass.__doc__,
                                "__rebound_from__": klass}
        meta = _rebound_metaclass(type(klass))
        sub = None
        # The second try rebinds this class's own methods only (an MRO, layout or metaclass
        # conflict with the rebound bases); a class that cannot be subclassed (an Enum) stays itself.
        for parents in ((klass, *bases), (klass,)):
            try:
                sub = meta(klass.__name__, parents, dict(body))
                break
            except Exception:  # noqa: BLE001 - whatever the class's own machinery raises
                continue
        if sub is None:
            return klass
        sub.__qualname__ = klass.__qualname__
        self.memo[id(klass)] = sub
        # After the memo entry: methods that name their own class (`Cost.fn(...)`) get the copy.
        for attr, raw in list(vars(klass).items()):
            if attr not in body and attr not in ("__dict__", "__weakref__"):
                converted = self._class_attribute(raw)
                if converted is not raw:
                    setattr(sub, attr, converted)
        return sub

    def _class_attribute(self, raw: Any) -> Any:
        if isinstance(raw, types.FunctionType):
            return self.convert(raw)
        if isinstance(raw, staticmethod):
            return staticmethod(self.convert(raw.__func__))
        if isinstance(raw, classmethod):
            return classmethod(self.convert(raw.__func__))
        if isinstance(raw, property):
            fget, fset, fdel = (self.convert(f) if f is not None else None for f in (raw.fget, raw.fset, raw.fdel))
            return property(fget, fset, fdel, raw.__doc__)
        return raw

    def instance(self, obj: Any) -> Any:
        """A shallow copy of a user object, of the rebound subclass (or the object if that fails)."""
        if id(obj) in self.memo:
            return self.memo[id(obj)]
        if not _is_user_class(type(obj)):
            return obj
        rebound = self.cls(type(obj))
        if rebound is type(obj):  # a class that could not be rebound (an Enum member stays itself)
            return obj
        try:
            clone: Any = object.__new__(rebound)
        except TypeError:  # a subclass of a builtin type (list, dict): copy it, then retype the copy
            try:
                clone = copy.copy(obj)
                clone.__class__ = rebound  # allowed: the rebound subclass adds no slots
            except Exception:  # noqa: BLE001 - an object that cannot be copied is used as it is
                return obj
        self._keep.append(obj)
        self.memo[id(obj)] = clone  # before converting attributes: an attribute may point back to obj
        try:
            self._copy_state(obj, clone)
        except Exception:  # noqa: BLE001 - an object that resists copying is used as it is
            self.memo[id(obj)] = obj
            return obj
        return clone

    def _copy_state(self, obj: Any, clone: Any) -> None:
        """obj's attributes onto clone, functions and classes among them rebound; writes go
        around the class's own __setattr__ (a frozen class) as copy.copy's do."""
        if hasattr(obj, "__dict__"):
            attributes = vars(obj)
            for key, value in list(attributes.items()):
                self._read(attributes, key, value)
                clone.__dict__[key] = self.convert(value, key)  # a new dict: writes stay on the copy
        for klass in type(obj).__mro__:
            slots = vars(klass).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                    object.__setattr__(clone, slot, self.convert(getattr(obj, slot), slot))

    def data(self, tree: Any) -> Any:
        """The loss's other arguments as the rebound code should see them."""
        return map_data(tree, self.convert)

    def callable(self, fn: Any) -> Any:
        """Rebind the function the user handed over, wherever it is defined, and what it reaches."""
        if isinstance(fn, types.FunctionType):
            self.user_globals.add(id(fn.__globals__))
            return self.function(fn)
        if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
            owner = fn.__self__
            owner = self.cls(owner) if isinstance(owner, type) else self.instance(owner)
            return types.MethodType(self.callable(fn.__func__), owner)
        if isinstance(fn, functools.partial):
            return functools.partial(self.callable(fn.func), *map(self.convert, fn.args),
                                     **{k: self.convert(v) for k, v in fn.keywords.items()})
        if not isinstance(fn, type) and isinstance(getattr(type(fn), "__call__", None), types.FunctionType):
            return self.instance(fn)  # a callable object: its class's __call__ is rebound
        return self.convert(fn)


@functools.lru_cache(maxsize=None)
def _rebound_metaclass(meta: type) -> type:
    """`meta`, with isinstance and issubclass against a rebound class answered for its original.

    Objects the rebound code receives (in args) are instances of the user's class, not of
    its rebound copy: `isinstance(layer, Dense)` must stay true for them.
    """
    base: Any = meta  # typeshed reads meta.__instancecheck__ as bound to meta; on a class it is unbound

    def __instancecheck__(cls: Any, obj: Any) -> bool:
        original = vars(cls).get("__rebound_from__")
        return isinstance(obj, original) if original is not None else base.__instancecheck__(cls, obj)

    def __subclasscheck__(cls: Any, sub: Any) -> bool:
        original = vars(cls).get("__rebound_from__")
        return issubclass(sub, original) if original is not None else base.__subclasscheck__(cls, sub)

    return type(f"Rebound{meta.__name__}", (meta,), {"__instancecheck__": __instancecheck__,
                                                     "__subclasscheck__": __subclasscheck__})


def _resolve(namespace: Any, path: str) -> Any:
    target = namespace
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _global_names(code: types.CodeType) -> set[str]:
    """Every name the code (and the functions and comprehensions nested in it) may look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _is_user_module(module: types.ModuleType) -> bool:
    filename = getattr(module, "__file__", None)
    return bool(filename) and is_user_file(filename)


def _is_user_class(klass: type) -> bool:
    module = sys.modules.get(klass.__module__)
    if module is None:
        return False
    if klass.__module__ == "__main__":
        return True
    return _is_user_module(module)


def takes_xp(fn: Callable) -> bool:
    """Whether fn has a parameter named `xp` (it picks its array namespace itself)."""
    try:
        return "xp" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def rebind(fn: Callable, namespace: Any, *, mapping: dict | None = None,
           builtins: dict | None = None, data: Any = None, functional_writes: bool = False) -> Any:
    """A copy of `fn` that runs with its numpy replaced by `namespace` (see the module docstring).

    `mapping` adds identity replacements {original object: replacement}, e.g. a scipy function
    and its JAX counterpart; `builtins` replaces builtin names the user's code uses (JAX needs
    `range(n)` as an array to index with it). Functions with an `xp` parameter get
    `xp=namespace` instead. With `data` (the other arguments fn will be called with: nested
    tuples, lists and dicts), returns (copy, data rebound the same way): the user's objects,
    classes and functions in it are copied and rebound; arrays and other values stay as they are.
    `functional_writes` recompiles the user's functions so that `a[i] = v` also works on
    immutable arrays (see gradcheck.writes).
    """
    out = rebind_guarded(fn, namespace, mapping=mapping, builtins=builtins, data=data,
                         functional_writes=functional_writes)
    return out[0] if data is None else (out[0], out[2])


def rebind_guarded(fn: Callable, namespace: Any, *, mapping: dict | None = None,
                   builtins: dict | None = None, data: Any = None, functional_writes: bool = False) -> tuple:
    """`rebind`, plus a check that the user's globals and closures it copied are unchanged:
    (copy, check), or (copy, check, rebound data) when `data` is given.

    Callers that cache the copy (and what JAX compiled from it) call the check before reuse:
    a module constant reassigned since (`REG = 0.2`) makes the cached copy stale.
    """
    if takes_xp(fn):
        out: tuple = (functools.partial(fn, xp=namespace), lambda: True)
        return out if data is None else (*out, data)
    rebinder = Rebinder(namespace, mapping, builtins, functional_writes)
    out = (_runner(rebinder, rebinder.callable(fn)), rebinder.unchanged)
    return out if data is None else (*out, rebinder.data(data))


class UnseededDraw(AttributeError):
    """A re-run's loss draws from numpy's global generator without having fixed its seed."""

    def __init__(self, op: str) -> None:
        self.op = op
        super().__init__(f"numpy function np.random.{op} draws random numbers inside the loss without a fixed "
                         f"seed, so the draws differ from those of the run being checked; call np.random.seed(0) "
                         f"at the top of the loss (or draw them outside and pass them in args)")


#: Whether the loss running now has fixed the global generator's seed (reset per run).
_SEEDED: contextvars.ContextVar[bool] = contextvars.ContextVar("gradcheck_seeded", default=False)
#: np.random names that make a generator: seeded only when given a seed.
_GENERATORS = ("default_rng", "RandomState", "Generator", "PCG64", "MT19937", "SeedSequence")


class SeededRandom(types.ModuleType):
    """np.random for a re-run: numpy's own draws (they do not depend on the parameters, so they
    are constants to the derivative), once the loss has fixed the seed (`np.random.seed(0)`)
    or from a generator given a seed (`np.random.default_rng(0)`); other draws raise UnseededDraw."""

    def __init__(self) -> None:
        super().__init__("numpy.random", __doc__)

    def __getattr__(self, name: str) -> Any:
        target = getattr(np.random, name)
        if name.startswith("_") or not callable(target) or name in ("get_state", "set_state"):
            return target
        if name == "seed":
            return _seed
        if name in _GENERATORS:
            return functools.partial(_generator, target, name)
        return functools.partial(_draw, target, name)


def _seed(seed: Any = None) -> None:
    np.random.seed(seed)
    _SEEDED.set(seed is not None)


def _generator(make: Callable, name: str, *args: Any, **kwargs: Any) -> Any:
    if not args and kwargs.get("seed") is None and name != "Generator":
        raise UnseededDraw(f"{name}()")
    return make(*args, **kwargs)


def _draw(draw: Callable, name: str, *args: Any, **kwargs: Any) -> Any:
    if not _SEEDED.get():
        raise UnseededDraw(name)
    return draw(*args, **kwargs)


def _runner(rebinder: Rebinder, clone: Callable) -> Callable:
    """The rebound function, run from the user's state each time, numpy's global random state
    left as it was (draws inside the loss are taken from numpy: they are constants to a derivative)."""
    def run(*args: Any, **kwargs: Any) -> Any:
        rebinder.begin_run()
        state, token = np.random.get_state(), _SEEDED.set(False)
        try:
            return clone(*args, **kwargs)
        finally:
            np.random.set_state(state)
            _SEEDED.reset(token)

    run.__wrapped__ = clone  # type: ignore[attr-defined]
    return run


