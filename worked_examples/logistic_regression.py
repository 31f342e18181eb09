"""Logistic regression with mean binary cross-entropy, the seed post's first from-scratch exercise.

    p    = sigmoid(X w + b)                                    X: (N, D), p: (N,)
    loss = -1/N sum_n [ y_n log p_n + (1 - y_n) log(1 - p_n) ]

The derivative of the cross-entropy through the sigmoid collapses to (p - y):
    dloss/dw = X^T (p - y) / N,    dloss/db = mean(p - y)
"""

from __future__ import annotations

import numpy as np

N, D = 16, 3

# A small fixed dataset: labels drawn from a known logistic model, so the classes overlap.
_rng = np.random.default_rng(0)
X = _rng.standard_normal((N, D))
_TRUE_W, _TRUE_B = np.array([1.5, -2.0, 0.5]), 0.3
Y = (_rng.random(N) < 1.0 / (1.0 + np.exp(-(X @ _TRUE_W + _TRUE_B)))).astype(np.float64)


def initial_params() -> dict:
    """Small non-zero weights, so that not every prediction is exactly 1/2."""
    return {"w": np.array([0.1, -0.2, 0.05]), "b": 0.1}


def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def loss(params: dict, X: np.ndarray, y: np.ndarray):
    """Mean binary cross-entropy of the predictions sigmoid(X w + b)."""
    p = sigmoid(X @ params["w"] + params["b"])
    return -np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))


def grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """Hand-written gradient: the error (p - y) pushed back through z = X w + b."""
    p = sigmoid(X @ params["w"] + params["b"])
    dz = (p - y) / X.shape[0]               # dloss/dz_n, the 1/N from the mean
    return {"w": X.T @ dz, "b": np.sum(dz)}


def cases() -> list[dict]:
    """Logistic regression as a gradient case."""
    return [{
        "name": "logistic-regression",
        "kind": "gradient",
        "loss": loss,
        "grad": grad,
        "params": initial_params(),
        "args": (X, Y),
        "expect": "pass",
        "description": "Logistic regression on 16 points in 3-D with mean binary cross-entropy.",
    }]
