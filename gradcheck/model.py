"""Small frozen records that carry a check's results; no logic beyond derived properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

#: The diagnosis vocabulary, in the order the diagnoser tries the patterns.
DIAGNOSES = (
    "ok",
    "nondifferentiable",
    "wrong_shape",
    "nonfinite",
    "zero",
    "sign_flipped",
    "scaled",
    "transposed",
    "swapped",
    "regularisation",
    "clipped",
    "tiny_mismatch",
    "partial",
    "wrong",
    "missing",
)


@dataclass(frozen=True)
class ReferenceGradient:
    """One reference's gradient estimate, per leaf, with its uncertainty.

    `values[k]` holds the reference derivative of leaf k (float64, NaN where not computed),
    `errors[k]` an absolute error estimate per element, and `checked[k]` a mask of the
    elements this reference computed. `lower`/`upper`, when present, are one-sided
    derivatives (left and right), used to recognise kinks.
    """

    name: str
    method: str
    values: tuple
    errors: tuple
    checked: tuple
    lower: Optional[tuple] = None
    upper: Optional[tuple] = None
    steps: Optional[tuple] = None
    notes: tuple = ()
    seconds: float = 0.0
    exact: bool = False
    formulas: Mapping[str, Any] = field(default_factory=dict, compare=False)
    kinks: Optional[tuple] = None  # per leaf: elements where the loss has a kink


@dataclass(frozen=True)
class ReferenceStatus:
    """Whether a reference ran on this problem, how, and if not, why."""

    name: str
    ran: bool
    method: str = ""
    reason: str = ""
    seconds: float = 0.0
    elements: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "ran": self.ran, "method": self.method, "reason": self.reason,
                "seconds": round(self.seconds, 4), "elements": self.elements}


@dataclass(frozen=True)
class Blame:
    """The line of the backward pass where a parameter's gradient first goes wrong (gradcheck.blame).

    `line` is None when no line is blamed; `reason` then says why.
    """

    file: str = ""
    line: Optional[int] = None
    function: str = ""
    source: str = ""
    equals: str = ""        # what the value bound there equals
    should_be: str = ""     # what it should be, and what is missing or extra
    reason: str = ""

    @property
    def located(self) -> bool:
        return self.line is not None

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "function": self.function, "source": self.source,
                "equals": self.equals, "should_be": self.should_be, "reason": self.reason}


@dataclass(frozen=True)
class ParamResult:
    """The verdict for one parameter leaf."""

    name: str
    shape: tuple
    dtype: str
    passed: bool
    diagnosis: str
    detail: str
    cause: str = ""
    max_rel_error: float = 0.0
    worst_index: Optional[tuple] = None
    yours: Optional[float] = None
    reference: Optional[float] = None
    reference_name: str = ""
    factor: Optional[float] = None
    swapped_with: Optional[str] = None
    wrong_indices: tuple = ()
    nondifferentiable_indices: tuple = ()
    unchecked_indices: tuple = ()  # meant to be checked, but no reference could judge them
    expected_shape: Optional[tuple] = None
    actual_shape: Optional[tuple] = None
    checked: int = 0
    total: int = 0
    rtol: float = 0.0
    atol: float = 0.0
    rel_errors: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    blame: Optional[Blame] = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "passed": self.passed,
            "diagnosis": self.diagnosis,
            "detail": self.detail,
            "cause": self.cause,
            "max_rel_error": _num(self.max_rel_error),
            "worst_index": None if self.worst_index is None else list(self.worst_index),
            "yours": _num(self.yours),
            "reference": _num(self.reference),
            "reference_name": self.reference_name,
            "checked": self.checked,
            "total": self.total,
            "rtol": self.rtol,
            "atol": self.atol,
        }
        if self.factor is not None:
            d["factor"] = _num(self.factor)
        if self.swapped_with is not None:
            d["swapped_with"] = self.swapped_with
        if self.wrong_indices:
            d["wrong_indices"] = [list(i) for i in self.wrong_indices]
        if self.nondifferentiable_indices:
            d["nondifferentiable_indices"] = [list(i) for i in self.nondifferentiable_indices]
        if self.unchecked_indices:
            d["unchecked_indices"] = [list(i) for i in self.unchecked_indices]
        if self.expected_shape is not None:
            d["expected_shape"] = list(self.expected_shape)
            d["actual_shape"] = list(self.actual_shape or ())
        if self.blame is not None:
            d["blame"] = self.blame.to_dict()
        return d


@dataclass(frozen=True)
class Report:
    """Everything a check found; `str(report)` is a table, `to_dict()` JSON-able."""

    parameters: tuple
    references: tuple
    warnings: tuple = ()
    loss_value: Optional[float] = None
    seed: int = 0
    plan: dict = field(default_factory=dict)
    formulas: Mapping[str, Any] = field(default_factory=dict, compare=False)
    title: str = ""

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.parameters)

    @property
    def failures(self) -> tuple:
        return tuple(p for p in self.parameters if not p.passed)

    @property
    def max_rel_error(self) -> float:
        errs = [p.max_rel_error for p in self.parameters if p.max_rel_error is not None]
        return max(errs, default=0.0)

    def __getitem__(self, name: str) -> ParamResult:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"no parameter named {name!r}; parameters are {[p.name for p in self.parameters]}")

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "title": self.title,
            "loss": _num(self.loss_value),
            "references": [r.name for r in self.references if r.ran],
            "reference_status": [r.to_dict() for r in self.references],
            "parameters": [p.to_dict() for p in self.parameters],
            "warnings": list(self.warnings),
            "seed": self.seed,
            "plan": dict(self.plan),
            "max_rel_error": _num(self.max_rel_error),
        }

    def __str__(self) -> str:
        from .report import render_text  # rendering lives in report.py

        return render_text(self)

    def _repr_html_(self) -> str:
        """How Jupyter shows a report: verdict, table, and a heatmap per failing parameter."""
        from .notebook import report_html

        return report_html(self)

    def _repr_markdown_(self) -> str:
        """The same for front-ends that render Markdown."""
        from .notebook import report_markdown

        return report_markdown(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's terminal shows the text table, not the dataclass fields."""
        printer.text(str(self))


def _num(x: Any) -> Any:
    """A JSON-safe number: floats stay floats, NaN/inf become strings."""
    if x is None:
        return None
    x = float(x)
    if np.isfinite(x):
        return x
    return "nan" if np.isnan(x) else ("inf" if x > 0 else "-inf")
