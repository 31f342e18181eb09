"""A Report as Jupyter shows it: HTML (and Markdown for other front-ends), pure functions returning strings.

The verdict, the table, and per failing parameter its finding, a heatmap of the relative error of
each element (an inline SVG written here: no matplotlib), the likely cause and, where known, the
line of your code to blame. Everything that comes from the user's code (parameter names, messages,
file names, source lines) is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .report import COLUMNS, format_index, headline, table_row, verdict, worst_line

if TYPE_CHECKING:  # the records render themselves through these functions: no import at run time
    from .model import ParamResult, Report

#: Relative errors are drawn on a log scale from machine precision to the largest possible (2).
REL_FLOOR, REL_CEIL = 1e-16, 2.0
#: A heatmap shows at most this many cells a side; larger leaves are pooled by their worst element.
MAX_CELLS = 40
#: At most this many failing parameters get a heatmap (the page stays light); the rest are named.
MAX_HEATMAPS = 12
#: Leaves with at most this many cells get their relative error written in each cell.
ANNOTATE_MAX = 48
_PASS, _FAIL, _KINK = "#1b7837", "#b2182b", "#b8860b"
_CALM = ((0.94, 0.97, 1.0), (0.42, 0.68, 0.84))     # light to mid blue: within the tolerance
_ALARM = ((1.0, 0.85, 0.46), (0.74, 0.0, 0.15))     # yellow to dark red: beyond it
_MARK = {"PASS": "\u2713", "PASS*": "\u2713", "FAIL": "\u2717"}

_STYLE = """<style>
.gradcheck-report{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;font-size:13px;line-height:1.4}
.gradcheck-report .gc-verdict{font-size:15px;font-weight:bold;margin:4px 0}
.gradcheck-report .gc-refs{margin:2px 0 8px 0;padding-left:18px;font-size:12px;opacity:.8}
.gradcheck-report table.gc-table{border-collapse:collapse;margin:4px 0 10px 0}
.gradcheck-report .gc-table th,.gradcheck-report .gc-table td{border-bottom:1px solid rgba(128,128,128,.35);
padding:3px 9px;text-align:left;font-family:Menlo,Consolas,monospace;font-size:12px}
.gradcheck-report .gc-table th{font-family:inherit;font-weight:600}
.gradcheck-report .gc-finding{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start;margin:8px 0 12px 0;
padding:8px 10px;border-left:4px solid #b2182b;background:rgba(178,24,43,.05)}
.gradcheck-report .gc-finding h4{margin:0 0 4px 0;font-size:14px}
.gradcheck-report .gc-finding p{margin:3px 0}
.gradcheck-report .gc-text{flex:1 1 320px;min-width:260px}
.gradcheck-report code,.gradcheck-report pre{font-family:Menlo,Consolas,monospace;font-size:12px}
.gradcheck-report pre.gc-line{margin:3px 0;padding:4px 6px;background:rgba(128,128,128,.12);white-space:pre-wrap}
.gradcheck-report svg.gc-heatmap{display:block}
.gradcheck-report .gc-worst code{white-space:normal;word-break:break-word}
.gradcheck-report .gc-caption{font-size:11px;opacity:.7;margin-top:2px}
.gradcheck-report .gc-blame-note{font-size:12px;opacity:.85}
.gradcheck-report .gc-notes{font-size:12px;opacity:.85;padding-left:18px}
</style>"""


# --------------------------------------------------------------------------- colours and the heatmap


def _blend(low: tuple, high: tuple, t: float) -> str:
    """The colour a fraction t of the way from `low` to `high`, as #rrggbb."""
    t = min(max(t, 0.0), 1.0)
    return "#" + "".join(f"{round(255 * (a + (b - a) * t)):02x}" for a, b in zip(low, high))


def error_colour(rel: float, threshold: float) -> str:
    """Blues up to the tolerance, yellow to red beyond it, on a log scale of the relative error."""
    span = np.log10(REL_CEIL / REL_FLOOR)
    at = lambda v: float(np.log10(min(max(v, REL_FLOOR), REL_CEIL) / REL_FLOOR) / span)  # noqa: E731
    t, cut = at(rel), at(threshold)
    if rel <= threshold:
        return _blend(*_CALM, t / cut if cut > 0 else 1.0)
    return _blend(*_ALARM, (t - cut) / (1.0 - cut) if cut < 1 else 1.0)


def _folded(rel: np.ndarray) -> np.ndarray:
    """0-d as one cell, 1-D as a row, more than 2-D folded to (first axis, rest)."""
    if rel.ndim == 0:
        return rel.reshape(1, 1)
    return rel.reshape(1, -1) if rel.ndim == 1 else rel.reshape(rel.shape[0], -1)


def _pooled(grid: np.ndarray) -> tuple[np.ndarray, int, int]:
    """At most MAX_CELLS x MAX_CELLS cells, each the worst of its block; and the block's rows, columns."""
    rows, cols = grid.shape
    br, bc = -(-rows // MAX_CELLS), -(-cols // MAX_CELLS)
    if br == bc == 1:
        return grid, 1, 1
    padded = np.full((-(-rows // br) * br, -(-cols // bc) * bc), 0.0)
    padded[:rows, :cols] = grid
    return padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc).max(axis=(1, 3)), br, bc


def _cell_name(p: ParamResult, r: int, c: int, br: int, bc: int, grid_shape: tuple) -> str:
    """What one cell stands for: an element in the leaf's own shape, or a block of them."""
    if br > 1 or bc > 1:
        rows = f"{r * br}-{min((r + 1) * br, grid_shape[0]) - 1}"
        cols = f"{c * bc}-{min((c + 1) * bc, grid_shape[1]) - 1}"
        return f"{p.name}: rows {rows}, columns {cols} (worst element of the block)"
    shape = np.shape(p.rel_errors) if p.rel_errors is not None else ()
    if not shape:
        return p.name
    flat = r * grid_shape[1] + c
    return p.name + format_index(tuple(int(i) for i in np.unravel_index(flat, shape)))


def _short(v: float) -> str:
    """1e-3 as '1e-3', 0.25 as '2e-1': the order of magnitude fits a small cell."""
    return "0" if v <= REL_FLOOR else f"{v:.0e}".replace("e-0", "e-").replace("e+00", "")


def heatmap_svg(p: ParamResult) -> str:
    """An inline SVG of the relative error of each element of one parameter ('' if none was computed)."""
    if p.rel_errors is None:
        return ""
    rel = np.clip(np.nan_to_num(np.asarray(p.rel_errors, dtype=float), nan=REL_CEIL, posinf=REL_CEIL),
                  0.0, REL_CEIL)
    grid = _folded(rel)
    cells, br, bc = _pooled(grid)
    rows, cols = cells.shape
    threshold = p.rtol if p.rtol > 0 else 1e-8
    size = int(max(4, min(30, 360 // cols, 240 // rows)))
    left, top, strip = 26, 16, max(cols * size, 150)
    width, height = left + strip + 4, top + rows * size + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" class="gc-heatmap" '
           f'font-family="Helvetica,Arial,sans-serif">',
           f"<title>{html.escape(f'relative error per element of {p.name}')}</title>"]
    names = [[_cell_name(p, r, c, br, bc, grid.shape) for c in range(cols)] for r in range(rows)]
    out += _cells(cells, names, threshold, size, left, top)
    out += _axis_labels(rows, cols, size, left, top, br, bc, np.ndim(p.rel_errors))
    out += _legend(threshold, left, top + rows * size + 6, strip)
    out.append("</svg>")
    return "".join(out)


def _cells(cells: np.ndarray, names: list, threshold: float, size: int, left: int, top: int) -> list:
    """One square per cell, its colour the error, its tooltip the element; small grids get the value written in."""
    annotate = cells.size <= ANNOTATE_MAX and size >= 26
    out = []
    for (r, c), v in np.ndenumerate(cells):
        x, y = left + c * size, top + r * size
        out.append(f'<rect x="{x}" y="{y}" width="{size}" height="{size}" fill="{error_colour(v, threshold)}" '
                   f'stroke="#ffffff" stroke-width="{1 if size >= 8 else 0}">'
                   f"<title>{html.escape(f'{names[r][c]}: relative error {v:.2e}')}</title></rect>")
        if annotate:
            ink = "#ffffff" if v > threshold * 1e4 else "#222222"
            out.append(f'<text x="{x + size / 2}" y="{y + size / 2 + 3}" font-size="9" text-anchor="middle" '
                       f'fill="{ink}">{_short(v)}</text>')
    return out


def _axis_labels(rows: int, cols: int, size: int, left: int, top: int, br: int, bc: int, ndim: int) -> list:
    """Index numbers along the top (columns) and the left (rows), thinned to stay legible."""
    out = []
    step_c, step_r = max(1, -(-18 // size)), max(1, -(-14 // size))
    for c in range(0, cols, step_c):
        out.append(f'<text x="{left + c * size + size / 2}" y="{top - 4}" font-size="9" text-anchor="middle" '
                   f'fill="#777777">{c * bc}</text>')
    if ndim >= 2:
        for r in range(0, rows, step_r):
            out.append(f'<text x="{left - 4}" y="{top + r * size + size / 2 + 3}" font-size="9" '
                       f'text-anchor="end" fill="#777777">{r * br}</text>')
    return out


def _legend(threshold: float, x: int, y: int, width: int) -> list:
    """A strip from 1e-16 to 2 with the tolerance marked where blue turns to red."""
    n = 40
    step = width / n
    out = []
    for i in range(n):
        v = REL_FLOOR * (REL_CEIL / REL_FLOOR) ** ((i + 0.5) / n)
        out.append(f'<rect x="{x + i * step:.1f}" y="{y}" width="{step + 0.5:.1f}" height="7" '
                   f'fill="{error_colour(v, threshold)}"/>')
    cut = x + width * np.log10(threshold / REL_FLOOR) / np.log10(REL_CEIL / REL_FLOOR)
    out.append(f'<line x1="{cut:.1f}" x2="{cut:.1f}" y1="{y - 2}" y2="{y + 9}" stroke="#000000" stroke-width="1.5"/>')
    out.append(f'<text x="{x}" y="{y + 19}" font-size="9" fill="#777777">1e-16</text>')
    out.append(f'<text x="{cut:.1f}" y="{y + 19}" font-size="9" text-anchor="middle" fill="#777777">'
               f'rtol {threshold:.0e}</text>')
    out.append(f'<text x="{x + width}" y="{y + 19}" font-size="9" text-anchor="end" fill="#777777">2</text>')
    return out


# --------------------------------------------------------------------------- the blamed line


def _field(blame: Any, *names: str) -> Any:
    """The first of these attributes (or keys) that is set, else None."""
    for name in names:
        value = blame.get(name) if isinstance(blame, Mapping) else getattr(blame, name, None)
        if value is not None and not (isinstance(value, str) and not value):
            return value
    return None


def blame_parts(p: ParamResult) -> tuple[str, str, list[str]]:
    """(where, source line, what the line computes) of the line blamed for `p`; empty when none is known.

    Read through getattr: a `blame` with file, line, function, source, equals, should_be and
    reason (gradcheck.blame), a mapping with those keys, or a plain string. Without a line, the
    reason no line is blamed is the one thing said.
    """
    blame = getattr(p, "blame", None)
    if blame is None:
        return "", "", []
    if isinstance(blame, str):
        return "", blame.strip(), []
    line = _field(blame, "line", "lineno")
    if not isinstance(line, int) or isinstance(line, bool):
        reason = _field(blame, "reason", "message")
        return "", "", [f"no line blamed: {reason}"] if reason else []
    function = _field(blame, "function")
    where = f"{_field(blame, 'file', 'filename', 'path') or '?'}:{line}" + (f" in {function}" if function else "")
    equals, should_be = _field(blame, "equals"), _field(blame, "should_be")
    notes = ([f"there it equals {equals}"] if equals else []) + ([f"it should be {should_be}"] if should_be else [])
    return where, str(_field(blame, "source", "code") or "").strip(), notes


# --------------------------------------------------------------------------- HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _notes(report: Report) -> list[str]:
    """References that did not run, sampling, and warnings, one sentence each."""
    skipped = [r for r in report.references if not r.ran]
    notes = [f"{r.name} reference did not run: {r.reason}" for r in skipped]
    if report.plan.get("numeric") == "sampled":
        notes.append(f"finite differences checked a sample of {report.plan.get('numeric_elements')} elements "
                     f"(seed {report.seed})")
    notes += [f"warning: {w}" for w in report.warnings
              if not any(r.reason and w.endswith(r.reason) for r in skipped)]
    undrawn = [p.name for p in report.failures[MAX_HEATMAPS:]]
    if undrawn:
        notes.append(f"heatmaps are drawn for the first {MAX_HEATMAPS} failing parameters; not for "
                     f"{', '.join(undrawn)}")
    return notes


def _table_html(report: Report) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in COLUMNS)
    body = []
    for p in report.parameters:
        v = verdict(p)
        colour = _FAIL if v == "FAIL" else (_KINK if v == "PASS*" else _PASS)
        cells = table_row(p)
        cells[2] = f"{_MARK[v]} {v}"
        tds = "".join(f'<td style="color:{colour};font-weight:bold">{_e(c)}</td>' if i == 2 else f"<td>{_e(c)}</td>"
                      for i, c in enumerate(cells))
        body.append(f'<tr class="gc-{"fail" if v == "FAIL" else "pass"}">{tds}</tr>')
    return f'<table class="gc-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _finding_lines(p: ParamResult, cause: Callable[[str], str], worst: Callable[[str], str],
                   blamed: Callable[[str, str], str], note: Callable[[str], str]) -> list[str]:
    """A finding's likely cause, worst element, blamed line and notes, each as the renderer writes it."""
    where, source, notes = blame_parts(p)
    out = [cause(p.cause)] if p.cause else []
    out += [worst(worst_line(p))] if worst_line(p) else []
    out += [blamed(where, source)] if where or source else []
    return out + [note(n) for n in notes]


def _finding_html(p: ParamResult, svg: str) -> str:
    title = p.diagnosis + (f" x{p.factor:.8g}" if p.factor is not None else "") + (
        f" \u2194 {p.swapped_with}" if p.swapped_with else "")
    text = [f"<h4>{_e(p.name)}: {_e(title)}</h4>", f'<p class="gc-detail">{_e(p.detail)}</p>']
    text += _finding_lines(
        p, lambda cause: f'<p class="gc-cause"><b>likely cause:</b> {_e(cause)}</p>',
        lambda worst: f'<p class="gc-worst"><code>{_e(worst)}</code></p>',
        lambda where, source: f'<p class="gc-blame"><b>blamed line:</b> {_e(where)}</p>'
        + (f'<pre class="gc-line">{_e(source)}</pre>' if source else ""),
        lambda note: f'<p class="gc-blame-note">{_e(note)}</p>')
    return (f'<div class="gc-finding" data-parameter="{_e(p.name)}">'
            + (f'<div class="gc-map">{svg}<div class="gc-caption">relative error per element:<br>'
               f'|yours - reference| / max(|yours|, |reference|)</div></div>' if svg else "")
            + f'<div class="gc-text">{"".join(text)}</div></div>')


def _heatmaps(report: Report) -> list[tuple[ParamResult, str]]:
    """Each failing parameter with its heatmap (drawn for the first MAX_HEATMAPS of them only)."""
    return [(p, heatmap_svg(p) if n < MAX_HEATMAPS else "") for n, p in enumerate(report.failures)]


def report_html(report: Report) -> str:
    """The report as an HTML fragment for Jupyter's `_repr_html_`."""
    colour = _PASS if report.passed else _FAIL
    mark = _MARK["PASS" if report.passed else "FAIL"]
    parts = ['<div class="gradcheck-report">', _STYLE,
             f'<p class="gc-verdict" style="color:{colour}">{mark} {_e(headline(report))}</p>']
    ran = [r for r in report.references if r.ran]
    if ran:
        parts.append('<ul class="gc-refs">' + "".join(f"<li><b>{_e(r.name)}</b>: {_e(r.method)}</li>" for r in ran)
                     + "</ul>")
    parts.append(_table_html(report))
    parts += [_finding_html(p, svg) for p, svg in _heatmaps(report)]
    kinks = [p for p in report.parameters if p.passed and p.diagnosis == "nondifferentiable"]
    parts += [f'<p class="gc-kink" style="color:{_KINK}">{_e(p.name)}: {_e(p.detail)}</p>' for p in kinks]
    notes = _notes(report)
    if notes:
        parts.append('<ul class="gc-notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</div>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(value: Any) -> str:
    """Text safe in Markdown: HTML escaped, Markdown's own marks backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(value), quote=False)).replace("\n", " ")


def _finding_markdown(p: ParamResult, svg: str) -> list[str]:
    lines = ["", f"**{_md(p.name)}**: {_md(p.detail)}"]
    lines += _finding_lines(
        p, lambda cause: f"- likely cause: {_md(cause)}", lambda worst: f"- {_md(worst)}",
        lambda where, source: f"- blamed line: {_md(where)}" + (f" `{source.replace('`', chr(39))}`" if source else ""),
        lambda note: f"- {_md(note)}")
    if svg:
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        lines += ["", f"![relative error per element of {_md(p.name)}](data:image/svg+xml;base64,{data})"]
    return lines


def report_markdown(report: Report) -> str:
    """The report as Markdown, for front-ends that show `_repr_markdown_` (heatmaps as SVG images)."""
    mark = _MARK["PASS" if report.passed else "FAIL"]
    lines = [f"**{mark} {_md(headline(report))}**", ""]
    lines += [f"- {_md(r.name)}: {_md(r.method)}" for r in report.references if r.ran]
    lines += ["", "| " + " | ".join(_md(c) for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for p in report.parameters:
        cells = table_row(p)
        cells[2] = f"{_MARK[verdict(p)]} {verdict(p)}"
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    for p, svg in _heatmaps(report):
        lines += _finding_markdown(p, svg)
    notes = _notes(report)
    if notes:
        lines += [""] + [f"- {_md(n)}" for n in notes]
    return "\n".join(lines)
