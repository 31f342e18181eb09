"""gradcheck on code written the way learners write it: the corpus in learner_idioms.py, in pairs.

For every case: the correct gradient passes with every parameter "ok"; the planted bug fails on
exactly the expected parameters, each with its expected diagnosis (and factor, indices, shape or
text where the case names them); and the references that ran are the ones the case declares
(all three unless the case says why one cannot run).
"""

from __future__ import annotations

import functools
import warnings

import pytest

import gradcheck
from gradcheck.model import DIAGNOSES

import learner_idioms
import nets

CASES = {case.name: case for case in learner_idioms.CASES}


@functools.lru_cache(maxsize=None)
def report_of(name: str, buggy: bool) -> gradcheck.Report:
    """One check per case and version, shared by the tests below (each is costly under SymPy)."""
    kwargs = learner_idioms.check_kwargs(CASES[name], buggy)
    before = nets.snapshot(kwargs["params"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a planted bug may overflow or divide by 0
        report = gradcheck.check(**kwargs)
    nets.assert_identical(kwargs["params"], before)       # the check never modifies the parameters
    return report


def ran(report: gradcheck.Report) -> set:
    return {s.name for s in report.references if s.ran}


def test_the_corpus_is_well_formed():
    cases = learner_idioms.CASES
    assert len(cases) >= 40
    assert len(CASES) == len(cases), "case names are unique"
    for case in cases:
        assert case.expect, f"{case.name}: a planted bug names the parameters it breaks"
        assert case.grad is not None and case.buggy is not None, case.name
        assert case.buggy is not case.grad or case.buggy_loss is not None, f"{case.name}: the bug is planted somewhere"
        assert (case.loss is None) == case.value_and_grad, case.name
        assert case.references <= learner_idioms.ALL_REFERENCES and "numeric" in case.references
        assert bool(case.reason) == (case.references != learner_idioms.ALL_REFERENCES), \
            f"{case.name}: a reference left out needs a one-line reason, and only then"
        for diagnosis, _ in case.expect.values():
            assert diagnosis in DIAGNOSES, f"{case.name}: {diagnosis!r} is not a diagnosis"


@pytest.fixture(scope="module", params=list(CASES))
def name(request) -> str:
    """A case's name; module-scoped so that a case's three tests run one after another."""
    return request.param


def test_correct_gradient_passes(name):
    report = report_of(name, False)
    assert report.passed, str(report)
    assert all(p.diagnosis == "ok" for p in report.parameters), str(report)


def test_planted_bug_is_diagnosed(name):
    case = CASES[name]
    report = report_of(name, True)
    nets.assert_findings(report, case.expect, f"{name} ({case.bug})")


def test_expected_references_ran(name):
    case = CASES[name]
    for buggy in (False, True):
        report = report_of(name, buggy)
        why = "; ".join(f"{s.name}: {s.reason}" for s in report.references if not s.ran)
        assert ran(report) == set(case.references), \
            f"{name} ({'planted bug' if buggy else 'correct'}): ran {sorted(ran(report))}, " \
            f"expected {sorted(case.references)}{' (' + case.reason + ')' if case.reason else ''}; {why}"
