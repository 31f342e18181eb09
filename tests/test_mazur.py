"""Golden test: Matt Mazur's "A Step by Step Backpropagation Example", replayed number by number.

The printed numbers and what they follow from are in tests/golden/mazur.json. Rows 1-29
follow from correct backprop and are asserted to half a unit in their last printed digit (the
back-solved row dEo2_dout_h1 to 1.5e-9, as the file says). The last four do not: they come
from the post's script before its fix, which computed the hidden deltas with the
already-updated output weights; that stale-weight variant must fail `check` on w1..w4 only.
"""

from __future__ import annotations

import pytest

import gradcheck

import nets
from nets import (MAZUR_INPUTS, MAZUR_PARAMS, MAZUR_TARGETS, mazur_backward, mazur_golden, mazur_grad,
                  mazur_grad_stale, mazur_train)

#: Tolerance of the one printed value that was back-solved from rounded numbers (see the file).
BACK_SOLVED = {"dEo2_dout_h1": 1.5e-9}

DATA = mazur_golden()
ROWS = DATA["printed"]
BY_NAME = {row["name"]: row for row in ROWS}


def half_unit(row: dict) -> float:
    """Half a unit in the last printed digit (or the file's stated tolerance)."""
    return BACK_SOLVED.get(row["name"], 0.5 * 10.0 ** -row["decimals"])


def assert_printed(name: str, value: float) -> None:
    row = BY_NAME[name]
    printed = float(row["printed"])
    assert abs(value - printed) <= half_unit(row), f"{name}: computed {value!r}, printed {row['printed']}"


def one_step():
    """Every quantity the post prints for the first step, from the hand-written implementation."""
    grads, trace = mazur_backward(MAZUR_PARAMS, MAZUR_INPUTS, MAZUR_TARGETS)
    values = dict(trace)
    updated = {k: MAZUR_PARAMS[k] - DATA["setup"]["learning_rate"] * grads[k] for k in nets.WEIGHTS}
    values.update({f"{k}_new": v for k, v in updated.items()})
    return values


def test_setup_matches_the_golden_file():
    setup = DATA["setup"]
    assert {**setup["weights"], **setup["biases"]} == MAZUR_PARAMS
    assert list(MAZUR_INPUTS) == [setup["inputs"]["i1"], setup["inputs"]["i2"]]
    assert list(MAZUR_TARGETS) == [setup["targets"]["o1"], setup["targets"]["o2"]]
    assert setup["learning_rate"] == 0.5


def test_rows_1_to_29_are_the_ones_correct_backprop_explains():
    assert len(ROWS) == 33
    assert ROWS[28]["name"] == "w4_new" and ROWS[29]["name"] == "E_total_after_1"


@pytest.mark.parametrize("row", ROWS[:29], ids=[r["name"] for r in ROWS[:29]])
def test_printed_row(row):
    """Forward pass, errors, the w5 and w1 chains and all eight updated weights."""
    values = one_step()
    assert_printed(row["name"], float(values[row["name"]]))
    # and the file's float64 value is what this implementation computes
    assert float(values[row["name"]]) == pytest.approx(row["float64_correct_backprop"], rel=1e-13, abs=1e-16)


def test_chain_factors_multiply_to_the_gradients():
    v = one_step()
    assert v["dEtotal_dw5"] == pytest.approx(v["dEtotal_dout_o1"] * v["dout_o1_dnet_o1"] * v["dnet_o1_dw5"], rel=1e-15)
    assert v["dEtotal_dw1"] == pytest.approx(v["dEtotal_dout_h1"] * v["dout_h1_dnet_h1"] * v["dnet_h1_dw1"], rel=1e-15)


def test_gradients_the_post_does_not_print_match_the_notes():
    grads = mazur_grad(MAZUR_PARAMS, MAZUR_INPUTS, MAZUR_TARGETS)
    note = next(n for n in DATA["notes"] if n.startswith("Correct backprop gradients"))
    expected = {"w6": 0.08266762784753326, "w7": -0.022602540477475067, "w8": -0.02274024221597822,
                "w2": 0.0008771354689486937, "w3": 0.0004977127352608601, "w4": 0.0009954254705217202,
                "b1": 0.018725609394704138, "b2": 0.10040032511200075}
    for key, value in expected.items():
        assert repr(value) in note
        assert grads[key] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("against", ["numeric", "auto"])
def test_correct_implementation_passes_check(against):
    report = gradcheck.check(nets.mazur_loss, mazur_grad, dict(MAZUR_PARAMS), (MAZUR_INPUTS, MAZUR_TARGETS),
                             against=against)
    assert report.passed, str(report)
    assert [p.name for p in report.parameters] == list(MAZUR_PARAMS)


def test_stale_weight_variant_fails_on_the_hidden_layer_only():
    report = gradcheck.check(nets.mazur_loss, mazur_grad_stale, dict(MAZUR_PARAMS), (MAZUR_INPUTS, MAZUR_TARGETS),
                             against="numeric")
    assert not report.passed
    failed = {p.name for p in report.failures}
    assert {"w1", "w2", "w3", "w4"} <= failed
    assert not failed & {"w5", "w6", "w7", "w8", "b2"}
    assert failed == {"w1", "w2", "w3", "w4", "b1"}   # b1's gradient uses the same stale hidden deltas
    text = str(report)
    for name in ("w1", "w2", "w3", "w4"):
        assert f"{name}: " in text


def test_stale_weight_variant_reproduces_the_last_four_printed_numbers():
    """As the notes say: the stale script gives the one-step error and the outputs after exactly
    10,000 updates; the printed error after 10,000 is correct backprop after 9,999 updates."""
    lr = DATA["setup"]["learning_rate"]
    after_1 = mazur_train(mazur_grad_stale, 1, lr=lr)
    assert_printed("E_total_after_1", nets.mazur_loss(after_1, MAZUR_INPUTS, MAZUR_TARGETS))
    stale = mazur_train(mazur_grad_stale, 10_000, lr=lr)
    out = nets.mazur_forward(stale, MAZUR_INPUTS, MAZUR_TARGETS)
    assert_printed("out_o1_after_10000", out["out_o1"])
    assert_printed("out_o2_after_10000", out["out_o2"])
    assert out["E_total"] == pytest.approx(0.0000350848, abs=5e-11)   # the notes' stale value, not the printed one
    correct_9999 = mazur_train(mazur_grad, 9_999, lr=lr)
    assert_printed("E_total_after_10000", nets.mazur_loss(correct_9999, MAZUR_INPUTS, MAZUR_TARGETS))


def test_correct_backprop_does_not_reproduce_the_last_four():
    lr = DATA["setup"]["learning_rate"]
    after_1 = nets.mazur_loss(mazur_train(mazur_grad, 1, lr=lr), MAZUR_INPUTS, MAZUR_TARGETS)
    assert after_1 == pytest.approx(BY_NAME["E_total_after_1"]["float64_correct_backprop"], rel=1e-12)
    assert abs(after_1 - float(BY_NAME["E_total_after_1"]["printed"])) > half_unit(BY_NAME["E_total_after_1"])
    out = nets.mazur_forward(mazur_train(mazur_grad, 10_000, lr=lr), MAZUR_INPUTS, MAZUR_TARGETS)
    for key in ("out_o1", "out_o2", "E_total"):
        row = BY_NAME[f"{key}_after_10000"]
        assert out[key] == pytest.approx(row["float64_correct_backprop"], rel=1e-9)
        assert abs(out[key] - float(row["printed"])) > half_unit(row)
