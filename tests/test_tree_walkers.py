"""The container walkers of gradcheck.tree: namedtuples are walked like plain tuples."""

from __future__ import annotations

import collections
import warnings

import numpy as np

import gradcheck
from gradcheck.tree import fresh, readonly, widen

Batch = collections.namedtuple("Batch", ["x", "y"])


def _batch() -> Batch:
    return Batch(np.linspace(-1.0, 1.0, 4, dtype=np.float32), np.ones(4, dtype=np.float32))


def test_widen_and_readonly_reach_inside_a_namedtuple() -> None:
    seen = readonly(widen(_batch()))
    assert isinstance(seen, Batch)
    assert seen.x.dtype == np.float64 and seen.y.dtype == np.float64
    assert not seen.x.flags.writeable and not seen.y.flags.writeable


def test_fresh_copies_inside_a_namedtuple() -> None:
    batch = _batch()
    copy = fresh(batch)
    assert isinstance(copy, Batch) and copy.x is not batch.x
    np.testing.assert_array_equal(copy.x, batch.x)


def _loss(w: np.ndarray, batch: Batch) -> float:
    return float(np.sum((w * batch.x - batch.y) ** 2))


def _check(grad):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gradcheck.check(_loss, grad, np.array([0.3, -0.2, 0.5, 1.1]), args=(_batch(),), against="numeric")


def test_a_check_on_float32_namedtuple_data_passes_and_fails_rightly() -> None:
    assert _check(lambda w, b: 2 * (w * b.x - b.y) * b.x).passed
    assert not _check(lambda w, b: 2 * (w * b.x + b.y) * b.x).passed
