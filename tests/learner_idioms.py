"""A corpus of losses and hand-written gradients written the way tutorials and courses write them.

Each `Case` is one small problem in one learner's style (Mazur's neuron classes, CS231n's
`loss, grads = net.loss(X, y)`, Coursera's unrolled `nnCostFunction`, deeplearning.ai's
`parameters["W1"]`, Nielsen's lists of weights, Karpathy's min-char-rnn, CS224n's word2vec,
"Deep Learning from Scratch"'s layer classes, Trask's `nonlin(x, deriv=True)`, ...): a loss, a
correct gradient, and the same gradient with one planted bug of a kind learners make. `expect`
names every leaf the bug must fail and with which diagnosis; `references` the references that
must run (all three unless a one-line `reason` says why one cannot).

The corpus is a plain module (not collected by pytest): `tests/test_learner_idioms.py` checks
it and `benchmarks/idioms.py` times it. `CASES` lists every case; `check_kwargs(case, buggy)`
gives the keyword arguments of `gradcheck.check`.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

ALL_REFERENCES = frozenset({"numeric", "jax", "sympy"})


@dataclass(frozen=True)
class Case:
    """One learner-style problem: a correct gradient, a planted bug and what the check must say."""

    name: str
    style: str                       # whose code it imitates
    bug: str                         # the planted bug, in words
    params: Any
    args: tuple = ()
    loss: Callable | None = None
    grad: Callable | None = None     # the correct gradient (or value_and_grad, see below)
    buggy: Callable | None = None    # the gradient with the planted bug
    value_and_grad: bool = False     # grad/buggy are `f(params, *args) -> (loss, grads)`
    buggy_loss: Callable | None = None   # when the bug lives in the loss the gradient was derived for
    expect: dict = field(default_factory=dict)   # leaf -> (diagnosis, {attribute: value})
    references: frozenset = ALL_REFERENCES
    reason: str = ""                 # why a reference cannot run, when `references` lacks one


def check_kwargs(case: Case, buggy: bool = False) -> dict:
    """Keyword arguments of gradcheck.check for the correct (or the buggy) version of `case`."""
    fn = case.buggy if buggy else case.grad
    kw: dict = {"params": copy.deepcopy(case.params), "args": copy.deepcopy(case.args)}
    if case.value_and_grad:
        kw["value_and_grad"] = fn
    else:
        kw["loss"] = case.buggy_loss if (buggy and case.buggy_loss) else case.loss
        kw["grad"] = fn
    return kw


CASES: list[Case] = []


def add(**fields: Any) -> None:
    CASES.append(Case(**fields))


def every(names, diagnosis: str, **attrs: Any) -> dict:
    """The same expected finding for each leaf in `names`."""
    return {n: (diagnosis, attrs) for n in names}


def flip(fn: Callable) -> Callable:
    """`fn` called with bug=True (the planted bug switched on)."""
    return lambda *a: fn(*a, bug=True)


# ================================================================================================
# Matt Mazur, "A Step by Step Backpropagation Example": neuron classes, lists of float weights,
# math.exp, loops over neurons. E = sum_o 1/2 (target_o - out_o)^2, out = sigmoid(sum w_i x_i + b).
# ================================================================================================

class Neuron:
    def __init__(self, bias):
        self.bias = bias
        self.weights = []

    def calculate_output(self, inputs):
        self.inputs = inputs
        self.output = self.squash(self.calculate_total_net_input())
        return self.output

    def calculate_total_net_input(self):
        total = 0
        for i in range(len(self.inputs)):
            total += self.inputs[i] * self.weights[i]
        return total + self.bias

    def squash(self, total_net_input):
        return 1 / (1 + math.exp(-total_net_input))

    def calculate_error(self, target_output):
        return 0.5 * (target_output - self.output) ** 2

    # dE/dnet = dE/dout * dout/dnet = -(target - out) * out (1 - out)
    def calculate_pd_error_wrt_total_net_input(self, target_output):
        return self.calculate_pd_error_wrt_output(target_output) * self.calculate_pd_total_net_input_wrt_input()

    def calculate_pd_error_wrt_output(self, target_output):
        return -(target_output - self.output)

    def calculate_pd_total_net_input_wrt_input(self):
        return self.output * (1 - self.output)


class NeuronLayer:
    def __init__(self, num_neurons, bias):
        self.bias = bias
        self.neurons = [Neuron(self.bias) for _ in range(num_neurons)]

    def feed_forward(self, inputs):
        return [neuron.calculate_output(inputs) for neuron in self.neurons]


class NeuralNetwork:
    def __init__(self, num_inputs, num_hidden, num_outputs, hidden_layer_weights, hidden_layer_bias,
                 output_layer_weights, output_layer_bias):
        self.num_inputs = num_inputs
        self.hidden_layer = NeuronLayer(num_hidden, hidden_layer_bias)
        self.output_layer = NeuronLayer(num_outputs, output_layer_bias)
        self.init_weights(self.hidden_layer, hidden_layer_weights, num_inputs)
        self.init_weights(self.output_layer, output_layer_weights, num_hidden)

    def init_weights(self, layer, weights, fan_in):
        weight_num = 0
        for h in range(len(layer.neurons)):
            layer.neurons[h].weights = []
            for i in range(fan_in):
                layer.neurons[h].weights.append(weights[weight_num])
                weight_num += 1

    def feed_forward(self, inputs):
        hidden_layer_outputs = self.hidden_layer.feed_forward(inputs)
        return self.output_layer.feed_forward(hidden_layer_outputs)

    def calculate_total_error(self, training_sets):
        total_error = 0
        for t in range(len(training_sets)):
            training_inputs, training_outputs = training_sets[t]
            self.feed_forward(training_inputs)
            for o in range(len(training_outputs)):
                total_error += self.output_layer.neurons[o].calculate_error(training_outputs[o])
        return total_error

    def gradients(self, training_inputs, training_outputs, bug=None):
        """dE/dw for every weight (lists, in init order) and dE/db per layer."""
        self.feed_forward(training_inputs)
        out, hid = self.output_layer.neurons, self.hidden_layer.neurons
        pd_out = [0] * len(out)
        for o in range(len(out)):
            pd_out[o] = out[o].calculate_pd_error_wrt_total_net_input(training_outputs[o])
            if bug == "sign":   # (target - output) instead of -(target - output)
                pd_out[o] = -pd_out[o]
        pd_hid = [0] * len(hid)
        for h in range(len(hid)):
            d_error_wrt_hidden_output = 0
            for o in range(len(out)):
                d_error_wrt_hidden_output += pd_out[o] * out[o].weights[h]
            pd_hid[h] = d_error_wrt_hidden_output * hid[h].calculate_pd_total_net_input_wrt_input()
        g_out = [pd_out[o] * out[o].inputs[w] for o in range(len(out)) for w in range(len(out[o].weights))]
        g_hid = [pd_hid[h] * hid[h].inputs[w] for h in range(len(hid)) for w in range(len(hid[h].weights))]
        return g_hid, sum(pd_hid), g_out, sum(pd_out)


MAZUR_SET = [[[0.05, 0.1], [0.01, 0.99]]]
MAZUR_WEIGHTS = {"hidden": [0.15, 0.2, 0.25, 0.3], "hidden_bias": 0.35,
                 "output": [0.4, 0.45, 0.5, 0.55], "output_bias": 0.6}


def mazur_loss(p, training_sets):
    nn = NeuralNetwork(2, 2, 2, p["hidden"], p["hidden_bias"], p["output"], p["output_bias"])
    return nn.calculate_total_error(training_sets)


def mazur_grad(p, training_sets, bug=None):
    nn = NeuralNetwork(2, 2, 2, p["hidden"], p["hidden_bias"], p["output"], p["output_bias"])
    g_hid, g_hb, g_out, g_ob = nn.gradients(*training_sets[0], bug=bug)
    return {"hidden": g_hid, "hidden_bias": g_hb, "output": g_out, "output_bias": g_ob}


MAZUR_LEAVES = [f"hidden[{i}]" for i in range(4)] + ["hidden_bias"] + [f"output[{i}]" for i in range(4)] + ["output_bias"]

add(name="mazur_classes_sign", style="Mazur: Neuron/NeuronLayer classes, lists of float weights, math.exp",
    bug="dE/dout as (target - output): the sign of every delta flipped",
    params=MAZUR_WEIGHTS, args=(MAZUR_SET,), loss=mazur_loss, grad=mazur_grad,
    buggy=lambda p, s: mazur_grad(p, s, bug="sign"),
    expect=every(MAZUR_LEAVES, "sign_flipped"))


# The network object lives in args; the loss writes the weights into its neurons, then asks it for
# the error (how a learner bolts a checker onto the class they already have).

def mazur_set_weights(nn, p):
    nn.hidden_layer.bias = p["hidden_bias"]
    nn.output_layer.bias = p["output_bias"]
    for layer, ws in ((nn.hidden_layer, p["hidden"]), (nn.output_layer, p["output"])):
        for h, neuron in enumerate(layer.neurons):
            neuron.bias = layer.bias
            neuron.weights = ws[2 * h:2 * h + 2]


def mazur_obj_loss(p, nn, training_sets):
    mazur_set_weights(nn, p)
    return nn.calculate_total_error(training_sets)


def mazur_obj_grad(p, nn, training_sets, bug=False):
    mazur_set_weights(nn, p)
    g_hid, g_hb, g_out, g_ob = nn.gradients(*training_sets[0])
    if bug:   # the post's old script: hidden deltas through the output weights already updated (lr 0.5)
        updated = [w - 0.5 * g for w, g in zip(p["output"], g_out)]
        mazur_set_weights(nn, dict(p, output=updated))
        g_hid, g_hb, _, _ = nn.gradients(*training_sets[0])
    return {"hidden": g_hid, "hidden_bias": g_hb, "output": g_out, "output_bias": g_ob}


MAZUR_NET = NeuralNetwork(2, 2, 2, [0.0] * 4, 0.0, [0.0] * 4, 0.0)

add(name="mazur_object_in_args_stale", style="Mazur: the network object passed in args, weights set by the loss",
    bug="hidden deltas computed with the already-updated output weights (the post's pre-2015 script)",
    params=MAZUR_WEIGHTS, args=(MAZUR_NET, MAZUR_SET), loss=mazur_obj_loss, grad=mazur_obj_grad,
    buggy=flip(mazur_obj_grad),
    expect=every([f"hidden[{i}]" for i in range(4)] + ["hidden_bias"], "wrong"))


# The same network written out with scalars, as in the post's text (w1..w8, one bias per layer).

def mazur_scalar_forward(p, i1, i2):
    out_h1 = 1 / (1 + math.exp(-(p["w1"] * i1 + p["w2"] * i2 + p["b1"])))
    out_h2 = 1 / (1 + math.exp(-(p["w3"] * i1 + p["w4"] * i2 + p["b1"])))
    out_o1 = 1 / (1 + math.exp(-(p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"])))
    out_o2 = 1 / (1 + math.exp(-(p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"])))
    return out_h1, out_h2, out_o1, out_o2


def mazur_scalar_loss(p, i1, i2, t1, t2):
    _, _, out_o1, out_o2 = mazur_scalar_forward(p, i1, i2)
    return 0.5 * (t1 - out_o1) ** 2 + 0.5 * (t2 - out_o2) ** 2


def mazur_scalar_grad(p, i1, i2, t1, t2, bug=False):
    out_h1, out_h2, out_o1, out_o2 = mazur_scalar_forward(p, i1, i2)
    d_o1 = -(t1 - out_o1) * out_o1 * (1 - out_o1)     # dE/dnet_o1
    d_o2 = -(t2 - out_o2) * out_o2 * (1 - out_o2)
    d_h1 = (d_o1 * p["w5"] + d_o2 * p["w7"]) * out_h1 * (1 - out_h1)
    d_h2 = (d_o1 * p["w6"] + d_o2 * p["w8"]) * out_h2 * (1 - out_h2)
    if bug:   # sigmoid'(net_h) forgotten: dE/dout_h used as dE/dnet_h
        d_h1 = d_o1 * p["w5"] + d_o2 * p["w7"]
        d_h2 = d_o1 * p["w6"] + d_o2 * p["w8"]
    return {"w1": d_h1 * i1, "w2": d_h1 * i2, "w3": d_h2 * i1, "w4": d_h2 * i2,
            "w5": d_o1 * out_h1, "w6": d_o1 * out_h2, "w7": d_o2 * out_h1, "w8": d_o2 * out_h2,
            "b1": d_h1 + d_h2, "b2": d_o1 + d_o2}


add(name="mazur_scalars_no_hidden_derivative", style="Mazur: scalars w1..w8 in a dict, math.exp, Python floats",
    bug="the hidden layer's sigmoid derivative out_h (1 - out_h) left out",
    params={"w1": 0.15, "w2": 0.2, "w3": 0.25, "w4": 0.3, "w5": 0.4, "w6": 0.45, "w7": 0.5, "w8": 0.55,
            "b1": 0.35, "b2": 0.6},
    args=(0.05, 0.1, 0.01, 0.99), loss=mazur_scalar_loss, grad=mazur_scalar_grad, buggy=flip(mazur_scalar_grad),
    # each hidden gradient is 1/(out_h (1 - out_h)) ~ 4.2 times too large: a non-simple scalar factor
    expect=every(["w1", "w2", "w3", "w4", "b1"], "wrong"))


# ================================================================================================
# A single sigmoid neuron on Python floats: a = sigmoid(w x + b), E = 1/2 (a - y)^2, float() return.
# ================================================================================================

def neuron_loss(p, x, y):
    a = 1.0 / (1.0 + math.exp(-(p["w"] * x + p["b"])))
    return float(0.5 * (a - y) ** 2)


def neuron_grad(p, x, y, bug=False):
    a = 1.0 / (1.0 + math.exp(-(p["w"] * x + p["b"])))
    delta = (a - y) * a * (1 - a)                 # dE/dz
    if bug:                                       # the activation derivative a (1 - a) forgotten
        delta = a - y
    return {"w": delta * x, "b": delta}


add(name="neuron_math_float", style="single neuron on Python floats, math.exp, float(...) return",
    bug="missing activation derivative a (1 - a)",
    params={"w": 0.6, "b": -0.4}, args=(1.5, 1.0), loss=neuron_loss, grad=neuron_grad, buggy=flip(neuron_grad),
    expect=every(["w", "b"], "wrong"))


# ================================================================================================
# Karpathy, "Hacker's guide to Neural Networks": Unit objects with .value/.grad, gate classes,
# f = sigmoid(a x + b y + c).
# ================================================================================================

class Unit:
    def __init__(self, value, grad):
        self.value = value
        self.grad = grad


class multiplyGate:
    def forward(self, u0, u1):
        self.u0, self.u1 = u0, u1
        self.utop = Unit(u0.value * u1.value, 0.0)
        return self.utop

    def backward(self, bug=False):
        # d(u0 u1)/du0 = u1, d/du1 = u0
        if bug:   # each input takes its own value as its local derivative
            self.u0.grad += self.u0.value * self.utop.grad
            self.u1.grad += self.u1.value * self.utop.grad
        else:
            self.u0.grad += self.u1.value * self.utop.grad
            self.u1.grad += self.u0.value * self.utop.grad


class addGate:
    def forward(self, u0, u1):
        self.u0, self.u1 = u0, u1
        self.utop = Unit(u0.value + u1.value, 0.0)
        return self.utop

    def backward(self, bug=False):
        self.u0.grad += 1 * self.utop.grad
        self.u1.grad += 1 * self.utop.grad


class sigmoidGate:
    def sig(self, x):
        return 1 / (1 + math.exp(-x))

    def forward(self, u0):
        self.u0 = u0
        self.utop = Unit(self.sig(self.u0.value), 0.0)
        return self.utop

    def backward(self, bug=False):
        s = self.sig(self.u0.value)
        self.u0.grad += (s * (1 - s)) * self.utop.grad


def karpathy_circuit(p, x, y):
    units = {k: Unit(p[k], 0.0) for k in ("a", "b", "c")}
    ux, uy = Unit(x, 0.0), Unit(y, 0.0)
    gates = [multiplyGate(), multiplyGate(), addGate(), addGate(), sigmoidGate()]
    ax = gates[0].forward(units["a"], ux)
    by = gates[1].forward(units["b"], uy)
    axpby = gates[2].forward(ax, by)
    axpbypc = gates[3].forward(axpby, units["c"])
    s = gates[4].forward(axpbypc)
    return units, gates, s


def karpathy_loss(p, x, y):
    return karpathy_circuit(p, x, y)[2].value     # the neuron's output itself is the "loss"


def karpathy_grad(p, x, y, bug=False):
    units, gates, s = karpathy_circuit(p, x, y)
    s.grad = 1.0
    for gate in reversed(gates):
        gate.backward(bug=bug)
    return {k: u.grad for k, u in units.items()}


add(name="karpathy_gates_units", style="Karpathy's hacker's guide: Unit and gate classes, Python floats",
    bug="multiply gate passes each input its own value instead of the other input's",
    params={"a": 1.0, "b": 2.0, "c": -3.0}, args=(-1.0, 3.0), loss=karpathy_loss, grad=karpathy_grad,
    buggy=flip(karpathy_grad),
    # da = s' * x becomes s' * a (a = 1, x = -1): exactly the opposite sign; db = s' y becomes s' b
    expect={"a": ("sign_flipped", {}), "b": ("wrong", {})})


# ================================================================================================
# Linear regression on lists of lists with element loops; weights a list of floats.
# E = 1/N sum_i (sum_j w_j x_ij + b - y_i)^2
# ================================================================================================

XS = [[1.0, 2.0, -1.0], [0.5, -1.5, 2.0], [-2.0, 0.3, 0.7], [1.2, 1.1, -0.4], [0.1, -0.6, 1.9]]
YS = [1.5, -0.5, 0.8, 2.2, -1.1]


def linreg_loop_loss(p, X, y):
    n = len(X)
    total = 0.0
    for i in range(n):
        pred = p["b"]
        for j in range(len(p["w"])):
            pred += p["w"][j] * X[i][j]
        total += (pred - y[i]) ** 2
    return total / n


def linreg_loop_grad(p, X, y, bug=False):
    n = len(X)
    dw = [0.0] * len(p["w"])
    db = 0.0
    for i in range(n):
        pred = p["b"]
        for j in range(len(p["w"])):
            pred += p["w"][j] * X[i][j]
        err = 2 * (pred - y[i]) / n             # d/dpred of (pred - y)^2 / n
        if bug:                                  # "the 2 cancels": it does not, there is no 1/2
            err = (pred - y[i]) / n
        for j in range(len(p["w"])):
            dw[j] += err * X[i][j]
        db += err
    return {"w": dw, "b": db}


add(name="linreg_loops_lists", style="element loops over lists of lists, weights a list of floats",
    bug="missing factor 2 of the square's derivative",
    params={"w": [0.3, -0.2, 0.5], "b": 0.1}, args=(XS, YS), loss=linreg_loop_loss, grad=linreg_loop_grad,
    buggy=flip(linreg_loop_grad),
    expect=every(["w[0]", "w[1]", "w[2]", "b"], "scaled", factor=0.5))


# ================================================================================================
# Coursera ML ex1 (ported): h = theta0 + theta1 x, J = 1/(2m) sum (h - y)^2.
# ================================================================================================

EX1_X = np.array([6.1101, 5.5277, 8.5186, 7.0032, 5.8598, 8.3829])
EX1_Y = np.array([17.592, 9.1302, 13.662, 11.854, 6.8233, 11.886])


def ex1_cost(p, x, y):
    m = len(y)
    h = p["theta0"] + p["theta1"] * x
    return float(1 / (2 * m) * np.sum((h - y) ** 2))


def ex1_grad(p, x, y, bug=False):
    m = len(y)
    h = p["theta0"] + p["theta1"] * x
    temp0 = 1 / m * np.sum(h - y)            # dJ/dtheta0
    temp1 = 1 / m * np.sum((h - y) * x)      # dJ/dtheta1
    if bug:                                  # returned in the wrong order
        return {"theta0": temp1, "theta1": temp0}
    return {"theta0": temp0, "theta1": temp1}


add(name="ex1_scalars_swapped", style="Coursera ex1 port: theta0/theta1 floats, float(...) return",
    bug="theta0's and theta1's gradients returned under each other's names",
    params={"theta0": -1.0, "theta1": 2.0}, args=(EX1_X, EX1_Y), loss=ex1_cost, grad=ex1_grad, buggy=flip(ex1_grad),
    expect={"theta0": ("swapped", {"swapped_with": "theta1"}), "theta1": ("swapped", {"swapped_with": "theta0"})})


def ex1_multi_cost(theta, x, y):
    m = y.size
    X = np.c_[np.ones(m), x]                 # add the intercept column
    return 1 / (2 * m) * np.sum(np.square(X.dot(theta) - y))


def ex1_multi_grad(theta, x, y, bug=False):
    m = y.size
    X = np.c_[np.ones(m), x]
    g = X.T.dot(X.dot(theta) - y)
    return g if bug else g / m               # bug: the 1/m of the mean forgotten


add(name="ex1_vectorized_c_", style="Coursera ex1 port, vectorised: np.c_ intercept column, X.dot(theta)",
    bug="missing 1/m",
    params=np.array([-1.0, 2.0, 0.5]), args=(np.c_[EX1_X, EX1_X ** 0.5], EX1_Y), loss=ex1_multi_cost,
    grad=ex1_multi_grad, buggy=flip(ex1_multi_grad),
    expect={"params": ("scaled", {"factor": 6.0})})


# ================================================================================================
# Coursera ML ex2 (ported): logistic regression written with a loop over examples and math.log.
# J = -1/m sum_i [y_i log h_i + (1 - y_i) log(1 - h_i)],  h_i = sigmoid(theta . x_i)
# ================================================================================================

EX2_X = np.array([[1.0, 0.3, -1.2], [1.0, -0.7, 0.4], [1.0, 1.5, 0.9], [1.0, -0.2, -0.8], [1.0, 0.8, 1.1],
                  [1.0, -1.4, 0.2]])
EX2_Y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])


def ex2_loop_cost(theta, X, y):
    m = len(y)
    J = 0
    for i in range(m):
        h = 1 / (1 + math.exp(-np.dot(theta, X[i])))
        J += -y[i] * math.log(h) - (1 - y[i]) * math.log(1 - h)
    return J / m


def ex2_loop_grad(theta, X, y, bug=False):
    m = len(y)
    grad = np.zeros(len(theta))
    for i in range(m):
        h = 1 / (1 + math.exp(-np.dot(theta, X[i])))
        for j in range(len(theta)):
            grad[j] += (h - y[i]) * X[i, j]
    return grad if bug else grad / m         # bug: the 1/m forgotten


add(name="ex2_loop_math_log", style="Coursera ex2 port with a loop over examples, math.exp and math.log",
    bug="missing 1/m",
    params=np.array([0.1, -0.5, 0.8]), args=(EX2_X, EX2_Y), loss=ex2_loop_cost, grad=ex2_loop_grad,
    buggy=flip(ex2_loop_grad), expect={"params": ("scaled", {"factor": 6.0})})


# costFunctionReg: (J, grad) together; theta[0] (the intercept) is not regularised.
# J = -1/m sum [y log h + (1 - y) log(1 - h)] + lambda/(2m) sum_{j>=1} theta_j^2

def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def costFunctionReg(theta, X, y, lambda_, bug=False):
    m = y.size
    h = sigmoid(X.dot(theta))
    J = (-1 / m) * (y.dot(np.log(h)) + (1 - y).dot(np.log(1 - h))) + (lambda_ / (2 * m)) * np.sum(np.square(theta[1:]))
    grad = (1 / m) * X.T.dot(h - y)
    if bug:   # the intercept regularised too
        grad = grad + (lambda_ / m) * theta
    else:
        grad[1:] = grad[1:] + (lambda_ / m) * theta[1:]
    return J, grad


add(name="ex2_costFunctionReg_intercept", style="Coursera ex2: costFunctionReg returning (J, grad), theta[1:] regularised",
    bug="the intercept theta[0] regularised too",
    params=np.array([0.4, -0.5, 0.8]), args=(EX2_X, EX2_Y, 1.0), grad=costFunctionReg,
    buggy=flip(costFunctionReg), value_and_grad=True,
    expect={"params": ("partial", {"wrong_indices": ((0,),)})})


# ================================================================================================
# Coursera ML ex4 (ported): nnCostFunction on unrolled parameters, one-hot by np.eye, sigmoid
# layers with a bias column, cross-entropy + lambda/(2m) * (squares of non-bias weights).
# ================================================================================================

def sigmoidGradient(z):
    g = sigmoid(z)
    return g * (1 - g)


def nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_, bug=None):
    Theta1 = np.reshape(nn_params[:hidden_layer_size * (input_layer_size + 1)],
                        (hidden_layer_size, (input_layer_size + 1)))
    Theta2 = np.reshape(nn_params[(hidden_layer_size * (input_layer_size + 1)):],
                        (num_labels, (hidden_layer_size + 1)))
    m = y.size
    a1 = np.concatenate([np.ones((m, 1)), X], axis=1)
    z2 = a1.dot(Theta1.T)
    a2 = np.concatenate([np.ones((m, 1)), sigmoid(z2)], axis=1)
    a3 = sigmoid(a2.dot(Theta2.T))
    y_matrix = np.eye(num_labels)[y]
    temp1, temp2 = Theta1, Theta2
    J = (-1 / m) * np.sum((np.log(a3) * y_matrix) + np.log(1 - a3) * (1 - y_matrix))
    reg_term = (lambda_ / (2 * m)) * (np.sum(np.square(temp1[:, 1:])) + np.sum(np.square(temp2[:, 1:])))
    J = J + reg_term
    # backpropagation
    delta_3 = a3 - y_matrix
    delta_2 = delta_3.dot(Theta2)[:, 1:] * sigmoidGradient(z2)
    if bug == "no_sigmoid_gradient":
        delta_2 = delta_3.dot(Theta2)[:, 1:]
    Delta1 = delta_2.T.dot(a1)
    Delta2 = delta_3.T.dot(a2)
    Theta1_grad = (1 / m) * Delta1
    Theta2_grad = (1 / m) * Delta2
    if bug == "reg_bias":   # regularises the bias column as well
        Theta1_grad = Theta1_grad + (lambda_ / m) * Theta1
        Theta2_grad = Theta2_grad + (lambda_ / m) * Theta2
    else:
        Theta1_grad[:, 1:] = Theta1_grad[:, 1:] + (lambda_ / m) * Theta1[:, 1:]
        Theta2_grad[:, 1:] = Theta2_grad[:, 1:] + (lambda_ / m) * Theta2[:, 1:]
    grad = np.concatenate([Theta1_grad.ravel(), Theta2_grad.ravel()])
    return J, grad


def _ex4_data(seed=7, input_layer_size=2, hidden_layer_size=3, num_labels=3, m=5):
    rng = np.random.default_rng(seed)
    n = hidden_layer_size * (input_layer_size + 1) + num_labels * (hidden_layer_size + 1)
    nn_params = rng.uniform(-0.8, 0.8, n)
    X = rng.standard_normal((m, input_layer_size))
    y = np.array([0, 2, 1, 2, 0])
    return nn_params, (input_layer_size, hidden_layer_size, num_labels, X, y, 1.0)


EX4_PARAMS, EX4_ARGS = _ex4_data()
# the flat indices of the bias columns: column 0 of Theta1 (3 x 3) and of Theta2 (3 x 4), offset 9
EX4_BIAS = tuple((i,) for i in [0, 3, 6] + [9, 13, 17])

add(name="ex4_nnCostFunction_no_sigmoid_gradient",
    style="Coursera ex4 port: nnCostFunction(nn_params, sizes..., X, y, lambda_) with reshape and np.eye(C)[y]",
    bug="sigmoidGradient(z2) left out of delta_2",
    params=EX4_PARAMS, args=EX4_ARGS, value_and_grad=True, grad=nnCostFunction,
    buggy=lambda *a: nnCostFunction(*a, bug="no_sigmoid_gradient"),
    # Theta1's 9 entries (of 21) are wrong, Theta2's right: a minority of the unrolled vector
    expect={"params": ("partial", {"wrong_indices": tuple((i,) for i in range(9))})})

add(name="ex4_nnCostFunction_reg_bias",
    style="Coursera ex4 port: nnCostFunction with unrolled parameters",
    bug="the bias columns regularised too",
    params=EX4_PARAMS, args=EX4_ARGS, value_and_grad=True, grad=nnCostFunction,
    buggy=lambda *a: nnCostFunction(*a, bug="reg_bias"),
    expect={"params": ("partial", {"wrong_indices": EX4_BIAS})})


# ================================================================================================
# CS231n assignment 1: TwoLayerNet.loss(X, y, reg) returning (loss, grads), self.params a dict,
# ReLU hidden layer, softmax cross-entropy, L2 0.5 * reg * sum(W^2) is written reg * sum(W * W).
# ================================================================================================

class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, std=1e-1, seed=0):
        rs = np.random.RandomState(seed)
        self.params = {}
        self.params["W1"] = std * rs.randn(input_size, hidden_size)
        self.params["b1"] = np.zeros(hidden_size)
        self.params["W2"] = std * rs.randn(hidden_size, output_size)
        self.params["b2"] = np.zeros(output_size)

    def loss(self, X, y=None, reg=0.0, bug=None):
        W1, b1 = self.params["W1"], self.params["b1"]
        W2, b2 = self.params["W2"], self.params["b2"]
        N, D = X.shape
        hidden_layer = np.maximum(0, X.dot(W1) + b1)
        scores = hidden_layer.dot(W2) + b2
        if y is None:
            return scores
        scores -= np.max(scores, axis=1, keepdims=True)
        exp_scores = np.exp(scores)
        probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
        correct_logprobs = -np.log(probs[range(N), y])
        data_loss = np.sum(correct_logprobs) / N
        reg_loss = reg * np.sum(W1 * W1) + reg * np.sum(W2 * W2)
        loss = data_loss + reg_loss
        grads = {}
        dscores = probs
        dscores[range(N), y] -= 1
        dscores /= N
        grads["W2"] = np.dot(hidden_layer.T, dscores)
        grads["b2"] = np.sum(dscores, axis=0)
        dhidden = np.dot(dscores, W2.T)
        if bug == "mask_without_bias":   # ReLU's mask from X @ W1, the bias forgotten
            dhidden[X.dot(W1) <= 0] = 0
        else:
            dhidden[hidden_layer <= 0] = 0
        grads["W1"] = np.dot(X.T, dhidden)
        grads["b1"] = np.sum(dhidden, axis=0)
        grads["W1"] += 2 * reg * W1
        if bug != "no_reg_W2":
            grads["W2"] += 2 * reg * W2
        return loss, grads


def _cs231n_net():
    net = TwoLayerNet(2, 3, 3, std=0.5, seed=3)
    rs = np.random.RandomState(1)
    X = 2 * rs.randn(4, 2)
    y = np.array([0, 1, 2, 1])
    return net, X, y


CS231N_NET, CS231N_X, CS231N_Y = _cs231n_net()
# Biases such that exactly one hidden pre-activation (example 1, unit 1) changes sign without b1.
CS231N_PARAMS = dict(CS231N_NET.params, b1=np.array([0.3, -0.2, 0.25]), b2=np.array([0.1, 0.0, -0.1]))


def cs231n_net_loss(params, net, X, y, reg, bug=None):
    net.params = params               # the adapter: the check's parameters become the net's
    return net.loss(X, y, reg=reg, bug=bug)


add(name="cs231n_twolayer_relu_mask", style="CS231n: loss, grads = net.loss(X, y, reg) adapted as value_and_grad",
    bug="ReLU's mask taken from X @ W1 instead of X @ W1 + b1",
    params=CS231N_PARAMS, args=(CS231N_NET, CS231N_X, CS231N_Y, 0.05), value_and_grad=True,
    grad=cs231n_net_loss, buggy=lambda *a: cs231n_net_loss(*a, bug="mask_without_bias"),
    expect={"W1": ("partial", {}), "b1": ("partial", {})})

add(name="cs231n_twolayer_no_reg", style="CS231n: TwoLayerNet.loss returning (loss, grads)",
    bug="the L2 term's gradient 2 * reg * W2 forgotten",
    params=CS231N_PARAMS, args=(CS231N_NET, CS231N_X, CS231N_Y, 0.05), value_and_grad=True,
    grad=cs231n_net_loss, buggy=lambda *a: cs231n_net_loss(*a, bug="no_reg_W2"),
    expect={"W2": ("regularisation", {"factor": -0.1})})


# CS231n softmax_loss_naive: loops over examples and classes. L = 1/N sum_i -log softmax(x_i W)_{y_i} + reg sum W^2

def softmax_loss_naive(W, X, y, reg, bug=False):
    loss = 0.0
    dW = np.zeros_like(W)
    num_train, num_classes = X.shape[0], W.shape[1]
    for i in range(num_train):
        scores = X[i].dot(W)
        scores -= np.max(scores)
        p = np.exp(scores) / np.sum(np.exp(scores))
        loss += -np.log(p[y[i]])
        for j in range(num_classes):
            dW[:, j] += (p[j] - (j == y[i])) * X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += reg * W if bug else 2 * reg * W    # bug: d/dW of reg * sum(W^2) taken as reg * W
    return loss, dW


SM_RS = np.random.RandomState(3)
SM_W, SM_X, SM_Y = 0.5 * SM_RS.randn(4, 3), SM_RS.randn(5, 4), np.array([0, 2, 1, 1, 0])

add(name="cs231n_softmax_naive_loops", style="CS231n softmax_loss_naive: loops, scores -= np.max(scores), (loss, dW)",
    bug="regularisation gradient reg * W where the loss has reg * sum(W * W)",
    params=SM_W, args=(SM_X, SM_Y, 0.1), value_and_grad=True, grad=softmax_loss_naive,
    buggy=flip(softmax_loss_naive), expect={"params": ("regularisation", {"factor": -0.1})})


def softmax_loss_vectorized(W, X, y, reg, bug=False):
    num_train = X.shape[0]
    scores = X.dot(W)
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(num_train), y]).sum() / num_train + 0.5 * reg * np.sum(W * W)
    dscores = probs.copy()
    dscores[np.arange(num_train), y] -= 1
    dscores /= num_train
    dW = dscores.T.dot(X) if bug else X.T.dot(dscores)    # bug: (C, N) @ (N, D)
    dW += reg * (W.T if bug else W)
    return loss, dW


add(name="cs231n_softmax_vectorized_transposed", style="CS231n softmax_loss_vectorized: in-place -=, /=, keepdims",
    bug="dW = dscores.T.dot(X): the transpose of the (D, C) gradient",
    params=SM_W, args=(SM_X, SM_Y, 0.1), value_and_grad=True, grad=softmax_loss_vectorized,
    buggy=flip(softmax_loss_vectorized),
    expect={"params": ("wrong_shape", {"actual_shape": (3, 4), "detail_has": "transposed"})})


# CS231n svm_loss_naive: L = 1/N sum_i sum_{j != y_i} max(0, s_j - s_{y_i} + 1) + reg sum W^2

def svm_loss_naive(W, X, y, reg, bug=False):
    dW = np.zeros(W.shape)
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct_class_score = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct_class_score + 1   # note delta = 1
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                if not bug:                                  # bug: the correct class's pull forgotten
                    dW[:, y[i]] -= X[i]
    loss /= num_train
    dW /= num_train
    loss += reg * np.sum(W * W)
    dW += 2 * reg * W
    return loss, dW


SVM_RS = np.random.RandomState(5)
SVM_W, SVM_X, SVM_Y = 0.3 * SVM_RS.randn(3, 4), SVM_RS.randn(5, 3), np.array([0, 3, 1, 2, 1])

add(name="cs231n_svm_naive_if_margin", style="CS231n svm_loss_naive: loops, `if margin > 0:` on the parameters",
    bug="the correct class's column never gets its -X[i]",
    params=SVM_W, args=(SVM_X, SVM_Y, 0.05), value_and_grad=True, grad=svm_loss_naive, buggy=flip(svm_loss_naive),
    expect={"params": ("wrong", {})})


def svm_loss_vectorized(W, X, y, reg, bug=False):
    num_train = X.shape[0]
    scores = X.dot(W)
    correct = scores[np.arange(num_train), y][:, np.newaxis]
    margins = np.maximum(0, scores - correct + 1)
    margins[np.arange(num_train), y] = 0
    loss = np.sum(margins) / num_train + reg * np.sum(W * W)
    binary = margins
    binary[margins > 0] = 1
    row_sum = np.sum(binary, axis=1)
    binary[np.arange(num_train), y] = -row_sum
    dW = X.T.dot(binary)
    if not bug:          # bug: the 1/N forgotten
        dW /= num_train
    dW += 2 * reg * W
    return loss, dW


add(name="cs231n_svm_vectorized_mask", style="CS231n svm_loss_vectorized: np.maximum, masks, binary[margins > 0] = 1",
    bug="missing 1/N (no regularisation, so a pure factor)",
    params=SVM_W, args=(SVM_X, SVM_Y, 0.0), value_and_grad=True, grad=svm_loss_vectorized,
    buggy=flip(svm_loss_vectorized), expect={"params": ("scaled", {"factor": 5.0})})


# CS231n batchnorm, training mode, backward through the staged graph; seen through L = sum(dout * out).

def batchnorm_forward(x, gamma, beta, eps=1e-5):
    sample_mean = np.mean(x, axis=0)
    sample_var = np.var(x, axis=0)
    x_hat = (x - sample_mean) / np.sqrt(sample_var + eps)
    out = gamma * x_hat + beta
    return out, (x, x_hat, sample_mean, sample_var, gamma, eps)


def bn_loss(p, dout):
    out, _ = batchnorm_forward(p["x"], p["gamma"], p["beta"])
    return np.sum(dout * out)


def bn_grad(p, dout, bug=False):
    out, (x, x_hat, mu, var, gamma, eps) = batchnorm_forward(p["x"], p["gamma"], p["beta"])
    N = x.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma
    dvar = np.sum(dx_hat * (x - mu) * -0.5 * (var + eps) ** -1.5, axis=0)
    dmean = np.sum(dx_hat * -1 / np.sqrt(var + eps), axis=0) + dvar * np.mean(-2 * (x - mu), axis=0)
    dx = dx_hat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / N + dmean / N
    if bug:   # the path through the mean forgotten
        dx = dx_hat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / N
    return {"x": dx, "gamma": dgamma, "beta": dbeta}


BN_RS = np.random.RandomState(11)
BN_PARAMS = {"x": 2 * BN_RS.randn(4, 3) + 1, "gamma": np.array([1.2, 0.7, 0.9]), "beta": np.array([0.1, -0.3, 0.2])}

add(name="cs231n_batchnorm_staged", style="CS231n batchnorm_forward/backward through the staged graph",
    bug="dx misses the dmean / N path",
    params=BN_PARAMS, args=(BN_RS.randn(4, 3),), loss=bn_loss, grad=bn_grad, buggy=flip(bn_grad),
    expect={"x": ("wrong", {})})


# CS231n rnn_step_forward/backward: next_h = tanh(x Wx + prev_h Wh + b); L = sum(dnext_h * next_h).

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    next_h = np.tanh(x.dot(Wx) + prev_h.dot(Wh) + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_loss(p, x, prev_h, dnext_h):
    next_h, _ = rnn_step_forward(x, prev_h, p["Wx"], p["Wh"], p["b"])
    return np.sum(dnext_h * next_h)


def rnn_step_grad(p, x, prev_h, dnext_h, bug=False):
    next_h, (x, prev_h, Wx, Wh, next_h) = rnn_step_forward(x, prev_h, p["Wx"], p["Wh"], p["b"])
    dtanh = dnext_h if bug else dnext_h * (1 - next_h ** 2)   # bug: tanh' = 1 - tanh^2 forgotten
    return {"Wx": x.T.dot(dtanh), "Wh": prev_h.T.dot(dtanh), "b": np.sum(dtanh, axis=0)}


RNN_RS = np.random.RandomState(13)
add(name="cs231n_rnn_step_tanh", style="CS231n rnn_step_forward/backward, x.dot(Wx) + prev_h.dot(Wh)",
    bug="missing tanh derivative 1 - next_h**2",
    params={"Wx": 0.4 * RNN_RS.randn(3, 4), "Wh": 0.4 * RNN_RS.randn(4, 4), "b": 0.1 * RNN_RS.randn(4)},
    args=(RNN_RS.randn(2, 3), RNN_RS.randn(2, 4), RNN_RS.randn(2, 4)), loss=rnn_step_loss, grad=rnn_step_grad,
    buggy=flip(rnn_step_grad), expect=every(["Wx", "Wh", "b"], "wrong"))


# ================================================================================================
# Karpathy's min-char-rnn lossFun: dicts of time steps, one-hot columns, tanh RNN, softmax,
# backprop through time with dhnext, np.clip(dparam, -5, 5, out=dparam).
# ================================================================================================

vocab_size, hidden_size = 3, 2


def lossFun(p, inputs, targets, hprev, clip=5, bug=None):
    Wxh, Whh, Why, bh, by = p["Wxh"], p["Whh"], p["Why"], p["bh"], p["by"]
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))             # encode in 1-of-k representation
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by               # unnormalized log probabilities for next chars
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
        loss += -np.log(ps[t][targets[t], 0])         # softmax (cross-entropy loss)
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1                           # backprop into y
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + (0 if bug == "no_dhnext" else dhnext)   # backprop into h
        dhraw = (1 - hs[t] * hs[t]) * dh              # backprop through tanh nonlinearity
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
        np.clip(dparam, -clip, clip, out=dparam)      # clip to mitigate exploding gradients
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def minchar_value_and_grad(p, inputs, targets, hprev, clip=5, bug=None):
    loss, dWxh, dWhh, dWhy, dbh, dby, _ = lossFun(p, inputs, targets, hprev, clip=clip, bug=bug)
    return loss, {"Wxh": dWxh, "Whh": dWhh, "Why": dWhy, "bh": dbh, "by": dby}


RNN_P_RS = np.random.RandomState(17)
MINCHAR_PARAMS = {"Wxh": 0.8 * RNN_P_RS.randn(hidden_size, vocab_size),
                  "Whh": 0.8 * RNN_P_RS.randn(hidden_size, hidden_size),
                  "Why": 0.8 * RNN_P_RS.randn(vocab_size, hidden_size), "bh": 0.1 * RNN_P_RS.randn(hidden_size, 1),
                  "by": 0.1 * RNN_P_RS.randn(vocab_size, 1)}
MINCHAR_ARGS = ([0, 1, 2], [1, 2, 1], 0.1 * RNN_P_RS.randn(hidden_size, 1))

add(name="minchar_rnn_clip", style="Karpathy min-char-rnn lossFun: dicts of steps, dy[targets[t]] -= 1, np.clip(out=)",
    bug="gradients clipped at 0.9 inside the backward pass (a bound that bites; 5 never does here)",
    params=MINCHAR_PARAMS, args=MINCHAR_ARGS, value_and_grad=True, grad=minchar_value_and_grad,
    buggy=lambda p, *a: minchar_value_and_grad(p, *a, clip=0.9),
    expect=every(["Wxh", "Whh", "Why", "bh", "by"], "clipped"))   # each has two or more entries beyond 0.9

add(name="minchar_rnn_no_dhnext", style="Karpathy min-char-rnn lossFun, backprop through time",
    bug="dhnext (the gradient from the next time step) left out of dh",
    params=MINCHAR_PARAMS, args=MINCHAR_ARGS, value_and_grad=True, grad=minchar_value_and_grad,
    buggy=lambda p, *a: minchar_value_and_grad(p, *a, bug="no_dhnext"), expect=every(["Wxh", "Whh", "bh"], "wrong"))


# ================================================================================================
# Trask, "A Neural Network in 11 lines of Python": nonlin(x, deriv=True) takes the *output*.
# E = 1/2 sum (y - l2)^2; Trask adds l1.T.dot(l2_delta) (the negative gradient) to the weights.
# ================================================================================================

def nonlin(x, deriv=False):
    if deriv == True:  # noqa: E712  (as in the post)
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


TRASK_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
TRASK_Y = np.array([[0, 1, 1, 0]]).T
TRASK_RS = np.random.RandomState(1)
TRASK_PARAMS = {"syn0": 2 * TRASK_RS.random_sample((3, 4)) - 1, "syn1": 2 * TRASK_RS.random_sample((4, 1)) - 1}


def trask_loss(p, X, y):
    l1 = nonlin(np.dot(X, p["syn0"]))
    l2 = nonlin(np.dot(l1, p["syn1"]))
    return 0.5 * np.sum((y - l2) ** 2)


def trask_grad(p, X, y, bug=None):
    syn0, syn1 = p["syn0"], p["syn1"]
    l0 = X
    l1 = nonlin(np.dot(l0, syn0))
    l2 = nonlin(np.dot(l1, syn1))
    l2_error = y - l2
    l2_delta = l2_error * nonlin(l2, deriv=True)
    if bug == "deriv_on_z":   # the derivative fed the pre-activation instead of the output
        l2_delta = l2_error * nonlin(np.dot(l1, syn1), deriv=True)
    l1_error = l2_delta.dot(syn1.T)
    l1_delta = l1_error * nonlin(l1, deriv=True)
    if bug == "update":       # the post's update, l1.T.dot(l2_delta), returned as the gradient
        return {"syn0": l0.T.dot(l1_delta), "syn1": l1.T.dot(l2_delta)}
    return {"syn0": -l0.T.dot(l1_delta), "syn1": -l1.T.dot(l2_delta)}


add(name="trask_update_direction", style="Trask's 11-line network: nonlin(x, deriv=True), l2_error = y - l2",
    bug="the update direction (minus the gradient) returned",
    params=TRASK_PARAMS, args=(TRASK_X, TRASK_Y), loss=trask_loss, grad=trask_grad,
    buggy=lambda *a: trask_grad(*a, bug="update"), expect=every(["syn0", "syn1"], "sign_flipped"))

add(name="trask_deriv_of_preactivation", style="Trask's 11-line network",
    bug="nonlin(z, deriv=True) given the pre-activation z instead of the output",
    params=TRASK_PARAMS, args=(TRASK_X, TRASK_Y), loss=trask_loss, grad=trask_grad,
    buggy=lambda *a: trask_grad(*a, bug="deriv_on_z"), expect=every(["syn0", "syn1"], "wrong"))


# ================================================================================================
# Nielsen, "Neural Networks and Deep Learning" network2.py: a Network class with lists of weights
# (out, in) and column biases, cost classes with static fn/delta, np.nan_to_num, L2 by norms.
# C = 1/n sum_x cost(a(x), y) + lmbda/(2n) sum_w ||w||^2
# ================================================================================================

def nsigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return nsigmoid(z) * (1 - nsigmoid(z))


class QuadraticCost(object):
    @staticmethod
    def fn(a, y):
        return 0.5 * np.linalg.norm(a - y) ** 2

    @staticmethod
    def delta(z, a, y):
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost(object):
    @staticmethod
    def fn(a, y):
        return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        return (a - y)


class Network(object):
    def __init__(self, sizes, cost=CrossEntropyCost):
        self.num_layers = len(sizes)
        self.sizes = sizes
        self.cost = cost
        rs = np.random.RandomState(23)
        self.biases = [rs.randn(y, 1) for y in sizes[1:]]
        self.weights = [rs.randn(y, x) / np.sqrt(x) for x, y in zip(sizes[:-1], sizes[1:])]

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = nsigmoid(np.dot(w, a) + b)
        return a

    def total_cost(self, data, lmbda):
        cost = 0.0
        for x, y in data:
            a = self.feedforward(x)
            cost += self.cost.fn(a, y) / len(data)
        cost += 0.5 * (lmbda / len(data)) * sum(np.linalg.norm(w) ** 2 for w in self.weights)
        return cost

    def backprop(self, x, y, delta_cost=None, bug=None):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = nsigmoid(z)
            activations.append(activation)
        delta = (delta_cost or self.cost).delta(zs[-1], activations[-1], y)
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            if bug == "transposed":
                nabla_w[-l] = np.dot(activations[-l - 1], delta.transpose())
            else:
                nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)


def nielsen_loss(p, net, data, lmbda):
    net.weights, net.biases = p["weights"], p["biases"]
    return net.total_cost(data, lmbda)


def nielsen_grad(p, net, data, lmbda, delta_cost=None, bug=None):
    net.weights, net.biases = p["weights"], p["biases"]
    n = len(data)
    nabla_b = [np.zeros(b.shape) for b in net.biases]
    nabla_w = [np.zeros(w.shape) for w in net.weights]
    for x, y in data:
        delta_nabla_b, delta_nabla_w = net.backprop(x, y, delta_cost=delta_cost, bug=bug)
        nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
        nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
    return {"weights": [nw / n + (lmbda / n) * w for nw, w in zip(nabla_w, net.weights)],
            "biases": [nb / n for nb in nabla_b]}


NIELSEN_NET = Network([3, 3, 2])
NIELSEN_RS = np.random.RandomState(29)
NIELSEN_DATA = [(NIELSEN_RS.randn(3, 1), NIELSEN_RS.uniform(0.05, 0.95, (2, 1))) for _ in range(3)]
NIELSEN_PARAMS = {"weights": [w.copy() for w in NIELSEN_NET.weights], "biases": [b.copy() for b in NIELSEN_NET.biases]}
NIELSEN_LEAVES = ["weights[0]", "weights[1]", "biases[0]", "biases[1]"]

add(name="nielsen_crossentropy_quadratic_delta",
    style="Nielsen network2.py: Network class, CrossEntropyCost static methods, np.nan_to_num, L2 by norms",
    bug="the quadratic cost's delta (times sigmoid'(z)) used with the cross-entropy cost",
    params=NIELSEN_PARAMS, args=(NIELSEN_NET, NIELSEN_DATA, 0.1), loss=nielsen_loss, grad=nielsen_grad,
    buggy=lambda *a: nielsen_grad(*a, delta_cost=QuadraticCost), expect=every(NIELSEN_LEAVES, "wrong"))

add(name="nielsen_backprop_transposed", style="Nielsen network2.py backprop: nabla_w[-l] from delta and activations",
    bug="np.dot(activations[-l-1], delta.T): the transpose of the square hidden weights' gradient",
    params=NIELSEN_PARAMS, args=(NIELSEN_NET, NIELSEN_DATA, 0.0), loss=nielsen_loss, grad=nielsen_grad,
    buggy=lambda *a: nielsen_grad(*a, bug="transposed"), expect={"weights[0]": ("transposed", {})})


# ================================================================================================
# Saito, "Deep Learning from Scratch": Affine/Relu/SoftmaxWithLoss layer classes in an OrderedDict,
# Relu keeps a mask (x <= 0), cross_entropy_error with its 1e-7 inside the log.
# ================================================================================================

class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)   # guard against overflow
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t, delta=1e-7):
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + delta)) / batch_size


class SoftmaxWithLoss:
    def __init__(self, delta=0.0, bug=False):
        self.delta, self.bug = delta, bug

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t, self.delta)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx if self.bug else dx / batch_size    # bug: the batch mean's 1/batch_size forgotten


class SaitoTwoLayerNet:
    def __init__(self, params, delta=0.0, bug=False):
        self.params = params
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss(delta, bug)

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


def saito_loss(params, x, t):
    return SaitoTwoLayerNet(params).loss(x, t)


def saito_loss_with_delta(params, x, t):
    return SaitoTwoLayerNet(params, delta=1e-7).loss(x, t)


def saito_grad(params, x, t, bug=False):
    return SaitoTwoLayerNet(params, bug=bug).gradient(x, t)


SAITO_RS = np.random.RandomState(31)
SAITO_PARAMS = {"W1": 0.8 * SAITO_RS.randn(3, 4), "b1": 0.1 * SAITO_RS.randn(4), "W2": 0.8 * SAITO_RS.randn(4, 3),
                "b2": np.zeros(3)}
SAITO_ARGS = (SAITO_RS.randn(4, 3), np.array([2, 0, 1, 2]))
SAITO_LEAVES = ["W1", "b1", "W2", "b2"]

add(name="dlfs_layers_batch_size", style="Deep Learning from Scratch: Affine/Relu/SoftmaxWithLoss classes, OrderedDict",
    bug="SoftmaxWithLoss.backward forgets / batch_size",
    params=SAITO_PARAMS, args=SAITO_ARGS, loss=saito_loss, grad=saito_grad, buggy=flip(saito_grad),
    expect=every(SAITO_LEAVES, "scaled", factor=4.0))

add(name="dlfs_log_delta", style="Deep Learning from Scratch: cross_entropy_error with log(y + 1e-7)",
    bug="the loss has log(y + 1e-7), the gradient (y - t) / N belongs to log(y)",
    params=SAITO_PARAMS, args=SAITO_ARGS, loss=saito_loss, grad=saito_grad, buggy=saito_grad,
    buggy_loss=saito_loss_with_delta, expect=every(SAITO_LEAVES, "tiny_mismatch"))


# ================================================================================================
# deeplearning.ai / Coursera Deep Learning: parameters["W1"] (n_h, n_x), b (n_h, 1), examples as
# columns, np.multiply, cost = float(np.squeeze(cost)), grads["dW1"] ...
# ================================================================================================

def dl_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def forward_propagation(X, parameters):
    W1, b1, W2, b2 = parameters["W1"], parameters["b1"], parameters["W2"], parameters["b2"]
    Z1 = np.dot(W1, X) + b1
    A1 = np.tanh(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = dl_sigmoid(Z2)
    return A2, {"Z1": Z1, "A1": A1, "Z2": Z2, "A2": A2}


def compute_cost(A2, Y):
    m = Y.shape[1]
    logprobs = np.multiply(np.log(A2), Y) + np.multiply((1 - Y), np.log(1 - A2))
    cost = - np.sum(logprobs) / m
    cost = float(np.squeeze(cost))
    return cost


def backward_propagation(parameters, cache, X, Y, bug=None):
    m = X.shape[1]
    W2 = parameters["W2"]
    A1, A2 = cache["A1"], cache["A2"]
    dZ2 = A2 - Y
    dW2 = (1 / m) * np.dot(dZ2, A1.T)
    db2 = (1 / m) * np.sum(dZ2, axis=1, keepdims=True)
    dZ1 = np.multiply(np.dot(W2.T, dZ2), 1 - np.power(A1, 2))
    if bug == "no_tanh_derivative":
        dZ1 = np.dot(W2.T, dZ2)
    dW1 = (1 / m) * np.dot(dZ1, X.T)
    db1 = (1 / m) * np.sum(dZ1, axis=1, keepdims=(bug != "keepdims"))
    return {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2}


def planar_loss(parameters, X, Y):
    A2, _ = forward_propagation(X, parameters)
    return compute_cost(A2, Y)


def planar_grad(parameters, X, Y, bug=None):
    _, cache = forward_propagation(X, parameters)
    grads = backward_propagation(parameters, cache, X, Y, bug=bug)
    return {"W1": grads["dW1"], "b1": grads["db1"], "W2": grads["dW2"], "b2": grads["db2"]}


PLANAR_RS = np.random.RandomState(2)
PLANAR_PARAMS = {"W1": PLANAR_RS.randn(3, 2) * 0.5, "b1": np.zeros((3, 1)) + 0.1, "W2": PLANAR_RS.randn(1, 3) * 0.5,
                 "b2": np.zeros((1, 1))}
PLANAR_ARGS = (PLANAR_RS.randn(2, 5), np.array([[1, 0, 1, 1, 0]]))

add(name="dlai_planar_no_tanh_derivative",
    style="deeplearning.ai planar data: parameters dict, np.multiply, float(np.squeeze(cost))",
    bug="1 - np.power(A1, 2) left out of dZ1",
    params=PLANAR_PARAMS, args=PLANAR_ARGS, loss=planar_loss, grad=planar_grad,
    buggy=lambda *a: planar_grad(*a, bug="no_tanh_derivative"), expect=every(["W1", "b1"], "wrong"))

add(name="dlai_planar_keepdims", style="deeplearning.ai planar data: column biases (n_h, 1)",
    bug="db1 summed without keepdims=True: shape (3,) for a (3, 1) bias",
    params=PLANAR_PARAMS, args=PLANAR_ARGS, loss=planar_loss, grad=planar_grad,
    buggy=lambda *a: planar_grad(*a, bug="keepdims"),
    expect={"b1": ("wrong_shape", {"actual_shape": (3,), "detail_has": "keepdims"})})


# Course 1 week 2: propagate(w, b, X, Y) returns (grads, cost); w is (dim, 1), b a Python float.

def propagate(w, b, X, Y, bug=False):
    m = X.shape[1]
    A = dl_sigmoid(np.dot(w.T, X) + b)
    cost = -1 / m * np.sum(Y * np.log(A) + (1 - Y) * np.log(1 - A))
    dw = 1 / m * np.dot(X, (A - Y).T)
    db = np.sum(A - Y) if bug else 1 / m * np.sum(A - Y)     # bug: the 1/m forgotten for db
    cost = np.squeeze(np.array(cost))
    return {"dw": dw, "db": db}, cost


def propagate_value_and_grad(p, X, Y, bug=False):
    grads, cost = propagate(p["w"], p["b"], X, Y, bug=bug)
    return cost, {"w": grads["dw"], "b": grads["db"]}


add(name="dlai_propagate_logreg", style="deeplearning.ai logistic regression: propagate(w, b, X, Y) -> (grads, cost)",
    bug="db = np.sum(A - Y) without 1/m",
    params={"w": np.array([[0.2], [-0.4]]), "b": 0.5}, args=(np.array([[1.0, 2.0, -1.0, 0.5], [3.0, 4.0, -3.2, 0.1]]),
                                                            np.array([[1, 0, 1, 0]])),
    value_and_grad=True, grad=propagate_value_and_grad, buggy=flip(propagate_value_and_grad),
    expect={"b": ("scaled", {"factor": 4.0})})


# Course 1 week 4: an L-layer network, parameters["W" + str(l)], caches, relu_backward with
# dZ[Z <= 0] = 0, sigmoid output, dAL = -(Y / AL - (1 - Y) / (1 - AL)).

def L_model_forward(X, parameters):
    caches = []
    A = X
    L = len(parameters) // 2
    for l in range(1, L):
        A_prev = A
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        Z = np.dot(W, A_prev) + b
        A = np.maximum(0, Z)
        caches.append(((A_prev, W, b), Z))
    W, b = parameters["W" + str(L)], parameters["b" + str(L)]
    ZL = np.dot(W, A) + b
    AL = dl_sigmoid(ZL)
    caches.append(((A, W, b), ZL))
    return AL, caches


def L_compute_cost(AL, Y):
    m = Y.shape[1]
    cost = (1. / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T))
    return np.squeeze(cost)


def relu_backward(dA, Z):
    dZ = np.array(dA, copy=True)
    dZ[Z <= 0] = 0
    return dZ


def sigmoid_backward(dA, Z):
    s = 1 / (1 + np.exp(-Z))
    return dA * s * (1 - s)


def linear_backward(dZ, cache):
    A_prev, W, b = cache
    m = A_prev.shape[1]
    dW = 1. / m * np.dot(dZ, A_prev.T)
    db = 1. / m * np.sum(dZ, axis=1, keepdims=True)
    return np.dot(W.T, dZ), dW, db


def L_model_backward(AL, Y, caches, bug=False):
    grads = {}
    L = len(caches)
    Y = Y.reshape(AL.shape)
    dAL = - (np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    if bug:   # the minus sign dropped
        dAL = np.divide(Y, AL) - np.divide(1 - Y, 1 - AL)
    current_cache = caches[L - 1]
    dZ = sigmoid_backward(dAL, current_cache[1])
    grads["dA" + str(L - 1)], grads["dW" + str(L)], grads["db" + str(L)] = linear_backward(dZ, current_cache[0])
    for l in reversed(range(L - 1)):
        current_cache = caches[l]
        dZ = relu_backward(grads["dA" + str(l + 1)], current_cache[1])
        dA_prev_temp, dW_temp, db_temp = linear_backward(dZ, current_cache[0])
        grads["dA" + str(l)] = dA_prev_temp
        grads["dW" + str(l + 1)] = dW_temp
        grads["db" + str(l + 1)] = db_temp
    return grads


def L_loss(parameters, X, Y):
    AL, _ = L_model_forward(X, parameters)
    return L_compute_cost(AL, Y)


def L_grad(parameters, X, Y, bug=False):
    AL, caches = L_model_forward(X, parameters)
    grads = L_model_backward(AL, Y, caches, bug=bug)
    return {k: grads["d" + k] for k in parameters}


L_RS = np.random.RandomState(3)
L_PARAMS = {}
for _l, (_n, _prev) in enumerate([(3, 2), (2, 3), (1, 2)], start=1):
    L_PARAMS["W" + str(_l)] = L_RS.randn(_n, _prev) * 0.8
    L_PARAMS["b" + str(_l)] = np.full((_n, 1), 0.2)
L_ARGS = (L_RS.randn(2, 4), np.array([[1, 0, 0, 1]]))

add(name="dlai_L_layer_sign", style="deeplearning.ai L-layer network: parameters['W' + str(l)], caches, dZ[Z <= 0] = 0",
    bug="dAL without its leading minus",
    params=L_PARAMS, args=L_ARGS, loss=L_loss, grad=L_grad, buggy=flip(L_grad),
    expect=every(list(L_PARAMS), "sign_flipped"))


# Course 2 week 1: L2 regularisation, cost + 1/m * lambd/2 * sum ||W||^2; ReLU mask as np.int64(A > 0).

def relu(x):
    return np.maximum(0, x)


def forward3(X, parameters):
    W1, b1, W2, b2, W3, b3 = (parameters[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    Z1 = np.dot(W1, X) + b1
    A1 = relu(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = relu(Z2)
    Z3 = np.dot(W3, A2) + b3
    A3 = dl_sigmoid(Z3)
    return A3, (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)


def compute_cost_with_regularization(parameters, X, Y, lambd):
    A3, _ = forward3(X, parameters)
    m = Y.shape[1]
    W1, W2, W3 = parameters["W1"], parameters["W2"], parameters["W3"]
    logprobs = np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y)
    cross_entropy_cost = 1. / m * np.nansum(logprobs)
    L2_regularization_cost = (1 / m) * (lambd / 2) * (np.sum(np.square(W1)) + np.sum(np.square(W2)) + np.sum(np.square(W3)))
    return cross_entropy_cost + L2_regularization_cost


def backward_propagation_with_regularization(parameters, X, Y, lambd, bug=False):
    m = X.shape[1]
    A3, (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3) = forward3(X, parameters)
    dZ3 = A3 - Y
    dW3 = 1. / m * np.dot(dZ3, A2.T) + (lambd / m) * W3
    db3 = 1. / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1. / m * np.dot(dZ2, A1.T) + (0 if bug else (lambd / m) * W2)   # bug: the L2 term forgotten
    db2 = 1. / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1. / m * np.dot(dZ1, X.T) + (lambd / m) * W1
    db1 = 1. / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


REG_RS = np.random.RandomState(5)
REG_PARAMS = {"W1": REG_RS.randn(3, 2), "b1": np.full((3, 1), 0.3), "W2": REG_RS.randn(2, 3), "b2": np.full((2, 1), 0.3),
              "W3": REG_RS.randn(1, 2), "b3": np.zeros((1, 1))}
REG_ARGS = (REG_RS.randn(2, 4), np.array([[1, 1, 0, 0]]), 0.7)

add(name="dlai_L2_regularisation", style="deeplearning.ai regularisation: (lambd / m) * W, np.int64(A2 > 0) masks",
    bug="(lambd / m) * W2 forgotten in dW2",
    params=REG_PARAMS, args=REG_ARGS, loss=compute_cost_with_regularization,
    grad=backward_propagation_with_regularization, buggy=flip(backward_propagation_with_regularization),
    expect={"W2": ("regularisation", {"factor": -0.175})})


# Course 2 week 1: dropout, with np.random.seed(1) inside the forward pass (so the loss is a
# function of the parameters) and inverted dropout A = A * D / keep_prob.

def forward_propagation_with_dropout(X, parameters, keep_prob=0.8):
    np.random.seed(1)
    W1, b1, W2, b2, W3, b3 = (parameters[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    Z1 = np.dot(W1, X) + b1
    A1 = relu(Z1)
    D1 = np.random.rand(A1.shape[0], A1.shape[1])
    D1 = (D1 < keep_prob).astype(int)
    A1 = A1 * D1
    A1 = A1 / keep_prob
    Z2 = np.dot(W2, A1) + b2
    A2 = relu(Z2)
    D2 = np.random.rand(A2.shape[0], A2.shape[1])
    D2 = (D2 < keep_prob).astype(int)
    A2 = A2 * D2
    A2 = A2 / keep_prob
    Z3 = np.dot(W3, A2) + b3
    A3 = dl_sigmoid(Z3)
    return A3, (Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3)


def dropout_cost(parameters, X, Y, keep_prob):
    A3, _ = forward_propagation_with_dropout(X, parameters, keep_prob)
    m = Y.shape[1]
    return 1. / m * np.sum(np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y))


def backward_propagation_with_dropout(parameters, X, Y, keep_prob, bug=False):
    m = X.shape[1]
    A3, cache = forward_propagation_with_dropout(X, parameters, keep_prob)
    (Z1, D1, A1, W1, b1, Z2, D2, A2, W2, b2, Z3, A3, W3, b3) = cache
    dZ3 = A3 - Y
    dW3 = 1. / m * np.dot(dZ3, A2.T)
    db3 = 1. / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dA2 = dA2 * D2
    dA2 = dA2 / keep_prob
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1. / m * np.dot(dZ2, A1.T)
    db2 = 1. / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dA1 = dA1 * D1
    if not bug:                     # bug: the / keep_prob of inverted dropout forgotten
        dA1 = dA1 / keep_prob
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1. / m * np.dot(dZ1, X.T)
    db1 = 1. / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


DROP_RS = np.random.RandomState(7)
DROP_PARAMS = {"W1": DROP_RS.randn(4, 3), "b1": np.full((4, 1), 0.5), "W2": DROP_RS.randn(3, 4), "b2": np.full((3, 1), 0.5),
               "W3": DROP_RS.randn(1, 3), "b3": np.zeros((1, 1))}
DROP_ARGS = (DROP_RS.randn(3, 5), np.array([[1, 1, 0, 1, 0]]), 0.8)

add(name="dlai_dropout_seed_inside", style="deeplearning.ai dropout: np.random.seed(1) inside the forward pass, D1 masks",
    bug="dA1 / keep_prob forgotten",
    params=DROP_PARAMS, args=DROP_ARGS, loss=dropout_cost, grad=backward_propagation_with_dropout,
    buggy=flip(backward_propagation_with_dropout), expect=every(["W1", "b1"], "scaled", factor=0.8))


# Dropout with the mask passed in args (so a test can fix it): h = relu(X W1 + b1) * mask / p.

def dropout_mlp_loss(p, X, y, mask, keep):
    h = np.maximum(0, X.dot(p["W1"]) + p["b1"]) * mask / keep
    out = h.dot(p["W2"]) + p["b2"]
    return 0.5 * np.sum((out - y) ** 2) / X.shape[0]


def dropout_mlp_grad(p, X, y, mask, keep, bug=False):
    z = X.dot(p["W1"]) + p["b1"]
    h = np.maximum(0, z) * mask / keep
    dout = (h.dot(p["W2"]) + p["b2"] - y) / X.shape[0]
    dh = dout.dot(p["W2"].T)
    dz = dh * (z > 0) / keep if bug else dh * (z > 0) * mask / keep   # bug: the mask not applied going back
    return {"W1": X.T.dot(dz), "b1": dz.sum(axis=0), "W2": h.T.dot(dout), "b2": dout.sum(axis=0)}


DMASK_RS = np.random.RandomState(37)
DMASK_MASK = np.ones((3, 4))
DMASK_MASK[1, 2] = 0.0          # unit 2 dropped for example 1 only
add(name="dropout_mask_in_args", style="dropout with its mask passed in args, h * mask / keep",
    bug="the dropout mask not applied in the backward pass",
    params={"W1": DMASK_RS.randn(2, 4), "b1": np.full(4, 2.0), "W2": DMASK_RS.randn(4, 2), "b2": np.zeros(2)},
    args=(DMASK_RS.randn(3, 2), DMASK_RS.randn(3, 2), DMASK_MASK, 0.75), loss=dropout_mlp_loss, grad=dropout_mlp_grad,
    buggy=flip(dropout_mlp_grad),
    expect={"W1": ("partial", {"wrong_indices": ((0, 2), (1, 2))}), "b1": ("partial", {"wrong_indices": ((2,),)})})


# ================================================================================================
# CS224n assignment 2 (word2vec): softmax with in-place x -= max, naive softmax loss, negative
# sampling with the negative indices given.
# ================================================================================================

def cs224n_softmax(x):
    orig_shape = x.shape
    if len(x.shape) > 1:
        tmp = np.max(x, axis=1)
        x -= tmp.reshape((x.shape[0], 1))
        x = np.exp(x)
        tmp = np.sum(x, axis=1)
        x /= tmp.reshape((x.shape[0], 1))
    else:
        tmp = np.max(x)
        x -= tmp
        x = np.exp(x)
        tmp = np.sum(x)
        x /= tmp
    assert x.shape == orig_shape
    return x


def naiveSoftmaxLossAndGradient(centerWordVec, outsideWordIdx, outsideVectors, dataset, bug=False):
    y_hat = cs224n_softmax(np.dot(outsideVectors, centerWordVec))
    loss = -np.log(y_hat)[outsideWordIdx]
    y = np.zeros_like(y_hat)
    y[outsideWordIdx] = 1
    gradCenterVec = np.dot(outsideVectors.T, y_hat - y)
    gradOutsideVecs = np.outer(centerWordVec, y_hat - y) if bug else np.outer(y_hat - y, centerWordVec)
    return loss, gradCenterVec, gradOutsideVecs


def word2vec_value_and_grad(p, outsideWordIdx, dataset, bug=False):
    loss, gc, go = naiveSoftmaxLossAndGradient(p["centerWordVec"], outsideWordIdx, p["outsideVectors"], dataset, bug=bug)
    return loss, {"centerWordVec": gc, "outsideVectors": go}


W2V_RS = np.random.RandomState(41)
W2V_PARAMS = {"centerWordVec": W2V_RS.randn(3), "outsideVectors": W2V_RS.randn(5, 3)}

add(name="cs224n_naive_softmax_outer", style="CS224n word2vec: softmax with in-place x -= tmp, np.outer, y[idx] = 1",
    bug="np.outer(centerWordVec, y_hat - y): the (3, 5) transpose of the (5, 3) gradient",
    params=W2V_PARAMS, args=(2, None), value_and_grad=True, grad=word2vec_value_and_grad,
    buggy=flip(word2vec_value_and_grad),
    expect={"outsideVectors": ("wrong_shape", {"actual_shape": (3, 5), "detail_has": "transposed"})})


def negSamplingLossAndGradient(centerWordVec, outsideWordIdx, outsideVectors, negSampleWordIndices, bug=False):
    gradCenterVec = np.zeros(centerWordVec.shape)
    gradOutsideVecs = np.zeros(outsideVectors.shape)
    u_o = outsideVectors[outsideWordIdx]
    z = dl_sigmoid(np.dot(u_o, centerWordVec))
    loss = -np.log(z)
    gradCenterVec += u_o * (z - 1)
    gradOutsideVecs[outsideWordIdx] = centerWordVec * (z - 1)
    for neg_id in negSampleWordIndices:
        u_k = outsideVectors[neg_id]
        z = dl_sigmoid(-np.dot(u_k, centerWordVec))
        loss -= np.log(z)
        if bug:   # d/dv of -log sigmoid(-u.v) is +u (1 - z): the sign flipped
            gradCenterVec -= u_k * (1 - z)
        else:
            gradCenterVec += u_k * (1 - z)
        gradOutsideVecs[neg_id] += centerWordVec * (1 - z)
    return loss, gradCenterVec, gradOutsideVecs


def negsampling_value_and_grad(p, outsideWordIdx, negs, bug=False):
    loss, gc, go = negSamplingLossAndGradient(p["centerWordVec"], outsideWordIdx, p["outsideVectors"], negs, bug=bug)
    return loss, {"centerWordVec": gc, "outsideVectors": go}


add(name="cs224n_negative_sampling", style="CS224n word2vec negative sampling: loop over samples, -=, += into rows",
    bug="the negative samples' term in gradCenterVec with the wrong sign",
    params=W2V_PARAMS, args=(1, [3, 0, 3]), value_and_grad=True, grad=negsampling_value_and_grad,
    buggy=flip(negsampling_value_and_grad), expect={"centerWordVec": ("wrong", {})})


# CS224n assignment 1 (2017): forward_backward_prop(X, labels, params, dimensions) on one unrolled
# vector, sigmoid hidden layer, softmax, cost = sum -log yhat[labels == 1].

def sigmoid_grad(s):
    return s * (1 - s)        # takes the sigmoid's *output*


def forward_backward_prop(X, labels, params, dimensions, bug=False):
    ofs = 0
    Dx, H, Dy = (dimensions[0], dimensions[1], dimensions[2])
    W1 = np.reshape(params[ofs:ofs + Dx * H], (Dx, H))
    ofs += Dx * H
    b1 = np.reshape(params[ofs:ofs + H], (1, H))
    ofs += H
    W2 = np.reshape(params[ofs:ofs + H * Dy], (H, Dy))
    ofs += H * Dy
    b2 = np.reshape(params[ofs:ofs + Dy], (1, Dy))
    h = dl_sigmoid(X.dot(W1) + b1)
    yhat = softmax(h.dot(W2) + b2)
    cost = np.sum(-np.log(yhat[labels == 1]))
    d3 = yhat - labels
    gradW2 = h.T.dot(d3)
    gradb2 = np.sum(d3, axis=0, keepdims=True)
    dh = d3.dot(W2.T)
    grad_h = sigmoid_grad(X.dot(W1) + b1) * dh if bug else sigmoid_grad(h) * dh   # bug: given z, not h
    gradW1 = X.T.dot(grad_h)
    gradb1 = np.sum(grad_h, axis=0, keepdims=True)
    grad = np.concatenate((gradW1.flatten(), gradb1.flatten(), gradW2.flatten(), gradb2.flatten()))
    return cost, grad


FBP_RS = np.random.RandomState(43)
FBP_DIMS = [3, 3, 2]
FBP_LABELS = np.eye(2)[[0, 1, 1, 0]]
FBP_PARAMS = 0.7 * FBP_RS.randn(3 * 3 + 3 + 3 * 2 + 2)

add(name="cs224n_forward_backward_prop", style="CS224n: forward_backward_prop on unrolled params, yhat[labels == 1]",
    bug="sigmoid_grad given the pre-activation instead of the sigmoid's output",
    params=FBP_PARAMS, args=(FBP_RS.randn(4, 3), FBP_LABELS, FBP_DIMS), value_and_grad=True,
    grad=lambda params, X, labels, dims: forward_backward_prop(X, labels, params, dims),
    buggy=lambda params, X, labels, dims: forward_backward_prop(X, labels, params, dims, bug=True),
    expect={"params": ("wrong", {})})   # W1 and b1: 12 of the 20 elements


# ================================================================================================
# Smaller idioms: np.where, np.clip in the loss, .item(), np.float64(...), element loops that write
# into np.zeros, a class with w_ (Raschka's Adaline), np.eye(C)[y].T, Britz's tanh network, builtin
# sum over generators, logsumexp by hand, an in-place ReLU h[h < 0] = 0.
# ================================================================================================

HUBER_RS = np.random.RandomState(47)
HUBER_X = HUBER_RS.randn(6, 3)
HUBER_Y = np.array([2.5, -3.0, 0.2, -0.4, 1.9, -2.2])


def huber_loss(w, X, y, delta=1.0):
    r = X.dot(w) - y
    return np.mean(np.where(np.abs(r) <= delta, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta)))


def huber_grad(w, X, y, delta=1.0, bug=False):
    r = X.dot(w) - y
    dr = np.where(np.abs(r) <= delta, r, delta if bug else delta * np.sign(r))   # bug: sign(r) forgotten
    return X.T.dot(dr) / len(y)


add(name="huber_np_where", style="smooth L1 / Huber loss with np.where and np.abs",
    bug="the outer branch's derivative written delta instead of delta * sign(r)",
    params=np.array([0.3, -0.2, 0.4]), args=(HUBER_X, HUBER_Y), loss=huber_loss, grad=huber_grad, buggy=flip(huber_grad),
    expect={"params": ("wrong", {})})


def leaky_loss(p, X, y):
    z = X.dot(p["W"]) + p["b"]
    h = np.where(z > 0, z, 0.01 * z)          # leaky ReLU
    return np.mean((h.sum(axis=1) - y) ** 2)


def leaky_grad(p, X, y, bug=False):
    z = X.dot(p["W"]) + p["b"]
    h = np.where(z > 0, z, 0.01 * z)
    dh = 2 * (h.sum(axis=1) - y)[:, None] / len(y) * np.ones_like(h)
    dz = np.where(z > 0, dh, 0.0 if bug else 0.01 * dh)     # bug: the leak's slope 0.01 forgotten
    return {"W": X.T.dot(dz), "b": dz.sum(axis=0)}


LEAKY_RS = np.random.RandomState(53)
add(name="leaky_relu_np_where", style="leaky ReLU with np.where(z > 0, z, 0.01 * z)",
    bug="the negative side's slope 0.01 dropped in the backward pass",
    params={"W": LEAKY_RS.randn(3, 3), "b": np.array([0.5, -0.5, 0.1])}, args=(LEAKY_RS.randn(5, 3), LEAKY_RS.randn(5)),
    loss=leaky_loss, grad=leaky_grad, buggy=flip(leaky_grad), expect=every(["W", "b"], "wrong"))


def clip_item_loss(w, X, y):
    p = 1 / (1 + np.exp(-X.dot(w)))
    p = np.clip(p, 1e-12, 1 - 1e-12)                # keep log() finite
    return (-(y * np.log(p) + (1 - y) * np.log(1 - p))).mean().item()


def clip_item_grad(w, X, y, bug=False):
    p = 1 / (1 + np.exp(-X.dot(w)))
    return X.T.dot((y - p) if bug else (p - y)) / len(y)     # bug: y - p


add(name="logreg_clip_item", style="logistic regression with np.clip inside the loss and a .item() return",
    bug="y - p instead of p - y", params=np.array([0.5, -0.3, 0.2]), args=(EX2_X, EX2_Y), loss=clip_item_loss,
    grad=clip_item_grad, buggy=flip(clip_item_grad), expect={"params": ("sign_flipped", {})})


def mse_loss(W, X, Y):
    return np.float64(np.mean(np.square(np.dot(X, W) - Y)))


def mse_grad(W, X, Y, bug=False):
    diff = np.dot(X, W) - Y
    g = diff.T.dot(X) if bug else X.T.dot(diff)          # bug: (C, N) @ (N, D), transposed
    return np.multiply(2.0 / diff.size, g)


MSE_RS = np.random.RandomState(59)
add(name="mse_float64_transposed", style="linear layer MSE with np.float64(...) return, np.multiply, np.square",
    bug="diff.T.dot(X): the transpose of the square weight's gradient",
    params=MSE_RS.randn(3, 3), args=(MSE_RS.randn(5, 3), MSE_RS.randn(5, 3)), loss=mse_loss, grad=mse_grad,
    buggy=flip(mse_grad), expect={"params": ("transposed", {})})


def conv1d_loss(w, x, y):
    k = len(w)
    n = len(x) - k + 1
    out = np.zeros(n)
    for i in range(n):
        for j in range(k):
            out[i] += w[j] * x[i + j]       # valid cross-correlation, element by element
    return 0.5 * np.sum((out - y) ** 2)


def conv1d_grad(w, x, y, bug=False):
    k = len(w)
    n = len(x) - k + 1
    out = np.zeros(n)
    for i in range(n):
        for j in range(k):
            out[i] += w[j] * x[i + j]
    dw = np.zeros(k)
    for i in range(n):
        for j in range(k):
            dw[j] += (out[i] - y[i]) * x[i + (k - 1 - j if bug else j)]   # bug: the kernel flipped
    return dw


add(name="conv1d_element_loops", style="1-D convolution by element loops writing out[i] += ... into np.zeros",
    bug="the kernel index flipped (convolution's gradient for a cross-correlation)",
    params=np.array([0.5, -1.0, 0.25]), args=(np.array([1.0, 2.0, -1.0, 0.5, 3.0, -2.0]), np.array([0.3, -0.2, 1.0, 0.4])),
    loss=conv1d_loss, grad=conv1d_grad, buggy=flip(conv1d_grad), expect={"params": ("wrong", {})})


class AdalineGD(object):
    """Raschka's ADAptive LInear NEuron: w_[0] is the bias."""

    def __init__(self, eta=0.01, n_iter=50):
        self.eta, self.n_iter = eta, n_iter

    def net_input(self, X):
        return np.dot(X, self.w_[1:]) + self.w_[0]

    def activation(self, X):
        return X

    def cost(self, X, y):
        errors = (y - self.activation(self.net_input(X)))
        return (errors ** 2).sum() / 2.0

    def gradient(self, X, y, bug=False):
        errors = (y - self.activation(self.net_input(X)))
        g = np.zeros(1 + X.shape[1])
        g[1:] = X.T.dot(errors)            # fit() does self.w_[1:] += self.eta * X.T.dot(errors)
        g[0] = errors.sum()
        return g if bug else -g            # bug: the update direction returned


def adaline_loss(w, model, X, y):
    model.w_ = w
    return model.cost(X, y)


def adaline_grad(w, model, X, y, bug=False):
    model.w_ = w
    return model.gradient(X, y, bug=bug)


ADA_RS = np.random.RandomState(61)
add(name="adaline_class_update", style="Raschka's AdalineGD: the model object in args, w_[0] the bias",
    bug="the update direction X.T.dot(errors) returned as the gradient",
    params=np.array([0.1, -0.2, 0.3]), args=(AdalineGD(), ADA_RS.randn(5, 2), ADA_RS.randn(5)), loss=adaline_loss,
    grad=adaline_grad, buggy=flip(adaline_grad), expect={"params": ("sign_flipped", {})})


def softmax_columns_loss(p, X, y):
    C, m = p["b"].shape[0], X.shape[1]
    Y = np.eye(C)[y].T                                    # one-hot columns (C, m)
    Z = np.dot(p["W"], X) + p["b"]
    A = np.exp(Z - np.max(Z, axis=0, keepdims=True))
    A = A / np.sum(A, axis=0, keepdims=True)
    return -np.sum(Y * np.log(A)) / m


def softmax_columns_grad(p, X, y, bug=False):
    C, m = p["b"].shape[0], X.shape[1]
    Y = np.eye(C)[y].T
    Z = np.dot(p["W"], X) + p["b"]
    A = np.exp(Z - np.max(Z, axis=0, keepdims=True))
    A = A / np.sum(A, axis=0, keepdims=True)
    dZ = A - Y
    db = 1 / m * np.sum(dZ, axis=0 if bug else 1, keepdims=True)    # bug: summed over the classes
    return {"W": 1 / m * np.dot(dZ, X.T), "b": db}


SMC_RS = np.random.RandomState(67)
add(name="softmax_columns_eye_onehot", style="deeplearning.ai-style softmax on columns, one-hot np.eye(C)[y].T",
    bug="db summed over axis 0 (the classes) instead of axis 1 (the examples)",
    params={"W": SMC_RS.randn(3, 2), "b": np.zeros((3, 1))}, args=(SMC_RS.randn(2, 4), np.array([0, 2, 1, 2])),
    loss=softmax_columns_loss, grad=softmax_columns_grad, buggy=flip(softmax_columns_grad),
    expect={"b": ("wrong_shape", {"actual_shape": (1, 4)})})


def britz_calculate_loss(model, X, y, reg_lambda):
    num_examples = len(X)
    W1, b1, W2, b2 = model["W1"], model["b1"], model["W2"], model["b2"]
    z1 = X.dot(W1) + b1
    a1 = np.tanh(z1)
    z2 = a1.dot(W2) + b2
    exp_scores = np.exp(z2)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    corect_logprobs = -np.log(probs[range(num_examples), y])
    data_loss = np.sum(corect_logprobs)
    data_loss += reg_lambda / 2 * (np.sum(np.square(W1)) + np.sum(np.square(W2)))
    return 1. / num_examples * data_loss


def britz_backprop(model, X, y, reg_lambda, bug=False):
    num_examples = len(X)
    W1, b1, W2, b2 = model["W1"], model["b1"], model["W2"], model["b2"]
    a1 = np.tanh(X.dot(W1) + b1)
    exp_scores = np.exp(a1.dot(W2) + b2)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    delta3 = probs
    delta3[range(num_examples), y] -= 1
    dW2 = (a1.T).dot(delta3)
    db2 = np.sum(delta3, axis=0, keepdims=True)
    delta2 = delta3.dot(W2.T) * (1 - np.power(a1, 2))
    dW1 = np.dot(X.T, delta2)
    db1 = np.sum(delta2, axis=0, keepdims=True)
    dW2 += reg_lambda * W2
    dW1 += reg_lambda * W1
    grads = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    if bug:   # as in the tutorial: the loss is divided by num_examples, the gradients are not
        return grads
    return {k: v / num_examples for k, v in grads.items()}


BRITZ_RS = np.random.RandomState(71)
add(name="britz_tanh_softmax", style="Britz's tanh network: model dict, probs[range(N), y], delta3[range(N), y] -= 1",
    bug="the gradients never divided by num_examples (the tutorial's own mismatch)",
    params={"W1": BRITZ_RS.randn(2, 3) / np.sqrt(2), "b1": np.zeros((1, 3)), "W2": BRITZ_RS.randn(3, 2) / np.sqrt(3),
            "b2": np.zeros((1, 2))},
    args=(BRITZ_RS.randn(4, 2), np.array([0, 1, 1, 0]), 0.01), loss=britz_calculate_loss, grad=britz_backprop,
    buggy=flip(britz_backprop), expect=every(["W1", "b1", "W2", "b2"], "scaled", factor=4.0))


def poly_predict(w, x):
    return sum(w[j] * x ** j for j in range(len(w)))


def poly_loss(w, xs, ys):
    return sum((poly_predict(w, x) - y) ** 2 for x, y in zip(xs, ys)) / len(xs)


def poly_grad(w, xs, ys, bug=False):
    n = 1 if bug else len(xs)      # bug: the mean of the loss forgotten, the gradient summed
    return [sum(2 * (poly_predict(w, x) - y) * x ** j for x, y in zip(xs, ys)) / n for j in range(len(w))]


add(name="polyfit_builtin_sum", style="polynomial fit on lists with the builtin sum over generators",
    bug="missing 1/N: the loss is a mean, the gradient a sum",
    params=[0.5, -0.3, 0.1], args=([0.5, 1.0, 1.5, 2.0, -1.0], [1.0, 0.7, 0.9, 1.6, 2.0]), loss=poly_loss,
    grad=poly_grad, buggy=flip(poly_grad), expect=every(["[0]", "[1]", "[2]"], "scaled", factor=5.0))


def logsumexp(a):
    m = a.max(axis=1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))


def lse_loss(p, X, y):
    Y = np.eye(p["b"].size)[y]
    s = X.dot(p["W"]) + p["b"]
    return np.mean(logsumexp(s)[:, 0] - (Y * s).sum(axis=1))


def lse_grad(p, X, y, bug=False):
    Y = np.eye(p["b"].size)[y]
    s = X.dot(p["W"]) + p["b"]
    d = (np.exp(s - logsumexp(s)) - Y) / len(y)
    db = np.zeros_like(p["b"])
    if not bug:                    # bug: db is initialised and never accumulated
        db += d.sum(axis=0)
    return {"W": X.T.dot(d), "b": db}


LSE_RS = np.random.RandomState(73)
add(name="logsumexp_by_hand", style="multinomial logistic regression with a hand-written logsumexp, np.eye(C)[y]",
    bug="db left at its np.zeros_like start", params={"W": LSE_RS.randn(3, 4), "b": LSE_RS.randn(4)},
    args=(LSE_RS.randn(5, 3), np.array([0, 3, 1, 2, 3])), loss=lse_loss, grad=lse_grad, buggy=flip(lse_grad),
    expect={"b": ("zero", {})})


def inplace_relu_loss(p, X, y):
    h = X.dot(p["W1"]) + p["b1"]
    h[h < 0] = 0                                   # in-place ReLU
    scores = h.dot(p["W2"]) + p["b2"]
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return -np.log(probs[np.arange(len(y)), y]).mean()


def inplace_relu_grad(p, X, y, bug=False):
    N = len(y)
    h = X.dot(p["W1"]) + p["b1"]
    h[h < 0] = 0
    scores = h.dot(p["W2"]) + p["b2"]
    scores -= scores.max(axis=1, keepdims=True)
    dscores = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    dscores[np.arange(N), y] -= 1
    dscores /= N
    dh = dscores.dot(p["W2"] if bug else p["W2"].T)   # bug: W2 where W2.T belongs (square, so no error)
    dh[h <= 0] = 0
    return {"W1": X.T.dot(dh), "b1": dh.sum(axis=0), "W2": h.T.dot(dscores), "b2": dscores.sum(axis=0)}


IR_RS = np.random.RandomState(79)
add(name="inplace_relu_mask_write", style="ReLU written h[h < 0] = 0 in the loss, dh[h <= 0] = 0 going back",
    bug="dscores.dot(W2) instead of dscores.dot(W2.T) (square, so no shape error)",
    params={"W1": IR_RS.randn(2, 3), "b1": np.array([0.4, 0.3, 0.5]), "W2": IR_RS.randn(3, 3), "b2": np.zeros(3)},
    args=(IR_RS.randn(4, 2), np.array([0, 2, 1, 2])), loss=inplace_relu_loss, grad=inplace_relu_grad,
    buggy=flip(inplace_relu_grad), expect=every(["W1", "b1"], "wrong"))
