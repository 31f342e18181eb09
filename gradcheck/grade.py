"""`check-gradients grade`: check a whole class's backprop, each submission in its own process.

    check-gradients grade submissions/ --loss backprop:loss --grad backprop:grad \\
        --params course:course_data:params --args course:course_data:data --csv gradebook.csv

Each subfolder of the submissions folder is one student. Targets are resolved inside the
student's folder; a target written `course:WHERE:NAME` is resolved from the course's folder
(the one holding the pyproject.toml, or the current one) instead, for data and parameters the
course hands out. The same spec may live in the course's pyproject:

    [tool.gradcheck.grade]
    submissions = "submissions"
    loss = "backprop:loss"
    grad = "backprop:grad"                      # or value_and_grad = "backprop:loss_and_grad"
    params = "course:course_data:params"
    args = "course:course_data:data"
    timeout = 60                                # seconds per submission
    memory_mb = 4096                            # address-space cap per submission (Linux, macOS)
    points = 100                                # shared equally by the parameters, or {W1 = 40, b1 = 10, ...}

A submission's child process (`gradcheck.grade_worker`) gets no stdin, its own process group
(killed whole on timeout), and a memory cap; whatever it does becomes that student's row. This
module runs the children, scores them and writes the gradebooks; it imports no numpy.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from .config import OPTION_KEYS, load_config, parse_target, validate_options
from .errors import ConfigError
from .report import finding_lines

STATUSES = ("passed", "failed", "error", "timeout")
COURSE = "course:"
DEFAULT_TIMEOUT = 60.0
#: A check with JAX and SymPy peaks near 1.6 GB of address space (JAX reserves much it never
#: touches; numpy alone 0.2 GB): 4 GB leaves room for a real model and stops a runaway allocation.
DEFAULT_MEMORY_MB = 4096
DEFAULT_POINTS = 100.0
#: Characters of a submission's own printed output kept for its feedback.
OUTPUT_CHARS = 4000
TARGET_ROLES = ("loss", "grad", "value_and_grad", "params", "args")
_TABLE_KEYS = TARGET_ROLES + ("submissions", "timeout", "memory_mb", "points", "jobs") + OPTION_KEYS
#: The children running now, so an interrupt (Ctrl-C does not reach their own sessions) can stop them.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class GradeSpec:
    """What to check in every submission, and how each child runs."""

    targets: dict                       # role -> target, "course:" ones from course_root
    course_root: Path = Path(".")
    options: dict = field(default_factory=dict)  # check options: against, rtol, atol, seed, budget
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB  # 0: no cap
    points: Any = DEFAULT_POINTS        # a number shared equally, or {parameter: points}
    submissions: Path | None = None

    @property
    def max_score(self) -> float:
        return float(sum(self.points.values())) if isinstance(self.points, dict) else float(self.points)

    def check_options(self) -> dict:
        """The check's options; the budget stays under the timeout so a slow honest check finishes."""
        budget = self.options.get("budget", min(20.0, self.timeout / 2))
        return {**self.options, "budget": budget}


def split_target(target: str) -> tuple[str, str]:
    """("course", "mod:NAME") for "course:mod:NAME"; ("student", target) otherwise."""
    if target.startswith(COURSE):
        return "course", target[len(COURSE):]
    return "student", target


def _check_targets(targets: dict, where: str) -> dict:
    for role, target in targets.items():
        if not isinstance(target, str):
            raise ConfigError(f"{role!r} of {where} must be a target string \"module:NAME\", not {target!r}.")
        parse_target(split_target(target)[1], f"{role!r} of {where}")
    if "value_and_grad" in targets and ({"loss", "grad"} & set(targets)):
        raise ConfigError(f"{where} sets both value_and_grad and loss/grad; give one or the other.")
    needed = ("value_and_grad", "params") if "value_and_grad" in targets else ("loss", "grad", "params")
    missing = [r for r in needed if r not in targets]
    if missing:
        raise ConfigError(f"{where} is missing the target {missing[0]!r}: give --{missing[0].replace('_', '-')} "
                          f"MODULE:NAME or {missing[0]} = \"MODULE:NAME\" in [tool.gradcheck.grade].")
    return targets


def _number(value: Any, what: str, *, integer: bool = False, minimum: float = 0.0) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, (int,) if integer else (int, float))
    if not ok or value < minimum or value != value:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{what} is {value!r}; it must be {kind} of at least {minimum:g}.")
    return value


def _points(value: Any, what: str) -> Any:
    if isinstance(value, dict):
        if not value:
            raise ConfigError(f"{what} is an empty table; give each parameter its points, e.g. {{W1 = 40, b1 = 10}}.")
        return {str(k): float(_number(v, f"{what}.{k}")) for k, v in value.items()}
    return float(_number(value, what, minimum=1e-9))


def spec_from(table: dict | None, *, where: str, course_root: Path, overrides: dict | None = None,
              defaults: dict | None = None) -> tuple[GradeSpec, int | None]:
    """The spec (and the table's `jobs`) from a [tool.gradcheck.grade] table, command-line values winning."""
    raw = {**(table or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = [k for k in raw if k not in _TABLE_KEYS]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; the keys are {', '.join(_TABLE_KEYS)}.")
    targets = _check_targets({r: raw[r] for r in TARGET_ROLES if r in raw}, where)
    options = {**(defaults or {}), **validate_options({k: raw[k] for k in OPTION_KEYS if k in raw}, where)}
    subs = raw.get("submissions")
    spec = GradeSpec(
        targets=targets, course_root=course_root, options=options,
        timeout=float(_number(raw.get("timeout", DEFAULT_TIMEOUT), f"timeout in {where}", minimum=0.1)),
        memory_mb=int(_number(raw.get("memory_mb", DEFAULT_MEMORY_MB), f"memory_mb in {where}", integer=True)),
        points=_points(raw.get("points", DEFAULT_POINTS), f"points in {where}"),
        submissions=None if subs is None else course_root / str(subs))
    jobs = raw.get("jobs")
    return spec, None if jobs is None else int(_number(jobs, f"jobs in {where}", integer=True, minimum=1))


def spec_from_pyproject(path: Path, overrides: dict | None = None) -> tuple[GradeSpec, int | None]:
    """The spec of a course's pyproject.toml ([tool.gradcheck] defaults, then [tool.gradcheck.grade])."""
    config = load_config(path)
    return spec_from(config.grade, where=f"[tool.gradcheck.grade] of {path.as_posix()}", course_root=config.root,
                     overrides=overrides, defaults=config.options)


def submissions_in(folder: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The student folders (sorted; hidden ones and __pycache__ skipped), or the named ones."""
    if not folder.is_dir():
        raise ConfigError(f"the submissions folder {folder.as_posix()!r} does not exist.")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    if only:
        names = {p.name: p for p in found}
        missing = [n for n in only if n not in names]
        if missing:
            raise ConfigError(f"no submission {missing[0]!r} in {folder.as_posix()}.")
        found = [names[n] for n in only]
    if not found:
        raise ConfigError(f"{folder.as_posix()!r} holds no submissions: put each student's files in a subfolder.")
    return found


# --------------------------------------------------------------------------- one submission


@dataclass(frozen=True)
class ParamVerdict:
    """One parameter of one submission: verdict, diagnosis, points."""

    name: str
    verdict: str            # PASS, PASS* (a kink excused) or FAIL
    diagnosis: str
    detail: str = ""
    cause: str = ""
    factor: float | None = None
    worst_index: tuple | None = None
    points: float = 0.0
    max_points: float = 0.0

    @property
    def label(self) -> str:
        """'scaled x8' / 'sign_flipped'."""
        return self.diagnosis + (f" x{self.factor:.6g}" if self.factor is not None else "")


@dataclass(frozen=True)
class Row:
    """One student's line in the gradebook."""

    student: str
    status: str                          # one of STATUSES
    score: float
    max_score: float
    seconds: float
    feedback: str                        # one line
    parameters: tuple = ()
    findings: tuple = ()                 # what the class summary counts
    message: str = ""                    # the full error message, or the report's text
    output: str = ""                     # what the submission printed (tail)
    report: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parameters"] = [asdict(p) for p in self.parameters]
        d["findings"] = list(self.findings)
        return d


def grade_submission(spec: GradeSpec, folder: Path) -> Row:
    """Check one submission in a child process of its own; every outcome becomes its Row."""
    folder = Path(folder).resolve()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradcheck-grade-") as tmp:
        job, result_path, log = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "output.txt"
        job.write_text(json.dumps({
            "student": folder.name, "folder": str(folder), "course_root": str(Path(spec.course_root).resolve()),
            "targets": spec.targets, "options": spec.check_options(), "memory_mb": spec.memory_mb,
            "result": str(result_path)}), encoding="utf-8")
        returncode, timed_out = _run_child(job, folder, log, spec.timeout)
        output = _tail(log)
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
    seconds = time.perf_counter() - start
    return make_row(spec, folder.name, result, seconds=seconds, output=output, returncode=returncode,
                    timed_out=timed_out)


def _run_child(job: Path, folder: Path, log: Path, timeout: float) -> tuple[int | None, bool]:
    """Run the worker with no stdin, output to `log`; kill its whole process group on timeout or exit."""
    env = {**os.environ, "PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    posix = hasattr(os, "killpg")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gradcheck.grade_worker", str(job)], cwd=folder, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=posix)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            if _STOPPING.is_set():  # interrupted while this one started
                _kill_group(proc, posix)
            returncode, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            returncode, timed_out = None, True
        finally:
            _kill_group(proc, posix)  # also what the submission left running in the background
            proc.wait()
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    return returncode, timed_out


def stop_children() -> None:
    """Kill every running child's process group (on an interrupt); later children are killed as they start."""
    _STOPPING.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        _kill_group(proc, hasattr(os, "killpg"))


def _kill_group(proc: subprocess.Popen, posix: bool) -> None:
    if not posix:
        if proc.poll() is None:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-OUTPUT_CHARS:].decode("utf-8", errors="replace")
    return ("...\n" if len(data) > OUTPUT_CHARS else "") + text


def make_row(spec: GradeSpec, student: str, result: dict | None, *, seconds: float, output: str = "",
             returncode: int | None = 0, timed_out: bool = False) -> Row:
    """The gradebook row of one submission, from what its child wrote (or did not)."""
    base: dict[str, Any] = dict(student=student, score=0.0, max_score=spec.max_score, seconds=round(seconds, 3),
                                output=output)
    if timed_out:
        msg = (f"your code did not finish within {spec.timeout:g} s and was stopped: look for a loop that never "
               f"ends, a sleep or a wait for input")
        return Row(status="timeout", feedback=msg, findings=(f"timed out after {spec.timeout:g} s",), message=msg,
                   **base)
    if result is None:
        msg = _died(returncode, spec)
        return Row(status="error", feedback=msg, findings=(_died_finding(returncode),), message=msg, **base)
    if "report" in result:
        return _report_row(spec, result, base)
    return _error_row(spec, result, base)


def _died(returncode: int | None, spec: GradeSpec) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return (f"your code crashed the Python process ({name}) before the check finished: look for os.abort, "
                f"ctypes, or memory use beyond {spec.memory_mb} MB")
    return (f"your code ended the Python process (exit status {returncode}) before the check finished: "
            f"remove os._exit or similar calls from your module")


def _died_finding(returncode: int | None) -> str:
    return "the process crashed" if returncode is not None and returncode < 0 else "the process exited early"


def _error_row(spec: GradeSpec, result: dict, base: dict) -> Row:
    err = result["error"]
    short = _first_line(err["message"])
    if err.get("cause") == "MemoryError" or err["type"] == "MemoryError":
        feedback = f"your code needed more memory than the {spec.memory_mb} MB allowed: {short}"
        finding = "ran out of memory"
    elif err.get("cause") == "SystemExit" or "sys.exit" in err["message"] or err["type"] == "SystemExit":
        feedback, finding = f"your code called sys.exit: {short}", "called sys.exit"
    elif err["message"].startswith("importing the code"):
        feedback, finding = short, f"importing the code raised {err.get('cause') or err['type']}"
    elif result["status"] == "failed":  # a gradient structured unlike the parameters
        feedback, finding = short, "a gradient structured unlike the parameters (missing or extra keys)"
    elif err["type"] == "ReferenceUnavailable":  # the grading's set-up, not the student's code
        feedback = f"the check could not be completed in the time allowed: {short}"
        finding = "no reference could run (give more --timeout or --budget, or --against numeric)"
    elif err["type"] == "ConfigError":
        feedback, finding = short, "the module or function the course asks for is missing"
    else:
        feedback, finding = short, f"the code raised {err.get('cause') or err['type']}"
    return Row(status=result["status"], feedback=feedback, findings=(finding,), message=err["message"], **base)


def _first_line(text: str, width: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _shares(spec: GradeSpec, names: list) -> dict:
    if isinstance(spec.points, dict):
        return {n: spec.points.get(n, 0.0) for n in names}
    return {n: spec.points / len(names) for n in names} if names else {}


def _report_row(spec: GradeSpec, result: dict, base: dict) -> Row:
    params = result["report"]["parameters"]
    shares = _shares(spec, [p["name"] for p in params])
    verdicts = tuple(_verdict(p, shares[p["name"]]) for p in params)
    score = round(sum(v.points for v in verdicts), 4)
    bad = [v for v in verdicts if v.verdict == "FAIL"]
    if not bad:
        feedback = f"every gradient matches ({len(verdicts)} parameters)"
    else:
        by_finding: dict[str, list] = {}
        for v in bad:
            by_finding.setdefault(_finding(v), []).append(v.name)
        feedback = "; ".join(f"{', '.join(names)}: {f}" for f, names in by_finding.items())
    findings = tuple(dict.fromkeys(_finding(v) for v in bad))
    return Row(status=result["status"], feedback=_first_line(feedback, 300), parameters=verdicts,
               findings=findings, message=result.get("text", ""), report=result["report"],
               **{**base, "score": score})


def _verdict(p: dict, share: float) -> ParamVerdict:
    passed = bool(p["passed"])
    verdict = "FAIL" if not passed else ("PASS*" if p["diagnosis"] == "nondifferentiable" else "PASS")
    index = tuple(p["worst_index"]) if p.get("worst_index") is not None else None
    factor = p.get("factor")
    return ParamVerdict(name=p["name"], verdict=verdict, diagnosis=p["diagnosis"], detail=p.get("detail", ""),
                        cause=p.get("cause", ""), factor=factor if isinstance(factor, (int, float)) else None,
                        worst_index=index, points=share if passed else 0.0, max_points=share)


def _finding(v: ParamVerdict) -> str:
    """'batch mean in the loss but not in the gradient (scaled x8)': the cause's first clause and the pattern."""
    head = v.cause.split(": ")[0].split("; ")[0].strip() if v.cause else ""
    return f"{head} ({v.label})" if head else v.label


# --------------------------------------------------------------------------- a class


def grade_class(spec: GradeSpec, folders: Sequence[Path], *, jobs: int | None = None,
                on_done: Callable[[Row, int, int], None] | None = None) -> list[Row]:
    """Grade every folder, `jobs` children at a time (default: the cores); rows in the folders' order."""
    jobs = max(1, min(jobs or cpu_count(), len(folders)))
    rows: dict[str, Row] = {}
    _STOPPING.clear()
    pool = ThreadPoolExecutor(max_workers=jobs)  # threads only wait on their child processes
    try:
        futures = {pool.submit(grade_submission, spec, f): f for f in folders}
        for future in as_completed(futures):
            row = future.result()
            rows[futures[future].name] = row
            if on_done is not None:
                on_done(row, len(rows), len(folders))
    except BaseException:  # Ctrl-C (or a bug): no child outlives the grading
        pool.shutdown(wait=False, cancel_futures=True)
        stop_children()
        raise
    finally:
        pool.shutdown(wait=True)
    return [rows[f.name] for f in folders]


def cpu_count() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def summarize(rows: Sequence[Row], top: int = 8) -> dict:
    """Counts by status, the mean score, and the commonest findings with the students showing them."""
    counts = Counter(r.status for r in rows)
    by_finding: dict[str, list] = {}
    for r in rows:
        for f in r.findings:
            by_finding.setdefault(f, []).append(r.student)
    commonest = sorted(by_finding.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    scores = [r.score for r in rows]
    return {"submissions": len(rows), **{s: counts.get(s, 0) for s in STATUSES},
            "mean_score": round(sum(scores) / len(scores), 4) if scores else 0.0,
            "max_score": rows[0].max_score if rows else 0.0,
            "findings": [{"finding": f, "students": len(s), "who": s} for f, s in commonest]}


def render_summary(summary: dict, seconds: float) -> str:
    """The closing table: statuses, mean score, and the commonest findings across the class."""
    n = summary["submissions"]
    lines = [f"graded {n} submission{'s' * (n != 1)} in {seconds:.1f} s; mean score "
             f"{summary['mean_score']:.4g} of {summary['max_score']:g}", "", "status   students"]
    lines += [f"{s:<8} {summary[s]:>8}" for s in STATUSES]
    if summary["findings"]:
        lines += ["", "commonest findings:"]
        width = len(str(max(f["students"] for f in summary["findings"])))
        lines += [f"  {f['students']:>{width}} student{'s' if f['students'] != 1 else ' '}: {f['finding']}"
                  for f in summary["findings"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- outputs


def write_atomic(path: Path, text: str) -> None:
    """Write beside the destination, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def parameter_names(rows: Iterable[Row]) -> list:
    """Every parameter seen across the class, in order of first appearance."""
    return list(dict.fromkeys(p.name for r in rows for p in r.parameters))


def gradebook_csv(rows: Sequence[Row]) -> str:
    """One row per submission: student, status, score, seconds, feedback, then verdict and diagnosis per parameter."""
    names = parameter_names(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "status", "score", "max_score", "seconds", "feedback"]
                    + [f"{n} {col}" for n in names for col in ("verdict", "diagnosis")])
    for r in rows:
        by_name = {p.name: p for p in r.parameters}
        cells = [c for n in names for c in ((by_name[n].verdict, by_name[n].label) if n in by_name else ("", ""))]
        writer.writerow([r.student, r.status, f"{r.score:g}", f"{r.max_score:g}", f"{r.seconds:.2f}", r.feedback]
                        + cells)
    return buf.getvalue()


def gradebook_json(rows: Sequence[Row], spec: GradeSpec, seconds: float) -> dict:
    """The whole grading: spec, summary and every row (with its report)."""
    return {"version": 1, "targets": spec.targets, "timeout": spec.timeout, "memory_mb": spec.memory_mb,
            "seconds": round(seconds, 3), "summary": summarize(rows), "submissions": [r.to_dict() for r in rows]}


def gradescope_result(row: Row) -> dict:
    """One submission in Gradescope's autograder format (results.json): a test per parameter."""
    if row.parameters:
        tests = [{"name": f"gradient of {p.name}", "score": round(p.points, 4), "max_score": round(p.max_points, 4),
                  "status": "passed" if p.verdict != "FAIL" else "failed",
                  "output": p.detail + (f"\nlikely cause: {p.cause}" if p.cause and p.verdict == "FAIL" else "")}
                 for p in row.parameters]
    else:
        tests = [{"name": "your code runs and returns a gradient", "score": 0.0, "max_score": row.max_score,
                  "status": "failed", "output": row.message or row.feedback}]
    return {"score": row.score, "execution_time": max(1, round(row.seconds)), "output": feedback_text(row),
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def explain_hint(spec: GradeSpec, folder: Path, p: ParamVerdict) -> str:
    """The `check-gradients explain` command that walks the chain rule for the worst element, from the folder."""
    if "loss" not in spec.targets:
        return ""

    def local(role: str) -> str:
        side, target = split_target(spec.targets[role])
        if side == "student":
            return target
        kind, where, _ = parse_target(target)
        if kind == "file":
            where = os.path.relpath(Path(spec.course_root).resolve() / where, Path(folder).resolve())
        return f"{where}:{target.rpartition(':')[2]}"

    parts = ["check-gradients explain", local("loss"), local("params")]
    parts += [f"--args {local('args')}"] if "args" in spec.targets else []
    parts += [f"--grad {local('grad')}", f"--leaf {p.name}"]
    if p.worst_index:
        parts.append("--index " + ",".join(str(i) for i in p.worst_index))
    return " ".join(parts)


def feedback_text(row: Row, spec: GradeSpec | None = None, folder: Path | None = None) -> str:
    """What the student reads: the verdict, the report (or the error), the likely causes and how to dig in."""
    lines = [f"{row.student}: {row.status}, {row.score:g} of {row.max_score:g} points", "", row.feedback, ""]
    if row.message and row.message != row.feedback:
        lines += [row.message, ""]
    bad = [p for p in row.parameters if p.verdict == "FAIL"]
    if bad:
        lines.append("What to look at:")
        for p in bad:
            lines += finding_lines(p.name, p.detail, p.cause, indent="  ")
            hint = explain_hint(spec, folder, p) if spec is not None and folder is not None else ""
            if hint:
                lines.append(f"      to follow the chain rule for {p.name} step by step, run in your folder:")
                lines.append(f"        {hint}")
        lines.append("")
    if row.output.strip():
        lines += ["What your code printed:", row.output.rstrip(), ""]
    return "\n".join(lines)


def write_outputs(args: argparse.Namespace, rows: Sequence[Row], spec: GradeSpec, folders: Sequence[Path],
                  seconds: float) -> list:
    """Write each output asked for; returns the lines that say where."""
    said = []
    if args.csv:
        write_atomic(Path(args.csv), gradebook_csv(rows))
        said.append(f"gradebook written to {args.csv}")
    if args.json:
        write_atomic(Path(args.json), json.dumps(gradebook_json(rows, spec, seconds), indent=2) + "\n")
        said.append(f"JSON gradebook written to {args.json}")
    if args.gradescope:
        said.append(_write_gradescope(Path(args.gradescope), rows))
    if args.feedback_dir:
        for row, folder in zip(rows, folders):
            write_atomic(Path(args.feedback_dir) / f"{row.student}.txt", feedback_text(row, spec, folder))
        said.append(f"feedback for {len(rows)} students written to {args.feedback_dir}")
    return said


def _write_gradescope(path: Path, rows: Sequence[Row]) -> str:
    """FILE.json for one submission (Gradescope grades one at a time); a folder of STUDENT.json otherwise."""
    if path.suffix == ".json":
        write_atomic(path, json.dumps(gradescope_result(rows[0]), indent=2) + "\n")
        return f"Gradescope results written to {path.as_posix()}"
    for row in rows:
        write_atomic(path / f"{row.student}.json", json.dumps(gradescope_result(row), indent=2) + "\n")
    return f"Gradescope results for {len(rows)} students written to {path.as_posix()}/"


# --------------------------------------------------------------------------- progress


class ClassProgress:
    """A bar on a terminal (redrawn in place); one line per finished submission elsewhere."""

    def __init__(self, stream: TextIO, *, enabled: bool = True) -> None:
        self.stream, self.enabled = stream, enabled
        self.terminal = _isatty(stream) and os.environ.get("TERM") != "dumb"
        self.start = time.perf_counter()
        self.counts: Counter = Counter()

    def __call__(self, row: Row, done: int, total: int) -> None:
        if not self.enabled:
            return
        self.counts[row.status] += 1
        if self.terminal:
            self._draw(done, total)
        else:
            self.stream.write(f"[{done}/{total}] {row.student}: {row.status} {row.score:g}/{row.max_score:g} "
                              f"({row.seconds:.1f} s) {row.feedback}\n")
        self.stream.flush()

    def _draw(self, done: int, total: int) -> None:
        width = 24
        filled = width * done // total
        tally = " ".join(f"{s} {self.counts[s]}" for s in STATUSES)
        text = (f"grading [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {tally}  "
                f"{time.perf_counter() - self.start:.0f}s")
        cols = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + text[: cols - 1].ljust(cols - 1))
        if done == total:
            self.stream.write("\r" + " " * (cols - 1) + "\r")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `check-gradients grade`."""
    p.add_argument("submissions", nargs="?", metavar="SUBMISSIONS_DIR",
                   help="folder with one subfolder per student (default: 'submissions' of [tool.gradcheck.grade])")
    t = p.add_argument_group("targets (resolved in each student's folder; course:WHERE:NAME from the course's)")
    for role in TARGET_ROLES:
        t.add_argument(f"--{role.replace('_', '-')}", dest=role, metavar="MOD:NAME")
    p.add_argument("--config", metavar="FILE", help="read [tool.gradcheck.grade] from FILE (default: ./pyproject.toml)")
    p.add_argument("--student", action="append", metavar="NAME", help="grade only this submission (repeatable)")
    r = p.add_argument_group("running")
    r.add_argument("--timeout", type=float, metavar="SECONDS", help=f"wall clock per submission "
                   f"(default {DEFAULT_TIMEOUT:g})")
    r.add_argument("--memory-mb", dest="memory_mb", type=int, metavar="MB",
                   help=f"address-space cap per submission where the platform allows; 0 for none "
                        f"(default {DEFAULT_MEMORY_MB})")
    r.add_argument("--jobs", "-j", type=int, metavar="N", help="submissions graded at once (default: the cores)")
    r.add_argument("--points", type=float, metavar="X", help="points per submission, shared equally by the "
                   "parameters (default 100; per parameter: points = {W1 = 40, ...} in the table)")
    for key, kind in (("against", str), ("rtol", float), ("atol", float), ("seed", int), ("budget", float)):
        r.add_argument(f"--{key}", type=kind, metavar=key.upper(), help=f"check option {key} for every submission"
                       + (" (default: half the timeout, at most 20 s)" if key == "budget" else ""))
    o = p.add_argument_group("output")
    o.add_argument("--csv", metavar="FILE", help="the gradebook: one row per submission")
    o.add_argument("--json", metavar="FILE", help="everything as JSON, reports included")
    o.add_argument("--gradescope", metavar="PATH", help="Gradescope results: FILE.json for one submission, or a "
                   "folder of STUDENT.json")
    o.add_argument("--feedback-dir", metavar="DIR", help="a STUDENT.txt feedback file per submission")
    o.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    o.add_argument("--no-color", action="store_true", help=argparse.SUPPRESS)
    o.add_argument("--color", choices=("auto", "always", "never"), default="auto", help=argparse.SUPPRESS)


def _spec_from_args(args: argparse.Namespace) -> tuple[GradeSpec, int | None]:
    against = args.against.split(",") if args.against and "," in args.against else args.against
    overrides = {**{r: getattr(args, r) for r in TARGET_ROLES}, "timeout": args.timeout, "memory_mb": args.memory_mb,
                 "points": args.points, "against": against, "rtol": args.rtol, "atol": args.atol,
                 "seed": args.seed, "budget": args.budget}
    path = Path(args.config) if args.config else Path("pyproject.toml")
    if args.config or (path.is_file() and load_config(path).grade is not None):
        return spec_from_pyproject(path, overrides)
    return spec_from(None, where="the command line", course_root=Path("."), overrides=overrides)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`check-gradients grade`: grade, write the outputs, print the summary; 0 once grading ran."""
    spec, table_jobs = _spec_from_args(args)
    where = Path(args.submissions) if args.submissions else spec.submissions
    if where is None:
        raise ConfigError("name the submissions folder: check-gradients grade SUBMISSIONS_DIR (or submissions = "
                          "\"...\" in [tool.gradcheck.grade])")
    folders = submissions_in(where, args.student)
    if args.gradescope and args.gradescope.endswith(".json") and len(folders) > 1:
        raise ConfigError(f"--gradescope {args.gradescope}: Gradescope reads one submission per results.json; "
                          f"name a folder for {len(folders)} submissions, or grade one with --student NAME")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs is {args.jobs}; give 1 or more")
    start = time.perf_counter()
    rows = grade_class(spec, folders, jobs=args.jobs or table_jobs,
                       on_done=ClassProgress(err, enabled=not args.no_progress))
    seconds = time.perf_counter() - start
    said = write_outputs(args, rows, spec, folders, seconds)
    out.write(render_summary(summarize(rows), seconds) + "\n" + "".join(f"\n{s}" for s in said) + ("\n" if said else ""))
    out.flush()
    return 0

