"""The benchmark problem: a tanh/softmax MLP with a hand-written numpy gradient.

Importable without torch or jax. The loss is plain numpy through the module-level
`np` and never writes into an array, so gradcheck can re-run it under jax.numpy.

    h      = tanh(X @ W1 + b1)                      X: (N, D), h: (N, H)
    logits = h @ W2 + b2                            logits: (N, C)
    loss   = mean_n( logsumexp(logits_n) - logits_n[y_n] )
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

BATCH = 32
CLASSES = 10
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def loss(params: dict, X: Any, y: Any) -> Any:
    """Mean softmax cross-entropy of the MLP on the batch (X, y)."""
    h = np.tanh(X @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    # Shift by the row max so exp cannot overflow; the shift cancels in the loss.
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    onehot = y[:, None] == np.arange(logits.shape[1])
    return -np.sum(np.where(onehot, log_probs, 0.0)) / X.shape[0]


def grad(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """Hand-written gradient of `loss` with respect to each parameter."""
    n = X.shape[0]
    h = np.tanh(X @ params["W1"] + params["b1"])
    logits = h @ params["W2"] + params["b2"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    # d loss / d logits = (softmax - onehot) / N
    dlogits = (probs - np.eye(logits.shape[1], dtype=probs.dtype)[y]) / n
    # d tanh(z) / dz = 1 - tanh(z)^2
    dz = (dlogits @ params["W2"].T) * (1.0 - h * h)
    return {"W1": X.T @ dz, "b1": dz.sum(axis=0), "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}


def count_params(inputs: int, hidden: int, classes: int = CLASSES) -> int:
    """Number of scalars in W1, b1, W2, b2."""
    return inputs * hidden + hidden + hidden * classes + classes


def hidden_for(n_params: int, classes: int = CLASSES) -> int:
    """The width H (with input dim D = H) whose parameter count is nearest `n_params`."""
    # H^2 + (1 + C) H + C = n, solved for H, then the best of the two integers around it.
    b = 1 + classes
    root = (-b + math.sqrt(b * b - 4 * (classes - n_params))) / 2
    candidates = [max(1, math.floor(root)), max(1, math.ceil(root))]
    return min(candidates, key=lambda h: abs(count_params(h, h, classes) - n_params))


def make_mlp(n_params: int, seed: int = 0, dtype: Any = np.float64) -> dict:
    """A benchmark case with about `n_params` parameters (D = H, C = 10, batch 32)."""
    width = hidden_for(n_params)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((BATCH, width)).astype(dtype)
    y = rng.integers(0, CLASSES, size=BATCH)
    params = {
        # 1/sqrt(fan_in) keeps tanh away from saturation, so every entry has a live gradient.
        "W1": (rng.standard_normal((width, width)) / math.sqrt(width)).astype(dtype),
        "b1": (0.1 * rng.standard_normal(width)).astype(dtype),
        "W2": (rng.standard_normal((width, CLASSES)) / math.sqrt(width)).astype(dtype),
        "b2": (0.1 * rng.standard_normal(CLASSES)).astype(dtype),
    }
    return {
        "loss": loss,
        "grad": grad,
        "params": params,
        "args": (X, y),
        "n_params": count_params(width, width),
        "shape": {"inputs": width, "hidden": width, "classes": CLASSES, "batch": BATCH},
    }


def pack(params: dict) -> np.ndarray:
    """Concatenate the parameters, in PARAM_NAMES order, into one 1-D vector."""
    return np.concatenate([np.ravel(params[name]) for name in PARAM_NAMES])


def unpack(vector: np.ndarray, like: dict) -> dict:
    """Split a 1-D vector back into arrays shaped like `like` (views, no copies)."""
    out, start = {}, 0
    for name in PARAM_NAMES:
        size = np.size(like[name])
        out[name] = vector[start:start + size].reshape(np.shape(like[name]))
        start += size
    return out


def flat(problem: dict) -> tuple[Callable, Callable, np.ndarray]:
    """(f, g, x0): loss and gradient of `problem` as functions of one flat vector."""
    template, args = problem["params"], problem["args"]

    def f(x: np.ndarray) -> float:
        return float(problem["loss"](unpack(x, template), *args))

    def g(x: np.ndarray) -> np.ndarray:
        return pack(problem["grad"](unpack(x, template), *args))

    return f, g, pack(template)
