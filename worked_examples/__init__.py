"""Worked examples: hand-written numpy backprop from the tutorials a learner follows.

Each module reproduces one resource (a forward pass, a hand-written backward pass and,
where the resource has one, its buggy twin) and lists runnable checks in `cases()`:

    {"name": "mazur", "kind": "gradient", "loss": ..., "grad": ..., "params": ..., "args": ...,
     "expect": "pass" or {"diagnosis": ..., "leaves": [...], "factor": ...}, "description": ...}

Layer cases ("kind": "layer") carry "forward", "backward" and "inputs" instead.
"""

from __future__ import annotations

import importlib

#: The example modules, in the order a learner meets them.
MODULES = (
    "single_neuron",
    "logistic_regression",
    "karpathy",
    "mazur",
    "trask",
    "nielsen",
    "britz",
    "cs231n_layers",
    "micrograd_engine",
)


def all_cases() -> list[dict]:
    """Every case of every module, in module order."""
    cases: list[dict] = []
    for module in MODULES:
        cases += importlib.import_module(f"{__name__}.{module}").cases()
    return cases


def get_case(name: str) -> dict:
    """The case called `name`; KeyError listing the known names if there is none."""
    cases = all_cases()
    for case in cases:
        if case["name"] == name:
            return case
    raise KeyError(f"no worked example named {name!r}; known: {', '.join(c['name'] for c in cases)}")
