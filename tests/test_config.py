"""The [tool.gradcheck] reader and "module:attr" targets: clear ConfigErrors, never anything else."""

from __future__ import annotations

import string
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck.config import CaseSpec, load_config, load_target, parse_config, parse_target, run_case
from gradcheck.errors import ConfigError, GradcheckError, UserCodeError

LEARNER = '''
import numpy as np

def loss(p, X, y):
    return 0.5 * np.sum((X @ p["W"] - y) ** 2)

def grad(p, X, y):
    return {"W": X.T @ (X @ p["W"] - y)}

def grad_twice(p, X, y):
    return {"W": 2 * X.T @ (X @ p["W"] - y)}

def params():
    return {"W": np.linspace(-1.0, 1.0, 6).reshape(3, 2)}

_rng = np.random.default_rng(1)
data = (_rng.standard_normal((5, 3)), _rng.standard_normal((5, 2)))
'''

LAYER = '''
import numpy as np

def forward(x, w):
    return x @ w, (x, w)

def backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout

inputs = {"x": np.arange(6.0).reshape(2, 3) / 7, "w": np.linspace(-1, 1, 12).reshape(3, 4)}
'''


def toml(body: str) -> str:
    return textwrap.dedent(body)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a learner module (under a name unique to this test) and a layer module."""
    (tmp_path / "cfg_learner.py").write_text(LEARNER)
    (tmp_path / "cfg_layers.py").write_text(LAYER)
    yield tmp_path
    for name in ("cfg_learner", "cfg_layers"):
        sys.modules.pop(name, None)


GOOD = """
[tool.gradcheck]
against = "numeric"
rtol = 1e-7

[[tool.gradcheck.cases]]
name = "linear"
loss = "cfg_learner:loss"
grad = "cfg_learner:grad"
params = "cfg_learner:params"
args = "cfg_learner:data"
seed = 3

[[tool.gradcheck.cases]]
name = "linear-by-path"
loss = "cfg_learner.py:loss"
grad = "cfg_learner.py:grad_twice"
params = "cfg_learner.py:params"
args = "cfg_learner.py:data"

[[tool.gradcheck.cases]]
name = "matmul"
forward = "cfg_layers:forward"
backward = "cfg_layers:backward"
inputs = "cfg_layers:inputs"
"""


def test_reads_options_and_cases(project: Path) -> None:
    (project / "pyproject.toml").write_text(GOOD)
    config = load_config(project / "pyproject.toml")
    assert config.options == {"against": "numeric", "rtol": 1e-7}
    assert [c.name for c in config.cases] == ["linear", "linear-by-path", "matmul"]
    assert [c.kind for c in config.cases] == ["gradient", "gradient", "layer"]
    assert config.cases[0].options == {"against": "numeric", "rtol": 1e-7, "seed": 3}
    assert config.cases[2].targets == {"forward": "cfg_layers:forward", "backward": "cfg_layers:backward",
                                       "inputs": "cfg_layers:inputs"}
    assert config.root == project


def test_runs_cases_and_options_override(project: Path) -> None:
    (project / "pyproject.toml").write_text(GOOD)
    config = load_config(project / "pyproject.toml")
    good, bad, layer = (run_case(c, config.root) for c in config.cases)
    assert good.passed and good.title == "linear" and good.seed == 3
    assert not bad.passed and bad["W"].diagnosis == "scaled" and bad["W"].factor == 2
    assert layer.passed and [p.name for p in layer.parameters] == ["x", "w"]
    loose = run_case(config.cases[1], config.root, rtol=1.5, seed=None)
    assert loose.passed  # the command line's rtol overrides the config's; None leaves it alone


def test_resolve_calls_zero_argument_data_functions(project: Path) -> None:
    objs = CaseSpec("c", "gradient", {"loss": "cfg_learner:loss", "params": "cfg_learner:params"}).resolve(project)
    assert callable(objs["loss"]) and set(objs["params"]) == {"W"}
    assert isinstance(objs["params"]["W"], np.ndarray)


def test_file_targets_do_not_stay_in_sys_modules(project: Path) -> None:
    before = set(sys.modules)
    fn = load_target("cfg_learner.py:loss", project)
    assert callable(fn) and not {m for m in set(sys.modules) - before if "cfg_learner" in m}
    assert str(project) not in sys.path and str(project.resolve()) not in sys.path


def test_one_module_per_case(project: Path) -> None:
    spec = CaseSpec("c", "gradient", {"loss": "cfg_learner.py:loss", "grad": "cfg_learner.py:grad"})
    objs = spec.resolve(project)
    assert objs["loss"].__globals__ is objs["grad"].__globals__


@pytest.mark.parametrize("target, hint", [
    ("cfg_learner:los", "did you mean 'loss'?"),
    ("cfg_lerner:loss", "did you mean 'cfg_learner'"),
    ("cfg_learner.py:gradd", "did you mean 'grad'"),
    ("cfg_lerner.py:loss", "did you mean 'cfg_learner.py'"),
    ("cfg_learner", "module:attribute"),
    ("cfg learner:loss", "not a module name"),
    ("cfg_learner:", "module:attribute"),
])
def test_misspelt_targets_suggest_the_closest_name(project: Path, target: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_target(target, project)
    assert hint in str(info.value)


def test_importing_a_broken_module_is_the_users_error(tmp_path: Path) -> None:
    (tmp_path / "cfg_broken.py").write_text("import numpy as np\n\nx = 1 / 0\n")
    with pytest.raises(UserCodeError) as info:
        load_target("cfg_broken.py:x", tmp_path)
    assert "ZeroDivisionError" in str(info.value) and "cfg_broken.py" in info.value.user_traceback
    assert "<frozen" not in info.value.user_traceback
    (tmp_path / "cfg_needs.py").write_text("import cfg_not_installed_anywhere\n")
    with pytest.raises(UserCodeError, match="cfg_not_installed_anywhere"):
        load_target("cfg_needs:x", tmp_path)
    sys.modules.pop("cfg_needs", None)


def test_a_module_of_the_same_name_from_another_project_is_not_reused(tmp_path: Path) -> None:
    for n, value in ((1, 1.0), (2, 2.0)):
        root = tmp_path / f"p{n}"
        root.mkdir()
        (root / "cfg_same.py").write_text(f"value = {value}\n")
        assert load_target("cfg_same:value", root) == value
    sys.modules.pop("cfg_same", None)


@pytest.mark.parametrize("body, words", [
    ("[tool.gradcheck]\nrtoll = 1e-7\n", ["'rtoll'", "did you mean 'rtol'"]),
    ("[tool.gradcheck]\nrtol = 'tight'\n", ["'rtol'", "non-negative number"]),
    ("[tool.gradcheck]\nrtol = -1.0\n", ["'rtol'"]),
    ("[tool.gradcheck]\nseed = 1.5\n", ["'seed'", "integer"]),
    ("[tool.gradcheck]\nseed = true\n", ["'seed'"]),
    ("[tool.gradcheck]\nagainst = ['numeric', 'jaxx']\n", ["'jaxx'", "did you mean 'jax'"]),
    ("[tool.gradcheck]\nagainst = []\n", ["'against'"]),
    ("[tool.gradcheck]\ncases = 3\n", ["'cases'", "array of tables"]),
    ("[tool.gradcheck]\n[[tool.gradcheck.cases]]\nloss = 'm:l'\n", ["case #1", "'name'"]),
    ("[[tool.gradcheck.cases]]\nname = 'mlp'\nloss = 'm:loss'\ngrad = 'm:grad'\n", ["'mlp'", "'params'"]),
    ("[[tool.gradcheck.cases]]\nname = 'mlp'\nloss = 'm:loss'\ngrad = 'm:grad'\nparams = 'm:p'\nlos = 'm:l'\n",
     ["'mlp'", "unknown key 'los'", "did you mean 'loss'"]),
    ("[[tool.gradcheck.cases]]\nname = 'mlp'\nloss = 'm:loss'\ngrad = 5\nparams = 'm:p'\n", ["'grad'", "'mlp'", "string"]),
    ("[[tool.gradcheck.cases]]\nname = 'mlp'\nloss = 'm:loss'\ngrad = 'm'\nparams = 'm:p'\n", ["'grad'", "'mlp'"]),
    ("[[tool.gradcheck.cases]]\nname = 'mlp'\nvalue_and_grad = 'm:f'\nloss = 'm:l'\nparams = 'm:p'\n",
     ["'mlp'", "value_and_grad"]),
    ("[[tool.gradcheck.cases]]\nname = 'l'\nforward = 'm:f'\nbackward = 'm:b'\ninputs = 'm:i'\nparams = 'm:p'\n",
     ["'l'", "'params'", "layer case"]),
    ("[[tool.gradcheck.cases]]\nname = 'l'\nkind = 'layr'\n", ["'kind'", "'layr'"]),
    ("[[tool.gradcheck.cases]]\nname = 'a'\nvalue_and_grad = 'm:f'\nparams = 'm:p'\nrtol = 'x'\n", ["'rtol'", "'a'"]),
    ("[[tool.gradcheck.cases]]\nname = 'a'\nvalue_and_grad = 'm:f'\nparams = 'm:p'\n"
     "[[tool.gradcheck.cases]]\nname = 'a'\nvalue_and_grad = 'm:f'\nparams = 'm:p'\n", ["two cases", "'a'"]),
    ("[tool.gradcheck\n", ["invalid TOML"]),
    ("tool = 3\n", ["'tool'", "table"]),
])
def test_reader_errors_name_the_key_and_the_case(body: str, words: list) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(body, path="pyproject.toml")
    for word in words:
        assert word in str(info.value)


def test_value_and_grad_case_and_no_table() -> None:
    config = parse_config("[[tool.gradcheck.cases]]\nname = 'v'\nvalue_and_grad = 'm:f'\nparams = 'm:p'\n")
    assert config.cases[0].targets == {"value_and_grad": "m:f", "params": "m:p"}
    assert parse_config("[project]\nname = 'x'\n").cases == []
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/pyproject.toml")
    with pytest.raises(ConfigError, match="did you mean 'v'"):
        config.case("vv")


def test_the_file_is_data_not_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = f"[[tool.gradcheck.cases]]\nname = 'x'\nloss = \"os:system('touch {marker}')\"\ngrad = 'm:g'\nparams = 'm:p'\n"
    with pytest.raises(ConfigError):
        parse_config(body)
    assert not marker.exists()


# ----------------------------------------------------------------- fuzzing: only ConfigError, ever

_keys = st.sampled_from(["name", "kind", "loss", "grad", "params", "args", "value_and_grad", "forward", "backward",
                         "inputs", "against", "rtol", "atol", "seed", "budget", "wrt", "max_elements", "cases",
                         "description", "los", "tool", "gradcheck"])
_values = st.recursive(
    st.one_of(st.integers(-3, 2**62), st.floats(allow_nan=True), st.booleans(),
              st.text(alphabet=string.ascii_letters + string.digits + " :./_-", max_size=12),
              st.sampled_from(["m:f", "numeric", "a.py:b", ":", "m:", "x/y.py:z", "jax"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=8,
)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return f'"{v}"'  # the alphabet needs no escaping
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5), st.lists(st.dictionaries(_keys, _values, max_size=6), max_size=3))
def test_fuzz_structured_tables_give_only_config_errors(top: dict, cases: list) -> None:
    text = "[tool.gradcheck]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in top.items() if k != "cases")
    for case in cases:
        text += "[[tool.gradcheck.cases]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in case.items())
    try:
        parse_config(text)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,:\n #tool.gradcheck cases name loss 1e-7 -x")), max_size=120))
def test_fuzz_malformed_text_gives_only_config_errors(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2),
                 st.from_regex(r"gcfuzz[a-z_./ :]{0,12}:[a-z_.]{0,6}", fullmatch=True)))
def test_fuzz_malformed_targets_give_only_gradcheck_errors(target: object) -> None:
    try:
        parse_target(target)
    except ConfigError:
        return
    if not target.startswith("gcfuzz"):
        return  # well-formed, and it might name a real module: importing one is not this test's business
    # Well-formed targets naming nothing: still a gradcheck error (never ImportError, OSError...).
    try:
        load_target(target, Path(__file__).parent / "no-such-folder")
    except GradcheckError:
        pass
