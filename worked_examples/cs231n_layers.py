"""Layers in the style of the CS231n assignments: forward(...) -> (out, cache), backward(dout, cache).

A backward pass receives dout = dL/dout from the layer above and returns dL/dinput for
every input, by the chain rule through this layer only. Three buggy twins are the slips
seen in student code: a ReLU backward that writes into dout, a batchnorm dgamma of shape
(1, D), and an affine db that forgets to sum over the batch.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 1e-5


# --- affine: out = x.reshape(N, D) @ w + b ----------------------------------------

def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple:
    """Fully connected layer; each x[n] is flattened to a row of length D."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout: np.ndarray, cache: tuple) -> tuple:
    """(dx, dw, db): dout @ w^T back to x's shape, rows^T @ dout, dout summed over the batch."""
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = np.sum(dout, axis=0)               # b is added to every row, so its gradient sums them
    return dx, dw, db


def affine_backward_unsummed(dout: np.ndarray, cache: tuple) -> tuple:
    """BUGGY TWIN: db = dout, one row per example (N, M) instead of the sum (M,)."""
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout


# --- ReLU: out = max(0, x) --------------------------------------------------------

def relu_forward(x: np.ndarray) -> tuple:
    """Elementwise max(0, x)."""
    return np.maximum(0.0, x), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dout where x > 0, else 0."""
    x = cache
    return dout * (x > 0)


def relu_backward_inplace(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """BUGGY TWIN: right values, but zeroes dout in place, corrupting the caller's array."""
    x = cache
    dout[x <= 0] = 0.0
    return dout


# --- softmax loss -------------------------------------------------------------------

def softmax_data_loss(x: np.ndarray, y: np.ndarray):
    """Mean of -log softmax(x)[n, y_n] over the N rows of scores x."""
    shifted = x - np.max(x, axis=1, keepdims=True)   # the shift cancels and keeps exp finite
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return -np.mean(log_probs[np.arange(x.shape[0]), y])


def softmax_loss(x: np.ndarray, y: np.ndarray) -> tuple:
    """(loss, dx) with dx = (softmax(x) - onehot(y)) / N."""
    n = x.shape[0]
    probs = np.exp(x - np.max(x, axis=1, keepdims=True))
    probs = probs / np.sum(probs, axis=1, keepdims=True)
    dx = (probs - np.eye(x.shape[1])[y]) / n
    return softmax_data_loss(x, y), dx


def softmax_case_loss(params: dict, y: np.ndarray):
    """softmax_loss's loss as a function of the scores {"x": x}."""
    return softmax_data_loss(params["x"], y)


def softmax_case_grad(params: dict, y: np.ndarray) -> dict:
    """softmax_loss's dx as the gradient of {"x": x}."""
    return {"x": softmax_loss(params["x"], y)[1]}


# --- batch normalisation, training mode -----------------------------------------------

def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple:
    """Normalise each column with the batch mean and variance, then scale and shift."""
    mu = np.mean(x, axis=0)
    var = np.mean((x - mu) ** 2, axis=0)
    inv_std = 1.0 / np.sqrt(var + BN_EPS)
    xhat = (x - mu) * inv_std
    return gamma * xhat + beta, (xhat, gamma, inv_std)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple:
    """(dx, dgamma, dbeta); dx folds the paths through mu and var into one line.

    With g = dL/dxhat = dout * gamma, every x[n] moves xhat[n] directly and every xhat
    through mu and var, which gives dx = inv_std / N (N g - sum g - xhat sum(g xhat)).
    """
    xhat, gamma, inv_std = cache
    n = dout.shape[0]
    dxhat = dout * gamma
    dx = inv_std / n * (n * dxhat - np.sum(dxhat, axis=0) - xhat * np.sum(dxhat * xhat, axis=0))
    dgamma = np.sum(dout * xhat, axis=0)
    dbeta = np.sum(dout, axis=0)
    return dx, dgamma, dbeta


def batchnorm_backward_row_dgamma(dout: np.ndarray, cache: tuple) -> tuple:
    """BUGGY TWIN: dgamma summed with keepdims=True, shape (1, D) where gamma is (D,)."""
    dx, _, dbeta = batchnorm_backward(dout, cache)
    xhat = cache[0]
    return dx, np.sum(dout * xhat, axis=0, keepdims=True), dbeta


# --- the cases ----------------------------------------------------------------------

def _inputs(seed: int = 0) -> dict:
    """Small random inputs for every layer."""
    rng = np.random.default_rng(seed)
    relu_x = rng.standard_normal((4, 5))
    relu_x = relu_x + 0.1 * np.sign(relu_x)      # keep clear of ReLU's kink at 0
    return {
        "affine": {"x": rng.standard_normal((4, 2, 3)), "w": rng.standard_normal((6, 5)),
                   "b": rng.standard_normal(5)},
        "relu": {"x": relu_x},
        "softmax": ({"x": rng.standard_normal((6, 4))}, rng.integers(0, 4, size=6)),
        "batchnorm": {"x": 2.0 + 3.0 * rng.standard_normal((8, 4)), "gamma": 1.0 + 0.5 * rng.standard_normal(4),
                      "beta": rng.standard_normal(4)},
    }


def _layer(name: str, forward, backward, inputs: dict, expect, description: str) -> dict:
    return {"name": name, "kind": "layer", "forward": forward, "backward": backward,
            "inputs": inputs, "expect": expect, "description": description}


def cases() -> list[dict]:
    """Each layer, and the three buggy twins."""
    data = _inputs()
    scores, labels = data["softmax"]
    return [
        _layer("cs231n-affine", affine_forward, affine_backward, data["affine"], "pass",
               "CS231n affine layer x (4, 2, 3) flattened to rows, w (6, 5), b (5,)."),
        _layer("cs231n-affine-db-unsummed", affine_forward, affine_backward_unsummed, data["affine"],
               {"diagnosis": "wrong_shape", "leaves": ["b"]},
               "CS231n affine layer whose backward returns db = dout, not summed over the batch."),
        _layer("cs231n-relu", relu_forward, relu_backward, data["relu"], "pass",
               "CS231n ReLU layer, inputs kept away from the kink at 0."),
        _layer("cs231n-relu-inplace", relu_forward, relu_backward_inplace, data["relu"], "pass",
               "CS231n ReLU backward with the right values that zeroes dout in place (a warning, not a failure)."),
        {
            "name": "cs231n-softmax",
            "kind": "gradient",
            "loss": softmax_case_loss,
            "grad": softmax_case_grad,
            "params": scores,
            "args": (labels,),
            "expect": "pass",
            "description": "CS231n softmax_loss(x, y): mean cross-entropy of 6 score rows and its dx.",
        },
        _layer("cs231n-batchnorm", batchnorm_forward, batchnorm_backward, data["batchnorm"], "pass",
               "CS231n batch normalisation in training mode (batch statistics, eps 1e-5)."),
        _layer("cs231n-batchnorm-dgamma-row", batchnorm_forward, batchnorm_backward_row_dgamma,
               data["batchnorm"], {"diagnosis": "wrong_shape", "leaves": ["gamma"]},
               "CS231n batchnorm backward returning dgamma shaped (1, D) instead of (D,)."),
    ]
