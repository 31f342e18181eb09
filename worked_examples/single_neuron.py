"""The single neuron from "Learning to code neural networks": two inputs, a bias, a sigmoid.

    net = w . x + b          inputs (1, 0), weights (7, 3), bias -2  ->  net = 5
    out = sigmoid(net)       sigmoid(5) = 0.99330714...  (the post rounds it to "1")
    E   = 1/2 (out - target)^2

If the neuron is a spam filter, out ~ 1 says "spam". Here the e-mail was not spam
(target 0), so the error is large and backprop has something to say.
"""

from __future__ import annotations

import numpy as np

INPUTS = np.array([1.0, 0.0])
TARGET = 0.0


def initial_params() -> dict:
    """The weights (7, 3) and bias -2 of the post's drawing."""
    return {"w": np.array([7.0, 3.0]), "b": -2.0}


def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    """d sigmoid / dz = sigmoid(z) (1 - sigmoid(z))."""
    s = sigmoid(z)
    return s * (1.0 - s)


def forward(params: dict, x: np.ndarray) -> tuple:
    """(net, out) of the neuron for input x."""
    net = np.sum(params["w"] * x) + params["b"]
    return net, sigmoid(net)


def loss(params: dict, x: np.ndarray, target: float):
    """Squared error 1/2 (out - target)^2."""
    _, out = forward(params, x)
    return 0.5 * (out - target) ** 2


def grad(params: dict, x: np.ndarray, target: float) -> dict:
    """Backprop through the neuron, one factor of the chain rule per line."""
    net, out = forward(params, x)
    dE_dout = out - target                  # d/dout 1/2 (out - target)^2
    dout_dnet = out * (1.0 - out)           # sigmoid'(net)
    dE_dnet = dE_dout * dout_dnet
    # net = w . x + b: dnet/dw = x, dnet/db = 1
    return {"w": dE_dnet * x, "b": dE_dnet}


def cases() -> list[dict]:
    """The neuron as a gradient case."""
    return [{
        "name": "single-neuron",
        "kind": "gradient",
        "loss": loss,
        "grad": grad,
        "params": initial_params(),
        "args": (INPUTS, TARGET),
        "expect": "pass",
        "description": "The seed post's neuron (inputs 1, 0; weights 7, 3; bias -2; sigmoid) with squared error.",
    }]
