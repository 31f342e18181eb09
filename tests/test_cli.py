"""check-gradients, tested by calling main([...]): exit codes, output, config files, examples, explain."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

import gradcheck
from gradcheck import check
from gradcheck.cli import Ticker, main

LEARNER = '''
import numpy as np

def loss(p, X, y):
    return 0.5 * np.sum((X @ p["W"] + p["b"] - y) ** 2)

def grad(p, X, y):
    r = X @ p["W"] + p["b"] - y
    return {"W": X.T @ r, "b": r.sum(axis=0)}

def grad_transposed_b(p, X, y):          # a planted bug: W right, b twice too large
    r = X @ p["W"] + p["b"] - y
    return {"W": X.T @ r, "b": 2 * r.sum(axis=0)}

def grad_raises(p, X, y):
    r = X @ p["W"] - y
    return {"W": X.T @ r, "b": undefined_name}

def grad_without_b(p, X, y):
    return {"W": X.T @ (X @ p["W"] + p["b"] - y)}

def value_and_grad(p, X, y):
    return loss(p, X, y), grad(p, X, y)

def noisy_loss(p, X, y):
    return loss(p, X, y) + np.random.random()

def params():
    return {"W": np.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": np.array([0.1, -0.2])}

_rng = np.random.default_rng(1)
data = (_rng.standard_normal((5, 3)), _rng.standard_normal((5, 2)))
'''

PYPROJECT = '''
[tool.gradcheck]
against = "numeric"

[[tool.gradcheck.cases]]
name = "good"
loss = "cli_learner:loss"
grad = "cli_learner:grad"
params = "cli_learner:params"
args = "cli_learner:data"

[[tool.gradcheck.cases]]
name = "buggy"
value_and_grad = "cli_learner.py:value_and_grad"
params = "cli_learner.py:params"
args = "cli_learner.py:data"
rtol = 1e-8
'''

TARGETS = ["cli_learner:loss", "cli_learner:grad", "cli_learner:params", "--args", "cli_learner:data"]
FAST = ["--against", "numeric", "--no-color"]


@pytest.fixture
def learner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A learner's module in a fresh working directory (and the module object, to compare with the library)."""
    (tmp_path / "cli_learner.py").write_text(LEARNER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_learner", None)
    import cli_learner

    yield cli_learner
    sys.modules.pop("cli_learner", None)


def without_seconds(doc):
    """The JSON document without timing fields, which differ from run to run."""
    if isinstance(doc, dict):
        return {k: without_seconds(v) for k, v in doc.items() if k != "seconds"}
    if isinstance(doc, list):
        return [without_seconds(v) for v in doc]
    return doc


# ----------------------------------------------------------------- exit codes


def test_exit_0_when_the_gradient_is_right(learner, capsys) -> None:
    assert main(TARGETS + FAST) == 0
    out, err = capsys.readouterr()
    assert "gradient check PASSED" in out and "W " in out and err == ""
    assert "\x1b[" not in out  # not a terminal: no colour


def test_exit_1_on_a_mismatch_with_the_diagnosis(learner, capsys) -> None:
    argv = ["cli_learner:loss", "cli_learner:grad_transposed_b", "cli_learner:params", "--args", "cli_learner:data"]
    assert main(argv + FAST) == 1
    out = capsys.readouterr().out
    assert "FAILED (1 of 2 parameters wrong)" in out and "scaled x2" in out


def test_a_gradient_shaped_unlike_the_parameters_is_a_mismatch(learner, capsys) -> None:
    assert main(["cli_learner:loss", "cli_learner:grad_without_b", "cli_learner:params", "--args",
                 "cli_learner:data"] + FAST) == 1
    out, err = capsys.readouterr()
    assert out == "" and "missing key 'b'" in err


def test_exit_3_when_the_users_code_raises_with_its_traceback(learner, capsys) -> None:
    assert main(["cli_learner:loss", "cli_learner:grad_raises", "cli_learner:params", "--args", "cli_learner:data"]
                + FAST) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: your gradient function raised NameError")
    assert "cli_learner.py" in err and "undefined_name" in err  # the user's own traceback
    assert "gradcheck/" not in err and "gradcheck\\" not in err  # and none of ours


def test_exit_3_when_the_loss_is_random(learner, capsys) -> None:
    assert main(["cli_learner:noisy_loss", "cli_learner:grad", "cli_learner:params", "--args", "cli_learner:data"]
                + FAST) == 3
    assert "different values for the same parameters" in capsys.readouterr().err


def test_exit_3_when_a_required_reference_cannot_run(learner, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # as if jax were not installed
    monkeypatch.delitem(sys.modules, "gradcheck.references.jax.reference", raising=False)  # loaded by earlier tests
    assert main(TARGETS + ["--against", "jax"]) == 3
    err = capsys.readouterr().err
    assert "jax" in err and err.count("\n") <= 3


@pytest.mark.parametrize("argv, words", [
    (["cli_learner:los", "cli_learner:grad", "cli_learner:params"], ["did you mean 'loss'?"]),
    (["cli_lerner:loss", "cli_learner:grad", "cli_learner:params"], ["did you mean 'cli_learner'"]),
    (["cli_learner.py:lost", "cli_learner:grad", "cli_learner:params"], ["did you mean 'loss'"]),
    (["cli_learner:loss", "cli_learner:grad"], ["expected LOSS GRAD PARAMS", "2 targets"]),
    (["cli_learner:loss", "cli_learner:grad", "cli_learner:params", "--rtol", "tight"], ["--rtol", "invalid float"]),
    (TARGETS + ["--rtol=-1e-3"], ["--rtol", "non-negative"]),
    (TARGETS + ["--atol", "nan"], ["--atol"]),
    (TARGETS + ["--seed", "1.5"], ["--seed", "invalid int"]),
    (TARGETS + ["--seed", "-1"], ["--seed", "non-negative integer"]),
    (TARGETS + ["--budget", "-5"], ["--budget"]),
    (TARGETS + ["--against", "numerics"], ["'numerics'", "did you mean 'numeric'"]),
    (TARGETS + ["--against", ","], ["--against"]),
    (TARGETS + ["--plot", "out.txt"], ["--plot", ".png"]),
    (TARGETS + ["--plot", "no/such/folder/out.png"], ["does not exist"]),
    (TARGETS + ["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    (["--value-and-grad", "cli_learner:value_and_grad"], ["PARAMS", "0 targets"]),
    (["--args", "cli_learner:data"], ["--args goes with targets"]),
    (["cli_learner:loss", "cli_learner:grad", "cli_learner:params", "--config", "pyproject.toml"], ["not both"]),
    (["explain", "--example", "mazur"], ["--leaf"]),
    (["explain", "cli_learner:loss", "cli_learner:params", "--leaf", "W", "--index", "one"], ["--index"]),
])
def test_exit_2_on_usage_errors_with_one_clear_message(learner, capsys, argv, words) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    for word in words:
        assert word in err


def test_json_is_the_library_report_and_nothing_else(learner, capsys) -> None:
    assert main(TARGETS + FAST + ["--json", "--seed", "4"]) == 0
    out, err = capsys.readouterr()
    ours = json.loads(out)
    lib = check(learner.loss, learner.grad, learner.params(), learner.data, against="numeric", seed=4)
    assert without_seconds(ours) == without_seconds(json.loads(json.dumps(lib.to_dict())))
    assert err == ""


def test_json_of_a_mismatch(learner, capsys) -> None:
    argv = ["cli_learner:loss", "cli_learner:grad_transposed_b", "cli_learner:params", "--args", "cli_learner:data"]
    assert main(argv + FAST + ["--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    lib = check(learner.loss, learner.grad_transposed_b, learner.params(), learner.data, against="numeric")
    assert without_seconds(doc) == without_seconds(json.loads(json.dumps(lib.to_dict())))
    assert [p["diagnosis"] for p in doc["parameters"]] == ["ok", "scaled"]


def test_value_and_grad_on_the_command_line(learner, capsys) -> None:
    assert main(["--value-and-grad", "cli_learner:value_and_grad", "cli_learner:params", "--args",
                 "cli_learner:data"] + FAST) == 0
    assert "PASSED" in capsys.readouterr().out


def test_colour_only_on_a_terminal_without_no_color(learner, capsys, monkeypatch) -> None:
    monkeypatch.setattr("gradcheck.cli._isatty", lambda stream: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(TARGETS + ["--against", "numeric"]) == 0
    assert "\x1b[32m" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(TARGETS + ["--against", "numeric"]) == 0
    assert "\x1b[" not in capsys.readouterr().out


def test_help_exits_0(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "LOSS GRAD PARAMS" in out and "Exit status" in out


# ----------------------------------------------------------------- [tool.gradcheck]


def test_runs_the_cases_of_pyproject(learner, tmp_path, capsys) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    assert main(["--no-color"]) == 0
    out = capsys.readouterr().out
    assert "good: gradient check PASSED" in out and "buggy: gradient check PASSED" in out
    assert "2 of 2 cases passed" in out


def test_config_json_and_case_selection(learner, tmp_path, capsys) -> None:
    body = PYPROJECT.replace('"cli_learner.py:value_and_grad"', '"cli_learner.py:value_and_grad"\ngrad_note = 1')
    (tmp_path / "bad.toml").write_text(body)
    assert main(["--config", "bad.toml"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'grad_note'" in err and "'buggy'" in err
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "cli_learner.py").write_text(LEARNER.replace("return {\"W\": X.T @ r, \"b\": r.sum(axis=0)}",
                                                        "return {\"W\": -X.T @ r, \"b\": r.sum(axis=0)}"))
    (sub / "pyproject.toml").write_text(PYPROJECT.replace("cli_learner:", "cli_learner.py:"))
    assert main(["--config", "sub/pyproject.toml", "--json", "--case", "good"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and list(doc["cases"]) == ["good"]
    assert doc["cases"]["good"]["parameters"][0]["diagnosis"] == "sign_flipped"  # sub/'s module, not ./'s


def test_config_errors_per_case_keep_the_others_running(learner, tmp_path, capsys) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace('params = "cli_learner.py:params"',
                                                               'params = "cli_learner.py:parms"'))
    assert main(["--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["cases"]["good"]["passed"] is True
    assert doc["cases"]["buggy"]["error"]["exit_code"] == 2
    assert "case 'buggy'" in err and "did you mean 'params'" in err


def test_no_pyproject_or_no_cases(learner, tmp_path, capsys) -> None:
    assert main([]) == 2
    assert "no pyproject.toml" in capsys.readouterr().err
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert main([]) == 2
    assert "declares no cases" in capsys.readouterr().err
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    assert main(["--case", "goood"]) == 2
    assert "did you mean 'good'" in capsys.readouterr().err


# ----------------------------------------------------------------- worked examples


def _worked_examples():
    from gradcheck import worked_examples

    return worked_examples


FAKE_EXAMPLES = [
    {"name": "lin", "kind": "gradient", "expect": "pass", "description": "a linear model"},
    {"name": "lin-doubled", "kind": "gradient", "expect": {"diagnosis": "scaled", "leaves": ["b"], "factor": 2.0},
     "description": "b twice too large"},
    {"name": "lin-misdocumented", "kind": "gradient", "expect": {"diagnosis": "sign_flipped", "leaves": ["W"]},
     "description": "documented with the wrong diagnosis"},
]


@pytest.fixture
def fake_examples(learner, monkeypatch):
    """A stand-in worked_examples package with one passing example and two buggy twins."""
    data = {"loss": learner.loss, "params": learner.params(), "args": learner.data}
    grads = [learner.grad, learner.grad_transposed_b, learner.grad_transposed_b]
    cases = [{**c, **data, "grad": g} for c, g in zip(FAKE_EXAMPLES, grads)]
    module = types.ModuleType("gradcheck.worked_examples")
    module.all_cases = lambda: cases
    module.get_case = lambda name: next(c for c in cases if c["name"] == name)
    monkeypatch.setitem(sys.modules, "gradcheck.worked_examples", module)
    monkeypatch.setattr(gradcheck, "worked_examples", module, raising=False)
    return cases


def test_example_replay_logic(fake_examples, capsys) -> None:
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    assert "lin-doubled" in out and "scaled x2: b" in out and "b twice too large" in out
    assert main(["example", "lin", "--against", "numeric"]) == 0
    assert "expected: pass\nfound:    pass  (as documented)" in capsys.readouterr().out
    assert main(["example", "lin-doubled", "--against", "numeric"]) == 1
    out = capsys.readouterr().out
    assert "expected: scaled x2: b\nfound:    scaled x2: b  (as documented)" in out
    assert main(["example", "lin-misdocumented", "--against", "numeric"]) == 1
    assert "NOT AS DOCUMENTED" in capsys.readouterr().out
    assert main(["example", "lin-dubled"]) == 2
    assert "did you mean 'lin-doubled'" in capsys.readouterr().err
    assert main(["examples", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["lin", "lin-doubled", "lin-misdocumented"]


def test_examples_lists_the_worked_examples(capsys) -> None:
    we = _worked_examples()
    assert main(["examples"]) == 0
    out = capsys.readouterr().out
    for case in we.all_cases():
        assert case["name"] in out


def test_example_replays_mazur_and_its_stale_twin(capsys) -> None:
    _worked_examples()
    assert main(["example", "mazur", "--against", "numeric"]) == 0
    assert "(as documented)" in capsys.readouterr().out
    assert main(["example", "mazur-stale", "--against", "numeric"]) == 1
    out = capsys.readouterr().out
    assert "expected: wrong: w1, w2, w3, w4, b1" in out and "(as documented)" in out
    assert main(["example", "mazr"]) == 2
    assert "did you mean 'mazur'" in capsys.readouterr().err


# ----------------------------------------------------------------- explain

W5_CHAIN = "0.74136507 x 0.186815602 x 0.593269992 = 0.082167041"
W1_CHAIN = "0.036350306 x 0.241300709 x 0.05 = 0.000438568"


def test_explain_mazur_from_targets(tmp_path, monkeypatch, capsys) -> None:
    import gradcheck.worked_examples.mazur  # noqa: F401 - the example the CLI resolves
    (tmp_path / "cli_mazur.py").write_text(textwrap.dedent("""
        from gradcheck.worked_examples.mazur import INPUTS, TARGETS, grad, initial_params, loss
        data = (INPUTS, TARGETS)
    """))
    monkeypatch.chdir(tmp_path)
    base = ["explain", "cli_mazur:loss", "cli_mazur:initial_params", "--args", "cli_mazur:data",
            "--grad", "cli_mazur:grad"]
    assert main(base + ["--leaf", "w5"]) == 0
    assert W5_CHAIN in capsys.readouterr().out
    assert main(base + ["--leaf", "w1"]) == 0
    assert W1_CHAIN in capsys.readouterr().out
    assert main(base + ["--leaf", "w9"]) == 2
    assert "w9" in capsys.readouterr().err
    sys.modules.pop("cli_mazur", None)


def test_explain_mazur_example(capsys) -> None:
    _worked_examples()
    assert main(["explain", "--example", "mazur", "--leaf", "w5"]) == 0
    assert W5_CHAIN in capsys.readouterr().out
    assert main(["explain", "--example", "mazur", "--leaf", "w1"]) == 0
    assert W1_CHAIN in capsys.readouterr().out


def test_explain_a_wrong_gradient_exits_1(learner, capsys) -> None:
    assert main(["explain", "cli_learner:loss", "cli_learner:params", "--args", "cli_learner:data",
                 "--grad", "cli_learner:grad_transposed_b", "--leaf", "b", "--index", "1"]) == 1
    assert "differs by" in capsys.readouterr().out


# ----------------------------------------------------------------- progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ticker_shows_only_on_a_terminal_and_only_when_slow() -> None:
    tty = FakeTerminal()
    with Ticker("checking", stream=tty, delay=0.05, interval=0.01):
        time.sleep(0.2)
    assert "checking..." in tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")
    quick = FakeTerminal()
    with Ticker("checking", stream=quick, delay=5.0):
        pass
    assert quick.getvalue() == ""
    pipe = io.StringIO()
    with Ticker("checking", stream=pipe, delay=0.0, interval=0.01):
        time.sleep(0.05)
    assert pipe.getvalue() == ""


def test_internal_errors_are_one_message_with_exit_4(learner, capsys, monkeypatch) -> None:
    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr("gradcheck.config.run_objects", broken)
    assert main(TARGETS + FAST) == 4
    err = capsys.readouterr().err
    assert "bug in gradcheck" in err and "boom" in err and "Traceback" not in err
