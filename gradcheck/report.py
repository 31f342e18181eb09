"""Pure renderers of a Report: a text table and a JSON-able dict; no printing, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the records render themselves through these functions: no import at run time
    from .model import ParamResult, Report

#: The table's columns, in text and in notebooks.
COLUMNS = ("parameter", "shape", "verdict", "max rel err", "worst index", "yours", "reference", "diagnosis")
_GREEN, _RED, _YELLOW, _RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"


def _shape(shape: Any) -> str:
    return "()" if not shape else "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def format_index(index: Any) -> str:
    """'[0, 2]' for an element's index ('' for a scalar)."""
    return "[" + ", ".join(map(str, index)) + "]" if index else ""


def format_value(x: Any, fmt: str = ".6g") -> str:
    """A number for the table ('-' when there is none)."""
    return "-" if x is None else format(float(x), fmt)


def verdict(p: ParamResult) -> str:
    """PASS, FAIL, or PASS* (passed with kinks excused)."""
    if not p.passed:
        return "FAIL"
    return "PASS*" if p.diagnosis == "nondifferentiable" else "PASS"


def table_row(p: ParamResult) -> list[str]:
    """One parameter's cells, in COLUMNS' order."""
    diag = p.diagnosis + (f" x{p.factor:.8g}" if p.factor is not None else "") + (
        f" <-> {p.swapped_with}" if p.swapped_with else "")
    index = "-" if p.worst_index is None else _shape(p.worst_index)
    # No element compared on its own (a verdict from projections alone): no error to show.
    error = "-" if p.total and not p.checked and p.actual_shape is None else format_value(p.max_rel_error, ".1e")
    return [p.name, _shape(p.actual_shape if p.actual_shape is not None else p.shape), verdict(p),
            error, index, format_value(p.yours), format_value(p.reference), diag]


def finding_lines(name: str, detail: str, cause: str, indent: str = "") -> list[str]:
    """'name: what was found' and, indented under it, the likely cause (the report's and the gradebook's)."""
    return [f"{indent}{name}: {detail}"] + ([f"{indent}    likely cause: {cause}"] if cause else [])


def worst_line(p: ParamResult) -> str:
    """'worst element W[0, 2]: yours 1.5 vs sympy 0.75 (rtol 1e-08, atol 7.8e-12)', or ''."""
    if p.worst_index is None or p.passed:
        return ""
    return (f"worst element {p.name}{format_index(p.worst_index)}: yours {format_value(p.yours, '.10g')} vs "
            f"{p.reference_name} {format_value(p.reference, '.10g')} (rtol {p.rtol:.0e}, atol {p.atol:.1e})")


def _colour(text: str, p: ParamResult, color: bool) -> str:
    if not color:
        return text
    code = _RED if not p.passed else (_YELLOW if p.diagnosis == "nondifferentiable" else _GREEN)
    return code + text + _RESET


def headline(report: Report) -> str:
    """One line: the verdict, how many leaves failed, and the references used."""
    ran = [r.name for r in report.references if r.ran]
    n_bad = len(report.failures)
    state = "PASSED" if report.passed else f"FAILED ({n_bad} of {len(report.parameters)} parameters wrong)"
    unchecked = sum(len(p.unchecked_indices) for p in report.parameters)
    if unchecked:
        state += f", but {unchecked} element(s) not checked (see the notes)"
    projected = report.plan.get("projections") if isinstance(report.plan, dict) else None
    if projected and not any(p.checked for p in report.parameters):
        state += f" along {len(projected)} random direction(s) only"
        first = projected[0]
        if report.passed and first.get("yours"):
            # What the pass can vouch for: an error smaller than the test's tolerance passes it.
            state += f" (resolving errors down to {abs(first['tol'] / first['yours']):.1e} of the slope along the first)"
        state += ": no element was checked on its own (give the check more time, budget=...)"
    title = f"{report.title}: " if report.title else ""
    return f"{title}gradient check {state}; references: {', '.join(ran) or 'none'}"


def blame_lines(b: Any) -> list[str]:
    """Where the backward pass goes wrong (gradcheck.blame), or why no line is blamed."""
    if not b.located:
        return [f"    blame: no line blamed: {b.reason}"]
    return [f"    blame: {b.file}:{b.line} in {b.function}: {b.source}",
            f"        there it equals {b.equals}",
            f"        it should be {b.should_be}"]


def render_text(report: Report, *, color: bool = False) -> str:
    """The report as a table plus one explanation paragraph per finding."""
    rows = [list(COLUMNS)] + [table_row(p) for p in report.parameters]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [headline(report)]
    lines += [f"  {r.name}: {r.method}" for r in report.references if r.ran]
    lines.append("")
    for n, row in enumerate(rows):
        text = "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
        lines.append(_colour(text, report.parameters[n - 1], color) if n else text)
    findings = [p for p in report.parameters if p.diagnosis not in ("ok",)]
    if findings:
        lines.append("")
    for p in findings:
        lines += finding_lines(p.name, p.detail, p.cause)
        if worst_line(p):
            lines.append("    " + worst_line(p))
        if p.blame is not None and not p.passed:
            lines += blame_lines(p.blame)
    skipped = [r for r in report.references if not r.ran]
    for r in skipped:
        lines.append(f"note: {r.name} reference did not run: {r.reason}")
    if report.plan.get("numeric") == "sampled":
        lines.append(f"note: finite differences checked a sample of {report.plan.get('numeric_elements')} elements "
                     f"(seed {report.seed}); see plan for details")
    for w in report.warnings:
        if not any(w.endswith(r.reason) for r in skipped if r.reason):
            lines.append(f"warning: {w}")
    return "\n".join(lines)


def render_summary(report: Report) -> str:
    """A single line for progress output: verdict and worst relative error."""
    return f"{headline(report)}; worst relative error {report.max_rel_error:.1e}"
