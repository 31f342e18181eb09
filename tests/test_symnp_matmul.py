"""symnp's matmul: numbers multiplied exactly and rounded once, symbolic terms as before.

Numeric entries must equal the exact rational product correctly rounded at the working
precision; entries with a symbolic factor must be the same expressions the term-by-term sum
(`_sum_terms` over every product, the original algorithm) builds.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck.references.sympy import symnp

DPS = 50
T = sympy.Symbol("t", real=True)
T_VALUE = sympy.Rational(7, 5)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- oracles ----------------------------------------------------------------------------------

def _fraction(x: Any) -> Fraction:
    """A number's exact value (mpf, SymPy Float or Rational, Python int or float)."""
    raw = getattr(x, "_mpf_", None)
    if raw is not None:
        sign, man, exp, _ = raw
        value = Fraction(man) * Fraction(2) ** exp
        return -value if sign else value
    if isinstance(x, sympy.Rational):
        return Fraction(int(x.p), int(x.q))
    return Fraction(x.item() if isinstance(x, np.generic) else x)


def _exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact rational a @ b (2-D)."""
    fractions = np.vectorize(_fraction, otypes=[object])
    return fractions(a) @ fractions(b)


def _correctly_rounded(value: Fraction) -> Any:
    """value correctly rounded (to nearest) at the working precision."""
    raw = mpmath.libmp.from_rational(value.numerator, value.denominator, mpmath.mp.prec, "n")
    return mpmath.mp.make_mpf(raw)


def _termwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b as symnp summed it before: every product rounded, then `_sum_terms` (2-D)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=object)
    for i, j in np.ndindex(out.shape):
        out[i, j] = symnp._sum_terms(*(x * y for x, y in zip(a[i], b[:, j])))
    return out


def _objects(x: Any) -> np.ndarray:
    """An array as `_matmul` receives it: a plain object array of lifted numbers."""
    return np.asarray(symnp.lift(np.asarray(x)), dtype=object)


def _floats(shape: tuple, seed: int) -> np.ndarray:
    """Lifted standard normal doubles."""
    return _objects(np.random.default_rng(seed).standard_normal(shape))


def _assert_correctly_rounded(got: np.ndarray, a: np.ndarray, b: np.ndarray, where: Any = ...) -> None:
    """Each entry of got (those marked in `where`) is the exact a @ b rounded once, to nearest."""
    expected = _exact(a, b)
    for index in np.argwhere(np.ones(got.shape, bool) if where is ... else where):
        index = tuple(index)
        value = got[index]
        assert isinstance(value, mpmath.mpf), (index, value)
        assert value._mpf_ == _correctly_rounded(expected[index])._mpf_, (index, value, expected[index])


def _close(x: Any, y: Any, rel: float = 1e-45) -> bool:
    """Numbers or Fractions x and y agree to `rel`, compared with guard digits."""
    with mpmath.workdps(DPS + 30):
        x, y = (_correctly_rounded(v) if isinstance(v, Fraction) else mpmath.mpf(v) for v in (x, y))
        return mpmath.almosteq(x, y, rel_eps=rel, abs_eps=0)


def _at_point(expr: Any) -> Any:
    """An expression's value and derivative at T_VALUE, as mpf at high precision."""
    value = sympy.sympify(expr)
    return [mpmath.mpf(sympy.N(e.subs(T, T_VALUE), DPS + 20)) for e in (value, value.diff(T))]


def _assert_same_expression(new: Any, old: Any) -> None:
    """Same symbolic terms (their difference is a number) and same value and derivative."""
    assert not (sympy.sympify(new) - sympy.sympify(old)).expand().free_symbols
    for x, y in zip(_at_point(new), _at_point(old)):
        assert _close(x, y), (new, old)


# --- exactness on numbers ---------------------------------------------------------------------

@st.composite
def _operands(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned float64 matrices of bounded magnitude."""
    n, k, m = (draw(st.integers(1, 5)) for _ in range(3))
    elements = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)  # subnormals included
    return (draw(hnp.arrays(np.float64, (n, k), elements=elements)),
            draw(hnp.arrays(np.float64, (k, m), elements=elements)))


@FAST
@given(_operands(), st.sampled_from([DPS, 15, 5]))
def test_random_products_are_correctly_rounded(operands: tuple, dps: int) -> None:
    """At 50 digits every product of doubles is exact; at fewer, rounding each one would show."""
    a, b = (_objects(x) for x in operands)
    with symnp.evaluation(dps=dps):
        _assert_correctly_rounded(symnp._matmul(a, b), a, b)


HAND_PICKED = {
    "zeros and negatives": ([[0.0, -1.5, -0.0], [2.0, 0.0, -3.25]], [[-0.0, 3.0], [1e-300, -1e300], [0.0, -7.0]]),
    "cancelling extremes": ([[1e300, 1e-300, -1e300]], [[1.0], [1e300], [1.0]]),
    "subnormals": ([[5e-324, -5e-324, 1e-310]], [[3.0], [1.0], [1e10]]),
    "all zeros": ([[0.0, 0.0], [0.0, 0.0]], [[1.5, 0.0], [-2.0, 0.0]]),
    "ints": (np.array([[1, -2, 2**100 + 1]], dtype=object), np.array([[3], [5], [-7]], dtype=object)),
    "ints and floats": (np.array([[1, 0, 1]], dtype=object), [[0.1], [2.5], [-1e-20]]),
    "other numbers": (np.array([[sympy.Integer(3), sympy.Rational(-3, 8), sympy.Float("0.1", 60), 2.5,
                                 np.float32(0.1), np.int64(-4), True]], dtype=object),
                      [[0.3], [-1.1], [7.0], [1e-8], [2.0], [1.25], [9.0]]),
}


@pytest.mark.parametrize("a, b", HAND_PICKED.values(), ids=HAND_PICKED)
def test_hand_picked_products_are_correctly_rounded(a: Any, b: Any) -> None:
    a, b = _objects(a), _objects(b)
    with symnp.evaluation(dps=DPS):
        _assert_correctly_rounded(symnp._matmul(a, b), a, b)


def test_boolean_mask_times_floats() -> None:
    """An int mask (from a comparison) against lifted floats: numpy's `@`, dispatched to symnp."""
    mask = np.array([[True, False, True]]).astype(np.int64)
    w = symnp.lift(np.array([[0.1, -2.0], [3.0, 4.0], [1e-17, 0.7]]))
    with symnp.evaluation(dps=DPS):
        _assert_correctly_rounded(np.asarray(mask @ w), mask.astype(object), _objects(w))


# --- shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape_a, shape_b", [((3,), (3, 2)), ((2, 3), (3,)), ((3,), (3,))])
def test_vector_shapes_match_numpy(shape_a: tuple, shape_b: tuple) -> None:
    rng = np.random.default_rng(0)
    fa, fb = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    a, b = _objects(fa), _objects(fb)
    with symnp.evaluation(dps=DPS):
        got = symnp._matmul(a, b)
        assert got.shape == (fa @ fb).shape
        expected = _exact(a.reshape(-1, b.shape[0]), b.reshape(b.shape[0], -1))
        assert list(np.asarray(got).reshape(-1)) == [_correctly_rounded(v) for v in expected.reshape(-1)]


@pytest.mark.parametrize("shape_a, shape_b", [((2, 0), (0, 3)), ((0, 3), (3, 2)), ((2, 3), (3, 0)), ((0,), (0,))])
def test_empty_operands_give_integer_zeros(shape_a: tuple, shape_b: tuple) -> None:
    got = symnp._matmul(_floats(shape_a, 0), _floats(shape_b, 1))
    assert got.shape == (np.zeros(shape_a) @ np.zeros(shape_b)).shape
    assert all(type(v) is int and v == 0 for v in np.asarray(got).flat)


def test_vector_dot_through_the_namespace_is_a_scalar() -> None:
    fu, fv = [0.1, -0.2, 0.3], [3.0, 1e-9, -0.5]
    with symnp.evaluation(dps=DPS):
        got = symnp.dot(symnp.lift(np.array(fu)), symnp.lift(np.array(fv)))
        assert isinstance(got, mpmath.mpf)
        assert got == _correctly_rounded(sum(Fraction(x) * Fraction(y) for x, y in zip(fu, fv)))


# --- symbolic entries -------------------------------------------------------------------------

def _numbers_only(m: np.ndarray) -> np.ndarray:
    """m with its symbolic entries replaced by 0."""
    return np.vectorize(lambda x: x if symnp._numeric(x) else 0, otypes=[object])(m)


def _assert_mixed(a: np.ndarray, b: np.ndarray, symbolic: np.ndarray) -> None:
    """Entries marked `symbolic` match the term-by-term expressions, the others are exact."""
    with symnp.evaluation(dps=DPS):
        got, old = symnp._matmul(a, b), _termwise(a, b)
        for index in np.argwhere(symbolic):
            _assert_same_expression(got[tuple(index)], old[tuple(index)])
        # The numeric entries never meet a symbolic factor: zeroing those leaves them unchanged.
        _assert_correctly_rounded(got, _numbers_only(a), _numbers_only(b), where=~symbolic)


def test_one_symbol_in_b_affects_its_column_only() -> None:
    """The first layer X @ W1 with one element of W1 a symbol."""
    a, b = _floats((4, 5), 1), _floats((5, 6), 2)
    b[2, 3] = T
    symbolic = np.zeros((4, 6), bool)
    symbolic[:, 3] = True
    _assert_mixed(a, b, symbolic)


def test_one_symbol_in_a_affects_its_row_only() -> None:
    a, b = _floats((4, 5), 3), _floats((5, 6), 4)
    a[1, 2] = 2 * T + 1
    symbolic = np.zeros((4, 6), bool)
    symbolic[1] = True
    _assert_mixed(a, b, symbolic)


def test_symbolic_column_of_a() -> None:
    """The second layer h @ W2: one hidden unit depends on the symbol in every row."""
    a, b = _floats((4, 5), 5), _floats((5, 3), 6)
    for i in range(4):
        a[i, 1] = sympy.tanh(T * a[i, 1])
    _assert_mixed(a, b, np.ones((4, 3), bool))


def test_all_symbols() -> None:
    a = np.array([[T, 2 * T], [T**2, sympy.Integer(1)]], dtype=object)
    b = np.array([[T + 1, 0.5], [sympy.exp(T), T]], dtype=object)
    _assert_mixed(a, _objects(b), np.ones((2, 2), bool))


# --- values without an exact binary form ------------------------------------------------------

def test_nan_poisons_its_row_only() -> None:
    a, b = _floats((3, 4), 7), _floats((4, 2), 8)
    a[1, 2] = mpmath.nan
    with symnp.evaluation(dps=DPS):
        got = symnp._matmul(a, b)
        assert all(mpmath.isnan(v) for v in got[1])
        rows = np.ones(got.shape, bool)
        rows[1] = False  # the other rows never meet the nan: exact, with row 1 zeroed for the oracle
        _assert_correctly_rounded(got, np.where(rows[:, :1], a, 0), b, where=rows)


def test_pi_among_numbers_stays_symbolic() -> None:
    a, b = _floats((3, 4), 9), _floats((4, 2), 10)
    b[0, 1] = sympy.pi
    symbolic = np.zeros((3, 2), bool)
    symbolic[:, 1] = True
    _assert_mixed(a, b, symbolic)


@pytest.mark.parametrize("odd", [sympy.Rational(1, 3), "1e-1300", "1e1300"],
                         ids=["non-dyadic fraction", "tiny beyond the span", "huge beyond the span"])
def test_inexact_or_too_wide_numbers_fall_back(odd: Any) -> None:
    """Multiplied term by term in mpmath (each product rounded), still close to exact."""
    a, b = _floats((2, 3), 11), _floats((3, 2), 12)
    with symnp.evaluation(dps=DPS):
        a[0, 1] = mpmath.mpf(odd) if isinstance(odd, str) else odd
        assert not symnp._scaled(a, axis=1)[2][0, 1]  # really multiplied term by term
        got, expected = symnp._matmul(a, b), _exact(a, b)
        for index in np.ndindex(got.shape):
            assert _close(got[index], expected[index], 1e-48), index
        _assert_correctly_rounded(got, a, b, where=np.array([[False, False], [True, True]]))


# --- integer products through float64 limbs ---------------------------------------------------

@pytest.mark.parametrize("bits", [1, 21, 22, 53, 80, 300])
def test_wide_integer_products_are_exact_through_limbs(bits: int) -> None:
    """Signed integers of `bits` bits, including the extremes +-(2**bits - 1): exactly numpy's object matmul."""
    rng = np.random.default_rng(bits)
    m, k, n = 24, 128, 20
    assert symnp._limb_plan(m, k, n, bits, bits) is not None
    top = 2**bits - 1

    def ints(shape: tuple) -> np.ndarray:
        out = np.empty(shape, dtype=object)
        for index in np.ndindex(*shape):
            out[index] = int(rng.integers(-(2**62), 2**62)) * 2**max(bits - 62, 0) % top * int(rng.choice([-1, 1]))
        out.flat[0], out.flat[1] = top, -top
        return out

    a, b = ints((m, k)), ints((k, n))
    b[:, 0] = top  # the largest sums the bound allows for
    a[0, :] = top
    assert (symnp._int_matmul(a, b) == a @ b).all()


def test_a_hidden_layer_of_doubles_is_correctly_rounded() -> None:
    """The shape of a network's first layer (batch x inputs @ inputs x hidden), through limbs."""
    a, b = _floats((32, 100), 13), _floats((100, 24), 14)
    assert symnp._limb_plan(32, 100, 24, 80, 80) is not None
    with symnp.evaluation(dps=DPS):
        _assert_correctly_rounded(symnp._matmul(a, b), a, b)
