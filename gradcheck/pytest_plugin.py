"""The pytest plugin: gradient checks that read like the rest of a learner's test suite.

    def test_backprop(gradcheck):                  # the fixture
        gradcheck(loss, grad, params, args=(X, y))

    @pytest.mark.gradcheck(against="numeric", rtol=1e-6)
    def test_layer(gradcheck):                     # per-test options
        gradcheck.layer(affine_forward, affine_backward, (x, w, b))

Cases declared under `[tool.gradcheck]` in the rootdir's pyproject.toml are collected as test
items, the terminal summary gets one line, and `--gradcheck-json=FILE` writes every check of the
session (also under pytest-xdist) to a file for graders. `--gradcheck-grade=DIR` grades a class
as `check-gradients grade` does, one item per submission (each in its own process), so
pytest-xdist can spread a course over cores and hosts.

Options, from weakest to strongest: gradcheck's defaults, `[tool.gradcheck]` defaults, ini
(`gradcheck_rtol = 1e-6`), command line (`--gradcheck-rtol=1e-6`), the marker (or a case's own
options in `[tool.gradcheck]`), keyword arguments of the call.

pytest loads this module in every session of every environment where gradcheck is installed,
so it imports nothing heavy: numpy loads when a check runs, jax and sympy when a reference
needs them, hypothesis never (only `gradcheck.strategies` imports it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, cast

import pytest

from .errors import ConfigError, GradcheckError, GradientMismatch, UserCodeError
from .usercode.frames import skip_leading

#: Options of the command line and ini files, with their pytest ini types.
OPTIONS = {"against": "args", "rtol": "float", "atol": "float", "seed": "int", "budget": "float"}
_HELP = {
    "against": "references to check against, comma-separated: numeric, jax, sympy, all or auto",
    "rtol": "relative tolerance (default: by dtype)",
    "atol": "absolute tolerance (default: by dtype)",
    "seed": "seed of any random sampling and of layer checks' upstream gradient (default 0)",
    "budget": "seconds a check may spend; references and sampling are planned to fit (default 20)",
}
_WORKER_KEY = "gradcheck_records"
_PLUGIN_NAME = "gradcheck-session"


# --------------------------------------------------------------------------- options


def _coerce(key: str, value: Any, source: str) -> Any:
    """A command-line or ini value (text, or a TOML number/list) as a validated check option."""
    if isinstance(value, str) and key != "against":
        try:
            value = int(value) if key == "seed" else float(value)
        except ValueError:
            kind = "an integer such as 0" if key == "seed" else "a number such as 1e-7"
            raise ConfigError(f"{source} is {value!r}; it must be {kind}.") from None
    if key == "against":
        names = value.split(",") if isinstance(value, str) else [n for v in value for n in str(v).split(",")]
        names = [n.strip() for n in names if n.strip()]
        value = names[0] if names in (["auto"], ["all"]) else names
    from .config import validate_options  # not at import time: only when an option is set

    return validate_options({key: value}, source)[key]


def _cli_type(key: str) -> Callable[[str], Any]:
    """An argparse type: pytest turns its error into a usage error naming the option."""

    def convert(text: str) -> Any:
        try:
            return _coerce(key, text, f"--gradcheck-{key}")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = key  # argparse names the type in some messages
    return convert


def _addini(parser: pytest.Parser, name: str, help: str) -> None:
    # Untyped on purpose: gradcheck parses the value itself, so a bad one is a usage error naming
    # the option on every pytest version (typed ini values fail inside pytest with a bare message).
    parser.addini(name, help, default=None)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checks of hand-written backpropagation (gradcheck)")
    for key in OPTIONS:
        group.addoption(f"--gradcheck-{key}", dest=f"gradcheck_{key}", type=_cli_type(key), default=None,
                        metavar=key.upper(), help=_HELP[key] + f"; ini: gradcheck_{key}")
        _addini(parser, f"gradcheck_{key}", _HELP[key])
    group.addoption("--gradcheck-json", dest="gradcheck_json", metavar="FILE", default=None,
                    help="write a JSON report of every gradient check in the session to FILE; ini: gradcheck_json")
    parser.addini("gradcheck_json", "write a JSON report of every gradient check to this file (relative to rootdir)")
    group.addoption("--gradcheck-grade", dest="gradcheck_grade", metavar="DIR", default=None,
                    help="grade a class: one test per subfolder of DIR, each checked in its own process as "
                         "`check-gradients grade` does, with the rootdir pyproject's [tool.gradcheck.grade]")


def _ini_options(config: pytest.Config) -> dict:
    out = {}
    for key in OPTIONS:
        name = f"gradcheck_{key}"
        try:
            value = config.getini(name)
        except (TypeError, ValueError) as exc:  # pytest's own conversion, or type check of a TOML value
            raise pytest.UsageError(f"gradcheck: ini option {name}: {exc}") from None
        if value not in (None, "", []):
            out[key] = _coerce(key, value, f"ini option {name}")
    return out


def _marker_options(item: pytest.Item | None) -> dict:
    """Options of the @pytest.mark.gradcheck markers on a test, the closest one winning."""
    if item is None:
        return {}
    from .config import validate_options

    out: dict = {}
    for mark in reversed(list(item.iter_markers("gradcheck"))):
        if mark.args:
            raise ConfigError(f"@pytest.mark.gradcheck on {item.nodeid} takes keyword arguments only "
                              f"(against=..., rtol=..., atol=..., seed=..., budget=...), not {mark.args!r}.")
        out.update(validate_options(mark.kwargs, f"@pytest.mark.gradcheck on {item.nodeid}"))
    return out


def _json_path(config: pytest.Config) -> Path | None:
    cli, ini = config.getoption("gradcheck_json"), config.getini("gradcheck_json")
    if not cli and not ini:
        return None
    base = config.invocation_params.dir if cli else config.rootpath
    path = base / os.path.expanduser(os.path.expandvars(cli or ini))
    if path.is_dir():
        source = "--gradcheck-json" if cli else "ini option gradcheck_json"
        raise pytest.UsageError(f"gradcheck: {source} is {str(cli or ini)!r}, which is a directory; name a file "
                                f"such as gradcheck.json.")
    return path


def _table_options(config: pytest.Config) -> Any:
    """The rootdir pyproject's [tool.gradcheck] Config, or None; parsed only if it mentions gradcheck."""
    path = config.rootpath / "pyproject.toml"
    try:
        if b"gradcheck" not in path.read_bytes():
            return None
    except OSError:
        return None
    from .config import load_config

    return load_config(path)


# --------------------------------------------------------------------------- recording


def _num(x: Any) -> float:
    """A recorded error back to a float ("inf"/"nan" strings included; None as 0)."""
    return 0.0 if x is None else float(x)


def _jsonable(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)


def _record(nodeid: str, kind: str, title: str, options: dict, seconds: float, report: Any = None,
            error: BaseException | None = None) -> dict:
    """One check, as the JSON-able dict the report file lists."""
    rec: dict[str, Any] = {"nodeid": nodeid, "kind": kind, "title": title, "options": dict(options),
           "seconds": round(seconds, 4), "passed": bool(report is not None and report.passed),
           "max_rel_error": None, "report": None, "error": None}
    if report is not None:
        rec["report"] = report.to_dict()
        rec["max_rel_error"] = rec["report"]["max_rel_error"]
    if error is not None:
        rec["error"] = {"type": type(error).__name__, "message": str(error)}
    return json.loads(json.dumps(rec, default=_jsonable))


def _summary(records: list) -> dict:
    failed = [r for r in records if not r["passed"]]
    measured = [r for r in records if r["max_rel_error"] is not None]
    worst = max(measured, key=lambda r: (math.isnan(_num(r["max_rel_error"])), _num(r["max_rel_error"])),
                default=None)
    return {"checks": len(records), "failed": len(failed), "errors": sum(r["error"] is not None for r in records),
            "worst_rel_error": None if worst is None else worst["max_rel_error"],
            "worst_nodeid": None if worst is None else worst["nodeid"]}


def _write_atomic(path: Path, data: dict) -> None:
    """Write JSON next to its destination, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _hide_internals(exc: BaseException, chained: bool) -> BaseException:
    """Drop gradcheck's frames, and its leading frames from the learner's chained exception.

    With `chained`, pytest renders that exception (with source lines), so the copy of its
    traceback in the message goes.
    """
    if chained and isinstance(exc, UserCodeError) and exc.user_traceback:  # the one error that carries it
        exc.user_traceback = ""
    cause = exc.__cause__
    while cause is not None:
        skip_leading(cause)
        cause = cause.__cause__
    return exc.with_traceback(None)


# --------------------------------------------------------------------------- the session


class GradcheckSession:
    """Per-session state: resolved options, the current test, and the record of every check."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.table = _table_options(config)
            cli = {k: config.getoption(f"gradcheck_{k}") for k in OPTIONS}
            table_defaults = dict(self.table.options) if self.table is not None else {}
            self.base = {**table_defaults, **_ini_options(config), **{k: v for k, v in cli.items() if v is not None}}
        except ConfigError as exc:
            raise pytest.UsageError(f"gradcheck: {exc}") from None
        self.json_path = _json_path(config)
        self.records: list[dict] = []
        self.current: pytest.Item | None = None

    # -- running checks

    def options_for(self, item: pytest.Item | None) -> dict:
        """Defaults < [tool.gradcheck] < ini < command line < marker, for the test being run."""
        return {**self.base, **_marker_options(item)}

    def run(self, nodeid: str, kind: str, title: str, check: Callable[[], Any], options: dict,
            chained: bool = True) -> Any:
        """Run one check, record it, and raise GradientMismatch when it fails; returns the Report.

        `chained`: the failure is shown as a traceback with the learner's exception chained
        (the fixture), rather than as the message alone (a pyproject case).
        """
        __tracebackhide__ = True
        start = time.perf_counter()
        try:
            report = check()
        except GradcheckError as exc:
            self.records.append(_record(nodeid, kind, title, options, time.perf_counter() - start, error=exc))
            raise _hide_internals(exc, chained)
        self.records.append(_record(nodeid, kind, title, options, time.perf_counter() - start, report=report))
        if not report.passed:
            raise GradientMismatch(report)
        return report

    # -- hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current = item  # the session-scoped fixture reads the running test's markers from here

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        if self._has_cases() and file_path == self.config.rootpath / "pyproject.toml":
            return PyprojectFile.from_parent(parent, path=file_path)
        return None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list) -> None:
        # With testpaths (say ["tests"]) the rootdir's pyproject.toml is never visited; a bare `pytest`
        # still checks its cases. Explicit arguments are respected: then it runs only if named.
        if (not self._has_cases() or self.config.args_source != pytest.Config.ArgsSource.TESTPATHS
                or any(isinstance(item, PyprojectCase) for item in items)):
            return
        node = PyprojectFile.from_parent(session, path=self.config.rootpath / "pyproject.toml")
        items[:0] = list(session.genitems(node))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workeroutput"):  # an xdist worker: the controller reports
            self.config.workeroutput[_WORKER_KEY] = json.dumps(self.records)
            return
        if self.json_path is not None:
            self.records.sort(key=lambda r: r["nodeid"])  # stable: a test's own checks keep their order
            _write_atomic(self.json_path, {"version": 1, "summary": _summary(self.records), "checks": self.records})

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # pytest-xdist's controller: each worker sends its records when it finishes.
        data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
        if data:
            self.records.extend(json.loads(data))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return  # a suite that does not check gradients sees no change
        s = _summary(self.records)
        worst = "n/a" if s["worst_rel_error"] is None else f"{_num(s['worst_rel_error']):.1e} ({s['worst_nodeid']})"
        line = (f"gradcheck: {s['checks']} gradient check{'s' * (s['checks'] != 1)} ran, {s['failed']} failed"
                + (f" ({s['errors']} raised)" if s["errors"] else "") + f", worst relative error {worst}")
        if self.json_path is not None:
            line += f"; JSON report: {self.json_path}"
        terminalreporter.write_line(line, red=bool(s["failed"]), green=not s["failed"])

    def _has_cases(self) -> bool:
        return self.table is not None and bool(self.table.cases)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gradcheck(against=..., rtol=..., atol=..., seed=..., budget=...): options for the gradient "
                   "checks this test makes through the gradcheck fixture")
    config.pluginmanager.register(GradcheckSession(config), _PLUGIN_NAME)
    if config.getoption("gradcheck_grade", None):
        config.pluginmanager.register(GradePlugin(config), "gradcheck-grade")


def _state(config: pytest.Config) -> GradcheckSession:
    return cast(GradcheckSession, config.pluginmanager.get_plugin(_PLUGIN_NAME))  # registered at configure


# --------------------------------------------------------------------------- the fixture


class GradientChecker:
    """The `gradcheck` fixture: `gradcheck(loss, grad, params, args=...)` and `gradcheck.layer(...)`.

    Each call runs a check with the session's options (command line, ini, the test's
    `gradcheck` marker; keyword arguments win), records it for the summary and JSON report,
    returns the Report when it passes and fails the test with the report when it does not.
    """

    def __init__(self, state: GradcheckSession) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<gradcheck fixture, options {self._state.base or 'default'}>"

    @property
    def options(self) -> dict:
        """The options a call in the running test gets, before its own keyword arguments."""
        return self._state.options_for(self._state.current)

    def __call__(self, loss: Callable | None = None, grad: Callable | None = None, params: Any = None,
                 args: Any = (), **kwargs: Any) -> Any:
        """Check grad(params, *args) against loss; see gradcheck.check for the keyword arguments."""
        __tracebackhide__ = True
        from .pipeline import check

        return self._run("gradient", lambda **o: check(loss, grad, params, args, **o), kwargs)

    def layer(self, forward: Callable, backward: Callable, inputs: Any, **kwargs: Any) -> Any:
        """Check backward(dout, cache) against forward(*inputs); see gradcheck.check_layer."""
        __tracebackhide__ = True
        from .layer import check_layer

        return self._run("layer", lambda **o: check_layer(forward, backward, inputs, **o), kwargs)

    def _run(self, kind: str, check: Callable[..., Any], kwargs: dict) -> Any:
        __tracebackhide__ = True
        item = self._state.current
        try:
            options = {**self._state.options_for(item), **kwargs}
        except ConfigError as exc:
            pytest.fail(f"gradcheck: {exc}", pytrace=False)
        nodeid = item.nodeid if item is not None else ""
        return self._state.run(nodeid, kind, str(kwargs.get("title", "")), lambda: check(**options),
                               {k: v for k, v in options.items() if k != "title"})


@pytest.fixture(scope="session")
def gradcheck(pytestconfig: pytest.Config) -> GradientChecker:
    """Check hand-written gradients: gradcheck(loss, grad, params, args=(X, y)), gradcheck.layer(f, b, inputs).

    Session-scoped and stateless between calls, so it also serves Hypothesis @given tests.
    """
    return GradientChecker(_state(pytestconfig))


# --------------------------------------------------------------------------- pyproject cases


class PyprojectFile(pytest.File):
    """The rootdir's pyproject.toml: one item per [[tool.gradcheck.cases]] entry."""

    def collect(self) -> Any:
        state = _state(self.config)
        for spec in state.table.cases:
            yield PyprojectCase.from_parent(self, name=spec.name, spec=spec)


class PyprojectCase(pytest.Item):
    """One case declared in [tool.gradcheck], checked with `gradcheck.config.run_case`."""

    def __init__(self, *, spec: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def options(self) -> dict:
        """[tool.gradcheck] defaults < ini < command line < the case's own options."""
        state = _state(self.config)
        defaults = state.table.options
        own = {k: v for k, v in self.spec.options.items() if k not in defaults or defaults[k] != v}
        return {**state.base, **own}

    def runtest(self) -> None:
        from .config import run_case

        options = self.options()
        _state(self.config).run(self.nodeid, self.spec.kind, self.spec.name,
                                lambda: run_case(self.spec, self.path.parent, **options), options, chained=False)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, GradcheckError):
            return str(excinfo.value)  # the report (or the bad target), already titled with the case
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple:
        return self.path, None, f"[tool.gradcheck] case {self.name!r}"


# --------------------------------------------------------------------------- grading a class (pytest-xdist ready)


class GradePlugin:
    """`--gradcheck-grade=DIR`: one item per submission, each graded by `gradcheck.grade.grade_submission`.

    Items are plain pytest items, so pytest-xdist spreads them (`-n`, `--dist`, `--tx` to other
    hosts); the student's code never runs in a pytest process, only in its own child.
    """

    def __init__(self, config: pytest.Config) -> None:
        from .grade import spec_from_pyproject, submissions_in

        path = config.rootpath / "pyproject.toml"
        try:
            if not path.is_file() or _grade_table(path) is None:
                raise ConfigError(f"--gradcheck-grade needs a [tool.gradcheck.grade] table in {path} (loss, grad, "
                                  f"params, ...), as `check-gradients grade` reads it")
            self.spec, _ = spec_from_pyproject(path)
            self.folder = (config.invocation_params.dir / config.getoption("gradcheck_grade")).resolve()
            self.students = submissions_in(self.folder)
        except ConfigError as exc:
            raise pytest.UsageError(f"gradcheck: {exc}") from None

    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> Any:
        if path.resolve() == self.folder:
            return SubmissionsFolder.from_parent(parent, path=path)
        return None

    def pytest_ignore_collect(self, collection_path: Path) -> Any:
        # never import a student's file into the pytest process
        return True if self.folder in collection_path.resolve().parents else None

    def pytest_collection_modifyitems(self, session: pytest.Session, items: list) -> None:
        if not any(isinstance(item, SubmissionItem) for item in items):  # DIR was not among the paths collected
            items.extend(session.genitems(SubmissionsFolder.from_parent(session, path=self.folder)))


def _grade_table(path: Path) -> Any:
    from .config import load_config

    return load_config(path).grade


def _grade_plugin(config: pytest.Config) -> GradePlugin:
    """The grading plugin; registered at configure whenever submissions are collected."""
    return cast(GradePlugin, config.pluginmanager.get_plugin("gradcheck-grade"))


class SubmissionsFolder(pytest.Directory):
    """The submissions folder: one item per student, never its files."""

    def collect(self) -> Any:
        plugin = _grade_plugin(self.config)
        for folder in plugin.students:
            yield SubmissionItem.from_parent(self, name=folder.name, folder=folder)


class SubmissionFailed(Exception):
    """A submission that did not pass; the message is its feedback."""


class SubmissionItem(pytest.Item):
    """One student's submission, graded in a child process as `check-gradients grade` grades it."""

    def __init__(self, *, folder: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def runtest(self) -> None:
        from .grade import feedback_text, grade_submission

        spec = _grade_plugin(self.config).spec
        row = grade_submission(spec, self.folder)
        self.user_properties.append(("gradcheck_grade", json.dumps(row.to_dict())))
        error = None if row.status == "passed" else {"type": row.status, "message": row.feedback}
        _state(self.config).records.append({
            "nodeid": self.nodeid, "kind": "submission", "title": row.student, "options": spec.check_options(),
            "seconds": row.seconds, "passed": row.status == "passed", "max_rel_error": None, "report": row.report,
            "error": error, "grade": row.to_dict()})
        if row.status != "passed":
            raise SubmissionFailed(feedback_text(row, spec, self.folder))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, SubmissionFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple:
        return self.folder, None, f"submission {self.name!r}"
