"""gradcheck: is your hand-written backpropagation right, and if not, where and how is it wrong?

    report = gradcheck.check(loss, grad, params, args=(X, y))
    print(report)
    assert report.passed

Importing gradcheck is cheap: jax and sympy are loaded only when a check uses them.
"""

from __future__ import annotations

from typing import Any

from .errors import (ConfigError, GradcheckError, GradientMismatch, InvalidCase, NondeterministicLoss,
                     ReferenceUnavailable, StructureMismatch, UserCodeError)
from .model import ParamResult, ReferenceStatus, Report

__version__ = "0.1.0"

__all__ = [
    "check", "assert_gradients", "check_layer", "assert_layer", "explain",
    "Report", "ParamResult", "ReferenceStatus",
    "GradcheckError", "InvalidCase", "StructureMismatch", "GradientMismatch", "NondeterministicLoss",
    "UserCodeError", "ReferenceUnavailable", "ConfigError", "__version__",
]

_LAZY = {
    "check": ("check", "check"),
    "assert_gradients": ("check", "assert_gradients"),
    "check_layer": ("layer", "check_layer"),
    "assert_layer": ("layer", "assert_layer"),
    "explain": ("explain", "explain"),
}


def __getattr__(name: str) -> Any:
    # numpy-only modules, but loaded on first use to keep `import gradcheck` fast.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
