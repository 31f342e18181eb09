"""Backward passes with one planted bug each, written the way the tutorials write them.

Each buggy function marks its wrong line with a `# BUG` comment; `bug_line` finds it by
reading the source, so no test hard-codes a line number. `CASES` pairs every style's
correct implementation (`bug=None`) with its buggy twins. Styles: Mazur's 2-2-2 network
neuron by neuron (Python floats), a sigmoid MLP with MSE, tanh + softmax cross-entropy,
a CS231n two-layer net of affine/ReLU layers with `backward` functions and `(loss, grads)`,
Nielsen's `backprop` with its `delta` loop over layers, and Trask's 11-line network.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nets import MAZUR_PARAMS, MAZUR_SCALAR_ARGS, mazur_scalar_loss


@dataclass
class BlameCase:
    """A loss, a gradient (or value_and_grad) and data; `bug` is the function holding the `# BUG` line."""

    name: str
    style: str
    loss: Callable | None
    grad: Callable | None
    params: Callable[[], Any]
    args: tuple = ()
    bug: Callable | None = None
    value_and_grad: Callable | None = None
    notes: str = ""
    kwargs: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.bug is None


def bug_line(fn: Callable) -> tuple[str, int]:
    """(file, line) of the one `# BUG` comment in fn's source."""
    lines, start = inspect.getsourcelines(fn)
    marked = [start + i for i, text in enumerate(lines) if "# BUG" in text]
    assert len(marked) == 1, f"{fn.__name__} must mark exactly one line with # BUG, found {len(marked)}"
    return inspect.getsourcefile(fn), marked[0]


# =========================================================================== Mazur's 2-2-2 network

MAZUR_ARGS = MAZUR_SCALAR_ARGS  # i1, i2, target_o1, target_o2


def mazur_params() -> dict:
    return dict(MAZUR_PARAMS)


def mazur_float_loss(p, i1, i2, t1, t2):
    """The same network with math.exp and math.fsum, which JAX cannot follow."""
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1 = 1 / (1 + math.exp(-net_h1))
    out_h2 = 1 / (1 + math.exp(-net_h2))
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
    out_o1 = 1 / (1 + math.exp(-net_o1))
    out_o2 = 1 / (1 + math.exp(-net_o2))
    E_total = math.fsum([0.5 * (t1 - out_o1) ** 2, 0.5 * (t2 - out_o2) ** 2])
    return E_total


def _mazur_forward(p, i1, i2):
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1 = 1 / (1 + np.exp(-net_h1))
    out_h2 = 1 / (1 + np.exp(-net_h2))
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
    out_o1 = 1 / (1 + np.exp(-net_o1))
    out_o2 = 1 / (1 + np.exp(-net_o2))
    return out_h1, out_h2, out_o1, out_o2


def mazur_grad(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    dE_dout_o1 = -(t1 - out_o1)
    dE_dout_o2 = -(t2 - out_o2)
    dout_dnet_o1 = out_o1 * (1 - out_o1)
    dout_dnet_o2 = out_o2 * (1 - out_o2)
    d_o1 = dE_dout_o1 * dout_dnet_o1
    d_o2 = dE_dout_o2 * dout_dnet_o2
    dE_dout_h1 = d_o1 * p["w5"] + d_o2 * p["w7"]
    dE_dout_h2 = d_o1 * p["w6"] + d_o2 * p["w8"]
    d_h1 = dE_dout_h1 * out_h1 * (1 - out_h1)
    d_h2 = dE_dout_h2 * out_h2 * (1 - out_h2)
    g_w6 = d_o1 * out_h2
    g_b2 = d_o1 + d_o2
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": g_w6, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": g_b2}


def mazur_grad_sign(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    dE_dout_o1 = t1 - out_o1  # BUG
    dE_dout_o2 = -(t2 - out_o2)
    d_o1 = dE_dout_o1 * out_o1 * (1 - out_o1)
    d_o2 = dE_dout_o2 * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": d_o1 * out_h2, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}


def mazur_grad_net_derivative(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    d_o1 = -(t1 - out_o1) * net_o1 * (1 - net_o1)  # BUG
    d_o2 = -(t2 - out_o2) * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": d_o1 * out_h2, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}


def mazur_grad_one_path(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    d_o1 = -(t1 - out_o1) * out_o1 * (1 - out_o1)
    d_o2 = -(t2 - out_o2) * out_o2 * (1 - out_o2)
    dE_dout_h1 = d_o1 * p["w5"]  # BUG
    dE_dout_h2 = d_o1 * p["w6"] + d_o2 * p["w8"]
    d_h1 = dE_dout_h1 * out_h1 * (1 - out_h1)
    d_h2 = dE_dout_h2 * out_h2 * (1 - out_h2)
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": d_o1 * out_h2, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}


def mazur_grad_wrong_input(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    d_o1 = -(t1 - out_o1) * out_o1 * (1 - out_o1)
    d_o2 = -(t2 - out_o2) * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    g_w6 = d_o1 * out_h1  # BUG
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": g_w6, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}


def mazur_grad_bias(p, i1, i2, t1, t2):
    out_h1, out_h2, out_o1, out_o2 = _mazur_forward(p, i1, i2)
    d_o1 = -(t1 - out_o1) * out_o1 * (1 - out_o1)
    d_o2 = -(t2 - out_o2) * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    g_b2 = d_o1  # BUG
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": d_o1 * out_h2, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": g_b2}


def mazur_float_grad_sign(p, i1, i2, t1, t2):
    """math.exp and float() throughout; the loss's math.fsum keeps JAX out: finite differences give the adjoints."""
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1 = 1 / (1 + math.exp(-net_h1))
    out_h2 = 1 / (1 + math.exp(-net_h2))
    out_o1 = 1 / (1 + math.exp(-(p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"])))
    out_o2 = 1 / (1 + math.exp(-(p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"])))
    d_o1 = (out_o1 - t1) * out_o1 * (1 - out_o1)
    d_o2 = (t2 - out_o2) * out_o2 * (1 - out_o2)  # BUG
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    return {"w1": float(d_h1 * i1), "w2": float(d_h1 * i2), "w3": float(d_h2 * i1), "w4": float(d_h2 * i2),
            "w5": float(d_o1 * out_h1), "w6": float(d_o1 * out_h2), "w7": float(d_o2 * out_h1),
            "w8": float(d_o2 * out_h2), "b1": float(d_h1 + d_h2), "b2": float(d_o1 + d_o2)}


def mazur_float_grad(p, i1, i2, t1, t2):
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1 = 1 / (1 + math.exp(-net_h1))
    out_h2 = 1 / (1 + math.exp(-net_h2))
    out_o1 = 1 / (1 + math.exp(-(p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"])))
    out_o2 = 1 / (1 + math.exp(-(p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"])))
    d_o1 = (out_o1 - t1) * out_o1 * (1 - out_o1)
    d_o2 = (out_o2 - t2) * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    return {"w1": float(d_h1 * i1), "w2": float(d_h1 * i2), "w3": float(d_h2 * i1), "w4": float(d_h2 * i2),
            "w5": float(d_o1 * out_h1), "w6": float(d_o1 * out_h2), "w7": float(d_o2 * out_h1),
            "w8": float(d_o2 * out_h2), "b1": float(d_h1 + d_h2), "b2": float(d_o1 + d_o2)}


# =========================================================================== sigmoid MLP, MSE

_rng = np.random.default_rng(7)
MLP_X = _rng.normal(size=(6, 3))
MLP_Y = _rng.normal(size=(6, 2))


def mlp_params() -> dict:
    rng = np.random.default_rng(8)
    return {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4), "W2": rng.normal(size=(4, 2)),
            "b2": rng.normal(size=2)}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def mlp_loss(params, X, Y):
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    return np.mean(np.sum((out - Y) ** 2, axis=1))


def mlp_grad(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dW2 = h.T @ dout
    db2 = dout.sum(axis=0)
    dh = dout @ params["W2"].T
    dz1 = dh * h * (1 - h)
    dW1 = X.T @ dz1
    db1 = dz1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def mlp_grad_no_derivative(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dW2 = h.T @ dout
    db2 = dout.sum(axis=0)
    dh = dout @ params["W2"].T
    dz1 = dh  # BUG
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": dW2, "b2": db2}


def mlp_grad_preactivation(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dh = dout @ params["W2"].T
    dz1 = dh * z1 * (1 - z1)  # BUG
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dout, "b2": dout.sum(axis=0)}


def mlp_grad_half(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    err = out - Y
    dout = err / N  # BUG
    dh = dout @ params["W2"].T
    dz1 = dh * h * (1 - h)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dout, "b2": dout.sum(axis=0)}


def mlp_grad_transposed(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dW2 = dout.T @ h  # BUG
    dh = dout @ params["W2"].T
    dz1 = dh * h * (1 - h)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": dW2, "b2": dout.sum(axis=0)}


def mlp_grad_bias_mean(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dh = dout @ params["W2"].T
    dz1 = dh * h * (1 - h)
    db1 = dz1.mean(axis=0)  # BUG
    return {"W1": X.T @ dz1, "b1": db1, "W2": h.T @ dout, "b2": dout.sum(axis=0)}


def mlp_grad_wrong_variable(params, X, Y):
    N = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = sigmoid(z1)
    out = h @ params["W2"] + params["b2"]
    dout = 2 * (out - Y) / N
    dh = dout @ params["W2"].T
    dz1 = dh * h * (1 - h)
    dW1 = X.T @ dh  # BUG
    return {"W1": dW1, "b1": dz1.sum(axis=0), "W2": h.T @ dout, "b2": dout.sum(axis=0)}


# =========================================================================== tanh + softmax cross-entropy

SM_X = _rng.normal(size=(8, 3))
SM_LABELS = _rng.integers(0, 3, size=8)
SM_Y = np.eye(3)[SM_LABELS]


def sm_params() -> dict:
    rng = np.random.default_rng(9)
    return {"W1": 0.5 * rng.normal(size=(3, 5)), "b1": np.zeros(5), "W2": 0.5 * rng.normal(size=(5, 3)),
            "b2": np.zeros(3)}


def sm_loss(params, X, Y):
    z1 = X @ params["W1"] + params["b1"]
    h = np.tanh(z1)
    scores = h @ params["W2"] + params["b2"]
    scores = scores - np.max(scores, axis=1, keepdims=True)
    probs = np.exp(scores) / np.sum(np.exp(scores), axis=1, keepdims=True)
    return -np.sum(Y * np.log(probs)) / X.shape[0]


def _sm_forward(params, X):
    z1 = X @ params["W1"] + params["b1"]
    h = np.tanh(z1)
    scores = h @ params["W2"] + params["b2"]
    exp = np.exp(scores - np.max(scores, axis=1, keepdims=True))
    probs = exp / np.sum(exp, axis=1, keepdims=True)
    return z1, h, probs


def sm_grad(params, X, Y):
    N = X.shape[0]
    z1, h, probs = _sm_forward(params, X)
    dscores = (probs - Y) / N
    dh = dscores @ params["W2"].T
    dz1 = dh * (1 - h ** 2)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dscores, "b2": dscores.sum(axis=0)}


def sm_grad_sigmoid_derivative(params, X, Y):
    N = X.shape[0]
    z1, h, probs = _sm_forward(params, X)
    dscores = (probs - Y) / N
    dh = dscores @ params["W2"].T
    dz1 = dh * h * (1 - h)  # BUG
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dscores, "b2": dscores.sum(axis=0)}


def sm_grad_no_mean(params, X, Y):
    z1, h, probs = _sm_forward(params, X)
    dscores = probs - Y  # BUG
    dh = dscores @ params["W2"].T
    dz1 = dh * (1 - h ** 2)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dscores, "b2": dscores.sum(axis=0)}


def sm_grad_sign(params, X, Y):
    N = X.shape[0]
    z1, h, probs = _sm_forward(params, X)
    dscores = (Y - probs) / N  # BUG
    dh = dscores @ params["W2"].T
    dz1 = dh * (1 - h ** 2)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dscores, "b2": dscores.sum(axis=0)}


def sm_grad_tanh_of_z(params, X, Y):
    N = X.shape[0]
    z1, h, probs = _sm_forward(params, X)
    dscores = (probs - Y) / N
    dh = dscores @ params["W2"].T
    dz1 = dh * (1 - z1 ** 2)  # BUG
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dscores, "b2": dscores.sum(axis=0)}


# =========================================================================== CS231n: affine/ReLU layers

CS_X = _rng.normal(size=(5, 4))
CS_Y = _rng.integers(0, 3, size=5)


def cs_params() -> dict:
    rng = np.random.default_rng(10)
    return {"W1": 0.3 * rng.normal(size=(4, 6)), "b1": 0.1 * rng.normal(size=6),
            "W2": 0.3 * rng.normal(size=(6, 3)), "b2": np.zeros(3)}


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout @ w.T
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = np.sum(dout, axis=0)
    return dx, dw, db


def affine_backward_bias_axis(dout, cache):
    x, w, b = cache
    dx = dout @ w.T
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = np.sum(dout, axis=1)  # BUG
    return dx, dw, db


def relu_forward(x):
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward(dout, cache):
    x = cache
    dx = dout * (x > 0)
    return dx


def relu_backward_flipped(dout, cache):
    x = cache
    dx = dout * (x < 0)  # BUG
    return dx


def relu_backward_forgot(dout, cache):
    x = cache
    dx = dout  # BUG
    return dx


def softmax_loss(scores, y):
    N = scores.shape[0]
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    probs = np.exp(shifted) / np.sum(np.exp(shifted), axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(N), y])) / N
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    return loss, dscores


def softmax_loss_no_one(scores, y):
    N = scores.shape[0]
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    probs = np.exp(shifted) / np.sum(np.exp(shifted), axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(N), y])) / N
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 0.5  # BUG
    dscores /= N
    return loss, dscores


def make_two_layer(relu_back=relu_backward, affine_back=affine_backward, softmax=softmax_loss):
    """A CS231n TwoLayerNet.loss: (loss, grads), with the given backward layers."""

    def two_layer_loss(params, X, y, reg=0.0):
        W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
        a1, fc1_cache = affine_forward(X, W1, b1)
        h1, relu_cache = relu_forward(a1)
        scores, fc2_cache = affine_forward(h1, W2, b2)
        data_loss, dscores = softmax(scores, y)
        loss = data_loss + 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        grads = {}
        dh1, dW2, db2 = affine_back(dscores, fc2_cache)
        da1 = relu_back(dh1, relu_cache)
        dX, dW1, db1 = affine_back(da1, fc1_cache)
        grads["W1"] = dW1 + reg * W1
        grads["b1"] = db1
        grads["W2"] = dW2 + reg * W2
        grads["b2"] = db2
        return loss, grads

    return two_layer_loss


def cs_loss_reg_wrong(params, X, y, reg=0.0):
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    a1, fc1_cache = affine_forward(X, W1, b1)
    h1, relu_cache = relu_forward(a1)
    scores, fc2_cache = affine_forward(h1, W2, b2)
    data_loss, dscores = softmax_loss(scores, y)
    loss = data_loss + 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    grads = {}
    dh1, dW2, db2 = affine_backward(dscores, fc2_cache)
    da1 = relu_backward(dh1, relu_cache)
    dX, dW1, db1 = affine_backward(da1, fc1_cache)
    grads["W1"] = dW1 + reg * W1
    grads["b1"] = db1
    grads["W2"] = dW2 + 2 * reg * W2  # BUG
    grads["b2"] = db2
    return loss, grads


def cs_loss_only(vag):
    def loss(params, X, y, reg=0.0):
        return vag(params, X, y, reg)[0]
    return loss


# =========================================================================== Nielsen's backprop

NI_SIZES = (3, 3, 3, 3)
NI_X = _rng.normal(size=(3, 1))
NI_Y = np.array([[0.0], [1.0], [0.0]])


def ni_params() -> dict:
    rng = np.random.default_rng(11)
    return {"weights": [rng.normal(size=(n, m)) / np.sqrt(m) for m, n in zip(NI_SIZES[:-1], NI_SIZES[1:])],
            "biases": [rng.normal(size=(n, 1)) for n in NI_SIZES[1:]]}


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


def ni_loss(params, x, y):
    a = x
    for W, b in zip(params["weights"], params["biases"]):
        z = W @ a + b
        a = sigmoid(z)
    return 0.5 * np.sum((a - y) ** 2)


class QuadraticCost:
    @staticmethod
    def delta(z, a, y):
        return (a - y) * sigmoid_prime(z)


class QuadraticCostFlipped:
    @staticmethod
    def delta(z, a, y):
        return (y - a) * sigmoid_prime(z)  # BUG


def make_backprop(cost=QuadraticCost):
    def backprop(params, x, y):
        weights, biases = params["weights"], params["biases"]
        activation = x
        activations = [x]
        zs = []
        for W, b in zip(weights, biases):
            z = W @ activation + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        nabla_b = [None] * len(biases)
        nabla_w = [None] * len(weights)
        delta = cost.delta(zs[-1], activations[-1], y)
        nabla_b[-1] = delta
        nabla_w[-1] = delta @ activations[-2].T
        for l in range(2, len(weights) + 1):
            delta = (weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])
            nabla_b[-l] = delta
            nabla_w[-l] = delta @ activations[-l - 1].T
        return {"weights": nabla_w, "biases": nabla_b}

    return backprop


def ni_backprop_no_transpose(params, x, y):
    weights, biases = params["weights"], params["biases"]
    activation = x
    activations = [x]
    zs = []
    for W, b in zip(weights, biases):
        z = W @ activation + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    nabla_b = [None] * len(biases)
    nabla_w = [None] * len(weights)
    delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
    nabla_b[-1] = delta
    nabla_w[-1] = delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        delta = (weights[-l + 1] @ delta) * sigmoid_prime(zs[-l])  # BUG
        nabla_b[-l] = delta
        nabla_w[-l] = delta @ activations[-l - 1].T
    return {"weights": nabla_w, "biases": nabla_b}


def ni_backprop_off_by_one(params, x, y):
    weights, biases = params["weights"], params["biases"]
    activation = x
    activations = [x]
    zs = []
    for W, b in zip(weights, biases):
        z = W @ activation + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    nabla_b = [None] * len(biases)
    nabla_w = [None] * len(weights)
    delta = (activations[-1] - y) * sigmoid_prime(zs[-1])
    nabla_b[-1] = delta
    nabla_w[-1] = delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        delta = (weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])
        nabla_b[-l] = delta
        nabla_w[-l] = delta @ activations[-l].T  # BUG
    return {"weights": nabla_w, "biases": nabla_b}


def ni_backprop_prime_of_activation(params, x, y):
    weights, biases = params["weights"], params["biases"]
    activation = x
    activations = [x]
    zs = []
    for W, b in zip(weights, biases):
        z = W @ activation + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    nabla_b = [None] * len(biases)
    nabla_w = [None] * len(weights)
    delta = (activations[-1] - y) * sigmoid_prime(activations[-1])  # BUG
    nabla_b[-1] = delta
    nabla_w[-1] = delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        delta = (weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])
        nabla_b[-l] = delta
        nabla_w[-l] = delta @ activations[-l - 1].T
    return {"weights": nabla_w, "biases": nabla_b}


# =========================================================================== Trask's 11 lines

TR_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
TR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])


def tr_params() -> dict:
    rng = np.random.RandomState(1)
    return {"syn0": 2 * rng.random_sample((3, 4)) - 1, "syn1": 2 * rng.random_sample((4, 1)) - 1}


def nonlin(x, deriv=False):
    if deriv:
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


def tr_loss(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    return 0.5 * np.sum((y - l2) ** 2)


def tr_grad(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    l2_error = l2 - y
    l2_delta = l2_error * nonlin(l2, deriv=True)
    l1_error = l2_delta.dot(p["syn1"].T)
    l1_delta = l1_error * nonlin(l1, deriv=True)
    return {"syn0": X.T.dot(l1_delta), "syn1": l1.T.dot(l2_delta)}


def tr_grad_update_direction(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    l2_error = y - l2  # BUG
    l2_delta = l2_error * nonlin(l2, deriv=True)
    l1_error = l2_delta.dot(p["syn1"].T)
    l1_delta = l1_error * nonlin(l1, deriv=True)
    return {"syn0": X.T.dot(l1_delta), "syn1": l1.T.dot(l2_delta)}


def tr_grad_no_output_derivative(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    l2_error = l2 - y
    l2_delta = l2_error  # BUG
    l1_error = l2_delta.dot(p["syn1"].T)
    l1_delta = l1_error * nonlin(l1, deriv=True)
    return {"syn0": X.T.dot(l1_delta), "syn1": l1.T.dot(l2_delta)}


def tr_grad_wrong_layer(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    l2_error = l2 - y
    l2_delta = l2_error * nonlin(l2, deriv=True)
    l1_error = l2_delta.dot(p["syn1"].T)
    l1_delta = l1_error * nonlin(l2, deriv=True)  # BUG
    return {"syn0": X.T.dot(l1_delta), "syn1": l1.T.dot(l2_delta)}


# =========================================================================== the corpus

_cs = make_two_layer()
_MZ = dict(loss=mazur_scalar_loss, params=mazur_params, args=MAZUR_ARGS)
_MZF = dict(loss=mazur_float_loss, params=mazur_params, args=MAZUR_ARGS)
_ML = dict(loss=mlp_loss, params=mlp_params, args=(MLP_X, MLP_Y))
_SM = dict(loss=sm_loss, params=sm_params, args=(SM_X, SM_Y))
_NI = dict(loss=ni_loss, params=ni_params, args=(NI_X, NI_Y))
_TR = dict(loss=tr_loss, params=tr_params, args=(TR_X, TR_Y))


def _cs_case(name: str, bug: Callable | None, vag: Callable, reg: float = 0.0, notes: str = "") -> BlameCase:
    return BlameCase(name, "cs231n", None, None, cs_params, (CS_X, CS_Y, reg), bug=bug, value_and_grad=vag,
                     notes=notes)


CASES = [
    BlameCase("mazur", "mazur", grad=mazur_grad, **_MZ),
    BlameCase("mazur-sign", "mazur", grad=mazur_grad_sign, bug=mazur_grad_sign, **_MZ),
    BlameCase("mazur-net-derivative", "mazur", grad=mazur_grad_net_derivative, bug=mazur_grad_net_derivative, **_MZ),
    BlameCase("mazur-one-path", "mazur", grad=mazur_grad_one_path, bug=mazur_grad_one_path, **_MZ),
    BlameCase("mazur-wrong-input", "mazur", grad=mazur_grad_wrong_input, bug=mazur_grad_wrong_input, **_MZ),
    BlameCase("mazur-bias", "mazur", grad=mazur_grad_bias, bug=mazur_grad_bias, **_MZ),
    BlameCase("mazur-float", "mazur", grad=mazur_float_grad, notes="finite differences", **_MZF),
    BlameCase("mazur-float-sign", "mazur", grad=mazur_float_grad_sign, bug=mazur_float_grad_sign,
              notes="finite differences", **_MZF),
    BlameCase("mlp", "mlp-mse", grad=mlp_grad, **_ML),
    BlameCase("mlp-no-derivative", "mlp-mse", grad=mlp_grad_no_derivative, bug=mlp_grad_no_derivative, **_ML),
    BlameCase("mlp-preactivation", "mlp-mse", grad=mlp_grad_preactivation, bug=mlp_grad_preactivation, **_ML),
    BlameCase("mlp-half", "mlp-mse", grad=mlp_grad_half, bug=mlp_grad_half, **_ML),
    BlameCase("mlp-transposed", "mlp-mse", grad=mlp_grad_transposed, bug=mlp_grad_transposed, **_ML),
    BlameCase("mlp-bias-mean", "mlp-mse", grad=mlp_grad_bias_mean, bug=mlp_grad_bias_mean, **_ML),
    BlameCase("mlp-wrong-variable", "mlp-mse", grad=mlp_grad_wrong_variable, bug=mlp_grad_wrong_variable, **_ML),
    BlameCase("softmax", "tanh-softmax", grad=sm_grad, **_SM),
    BlameCase("softmax-sigmoid-derivative", "tanh-softmax", grad=sm_grad_sigmoid_derivative,
              bug=sm_grad_sigmoid_derivative, **_SM),
    BlameCase("softmax-no-mean", "tanh-softmax", grad=sm_grad_no_mean, bug=sm_grad_no_mean, **_SM),
    BlameCase("softmax-sign", "tanh-softmax", grad=sm_grad_sign, bug=sm_grad_sign, **_SM),
    BlameCase("softmax-tanh-of-z", "tanh-softmax", grad=sm_grad_tanh_of_z, bug=sm_grad_tanh_of_z, **_SM),
    _cs_case("cs231n", None, _cs),
    _cs_case("cs231n-reg", None, _cs, reg=0.1),
    _cs_case("cs231n-relu-flipped", relu_backward_flipped, make_two_layer(relu_back=relu_backward_flipped)),
    _cs_case("cs231n-relu-forgot", relu_backward_forgot, make_two_layer(relu_back=relu_backward_forgot)),
    _cs_case("cs231n-bias-axis", affine_backward_bias_axis, make_two_layer(affine_back=affine_backward_bias_axis)),
    _cs_case("cs231n-softmax", softmax_loss_no_one, make_two_layer(softmax=softmax_loss_no_one)),
    _cs_case("cs231n-reg-doubled", cs_loss_reg_wrong, cs_loss_reg_wrong, reg=0.1),
    _cs_case("cs231n-relu-flipped-reg", relu_backward_flipped, make_two_layer(relu_back=relu_backward_flipped),
             reg=0.1, notes="the regularised gradient: dW2 = dL/dW2 - reg * W2 shows the data part of dW1"),
    BlameCase("nielsen", "nielsen", grad=make_backprop(), **_NI),
    BlameCase("nielsen-cost-sign", "nielsen", grad=make_backprop(QuadraticCostFlipped),
              bug=QuadraticCostFlipped.delta, **_NI),
    BlameCase("nielsen-no-transpose", "nielsen", grad=ni_backprop_no_transpose, bug=ni_backprop_no_transpose, **_NI),
    BlameCase("nielsen-off-by-one", "nielsen", grad=ni_backprop_off_by_one, bug=ni_backprop_off_by_one, **_NI),
    BlameCase("nielsen-prime-of-activation", "nielsen", grad=ni_backprop_prime_of_activation,
              bug=ni_backprop_prime_of_activation, **_NI),
    BlameCase("trask", "trask", grad=tr_grad, **_TR),
    BlameCase("trask-update-direction", "trask", grad=tr_grad_update_direction, bug=tr_grad_update_direction, **_TR),
    BlameCase("trask-no-output-derivative", "trask", grad=tr_grad_no_output_derivative,
              bug=tr_grad_no_output_derivative, **_TR),
    BlameCase("trask-wrong-layer", "trask", grad=tr_grad_wrong_layer, bug=tr_grad_wrong_layer, **_TR),
]

BUGGY = [c for c in CASES if not c.correct]
CORRECT = [c for c in CASES if c.correct]
