"""Hypothesis strategies for property tests of hand-written backprop over random shapes and values.

    from hypothesis import given
    from gradcheck.strategies import mlp_cases

    @given(case=mlp_cases(max_layers=3, max_width=5))    # by keyword: `gradcheck` is a fixture
    def test_backprop_any_shape(case, gradcheck):
        gradcheck(loss, grad, case.params, args=case.args)

A failing property shrinks to the smallest network and input that still fails, and Hypothesis
prints it (`MLPCase(sizes=[1, 2], batch=1, ...)`) after gradcheck's report. Each example is a
full gradient check, so keep `max_examples` modest, and consider leaving out Hypothesis'
explain phase (`settings(phases=[Phase.explicit, Phase.generate, Phase.shrink])`), which
re-runs failing examples under a tracer.

Values are well conditioned by default: bounded in magnitude, finite, not subnormal, and (for
inputs) kept `margin` away from the kinks of ReLU-like functions, so that finite differences
are meaningful. Ask for kinks with `allow_kinks=True`. This is the only gradcheck module that
imports hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, cast

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
#: Nonzero values are at least this large in magnitude: a weight of 1e-308 tests underflow, not backprop.
TINY = 1e-3


def values(*, bound: float = BOUND, kinks: Sequence[float] = (), margin: float = MARGIN,
           allow_kinks: bool = False, tiny: float = TINY, width: Literal[16, 32, 64] = 64) -> st.SearchStrategy[float]:
    """Floats in [-bound, bound], 0 or at least `tiny` in size, `margin` from every kink unless `allow_kinks`."""
    if bound <= 0:
        raise ValueError(f"bound={bound!r}: give a positive magnitude bound such as 2.0.")
    base = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)
    if tiny > 0:
        base = base.map(lambda x: 0.0 if abs(x) < tiny else x)  # a map, not a filter: shrinks to 0 freely
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
    elements = values(bound=bound, kinks=kinks, margin=margin, allow_kinks=allow_kinks,
                      width=cast(Literal[16, 32, 64], 8 * dtype.itemsize))
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
    _, leaves, treedef = flatten(params)
    parts: list[st.SearchStrategy[Any]] = []
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
    shapes = _mlp_shapes(sizes, weight, bias)
    return st.fixed_dictionaries({k: arrays(s, dtype=dtype, bound=bound) for k, s in shapes.items()})


def _mlp_shapes(sizes: Sequence[int], weight: str = "W{}", bias: str = "b{}") -> dict:
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[weight.format(i)] = (n, m)
        shapes[bias.format(i)] = (m,)
    return shapes


def _generic(rng: np.random.Generator, shape: tuple, bound: float, dtype: Any, margin: float = 0.0) -> np.ndarray:
    """Values with margin <= |x| <= bound and random signs: no accidental zeros, ties or symmetries."""
    magnitude = rng.uniform(margin, bound, size=shape)
    return (magnitude * rng.choice((-1.0, 1.0), size=shape)).astype(dtype)


@dataclass(frozen=True, repr=False)
class MLPCase:
    """One network and batch: `sizes` [n_in, ..., n_out], `params` {"W1", "b1", ...}, inputs X, targets y.

    `seed` is the numpy seed the values were generated from, when they were (see `mlp_cases`).
    """

    sizes: list
    params: dict
    X: np.ndarray
    y: np.ndarray
    seed: Optional[int] = None

    @property
    def batch(self) -> int:
        return int(self.X.shape[0])

    @property
    def args(self) -> tuple:
        """(X, y): the `args` of a loss(params, X, y)."""
        return (self.X, self.y)

    def __repr__(self) -> str:
        # one line, rounded: Hypothesis prints this as the smallest failing network
        arrays = {**self.params, "X": self.X, "y": self.y}
        shown = ", ".join(f"{k}={np.round(np.asarray(v), 4).tolist()}" for k, v in arrays.items())
        seed = "" if self.seed is None else f", seed={self.seed}"
        return f"MLPCase(sizes={list(self.sizes)}, batch={self.batch}{seed}, {shown})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # Hypothesis prints examples with this
        p.text(repr(self))


@st.composite
def mlp_cases(draw: Any, *, min_layers: int = 1, max_layers: int = 3, min_width: int = 1, max_width: int = 6,
              n_in: int | None = None, n_out: int | None = None, min_batch: int = 1, max_batch: int = 6,
              targets: str = "regression", bound: float = 1.0, allow_zero_inputs: bool = False,
              draw_values: bool = False, dtype: Any = np.float64) -> MLPCase:
    """A random MLP and batch: layer sizes, parameters {"W1", "b1", ...} (see `mlp_params`), X and y.

    Hypothesis draws the sizes and the batch size, so a failure shrinks to the fewest, narrowest
    layers and the smallest batch. By default the values come from a numpy generator seeded by
    Hypothesis: generic numbers (weights in [-bound, bound], X and y in [-2, 2]) that never
    cancel by accident and so never hide a bug while the shape shrinks. `draw_values=True` has
    Hypothesis draw every value instead, exploring edge values and shrinking them too.

    `targets="regression"` gives y of shape (batch, n_out); `"classes"` integer labels in
    [0, n_out) of shape (batch,). Entries of X stay `MARGIN` away from 0 unless
    `allow_zero_inputs`: a zero input zeroes the gradient of the weights it feeds, and with it
    any bug in them.
    """
    if targets not in ("regression", "classes"):
        raise ValueError(f"targets={targets!r}: choose 'regression' or 'classes'.")
    sizes = draw(layer_sizes(min_layers=min_layers, max_layers=max_layers, min_width=min_width,
                             max_width=max_width, n_in=n_in, n_out=n_out))
    batch = draw(batch_sizes(min_batch, max_batch))
    margin = 0.0 if allow_zero_inputs else MARGIN
    if draw_values:
        params = draw(mlp_params(sizes, bound=bound, dtype=dtype))
        X = draw(inputs((batch, sizes[0]), dtype=dtype, allow_kinks=allow_zero_inputs))
        y = draw(hnp.arrays(np.int64, (batch,), elements=st.integers(0, sizes[-1] - 1)) if targets == "classes"
                 else arrays((batch, sizes[-1]), dtype=dtype, bound=BOUND))
        return MLPCase(sizes=sizes, params=params, X=X, y=y)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    params = {k: _generic(rng, s, bound, dtype) for k, s in _mlp_shapes(sizes).items()}
    X = _generic(rng, (batch, sizes[0]), BOUND, dtype, margin)
    y = (rng.integers(0, sizes[-1], size=batch) if targets == "classes"
         else _generic(rng, (batch, sizes[-1]), BOUND, dtype))
    return MLPCase(sizes=sizes, params=params, X=X, y=y, seed=seed)
