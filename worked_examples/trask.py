"""Andrew Trask's "A Neural Network in 11 lines of Python": sigmoid layers trained on 4 examples.

    l1 = sigmoid(X @ syn0)          X: (4, 3), syn0: (3, 4)
    l2 = sigmoid(l1 @ syn1)         syn1: (4, 1)
    E  = 1/2 sum (y - l2)^2

The post's loop *adds* l1.T @ l2_delta with l2_delta = (y - l2) * l2 (1 - l2): that is
minus dE/dsyn1, so `syn += update` is gradient descent with learning rate 1. A learner
who hands that update to a gradient checker gets every sign flipped, which is what
`update_direction` (the buggy twin) shows; `grad` is the true gradient of E.
"""

from __future__ import annotations

import numpy as np

X = np.array([[0.0, 0.0, 1.0],
              [0.0, 1.0, 1.0],
              [1.0, 0.0, 1.0],
              [1.0, 1.0, 1.0]])
Y_XOR = np.array([[0.0], [1.0], [1.0], [0.0]])      # the 3-layer post's targets
Y_FIRST_COLUMN = np.array([[0.0], [0.0], [1.0], [1.0]])  # the 2-layer post's targets


def initial_params(hidden: int = 4) -> dict:
    """syn0, syn1 uniform in [-1, 1), drawn like np.random.seed(1); 2*np.random.random(shape) - 1."""
    rng = np.random.RandomState(1)  # the legacy generator behind np.random.seed, without global state
    syn0 = 2 * rng.random_sample((3, hidden)) - 1
    syn1 = 2 * rng.random_sample((hidden, 1)) - 1
    return {"syn0": syn0, "syn1": syn1}


def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def forward(params: dict, X: np.ndarray) -> tuple:
    """(l1, l2): hidden and output activations."""
    l1 = sigmoid(X @ params["syn0"])
    l2 = sigmoid(l1 @ params["syn1"])
    return l1, l2


def loss(params: dict, X: np.ndarray, y: np.ndarray):
    """E = 1/2 sum (y - l2)^2, the error the post's update descends."""
    _, l2 = forward(params, X)
    return 0.5 * np.sum((y - l2) ** 2)


def update_direction(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """BUGGY TWIN as a gradient: what the post *adds* to the weights, i.e. minus dE/dsyn."""
    l1, l2 = forward(params, X)
    l2_delta = (y - l2) * l2 * (1.0 - l2)          # (y - l2) * sigmoid'(net), from the output
    l1_delta = (l2_delta @ params["syn1"].T) * l1 * (1.0 - l1)
    return {"syn0": X.T @ l1_delta, "syn1": l1.T @ l2_delta}


def grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """dE/dsyn: the chain rule starts from dE/dl2 = (l2 - y), not (y - l2)."""
    l1, l2 = forward(params, X)
    d2 = (l2 - y) * l2 * (1.0 - l2)                # dE/d(l1 @ syn1)
    d1 = (d2 @ params["syn1"].T) * l1 * (1.0 - l1)  # dE/d(X @ syn0)
    return {"syn0": X.T @ d1, "syn1": l1.T @ d2}


def train_three_layer(iterations: int = 60000, every: int = 10000) -> tuple[dict, list]:
    """The post's loop: (final params, mean |y - l2| printed every `every` iterations)."""
    params = initial_params()
    errors = []
    for j in range(iterations):
        if j % every == 0:
            _, l2 = forward(params, X)
            errors.append(float(np.mean(np.abs(Y_XOR - l2))))
        step = update_direction(params, X, Y_XOR)
        params = {k: params[k] + step[k] for k in params}
    return params, errors


def train_two_layer(iterations: int = 10000) -> np.ndarray:
    """The post's first net, one layer of weights syn0 (3, 1) on y = [0, 0, 1, 1]: the l1 it prints.

    The post prints the l1 of its last iteration, computed *before* that iteration's update,
    so the printed outputs are those of the weights after iterations - 1 updates.
    """
    syn0 = 2 * np.random.RandomState(1).random_sample((3, 1)) - 1
    for _ in range(iterations):
        l1 = sigmoid(X @ syn0)
        syn0 = syn0 + X.T @ ((Y_FIRST_COLUMN - l1) * l1 * (1.0 - l1))   # the post's += update
    return l1


def cases() -> list[dict]:
    """The 3-layer net: the true gradient, and the update direction handed over as a gradient."""
    common = {"kind": "gradient", "loss": loss, "args": (X, Y_XOR)}
    return [
        {
            **common,
            "name": "trask",
            "grad": grad,
            "params": initial_params(),
            "expect": "pass",
            "description": ("Trask's 11-line 3-layer net (syn0 3x4, syn1 4x1, seed 1) with the gradient "
                            "of 1/2 sum (y - l2)^2."),
        },
        {
            **common,
            "name": "trask-update-direction",
            "grad": update_direction,
            "params": initial_params(),
            "expect": {"diagnosis": "sign_flipped", "leaves": ["syn0", "syn1"]},
            "description": ("Trask's net with the post's update l1.T @ l2_delta (minus the gradient) "
                            "passed as the gradient."),
        },
    ]
