"""Which references may judge: an exact reference earns trust by agreeing with the loss itself.

JAX and SymPy re-run the user's code; a re-run that sees the code differently (state it
cannot follow, a numpy call left unswapped) can return a wrong gradient without an error,
even one that is identically zero. Before such a gradient judges anyone, it is compared
with finite differences of the user's own numpy loss along a random direction (one
directional derivative: 6 loss calls), and, on a leaf where it disagrees element-wise with
the finite-difference reference, along a direction through the disagreeing elements. A
reference that fails a conclusive test is set aside (for the whole problem, or for that
leaf) with a message. A test is conclusive only where the loss is smooth along the
direction: at a kink the directional difference is the mean of two slopes and proves nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from .model import ReferenceGradient, ReferenceStatus
from .objective import Objective
from .references.numeric import BASE_STEP, EPS, STEP_FRACTIONS, element_steps, extrapolate
from .triangulate import disagreement

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


def along(objective: Objective, x0: Sequence[np.ndarray], v: Sequence[np.ndarray], f0: float) -> tuple:
    """extrapolate() of t -> f(x0 + t v) at t = 0 with unit step: (estimate, error, ..., kink, ...)."""
    def at(t: float) -> float:
        return objective([x + t * d for x, d in zip(x0, v)])

    with np.errstate(all="ignore"):
        fp = np.array([at(s) for s in STEP_FRACTIONS])
        fm = np.array([at(-s) for s in STEP_FRACTIONS])
    eps = max(EPS, getattr(objective, "eps", EPS))
    return extrapolate(fp, fm, f0, 1.0, eps)


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
    """One directional test of `ref` along v."""
    est, err, _, _, kink, _ = along(objective, x0, v, f0)
    terms = [np.nan_to_num(g) * d for g, d in zip(ref.values, v)]
    theirs = float(sum(t.sum() for t in terms))
    size = float(sum(np.abs(t).sum() for t in terms))
    tol = 3 * float(err) + DIRECTION_RTOL * max(size, abs(float(est))) + 1e-300
    return DirectionTest(reference=ref.name, label=label, theirs=theirs, numeric=float(est), tol=tol,
                         kink=bool(kink) or not np.isfinite(est))


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
