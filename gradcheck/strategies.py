"""Hypothesis strategies for property tests of hand-written backprop over random shapes and values.

    from hypothesis import given
    from gradcheck.strategies import mlp_cases

    @given(mlp_cases(max_layers=3, max_width=5))
    def test_backprop_any_shape(case, gradcheck):
        gradcheck(loss, grad, case.params, args=case.args)

A failing property shrinks to the smallest network and input that still fails, and Hypothesis
prints it (`MLPCase(sizes=[1, 2], batch=1, ...)`) above gradcheck's report.

Values are well conditioned by default: bounded in magnitude, finite, not subnormal, and (for
inputs) kept `margin` away from the kinks of ReLU-like functions, so that finite differences
are meaningful. Ask for kinks with `allow_kinks=True`. This is the only gradcheck module that
imports hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .tree import flatten, unflatten

__all__ = [
    "values", "arrays", "inputs", "params_like", "widths", "layer_sizes", "batch_sizes",
    "mlp_params", "mlp_cases", "MLPCase",
]

#: Default bound on the magnitude of generated values: large enough to leave the linear region
#: of tanh and sigmoid, small enough that exp and squares stay far from overflow.
BOUND = 2.0
#: Default distance kept from each kink (ReLU's 0): many finite-difference steps away.
MARGIN = 0.05


def values(*, bound: float = BOUND, kinks: Sequence[float] = (), margin: float = MARGIN,
           allow_kinks: bool = False, width: int = 64) -> st.SearchStrategy[float]:
    """Finite floats in [-bound, bound], at least `margin` from every kink unless `allow_kinks`."""
    if bound <= 0:
        raise ValueError(f"bound={bound!r}: give a positive magnitude bound such as 2.0.")
    base = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)
    if allow_kinks or not kinks:
        return base
    kinks = tuple(float(k) for k in kinks)
    if margin * 2 * len(kinks) >= bound:
        raise ValueError(f"margin={margin!r} around {len(kinks)} kink(s) leaves little of [-{bound}, {bound}]; "
                         f"use a smaller margin or a larger bound.")
    return base.filter(lambda x: all(abs(x - k) >= margin for k in kinks))


def arrays(shape: int | Sequence[int], *, dtype: Any = np.float64, bound: float = BOUND,
           kinks: Sequence[float] = (), margin: float = MARGIN, allow_kinks: bool = False,
           ) -> st.SearchStrategy[np.ndarray]:
    """Float arrays of a fixed shape with well-conditioned values (see `values`)."""
    dtype = np.dtype(dtype)
    elements = values(bound=bound, kinks=kinks, margin=margin, allow_kinks=allow_kinks, width=8 * dtype.itemsize)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    return hnp.arrays(dtype, shape, elements=elements)


def inputs(shape: int | Sequence[int], *, dtype: Any = np.float64, bound: float = BOUND,
           kinks: Sequence[float] = (0.0,), margin: float = MARGIN, allow_kinks: bool = False,
           ) -> st.SearchStrategy[np.ndarray]:
    """Layer inputs: like `arrays`, but away from 0 (ReLU's, abs' and max's kink) by default."""
    return arrays(shape, dtype=dtype, bound=bound, kinks=kinks, margin=margin, allow_kinks=allow_kinks)


def params_like(params: Any, *, bound: float = 1.0, **options: Any) -> st.SearchStrategy[Any]:
    """Parameter pytrees with the structure, shapes and dtypes of `params`, and fresh values.

    `params` is any pytree gradcheck accepts (dict, list, tuple, arrays, scalars); options are
    those of `arrays` (bound, kinks, margin, allow_kinks).
    """
    names, leaves, treedef = flatten(params)
    parts = []
    for leaf in leaves:
        arr = np.asarray(leaf)
        dtype = arr.dtype if arr.dtype.kind == "f" else np.float64
        if isinstance(leaf, (int, float, np.number)) and not isinstance(leaf, bool):
            parts.append(values(bound=bound, **options))  # a Python scalar stays a scalar
        else:
            parts.append(arrays(arr.shape, dtype=dtype, bound=bound, **options))
    return st.tuples(*parts).map(lambda drawn: unflatten(treedef, list(drawn)))


def widths(min_width: int = 1, max_width: int = 6) -> st.SearchStrategy[int]:
    """A layer width; shrinks towards `min_width`."""
    return st.integers(min_width, max_width)


def batch_sizes(min_size: int = 1, max_size: int = 6) -> st.SearchStrategy[int]:
    """A batch size (rows of X); shrinks towards `min_size`."""
    return st.integers(min_size, max_size)


def layer_sizes(*, min_layers: int = 1, max_layers: int = 3, min_width: int = 1, max_width: int = 6,
                n_in: int | None = None, n_out: int | None = None) -> st.SearchStrategy[list]:
    """Widths [n_in, hidden..., n_out] of a network with min_layers..max_layers weight layers.

    Fix `n_in` or `n_out` to match your data; the rest vary. Shrinks towards fewer, narrower layers.
    """
    if not 1 <= min_layers <= max_layers:
        raise ValueError(f"need 1 <= min_layers <= max_layers, got {min_layers} and {max_layers}.")
    first = st.just(n_in) if n_in is not None else widths(min_width, max_width)
    last = st.just(n_out) if n_out is not None else widths(min_width, max_width)
    hidden = st.lists(widths(min_width, max_width), min_size=min_layers - 1, max_size=max_layers - 1)
    return st.tuples(first, hidden, last).map(lambda t: [t[0], *t[1], t[2]])


def mlp_params(sizes: Sequence[int], *, bound: float = 1.0, weight: str = "W{}", bias: str = "b{}",
               dtype: Any = np.float64) -> st.SearchStrategy[dict]:
    """{"W1": (sizes[0], sizes[1]), "b1": (sizes[1],), "W2": ...}: weights laid out (fan_in, fan_out)."""
    shapes = {}
    for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[weight.format(i)] = (n, m)
        shapes[bias.format(i)] = (m,)
    return st.fixed_dictionaries({k: arrays(s, dtype=dtype, bound=bound) for k, s in shapes.items()})


@dataclass(frozen=True, repr=False)
class MLPCase:
    """One network and batch: `sizes` [n_in, ..., n_out], `params` {"W1", "b1", ...}, inputs X, targets y."""

    sizes: list
    params: dict
    X: np.ndarray
    y: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.X.shape[0])

    @property
    def args(self) -> tuple:
        """(X, y): the `args` of a loss(params, X, y)."""
        return (self.X, self.y)

    def __repr__(self) -> str:
        arrays = {**self.params, "X": self.X, "y": self.y}
        shown = ", ".join(f"{k}={np.array2string(np.asarray(v), precision=4, separator=', ')}"
                          for k, v in arrays.items())
        return f"MLPCase(sizes={list(self.sizes)}, batch={self.batch}, {shown})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # Hypothesis prints examples with this
        p.text(repr(self))


@st.composite
def mlp_cases(draw: Any, *, min_layers: int = 1, max_layers: int = 3, min_width: int = 1, max_width: int = 6,
              n_in: int | None = None, n_out: int | None = None, min_batch: int = 1, max_batch: int = 6,
              targets: str = "regression", bound: float = 1.0, kinks: Sequence[float] = (),
              dtype: Any = np.float64) -> MLPCase:
    """A random MLP and batch: layer sizes, parameters (see `mlp_params`), X and targets y.

    `targets="regression"` gives y of shape (batch, n_out); `"classes"` integer labels in
    [0, n_out) of shape (batch,). Shrinks towards fewer, narrower layers and smaller batches.
    """
    if targets not in ("regression", "classes"):
        raise ValueError(f"targets={targets!r}: choose 'regression' or 'classes'.")
    sizes = draw(layer_sizes(min_layers=min_layers, max_layers=max_layers, min_width=min_width,
                             max_width=max_width, n_in=n_in, n_out=n_out))
    batch = draw(batch_sizes(min_batch, max_batch))
    params = draw(mlp_params(sizes, bound=bound, dtype=dtype))
    X = draw(arrays((batch, sizes[0]), dtype=dtype, bound=BOUND, kinks=kinks))
    if targets == "classes":
        y = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, sizes[-1] - 1)))
    else:
        y = draw(arrays((batch, sizes[-1]), dtype=dtype, bound=BOUND))
    return MLPCase(sizes=sizes, params=params, X=X, y=y)
