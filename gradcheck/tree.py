"""Flatten parameter pytrees (dicts, lists, tuples, scalars, arrays) to named leaves and back."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InvalidCase, StructureMismatch

_CONTAINERS = (dict, list, tuple)


@dataclass(frozen=True)
class TreeDef:
    """The shape of a pytree: its containers, and for each leaf its path."""

    kind: str  # "leaf", "dict", "list", "tuple", "dataclass"
    keys: tuple = ()
    children: tuple = ()
    scalar: bool = False  # a Python scalar leaf (returned as float, not 0-d array)
    cls: Any = None  # a namedtuple's or a dataclass's type, rebuilt as such for the user's code

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(child.num_leaves for child in self.children)


def _join(prefix: str, key: Any, in_dict: bool) -> str:
    if in_dict:
        return f"{prefix}.{key}" if prefix else str(key)
    return f"{prefix}[{key}]"


def is_dataclass_instance(value: Any) -> bool:
    """A dataclass object (not the class itself): its fields are walked like a dict's keys."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _item_name(prefix: str, i: int, cls: Any) -> str:
    """The name of a list's or tuple's i-th entry: `W[0]`, or a namedtuple's field, `W.bias`."""
    return _join(prefix, cls._fields[i], True) if cls is not None else _join(prefix, i, False)


def _walk(tree: Any, leaves: list) -> TreeDef:
    if is_dataclass_instance(tree):
        keys = tuple(f.name for f in dataclasses.fields(tree))
        return TreeDef("dataclass", keys, tuple(_walk(getattr(tree, k), leaves) for k in keys), cls=type(tree))
    if isinstance(tree, dict):
        keys = tuple(tree.keys())
        return TreeDef("dict", keys, tuple(_walk(tree[k], leaves) for k in keys))
    if isinstance(tree, (list, tuple)):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        cls = type(tree) if _is_namedtuple(tree) else None
        return TreeDef(kind, tuple(range(len(tree))), tuple(_walk(item, leaves) for item in tree), cls=cls)
    leaves.append(tree)
    return TreeDef("leaf", scalar=isinstance(tree, (int, float, np.number)) and not isinstance(tree, bool))


def flatten(tree: Any, origin: str = "params") -> tuple[list[str], list[Any], TreeDef]:
    """Return (names, leaves, treedef); leaves are returned as given (not copied)."""
    leaves: list[Any] = []
    try:
        treedef = _walk(tree, leaves)
        return leaf_names(treedef), leaves, treedef
    except RecursionError:
        raise InvalidCase(f"{origin} nest too deeply or contain themselves (a list that holds itself?); "
                          f"pass a finite dict, list or tuple of arrays.") from None


def map_data(tree: Any, leaf: Callable[[Any], Any]) -> Any:
    """`tree` with `leaf` applied to everything that is not a dict, list or tuple.

    Containers are rebuilt as plain dicts, lists and tuples (a namedtuple keeps its type), in
    order: the way a loss's data is walked for the references.
    """
    if isinstance(tree, dict):
        return {k: map_data(v, leaf) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [map_data(v, leaf) for v in tree]
        if isinstance(tree, list):
            return items
        return type(tree)(*items) if hasattr(tree, "_fields") else tuple(items)
    return leaf(tree)


def fresh(tree: Any) -> Any:
    """Copy every ndarray in a (nested) container; other objects are passed through."""
    return map_data(tree, lambda x: x.copy() if isinstance(x, np.ndarray) else x)


def readonly(tree: Any) -> Any:
    """Read-only views of every ndarray in a (nested) container."""
    return map_data(tree, _readonly_view)


def _readonly_view(value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    view = value.view()
    view.flags.writeable = False
    return view


def widen(tree: Any, dtype: Any = np.float64) -> Any:
    """Float arrays and scalars narrower than `dtype` in a (nested) container as `dtype`; others as they are.

    The references evaluate the loss in float64 (parameters and data alike): finite differences
    of a float32 loss cannot resolve most gradients, so a float32 reference would pass anything.
    """
    wide = np.dtype(dtype)

    def leaf(value: Any) -> Any:
        if not isinstance(value, (np.ndarray, np.floating)) or value.dtype.kind != "f" \
                or value.dtype.itemsize >= wide.itemsize:
            return value
        return np.asarray(value, dtype=wide) if isinstance(value, np.ndarray) else wide.type(value)

    return map_data(tree, leaf)


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    """Rebuild a pytree of the given structure from leaves in flatten order."""
    it = iter(leaves)
    tree = _build(treedef, it)
    return tree


def _build(treedef: TreeDef, it: Iterator[Any]) -> Any:
    if treedef.kind == "leaf":
        return next(it)
    children = [_build(child, it) for child in treedef.children]
    if treedef.kind == "dict":
        return dict(zip(treedef.keys, children))
    if treedef.kind == "dataclass":
        return _new_dataclass(treedef.cls, dict(zip(treedef.keys, children)))
    if treedef.cls is not None:  # a namedtuple: the user's code reads p.W
        return treedef.cls(*children)
    return tuple(children) if treedef.kind == "tuple" else children


def _new_dataclass(cls: Any, fields: dict) -> Any:
    """An instance of `cls` holding `fields`, made without __init__ (which may validate or copy)."""
    obj = cls.__new__(cls)
    for key, value in fields.items():
        object.__setattr__(obj, key, value)  # also for frozen dataclasses
    return obj


def leaf_names(treedef: TreeDef) -> list[str]:
    """The leaves' names (`W1`, `layer1.W`, `weights[0]`), unique within the tree.

    Where two leaves would read alike ({"layer.W": a, "layer": {"W": b}}, or keys 0 and "0"),
    both are named by the reprs of their keys instead (`['layer.W']`, `['layer']['W']`): results
    are looked up by name, so a shared name would compare one leaf against another's reference.
    """
    entries: list[tuple[str, tuple]] = []

    def visit(td: TreeDef, prefix: str, path: tuple) -> None:
        if td.kind == "leaf":
            entries.append((prefix or "params", path))
            return
        for key, child in zip(td.keys, td.children):
            in_dict = td.kind in ("dict", "dataclass")
            name = _join(prefix, key, True) if in_dict else _item_name(prefix, key, td.cls)
            visit(child, name, path + ((td.cls._fields[key] if td.cls is not None and not in_dict else key),))

    visit(treedef, "", ())
    counts = Counter(name for name, _ in entries)
    return [name if counts[name] == 1 else "".join(f"[{k!r}]" for k in path) or name for name, path in entries]


def _describe(value: Any) -> str:
    if is_dataclass_instance(value):
        return f"a {type(value).__name__} (a dataclass)"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    if value is None:
        return "None"
    return f"a {type(value).__name__}"


def flatten_like(treedef: TreeDef, tree: Any, what: str = "gradient") -> list[Any]:
    """Flatten `tree` along `treedef`, raising StructureMismatch naming the first differing leaf."""
    out: list[Any] = []
    _match(treedef, tree, "", out, what)
    return out


def _match(td: TreeDef, tree: Any, prefix: str, out: list, what: str) -> None:
    here = prefix or "the top level"
    if td.kind == "leaf":
        if tree is None:
            raise StructureMismatch(
                f"{what} for parameter '{prefix or 'params'}' is None: the function returns nothing "
                f"for it yet. Return an array of the parameter's shape."
            )
        numbers = _numbers(tree) if isinstance(tree, (list, tuple)) else None
        if numbers is not None:  # [dw0, dw1, dw2] for a vector parameter: the same numbers
            out.append(numbers)
            return
        if isinstance(tree, _CONTAINERS):
            raise StructureMismatch(
                f"{what} for parameter '{prefix or 'params'}' is {_describe(tree)}, but the parameter "
                f"is a single array. Return one array per parameter."
            )
        out.append(tree)
        return
    if td.kind == "dataclass" and is_dataclass_instance(tree):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    if td.kind in ("dict", "dataclass"):
        if not isinstance(tree, dict):
            expected = f"a {td.cls.__name__} or a dict" if td.kind == "dataclass" else "a dict"
            raise StructureMismatch(f"{what} at {here} is {_describe(tree)}; expected {expected} with keys "
                                    f"{list(map(str, td.keys))}.")
        _match_keys(td.keys, list(tree.keys()), prefix, what)
        for key, child in zip(td.keys, td.children):
            _match(child, tree[key], _join(prefix, key, True), out, what)
        return
    if not isinstance(tree, (list, tuple)):
        raise StructureMismatch(f"{what} at {here} is {_describe(tree)}; expected a {td.kind} of length {len(td.keys)}.")
    if len(tree) != len(td.keys):
        raise StructureMismatch(
            f"{what} at {here} is a {type(tree).__name__} of length {len(tree)}, but the parameters "
            f"have {len(td.keys)} entries there. Return one gradient per parameter, in the same order."
        )
    for i, child in enumerate(td.children):
        _match(child, tree[i], _item_name(prefix, i, td.cls), out, what)


def _numbers(items: list | tuple) -> np.ndarray | None:
    """A (nested) list of numbers as a float array; None if it holds anything else."""
    try:
        arr = np.asarray(items)
    except Exception:  # noqa: BLE001 - ragged or unconvertible: not a list of numbers
        return None
    return arr if arr.dtype.kind in "iuf" and arr.size else None


def _match_keys(expected: tuple, got: list, prefix: str, what: str) -> None:
    import difflib

    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    if not missing and not extra:
        return
    parts = []
    for key in missing:
        name = _join(prefix, key, True)
        close = difflib.get_close_matches(str(key), [str(k) for k in extra], n=1)
        hint = f" (you returned '{close[0]}': a misspelling?)" if close else ""
        parts.append(f"missing key '{name}'{hint}")
    for key in extra:
        if not any(difflib.get_close_matches(str(key), [str(k) for k in missing], n=1)):
            parts.append(f"extra key '{_join(prefix, key, True)}' that is not a parameter")
    raise StructureMismatch(
        f"{what} does not match the parameters: " + "; ".join(parts)
        + f". Return exactly the keys {list(map(str, expected))}."
    )


def validate_leaf(name: str, value: Any) -> np.ndarray:
    """Turn a parameter leaf into a float ndarray (a copy), refusing what cannot be differentiated."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise InvalidCase(f"parameter '{name}' is {_describe(value)}; parameters must be float arrays or Python floats.")
    if isinstance(value, (set, frozenset)):
        raise InvalidCase(f"parameter '{name}' is a {type(value).__name__}, which has no order: pass a list or an "
                          f"array of floats.")
    _refuse_subclass(name, value)
    try:
        # C order: every flat index (perturbation, report, sample) means the same element.
        arr = np.array(value, copy=True, order="C")
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
        raise InvalidCase(f"parameter '{name}' ({_describe(value)}) cannot be turned into an array: {exc}") from None
    if arr.dtype.kind == "b":
        raise InvalidCase(
            f"parameter '{name}' has boolean dtype: a mask or flag has no gradient. Move it to args if it is "
            f"data, or pass it as floats with .astype(float) if it is a parameter."
        )
    if arr.dtype.kind in "iu":
        fix = (f"write it as a float ({value!r} -> {float(value)!r})" if isinstance(value, (int, np.integer))
               else "convert it with .astype(float)")
        raise InvalidCase(
            f"parameter '{name}' has integer dtype {arr.dtype}: finite differences on integers are "
            f"meaningless. Pass it as floats: {fix}; or move it to args if it is data rather than a parameter."
        )
    if arr.dtype.kind == "c":
        raise InvalidCase(
            f"parameter '{name}' is complex ({arr.dtype}); gradcheck checks real-valued parameters only. "
            f"Pass its real and imaginary parts as two float parameters ({name}.real, {name}.imag) and "
            f"combine them inside the loss."
        )
    if arr.dtype == object:
        raise InvalidCase(
            f"parameter '{name}' is an array of Python objects (dtype object), not of floats. If it holds numbers, "
            f"pass np.asarray({name}, dtype=float); if it holds several weight arrays, pass them as a list."
        )
    if arr.dtype.kind != "f":
        raise InvalidCase(f"parameter '{name}' has dtype {arr.dtype}; parameters must be floating point arrays.")
    return arr


def _refuse_subclass(name: str, value: Any) -> None:
    """An ndarray subclass whose arithmetic differs (np.matrix's `*`, a mask) would change the loss."""
    if not isinstance(value, np.ndarray) or type(value) is np.ndarray or isinstance(value, np.memmap):
        return
    if isinstance(value, np.matrix):
        why = "whose * is a matrix product and whose slices stay 2-d"
    elif isinstance(value, np.ma.MaskedArray):
        why = "whose masked entries your code skips"
    else:
        why = "whose operations may differ from a plain array's"
    raise InvalidCase(
        f"parameter '{name}' is a {type(value).__module__}.{type(value).__name__}, {why}; gradcheck perturbs "
        f"plain arrays, so your code would compute something else. Pass np.asarray({name}) and write the loss "
        f"for plain arrays (matrix products with @)."
    )
