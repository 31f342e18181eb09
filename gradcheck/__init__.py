"""gradcheck: is your hand-written backpropagation right, and if not, where and how is it wrong?

    report = gradcheck.check(loss, grad, params, args=(X, y))
    print(report)
    assert report.passed

Importing gradcheck is cheap: numpy loads when a check runs, jax and sympy when a
reference needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .errors import (ConfigError, GradcheckError, GradientMismatch, InvalidCase, NondeterministicLoss,
                     ReferenceUnavailable, StructureMismatch, UserCodeError)

#: Public names that live in numpy-using modules, loaded on first use.
_LAZY = {
    "check": "check", "assert_gradients": "check",
    "check_layer": "layer", "assert_layer": "layer",
    "explain": "explain",
    "Report": "model", "ParamResult": "model", "ReferenceStatus": "model",
}


class _Package(types.ModuleType):
    """The gradcheck package: public functions load lazily and shadow same-named submodules."""

    def __getattr__(self, name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing gradcheck.check (the module) must not replace gradcheck.check (the function).
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "check", "assert_gradients", "check_layer", "assert_layer", "explain",
    "Report", "ParamResult", "ReferenceStatus",
    "GradcheckError", "InvalidCase", "StructureMismatch", "GradientMismatch", "NondeterministicLoss",
    "UserCodeError", "ReferenceUnavailable", "ConfigError", "__version__",
]
