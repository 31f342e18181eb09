"""`check-gradients grade` over a generated class: isolation, verdicts, gradebooks, pytest-xdist.

The class (tests/grade_class.py) is graded once per module with `main(["grade", ...])`; each
test reads a different part of what that run wrote. Each correct submission must pass, each
planted bug get its diagnosis, each misbehaving submission (import error, sys.exit, a raise,
os.abort, os._exit, a memory hog, a missing file, an endless loop, a sleep) its own row while
the others go on.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gradcheck.cli import main
from gradcheck.grade import STATUSES, GradeSpec, gradescope_result, make_row, spec_from, summarize

sys.path.insert(0, str(Path(__file__).parent))
import grade_class  # noqa: E402

TIMEOUT = 5


@contextlib.contextmanager
def _in(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _grade(folder: Path, argv: list) -> tuple[int, str, str]:
    """main(["grade", ...]) run in `folder`: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with _in(folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["grade", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The class, graded once from its pyproject with every output."""
    root = tmp_path_factory.mktemp("course")
    klass = grade_class.make_class(root, timeout=TIMEOUT)
    start = time.perf_counter()
    code, out, err = _grade(root, ["--jobs", "2", "--csv", "gradebook.csv", "--json", "gradebook.json",
                                   "--gradescope", "gradescope", "--feedback-dir", "feedback"])
    return {"root": root, "class": {s.name: s for s in klass}, "code": code, "out": out, "err": err,
            "seconds": time.perf_counter() - start,
            "csv": list(csv.DictReader(io.StringIO((root / "gradebook.csv").read_text()))),
            "json": json.loads((root / "gradebook.json").read_text())}


def test_the_class_covers_every_kind_of_submission(course) -> None:
    statuses = {s.status for s in course["class"].values()}
    assert len(course["class"]) >= 30 and statuses == {"passed", "failed", "error", "timeout"}


def test_grading_exits_0_whatever_the_students_results(course) -> None:
    assert course["code"] == 0, course["err"]


def test_one_row_per_submission(course) -> None:
    assert sorted(r["student"] for r in course["csv"]) == sorted(course["class"])
    assert list(course["csv"][0])[:6] == ["student", "status", "score", "max_score", "seconds", "feedback"]
    assert {"W1 verdict", "W1 diagnosis", "b2 verdict", "b2 diagnosis"} <= set(course["csv"][0])


def test_every_student_gets_the_expected_status_score_and_diagnoses(course) -> None:
    for row in course["csv"]:
        s = course["class"][row["student"]]
        assert row["status"] == s.status, (s.name, row)
        for param, label in s.diagnoses.items():
            assert row[f"{param} diagnosis"] == label, (s.name, param, row)
            assert row[f"{param} verdict"] == ("PASS" if label == "ok" else "FAIL"), (s.name, param)
        if s.score is not None:
            assert float(row["score"]) == pytest.approx(s.score), (s.name, row)
        for word in s.error_words:
            assert word in row["feedback"], (s.name, word, row["feedback"])
        if s.status in ("error", "timeout"):
            assert float(row["score"]) == 0 and all(not row[f"{p} verdict"] for p in grade_class.PARAMS)


def test_bad_submissions_are_isolated_and_timed_out(course) -> None:
    rows = {r["student"]: r for r in course["csv"]}
    for name in ("loops_forever", "sleeps_at_import"):
        assert TIMEOUT <= float(rows[name]["seconds"]) < TIMEOUT + 3, rows[name]
    # two slow students of 5 s each, two children at a time: the rest did not wait for them in line
    assert course["seconds"] < 60


def test_the_timeout_kills_the_whole_process_group(course) -> None:
    pid = int((course["root"] / "submissions" / "loops_forever" / "left_behind.pid").read_text())
    for _ in range(50):  # SIGKILL is delivered at once; reaping by init may take a moment
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/status").is_file() and "zombie" in Path(f"/proc/{pid}/status").read_text():
            return
        time.sleep(0.1)
    pytest.fail(f"process {pid}, started by a timed-out submission, is still running")


def test_a_crash_and_an_exit_name_what_happened(course) -> None:
    rows = {r["student"]: r for r in course["csv"]}
    assert "SIGABRT" in rows["aborts"]["feedback"]
    assert "exit status 7" in rows["os_exit"]["feedback"]
    assert "sys.exit" in rows["exits_at_import"]["feedback"]
    assert "more memory than the 3072 MB allowed" in rows["memory_hog"]["feedback"]


def test_the_summary_counts_statuses_and_the_commonest_diagnoses(course) -> None:
    out = course["out"]
    expected = {st: sum(s.status == st for s in course["class"].values()) for st in STATUSES}
    for status, n in expected.items():
        assert f"{status:<8} {n:>8}" in out, (status, out)
    assert "5 students: batch mean in the loss but not in the gradient (scaled x8)" in out
    assert "2 students: timed out after 5 s" in out
    assert course["json"]["summary"]["findings"][0]["students"] == 5


def test_progress_is_one_line_per_submission_off_a_terminal(course) -> None:
    lines = [ln for ln in course["err"].splitlines() if ln.startswith("[")]
    assert len(lines) == len(course["class"])
    assert lines[-1].startswith(f"[{len(course['class'])}/{len(course['class'])}] ")


def test_json_gradebook_agrees_with_the_csv(course) -> None:
    doc = course["json"]
    by_csv = {r["student"]: r for r in course["csv"]}
    assert doc["summary"]["submissions"] == len(by_csv)
    for sub in doc["submissions"]:
        assert sub["status"] == by_csv[sub["student"]]["status"]
        assert [p["verdict"] for p in sub["parameters"]] == [
            by_csv[sub["student"]][f"{p['name']} verdict"] for p in sub["parameters"]]


# Gradescope's autograder results.json, as its documentation publishes it ("Autograder
# specifications: output format"): every key optional except that a score must come from
# somewhere; tests carry score/max_score/name/output; visibility is one of four words.
VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
FORMATS = ("text", "html", "simple_format", "md", "ansi")
GRADESCOPE_SCHEMA = {
    "type": dict, "required": ("tests",),
    "properties": {
        "score": (int, float), "execution_time": (int, float), "output": str, "output_format": FORMATS,
        "visibility": VISIBILITY, "stdout_visibility": VISIBILITY, "extra_data": dict, "leaderboard": list,
        "tests": {"type": list, "items": {
            "type": dict, "required": ("name", "score", "max_score", "output"),
            "properties": {"name": str, "score": (int, float), "max_score": (int, float), "output": str,
                           "status": ("passed", "failed"), "number": str, "tags": list, "visibility": VISIBILITY,
                           "output_format": FORMATS, "name_format": FORMATS, "extra_data": dict}}},
    },
}


def _validate(value: object, schema: object, where: str = "$") -> list:
    """Errors of `value` against the schema above: types, enums (tuples of strings), required and unknown keys."""
    if isinstance(schema, tuple) and all(isinstance(s, str) for s in schema):
        return [] if value in schema else [f"{where}: {value!r} not one of {schema}"]
    if not isinstance(schema, dict):
        ok = isinstance(value, schema) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {type(value).__name__} is not {schema}"]
    if not isinstance(value, schema["type"]):
        return [f"{where}: expected {schema['type'].__name__}"]
    errors = []
    if "items" in schema:
        for n, item in enumerate(value):
            errors += _validate(item, schema["items"], f"{where}[{n}]")
    for key in schema.get("required", ()):
        if key not in value:
            errors.append(f"{where}: missing {key!r}")
    for key, item in (value.items() if isinstance(value, dict) else ()):
        if key not in schema["properties"]:
            errors.append(f"{where}: unknown key {key!r}")
        else:
            errors += _validate(item, schema["properties"][key], f"{where}.{key}")
    return errors


def test_the_schema_check_catches_what_gradescope_rejects() -> None:
    assert _validate({"tests": [{"name": "x", "score": 1, "max_score": 1, "output": ""}]}, GRADESCOPE_SCHEMA) == []
    assert _validate({"tests": [{"name": "x", "score": "1", "max_score": 1, "output": ""}]}, GRADESCOPE_SCHEMA)
    assert _validate({"tests": [], "visibility": "public"}, GRADESCOPE_SCHEMA)
    assert _validate({"tests": [], "scores": 3}, GRADESCOPE_SCHEMA)
    assert _validate({"score": 3}, GRADESCOPE_SCHEMA)


def test_gradescope_results_validate_and_add_up(course) -> None:
    folder = course["root"] / "gradescope"
    by_csv = {r["student"]: r for r in course["csv"]}
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(by_csv)
    for path in folder.glob("*.json"):
        doc = json.loads(path.read_text())
        assert _validate(doc, GRADESCOPE_SCHEMA) == [], path.name
        assert doc["score"] == pytest.approx(float(by_csv[path.stem]["score"]))
        assert sum(t["score"] for t in doc["tests"]) == pytest.approx(doc["score"])
        assert sum(t["max_score"] for t in doc["tests"]) == pytest.approx(100)


def test_feedback_files_speak_to_the_learner(course) -> None:
    folder = course["root"] / "feedback"
    assert sorted(p.stem for p in folder.iterdir()) == sorted(course["class"])  # no temporary file left over
    mean = (folder / "forgot_mean_0.txt").read_text()
    assert mean.startswith("forgot_mean_0: failed, 0 of 100 points")
    assert "likely cause: batch mean in the loss but not in the gradient" in mean
    assert "check-gradients explain backprop:loss course_data:params --args course_data:data --grad backprop:grad " \
           "--leaf W1 --index " in mean
    raises = (folder / "raises.txt").read_text()
    assert "undefined_batch" in raises and "Your code raised:" in raises and "backprop.py" in raises
    assert "bye" in (folder / "exits_at_import.txt").read_text()  # what the student's code printed
    assert "did not finish within 5 s" in (folder / "loops_forever.txt").read_text()


def test_the_same_class_through_pytest_xdist_gets_the_same_verdicts(course) -> None:
    pytest.importorskip("xdist")
    root = course["root"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                           "-n", "2", "--dist", "worksteal", "--gradcheck-grade=submissions", "submissions",
                           "--gradcheck-json=through_pytest.json"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    doc = json.loads((root / "through_pytest.json").read_text())
    via_pytest = {r["title"]: _verdicts(r["grade"]) for r in doc["checks"]}
    via_grade = {r["student"]: _verdicts(r) for r in course["json"]["submissions"]}
    assert via_pytest == via_grade, proc.stdout[-3000:]
    passed = sum(s.status == "passed" for s in course["class"].values())
    assert f"{len(course['class']) - passed} failed, {passed} passed" in proc.stdout
    assert "forgot_mean_0: failed, 0 of 100 points" in proc.stdout  # the failure shows the feedback


def _verdicts(row: dict) -> tuple:
    return row["status"], row["score"], tuple((p["name"], p["verdict"], p["diagnosis"]) for p in row["parameters"])


@pytest.mark.parametrize("dist", ["load", "loadscope"])
def test_pytest_dist_modes_grade_a_subset(course, dist) -> None:
    pytest.importorskip("xdist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                           "-n", "2", "--dist", dist, "--gradcheck-grade=submissions", "-k",
                           "correct_loops or sign_flip or raises", f"--gradcheck-json={dist}.json"],
                          cwd=course["root"], env=env, capture_output=True, text=True, timeout=300)
    assert "2 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    graded = {r["title"]: r["grade"]["status"] for r in json.loads((course["root"] / f"{dist}.json").read_text())
              ["checks"]}
    assert graded == {"correct_loops": "passed", "sign_flip": "failed", "raises": "error"}


def test_pytest_grading_needs_the_table(pytester: pytest.Pytester) -> None:
    pytester.mkdir("subs").joinpath("alice").mkdir()
    result = pytester.runpytest("--gradcheck-grade=subs", "-p", "no:hypothesispytest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradcheck-grade needs a [[]tool.gradcheck.grade[]] table*"])


# --------------------------------------------------------------------------- the command line alone

STUDENT = '''
import numpy as np


def loss(p, X, y):
    return 0.5 * np.sum((X @ p["w"] - y) ** 2)


def grad(p, X, y):
    return {"w": X.T @ (X @ p["w"] - y)}
'''
HANDOUT = '''
import numpy as np

params = {"w": np.array([0.5, -1.0, 2.0])}
data = (np.arange(12.0).reshape(4, 3) / 10, np.array([1.0, 0.0, -1.0, 2.0]))
'''


def test_targets_on_the_command_line_and_stdin_not_inherited(tmp_path: Path) -> None:
    (tmp_path / "handout").mkdir()
    (tmp_path / "handout" / "data.py").write_text(HANDOUT)
    for name, source in {"ana": STUDENT, "ben": "answer = input('your name? ')\n" + STUDENT,
                         "cy": STUDENT.replace("X.T @ (X", "-X.T @ (X")}.items():
        (tmp_path / "subs" / name).mkdir(parents=True)
        (tmp_path / "subs" / name / "lin.py").write_text(source)
    code, out, err = _grade(tmp_path, ["subs", "--loss", "lin:loss", "--grad", "lin:grad", "--params",
                                       "course:handout/data.py:params", "--args", "course:handout/data.py:data",
                                       "--against", "numeric", "--timeout", "20", "--csv", "gb.csv", "--points", "10"])
    assert code == 0, err
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "gb.csv").open())}
    assert (rows["ana"]["status"], rows["ana"]["score"], rows["ana"]["max_score"]) == ("passed", "10", "10")
    assert rows["ben"]["status"] == "error" and "EOFError" in rows["ben"]["feedback"]  # no stdin: no wait
    assert float(rows["ben"]["seconds"]) < 15
    assert (rows["cy"]["status"], rows["cy"]["w diagnosis"]) == ("failed", "sign_flipped")
    assert "graded 3 submissions" in out and "gradebook written to gb.csv" in out


def test_one_submission_writes_a_single_gradescope_file(tmp_path: Path) -> None:
    (tmp_path / "handout.py").write_text(HANDOUT)
    (tmp_path / "subs" / "submission").mkdir(parents=True)
    (tmp_path / "subs" / "submission" / "lin.py").write_text(STUDENT)
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent('''
        [tool.gradcheck]
        against = "numeric"

        [tool.gradcheck.grade]
        loss = "lin:loss"
        grad = "lin:grad"
        params = "course:handout:params"
        args = "course:handout:data"
        points = {w = 7}
    '''))
    code, _, err = _grade(tmp_path, ["subs", "--gradescope", "results.json", "--no-progress"])
    doc = json.loads((tmp_path / "results.json").read_text())
    assert code == 0 and err == ""
    assert _validate(doc, GRADESCOPE_SCHEMA) == []
    assert (doc["score"], doc["tests"][0]["max_score"], doc["tests"][0]["status"]) == (7, 7, "passed")


def test_the_default_memory_cap_leaves_room_for_jax(tmp_path: Path) -> None:
    """JAX reserves far more address space than it uses: a check with it must pass under the default cap."""
    pytest.importorskip("jax")
    (tmp_path / "handout.py").write_text(HANDOUT)
    (tmp_path / "subs" / "ana").mkdir(parents=True)
    (tmp_path / "subs" / "ana" / "lin.py").write_text(STUDENT)
    code, out, err = _grade(tmp_path, ["subs", "--loss", "lin:loss", "--grad", "lin:grad", "--params",
                                       "course:handout:params", "--args", "course:handout:data",
                                       "--against", "numeric,jax", "--json", "gb.json"])
    sub = json.loads((tmp_path / "gb.json").read_text())["submissions"][0]
    assert code == 0 and sub["status"] == "passed", sub["message"]
    assert "jax" in sub["report"]["references"]


@pytest.mark.parametrize("argv, words", [
    (["nowhere", "--loss", "a:l", "--grad", "a:g", "--params", "a:p"], "does not exist"),
    (["subs", "--loss", "a:l", "--params", "a:p"], "missing the target 'grad'"),
    (["subs", "--loss", "a:l", "--grad", "a:g"], "missing the target 'params'"),
    (["subs", "--loss", "a", "--grad", "a:g", "--params", "a:p"], "module:attribute"),
    (["subs", "--loss", "a:l", "--grad", "a:g", "--params", "a:p", "--timeout", "0"], "timeout"),
    (["subs", "--loss", "a:l", "--grad", "a:g", "--params", "a:p", "--jobs", "0"], "--jobs"),
    (["subs", "--loss", "a:l", "--grad", "a:g", "--params", "a:p", "--rtol", "-1"], "non-negative"),
    (["subs", "--loss", "a:l", "--grad", "a:g", "--params", "a:p", "--gradescope", "r.json"], "--student"),
    (["subs", "--loss", "a:l", "--grad", "a:g", "--params", "a:p", "--student", "zed"], "no submission 'zed'"),
    (["--loss", "a:l", "--grad", "a:g", "--params", "a:p"], "name the submissions folder"),
    (["subs", "--value-and-grad", "a:f", "--loss", "a:l", "--params", "a:p"], "both value_and_grad"),
    (["subs", "--timeout", "soon"], "invalid float value"),
])
def test_usage_errors_exit_2(tmp_path: Path, capsys, argv, words) -> None:
    for name in ("ana", "ben"):
        (tmp_path / "subs" / name).mkdir(parents=True)
    with _in(tmp_path):
        code = main(["grade", *argv])
    assert code == 2
    assert words in capsys.readouterr().err


def test_a_bad_table_is_a_usage_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "subs" / "ana").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck.grade]\nloss = "a:l"\ngrad = "a:g"\nparams = "a:p"\n'
                                             'timeout = 5\nmemroy_mb = 10\n')
    with _in(tmp_path):
        assert main(["grade", "subs"]) == 2
    assert "unknown key 'memroy_mb'" in capsys.readouterr().err


# --------------------------------------------------------------------------- scoring, without processes

def _result(passed: dict) -> dict:
    params = [{"name": n, "passed": ok, "diagnosis": "ok" if ok else "scaled", "factor": None if ok else 8.0,
               "cause": "" if ok else "batch mean in the loss but not in the gradient: divide by 8", "detail": "d",
               "worst_index": [0]} for n, ok in passed.items()]
    return {"status": "passed" if all(passed.values()) else "failed", "report": {"parameters": params}, "text": ""}


def test_points_are_shared_equally_or_set_per_parameter() -> None:
    result = _result({"W1": False, "b1": True, "W2": True, "b2": True})
    equal = make_row(GradeSpec(targets={}), "ana", result, seconds=1.0)
    assert (equal.score, equal.max_score) == (75.0, 100.0)
    spec, _ = spec_from({"loss": "m:l", "grad": "m:g", "params": "m:p",
                         "points": {"W1": 40, "b1": 10, "W2": 40, "b2": 10}}, where="t", course_root=Path("."))
    weighted = make_row(spec, "ana", result, seconds=1.0)
    assert (weighted.score, weighted.max_score) == (60.0, 100.0)
    assert weighted.feedback == "W1: batch mean in the loss but not in the gradient (scaled x8)"
    doc = gradescope_result(weighted)
    assert _validate(doc, GRADESCOPE_SCHEMA) == [] and [t["max_score"] for t in doc["tests"]] == [40, 10, 40, 10]


def test_the_summary_counts_students_not_parameters() -> None:
    spec = GradeSpec(targets={})
    rows = [make_row(spec, f"s{k}", _result({"W1": False, "b1": False}), seconds=1.0) for k in range(3)]
    rows.append(make_row(spec, "t", None, seconds=5.0, timed_out=True))
    s = summarize(rows)
    assert (s["failed"], s["timeout"], s["passed"]) == (3, 1, 0)
    assert s["findings"][0] == {"finding": "batch mean in the loss but not in the gradient (scaled x8)",
                                "students": 3, "who": ["s0", "s1", "s2"]}


def test_a_reference_that_could_not_run_is_the_grading_set_up_not_the_student() -> None:
    result = {"status": "error", "error": {"type": "ReferenceUnavailable", "cause": "", "where": "",
                                           "message": "no reference could run: numeric: not affordable"}}
    row = make_row(GradeSpec(targets={}), "ana", result, seconds=3.0)
    assert row.status == "error" and "could not be completed in the time allowed" in row.feedback
    assert "--timeout" in row.findings[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_one_bar_that_fits_it(monkeypatch) -> None:
    from gradcheck.grade import ClassProgress

    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((50, 20)))
    monkeypatch.delenv("TERM", raising=False)
    tty = _Terminal()
    bar = ClassProgress(tty)
    spec = GradeSpec(targets={})
    for n, status in enumerate(("passed", "failed", "timeout"), 1):
        row = make_row(spec, f"s{n}", _result({"W": status == "passed"}) if status != "timeout" else None,
                       seconds=1.0, timed_out=status == "timeout")
        bar(row, n, 3)
    drawn = [d for d in tty.getvalue().split("\r") if d.strip()]
    assert "\n" not in tty.getvalue() and len(drawn) == 3 and all(len(d) <= 49 for d in drawn)
    assert drawn[1].startswith("grading [################........] 2/3")
    assert tty.getvalue().endswith("\r")  # erased at the end, for the summary


def test_an_interrupt_stops_every_running_child(tmp_path: Path) -> None:
    from gradcheck.grade import grade_class, submissions_in

    (tmp_path / "handout.py").write_text(HANDOUT)
    for name, source in {"ana": STUDENT, "zoe": "import os, time\nopen('pid', 'w').write(str(os.getpid()))\n"
                                                "time.sleep(600)\n"}.items():
        (tmp_path / "subs" / name).mkdir(parents=True)
        (tmp_path / "subs" / name / "lin.py").write_text(source)
    spec, _ = spec_from({"loss": "lin:loss", "grad": "lin:grad", "params": "course:handout:params",
                         "args": "course:handout:data", "against": "numeric", "timeout": 120},
                        where="test", course_root=tmp_path)

    def interrupt(row, done, total):  # Ctrl-C once the sleeper is surely asleep
        for _ in range(200):
            if (tmp_path / "subs" / "zoe" / "pid").is_file():
                break
            time.sleep(0.05)
        raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        grade_class(spec, submissions_in(tmp_path / "subs"), jobs=2, on_done=interrupt)
    assert time.perf_counter() - start < 30  # not the sleeper's 120 s timeout
    pid = int((tmp_path / "subs" / "zoe" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
