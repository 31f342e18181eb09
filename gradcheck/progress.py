"""Progress of a long check: a bar on a terminal's stderr, a line updated in place in a notebook.

Nothing is shown when the output is not interactive (a pipe, a log, pytest's capture), nor for
a check that ends within `delay` seconds. Standard library only: importing this costs nothing.

    with Progress("checking") as bar:           # the CLI: one line per case
        report = gradcheck.check(...)           # check(progress="auto") reports to the active line

`check(..., progress=...)` takes "auto" (the default: the active `Progress`, else one of its own
when interactive), False or None (off), a `Progress`, or a function `f(done, total)`.
"""

from __future__ import annotations

import contextvars
import html
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

from .errors import InvalidCase

#: The line that checks started inside `with Progress(...)` report to.
_ACTIVE: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("gradcheck_progress", default=None)

FRAMES = "|/-\\"
#: Seconds a check runs before its progress line appears: quick checks print nothing.
DELAY = 1.0
#: Seconds between redraws of the line.
INTERVAL = 0.2


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython already imported by it; never imported here)."""
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an unusual IPython is no notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive_mode(stream: Any) -> str | None:
    """'terminal' for a terminal stream, 'notebook' inside a Jupyter kernel, None otherwise."""
    if _isatty(stream) and os.environ.get("TERM") != "dumb":
        return "terminal"
    return "notebook" if in_notebook() else None


def format_line(label: str, elapsed: float, *, frame: int = 0, stage: str = "", done: int = 0, total: int = 0,
                width: int = 24) -> str:
    """'| checking... finite differences [#####.....] 120/500 elements 3s' (the bar only with a total)."""
    spin = FRAMES[frame % len(FRAMES)]
    text = f"{spin} {label}..."
    if stage:
        text += f" {stage}"
    if total > 0:
        filled = min(width, int(width * done / total))
        text += f" [{'#' * filled}{'.' * (width - filled)}] {min(done, total)}/{total} elements"
    return f"{text} {elapsed:.0f}s"


class _Line:
    """What a notebook shows: an HTML <progress> bar, or the text line in plain front-ends."""

    def __init__(self, text: str, done: int = 0, total: int = 0):
        self.text, self.done, self.total = text, done, total

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        bar = (f'<progress value="{min(self.done, self.total)}" max="{self.total}" style="width:12em"></progress> '
               if self.total > 0 else "")
        return f'<div style="font-family:monospace">{bar}{html.escape(self.text)}</div>'


def _ipython_display(obj: Any) -> Any:
    # Only reached inside a kernel, where IPython is loaded; gradcheck does not depend on it.
    from IPython.display import display  # type: ignore[import-not-found, unused-ignore]

    return display(obj, display_id=True)


class Progress:
    """One status line for a running check: a spinner with elapsed seconds, and a bar while a stage counts.

    On a terminal the line is written to `stream` (stderr) and erased at the end; in a notebook it is
    one output updated in place, left showing the time taken. `enabled=False`, a stream that is not a
    terminal outside a notebook, or a check shorter than `delay` seconds show nothing.
    """

    def __init__(self, label: str = "checking", stream: TextIO | None = None, *, enabled: bool = True,
                 mode: str | None = "auto", delay: float | None = None, interval: float | None = None,
                 display: Callable[[Any], Any] | None = None):
        self.label, self.stream = label, stream or sys.stderr
        self.delay = DELAY if delay is None else delay
        self.interval = INTERVAL if interval is None else interval
        self.mode = (interactive_mode(self.stream) if mode == "auto" else mode) if enabled else None
        self._display = display or _ipython_display
        self._handle: Any = None
        self._stage, self._done, self._total = "", 0, 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: Any = None
        self._start = time.monotonic()
        self.shown = False

    # ------------------------------------------------------------------ the check's side

    @property
    def running(self) -> bool:
        """Inside its `with` block."""
        return self._token is not None

    def __enter__(self) -> Progress:
        self._token = _ACTIVE.set(self)
        self._start = time.monotonic()
        self._stop, self._handle, self.shown = threading.Event(), None, False  # a line can be used again
        if self.mode is not None:
            self._thread = threading.Thread(target=self._tick, name="gradcheck-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if self.shown:
            self._finish()

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        """Show `name` with a bar of `total` elements while the block runs; yields the `tick(done)` callback."""
        with self._lock:
            self._stage, self._done, self._total = name, 0, int(total)
        try:
            yield self.update
        finally:
            with self._lock:
                self._stage, self._done, self._total = "", 0, 0

    def update(self, done: int) -> None:
        """Record how many elements of the current stage are done (the finite differences' callback)."""
        self._done = int(done)

    # ------------------------------------------------------------------ the drawing side

    def line(self, frame: int = 0) -> str:
        """The status line as it stands now."""
        with self._lock:
            stage, done, total = self._stage, self._done, self._total
        return format_line(self.label, time.monotonic() - self._start, frame=frame, stage=stage, done=done,
                           total=total)

    def _tick(self) -> None:
        if self._stop.wait(self.delay):
            return
        frame = 0
        while not self._stop.is_set():
            self._draw(self.line(frame))
            frame += 1
            self._stop.wait(self.interval)

    def _draw(self, text: str) -> None:
        try:
            if self.mode == "terminal":
                # Never wider than the terminal: a wrapped line could not be redrawn in place.
                text = text[:max(20, shutil.get_terminal_size().columns - 2)]
                self.stream.write(f"\r{text} \x1b[K")
                self.stream.flush()
            elif self._handle is None:
                self._handle = self._display(_Line(text, self._done, self._total))
            else:
                self._handle.update(_Line(text, self._done, self._total))
            self.shown = True
        except Exception:  # noqa: BLE001 - a closed stream or a front-end hiccup must not stop the check
            self._stop.set()

    def _finish(self) -> None:
        try:
            if self.mode == "terminal":
                self.stream.write("\r\x1b[K")  # erase the line: the report follows
                self.stream.flush()
            elif self._handle is not None:
                self._handle.update(_Line(f"{self.label}: done in {time.monotonic() - self._start:.1f}s"))
        except Exception:  # noqa: BLE001
            pass


@contextmanager
def stage(progress: Any, name: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """The `tick(done)` callback for a counted step of a check, from check's `progress=` option."""
    if progress is None or progress is False:
        yield None
    elif isinstance(progress, Progress):
        if progress.running:
            with progress.stage(name, total) as tick:
                yield tick
        else:
            with progress, progress.stage(name, total) as tick:
                yield tick
    elif callable(progress):
        yield lambda done: progress(done, total)
    elif progress is True or (isinstance(progress, str) and progress == "auto"):
        active = _ACTIVE.get()
        if active is not None:  # a line the caller opened (the CLI's): report to it
            with active.stage(name, total) as tick:
                yield tick
        else:
            with Progress("checking gradients") as line, line.stage(name, total) as tick:
                yield tick
    else:
        raise InvalidCase(f"progress={progress!r} is not valid: give 'auto', True, False, a gradcheck.progress."
                          f"Progress, or a function f(done, total).")
