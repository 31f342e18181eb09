"""docs/errors.md cannot drift: every error class and every diagnosis has a section, and every
`python` example in it runs (each asserts its own outcome)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import gradcheck.errors
from gradcheck.model import DIAGNOSES

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
TEXT = DOC.read_text(encoding="utf-8")


def sections(part: str) -> dict[str, str]:
    """`### \\`name\\`` headings under the `## part` heading, with their bodies."""
    body = TEXT.split(f"\n## {part}\n", 1)[1].split("\n## ", 1)[0]
    pieces = re.split(r"^### `([A-Za-z_]+)`\s*$", body, flags=re.M)
    return dict(zip(pieces[1::2], pieces[2::2]))


ERROR_CLASSES = sorted(name for name, obj in inspect.getmembers(gradcheck.errors, inspect.isclass)
                       if issubclass(obj, gradcheck.errors.GradcheckError))


def test_every_error_class_has_a_section():
    assert "GradcheckError" in ERROR_CLASSES and len(ERROR_CLASSES) >= 8
    documented = sections("Errors")
    assert sorted(documented) == ERROR_CLASSES, "docs/errors.md and gradcheck.errors disagree"


def test_every_diagnosis_has_a_section():
    documented = sections("Findings")
    assert sorted(documented) == sorted(DIAGNOSES), "docs/errors.md and gradcheck.model.DIAGNOSES disagree"


@pytest.mark.parametrize("part", ["Errors", "Findings"])
def test_every_section_has_an_example_and_a_fix(part):
    for name, body in sections(part).items():
        assert "```" in body, f"{name}: no example"
        assert "**Fix:**" in body, f"{name}: no fix"


def test_every_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
    assert len(blocks) >= len(ERROR_CLASSES) + len(DIAGNOSES) - 1
    preamble: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), preamble)  # noqa: S102 - our own documentation
    for block in blocks[1:]:
        # each example starts from the preamble alone, so none leans on another's variables
        exec(compile(block, str(DOC), "exec"), dict(preamble))  # noqa: S102
