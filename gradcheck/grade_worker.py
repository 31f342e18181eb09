"""The child process of `check-gradients grade`: check one submission, write the result as JSON.

    python -m gradcheck.grade_worker JOB.json

`gradcheck.grade` starts it in the submission's folder, in a process group of its own, with
stdin closed and its output going to a file. It caps its own address space first (before
numpy or JAX reserve any), resolves the targets (the student's from the folder, `course:`
ones from the course's), runs the check and writes the result file atomically. Whatever the
student's code does (raise, `sys.exit`, `os._exit`, loop forever), the parent reads only that
file, the exit status and the captured output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence


def cap_memory(megabytes: int | None) -> bool:
    """Limit this process's address space (RLIMIT_AS) where the platform allows; True if capped."""
    if not megabytes:
        return False
    try:
        import resource
    except ImportError:  # not a POSIX platform: no cap
        return False
    limit = int(megabytes) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):  # e.g. a platform that does not enforce it
        return False
    return True


def block_unasked_jax(against: Any) -> bool:
    """Keep JAX out of a child whose references do not include it; True if kept out.

    Importing JAX costs a child one to three seconds; where the course checks against other
    references, what else would load it (the line blame of a failing gradient) falls back to
    finite differences. A student's own `import jax` then fails: name jax in `against`.
    """
    names = [against] if isinstance(against, str) else list(against or ["auto"])
    if any(n in ("jax", "auto", "all") for n in names) or "jax" in sys.modules:
        return False
    sys.modules["jax"] = None  # type: ignore[assignment]  # the documented way to make an import fail
    return True


def _forget_cwd() -> None:
    """The submission's folder enters sys.path only while its targets import, never ahead of gradcheck's."""
    here = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", here)]


def _resolve(job: dict) -> dict:
    """The case's objects: each target loaded from the submission's folder or, with `course:`, the course's."""
    from .config import call_data, load_target
    from .grade import split_target

    caches: dict = {"course": {}, "student": {}}
    roots = {"course": Path(job["course_root"]), "student": Path(job["folder"])}
    objs = {}
    for role, written in job["targets"].items():
        side, target = split_target(written)
        obj = load_target(target, roots[side], modules=caches[side])
        if role in ("params", "args") and callable(obj):
            obj = call_data(obj, role, written, job["student"])
        objs[role] = obj
    return objs


def _error(exc: BaseException, status: str = "error") -> dict:
    cause = exc.__cause__
    return {"status": status, "error": {"type": type(exc).__name__, "message": str(exc),
                                        "cause": type(cause).__name__ if cause is not None else "",
                                        "where": getattr(exc, "where", "")}}


def run_job(job: dict) -> dict:
    """Check one submission: {"status", "report", "text"} or {"status", "error"}; never raises for the user's code."""
    from .config import run_objects
    from .errors import GradcheckError, StructureMismatch
    from .report import render_text

    try:
        objs = _resolve(job)
        report = run_objects(objs, kind="gradient", title=job["student"], progress=False, **job["options"])
    except StructureMismatch as exc:  # the gradient is shaped unlike the parameters: a wrong answer
        return _error(exc, "failed")
    except GradcheckError as exc:
        return _error(exc)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever escaped becomes the student's row
        return _error(exc)
    return {"status": "passed" if report.passed else "failed", "report": report.to_dict(),
            "text": render_text(report)}


def write_json(path: Path, data: Any) -> None:
    """Write next to the destination, then rename: the parent never reads half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job file named on the command line; the result goes to the file the job names."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    start = time.perf_counter()
    capped = cap_memory(job.get("memory_mb"))
    block_unasked_jax(job["options"].get("against"))
    _forget_cwd()
    result = run_job(job)
    result.update(seconds=time.perf_counter() - start, memory_capped=capped)
    write_json(Path(job["result"]), result)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child of gradcheck.grade
    sys.stdout.flush()
    os._exit(main())  # skip interpreter teardown: a student's atexit handler or thread cannot stall the exit
