"""The README's library example runs and says what the README shows."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_library_example_runs_as_shown() -> None:
    text = README.read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report = namespace["report"]
    assert not report.passed
    assert [(p.name, p.diagnosis, p.factor) for p in report.parameters] == [("w", "scaled", 100.0),
                                                                             ("b", "scaled", 100.0)]
    shown = str(report).splitlines()
    for line in shown[5:8]:
        assert line in text, line


def test_readme_gives_exactly_two_setup_commands() -> None:
    text = README.read_text()
    assert 'pip install -e ".[dev]"' in text and "\npytest\n" in text
