"""Small networks with hand-written numpy backprop, correct and with planted bugs, for the tests.

Each net is a `Net` with `loss(params, *args)`, `grad(params, *args)`, `params` and `args`;
`net.bug(kind)` is the gradient function with one planted bug (the kinds each net supports are
the keys of `net.bugs`). Every network is written the way a learner would write it: plain numpy,
forward pass, then the chain rule backwards. `snapshot`/`assert_identical` check that a caller's
arrays come back bitwise unchanged.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

#: The golden facts, kept with the tests (tests/golden/README.md says where they come from).
GOLDEN = Path(__file__).resolve().parent / "golden"


def mazur_golden() -> dict:
    """Matt Mazur's set-up and printed numbers, with what does and does not reproduce."""
    return json.loads((GOLDEN / "mazur.json").read_text())


@dataclass
class Net:
    """A loss, its hand-written gradient, a point to check it at, and planted-bug variants."""

    name: str
    loss: Callable
    grad: Callable
    params: Any
    args: tuple
    bugs: dict = field(default_factory=dict)

    def bug(self, kind: str) -> Callable:
        return self.bugs[kind]


def snapshot(tree):
    """A deep copy that remembers each array's bytes, dtype and shape."""
    return copy.deepcopy(tree)


def assert_identical(tree, before) -> None:
    """`tree` is bitwise what `before` was: same containers, same dtypes, shapes and bytes."""
    assert type(tree) is type(before)
    if isinstance(tree, dict):
        assert list(tree) == list(before)
        for k in tree:
            assert_identical(tree[k], before[k])
    elif isinstance(tree, (list, tuple)):
        assert len(tree) == len(before)
        for a, b in zip(tree, before):
            assert_identical(a, b)
    elif isinstance(tree, np.ndarray):
        assert tree.dtype == before.dtype and tree.shape == before.shape
        assert tree.tobytes() == before.tobytes()
        assert tree.flags.writeable == before.flags.writeable
    elif isinstance(tree, float) and np.isnan(tree):
        assert np.isnan(before)
    else:
        assert tree == before


def sigmoid(z):
    # exp(-logaddexp(0, -z)) = 1 / (1 + exp(-z)) without overflow warnings for large |z|
    return np.exp(-np.logaddexp(0, -z))


# --------------------------------------------------------------------------------------------
# Matt Mazur's 2-2-2 network: scalar weights w1..w8, one bias per layer shared by its neurons.
# --------------------------------------------------------------------------------------------

MAZUR_PARAMS = {"w1": 0.15, "w2": 0.2, "w3": 0.25, "w4": 0.3, "w5": 0.4, "w6": 0.45, "w7": 0.5, "w8": 0.55,
                "b1": 0.35, "b2": 0.6}
MAZUR_INPUTS = np.array([0.05, 0.1])
MAZUR_TARGETS = np.array([0.01, 0.99])
#: The same inputs and targets as scalar arguments (i1, i2, target_o1, target_o2).
MAZUR_SCALAR_ARGS = (0.05, 0.1, 0.01, 0.99)


def mazur_scalar_loss(p, i1, i2, t1, t2):
    """The post's network written out neuron by neuron, as a learner would: every step named."""
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1 = 1 / (1 + np.exp(-net_h1))                 # logistic
    out_h2 = 1 / (1 + np.exp(-net_h2))
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
    out_o1 = 1 / (1 + np.exp(-net_o1))
    out_o2 = 1 / (1 + np.exp(-net_o2))
    E_total = 0.5 * (t1 - out_o1) ** 2 + 0.5 * (t2 - out_o2) ** 2
    return E_total
WEIGHTS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8")


def mazur_forward(p, i, t):
    """Every named quantity of the post's forward pass."""
    f = {}
    f["net_h1"] = p["w1"] * i[0] + p["w2"] * i[1] + p["b1"]
    f["net_h2"] = p["w3"] * i[0] + p["w4"] * i[1] + p["b1"]
    f["out_h1"], f["out_h2"] = sigmoid(f["net_h1"]), sigmoid(f["net_h2"])
    f["net_o1"] = p["w5"] * f["out_h1"] + p["w6"] * f["out_h2"] + p["b2"]
    f["net_o2"] = p["w7"] * f["out_h1"] + p["w8"] * f["out_h2"] + p["b2"]
    f["out_o1"], f["out_o2"] = sigmoid(f["net_o1"]), sigmoid(f["net_o2"])
    f["E_o1"] = 0.5 * (t[0] - f["out_o1"]) ** 2
    f["E_o2"] = 0.5 * (t[1] - f["out_o2"]) ** 2
    f["E_total"] = f["E_o1"] + f["E_o2"]
    return f


def mazur_loss(p, i, t):
    return mazur_forward(p, i, t)["E_total"]


def mazur_backward(p, i, t, *, output_weights=None, bug=None):
    """Every named factor of the post's backward pass, and the gradient dict.

    `output_weights` (w5..w8) are the ones the hidden deltas are computed with: the current ones
    in correct backprop, the already-updated ones in the stale-weight variant.
    """
    f = mazur_forward(p, i, t)
    w = output_weights or p
    b = dict(f)
    b["dEtotal_dout_o1"] = -(t[0] - f["out_o1"])
    b["dEtotal_dout_o2"] = -(t[1] - f["out_o2"])
    if bug == "scaled2":   # d/dout of 1/2 (t - out)^2 taken as 2 (out - t)
        b["dEtotal_dout_o1"], b["dEtotal_dout_o2"] = 2 * b["dEtotal_dout_o1"], 2 * b["dEtotal_dout_o2"]
    if bug == "sign":      # target - output instead of output - target
        b["dEtotal_dout_o1"], b["dEtotal_dout_o2"] = -b["dEtotal_dout_o1"], -b["dEtotal_dout_o2"]
    b["dout_o1_dnet_o1"] = f["out_o1"] * (1 - f["out_o1"])
    b["dout_o2_dnet_o2"] = f["out_o2"] * (1 - f["out_o2"])
    d_o1 = b["dEo1_dnet_o1"] = b["dEtotal_dout_o1"] * b["dout_o1_dnet_o1"]
    d_o2 = b["dEo2_dnet_o2"] = b["dEtotal_dout_o2"] * b["dout_o2_dnet_o2"]
    b["dnet_o1_dw5"] = f["out_h1"]
    b["dnet_o1_dout_h1"] = w["w5"]
    b["dEo1_dout_h1"] = d_o1 * w["w5"]
    b["dEo2_dout_h1"] = d_o2 * w["w7"]
    b["dEtotal_dout_h1"] = b["dEo1_dout_h1"] + b["dEo2_dout_h1"]
    b["dEtotal_dout_h2"] = d_o1 * w["w6"] + d_o2 * w["w8"]
    b["dout_h1_dnet_h1"] = f["out_h1"] * (1 - f["out_h1"])
    b["dout_h2_dnet_h2"] = f["out_h2"] * (1 - f["out_h2"])
    if bug == "wrong":     # sigmoid' taken as out instead of out (1 - out) in the hidden layer
        b["dout_h1_dnet_h1"], b["dout_h2_dnet_h2"] = f["out_h1"], f["out_h2"]
    d_h1 = b["dEtotal_dout_h1"] * b["dout_h1_dnet_h1"]
    d_h2 = b["dEtotal_dout_h2"] * b["dout_h2_dnet_h2"]
    b["dnet_h1_dw1"] = i[0]
    g = {"w1": d_h1 * i[0], "w2": d_h1 * i[1], "w3": d_h2 * i[0], "w4": d_h2 * i[1],
         "w5": d_o1 * f["out_h1"], "w6": d_o1 * f["out_h2"], "w7": d_o2 * f["out_h1"], "w8": d_o2 * f["out_h2"],
         "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}
    b["dEtotal_dw5"], b["dEtotal_dw1"] = g["w5"], g["w1"]
    if bug == "swapped":   # w5's and w6's gradients returned under each other's names
        g["w5"], g["w6"] = g["w6"], g["w5"]
    if bug == "zero":      # "the biases are never updated", so their gradients are left at 0
        g["b1"] = g["b2"] = 0.0
    if bug == "nonfinite":
        g["w3"] = d_h2 * i[0] / (i[0] - 0.05)    # a division by a difference that is exactly 0 here
    if bug == "keepdims":
        g["b2"] = np.array([d_o1 + d_o2])        # shape (1,) for a scalar parameter
    return g, b


def mazur_grad(p, i, t):
    return mazur_backward(p, i, t)[0]


def mazur_grad_stale(p, i, t, lr=0.5):
    """The post's script before its 2015 fix: hidden deltas computed with the updated w5..w8."""
    g_out, _ = mazur_backward(p, i, t)
    updated = {k: p[k] - lr * g_out[k] for k in ("w5", "w6", "w7", "w8")}
    g, _ = mazur_backward(p, i, t, output_weights=updated)
    return g


def mazur_train(grad, steps, params=None, lr=0.5):
    """Gradient descent on w1..w8 (the post never updates the biases)."""
    p = dict(MAZUR_PARAMS if params is None else params)
    for _ in range(steps):
        g = grad(p, MAZUR_INPUTS, MAZUR_TARGETS)
        for k in WEIGHTS:
            p[k] = p[k] - lr * g[k]
    return p


def mazur(dtype=np.float64) -> Net:
    bugs = {kind: (lambda kind: lambda p, i, t: mazur_backward(p, i, t, bug=kind)[0])(kind)
            for kind in ("scaled2", "sign", "wrong", "swapped", "zero", "nonfinite", "keepdims")}
    bugs["stale"] = mazur_grad_stale
    return Net("mazur", mazur_loss, mazur_grad, dict(MAZUR_PARAMS),
               (MAZUR_INPUTS.astype(dtype), MAZUR_TARGETS.astype(dtype)), bugs)


# --------------------------------------------------------------------------------------------
# Logistic regression, mean binary cross-entropy; one sample saturated (p == 1.0 exactly).
# --------------------------------------------------------------------------------------------

def logreg_loss(p, X, y):
    z = X @ p["w"] + p["b"]
    return np.mean(np.logaddexp(0, z) - y * z)   # stable form of -y log p - (1 - y) log(1 - p)


def logreg_backward(p, X, y, bug=None):
    N = X.shape[0]
    z = X @ p["w"] + p["b"]
    prob = sigmoid(z)
    if bug == "nonfinite":   # dL/dp * dp/dz: 0/0 at the saturated sample, where p == 1.0 exactly
        with np.errstate(divide="ignore", invalid="ignore"):
            dz = (-(y / prob) + (1 - y) / (1 - prob)) * prob * (1 - prob) / N
    elif bug == "eps":       # dL/dp with the 1e-7 a learner adds inside log(p + 1e-7); the loss has none
        dz = (-(y / (prob + 1e-7)) + (1 - y) / (1 - prob + 1e-7)) * prob * (1 - prob) / N
    elif bug == "wrong":     # the squared-error-through-sigmoid delta, p (1 - p) (p - y)
        dz = prob * (1 - prob) * (prob - y) / N
    else:
        dz = (prob - y) / N
    if bug == "scaledN":     # loss is a mean, gradient a sum
        dz = dz * N
    if bug == "sign":
        dz = -dz
    gw = X.T @ dz
    if bug == "partial":     # loop over features stops one short: the last one never gets its gradient
        gw = np.zeros_like(p["w"])
        for j in range(X.shape[1] - 1):
            gw[j] = X[:, j] @ dz
    if bug == "not_summed":  # per-example gradients, never summed over the batch
        gw = X * dz[:, None]
    g = {"w": gw, "b": dz.sum()}
    if bug == "zero":
        g["b"] = 0.0
    return g


def logreg_grad(p, X, y):
    return logreg_backward(p, X, y)


def logreg(dtype=np.float64, seed=1, N=8, D=5) -> Net:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    w = rng.standard_normal(D)
    y = (rng.random(N) < 0.5).astype(float)
    X[0] = 60.0 * w / (w @ w)        # z = 60 + b: sigmoid rounds to exactly 1.0
    y[0] = 1.0                       # ... and it is right, so its gradient is tiny next to the rest
    params = {"w": w.astype(dtype), "b": 0.1}
    bugs = {k: (lambda k: lambda p, X, y: logreg_backward(p, X, y, bug=k))(k)
            for k in ("nonfinite", "eps", "wrong", "scaledN", "sign", "partial", "not_summed", "zero")}
    return Net("logreg", logreg_loss, logreg_grad, params, (X.astype(dtype), y.astype(dtype)), bugs)


# --------------------------------------------------------------------------------------------
# tanh hidden layer + softmax cross-entropy + L2 (CS231n two-layer net), square 3x3 weights.
# --------------------------------------------------------------------------------------------

def softmax_loss(p, X, y, reg):
    h = np.tanh(X @ p["W1"] + p["b1"])
    scores = h @ p["W2"] + p["b2"]
    scores = scores - scores.max(axis=1, keepdims=True)
    logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    data = -np.mean(logp[np.arange(len(y)), y])
    return data + 0.5 * reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))


def softmax_backward(p, X, y, reg, bug=None):
    N = X.shape[0]
    h = np.tanh(X @ p["W1"] + p["b1"])
    scores = h @ p["W2"] + p["b2"]
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    dscores = e / e.sum(axis=1, keepdims=True)
    dscores[np.arange(N), y] -= 1
    dscores /= N
    if bug == "scaledN":   # the 1/N of the data loss forgotten; L2 term right
        dscores *= N
    dW2 = h.T @ dscores
    db2 = dscores.sum(axis=0)
    dh = dscores @ p["W2"].T
    dz = dh * ((1 - h) if bug == "tanh" else (1 - h ** 2))
    dW1 = X.T @ dz
    db1 = dz.sum(axis=0)
    if bug != "no_l2":
        dW1 = dW1 + reg * p["W1"]
        dW2 = dW2 + reg * p["W2"]
    if bug == "clipped":   # gradient clipping inside the backward pass (min-char-rnn clips at +-5)
        bound = np.sort(np.abs(dW1).ravel())[-3]   # the two largest entries get clipped
        dW1 = np.clip(dW1, -bound, bound)
    g = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    if bug == "swapped":   # returned in the wrong order
        g["b1"], g["b2"] = db2, db1
    if bug == "update":    # returns the update direction, -grad
        g = {k: -v for k, v in g.items()}
    return g


def softmax_grad(p, X, y, reg):
    return softmax_backward(p, X, y, reg)


def tanh_softmax(dtype=np.float64, seed=2, N=6, D=3, H=3, C=3) -> Net:
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((D, H)) * 0.8, "b1": rng.standard_normal(H) * 0.1,
              "W2": rng.standard_normal((H, C)) * 0.8, "b2": rng.standard_normal(C) * 0.1}
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = rng.standard_normal((N, D)).astype(dtype)
    y = rng.integers(0, C, N)
    bugs = {k: (lambda k: lambda p, X, y, reg: softmax_backward(p, X, y, reg, bug=k))(k)
            for k in ("scaledN", "tanh", "no_l2", "clipped", "swapped", "update")}
    return Net("tanh_softmax", softmax_loss, softmax_grad, params, (X, y, 0.1), bugs)


# --------------------------------------------------------------------------------------------
# Nielsen's network: lists of weights (out, in) and column-vector biases (out, 1), examples
# as columns, quadratic cost averaged over the mini-batch.
# --------------------------------------------------------------------------------------------

def nielsen_loss(p, X, Y):
    a = X
    for W, b in zip(p["weights"], p["biases"]):
        a = sigmoid(W @ a + b)
    return 0.5 * np.sum((a - Y) ** 2) / X.shape[1]


def nielsen_backward(p, X, Y, bug=None):
    m = X.shape[1]
    activations, zs, a = [X], [], X
    for W, b in zip(p["weights"], p["biases"]):
        z = W @ a + b
        zs.append(z)
        a = sigmoid(z)
        activations.append(a)
    L = len(p["weights"])
    nabla_w, nabla_b = [None] * L, [None] * L
    delta = (activations[-1] - Y) * activations[-1] * (1 - activations[-1]) / m
    if bug == "scaledm":   # the mini-batch mean forgotten in the gradient
        delta = delta * m
    for layer in range(L - 1, -1, -1):
        nabla_b[layer] = delta.sum(axis=1, keepdims=True)
        nabla_w[layer] = delta @ activations[layer].T
        if bug == "transposed" and layer == 0:
            nabla_w[layer] = activations[layer] @ delta.T
        if bug == "not_summed" and layer == 0:
            nabla_b[layer] = delta                   # (n, m): never summed over the batch axis 1
        if bug == "flat_bias" and layer == 1:
            nabla_b[layer] = delta.sum(axis=1)       # (n,) where the bias is (n, 1)
        if layer:
            s = activations[layer]
            delta = (p["weights"][layer].T @ delta) * s * (1 - s)
    return {"weights": nabla_w, "biases": nabla_b}


def nielsen_grad(p, X, Y):
    return nielsen_backward(p, X, Y)


def nielsen(dtype=np.float64, seed=3, sizes=(3, 3, 2), m=4) -> Net:
    rng = np.random.default_rng(seed)
    params = {"weights": [rng.standard_normal((o, i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])],
              "biases": [rng.standard_normal((o, 1)).astype(dtype) for o in sizes[1:]]}
    X = rng.standard_normal((sizes[0], m)).astype(dtype)
    Y = rng.random((sizes[-1], m)).astype(dtype)
    bugs = {k: (lambda k: lambda p, X, Y: nielsen_backward(p, X, Y, bug=k))(k)
            for k in ("scaledm", "transposed", "not_summed", "flat_bias")}
    return Net("nielsen", nielsen_loss, nielsen_grad, params, (X, Y), bugs)


# --------------------------------------------------------------------------------------------
# ReLU MLP with a summed squared error averaged over the batch.
# --------------------------------------------------------------------------------------------

def relu_loss(p, X, Y):
    h = np.maximum(0, X @ p["W1"] + p["b1"])
    pred = h @ p["W2"] + p["b2"]
    return np.sum((pred - Y) ** 2) / X.shape[0]


def relu_backward(p, X, Y, bug=None):
    N = X.shape[0]
    z = X @ p["W1"] + p["b1"]
    h = np.maximum(0, z)
    pred = h @ p["W2"] + p["b2"]
    dpred = (pred - Y) / N if bug == "scaled_half" else 2 * (pred - Y) / N   # d/dx x^2 = 2x
    dW2 = h.T @ dpred
    db2 = dpred.sum(axis=0)
    dh = dpred @ p["W2"].T
    dz = dh * (z > 0)
    if bug == "partial":   # loop over hidden units off by one: unit 0 never gets its delta
        dz = np.zeros_like(dh)
        for j in range(1, dh.shape[1]):
            dz[:, j] = dh[:, j] * (z[:, j] > 0)
    g = {"W1": X.T @ dz, "b1": dz.sum(axis=0), "W2": dW2, "b2": db2}
    if bug == "zero":
        g["W1"] = np.zeros_like(p["W1"])
    if bug == "shapes":
        g["b1"] = dz                                  # (N, H): not summed over the batch
        g["W2"] = dpred.T @ h                         # (C, H): transposed
        g["b2"] = dpred.sum(axis=0, keepdims=True)    # (1, C): keepdims
    return g


def relu_grad(p, X, Y):
    return relu_backward(p, X, Y)


def relu_mlp(dtype=np.float64, seed=4, N=6, D=4, H=5, C=2, kink=False) -> Net:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    params = {"W1": rng.standard_normal((D, H)), "b1": rng.uniform(0.2, 0.5, H),
              "W2": rng.standard_normal((H, C)), "b2": rng.standard_normal(C)}
    Y = rng.standard_normal((N, C))
    if kink:   # example 0 is all zeros and unit 1 has bias 0: its pre-activation is exactly 0
        X[0] = 0.0
        params["b1"][1] = 0.0
    params = {k: v.astype(dtype) for k, v in params.items()}
    bugs = {k: (lambda k: lambda p, X, Y: relu_backward(p, X, Y, bug=k))(k)
            for k in ("scaled_half", "partial", "zero", "shapes")}
    return Net("relu_mlp", relu_loss, relu_grad, params, (X.astype(dtype), Y.astype(dtype)), bugs)


# --------------------------------------------------------------------------------------------
# Batch normalisation (training mode) seen through the loss sum(G * out).
# --------------------------------------------------------------------------------------------

BN_EPS = 1e-5


def batchnorm_loss(p, G):
    x = p["x"]
    xhat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + BN_EPS)
    return np.sum(G * (p["gamma"] * xhat + p["beta"]))


def batchnorm_backward(p, G, bug=None):
    x, gamma = p["x"], p["gamma"]
    N = x.shape[0]
    mu = x.mean(axis=0)
    inv_std = 1.0 / np.sqrt(x.var(axis=0) + BN_EPS)
    xhat = (x - mu) * inv_std
    dout = G
    dgamma = np.sum(dout * xhat, axis=0)
    dbeta = np.sum(dout, axis=0)
    dxhat = dout * gamma
    if bug == "naive":      # as if the mean and variance did not depend on x
        dx = dxhat * inv_std
    else:
        dx = inv_std / N * (N * dxhat - dxhat.sum(axis=0) - xhat * np.sum(dxhat * xhat, axis=0))
    if bug == "scaledN":
        dx = dx * N
    g = {"x": dx, "gamma": dgamma, "beta": dbeta}
    if bug == "sign":
        g["gamma"] = -dgamma
    if bug == "zero":
        g["beta"] = np.zeros_like(dbeta)
    if bug == "not_summed":
        g["gamma"] = dout * xhat                      # (N, D)
    if bug == "keepdims":
        g["beta"] = np.sum(dout, axis=0, keepdims=True)   # (1, D)
    return g


def batchnorm_grad(p, G):
    return batchnorm_backward(p, G)


def batchnorm(dtype=np.float64, seed=5, N=5, D=3) -> Net:
    rng = np.random.default_rng(seed)
    params = {"x": (rng.standard_normal((N, D)) * 2 + 1).astype(dtype),
              "gamma": rng.uniform(0.5, 1.5, D).astype(dtype), "beta": rng.standard_normal(D).astype(dtype)}
    G = rng.standard_normal((N, D)).astype(dtype)
    bugs = {k: (lambda k: lambda p, G: batchnorm_backward(p, G, bug=k))(k)
            for k in ("naive", "scaledN", "sign", "zero", "not_summed", "keepdims")}
    return Net("batchnorm", batchnorm_loss, batchnorm_grad, params, (G,), bugs)


ALL_NETS = {"mazur": mazur, "logreg": logreg, "tanh_softmax": tanh_softmax, "nielsen": nielsen,
            "relu_mlp": relu_mlp, "batchnorm": batchnorm}


# The same batch normalisation as a CS231n-style layer: forward -> (out, cache), backward(dout, cache).

def batchnorm_forward(x, gamma, beta):
    mu = x.mean(axis=0)
    inv_std = 1.0 / np.sqrt(x.var(axis=0) + BN_EPS)
    xhat = (x - mu) * inv_std
    return gamma * xhat + beta, (xhat, gamma, inv_std)


def batchnorm_layer_backward(dout, cache, bug=None):
    xhat, gamma, inv_std = cache
    N = dout.shape[0]
    if bug == "mutates_cache":   # "centres" xhat in place inside the cache (a no-op in value, but a write)
        xhat -= xhat.mean(axis=0)
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    if bug == "mutates_dout":    # reuses dout's memory for dxhat
        dout *= gamma
        dxhat = dout
    else:
        dxhat = dout * gamma
    dx = inv_std / N * (N * dxhat - dxhat.sum(axis=0) - xhat * np.sum(dxhat * xhat, axis=0))
    return dx, dgamma, (None if bug == "stub" else dbeta)


# --------------------------------------------------------------------------------------------
# A small element beside large ones in one leaf: a step scaled to the leaf is far too long for it.
# --------------------------------------------------------------------------------------------

W_MIXED = np.array([1e-8, 1e4, 1e4, -1e4, 2e4, 1e4])


def mixed_loss(w):
    return np.sin(1e8 * w[0]) + 1e-8 * np.sum(w[1:] ** 2)


def mixed_grad(w):
    g = 2e-8 * w
    g[0] = 1e8 * np.cos(1e8 * w[0])
    return g


# --- a learner's loop with array operations inside -------------------------------------------

def loop_loss(w, x, repeats=6000):
    """A small loss slow under the exact references: JAX traces, and SymPy builds, every iteration."""
    s = 0.0
    for _ in range(repeats):
        s = s + np.sum(np.tanh(w * x)) * 1e-3
    return s


def loop_grad(w, x, repeats=6000, bug=False):
    return repeats * 1e-3 * (1 - np.tanh(w * x) ** 2) * (w if bug else x)   # bug: w where x belongs


LOOP_W, LOOP_X = np.array([0.3, -0.2, 0.1]), np.array([1.0, 2.0, 3.0])


# --- what a check found ------------------------------------------------------------------------

def assert_findings(report, findings: dict, label: str = "") -> None:
    """Exactly the leaves in `findings` fail, each with its diagnosis, a likely cause and the
    attributes given (`detail_has` / `cause_has`: text they contain; `factor`: to 1e-9)."""
    at = f"{label}: " if label else ""
    failed = {p.name for p in report.failures}
    assert failed == set(findings), f"{at}failed {sorted(failed)}, expected {sorted(findings)}\n{report}"
    for name, (diagnosis, attrs) in findings.items():
        p = report[name]
        assert p.diagnosis == diagnosis, f"{at}{name}: {p.diagnosis} != {diagnosis}\n{report}"
        assert p.cause, f"{at}{name}: every finding names a likely cause"
        for key, want in attrs.items():
            if key == "detail_has":
                assert want in p.detail, f"{at}{name}: {want!r} not in {p.detail!r}"
            elif key == "cause_has":
                assert want in p.cause, f"{at}{name}: {want!r} not in {p.cause!r}"
            elif key == "factor":
                assert p.factor == pytest.approx(want, rel=1e-9), f"{at}{name}: factor {p.factor} != {want}"
            else:
                assert getattr(p, key) == want, f"{at}{name}: {key} {getattr(p, key)!r} != {want!r}"
