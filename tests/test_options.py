"""One judge of the check's options: check(), the configuration file and the CLI agree on every value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradcheck.config import validate_options
from gradcheck.errors import ConfigError, InvalidCase
from gradcheck.options import OPTION_RULES, option_problem, validate_numbers

NUMERIC = tuple(OPTION_RULES)
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**80), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=4), st.just(np.int64(3)), st.just(np.float64(0.5)), st.just(-np.int32(2)))


def _check_accepts(name: str, value: object) -> bool:
    options = dict.fromkeys(NUMERIC)
    options[name] = value
    try:
        validate_numbers(**options)
    except InvalidCase as exc:
        assert f"{name}={value!r} is not a valid {name}" in str(exc)
        return False
    return True


def _config_accepts(name: str, value: object) -> bool:
    try:
        validate_options({name: value}, "[tool.gradcheck]")
    except ConfigError as exc:
        assert repr(name) in str(exc)
        return False
    return True


@given(name=st.sampled_from(NUMERIC), value=values)
def test_check_and_the_configuration_accept_the_same_values(name, value):
    accepted = _check_accepts(name, value)
    assert accepted == _config_accepts(name, value) == (option_problem(name, value) is None)


@pytest.mark.parametrize("name, value, ok", [
    ("seed", 2**70, True), ("seed", 0, True), ("seed", -1, False), ("seed", 1.5, False), ("seed", True, False),
    ("max_elements", 0, True), ("max_elements", 10, True), ("max_elements", -3, False),
    ("rtol", 1e-7, True), ("rtol", float("nan"), False), ("budget", float("inf"), False), ("atol", "tiny", False),
])
def test_the_documented_edges(name, value, ok):
    assert _check_accepts(name, value) is ok
    assert _config_accepts(name, value) is ok


def test_a_check_runs_with_the_largest_seed_and_no_element_wise_sample():
    import gradcheck

    w = np.linspace(-1.0, 1.0, 5)
    report = gradcheck.check(lambda p: np.sum(p ** 3), lambda p: 3 * p ** 2, w, against="numeric", seed=2**70,
                             max_elements=0)
    assert report.passed and report.seed == 2**70
