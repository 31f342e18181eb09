"""Which references judge, and what they say together: every rule of trust in one place.

JAX and SymPy re-run the user's code; a re-run that sees the code differently (state it
cannot follow, a numpy call left unswapped) can return a wrong gradient without an error,
even one that is identically zero. Such a gradient earns trust by agreeing with the loss
itself, before it judges anyone:

- `validate_by_projections`: beside a sample of finite differences, two projections of the
  gradient along random directions (the plan's choice on problems too big to difference
  element by element); a gradient failing them is set aside with `set_aside`;
- `vet`: one directional derivative of the user's numpy loss along a random direction (6 loss
  calls), and, on a leaf where the reference disagrees element-wise with finite differences,
  along a direction through the disagreeing elements. A reference failing a conclusive test is
  set aside (for the whole problem, or for that leaf) with a message. A test is conclusive only
  where the loss is smooth along the direction: at a kink the directional difference is the
  mean of two slopes and proves nothing;
- `combine`: the merge for one leaf. References that agree give one value; where they disagree
  the most precise stands, and an exact reference disagreeing with finite differences at many
  smooth elements is set aside for the leaf. An element is a kink only on evidence that the loss
  is not smooth there: finite differences whose one-sided slopes differ at shrinking steps, or
  SymPy finding a non-smooth operation at a tie (ReLU at 0, a max tie, abs at 0). There the user
  is held only to the interval spanned by the one-sided derivatives and the references' values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .compare import Combined
from .fast import Projection, confirming_steps, inconclusive, masked_direction, project, shorter_stands
from .model import ReferenceGradient, ReferenceStatus
from .objective import Objective
from .references import REFERENCE_NAMES
from .references.numeric import BASE_STEP, EPS, STEP_FRACTIONS, element_steps, extrapolate
from .tolerances import default_tolerances

if TYPE_CHECKING:
    from .case import Prepared

#: Relative slack when two references are compared with each other.
AGREE_RTOL = 1e-9
#: Relative slack of a directional test, on top of three times the difference's own error.
DIRECTION_RTOL = 1e-7


@dataclass(frozen=True)
class DirectionTest:
    """<g, v> of a reference against the derivative of the user's loss along v."""

    reference: str
    label: str
    theirs: float
    numeric: float
    tol: float
    kink: bool

    @property
    def failed(self) -> bool:
        """Conclusively wrong: smooth along v, and outside the tolerance."""
        return not self.kink and not abs(self.theirs - self.numeric) <= self.tol


def along(objective: Objective, x0: Sequence[np.ndarray], v: Sequence[np.ndarray], f0: float,
          step: float = 1.0) -> tuple:
    """extrapolate() of t -> f(x0 + t v) at t = 0 with the given step (a unit one by default):
    (estimate, error, ..., kink, ...)."""
    def at(t: float) -> float:
        return objective([x + t * d for x, d in zip(x0, v)])

    with np.errstate(all="ignore"):
        fp = np.array([at(s * step) for s in STEP_FRACTIONS])
        fm = np.array([at(-s * step) for s in STEP_FRACTIONS])
    eps = max(EPS, getattr(objective, "eps", EPS))
    return extrapolate(fp, fm, f0, step, eps)


def direction(x0: Sequence[np.ndarray], masks: Sequence[np.ndarray], steps: Sequence[np.ndarray | None],
              rng: np.random.Generator) -> list[np.ndarray]:
    """Random signs on the masked elements, each scaled to its own finite-difference step.

    The steps are the ones finite differences settled on where they ran (an element far
    smaller than its leaf gets a step of its own size), else the default steps; the whole
    move is shrunk by sqrt(m) so that perturbing m elements at once stays a small step.
    """
    count = max(1, sum(int(m.sum()) for m in masks))
    out = []
    for x, m, h in zip(x0, masks, steps):
        base = element_steps(x, BASE_STEP).reshape(x.shape)
        if h is not None:
            base = np.where(np.isfinite(h) & (h > 0), h, base)
        signs = rng.choice((-1.0, 1.0), size=x.shape) if x.size else np.zeros(x.shape)
        out.append(np.where(m, signs * base, 0.0) / np.sqrt(count))
    return out


def direction_test(objective: Objective, x0: list, f0: float, ref: ReferenceGradient, v: list,
                   label: str) -> DirectionTest:
    """One directional test of `ref` along v; a failure at the unit step is differenced again at
    shorter steps, as fast.project does."""
    terms = [np.nan_to_num(g) * d for g, d in zip(ref.values, v)]
    theirs = float(sum(t.sum() for t in terms))
    size = float(sum(np.abs(t).sum() for t in terms))

    def test(step: float) -> tuple[DirectionTest, float, bool]:
        est, err, _, _, kink, trunc = along(objective, x0, v, f0, step)
        base = DIRECTION_RTOL * max(size, abs(float(est))) + 1e-300
        out = DirectionTest(reference=ref.name, label=label, theirs=theirs, numeric=float(est),
                            tol=3 * float(err) + base, kink=bool(kink) or not np.isfinite(est))
        return out, float(err), inconclusive(base, float(err), float(trunc))

    out, err, unsure = test(1.0)
    if out.failed or (unsure and not out.kink):
        for step in confirming_steps(x0, v, 1.0):
            retry, retry_err, _ = test(step)
            if shorter_stands((out.numeric, err), (retry.numeric, retry_err)):
                out, err = retry, retry_err
    return out


def vet(objective: Objective, x0: list, f0: float, refs: dict, statuses: dict, names: Sequence[str],
        seed: int = 0, *, skip: Sequence[str] = (), deadline: float | None = None, call_seconds: float = 0.0,
        not_afforded: list | None = None) -> list[str]:
    """Set aside exact references (in `refs`, `statuses`) that fail a conclusive directional test.

    Returns warnings in the user's words. Finite differences are the arbiter: they difference
    the user's own code, so they are never set aside here. References in `skip` were validated
    already (by the plan's projections). A test that would end past `deadline` (each costs six
    loss calls of `call_seconds`) is not made, and is listed in `not_afforded`.
    """
    def fits() -> bool:
        return deadline is None or time.perf_counter() + 6 * call_seconds <= deadline

    def affordable(what: str) -> bool:
        if fits():
            return True
        if not_afforded is not None:
            not_afforded.append(what)
        return False

    rng = np.random.default_rng(seed + 7)
    numeric = refs.get("numeric")
    steps = list(numeric.steps) if numeric is not None and numeric.steps is not None else [None] * len(x0)
    warnings: list[str] = []
    # Who gives a verdict besides the reference under test: finite differences that visited
    # elements, and exact references already validated.
    kept = [n for n in skip if n in refs] + (["numeric"] if numeric is not None and _judges(numeric) else [])
    for name in [n for n, r in refs.items() if r.exact]:
        ref = refs[name]
        masks = [c & np.isfinite(v) for c, v in zip(ref.checked, ref.values)]
        if not any(m.any() for m in masks) or name in skip:
            continue
        # The least that gives a verdict runs whatever the clock says: with no other reference to
        # judge, the one directional test is made even past the deadline.
        alone = not any(n in refs for n in kept)
        if not alone and not affordable(f"a directional test of the {name} gradient against finite differences "
                                        f"(6 calls of your loss)"):
            if agrees_elementwise(ref, numeric):
                kept.append(name)
            else:
                set_aside(refs, statuses, name, "not validated within the time budget: no directional test was "
                          "affordable, and no finite-difference element confirmed it")
            continue
        if alone and not fits() and agrees_elementwise(ref, numeric):
            kept.append(name)
            continue
        t = direction_test(objective, x0, f0, ref, direction(x0, masks, steps, rng), "a random direction")
        if t.failed:
            set_aside(refs, statuses, name, f"its gradient disagrees with finite differences of your loss along a random "
                  f"direction ({t.theirs:.6g} vs {t.numeric:.6g}): the re-run does not compute your loss's "
                  f"gradient (does the loss read state, such as a global set from the parameters, that the "
                  f"re-run cannot follow?)")
            continue  # the report lists it among the references that did not run, with the reason
        if numeric is not None:
            refs[name], more = _vet_leaves(objective, x0, f0, ref, numeric, names, steps, rng, affordable)
            warnings += more
        kept.append(name)
    return warnings


def _judges(ref: ReferenceGradient) -> bool:
    """Whether a reference checked any element (and so can give a verdict)."""
    return any(bool(np.any(c)) for c in ref.checked)


def agrees_elementwise(ref: ReferenceGradient, numeric: ReferenceGradient | None) -> bool:
    """Finite differences checked some nonzero elements of `ref` and agree with every one they checked."""
    if numeric is None:
        return False
    seen = False
    for k in range(len(ref.values)):
        both = ref.checked[k] & numeric.checked[k]
        if disagreement(ref, numeric, k).any():
            return False
        seen = seen or bool(np.any(np.nan_to_num(ref.values[k][both]) != 0))
    return seen


def set_aside(refs: dict, statuses: dict, name: str, reason: str) -> None:
    """Take `name` out of the judging references; its status says why."""
    refs.pop(name, None)
    statuses[name] = replace(statuses[name], ran=False, reason=reason) if name in statuses else \
        ReferenceStatus(name=name, ran=False, reason=reason)


def _vet_leaves(objective: Objective, x0: list, f0: float, ref: ReferenceGradient, numeric: ReferenceGradient,
                names: Sequence[str], steps: list, rng: np.random.Generator, affordable: Callable[[str], bool]
                ) -> tuple[ReferenceGradient, list]:
    """`ref` without the leaves where it disagrees with finite differences and a test says it is wrong."""
    checked = list(ref.checked)
    warnings = []
    for k, name in enumerate(names):
        bad = disagreement(ref, numeric, k)
        if numeric.kinks is not None:
            bad &= ~numeric.kinks[k]
        if not bad.any() or not affordable(f"a directional test of the {ref.name} gradient on {name}"):
            continue
        masks = [bad if j == k else np.zeros(x.shape, bool) for j, x in enumerate(x0)]
        t = direction_test(objective, x0, f0, ref, direction(x0, masks, steps, rng), f"{name}'s disagreeing elements")
        if t.failed:
            checked[k] = np.zeros_like(checked[k])
            zero = not np.nan_to_num(ref.values[k][ref.checked[k]]).any()
            what = "is identically zero" if zero else "disagrees with finite differences"
            warnings.append(f"{name}: the {ref.name} gradient {what} where finite differences of your loss are "
                            f"not ({t.theirs:.6g} vs {t.numeric:.6g} along those elements); it was set aside for "
                            f"this parameter (is the loss using state the {ref.name} re-run cannot see?)")
    return (replace(ref, checked=tuple(checked)) if warnings else ref), warnings


def validate_by_projections(prep: Prepared, refs: dict, statuses: dict, name: str, seed: int
                            ) -> tuple[list[Projection], list[str]]:
    """Two projections of the exact reference `name`'s gradient against finite differences of the
    loss (random signs on every element); failing either sets the reference aside.

    Returns the projections and the warnings in the user's words.
    """
    ref = refs[name]
    rng = np.random.default_rng(seed + 2)
    n = len(prep.x0)
    grads = [np.nan_to_num(v) for v in ref.values]
    tols = [default_tolerances("float64")[0]] * n
    out = []
    for label in ("random signs", "random signs (second)"):
        v = [masked_direction(x, rng, np.arange(x.size)) if x.size else None for x in prep.x0]
        out.append(project(prep.objective, prep.x0, grads, v, prep.loss_value, tols, [0.0] * n,
                           f"{ref.name} gradient: {label}"))
    if all(p.ok for p in out):
        return out, []
    set_aside(refs, statuses, name, "disagrees with finite differences")
    return out, [f"the {name} gradient failed its finite-difference projections; it was set aside and the check "
                 f"fell back to projections and localisation"]


# --------------------------------------------------------------------------- the merge, leaf by leaf


def _rank(ref: ReferenceGradient) -> int:
    """0 for the most precise reference (the last of REFERENCE_NAMES); unknown names rank last."""
    if ref.name not in REFERENCE_NAMES:
        return len(REFERENCE_NAMES)
    return len(REFERENCE_NAMES) - 1 - REFERENCE_NAMES.index(ref.name)


def disagreement(a: ReferenceGradient, b: ReferenceGradient, k: int) -> np.ndarray:
    """Elements of leaf k where both references ran and differ beyond their error bars."""
    both = a.checked[k] & b.checked[k]
    va, vb = np.where(both, a.values[k], 0.0), np.where(both, b.values[k], 0.0)
    ea, eb = np.where(both, a.errors[k], 0.0), np.where(both, b.errors[k], 0.0)
    scale = np.maximum(np.abs(va), np.abs(vb))
    with np.errstate(invalid="ignore"):
        return both & (np.abs(va - vb) > 3 * (ea + eb) + AGREE_RTOL * scale)


def combine(refs: Sequence[ReferenceGradient], k: int, shape: tuple) -> tuple[Combined, list[str]]:
    """The combined reference for leaf k, and warnings about references that look unreliable."""
    refs = sorted(refs, key=_rank)
    warnings: list[str] = []
    numeric = next((r for r in refs if r.name == "numeric"), None)
    kink = np.zeros(shape, bool)
    for ref in refs:  # finite differences see a one-sided gap; SymPy sees a tie at the point
        if ref.kinks is not None:
            kink |= ref.kinks[k] & ref.checked[k]
    if numeric is not None and numeric.steps is not None:
        warnings += _not_finite_warning(numeric, k)
    trusted = list(refs)
    for a in refs:
        for b in refs:
            if _rank(a) >= _rank(b):
                continue
            bad = disagreement(a, b, k)
            if numeric is not None and b is numeric and bad.sum() > max(2, 0.1 * (a.checked[k] & b.checked[k]).sum()) \
                    and not (bad & kink).all():
                # Too many smooth disagreements is not a kink: the exact reference mis-ran.
                warnings.append(
                    f"the {a.name} reference disagrees with finite differences at {int(bad.sum())} elements; "
                    f"it was set aside for this parameter (is the loss using state {a.name} cannot see?)"
                )
                if a in trusted:
                    trusted.remove(a)
            # Otherwise the more precise reference (ranked first) stands: a disagreement alone is
            # no evidence of a kink (a step too long for the element disagrees too).
    value = np.full(shape, np.nan)
    error = np.full(shape, np.inf)
    checked = np.zeros(shape, bool)
    low = np.full(shape, np.inf)
    high = np.full(shape, -np.inf)
    source = ""
    for ref in trusted:
        m = ref.checked[k] & ~checked
        if m.any() and not source:
            source = ref.name
        value = np.where(m, ref.values[k], value)
        error = np.where(m, ref.errors[k], error)
        checked |= ref.checked[k]
        for bound in (ref.values[k], *(b[k] for b in (ref.lower, ref.upper) if b is not None)):
            ok = ref.checked[k] & np.isfinite(bound)
            low = np.where(ok, np.minimum(low, bound), low)
            high = np.where(ok, np.maximum(high, bound), high)
    lost = None
    if numeric is not None and numeric.steps is not None:
        lost = np.isfinite(numeric.steps[k]) & ~numeric.checked[k] & ~checked
    return Combined(value=value, error=error, checked=checked, kink=kink & checked, low=low, high=high,
                    source=source, scale=_overall_scale(trusted), lost=lost), warnings


def _overall_scale(refs: Sequence[ReferenceGradient]) -> float:
    """The largest finite, checked reference entry over every leaf."""
    biggest = 0.0
    for ref in refs:
        for values, checked in zip(ref.values, ref.checked):
            v = np.abs(values[checked & np.isfinite(values)])
            if v.size:
                biggest = max(biggest, float(v.max()))
    return biggest


def _not_finite_warning(numeric: ReferenceGradient, k: int) -> list[str]:
    """A warning for elements finite differences visited (a step is set) but could not estimate."""
    if numeric.steps is None:
        return []
    lost = np.isfinite(numeric.steps[k]) & ~numeric.checked[k]
    if not lost.any():
        return []
    where = [tuple(int(i) for i in ix) for ix in np.argwhere(lost)]
    shown = ", ".join("[" + ", ".join(map(str, ix)) + "]" for ix in where[:5]) + (" ..." if len(where) > 5 else "")
    return [f"{len(where)} element(s) were NOT checked ({shown}): the loss is NaN or inf at points a finite-"
            f"difference step away (log or sqrt of a value the step pushed to 0 or below, or overflow); "
            f"move the parameters away from the edge of the loss's domain, e.g. clip before log"]
