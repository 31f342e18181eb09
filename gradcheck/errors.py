"""Every error gradcheck raises on purpose; each also inherits the built-in it resembles."""

from __future__ import annotations


class GradcheckError(Exception):
    """Base class of all errors raised by gradcheck."""


class InvalidCase(GradcheckError, ValueError):
    """The loss, gradient or parameters given to a check are malformed."""


class StructureMismatch(InvalidCase):
    """The gradient's structure (keys, lengths, leaves) differs from the parameters'."""


class BudgetTooShort(InvalidCase):
    """The time budget (`budget=`) cannot pay the least check of this loss: it is that slow."""


class GradientMismatch(GradcheckError, AssertionError):
    """A hand-written gradient disagrees with the references; the message is the report."""

    def __init__(self, report: object) -> None:
        super().__init__(str(report))
        self.report = report


class NondeterministicLoss(GradcheckError, RuntimeError):
    """The loss gives different values for the same parameters, so no gradient can be checked."""


class NondeterministicGradient(NondeterministicLoss):
    """The gradient function returns different values for the same parameters (state kept between calls)."""


class UserCodeError(GradcheckError, RuntimeError):
    """The user's loss, gradient, forward or backward raised; the original is chained as __cause__."""

    def __init__(self, message: str, *, where: str = "", user_traceback: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.user_traceback = user_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.user_traceback:
            text += "\n\nYour code raised:\n" + self.user_traceback.rstrip()
        return text


class ReferenceUnavailable(GradcheckError, ImportError):
    """A reference the caller asked for cannot run on this problem or is not installed."""


class ConfigError(GradcheckError, ValueError):
    """A configuration value (option, ini, pyproject table, CLI target) is invalid."""
