"""Which code is the learner's, and their error as they should see it.

One answer to "is this frame the user's?" serves every place that asks: the traceback a
UserCodeError carries, the 'file:line' a message names, the functions a re-run rebinds, the
frames a recording follows. gradcheck's own frames never reach the learner.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import site
import sys
import sysconfig
import traceback
from typing import Any, Callable

from ..errors import UserCodeError

#: gradcheck's own directory: its frames are never the user's.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: What the user's code may raise and the check turns into UserCodeError: every Exception, and
#: SystemExit (a script's sys.exit() left in a function must not end the caller's process).
#: KeyboardInterrupt and the rest of BaseException propagate as they are.
USER_FAILURES = (Exception, SystemExit)
#: Array libraries whose code is never the learner's, wherever they are installed.
LIBRARIES = ("numpy", "jax", "jaxlib", "scipy", "sympy", "mpmath", "ml_dtypes", "opt_einsum")


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the standard library's directories, the directories packages are installed in)."""
    paths = sysconfig.get_paths()
    stdlib = {paths[k] for k in ("stdlib", "platstdlib")}
    packages = {paths[k] for k in ("purelib", "platlib")}
    packages.update(getattr(site, "getsitepackages", lambda: [])())
    packages.add(getattr(site, "getusersitepackages", lambda: "")() or "")
    return tuple(os.path.realpath(p) + os.sep for p in stdlib if p), \
        tuple(os.path.realpath(p) + os.sep for p in packages if p)


@functools.lru_cache(maxsize=1)
def _worked_examples() -> tuple[str, ...]:
    """Where gradcheck's worked examples live: learner-style code, wherever it is installed."""
    spec = importlib.util.find_spec("gradcheck.worked_examples")
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    return tuple(os.path.realpath(p) + os.sep for p in locations)


def _libraries() -> tuple[str, ...]:
    """The directories of the array libraries loaded so far."""
    out = []
    for name in LIBRARIES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            out.append(os.path.dirname(os.path.realpath(path)) + os.sep)
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def is_user_file(filename: str, *, packages: bool = False) -> bool:
    """Whether code from this file is the user's: not gradcheck's, the standard library's or an
    array library's. Code of other installed packages counts with `packages` (a course's package
    a recording should follow), not without (a helper library a re-run must leave alone)."""
    if filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):
        return True  # <stdin>, <string>, notebooks' <ipython-input-...>
    path = os.path.realpath(filename)
    stdlib, installed = _installed()
    if path.startswith(_worked_examples()):
        return True
    if path.startswith(PACKAGE_DIR) or path.startswith(_libraries()):
        return False
    if path.startswith(installed) or any(part in ("site-packages", "dist-packages") for part in path.split(os.sep)):
        return packages
    return not path.startswith(stdlib)


def is_user_code(fn: Any) -> bool:
    """Whether a Python function was written by the user (not numpy, a library or gradcheck)."""
    return is_user_file(fn.__code__.co_filename)


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(PACKAGE_DIR)]


def user_traceback(exc: BaseException) -> str:
    """Format `exc`'s traceback without gradcheck's own frames."""
    lines = traceback.format_list(_user_frames(exc)) + traceback.format_exception_only(type(exc), exc)
    return "Traceback (most recent call last):\n" + "".join(lines)


def user_location(exc: BaseException) -> str:
    """'file:line (source)' of the innermost frame of the user's own code in `exc`'s traceback
    (else of the innermost frame that is not gradcheck's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_user_file(f.filename)] or _user_frames(exc)
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno}" + (f" ({f.line.strip()})" if f.line else "")


def skip_leading(exc: BaseException, also: tuple[str, ...] = ()) -> BaseException:
    """Start `exc`'s traceback at its first frame outside gradcheck (and `also`), in place."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and \
            tb.tb_frame.f_code.co_filename.startswith((PACKAGE_DIR, *also)):
        tb = tb.tb_next
    exc.__traceback__ = tb
    return exc


def user_error(exc: BaseException, what: str, where: str = "") -> UserCodeError:
    """The UserCodeError for `exc` raised by the user's `what` ("loss", "gradient function")."""
    if isinstance(exc, SystemExit):
        message = (f"your {what} called sys.exit({exc.code!r}){where}: a {what} must return, not end the "
                   f"program. Remove the exit (raise an exception for a real error).")
    else:
        message = f"your {what} raised {type(exc).__name__}: {exc}{where}"
    return UserCodeError(message, where=user_location(exc), user_traceback=user_traceback(exc))


def call_user(fn: Callable, what: str, *a: Any, **kw: Any) -> Any:
    """Call the user's `fn`; what it raises (sys.exit included) becomes a UserCodeError with its traceback."""
    try:
        return fn(*a, **kw)
    except USER_FAILURES as exc:  # the user's code, shown with its own traceback
        raise user_error(exc, what) from exc
