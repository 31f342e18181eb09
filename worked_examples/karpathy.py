"""Chapter 1 of Karpathy's "Hacker's guide to Neural Networks": gates, a circuit and a neuron.

The "loss" here is the circuit's output f itself and the parameters are its inputs; the
guide nudges every input a step of 0.01 along its gradient to make f larger.

    multiply gate   f = x * y                         df/dx = y, df/dy = x
    circuit         q = x + y,  f = q * z             df/dx = df/dy = z, df/dz = q
    2-D neuron      s = a*x + b*y + c, f = sigmoid(s) df/ds = f (1 - f), then multiply/add gates
"""

from __future__ import annotations

from typing import Callable

import numpy as np

STEP_SIZE = 0.01


# --- the multiply gate ------------------------------------------------------

def multiply_gate(params: dict):
    """f = x * y."""
    return params["x"] * params["y"]


def multiply_gate_grad(params: dict) -> dict:
    """The gradient of x * y: each input gets the other one."""
    return {"x": params["y"], "y": params["x"]}


# --- the circuit (x + y) * z --------------------------------------------------

def circuit(params: dict):
    """f = (x + y) * z."""
    q = params["x"] + params["y"]
    return q * params["z"]


def circuit_grad(params: dict) -> dict:
    """Backprop: the multiply gate gives df/dq = z, df/dz = q; the add gate passes df/dq on."""
    q = params["x"] + params["y"]
    df_dq, df_dz = params["z"], q
    # dq/dx = dq/dy = 1: the add gate routes its gradient unchanged to both inputs
    return {"x": df_dq * 1.0, "y": df_dq * 1.0, "z": df_dz}


# --- the 2-D neuron sigmoid(a*x + b*y + c) ------------------------------------

def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def neuron(params: dict):
    """f = sigmoid(a*x + b*y + c)."""
    p = params
    return sigmoid(p["a"] * p["x"] + p["b"] * p["y"] + p["c"])


def neuron_grad(params: dict) -> dict:
    """Backprop through the sigmoid gate, then the two multiply gates and the add gates."""
    p = params
    f = neuron(p)
    ds = f * (1.0 - f)                      # sigmoid'(s) = f (1 - f)
    # s = a*x + b*y + c: each multiply gate swaps its inputs, the add gates pass ds on
    return {"a": p["x"] * ds, "b": p["y"] * ds, "c": ds, "x": p["a"] * ds, "y": p["b"] * ds}


# --- the guide's tools: a numerical derivative and one step uphill -------------

def numerical_gradient(f: Callable, params: dict, h: float = 1e-4) -> dict:
    """Forward differences (f(v + h) - f(v)) / h, one input at a time, as the guide does."""
    f0 = f(params)
    return {k: (f({**params, k: v + h}) - f0) / h for k, v in params.items()}


def step(params: dict, grads: dict, step_size: float = STEP_SIZE) -> dict:
    """Nudge every input along its gradient, which makes f larger."""
    return {k: v + step_size * grads[k] for k, v in params.items()}


MULTIPLY_START = {"x": -2.0, "y": 3.0}
CIRCUIT_START = {"x": -2.0, "y": 5.0, "z": -4.0}
NEURON_START = {"a": 1.0, "b": 2.0, "c": -3.0, "x": -1.0, "y": 3.0}


def cases() -> list[dict]:
    """The three examples of chapter 1 as gradient cases."""
    return [
        {
            "name": "karpathy-multiply-gate",
            "kind": "gradient",
            "loss": multiply_gate,
            "grad": multiply_gate_grad,
            "params": dict(MULTIPLY_START),
            "args": (),
            "expect": "pass",
            "description": "Karpathy's multiply gate f = x*y at x=-2, y=3.",
        },
        {
            "name": "karpathy-circuit",
            "kind": "gradient",
            "loss": circuit,
            "grad": circuit_grad,
            "params": dict(CIRCUIT_START),
            "args": (),
            "expect": "pass",
            "description": "Karpathy's circuit f = (x + y) * z at x=-2, y=5, z=-4.",
        },
        {
            "name": "karpathy-neuron",
            "kind": "gradient",
            "loss": neuron,
            "grad": neuron_grad,
            "params": dict(NEURON_START),
            "args": (),
            "expect": "pass",
            "description": "Karpathy's 2-D neuron sigmoid(a*x + b*y + c), gradient for all five inputs.",
        },
    ]
