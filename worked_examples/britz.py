"""Denny Britz's "Implementing a Neural Network from Scratch": tanh hidden layer, softmax output.

    z1 = X W1 + b1,  a1 = tanh(z1)          X: (N, 2), W1: (2, H), b1: (1, H)
    z2 = a1 W2 + b2, probs = softmax(z2)    W2: (H, 2), b2: (1, 2)
    loss = 1/N [ sum_n -log probs[n, y_n] + reg/2 (||W1||^2 + ||W2||^2) ]

The post reports this loss (the mean cross-entropy plus the regulariser over N), but its
hand-written gradients never divide by N and add reg * W:

    delta3 = probs - onehot(y)              dW2 = a1^T delta3 + reg W2,  db2 = sum_n delta3
    delta2 = delta3 W2^T * (1 - a1^2)       dW1 = X^T delta2 + reg W1,   db1 = sum_n delta2

which is the gradient of N times the reported loss. Its training still works (the factor N
hides in the learning rate), but a gradient checker comparing it with the reported loss
finds every gradient scaled by N = 200: `tutorial_grad` is that twin, `grad` the fix.
"""

from __future__ import annotations

import numpy as np

N = 200
HIDDEN = 3
REG_LAMBDA = 0.01


def make_moons(n: int = N, noise: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles with Gaussian noise, like sklearn's make_moons (not its numbers)."""
    rng = np.random.default_rng(seed)
    n_outer = n // 2
    outer = np.linspace(0.0, np.pi, n_outer)
    inner = np.linspace(0.0, np.pi, n - n_outer)
    X = np.concatenate([np.stack([np.cos(outer), np.sin(outer)], axis=1),
                        np.stack([1.0 - np.cos(inner), 0.5 - np.sin(inner)], axis=1)])
    y = np.concatenate([np.zeros(n_outer, dtype=np.int64), np.ones(n - n_outer, dtype=np.int64)])
    return X + noise * rng.standard_normal(X.shape), y


X, Y = make_moons()


def initial_params(hidden: int = HIDDEN, seed: int = 0) -> dict:
    """The post's initialisation: Gaussian weights over sqrt(fan_in), zero biases."""
    rng = np.random.RandomState(seed)
    return {"W1": rng.randn(2, hidden) / np.sqrt(2), "b1": np.zeros((1, hidden)),
            "W2": rng.randn(hidden, 2) / np.sqrt(hidden), "b2": np.zeros((1, 2))}


def forward(params: dict, X: np.ndarray) -> tuple:
    """(a1, probs): hidden activations and class probabilities."""
    a1 = np.tanh(X @ params["W1"] + params["b1"])
    exp_scores = np.exp(a1 @ params["W2"] + params["b2"])
    return a1, exp_scores / np.sum(exp_scores, axis=1, keepdims=True)


def loss(params: dict, X: np.ndarray, y: np.ndarray):
    """The loss the post reports: (cross-entropy summed over examples + reg/2 ||W||^2) / N."""
    _, probs = forward(params, X)
    onehot = y[:, None] == np.arange(probs.shape[1])
    data_loss = -np.sum(np.where(onehot, np.log(probs), 0.0))
    data_loss = data_loss + REG_LAMBDA / 2 * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    return data_loss / X.shape[0]


def tutorial_grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """BUGGY TWIN: the post's backprop, the gradient of N times `loss`."""
    a1, probs = forward(params, X)
    delta3 = probs - np.eye(probs.shape[1])[y]         # dloss/dz2 per example: probs - onehot
    delta2 = (delta3 @ params["W2"].T) * (1.0 - a1 ** 2)   # tanh'(z1) = 1 - tanh(z1)^2
    # The post writes db1 = np.sum(delta2, axis=0), shape (H,), which its update broadcasts
    # back into b1 (1, H); keepdims keeps that shape so the only bug left is the scale.
    return {"W1": X.T @ delta2 + REG_LAMBDA * params["W1"],
            "b1": np.sum(delta2, axis=0, keepdims=True),
            "W2": a1.T @ delta3 + REG_LAMBDA * params["W2"],
            "b2": np.sum(delta3, axis=0, keepdims=True)}


def grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """The fix: the loss divides by N, so every term of its gradient does too."""
    n = X.shape[0]
    return {k: g / n for k, g in tutorial_grad(params, X, y).items()}


def cases() -> list[dict]:
    """The post's gradients against its reported loss, and the fixed gradients."""
    common = {"kind": "gradient", "loss": loss, "args": (X, Y)}
    return [
        {
            **common,
            "name": "britz-tutorial",
            "grad": tutorial_grad,
            "params": initial_params(),
            "expect": {"diagnosis": "scaled", "leaves": ["W1", "b1", "W2", "b2"], "factor": N},
            "description": ("Britz's tanh/softmax net on 200 two-moons points: the post's gradients, "
                            "N times those of the loss it reports."),
        },
        {
            **common,
            "name": "britz-fixed",
            "grad": grad,
            "params": initial_params(),
            "expect": "pass",
            "description": "Britz's tanh/softmax net with the gradients divided by N to match the reported loss.",
        },
    ]
