"""The pytest plugin, tested the way a learner meets it: a small repo built with pytester.

The repo holds a two-layer network with a correct backward pass and a buggy one (the W2
gradient misses the batch mean). The suite checks it through the fixture, through marker
options and through `[tool.gradcheck]` alone, and checks options, precedence, the JSON
report, the summary line, bad values and pytest-xdist.
"""

from __future__ import annotations

import json

# In-process runs drop the modules they import when they end. Imported once here, these stay:
# numpy (which cannot be imported twice), hypothesis (whose plugin imports it at the end of every
# session: seconds each time) and the gradcheck modules the inner sessions use.
import hypothesis  # noqa: F401
import numpy  # noqa: F401
import pytest

import gradcheck.pipeline  # noqa: F401
import gradcheck.config  # noqa: F401
import gradcheck.layer  # noqa: F401

MLP = '''
"""A two-layer tanh network: loss, a correct gradient and a buggy one."""
import numpy as np


def forward(params, X):
    h = np.tanh(X @ params["W1"] + params["b1"])
    return h, h @ params["W2"] + params["b2"]


def loss(params, X, y):
    # mean over the batch of 1/2 |out - y|^2
    return 0.5 * np.mean(np.sum((forward(params, X)[1] - y) ** 2, axis=1))


def grad(params, X, y):
    h, out = forward(params, X)
    d_out = (out - y) / len(X)                      # d loss / d out, with the batch mean
    d_pre = (d_out @ params["W2"].T) * (1 - h ** 2)  # back through W2, then tanh
    return {"W1": X.T @ d_pre, "b1": d_pre.sum(axis=0), "W2": h.T @ d_out, "b2": d_out.sum(axis=0)}


def grad_buggy(params, X, y):
    g = grad(params, X, y)
    h, out = forward(params, X)
    g["W2"] = h.T @ (out - y)                        # BUG: forgot to divide by the batch size
    return g


def make_params():
    rng = np.random.default_rng(0)
    return {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4),
            "W2": rng.normal(size=(4, 2)), "b2": rng.normal(size=2)}


params = make_params()
_rng = np.random.default_rng(1)
data = (_rng.normal(size=(5, 3)), _rng.normal(size=(5, 2)))
'''

FIXTURE_TESTS = '''
import mlp


def test_correct(gradcheck):
    report = gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data, against="numeric")
    assert report.passed


def test_buggy(gradcheck):
    gradcheck(mlp.loss, mlp.grad_buggy, mlp.params, args=mlp.data, against="numeric")
'''

MARKER_TESTS = '''
import pytest
import mlp

pytestmark = pytest.mark.gradcheck(against="numeric")


@pytest.mark.gradcheck(rtol=1e-6)
def test_correct(gradcheck):
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data)


@pytest.mark.gradcheck(rtol=1e-6)
def test_buggy(gradcheck):
    gradcheck(mlp.loss, mlp.grad_buggy, mlp.params, args=mlp.data)
'''

CASES = '''
[[tool.gradcheck.cases]]
name = "mlp"
loss = "mlp:loss"
grad = "mlp:grad"
params = "mlp:make_params"
args = "mlp:data"

[[tool.gradcheck.cases]]
name = "mlp-buggy"
loss = "mlp:loss"
grad = "mlp:grad_buggy"
params = "mlp:params"
args = "mlp:data"
'''

#: What a learner must see for the buggy network: parameter, verdict, diagnosis, index, cause.
BUGGY_REPORT = [
    "*W2 * (4, 2) * FAIL * scaled x5*",
    "*W2: W2 is 5 times the reference gradient at every checked element.",
    "*likely cause: batch mean in the loss but not in the gradient: divide the gradient by the batch size 5",
    "*worst element W2[[]*, *[]]: yours * vs numeric *",
]


@pytest.fixture
def repo(pytester: pytest.Pytester) -> pytest.Pytester:
    """A learner's repo: mlp.py at the root, gradcheck installed, nothing else."""
    pytester.makepyfile(mlp=MLP)
    return pytester


def report_json(pytester: pytest.Pytester, name: str = "gc.json") -> dict:
    return json.loads((pytester.path / name).read_text())


# --------------------------------------------------------------------------- the three ways in


def test_fixture_passes_correct_and_fails_buggy_with_report(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_mlp=FIXTURE_TESTS)
    result = repo.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_buggy*", *BUGGY_REPORT])
    # gradcheck's frames are hidden: the traceback is the learner's line, then the report
    result.stdout.fnmatch_lines([">       gradcheck(mlp.loss, mlp.grad_buggy, *", "E       *GradientMismatch: *"])
    assert "pytest_plugin.py" not in result.stdout.str()
    assert "gradcheck/check.py" not in result.stdout.str()


def test_marker_options_alone_check_both(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_mlp=MARKER_TESTS)
    result = repo.runpytest("--gradcheck-json=gc.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(BUGGY_REPORT)
    checks = report_json(repo)["checks"]
    assert [c["options"] for c in checks] == [{"against": "numeric", "rtol": 1e-6}] * 2


def test_pyproject_cases_alone_are_collected_and_checked(repo: pytest.Pytester) -> None:
    repo.makepyprojecttoml('[tool.gradcheck]\nagainst = "numeric"\n' + CASES)
    result = repo.runpytest("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["pyproject.toml::mlp PASSED*", "pyproject.toml::mlp-buggy FAILED*",
                                 "*[[]tool.gradcheck[]] case 'mlp-buggy'*",
                                 "mlp-buggy: gradient check FAILED (1 of 4 parameters wrong)*", *BUGGY_REPORT])


def test_pyproject_cases_run_with_testpaths_but_not_for_explicit_paths(repo: pytest.Pytester) -> None:
    repo.makepyprojecttoml('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
                           '[tool.gradcheck]\nagainst = "numeric"\n' + CASES)
    repo.mkdir("tests").joinpath("test_other.py").write_text("def test_other():\n    pass\n")
    repo.runpytest().assert_outcomes(passed=2, failed=1)  # bare `pytest`: the cases too
    repo.runpytest("tests").assert_outcomes(passed=1)  # named paths only
    repo.runpytest("pyproject.toml::mlp").assert_outcomes(passed=1)


def test_pyproject_case_errors_name_the_culprit(repo: pytest.Pytester) -> None:
    repo.makepyfile(broken='''
        import mlp

        def grad(params, X, y):
            return mlp.grad(params, X, y)["W3"]     # the learner's KeyError
    ''')
    repo.makepyprojecttoml('''
        [tool.gradcheck]
        against = "numeric"

        [[tool.gradcheck.cases]]
        name = "raises"
        loss = "mlp:loss"
        grad = "broken:grad"
        params = "mlp:params"
        args = "mlp:data"

        [[tool.gradcheck.cases]]
        name = "typo"
        loss = "mlp:los"
        grad = "mlp:grad"
        params = "mlp:params"
    ''')
    result = repo.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*your gradient function raised KeyError: 'W3'*", "*Your code raised:*",
                                 "*broken.py*, in grad*", "*KeyError: 'W3'"])
    result.stdout.fnmatch_lines(["*'mlp' has no attribute 'los' (target 'mlp:los'); did you mean 'loss'?*"])
    assert "pytest_plugin.py" not in result.stdout.str()


def test_layer_form_of_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_affine='''
        def affine_forward(x, w, b):
            return x @ w + b, (x, w)

        def affine_backward(dout, cache):
            x, w = cache
            return dout @ w.T, x.T @ dout, dout.sum(axis=0)

        def affine_backward_buggy(dout, cache):
            x, w = cache
            return dout @ w.T, x.T @ dout, -dout.sum(axis=0)   # BUG: sign of db

        def inputs():
            import numpy as np
            rng = np.random.default_rng(0)
            return rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)

        def test_affine(gradcheck):
            gradcheck.layer(affine_forward, affine_backward, inputs(), against="numeric")

        def test_affine_buggy(gradcheck):
            gradcheck.layer(affine_forward, affine_backward_buggy, inputs(), against="numeric")
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*[[]2[]] * FAIL * sign_flipped*"])


def test_learner_exception_shows_their_frame_not_gradchecks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import numpy as np

        def grad(p):
            return {"w": p["weights"]}      # the learner's KeyError

        def test_it(gradcheck):
            gradcheck(lambda p: float(np.sum(p["w"] ** 2)), grad, {"w": np.ones(2)}, against="numeric")
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([">       return {*weights*}*", "E       KeyError: 'weights'",
                                 "*direct cause*", "E       *UserCodeError: your gradient function raised KeyError*"])
    out = result.stdout.str()
    assert "pytest_plugin.py" not in out and "objective.py" not in out


# --------------------------------------------------------------------------- options


PRECEDENCE_TESTS = '''
import pytest
import mlp

pytestmark = pytest.mark.gradcheck(atol=1e-8)


def test_plain(gradcheck):
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data)


@pytest.mark.gradcheck(rtol=1e-5, atol=1e-7, seed=3)
def test_marked(gradcheck):
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data)


@pytest.mark.gradcheck(rtol=1e-5)
def test_call(gradcheck):
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data, rtol=1e-4)
'''


def test_precedence_call_marker_cli_ini_table(repo: pytest.Pytester) -> None:
    repo.makepyprojecttoml('''
        [tool.pytest.ini_options]
        gradcheck_rtol = "1e-7"
        gradcheck_budget = "5"

        [tool.gradcheck]
        against = "numeric"
        seed = 1
        budget = 9
        rtol = 1e-9
    ''')
    repo.makepyfile(test_mlp=PRECEDENCE_TESTS)
    repo.runpytest("--gradcheck-rtol=1e-6", "--gradcheck-seed=2", "--gradcheck-json=gc.json").assert_outcomes(passed=3)
    options = {c["nodeid"].rpartition("::")[2]: c["options"] for c in report_json(repo)["checks"]}
    base = {"against": "numeric", "budget": 5.0}  # table < ini
    assert options["test_plain"] == {**base, "rtol": 1e-6, "seed": 2, "atol": 1e-8}  # ini < cli < module mark
    assert options["test_marked"] == {**base, "rtol": 1e-5, "seed": 3, "atol": 1e-7}  # closest marker wins
    assert options["test_call"] == {**base, "rtol": 1e-4, "seed": 2, "atol": 1e-8}  # the call wins
    repo.runpytest("--gradcheck-json=gc.json", "-k", "plain").assert_outcomes(passed=1)
    assert report_json(repo)["checks"][0]["options"] == {**base, "rtol": 1e-7, "seed": 1, "atol": 1e-8}


def test_options_reach_the_check(repo: pytest.Pytester) -> None:
    """A loose rtol from the command line lets a slightly-off gradient through; the default does not."""
    repo.makepyfile(test_close='''
        import mlp

        def test_close(gradcheck):
            off = lambda p, X, y: {k: v * (1 + 1e-5) for k, v in mlp.grad(p, X, y).items()}
            gradcheck(mlp.loss, off, mlp.params, args=mlp.data)
    ''')
    repo.runpytest("--gradcheck-against=numeric").assert_outcomes(failed=1)
    repo.runpytest("--gradcheck-against=numeric", "--gradcheck-rtol=1e-4").assert_outcomes(passed=1)


@pytest.mark.parametrize("args, message", [
    (["--gradcheck-rtol=abc"], "*--gradcheck-rtol*'abc'*number*"),
    (["--gradcheck-atol=-1"], "*--gradcheck-atol*-1.0*non-negative*"),
    (["--gradcheck-against=numerik"], "*unknown reference 'numerik'*did you mean 'numeric'*"),
    (["--gradcheck-seed=1.5"], "*--gradcheck-seed*'1.5'*integer*"),
    (["--gradcheck-budget=soon"], "*--gradcheck-budget*'soon'*"),
    (["--gradcheck-json=."], "*--gradcheck-json*directory*"),
])
def test_bad_command_line_values_are_usage_errors(pytester: pytest.Pytester, args: list, message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize("toml, message", [
    ('[tool.pytest.ini_options]\ngradcheck_rtol = "tight"\n', "*ini option gradcheck_rtol*'tight'*"),
    ('[tool.pytest.ini_options]\ngradcheck_against = "numeric,jacks"\n', "*unknown reference 'jacks'*"),
    ('[tool.gradcheck]\nrtoll = 1e-6\n', "*unknown key 'rtoll'*did you mean 'rtol'*"),
    ('[tool.gradcheck]\nrtol = -1\n', "*'rtol'*-1*non-negative*"),
])
def test_bad_ini_and_pyproject_values_are_usage_errors(pytester: pytest.Pytester, toml: str, message: str) -> None:
    pytester.makepyprojecttoml(toml)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*gradcheck: {message}"])


def test_bad_marker_fails_that_test_naming_the_value(repo: pytest.Pytester) -> None:
    repo.makepyfile('''
        import pytest
        import mlp

        @pytest.mark.gradcheck(rtol="tight")
        def test_it(gradcheck):
            gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data)
    ''')
    result = repo.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gradcheck: 'rtol' in @pytest.mark.gradcheck on *test_it is 'tight'*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.gradcheck(seed=1)\ndef test_x():\n    pass\n")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.gradcheck(against=*"])


def test_help_lists_the_options_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["gradient checks of hand-written backpropagation (gradcheck):",
                                 "*--gradcheck-against=AGAINST*", "*--gradcheck-json=FILE*"])
    result.stdout.fnmatch_lines(["*gradcheck_rtol (string):*"])  # parsed by gradcheck, errors name the option


def test_plugin_can_be_disabled(repo: pytest.Pytester) -> None:
    repo.makepyfile(test_mlp=FIXTURE_TESTS)
    result = repo.runpytest("-p", "no:gradcheck")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'gradcheck' not found*"])


# --------------------------------------------------------------------------- summary and JSON


def test_summary_line_and_json_report(repo: pytest.Pytester) -> None:
    repo.makepyprojecttoml('[tool.gradcheck]\nagainst = "numeric"\n' + CASES)
    repo.makepyfile(test_mlp=FIXTURE_TESTS + '''

def test_two_checks(gradcheck):
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data, title="first")
    gradcheck(mlp.loss, mlp.grad, mlp.params, args=mlp.data, title="second")


def test_raises(gradcheck):
    gradcheck(mlp.loss, lambda p, X, y: 1 / 0, mlp.params, args=mlp.data)


def test_unrelated():
    pass
''')
    result = repo.runpytest("--gradcheck-json=reports/gc.json")
    result.assert_outcomes(passed=4, failed=3)
    result.stdout.fnmatch_lines(["gradcheck: 7 gradient checks ran, 3 failed (1 raised), worst relative error "
                                 "8.0e-01 (*); JSON report: *gc.json"])
    assert len([line for line in result.outlines if line.startswith("gradcheck:")]) == 1
    data = report_json(repo, "reports/gc.json")
    assert data["summary"] == {"checks": 7, "failed": 3, "errors": 1, "worst_rel_error": 0.8,
                               "worst_nodeid": "pyproject.toml::mlp-buggy"}
    by_test = [(c["nodeid"], c["title"], c["passed"]) for c in data["checks"]]
    assert by_test == [("pyproject.toml::mlp", "mlp", True), ("pyproject.toml::mlp-buggy", "mlp-buggy", False),
                       ("test_mlp.py::test_buggy", "", False), ("test_mlp.py::test_correct", "", True),
                       ("test_mlp.py::test_raises", "", False), ("test_mlp.py::test_two_checks", "first", True),
                       ("test_mlp.py::test_two_checks", "second", True)]
    buggy = next(c for c in data["checks"] if c["nodeid"].endswith("test_buggy"))
    w2 = next(p for p in buggy["report"]["parameters"] if p["name"] == "W2")
    assert (w2["diagnosis"], w2["factor"], w2["passed"]) == ("scaled", 5.0, False)
    raised = next(c for c in data["checks"] if c["nodeid"].endswith("test_raises"))
    assert raised["error"]["type"] == "UserCodeError" and "ZeroDivisionError" in raised["error"]["message"]
    assert [p.name for p in (repo.path / "reports").iterdir()] == ["gc.json"]  # no temporary file left


def test_no_summary_line_when_no_check_ran(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if line.startswith("gradcheck")]


def test_xdist_workers_report_every_check(repo: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    repo.makepyprojecttoml('[tool.gradcheck]\nagainst = "numeric"\n' + CASES)
    repo.makepyfile(test_a=FIXTURE_TESTS, test_b=MARKER_TESTS)
    # hypothesis' plugin makes every worker import hypothesis (seconds each): not what is tested here
    result = repo.runpytest_subprocess("-n", "2", "-p", "no:hypothesispytest", "--gradcheck-json=gc.json")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(["gradcheck: 6 gradient checks ran, 3 failed, worst relative error 8.0e-01*"])
    data = report_json(repo)
    assert data["summary"]["checks"] == 6
    assert sorted(c["nodeid"] for c in data["checks"]) == [
        "pyproject.toml::mlp", "pyproject.toml::mlp-buggy", "test_a.py::test_buggy", "test_a.py::test_correct",
        "test_b.py::test_buggy", "test_b.py::test_correct"]
