"""Matt Mazur's "A Step by Step Backpropagation Example": a 2-2-2 network, written out by hand.

    net_h1 = w1*i1 + w2*i2 + b1     out_h1 = sigmoid(net_h1)
    net_h2 = w3*i1 + w4*i2 + b1     out_h2 = sigmoid(net_h2)
    net_o1 = w5*out_h1 + w6*out_h2 + b2     out_o1 = sigmoid(net_o1)
    net_o2 = w7*out_h1 + w8*out_h2 + b2     out_o2 = sigmoid(net_o2)
    E_total = 1/2 (target_o1 - out_o1)^2 + 1/2 (target_o2 - out_o2)^2

One bias per layer is shared by both of its neurons. The post never updates the biases,
so `train_step` leaves them alone, but `grad` still returns their true gradients.

Every number the post prints up to the first weight update follows from `forward`,
`backward` and `train_step`. The numbers it prints after training came from an earlier
version of its script that updated w5..w8 first and then computed the hidden deltas with
the already-updated weights: that is `stale_grad`, the buggy twin.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

INPUTS = np.array([0.05, 0.10])    # i1, i2
TARGETS = np.array([0.01, 0.99])   # target_o1, target_o2
LEARNING_RATE = 0.5
WEIGHTS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8")


def initial_params() -> dict:
    """The post's starting weights and biases."""
    return {"w1": 0.15, "w2": 0.20, "w3": 0.25, "w4": 0.30,
            "w5": 0.40, "w6": 0.45, "w7": 0.50, "w8": 0.55,
            "b1": 0.35, "b2": 0.60}


def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def forward(params: dict, inputs: np.ndarray, targets: np.ndarray) -> dict:
    """Every quantity of the forward pass, under the post's names."""
    p = params
    i1, i2 = inputs
    t1, t2 = targets
    net_h1 = p["w1"] * i1 + p["w2"] * i2 + p["b1"]
    net_h2 = p["w3"] * i1 + p["w4"] * i2 + p["b1"]
    out_h1, out_h2 = sigmoid(net_h1), sigmoid(net_h2)
    net_o1 = p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"]
    net_o2 = p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"]
    out_o1, out_o2 = sigmoid(net_o1), sigmoid(net_o2)
    E_o1 = 0.5 * (t1 - out_o1) ** 2
    E_o2 = 0.5 * (t2 - out_o2) ** 2
    return {"net_h1": net_h1, "net_h2": net_h2, "out_h1": out_h1, "out_h2": out_h2,
            "net_o1": net_o1, "net_o2": net_o2, "out_o1": out_o1, "out_o2": out_o2,
            "E_o1": E_o1, "E_o2": E_o2, "E_total": E_o1 + E_o2}


def loss(params: dict, inputs: np.ndarray, targets: np.ndarray):
    """E_total, the sum of the two squared errors."""
    return forward(params, inputs, targets)["E_total"]


def _output_deltas(f: dict, targets: np.ndarray) -> tuple:
    """dE/dnet for o1 and o2: -(target - out) * out (1 - out)."""
    t1, t2 = targets
    delta_o1 = -(t1 - f["out_o1"]) * f["out_o1"] * (1.0 - f["out_o1"])
    delta_o2 = -(t2 - f["out_o2"]) * f["out_o2"] * (1.0 - f["out_o2"])
    return delta_o1, delta_o2


def _hidden_grads(f: dict, delta_o1, delta_o2, inputs: np.ndarray, w_out: dict) -> dict:
    """Gradients of w1..w4 and b1, with the hidden deltas taken through the output weights `w_out`."""
    i1, i2 = inputs
    # dE/dout_h1 collects what both outputs send back through w5 and w7 (w6 and w8 for h2)
    dE_dout_h1 = delta_o1 * w_out["w5"] + delta_o2 * w_out["w7"]
    dE_dout_h2 = delta_o1 * w_out["w6"] + delta_o2 * w_out["w8"]
    delta_h1 = dE_dout_h1 * f["out_h1"] * (1.0 - f["out_h1"])   # times sigmoid'(net_h1)
    delta_h2 = dE_dout_h2 * f["out_h2"] * (1.0 - f["out_h2"])
    # net_h1 = w1*i1 + w2*i2 + b1, and b1 feeds both hidden neurons
    return {"w1": delta_h1 * i1, "w2": delta_h1 * i2, "w3": delta_h2 * i1, "w4": delta_h2 * i2,
            "b1": delta_h1 + delta_h2}


def _output_grads(f: dict, delta_o1, delta_o2) -> dict:
    """Gradients of w5..w8 and b2: delta of the output neuron times the hidden output it scales."""
    return {"w5": delta_o1 * f["out_h1"], "w6": delta_o1 * f["out_h2"],
            "w7": delta_o2 * f["out_h1"], "w8": delta_o2 * f["out_h2"],
            "b2": delta_o1 + delta_o2}


def grad(params: dict, inputs: np.ndarray, targets: np.ndarray) -> dict:
    """Correct backprop: every gradient with the original weights."""
    f = forward(params, inputs, targets)
    d1, d2 = _output_deltas(f, targets)
    g = {**_hidden_grads(f, d1, d2, inputs, params), **_output_grads(f, d1, d2)}
    return {k: g[k] for k in params}


def backward(params: dict, inputs: np.ndarray, targets: np.ndarray) -> dict:
    """The post's chain-rule factors for w5 and w1, one per line, under its names."""
    f = forward(params, inputs, targets)
    t1, t2 = targets
    q = {}
    q["dEtotal_dout_o1"] = -(t1 - f["out_o1"])
    q["dout_o1_dnet_o1"] = f["out_o1"] * (1.0 - f["out_o1"])
    q["dnet_o1_dw5"] = f["out_h1"]
    q["dEtotal_dw5"] = q["dEtotal_dout_o1"] * q["dout_o1_dnet_o1"] * q["dnet_o1_dw5"]
    q["dEo1_dnet_o1"] = q["dEtotal_dout_o1"] * q["dout_o1_dnet_o1"]
    q["dnet_o1_dout_h1"] = params["w5"]
    q["dEo1_dout_h1"] = q["dEo1_dnet_o1"] * q["dnet_o1_dout_h1"]
    dEo2_dnet_o2 = -(t2 - f["out_o2"]) * f["out_o2"] * (1.0 - f["out_o2"])
    q["dEo2_dout_h1"] = dEo2_dnet_o2 * params["w7"]
    q["dEtotal_dout_h1"] = q["dEo1_dout_h1"] + q["dEo2_dout_h1"]
    q["dout_h1_dnet_h1"] = f["out_h1"] * (1.0 - f["out_h1"])
    q["dnet_h1_dw1"] = inputs[0]
    q["dEtotal_dw1"] = q["dEtotal_dout_h1"] * q["dout_h1_dnet_h1"] * q["dnet_h1_dw1"]
    return q


def stale_grad(params: dict, inputs: np.ndarray, targets: np.ndarray, lr: float = LEARNING_RATE) -> dict:
    """BUGGY TWIN: the hidden deltas are sent back through w5..w8 *after* their update.

    This is the effective gradient the post's early script used: right for w5..w8 and b2,
    wrong for w1..w4 and b1 (everything downstream of the hidden deltas).
    """
    f = forward(params, inputs, targets)
    d1, d2 = _output_deltas(f, targets)
    out = _output_grads(f, d1, d2)
    updated = {k: params[k] - lr * out[k] for k in ("w5", "w6", "w7", "w8")}
    g = {**_hidden_grads(f, d1, d2, inputs, updated), **out}
    return {k: g[k] for k in params}


def train_step(params: dict, inputs: np.ndarray, targets: np.ndarray, lr: float = LEARNING_RATE,
               grad_fn: Callable = grad) -> dict:
    """One gradient-descent step on w1..w8; the biases stay as they are, as in the post."""
    g = grad_fn(params, inputs, targets)
    return {k: v - lr * g[k] if k in WEIGHTS else v for k, v in params.items()}


def train(params: dict, steps: int, inputs: np.ndarray = INPUTS, targets: np.ndarray = TARGETS,
          lr: float = LEARNING_RATE, grad_fn: Callable = grad) -> dict:
    """`steps` updates of `train_step` on the post's single example."""
    for _ in range(steps):
        params = train_step(params, inputs, targets, lr, grad_fn)
    return params


def cases() -> list[dict]:
    """Mazur's network with correct backprop, and with the stale-weight hidden deltas."""
    common = {"kind": "gradient", "loss": loss, "args": (INPUTS, TARGETS)}
    return [
        {
            **common,
            "name": "mazur",
            "grad": grad,
            "params": initial_params(),
            "expect": "pass",
            "description": "Mazur's step-by-step 2-2-2 network (weights w1..w8, shared biases b1, b2).",
        },
        {
            **common,
            "name": "mazur-stale",
            "grad": stale_grad,
            "params": initial_params(),
            "expect": {"diagnosis": "wrong", "leaves": ["w1", "w2", "w3", "w4", "b1"]},
            "description": "Mazur's network with the hidden deltas computed after w5..w8 were updated "
                           "(the bug behind the post's trained numbers).",
        },
    ]
