"""A learner's own scalar autodiff engine, in the spirit of Karpathy's micrograd.

Each `Value` remembers the values it was made from and how to send its gradient back to
them. `backward()` visits the graph in reverse topological order, so each node has
received the gradient from all of its users before it passes its own on; gradients
accumulate with += because a value used twice gets a contribution from each use.

The forward arithmetic goes through the module-level `np`, so the same graph can be
re-run on other number types; the engine is "hand-written backprop" like any other.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np


class Value:
    """A scalar with a gradient slot and the recipe to backpropagate into its inputs."""

    def __init__(self, data, _children: tuple = (), _op: str = "") -> None:
        self.data = data
        self.grad = 0.0
        self._backward: Callable[[], None] = lambda: None
        self._prev = _children
        self._op = _op

    def __add__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward() -> None:
            # d(a + b)/da = d(a + b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._backward = _backward
        return out

    def __mul__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward() -> None:
            # d(a b)/da = b, d(a b)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = _backward
        return out

    def __pow__(self, k: float) -> Value:
        assert isinstance(k, (int, float)), "only constant int/float exponents"
        out = Value(self.data ** k, (self,), f"**{k}")

        def _backward() -> None:
            # d(a^k)/da = k a^(k-1)
            self.grad += k * self.data ** (k - 1) * out.grad
        out._backward = _backward
        return out

    def exp(self) -> Value:
        out = Value(np.exp(self.data), (self,), "exp")

        def _backward() -> None:
            # d e^a / da = e^a
            self.grad += out.data * out.grad
        out._backward = _backward
        return out

    def tanh(self) -> Value:
        out = Value(np.tanh(self.data), (self,), "tanh")

        def _backward() -> None:
            # d tanh(a)/da = 1 - tanh(a)^2
            self.grad += (1.0 - out.data ** 2) * out.grad
        out._backward = _backward
        return out

    def relu(self) -> Value:
        out = Value(np.maximum(self.data, 0.0), (self,), "relu")

        def _backward() -> None:
            # d max(a, 0)/da = 1 where a > 0, else 0
            self.grad += (out.data > 0) * out.grad
        out._backward = _backward
        return out

    def backward(self) -> None:
        """Fill .grad of every value this one depends on with d self / d value."""
        order, seen = [], set()

        def visit(v: Value) -> None:
            if id(v) not in seen:
                seen.add(id(v))
                for child in v._prev:
                    visit(child)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()

    # everything else is built from the operations above
    def __neg__(self) -> Value:
        return self * -1.0

    def __sub__(self, other) -> Value:
        return self + (-other)

    def __truediv__(self, other) -> Value:
        return self * other ** -1

    def __radd__(self, other) -> Value:
        return self + other

    def __rsub__(self, other) -> Value:
        return other + (-self)

    def __rmul__(self, other) -> Value:
        return self * other

    def __rtruediv__(self, other) -> Value:
        return other * self ** -1

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"


def readme_expression(a: Value, b: Value) -> Value:
    """The expression from micrograd's README; with a = -4, b = 2 it gives g = 24.7041."""
    c = a + b
    d = a * b + b ** 3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e ** 2
    g = f / 2.0
    g += 10.0 / f
    return g


def neuron(x1: Value, x2: Value, w1: Value, w2: Value, b: Value) -> Value:
    """A 2-input neuron with tanh spelled out through exp and division: (e^2n - 1) / (e^2n + 1)."""
    n = x1 * w1 + x2 * w2 + b
    e = (2 * n).exp()
    return (e - 1) / (e + 1)


def as_loss_and_grad(build: Callable[..., Value]) -> tuple[Callable, Callable]:
    """(loss, grad) over a params dict keyed by `build`'s argument names, for a gradient checker."""
    names = list(inspect.signature(build).parameters)

    def run(params: dict) -> tuple:
        leaves = {k: Value(params[k]) for k in names}
        return build(**leaves), leaves

    def loss(params: dict):
        return run(params)[0].data

    def grad(params: dict) -> dict:
        out, leaves = run(params)
        out.backward()
        return {k: leaves[k].grad for k in names}

    return loss, grad


README_START = {"a": -4.0, "b": 2.0}
NEURON_START = {"x1": 2.0, "x2": 0.0, "w1": -3.0, "w2": 1.0, "b": 6.8813735870195432}


def cases() -> list[dict]:
    """The engine on micrograd's README expression and on a tanh neuron built from exp."""
    readme_loss, readme_grad = as_loss_and_grad(readme_expression)
    neuron_loss, neuron_grad = as_loss_and_grad(neuron)
    return [
        {
            "name": "micrograd-readme",
            "kind": "gradient",
            "loss": readme_loss,
            "grad": readme_grad,
            "params": dict(README_START),
            "args": (),
            "expect": "pass",
            "description": "A hand-written scalar autodiff engine on micrograd's README expression (a=-4, b=2).",
        },
        {
            "name": "micrograd-neuron",
            "kind": "gradient",
            "loss": neuron_loss,
            "grad": neuron_grad,
            "params": dict(NEURON_START),
            "args": (),
            "expect": "pass",
            "description": "The same engine on a 2-input neuron whose tanh is built from exp, +, - and /.",
        },
    ]
