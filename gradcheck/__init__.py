"""gradcheck: is your hand-written backpropagation right, and if not, where and how is it wrong?

    report = gradcheck.check(loss, grad, params, args=(X, y))
    print(report)
    assert report.passed

Importing gradcheck loads numpy only: jax and sympy load when a check uses them.
"""

from __future__ import annotations

from .errors import (ConfigError, GradcheckError, GradientMismatch, InvalidCase, NondeterministicLoss,
                     ReferenceUnavailable, StructureMismatch, UserCodeError)
from .model import ParamResult, ReferenceStatus, Report

# Eager imports (numpy only): each function shadows the submodule of the same name, and must
# be bound before anything imports that submodule, or `gradcheck.check` would be the module.
from .check import assert_gradients, check  # noqa: E402  isort: skip
from .layer import assert_layer, check_layer  # noqa: E402  isort: skip
from .explain import explain  # noqa: E402  isort: skip

__version__ = "0.1.0"

__all__ = [
    "check", "assert_gradients", "check_layer", "assert_layer", "explain",
    "Report", "ParamResult", "ReferenceStatus",
    "GradcheckError", "InvalidCase", "StructureMismatch", "GradientMismatch", "NondeterministicLoss",
    "UserCodeError", "ReferenceUnavailable", "ConfigError", "__version__",
]
