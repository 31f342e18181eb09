"""The SymPy reference (`reference`: exact derivatives of the learner's loss re-run on symbols)
and the numpy-compatible namespace it runs on (`symnp`). Only this package imports sympy, and
only when a check runs it: importing the package itself is free."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

    from ...case import Prepared
    from ...model import ReferenceGradient
    from ...plan import Allowance


def run(case: Prepared, selection: Sequence[np.ndarray], allowance: Allowance) -> ReferenceGradient:
    """The SymPy reference on a prepared case: a symbol per element of a small problem, else a
    sample of the selection (each element with the rest held as exact numbers)."""
    import numpy as np

    from ...plan import SYMPY_SAMPLE, sample, sympy_every_element, sympy_time
    from .reference import sympy_gradient

    seconds = sympy_time(case, allowance.seconds, allowance.asked)
    if sympy_every_element(case):
        return sympy_gradient(case.objective, [np.arange(x.size) for x in case.x0], f0=case.loss_value,
                              time_budget=seconds)
    # Its first element may take what is left of the check's budget (a large network's takes longer
    # than the share), not more.
    return sympy_gradient(case.objective, sample(list(selection), SYMPY_SAMPLE, allowance.seed),
                          max_elements=SYMPY_SAMPLE, f0=case.loss_value, time_budget=seconds,
                          first_budget=allowance.seconds)
