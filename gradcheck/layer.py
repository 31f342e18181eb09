"""Forward/backward layer checks (CS231n style), by projection onto a random upstream gradient.

For out = forward(*inputs), the scalar L = sum(out * dout) has dL/dinput = backward(dout, cache),
so the layer check is an ordinary gradient check of L with a seeded random `dout`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .diagnose import missing_backward
from .pipeline import check
from .errors import GradientMismatch, InvalidCase
from .model import Report
from .objective import fresh, same_value
from .usercode.frames import call_user
from .tree import flatten


_DOUT_WARNING = ("your backward modifies dout in place; gradcheck gave it a copy, but in a network the "
                 "upstream layer's gradient would be corrupted")
_CACHE_WARNING = ("your backward modifies the cache in place; gradcheck ran forward afresh for every call, but "
                  "in a network the cache can hold the layer's input, which would be corrupted")


def _same_tree(a: Any, b: Any) -> bool:
    """Two (nested) caches hold equal leaves."""
    leaves_a, leaves_b = flatten(a)[1], flatten(b)[1]
    return len(leaves_a) == len(leaves_b) and all(same_value(x, y) for x, y in zip(leaves_a, leaves_b))


def _split_forward(result: Any) -> tuple[Any, Any]:
    """(out, cache) from a forward that returns (out, cache) or just out."""
    if isinstance(result, tuple) and len(result) == 2:
        return result
    return result, None


def _call_forward(forward: Callable, values: Sequence[Any]) -> tuple[Any, Any]:
    return _split_forward(forward(*values))


def _input_names(inputs: Any) -> list[str]:
    if isinstance(inputs, Mapping):
        return [str(k) for k in inputs]
    return [f"[{i}]" for i in range(len(inputs))]


def _grads_by_name(result: Any, names: list[str], wrt: list[str]) -> dict:
    """Map backward's result (array, tuple or dict) onto input names."""
    if isinstance(result, Mapping):
        return {n: result.get(n.strip("[]") if n.startswith("[") else n) for n in wrt}
    if not isinstance(result, (tuple, list)):
        result = (result,)
    if len(result) == len(names):
        by_name = dict(zip(names, result))
    elif len(result) == len(wrt):
        by_name = dict(zip(wrt, result))
    else:
        raise InvalidCase(f"backward returned {len(result)} gradients, but the layer has {len(names)} inputs "
                          f"({', '.join(names)}); return one gradient per input, in order (None for an input "
                          f"you do not differentiate), or pass wrt= to name the inputs you check.")
    return {n: by_name[n] for n in wrt}


@dataclass(frozen=True)
class Projection:
    """A layer seen as a scalar loss: L(params) = sum(forward(*inputs) * dout)."""

    forward: Callable
    names: list
    constants: dict
    dout: np.ndarray
    params: dict  # the inputs being checked, by name

    def assemble(self, params: Mapping) -> list:
        """Every input, in order: the checked ones from `params`, the rest as given."""
        return _assemble(self.names, self.constants, params)

    @property
    def loss(self) -> Callable:
        """params -> sum(forward(*inputs) * dout), as a closure (see `_projection_loss`)."""
        return _projection_loss(self.forward, self.names, self.constants, self.dout)


def _assemble(names: Sequence[str], constants: Mapping, params: Mapping) -> list:
    return [params[n] if n in params else constants[n] for n in names]


def _projection_loss(forward: Callable, names: list, constants: dict, dout: np.ndarray) -> Callable:
    """The projected loss as a closure over the user's forward, so that the JAX and SymPy
    references, which follow closures into the user's code, re-run forward too."""
    def loss(params: Mapping) -> Any:
        out, _ = _call_forward(forward, _assemble(names, constants, params))
        return np.sum(out * dout)

    return loss


def projected_loss(forward: Callable, inputs: Any, *, wrt: Sequence[str] | None = None,
                   dout: np.ndarray | None = None, seed: int = 0) -> Projection:
    """The scalar loss check_layer checks: forward's output projected onto a seeded random dout."""
    if not isinstance(inputs, (tuple, list, Mapping)):
        inputs = (inputs,)
    names = _input_names(inputs)
    values = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
    floats = [n for n, v in zip(names, values) if np.asarray(v).dtype.kind == "f"]
    wrt = list(floats if wrt is None else wrt)
    unknown = [w for w in wrt if w not in names]
    if unknown:
        raise InvalidCase(f"wrt names unknown input(s) {unknown}; the inputs are {names}.")
    if not wrt:
        raise InvalidCase(f"none of the inputs {names} is a float array; pass wrt= to say which to check.")
    constants = {n: fresh(v) for n, v in zip(names, values) if n not in wrt}
    out, _ = call_user(lambda: _call_forward(forward, fresh(values)), "forward")
    out = np.asarray(out)
    if out.dtype.kind not in "fc":
        raise InvalidCase(f"forward returned {type(out).__name__} of dtype {out.dtype}; expected a float array.")
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(out.shape)
    dout = np.array(dout, dtype=np.float64, copy=True)
    if dout.shape != out.shape:
        raise InvalidCase(f"dout has shape {dout.shape} but forward's output has shape {out.shape}.")
    params = {n: v for n, v in zip(names, values) if n in wrt}
    return Projection(forward=forward, names=names, constants=constants, dout=dout, params=params)


def check_layer(forward: Callable, backward: Callable, inputs: Any, *, wrt: Sequence[str] | None = None,
                dout: np.ndarray | None = None, seed: int = 0, **options: Any) -> Report:
    """Check backward(dout, cache) against forward(*inputs) for every float input.

    `inputs` is a tuple (inputs named [0], [1], ...) or a dict (named by key, passed in order).
    `wrt` names the inputs to check (default: every floating-point input). Other options are
    those of `gradcheck.check`. Inputs and `dout` are never modified.
    """
    if not callable(forward) or not callable(backward):
        raise InvalidCase("check_layer needs forward(*inputs) and backward(dout, cache) functions.")
    proj = projected_loss(forward, inputs, wrt=wrt, dout=dout, seed=seed)
    wrt = list(proj.params)
    warnings: list[str] = []
    missing: list[str] = []

    def grads(params: Mapping) -> dict:
        _, cache = _call_forward(forward, proj.assemble(params))
        upstream = proj.dout.copy()
        cache_before = fresh(cache)
        result = backward(upstream, cache if cache is not None else tuple(proj.assemble(params)))
        if not np.array_equal(upstream, proj.dout) and _DOUT_WARNING not in warnings:
            warnings.append(_DOUT_WARNING)
        if cache is not None and not _same_tree(cache_before, cache) and _CACHE_WARNING not in warnings:
            warnings.append(_CACHE_WARNING)
        found = _grads_by_name(result, proj.names, wrt)
        for n, g in found.items():
            if g is None:
                if n not in missing:
                    missing.append(n)
                found[n] = np.zeros(np.shape(params[n]))
        return found

    report = check(proj.loss, grads, proj.params, seed=seed, **options)
    return _with_layer_findings(report, missing, warnings)


def _with_layer_findings(report: Report, missing: list[str], warnings: list[str]) -> Report:
    results = tuple(missing_backward(p) if p.name in missing else p for p in report.parameters)
    return replace(report, parameters=results, warnings=tuple(warnings) + report.warnings)


def assert_layer(*a: Any, **kw: Any) -> Report:
    """Run `check_layer`; raise GradientMismatch if it fails."""
    report = check_layer(*a, **kw)
    if not report.passed:
        raise GradientMismatch(report)
    return report
