"""The plugin is loaded in every pytest session where gradcheck is installed: it must cost nothing.

A fresh interpreter runs pytest on a suite that never checks a gradient and records which
modules were imported by the end of the session. (The timing figure is measured by
benchmarks/plugin_startup.py; this test checks the cause of slowness that can be asserted.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

RECORDER = '''
import json
import sys
from pathlib import Path

WATCHED = ("jax", "sympy", "hypothesis", "numpy", "matplotlib", "tqdm", "gradcheck.pytest_plugin", "gradcheck.pipeline")


def pytest_unconfigure(config):
    loaded = [name for name in WATCHED if name in sys.modules]
    Path(__file__).with_name("modules.json").write_text(json.dumps(loaded))
'''


@pytest.fixture(scope="module")
def loaded_modules(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Modules imported by a whole `pytest` run of a suite that does not use gradcheck."""
    suite = tmp_path_factory.mktemp("plain_suite")
    (suite / "conftest.py").write_text(RECORDER)
    (suite / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # hypothesis' own plugin imports hypothesis when the session ends; it is not the one under test
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:hypothesispytest", str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((suite / "modules.json").read_text())


def test_plugin_is_active(loaded_modules: list) -> None:
    assert "gradcheck.pytest_plugin" in loaded_modules, "install gradcheck (pip install -e .) to test its plugin"


def test_no_jax_sympy_or_hypothesis(loaded_modules: list) -> None:
    assert not {"jax", "sympy", "hypothesis", "matplotlib", "tqdm"} & set(loaded_modules)


def test_import_gradcheck_and_its_cli_load_no_heavy_module() -> None:
    code = ("import sys, gradcheck, gradcheck.cli, gradcheck.progress\n"
            "print(sorted(m for m in ('jax', 'sympy', 'matplotlib', 'tqdm', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_no_numpy_nor_check_machinery(loaded_modules: list) -> None:
    assert not {"numpy", "gradcheck.pipeline"} & set(loaded_modules)
