"""The JAX reference (`reference`: jax.grad of the learner's loss re-run under jax.numpy) and
blame's exact adjoints of the loss's intermediates (`adjoints`). Only this package imports jax,
and only when a check runs it: importing the package itself is free."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

    from ...case import Prepared
    from ...model import ReferenceGradient
    from ...plan import Allowance


def run(case: Prepared, selection: Sequence[np.ndarray], allowance: Allowance) -> ReferenceGradient:
    """The JAX reference on a prepared case, its tracing held to the plan's share of the budget."""
    from ...plan import jax_shares
    from .reference import TRACE_SECONDS, jax_gradient

    trace, eager = jax_shares(allowance.seconds, allowance.asked, TRACE_SECONDS)
    return jax_gradient(case.objective, selection, f0=case.loss_value, trace_seconds=trace, eager_seconds=eager)
