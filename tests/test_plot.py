"""--plot: heatmaps of relative error and the step-size sweep, and a clear message without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck import check, check_layer
from gradcheck.cli import main
from gradcheck.errors import ReferenceUnavailable
from gradcheck.plot import objective_for, plot_report, step_sweep, sweep_for_report

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 4))
PARAMS = {"W": RNG.standard_normal((3, 4)), "b": RNG.standard_normal(4), "s": 0.7}


def loss(p, X, Y):
    return 0.5 * np.sum((np.tanh(X @ p["W"] + p["b"]) * p["s"] - Y) ** 2)


def grad(p, X, Y, bug=False):
    a = np.tanh(X @ p["W"] + p["b"])
    r = a * p["s"] - Y
    dz = r * p["s"] * (1 - a**2)
    dW = X.T @ dz
    if bug:  # a planted bug: one column of W's gradient left out
        dW[:, 2] = 0.0
    return {"W": dW, "b": dz.sum(axis=0), "s": float(np.sum(r * a))}


def buggy(p, X, Y):
    return grad(p, X, Y, bug=True)


def assert_png(path: Path, low: int = 10_000, high: int = 300_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and low < len(data) < high, len(data)


def test_png_for_a_buggy_case(tmp_path: Path) -> None:
    report = check(loss, buggy, PARAMS, (X, Y), against="numeric")
    assert not report.passed and report["W"].diagnosis == "partial"
    sweep = sweep_for_report(report, objective_for(loss, PARAMS, (X, Y)))
    assert sweep is not None and sweep.name.startswith("W[")
    out = plot_report(report, tmp_path / "buggy.png", sweep=sweep)
    assert_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["buggy.png"]  # no temporary file left behind


def test_step_sweep_shows_the_v(tmp_path: Path) -> None:
    objective = objective_for(loss, PARAMS, (X, Y))
    sweep = step_sweep(objective, "W", (1, 2))
    h, err = sweep  # unpacks as (h, err)
    assert h[0] <= 1e-14 and h[-1] >= 1e-1 and np.all(np.diff(h) > 0)
    best = int(np.argmin(err))
    assert 0 < best < len(h) - 1  # the bottom of the V is inside the range...
    assert err[0] > 100 * err[best] and err[-1] > 100 * err[best]  # ...with round-off left and truncation right
    assert sweep.step == pytest.approx(1e-3 * max(abs(PARAMS["W"][1, 2]), np.sqrt(np.mean(PARAMS["W"] ** 2))))
    exact = grad(PARAMS, X, Y)["W"][1, 2]
    assert sweep.reference == pytest.approx(exact, rel=1e-12)


def test_scalars_layers_and_wrong_shapes_draw(tmp_path: Path) -> None:
    def scalar_loss(p):
        return p["a"] ** 2 * p["b"] + np.sum(p["v"] ** 3)

    def scalar_grad(p):
        return {"a": 2 * p["a"] * p["b"], "b": -p["a"] ** 2, "v": 3 * p["v"] ** 2}

    report = check(scalar_loss, scalar_grad, {"a": 1.5, "b": -0.5, "v": np.arange(1.0, 25.0).reshape(2, 3, 4)},
                   against="numeric")
    assert report["b"].diagnosis == "sign_flipped"
    assert_png(plot_report(report, tmp_path / "scalars.png"), low=5_000)

    def forward(x, w):
        return x @ w, (x, w)

    def backward(dout, cache):
        x, w = cache
        return dout @ w.T, (x.T @ dout).T  # dw transposed: the wrong shape

    layer = check_layer(forward, backward, (RNG.standard_normal((2, 3)), RNG.standard_normal((3, 2))),
                        against="numeric")
    assert layer.parameters[1].diagnosis == "wrong_shape"
    assert_png(plot_report(layer, tmp_path / "layer.png"), low=5_000)
    assert (tmp_path / "layer.svg").exists() is False
    plot_report(layer, tmp_path / "layer.svg")
    assert (tmp_path / "layer.svg").read_text().lstrip().startswith("<?xml")


def test_cli_plot_for_a_buggy_case(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "plot_learner.py").write_text(
        "import numpy as np\n"
        "def loss(w, X):\n    return np.sum(np.sin(X @ w))\n"
        "def grad(w, X):\n    return X.T @ np.cos(X @ w) * -1.0\n"  # sign flipped
        "w = np.linspace(-1.0, 1.0, 4)\n"
        "X = np.arange(12.0).reshape(3, 4) / 10\n")
    monkeypatch.chdir(tmp_path)
    argv = ["plot_learner.py:loss", "plot_learner.py:grad", "plot_learner.py:w", "--args", "plot_learner.py:X",
            "--against", "numeric", "--plot", "out.png"]
    assert main(argv) == 1
    assert "plot written to out.png" in capsys.readouterr().out
    assert_png(tmp_path / "out.png")


def test_missing_matplotlib_gives_the_install_command(tmp_path: Path, monkeypatch, capsys) -> None:
    report = check(loss, grad, PARAMS, (X, Y), against="numeric")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "import matplotlib" now raises ImportError
    with pytest.raises(ReferenceUnavailable, match=r"matplotlib is missing: pip install 'gradcheck\[plot\]'"):
        plot_report(report, tmp_path / "x.png")
    with pytest.raises(ImportError):  # it is also an ImportError, for code that catches those
        plot_report(report, tmp_path / "x.png")
    (tmp_path / "plot_l.py").write_text("def loss(w):\n    return w * w\ndef grad(w):\n    return 2 * w\nw = 1.0\n")
    monkeypatch.chdir(tmp_path)
    assert main(["plot_l:loss", "plot_l:grad", "plot_l:w", "--plot", "x.png"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and "pip install 'gradcheck[plot]'" in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()
    sys.modules.pop("plot_l", None)


def test_cli_plots_one_file_per_configured_case(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "plot_cases.py").write_text(
        "import numpy as np\n"
        "def loss(w):\n    return np.sum(w ** 3)\n"
        "def grad(w):\n    return 3 * w ** 2\n"
        "def grad_half(w):\n    return 1.5 * w ** 2\n"
        "w = np.arange(1.0, 7.0).reshape(2, 3)\n")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gradcheck]\nagainst = "numeric"\n'
        '[[tool.gradcheck.cases]]\nname = "cube"\nloss = "plot_cases.py:loss"\ngrad = "plot_cases.py:grad"\n'
        'params = "plot_cases.py:w"\n'
        '[[tool.gradcheck.cases]]\nname = "cube half"\nloss = "plot_cases.py:loss"\ngrad = "plot_cases.py:grad_half"\n'
        'params = "plot_cases.py:w"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["--plot", "cubes.png"]) == 1
    out = capsys.readouterr().out
    assert "plot written to cubes-cube.png" in out and "plot written to cubes-cube_half.png" in out
    assert_png(tmp_path / "cubes-cube.png")
    assert_png(tmp_path / "cubes-cube_half.png")
    assert not (tmp_path / "cubes.png").exists()
