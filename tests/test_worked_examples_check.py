"""Every worked example passes the three-way check; every documented buggy twin is caught as documented."""

from __future__ import annotations

import pytest

import gradcheck
from gradcheck.worked_examples import all_cases

CASES = all_cases()


def run(case: dict, against) -> gradcheck.Report:
    if case["kind"] == "layer":
        return gradcheck.check_layer(case["forward"], case["backward"], case["inputs"], against=against)
    if "value_and_grad" in case:
        return gradcheck.check(value_and_grad=case["value_and_grad"], params=case["params"],
                               args=case.get("args", ()), against=against)
    return gradcheck.check(case["loss"], case["grad"], case["params"], case.get("args", ()), against=against)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_example_as_documented(case: dict) -> None:
    report = run(case, "auto")
    ran = {r.name for r in report.references if r.ran}
    # Every example is triangulated, including the learner's own Value engine, the cost classes
    # of the Nielsen examples and check_layer's forward functions, which the references re-run.
    assert ran == {"numeric", "jax", "sympy"}, report
    expect = case["expect"]
    if expect == "pass":
        assert report.passed, report
        return
    assert not report.passed, report
    flagged = {p.name for p in report.failures}
    assert flagged == set(expect["leaves"]), report
    for name in expect["leaves"]:
        assert report[name].diagnosis == expect["diagnosis"], report
        if "factor" in expect:
            assert report[name].factor == pytest.approx(expect["factor"]), report


SMALL = [c for c in CASES if c["name"] in ("mazur", "mazur-stale", "karpathy-neuron", "single-neuron",
                                           "logistic-regression", "trask-update-direction", "cs231n-affine", "cs231n-relu",
                                           "cs231n-batchnorm", "cs231n-batchnorm-dgamma-row", "nielsen-cross-entropy",
                                           "micrograd-readme", "micrograd-neuron")]


@pytest.mark.parametrize("case", SMALL, ids=[c["name"] for c in SMALL])
def test_example_three_ways(case: dict) -> None:
    """Each reference alone reaches the same verdict on the small examples."""
    verdicts = {name: run(case, (name,)).passed for name in ("numeric", "jax", "sympy")}
    assert len(set(verdicts.values())) == 1, verdicts
    assert verdicts["numeric"] == (case["expect"] == "pass")
