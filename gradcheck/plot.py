"""Pictures of a check: where the gradient is wrong, and why finite differences can be trusted.

`plot_report(report, path, sweep=...)` draws, per parameter, a heatmap of the relative error
of each element (wrong elements in red, the diagnosis in the title) and, below, the error of
a central difference against its step h for one element: the V of truncation error (~h^2,
step too large) and round-off (~eps |f| / h, step too small), with the step gradcheck chose
and how far off your gradient is, for scale.

matplotlib is optional (`pip install 'gradcheck[plot]'`) and imported only here, inside the
functions; the figure is drawn with the Agg canvas, without pyplot's global state.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError, ReferenceUnavailable
from .model import ParamResult, Report
from .objective import Objective

#: The relative errors shown: machine precision up to the largest possible (|a-b|/max(|a|,|b|) <= 2).
REL_FLOOR, REL_CEIL = 1e-16, 2.0
#: Leaves with at most this many elements get their values written in the cells.
ANNOTATE_MAX = 48
#: At most this many parameter panels; the rest are named in a footnote.
MAX_PANELS = 12
_FORMATS = ("png", "svg", "pdf")
_RED, _GREEN = "#b2182b", "#1b7837"


@dataclass(frozen=True)
class StepSweep:
    """Central-difference error against step size for one element."""

    name: str                  # e.g. "W1[0, 2]"
    h: np.ndarray              # the steps
    err: np.ndarray            # |D(h) - reference| for each step
    step: float                # the step gradcheck's finite differences start from
    reference: float           # the best available derivative of this element
    reference_error: float     # its error estimate
    method: str                # how the reference was computed
    loss_value: float
    refined: float             # |Richardson estimate - reference| at the chosen step
    yours: float | None = None  # the learner's value for this element, when known

    def __iter__(self):
        """Unpack as (h, err)."""
        return iter((self.h, self.err))


# --------------------------------------------------------------------------- the sweep


def objective_for(loss: Callable | None, params: Any, args: Sequence[Any] = (), *, kwargs: dict | None = None,
                  value_and_grad: Callable | None = None) -> Objective:
    """The loss as gradcheck's safe Objective, validated as `check` validates it."""
    from .case import prepare

    if value_and_grad is not None:
        def loss(p: Any, *a: Any, **kw: Any) -> Any:
            return value_and_grad(p, *a, **kw)[0]

    def same(p: Any, *a: Any, **kw: Any) -> Any:  # a "gradient" shaped like params, to reuse prepare()
        return p

    return prepare(loss, same, params, args, kwargs=kwargs).objective


def step_sweep(objective: Objective, leaf: int | str, index: Sequence[int] | int = (), *,
               yours: float | None = None, reference: float | None = None, num: int = 53) -> StepSweep:
    """|D(h) - reference| for central differences D(h) of one element, h from 1e-14 to 1e-1.

    `leaf` is the leaf's position or name, `index` the element's index in the leaf's shape.
    Without `reference`, gradcheck's own finite-difference reference is computed for the
    element (complex step where the loss allows it, else Richardson extrapolation).
    """
    from .references.numeric import BASE_STEP, element_steps, numeric_gradient, richardson
    from .tree import leaf_names

    names = leaf_names(objective.treedef)
    k = names.index(leaf) if isinstance(leaf, str) else int(leaf)
    x0 = [x.copy() for x in objective.x0]
    shape = x0[k].shape
    flat = int(np.ravel_multi_index(tuple(np.atleast_1d(index)), shape)) if shape else 0
    f0 = objective(x0)
    selection = [np.array([flat] if n == k else [], dtype=np.int64) for n in range(len(x0))]
    ref = numeric_gradient(objective, selection, f0=f0, names=names)
    ref_value = float(ref.values[k].reshape(-1)[flat]) if reference is None else float(reference)
    step = float(element_steps(x0[k], BASE_STEP)[flat])
    h = np.logspace(min(-14.0, np.log10(step) - 4), max(-1.0, np.log10(step) + 2), num)
    x = float(x0[k].reshape(-1)[flat])
    d = np.array([(objective(objective.perturb(x0, k, flat, x + s)) - objective(objective.perturb(x0, k, flat, x - s)))
                  / (2 * s) for s in h])
    element = names[k] + ("" if not shape else "[" + ", ".join(map(str, np.unravel_index(flat, shape))) + "]")
    refined = richardson(objective, x0, k, flat, step, f0, element)[0]
    return StepSweep(name=element, h=h, err=np.abs(d - ref_value), step=step, reference=ref_value,
                     reference_error=float(ref.errors[k].reshape(-1)[flat]), method=ref.method,
                     loss_value=float(f0), refined=abs(float(refined) - ref_value), yours=yours)


def sweep_element(report: Report) -> ParamResult | None:
    """The parameter whose worst element the sweep should show: the worst failure, else the worst element."""
    located = [p for p in report.parameters if p.worst_index is not None and p.reference is not None]
    failed = [p for p in located if not p.passed]
    pool = failed or located
    return max(pool, key=lambda p: p.max_rel_error if np.isfinite(p.max_rel_error) else 1e300) if pool else None


def sweep_for_report(report: Report, objective: Objective) -> StepSweep | None:
    """The step sweep for the report's most telling element (None if no element was compared)."""
    p = sweep_element(report)
    if p is None or p.worst_index is None:
        return None
    return step_sweep(objective, p.name, p.worst_index, yours=p.yours, reference=p.reference)


# --------------------------------------------------------------------------- drawing


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.backends.backend_agg  # the Agg canvas: files only, no window, no pyplot
        import matplotlib.figure
    except ImportError as exc:
        raise ReferenceUnavailable(f"matplotlib is missing: pip install 'gradcheck[plot]' ({exc})") from None
    return matplotlib


def require_matplotlib() -> None:
    """Raise the 'matplotlib is missing' error now, before a long check, rather than after."""
    _matplotlib()


def plot_report(report: Report, path: str | Path, *, sweep: StepSweep | None = None, dpi: int = 90) -> Path:
    """Draw the report's heatmaps (and the step sweep, if given) to `path` (.png, .svg or .pdf), atomically."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in _FORMATS:
        raise ConfigError(f"cannot write a plot to {path.name!r}: name a .png, .svg or .pdf file.")
    _matplotlib()
    fig = _figure(report, sweep)
    _save_atomically(fig, path, fmt, dpi)
    return path


def _save_atomically(fig: Any, path: Path, fmt: str, dpi: int) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=f".{fmt}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, metadata={"Software": "gradcheck"} if fmt == "png" else None)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _panels(report: Report) -> tuple[list, list, list]:
    """(array leaves, scalar leaves, leaves left out): scalars share one panel, failures come first."""
    params = sorted(report.parameters, key=lambda p: p.passed)
    scalars = [p for p in params if _is_scalar(p)]
    arrays = [p for p in params if not _is_scalar(p)]
    room = MAX_PANELS - (1 if scalars else 0)
    return arrays[:room], scalars, [p.name for p in arrays[room:]]


def _is_scalar(p: ParamResult) -> bool:
    return int(np.prod(p.shape)) == 1 and p.diagnosis != "wrong_shape"


def _figure(report: Report, sweep: StepSweep | None) -> Any:
    from matplotlib.figure import Figure

    arrays, scalars, left_out = _panels(report)
    n = len(arrays) + (1 if scalars else 0)
    ncols = min(n, 3) or 1
    nrows = -(-n // ncols) if n else 0
    only_scalars = bool(scalars) and not arrays
    heat_h, sweep_h = 0.8 + (1.4 if only_scalars else 2.4) * nrows, (3.4 if sweep is not None else 0.0)
    fig = Figure(figsize=(10, heat_h + sweep_h), layout="constrained")
    top: Any = fig
    bottom: Any = None
    if sweep is not None:
        panels: Any = fig.subfigures(2, 1, height_ratios=[heat_h, max(sweep_h, 1e-3)])  # an array of two
        top, bottom = panels
    cmap, norm, threshold = _colours(report)
    grid = top.add_gridspec(max(nrows, 1), ncols)
    axes, image = [], None
    for i, p in enumerate(arrays):
        axes.append(top.add_subplot(grid[i // ncols, i % ncols]))
        image = _heatmap(axes[-1], p, cmap, norm) or image
    if scalars:
        i = len(arrays)
        axes.append(top.add_subplot(grid[i // ncols, i % ncols]))
        image = _scalar_panel(axes[-1], scalars, cmap, norm) or image
    if image is not None:
        _colourbar(top, axes, image, threshold)
    if bottom is not None and sweep is not None:
        _sweep_panel(bottom.add_subplot(), sweep)
    _headline(top, report)
    if left_out:
        fig.text(0.01, 0.002, f"not shown: {', '.join(left_out)}", fontsize=7, color="0.4", va="bottom")
    return fig


def _headline(fig: Any, report: Report) -> None:
    bad = len(report.failures)
    state = "PASSED" if report.passed else f"FAILED: {bad} of {len(report.parameters)} parameters wrong"
    refs = ", ".join(f"{r.name} ({r.method.split(' (')[0]})" for r in report.references if r.ran)
    title = (f"{report.title}: " if report.title else "") + f"gradient check {state}"
    fig.suptitle(f"{title}\nreferences: {refs}", fontsize=10, color=_GREEN if report.passed else _RED,
                 fontweight="bold")


def _colourbar(fig: Any, axes: list, image: Any, threshold: float) -> None:
    """The shared relative-error scale, with the tolerance marked where blue turns red."""
    bar = fig.colorbar(image, ax=axes, shrink=0.95, pad=0.02, aspect=20)
    decades = [10.0 ** e for e in range(-16, 1, 4) if abs(e - np.log10(threshold)) > 1.5]
    ticks = sorted(decades + [threshold])
    bar.set_ticks(ticks, labels=[f"tol {t:.0e}" if t == threshold else f"1e{int(np.log10(t))}" for t in ticks])
    bar.ax.axhline(threshold, color="black", lw=1.5)
    bar.set_label("relative error per element\n|yours - ref| / max(|yours|, |ref|)", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _colours(report: Report) -> tuple[Any, Any, float]:
    """A log colour scale whose calm part (blues) ends at the tolerance and whose alarm part (reds) starts there."""
    import matplotlib.colors as mcolors
    from matplotlib import colormaps

    failed = [p.rtol for p in report.parameters if not p.passed and p.rtol > 0]
    rtols = failed or [p.rtol for p in report.parameters if p.rtol > 0] or [1e-8]
    threshold = float(np.clip(min(rtols), REL_FLOOR * 10, REL_CEIL / 10))
    norm = mcolors.LogNorm(REL_FLOOR, REL_CEIL)
    split = float(norm(threshold))
    n_low, n_high = max(int(256 * split), 2), max(int(256 * (1 - split)), 2)
    low = colormaps["Blues"](np.linspace(0.08, 0.45, n_low))
    high = colormaps["YlOrRd"](np.linspace(0.45, 1.0, n_high))
    return mcolors.ListedColormap(np.vstack([low, high]), name="gradcheck"), norm, threshold


def _as_2d(values: np.ndarray) -> np.ndarray:
    """0-d as one cell, 1-D as a row, >2-D folded to (first axis, rest)."""
    if values.ndim == 0:
        return values.reshape(1, 1)
    if values.ndim == 1:
        return values.reshape(1, -1)
    return values.reshape(values.shape[0], -1)


def _title(p: ParamResult) -> str:
    shape = "(" + ", ".join(map(str, p.shape)) + ("," if len(p.shape) == 1 else "") + ")"
    diag = p.diagnosis + (f" x{p.factor:.4g}" if p.factor is not None else "") + (
        f" with {p.swapped_with}" if p.swapped_with else "")
    return f"{p.name} {shape}: {'PASS' if p.passed else 'FAIL'}, {diag}"


def _heatmap(ax: Any, p: ParamResult, cmap: Any, norm: Any) -> Any:
    ax.set_title(_title(p), fontsize=9, color=_GREEN if p.passed else _RED, fontweight="bold")
    if p.rel_errors is None:
        _no_data(ax, p)
        return None
    rel = _as_2d(np.clip(np.nan_to_num(np.asarray(p.rel_errors, float), posinf=REL_CEIL), REL_FLOOR, REL_CEIL))
    rows, cols = rel.shape
    image = ax.imshow(rel, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    # Near-square cells for small leaves, but rows stay flat and huge leaves stay on the page.
    ax.set_box_aspect(float(np.clip(rows / cols, 0.25 if rows == 1 else 0.4, 1.5)))
    ax.set_xlabel("column" if np.ndim(p.rel_errors) >= 2 else "index", fontsize=7)
    ax.set_ylabel("row" if np.ndim(p.rel_errors) == 2 else ("axis 0" if np.ndim(p.rel_errors) > 2 else ""), fontsize=7)
    ax.tick_params(labelsize=7)
    if rows == 1:
        ax.set_yticks([])
    _integer_ticks(ax, rows, cols)
    if rel.size <= ANNOTATE_MAX:
        _annotate(ax, rel, norm)
    return image


def _scalar_panel(ax: Any, scalars: list, cmap: Any, norm: Any) -> Any:
    """One row of cells, one per scalar parameter, named on the x axis."""
    rel = np.array([[float(np.clip(np.nan_to_num(np.asarray(p.rel_errors if p.rel_errors is not None else REL_CEIL,
                                                             float).reshape(-1)[0], posinf=REL_CEIL),
                                   REL_FLOOR, REL_CEIL)) for p in scalars]])
    image = ax.imshow(rel, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_box_aspect(float(np.clip(1 / len(scalars), 0.15, 0.3)))
    ax.set_xticks(range(len(scalars)), [p.name for p in scalars], fontsize=8, rotation=0 if len(scalars) < 9 else 45)
    ax.set_yticks([])
    for i, p in enumerate(scalars):
        ax.get_xticklabels()[i].set_color(_GREEN if p.passed else _RED)
    bad = [p for p in scalars if not p.passed]
    by_diagnosis: dict = {}
    for p in bad:
        by_diagnosis.setdefault(p.diagnosis, []).append(p.name)
    title = "scalar parameters: " + ("; ".join(f"{d}: {', '.join(names)}" for d, names in by_diagnosis.items())
                                     if bad else "all PASS")
    ax.set_title(title, fontsize=9, color=_RED if bad else _GREEN, fontweight="bold")
    if rel.size <= ANNOTATE_MAX:
        _annotate(ax, rel, norm)
    return image


def _integer_ticks(ax: Any, rows: int, cols: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=min(cols, 8), integer=True))
    if rows > 1:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=min(rows, 6), integer=True))


def _annotate(ax: Any, rel: np.ndarray, norm: Any) -> None:
    """Write each cell's relative error in it (dark text on light cells, light on dark)."""
    size = 7 if rel.size <= 24 else 5.5
    for (r, c), v in np.ndenumerate(rel):
        text = "0" if v <= REL_FLOOR else f"{v:.0e}".replace("e-0", "e-").replace("e+00", "")
        ax.text(c, r, text, ha="center", va="center", fontsize=size, color="white" if norm(v) > 0.85 else "black")


def _no_data(ax: Any, p: ParamResult) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, _wrap(p.detail, 40), ha="center", va="center", fontsize=8, color=_RED, transform=ax.transAxes)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:7])


def _sweep_panel(ax: Any, s: StepSweep) -> None:
    """Log-log error of the central difference against h: the V, the chosen step, your error."""
    eps = np.finfo(np.float64).eps
    scale = max(abs(s.reference), 1e-300)
    floor = eps * scale * 1e-2
    err = np.maximum(s.err, floor)
    ax.loglog(s.h, err, "o-", ms=3, lw=1.2, color="#2166ac", label="central difference (f(x+h) - f(x-h)) / 2h")
    # Guides: round-off grows as eps |f| / h, truncation as h^2; their crossing is the V's bottom.
    f = max(abs(s.loss_value), 1e-300)
    roundoff = eps * f / s.h
    ax.loglog(s.h, roundoff, ":", color="0.45", lw=1, label="round-off ~ eps |f| / h  (step too small)")
    i_big = np.argmin(np.abs(np.log10(s.h) - np.log10(s.h[-1]) + 0.5))
    c2 = err[i_big] / s.h[i_big] ** 2
    ax.loglog(s.h, c2 * s.h ** 2, "--", color="0.45", lw=1, label="truncation ~ h^2  (step too large)")
    at = float(np.interp(np.log10(s.step), np.log10(s.h), np.log10(err)))
    ax.axvline(s.step, color="black", lw=1)
    ax.plot([s.step], [10 ** at], "D", color="black", ms=7, zorder=5, label=f"gradcheck's step h = {s.step:.1e}")
    refined = max(s.refined, floor)
    ax.annotate("", xy=(s.step, refined), xytext=(s.step, 10 ** at), zorder=6,
                arrowprops={"arrowstyle": "->", "color": "#1b7837", "lw": 1.5})
    ax.plot([s.step], [refined], "*", color="#1b7837", ms=12, zorder=6,
            label="the same step after Richardson\nextrapolation (h, h/2, h/4)")
    lo, hi = min(float(np.min(err)), refined), float(np.max(err))
    if s.yours is not None and abs(s.yours - s.reference) > 0:
        off = abs(s.yours - s.reference)
        ax.axhline(off, color=_RED, lw=2, label=f"your gradient's error: |{s.yours:.6g} - ({s.reference:.6g})|")
        best = float(np.min(err))
        verdict = (f"your gradient is off by {off:.2g}: {off / best:.0e} times the best finite-difference error"
                   if off > 100 * best else f"your gradient is off by {off:.2g}, within finite-difference noise")
        ax.text(s.h[-1] / 1.5, off * 1.6, verdict, color=_RED, fontsize=8, ha="right", va="bottom", fontweight="bold",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1})
        lo, hi = min(lo, off), max(hi, off)
    ax.set_ylim(max(lo / 10, floor), hi * 100)
    ax.set_xlim(s.h[0], s.h[-1])
    ax.set_xlabel("step h", fontsize=8)
    ax.set_ylabel("|estimate - reference|", fontsize=8)
    ax.set_title(f"Finite differences for {s.name}: error against the step h "
                 f"(reference {s.reference:.10g}, by {s.method.split(' (')[0]})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
