"""gradcheck: is your hand-written backpropagation right, and if not, where and how is it wrong?

    report = gradcheck.check(loss, grad, params, args=(X, y))
    print(report)
    assert report.passed

Importing gradcheck is cheap: numpy loads when a check runs, jax and sympy when a
reference needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (BudgetTooShort, ConfigError, GradcheckError, GradientMismatch, InvalidCase,
                     NondeterministicLoss, ReferenceUnavailable, StructureMismatch, UserCodeError)

if TYPE_CHECKING:
    from .explanation import explain
    from .layer import assert_layer, check_layer
    from .model import ParamResult, ReferenceStatus, Report
    from .pipeline import assert_gradients, check

#: Public names that live in numpy-using modules, loaded on first use.
_LAZY = {
    "check": "pipeline", "assert_gradients": "pipeline",
    "check_layer": "layer", "assert_layer": "layer",
    "explain": "explanation",
    "Report": "model", "ParamResult": "model", "ReferenceStatus": "model",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


#: The one version number (pyproject.toml reads it from here).
__version__ = "0.1.0"

__all__ = [
    "check", "assert_gradients", "check_layer", "assert_layer", "explain",
    "Report", "ParamResult", "ReferenceStatus",
    "GradcheckError", "InvalidCase", "StructureMismatch", "GradientMismatch", "NondeterministicLoss",
    "UserCodeError", "ReferenceUnavailable", "ConfigError", "BudgetTooShort", "__version__",
]
