"""The command-line conventions people expect, and progress of long checks (gradcheck.progress)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import gradcheck
import gradcheck.progress as progress_mod
from gradcheck.cli import EXIT_CODES, INTERNAL, main
from gradcheck.errors import InvalidCase
from gradcheck.progress import Progress, format_line, in_notebook, interactive_mode, stage

README = Path(__file__).resolve().parents[1] / "README.md"

LEARNER = '''
import time
import numpy as np

class Net:
    def forward(self, x):
        return x

net = Net()

def loss(w, X, y):
    return 0.5 * np.sum((X @ w - y) ** 2)

def grad(w, X, y):
    return X.T @ (X @ w - y)

def grad_sign(w, X, y):                 # a planted bug: the update direction, not the gradient
    return X.T @ (y - X @ w)

def slow_loss(w, X, y):
    time.sleep(0.002)
    return loss(w, X, y)

def params():
    return np.linspace(-1.0, 1.0, 12)

_rng = np.random.default_rng(2)
data = (_rng.standard_normal((7, 12)), _rng.standard_normal(7))
'''
TARGETS = ["conv_learner:loss", "conv_learner:grad", "conv_learner:params", "--args", "conv_learner:data"]
BUGGY = ["conv_learner:loss", "conv_learner:grad_sign", "conv_learner:params", "--args", "conv_learner:data"]
FAST = ["--against", "numeric"]


@pytest.fixture
def learner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A learner's module (and a package beside it) in a fresh working directory."""
    (tmp_path / "conv_learner.py").write_text(LEARNER)
    (tmp_path / "conv_pkg").mkdir()
    (tmp_path / "conv_pkg" / "__init__.py").write_text("")
    (tmp_path / "conv_pkg" / "model.py").write_text(LEARNER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("conv_learner", "conv_pkg", "conv_pkg.model"):
        sys.modules.pop(name, None)
    yield tmp_path
    for name in ("conv_learner", "conv_pkg", "conv_pkg.model"):
        sys.modules.pop(name, None)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ----------------------------------------------------------------- --version and python -m gradcheck


def test_version_prints_the_package_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"check-gradients {gradcheck.__version__}\n"


def test_python_m_gradcheck_is_check_gradients(learner) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gradcheck", *argv], capture_output=True, text=True,
                              timeout=300, cwd=learner)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"check-gradients {gradcheck.__version__}"
    bad = run(*BUGGY, *FAST, "--no-progress")
    assert bad.returncode == 1 and "sign_flipped" in bad.stdout and bad.stderr == ""
    assert "\x1b[" not in bad.stdout  # a pipe: no colour


# ----------------------------------------------------------------- colour


@pytest.mark.parametrize("argv, tty, no_color, coloured", [
    ([], True, "", True),
    ([], False, "", False),
    ([], True, "1", False),                    # NO_COLOR is honoured ...
    (["--color=always"], True, "1", True),     # ... but an explicit --color=always wins over it
    (["--color=always"], False, "", True),     # colour into a pipe, when asked for
    (["--color", "never"], True, "", False),
    (["--no-color"], True, "", False),         # the old spelling still works
    (["--color=auto"], True, "", True),
])
def test_colour_follows_color_and_no_color(learner, capsys, monkeypatch, argv, tty, no_color, coloured) -> None:
    monkeypatch.setattr("gradcheck.cli._isatty", lambda stream: tty)
    monkeypatch.setenv("NO_COLOR", no_color)
    assert main(BUGGY + FAST + ["--no-progress"] + argv) == 1
    out = capsys.readouterr().out
    assert ("\x1b[31m" in out) is coloured
    assert "sign_flipped" in out


def test_an_unknown_colour_choice_is_a_usage_error(learner, capsys) -> None:
    assert main(TARGETS + ["--color=sometimes"]) == 2
    err = capsys.readouterr().err
    assert "--color" in err and "'auto', 'always', 'never'" in err


def test_subcommands_accept_the_output_options_too(capsys) -> None:
    for option in ("--color=never", "--no-color", "--no-progress"):
        assert main(["examples", option]) == 0
        assert main(["explain", "--example", "mazur", "--leaf", "w5", option]) == 0


# ----------------------------------------------------------------- targets that do not exist


@pytest.mark.parametrize("target, words", [
    ("conv_learner:los", ["'conv_learner' has no attribute 'los'", "did you mean 'loss'?"]),
    ("conv_lerner:loss", ["cannot import module 'conv_lerner'", "did you mean 'conv_learner'?"]),
    ("conv_pkg.modle:loss", ["cannot import module 'conv_pkg.modle'", "did you mean 'conv_pkg.model'?"]),
    ("conv_pkg.model:lss", ["'conv_pkg.model' has no attribute 'lss'", "did you mean 'loss'?"]),
    ("conv_lerner.py:loss", ["file 'conv_lerner.py'", "does not exist", "did you mean 'conv_learner.py'?"]),
    ("conv_learner.py:los", ["no attribute 'los'", "did you mean 'loss'?"]),
    ("conv_learner:net.forwad", ["no attribute 'forwad'", "did you mean 'forward'?"]),
    ("zzqqxx:loss", ["cannot import module 'zzqqxx'", "check the spelling"]),
])
def test_a_missing_module_or_attribute_is_exit_2_with_the_nearest_name(learner, capsys, target, words) -> None:
    assert main([target, "conv_learner:grad", "conv_learner:params", "--args", "conv_learner:data"] + FAST) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and err.count("\n") == 1
    for word in words:
        assert word in err


# ----------------------------------------------------------------- exit codes


def test_the_exit_codes_are_listed_in_help(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("Exit status:"):]
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^  {code}\s+{re.escape(meaning)}$", table, re.M), (code, table)
    assert [code for code, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 130]


def test_the_readme_lists_every_exit_code_with_its_meaning() -> None:
    text = README.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", text, re.M))
    assert {int(c) for c in rows} == {code for code, _ in EXIT_CODES}
    for code, meaning in EXIT_CODES:
        assert rows[str(code)] == meaning


def test_exit_4_is_a_bug_in_gradcheck_and_130_an_interrupt(learner, capsys, monkeypatch) -> None:
    def broken(*a, **k):
        raise ZeroDivisionError("inside gradcheck")

    monkeypatch.setattr("gradcheck.config.run_objects", broken)
    assert main(TARGETS + FAST) == INTERNAL == 4
    assert "This is a bug in gradcheck" in capsys.readouterr().err

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("gradcheck.config.run_objects", interrupted)
    assert main(TARGETS + FAST) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"


# ----------------------------------------------------------------- progress from the CLI


SLOW = ["conv_learner:slow_loss", "conv_learner:grad", "conv_learner:params", "--args", "conv_learner:data"]


def test_the_cli_draws_a_progress_bar_on_a_terminal_and_erases_it(learner, capsys, monkeypatch) -> None:
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(progress_mod, "DELAY", 0.0)
    monkeypatch.setattr(progress_mod, "INTERVAL", 0.002)
    assert main(SLOW + FAST) == 0
    drawn = tty.getvalue()
    assert "checking..." in drawn and "finite differences [" in drawn and "/12 elements" in drawn
    assert drawn.endswith("\r\x1b[K")  # erased: the report follows on a clean line
    assert "gradient check PASSED" in capsys.readouterr().out


def test_no_progress_turns_it_off(learner, capsys, monkeypatch) -> None:
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(progress_mod, "DELAY", 0.0)
    assert main(SLOW + FAST + ["--no-progress"]) == 0
    assert tty.getvalue() == ""


def test_no_progress_into_a_pipe(learner, capsys, monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "DELAY", 0.0)
    assert main(SLOW + FAST) == 0
    assert capsys.readouterr().err == ""  # pytest's capture is not a terminal


# ----------------------------------------------------------------- the progress module


def test_the_line_reads_label_stage_bar_count_and_seconds() -> None:
    assert format_line("checking", 3.2, frame=1) == "/ checking... 3s"
    line = format_line("checking", 12.0, stage="finite differences", done=30, total=120, width=8)
    assert line == "| checking... finite differences [##......] 30/120 elements 12s"
    assert "[########] 5/5" in format_line("x", 0, stage="s", done=7, total=5, width=8)


def test_a_library_check_reports_done_and_total_to_a_function(learner) -> None:
    import conv_learner as m

    seen = []
    report = gradcheck.check(m.loss, m.grad, m.params(), m.data, against="numeric",
                             progress=lambda done, total: seen.append((done, total)))
    assert report.passed and seen and seen[-1] == (12, 12)
    assert all(total == 12 for _, total in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_progress_false_and_a_bad_value(learner) -> None:
    import conv_learner as m

    assert gradcheck.check(m.loss, m.grad, m.params(), m.data, against="numeric", progress=False).passed
    with pytest.raises(InvalidCase, match=r"progress='loud' is not valid"):
        gradcheck.check(m.loss, m.grad, m.params(), m.data, against="numeric", progress="loud")


def test_a_check_inside_a_progress_line_reports_to_it(learner) -> None:
    import conv_learner as m

    tty = FakeTerminal()
    with Progress("my checks", stream=tty, delay=0.0, interval=0.002) as line:
        report = gradcheck.check(m.slow_loss, m.grad_sign, m.params(), m.data, against="numeric")
    assert not report.passed and line.shown
    assert "my checks... finite differences [" in tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")


def test_progress_auto_is_silent_off_a_terminal_and_for_quick_checks() -> None:
    pipe = io.StringIO()
    with Progress("checking", stream=pipe, delay=0.0, interval=0.001) as line, stage(line, "s", 10) as tick:
        tick(5)
        time.sleep(0.02)
    assert pipe.getvalue() == "" and line.mode is None
    quick = FakeTerminal()
    with Progress("checking", stream=quick, delay=5.0):
        pass
    assert quick.getvalue() == ""
    off = FakeTerminal()
    with Progress("checking", stream=off, enabled=False, delay=0.0, interval=0.001):
        time.sleep(0.02)
    assert off.getvalue() == ""


def test_a_dumb_terminal_gets_no_bar(monkeypatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    assert interactive_mode(FakeTerminal()) is None
    monkeypatch.setenv("TERM", "xterm-256color")
    assert interactive_mode(FakeTerminal()) == "terminal"


def test_in_a_notebook_one_output_is_updated_in_place(monkeypatch) -> None:
    assert not in_notebook()  # no kernel here
    kernel_shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel_shell))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert in_notebook() and interactive_mode(io.StringIO()) == "notebook"

    shown = []

    class Handle:
        def update(self, obj) -> None:
            shown.append(obj)

    def display(obj):
        shown.append(obj)
        return Handle()

    with Progress("<checking>", stream=io.StringIO(), delay=0.0, interval=0.002, display=display) as line:
        with line.stage("finite differences", 40) as tick:
            tick(10)
            time.sleep(0.05)
    assert len(shown) >= 2
    during = [o for o in shown if o.total == 40]
    assert during and '<progress value="10" max="40"' in during[-1]._repr_html_()
    assert "&lt;checking&gt;" in during[-1]._repr_html_() and "<checking>" not in during[-1]._repr_html_()
    assert re.fullmatch(r"<checking>: done in \d+\.\ds", repr(shown[-1]))


def test_the_cli_ticker_is_the_progress_line() -> None:
    from gradcheck.cli import Ticker

    assert Ticker is Progress


def test_progress_leaves_the_check_unchanged(learner) -> None:
    import conv_learner as m

    quiet = gradcheck.check(m.loss, m.grad_sign, m.params(), m.data, against="numeric", progress=False)
    counted = gradcheck.check(m.loss, m.grad_sign, m.params(), m.data, against="numeric", progress=lambda d, t: 0)
    assert [p.to_dict() for p in quiet.parameters] == [p.to_dict() for p in counted.parameters]
    assert np.array_equal(m.params(), np.linspace(-1.0, 1.0, 12))


def test_the_line_fits_the_terminal_and_a_line_can_be_used_twice(monkeypatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: __import__("os").terminal_size((40, 20)))
    tty = FakeTerminal()
    line = Progress("a label long enough to wrap a narrow terminal", stream=tty, delay=0.0, interval=0.002)
    for _ in range(2):
        with line, line.stage("finite differences", 100) as tick:
            tick(50)
            time.sleep(0.02)
    drawn = [d for d in tty.getvalue().split("\r") if d and d != "\x1b[K"]
    assert drawn and all(len(d.replace(" \x1b[K", "")) <= 38 for d in drawn)
    assert tty.getvalue().count("\r\x1b[K") >= 2  # erased after each use


def test_the_readmes_first_screen_is_what_the_cli_prints(capsys) -> None:
    text = README.read_text(encoding="utf-8")
    excerpt = re.search(r"```console\n\$ check-gradients (example \S+)\n(.*?)\n\$ echo \$\?\n(\d+)\n```", text, re.S)
    assert excerpt, "the README's first screen shows a check-gradients run and its exit status"
    command, shown, status = excerpt.groups()
    assert main(command.split() + ["--no-progress"]) == int(status) == 1
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in shown.splitlines() if line != "..."]
    assert len(lines) > 8 and all(line in out for line in lines), [line for line in lines if line not in out]
