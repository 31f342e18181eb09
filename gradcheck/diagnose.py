"""Turn a leaf's comparison into a named finding with a likely cause in a learner's words."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .compare import Combined, Comparison, compare_leaf, worst_index
from .consensus import combine
from .model import ParamResult

if TYPE_CHECKING:
    from .case import Prepared

#: Likely causes, keyed by diagnosis (scaled causes are keyed by factor below).
CAUSES = {
    "ok": "",
    "nondifferentiable": "the loss has a kink here (ReLU at 0, a max tie, abs at 0); any value between "
                         "the one-sided derivatives is a valid (sub)gradient, so it is not counted against you",
    "sign_flipped": "target - output instead of output - target, or returning the update direction "
                    "(minus the gradient) instead of the gradient",
    "transposed": "the gradient is the transpose of the right one: e.g. delta.T @ X instead of X.T @ delta, "
                  "or the weight used as (in, out) in the forward pass but (out, in) in the backward pass",
    "swapped": "the gradients were returned under the wrong names or in the wrong order",
    "zero": "the gradient of this parameter is never computed or never accumulated (still the zeros it "
            "started as), or the backward pass stops before reaching it",
    "wrong_shape": "the gradient must have exactly the parameter's shape",
    "partial": "a few elements are wrong and the rest right: an indexing slip, a mask (such as ReLU's z > 0) "
               "taken from the wrong array, or an edge element (first/last row, bias column) handled apart",
    "wrong": "no simple pattern: go through the chain rule for this parameter one factor at a time "
             "(`check-gradients explain` shows the chain for one element)",
    "nonfinite": "NaN or inf in your gradient: log of 0, division by zero or overflow in exp; use a "
                 "numerically stable form (subtract the max before a softmax, clip before a log)",
    "missing": "the backward pass returned None for this input: it is still a stub",
    "tiny_mismatch": "a tiny but real mismatch (relative 1e-9 to 1e-4): typically a small constant inside a "
                     "log or a division in the loss, as in np.log(p + 1e-7) or x / (s + 1e-8), that the "
                     "gradient leaves out (or the reverse). Harmless for training, but the gradient belongs "
                     "to a slightly different loss: use the same constant in both, or drop it while checking",
    "clipped": "your gradient is clipped (np.clip(grad, -c, c) or a norm cap): clipping belongs in the update "
               "step; check the gradient before it is clipped",
    "regularisation": "the regularisation term's gradient is off: the derivative of (reg/2) * sum(W**2) is "
                      "reg * W (of reg * sum(W**2) it is 2 * reg * W); add it once, with the loss's factor",
}

_SCALE_CAUSES = {
    2.0: "the 1/2 in the squared error: the derivative of 1/2 (out - target)^2 is (out - target), with no 2",
    0.5: "a missing factor 2: the derivative of x^2 is 2x (or the loss lost its 1/2 while the gradient kept it)",
}
_GENERIC_SCALE = ("a constant factor applied in one place but not the other: a learning rate, a "
                  "regularisation strength or a normalisation in the gradient but not in the loss, or "
                  "the reverse")


def scale_cause(factor: float, batch_sizes: Sequence[int]) -> str:
    """The learner's-words explanation of a gradient scaled by `factor`."""
    sign = " (and the sign is flipped too: target - output instead of output - target)" if factor < 0 else ""
    f = abs(factor)
    # A factor of 2 next to a data axis of length 2 is ambiguous: name both causes, the 1/2 first.
    causes = [text for value, text in _SCALE_CAUSES.items() if np.isclose(f, value, rtol=1e-6)]
    for n in batch_sizes:
        if n > 1 and np.isclose(f, n, rtol=1e-6):
            causes.append(f"batch mean in the loss but not in the gradient: divide the gradient by the batch size {n}")
        elif n > 1 and np.isclose(f, 1.0 / n, rtol=1e-6):
            causes.append(f"the gradient is divided by the batch size {n} but the loss is a sum (or the mean "
                          f"is taken twice)")
    return ("; or ".join(causes[:2]) if causes else _GENERIC_SCALE) + sign


def nice_factor(c: float, batch_sizes: Sequence[int], rtol: float = 1e-6) -> float:
    """Snap a fitted factor to an integer, a reciprocal or a batch size when it is one (within rtol)."""
    candidates = [float(n) for n in batch_sizes] + [1.0 / n for n in batch_sizes if n]
    candidates += [float(round(c))] if abs(c) >= 1 else [1.0 / round(1.0 / c)] if c != 0 else []
    for cand in candidates:
        for s in (1.0, -1.0):
            if cand and np.isclose(c, s * cand, rtol=rtol, atol=0):
                return s * cand
    return float(f"{c:.7g}")


def _fmt_index(index: tuple | None) -> str:
    return "" if not index else "[" + ", ".join(map(str, index)) + "]"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _result(name: str, cmp: Comparison, diagnosis: str, detail: str, cause: str, **extra) -> ParamResult:
    index = worst_index(cmp)
    yours = ref = None
    if index is not None:
        yours = float(cmp.yours[index])
        ref = float(cmp.ref.value[index])
    nondiff = tuple(tuple(int(i) for i in ix) for ix in np.argwhere(cmp.ref.kink & cmp.ref.checked))
    # The same numbers as the worst index: over the failing elements, else over all checked ones.
    counted = cmp.rel_error[cmp.ref.checked & (~cmp.ok if not cmp.ok.all() else True)]
    return ParamResult(
        name=name, shape=tuple(cmp.yours.shape), dtype=extra.pop("dtype", "float64"),
        passed=diagnosis in ("ok", "nondifferentiable"), diagnosis=diagnosis, detail=detail, cause=cause,
        max_rel_error=float(counted.max()) if counted.size else 0.0, worst_index=index, yours=yours,
        reference=ref, reference_name=cmp.ref.source, nondifferentiable_indices=nondiff[:100],
        checked=int((cmp.ref.checked & ~cmp.unchecked).sum()), total=int(cmp.yours.size), rtol=cmp.rtol,
        atol=cmp.atol, rel_errors=cmp.rel_error,
        unchecked_indices=tuple(tuple(int(i) for i in ix) for ix in np.argwhere(cmp.unchecked))[:100], **extra,
    )


def diagnose(name: str, cmp: Comparison, others: Mapping[str, Combined], batch_sizes: Sequence[int],
             dtype: str = "float64", x: np.ndarray | None = None) -> ParamResult:
    """The finding for one leaf whose shape matches its parameter (`x`: its values, if known)."""
    y, r, m = cmp.yours, np.where(cmp.ref.checked, cmp.ref.value, 0.0), cmp.mask
    at = lambda ix: f"{name}{_fmt_index(ix)}"  # noqa: E731
    if not m.any() and not (cmp.ref.checked & cmp.ref.kink).any():
        return _result(name, cmp, "ok", f"{name}: no element could be checked (empty or unreachable).", "",
                       dtype=dtype)
    if cmp.ok.all():
        if (cmp.ref.kink & cmp.ref.checked).any():
            n = int((cmp.ref.kink & cmp.ref.checked).sum())
            return _result(name, cmp, "nondifferentiable",
                           f"{name} matches; {n} element(s) sit on a kink where the references disagree, "
                           f"and your values lie between the one-sided derivatives.",
                           CAUSES["nondifferentiable"], dtype=dtype)
        return _result(name, cmp, "ok", f"{name} matches the reference.", "", dtype=dtype)
    bad = ~cmp.ok & cmp.ref.checked
    if not np.isfinite(y[cmp.ref.checked]).all():
        ix = tuple(int(i) for i in np.argwhere(~np.isfinite(y) & cmp.ref.checked)[0])
        return _result(name, cmp, "nonfinite", f"{name} has NaN or inf, first at {at(ix)} (value {y[ix]}).",
                       CAUSES["nonfinite"], dtype=dtype)
    # Patterns are judged on elements that can tell them apart: a reference above the tolerance.
    if m.any() and not y[m].any() and _resolvable(cmp).any():
        return _result(name, cmp, "zero", f"{name} is all zeros, but the reference is not "
                       f"(its largest entry is {_fmt(float(np.abs(r[m]).max()))}).", CAUSES["zero"], dtype=dtype)
    if _pattern_visible(cmp) and cmp.close(-y, r):
        return _result(name, cmp, "sign_flipped", f"{name} has the right size but the opposite sign everywhere.",
                       CAUSES["sign_flipped"], dtype=dtype)
    found = _scaled(name, cmp, batch_sizes, dtype)
    if found is not None:
        return found
    if y.ndim == 2 and y.shape[0] == y.shape[1] and y.shape[0] > 1 and cmp.ref.checked.all() and cmp.close(y.T, r):
        return _result(name, cmp, "transposed", f"{name} equals the transpose of the reference gradient.",
                       CAUSES["transposed"], dtype=dtype)
    for other, oref in others.items():
        if other != name and oref.value.shape == y.shape and oref.checked.all() and cmp.ref.checked.all():
            if np.all(np.abs(y - oref.value) <= cmp.tol + np.abs(oref.value) * cmp.rtol) and not np.allclose(oref.value, r):
                return _result(name, cmp, "swapped", f"{name} holds the gradient of '{other}'.",
                               f"{CAUSES['swapped']}: this is the gradient of '{other}'", swapped_with=other,
                               dtype=dtype)
    for finder in (_regularisation, _clipped, _tiny):
        found = finder(name, cmp, x, dtype)
        if found is not None:
            return found
    wrong = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)]
    counted = int(cmp.ref.checked.sum())
    if len(wrong) * 2 < counted:
        shown = ", ".join(at(ix) for ix in wrong[:8]) + (" ..." if len(wrong) > 8 else "")
        return _result(name, cmp, "partial", f"{len(wrong)} of {counted} checked elements of {name} are wrong: {shown}.",
                       CAUSES["partial"], wrong_indices=tuple(wrong[:1000]), dtype=dtype)
    worst = worst_index(cmp)
    if worst is None:  # not reached: elements were checked and some are wrong
        worst = wrong[0]
    return _result(name, cmp, "wrong", f"{len(wrong)} of {counted} checked elements of {name} are wrong, "
                   f"worst at {at(worst)}: yours {_fmt(float(y[worst]))} vs reference {_fmt(float(r[worst]))}.",
                   CAUSES["wrong"], wrong_indices=tuple(wrong[:1000]), dtype=dtype)


def _resolvable(cmp: Comparison) -> np.ndarray:
    """Counted elements whose reference stands out of the tolerance (a pattern can be seen there)."""
    r = np.where(cmp.ref.checked, cmp.ref.value, 0.0)
    return cmp.mask & (np.abs(r) > cmp.tol)


def _pattern_visible(cmp: Comparison) -> bool:
    """Whether an "everywhere" pattern (sign, scale) can be seen: two resolvable elements, or the
    only one; one element standing out of the rest says nothing of "every element"."""
    return int(_resolvable(cmp).sum()) >= min(2, int(cmp.mask.sum())) and bool(_resolvable(cmp).any())


def _regularisation(name: str, cmp: Comparison, x: np.ndarray | None, dtype: str) -> ParamResult | None:
    """'regularisation' if yours - reference = c * the parameter itself (a missing or doubled -reg * W)."""
    m = cmp.mask
    if x is None or np.shape(x) != cmp.yours.shape or not m.all():
        return None
    d, w = (cmp.yours - cmp.ref.value)[m], np.asarray(x, dtype=np.float64)[m]
    ww = float(w @ w)
    if ww == 0.0 or int((np.abs(w) > 0).sum()) < 2:
        return None
    c = float(d @ w) / ww
    if c == 0.0 or not np.all(np.abs(d - c * w) <= cmp.tol[m]) or int((np.abs(c * w) > cmp.tol[m]).sum()) < 2:
        return None
    c = float(f"{c:.6g}")
    how = "missing" if c < 0 else "added twice or with the wrong factor"
    detail = (f"{name} minus the reference is {c:+.6g} x {name} itself at every element: a term proportional to "
              f"the parameter is {how} (with reg = {abs(c):.6g}, the L2 term's gradient is reg * {name}).")
    return _result(name, cmp, "regularisation", detail, CAUSES["regularisation"], factor=c, dtype=dtype)


def _clipped(name: str, cmp: Comparison, x: np.ndarray | None, dtype: str) -> ParamResult | None:
    """'clipped' if every wrong element of yours sits at one bound +-c that the reference exceeds."""
    bad = ~cmp.ok & cmp.ref.checked
    y, r = cmp.yours[bad], cmp.ref.value[bad]
    if y.size < 2:
        return None  # one element below its reference is no sign of a bound
    c = float(np.abs(y).max())
    at_bound = np.isclose(np.abs(y), c, rtol=1e-9, atol=0) & (np.sign(y) == np.sign(r)) & (np.abs(r) > c)
    if c == 0.0 or not at_bound.all() or np.any(np.abs(cmp.yours[cmp.ref.checked]) > c * (1 + 1e-9)):
        return None
    detail = (f"{int(bad.sum())} element(s) of {name} are exactly +-{c:.6g} where the reference is larger in size: "
              f"your gradient is clipped at {c:.6g}.")
    return _result(name, cmp, "clipped", detail, CAUSES["clipped"], dtype=dtype)


#: A mismatch whose relative size stays below this is a different constant, not a broken chain rule.
TINY_MISMATCH = 1e-4


def _tiny(name: str, cmp: Comparison, x: np.ndarray | None, dtype: str) -> ParamResult | None:
    """'tiny_mismatch' if every failing element is off by less than TINY_MISMATCH relative."""
    bad = ~cmp.ok & cmp.ref.checked
    if not bad.any() or np.dtype(dtype).itemsize < 8:
        return None  # float32 round-off already reaches 1e-4
    worst = float(cmp.rel_error[bad].max())
    if not worst < TINY_MISMATCH:
        return None
    detail = (f"{int(bad.sum())} of {int(cmp.ref.checked.sum())} checked elements of {name} are off by at most "
              f"{worst:.1e} relative: close, but beyond the tolerance (rtol {cmp.rtol:.0e}).")
    return _result(name, cmp, "tiny_mismatch", detail, CAUSES["tiny_mismatch"], dtype=dtype)


def _scaled(name: str, cmp: Comparison, batch_sizes: Sequence[int], dtype: str) -> ParamResult | None:
    """'scaled' if yours = c * reference for one constant c != 1 (least squares fit)."""
    m = cmp.mask
    if not _pattern_visible(cmp):
        return None
    y, r = cmp.yours[m], cmp.ref.value[m]
    rr = float(r @ r)
    if rr == 0.0:
        return None
    c = float(y @ r) / rr
    if c == 0.0 or not np.all(np.abs(y - c * r) <= abs(c) * cmp.tol[m]):
        return None
    factor = nice_factor(c, batch_sizes, rtol=max(1e-6, cmp.rtol))  # float16/32 fits are only that good
    if factor == 1.0:
        return None  # a common relative offset below 1e-6 is not a factor anyone wrote
    if m.sum() == 1 and not _is_simple(factor):
        return None  # one element is always "some multiple" of its reference: only a simple factor says more
    how = f"{factor:.8g} times" if abs(factor) >= 1 else f"1/{1 / factor:.8g} of"
    return _result(name, cmp, "scaled", f"{name} is {how} the reference gradient at every checked element.",
                   scale_cause(factor, batch_sizes), factor=factor, dtype=dtype)


def _is_simple(factor: float) -> bool:
    """An integer or the reciprocal of one (2, 0.5, a batch size), up to sign."""
    f = abs(factor)
    g = f if f >= 1 else 1.0 / f
    return bool(np.isclose(g, round(g), rtol=1e-6, atol=0))


def diagnose_shape(name: str, yours: np.ndarray, ref: Combined, batch_sizes: Sequence[int],
                   dtype: str = "float64") -> ParamResult:
    """The finding for a leaf whose gradient has the wrong shape, with a hint where one fits."""
    expected, actual = ref.value.shape, yours.shape
    hint = _shape_hint(yours, ref)
    detail = f"your gradient has shape {actual}, the parameter has shape {expected}" + (f"; {hint}" if hint else "") + "."
    return ParamResult(
        name=name, shape=tuple(expected), dtype=dtype, passed=False, diagnosis="wrong_shape", detail=detail,
        cause=CAUSES["wrong_shape"], max_rel_error=float("inf"),
        expected_shape=tuple(expected), actual_shape=tuple(actual), checked=0, total=int(np.prod(expected)),
        reference_name=ref.source,
    )


def _values_match(a: np.ndarray, ref: Combined) -> bool:
    if a.shape != ref.value.shape or not ref.checked.any():
        return False
    m = ref.checked
    scale = float(np.abs(ref.value[m]).max()) or 1.0
    return bool(np.allclose(a[m], ref.value[m], rtol=1e-5, atol=1e-8 * scale))


def _shape_hint(yours: np.ndarray, ref: Combined) -> str:
    expected, actual = ref.value.shape, yours.shape
    if yours.ndim == 2 and actual[::-1] == expected:
        ok = _values_match(yours.T, ref)
        return "it is transposed" + (" (its transpose is right)" if ok else "")
    if yours.size == int(np.prod(expected)) and tuple(s for s in actual if s != 1) == tuple(s for s in expected if s != 1):
        ok = _values_match(yours.reshape(expected), ref)
        return ("an axis of length 1 too many or too few: keepdims=True, a (1, D) row or an (n, 1) column "
                "where the parameter has another layout; reshape it" + (" (the values are right)" if ok else ""))
    if yours.ndim == len(expected) + 1:
        for k in range(yours.ndim):
            if actual[:k] + actual[k + 1:] == expected:
                ok = _values_match(yours.sum(axis=k), ref)
                return (f"not summed over axis {k} (length {actual[k]}, likely the batch): use .sum(axis={k})"
                        + (" (the sum is right)" if ok else ""))
    if yours.ndim == len(expected):
        axes = tuple(k for k in range(yours.ndim) if actual[k] != expected[k])
        if axes and all(expected[k] == 1 for k in axes):
            # e.g. an (n, m) delta returned for an (n, 1) column bias: the batch axis was kept, not summed
            ok = _values_match(yours.sum(axis=axes, keepdims=True), ref)
            which = ", ".join(map(str, axes))
            return (f"not summed over axis {which} (length {', '.join(str(actual[k]) for k in axes)}, likely the "
                    f"batch): use .sum(axis={axes[0] if len(axes) == 1 else axes}, keepdims=True)"
                    + (" (the sum is right)" if ok else ""))
    if yours.size == 1 and int(np.prod(expected)) > 1:
        return "a single number where the parameter is an array: the gradient was summed over too many axes"
    return ""


def findings(prep: Prepared, refs: list, rtol: float | None, atol: float | None) -> tuple[list, list]:
    """Every leaf's finding: the references combined per leaf (gradcheck.consensus.combine), the
    user's values compared, each leaf diagnosed; and the warnings about elements left unjudged."""
    combined: dict[str, Combined] = {}
    warnings: list[str] = []
    for k, (name, x) in enumerate(zip(prep.names, prep.x0)):
        c, w = combine(refs, k, x.shape)
        combined[name] = c
        warnings += [f"{name}: {msg}" for msg in w]
    results: list[ParamResult] = []
    for k, (name, y, dtype) in enumerate(zip(prep.names, prep.yours, prep.dtypes)):
        ref = combined[name]
        if y.shape != ref.value.shape:
            results.append(diagnose_shape(name, y, ref, prep.batch_sizes, dtype=dtype))
            continue
        slack = prep.roundoff[k] if prep.roundoff is not None else None
        cmp = compare_leaf(y, ref, dtype, rtol, atol, slack=slack)
        if cmp.unresolved is not None and cmp.unresolved.any():
            where = ", ".join(f"{name}[{', '.join(map(str, ix))}]" for ix in np.argwhere(cmp.unresolved)[:5])
            warnings.append(f"{name}: {int(cmp.unresolved.sum())} element(s) were NOT checked ({where}): the finite-"
                            f"difference estimate there is too uncertain to judge (the loss is noisy or changes "
                            f"faster than any step can follow); check them with against='jax' or 'sympy'")
        results.append(diagnose(name, cmp, combined, prep.batch_sizes, dtype=dtype, x=prep.x0[k]))
    return results, warnings



def projection_failures(results: list, failed_leaves: list, projections: list) -> list:
    """A leaf that failed a projection fails, even if its sampled elements happened to pass."""
    out = []
    for p, failed in zip(results, failed_leaves):
        if failed and p.passed:
            bad = [t for t in projections if t.label.startswith(f"{p.name}:") and not t.ok]
            where = bad[0] if bad else None
            detail = (f"{p.name} fails a projection check ({where.label}: yours {where.yours:.6g} vs finite "
                      f"differences {where.numeric:.6g})") if where else f"{p.name} fails a projection check"
            if p.checked:
                detail += " although its sampled elements pass; the error is spread over many small elements"
                cause = "many elements slightly wrong: a small systematic term (a regulariser, a mean) missing"
            else:
                if where is not None and where.numeric:
                    detail += f": along that direction yours is {where.yours / where.numeric:.4g} times the loss's slope"
                cause = (f"the projection shows {p.name}'s gradient is wrong, not where: no element was checked on "
                         f"its own within the budget; give the check more time (budget=...) to find the elements")
            p = replace(p, passed=False, diagnosis="wrong", detail=detail, cause=cause)
        out.append(p)
    return out


def missing_backward(p: ParamResult) -> ParamResult:
    """A layer input whose backward pass returned None: it fails, whatever it was compared as."""
    return replace(p, passed=False, diagnosis="missing", detail=f"backward returned None for input '{p.name}'.",
                   cause="the backward pass returned None for this input: it is still a stub",
                   worst_index=None, yours=None, reference=None, max_rel_error=float("inf"))
