"""The check's options, judged once: for `check`, the configuration file and the command line.

numpy-free (the pytest plugin reads options without loading numpy): numpy's scalars count as
numbers through the `numbers` ABCs they register with.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import InvalidCase
from .references import REFERENCE_NAMES

#: The options a check takes besides the code and its data (the configuration file's keys).
OPTION_KEYS = ("against", "rtol", "atol", "seed", "budget", "max_elements")
#: What `against` may name besides the references themselves.
AGAINST_WORDS = ("all", "auto")


def normalize_against(against: Any) -> tuple[tuple[str, ...], bool]:
    """(reference names, explicit?) from the `against` argument."""
    if against is None or against == "auto":
        return REFERENCE_NAMES, False
    if isinstance(against, str):
        names = (against,)
    elif isinstance(against, (list, tuple)) and all(isinstance(n, str) for n in against):
        names = tuple(against)
    else:
        raise InvalidCase(f"against={against!r} is not valid: give a reference name, a list of names among "
                          f"{', '.join(REFERENCE_NAMES)}, 'all' or 'auto'.")
    if "all" in names:
        return REFERENCE_NAMES, True
    unknown = [n for n in names if n not in REFERENCE_NAMES]
    if unknown or not names:
        raise InvalidCase(f"unknown reference {unknown[0] if unknown else '(none)'!r} in against=; choose from "
                          f"{', '.join(REFERENCE_NAMES)}, 'all' or 'auto'.")
    return names, True


#: What each numeric option of a check must be (None always means its default). The one rule
#: for `check`, the configuration file and the command line: a seed is any non-negative integer
#: (numpy seeds from arbitrarily large ones), max_elements=0 asks for no element-wise sample
#: beyond the least that gives a verdict.
OPTION_RULES = {
    "rtol": "a non-negative number such as 1e-7",
    "atol": "a non-negative number such as 1e-7",
    "budget": "a non-negative number of seconds",
    "seed": "a non-negative integer",
    "max_elements": "a non-negative integer",
}


def option_problem(name: str, value: Any) -> str | None:
    """None when `value` is valid for the numeric option `name`, else what it must be."""
    if value is None:
        return None
    if isinstance(value, bool):
        return OPTION_RULES[name]
    if name in ("seed", "max_elements"):
        ok = isinstance(value, numbers.Integral) and int(value) >= 0
    else:
        ok = isinstance(value, numbers.Real) and math.isfinite(float(value)) \
            and float(value) >= 0
    return None if ok else OPTION_RULES[name]


def validate_numbers(rtol: Any, atol: Any, budget: Any, seed: Any, max_elements: Any) -> None:
    """Refuse option values that are not what their documentation says, naming the option."""
    for name, value in (("rtol", rtol), ("atol", atol), ("budget", budget), ("seed", seed),
                        ("max_elements", max_elements)):
        rule = option_problem(name, value)
        if rule is not None:
            raise InvalidCase(f"{name}={value!r} is not a valid {name}: give {rule}, or None for the default.")
