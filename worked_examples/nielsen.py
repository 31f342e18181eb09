"""A network in the style of Nielsen's "Neural Networks and Deep Learning" (network.py, network2.py).

Parameters are lists with one entry per layer: weights[l] has shape (n_out, n_in) and
biases[l] is a column (n_out, 1); an input is a column (n_in, 1).

    a^0 = x,   z^l = W^l a^(l-1) + b^l,   a^l = sigmoid(z^l)

Backprop for one example (the four equations of chapter 2):
    delta^L  = dC/da^L * sigmoid'(z^L)                     (cost-specific, see the costs)
    delta^l  = (W^(l+1)^T delta^(l+1)) * sigmoid'(z^l)
    dC/db^l  = delta^l,    dC/dW^l = delta^l a^(l-1)^T

A mini-batch stacks examples as the columns of X; its cost is the mean of the
per-example costs, so its gradient is the mean of the per-example gradients.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    """The logistic function 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    """d sigmoid / dz = sigmoid(z) (1 - sigmoid(z))."""
    return sigmoid(z) * (1.0 - sigmoid(z))


class QuadraticCost:
    """C = 1/2 ||a - y||^2 per example."""

    @staticmethod
    def fn(a, y):
        return 0.5 * np.sum((a - y) ** 2)

    @staticmethod
    def delta(z, a, y):
        """dC/dz^L = (a - y) * sigmoid'(z)."""
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    """C = -sum [y ln a + (1 - y) ln(1 - a)] per example."""

    @staticmethod
    def fn(a, y):
        return np.sum(-y * np.log(a) - (1.0 - y) * np.log(1.0 - a))

    @staticmethod
    def delta(z, a, y):
        """dC/dz^L = a - y: the sigmoid' of the output cancels against the cost's derivative."""
        return a - y


def feedforward(params: dict, a: np.ndarray) -> np.ndarray:
    """The output activations for the column(s) a."""
    for W, b in zip(params["weights"], params["biases"]):
        a = sigmoid(W @ a + b)
    return a


def backprop(params: dict, x: np.ndarray, y: np.ndarray, cost: type = QuadraticCost) -> tuple[list, list]:
    """(nabla_b, nabla_w): the gradient of the cost for ONE example x (n_in, 1)."""
    weights, biases = params["weights"], params["biases"]
    # forward pass, keeping every z and activation for the way back
    activation, activations, zs = x, [x], []
    for W, b in zip(weights, biases):
        z = W @ activation + b
        zs.append(z)
        activation = sigmoid(z)
        activations.append(activation)
    # backward pass, from the output layer down
    nabla_b = [None] * len(biases)
    nabla_w = [None] * len(weights)
    delta = cost.delta(zs[-1], activations[-1], y)
    nabla_b[-1] = delta
    nabla_w[-1] = delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        delta = (weights[-l + 1].T @ delta) * sigmoid_prime(zs[-l])
        nabla_b[-l] = delta
        nabla_w[-l] = delta @ activations[-l - 1].T
    return nabla_b, nabla_w


def make_cost(cost: type):
    """(loss, grad) of the mean cost over a mini-batch whose examples are the columns of X, Y."""

    def loss(params: dict, X: np.ndarray, Y: np.ndarray):
        return cost.fn(feedforward(params, X), Y) / X.shape[1]

    def grad(params: dict, X: np.ndarray, Y: np.ndarray) -> dict:
        m = X.shape[1]
        sum_b = [np.zeros_like(b) for b in params["biases"]]
        sum_w = [np.zeros_like(W) for W in params["weights"]]
        for j in range(m):
            nabla_b, nabla_w = backprop(params, X[:, [j]], Y[:, [j]], cost)
            sum_b = [s + n for s, n in zip(sum_b, nabla_b)]
            sum_w = [s + n for s, n in zip(sum_w, nabla_w)]
        return {"weights": [s / m for s in sum_w], "biases": [s / m for s in sum_b]}

    loss.__name__, grad.__name__ = f"{cost.__name__}_loss", f"{cost.__name__}_grad"
    return loss, grad


quadratic_loss, quadratic_grad = make_cost(QuadraticCost)
cross_entropy_loss, cross_entropy_grad = make_cost(CrossEntropyCost)


def mazur_params() -> dict:
    """Mazur's 2-2-2 network in this layout; his shared bias fills both entries of each column."""
    return {"weights": [np.array([[0.15, 0.20], [0.25, 0.30]]), np.array([[0.40, 0.45], [0.50, 0.55]])],
            "biases": [np.array([[0.35], [0.35]]), np.array([[0.60], [0.60]])]}


MAZUR_X = np.array([[0.05], [0.10]])
MAZUR_Y = np.array([[0.01], [0.99]])


def random_params(sizes: tuple = (3, 4, 2), seed: int = 1) -> dict:
    """Gaussian weights scaled by 1/sqrt(n_in) (network2's default) and Gaussian biases."""
    rng = np.random.default_rng(seed)
    return {"weights": [rng.standard_normal((n, m)) / np.sqrt(m) for m, n in zip(sizes[:-1], sizes[1:])],
            "biases": [rng.standard_normal((n, 1)) for n in sizes[1:]]}


# A mini-batch of 5 examples (columns) with one-hot targets.
_rng = np.random.default_rng(2)
BATCH_X = _rng.standard_normal((3, 5))
BATCH_Y = np.eye(2)[:, _rng.integers(0, 2, size=5)]


def cases() -> list[dict]:
    """Mazur's example in Nielsen's layout, and a mini-batch under each cost."""
    return [
        {
            "name": "nielsen-mazur",
            "kind": "gradient",
            "loss": quadratic_loss,
            "grad": quadratic_grad,
            "params": mazur_params(),
            "args": (MAZUR_X, MAZUR_Y),
            "expect": "pass",
            "description": "Nielsen-style backprop (lists of layers, column biases) on Mazur's weights and example.",
        },
        {
            "name": "nielsen-quadratic",
            "kind": "gradient",
            "loss": quadratic_loss,
            "grad": quadratic_grad,
            "params": random_params(),
            "args": (BATCH_X, BATCH_Y),
            "expect": "pass",
            "description": "A 3-4-2 Nielsen-style network, quadratic cost averaged over a mini-batch of 5.",
        },
        {
            "name": "nielsen-cross-entropy",
            "kind": "gradient",
            "loss": cross_entropy_loss,
            "grad": cross_entropy_grad,
            "params": random_params(),
            "args": (BATCH_X, BATCH_Y),
            "expect": "pass",
            "description": "The same network with the cross-entropy cost, whose output delta is a - y.",
        },
    ]
