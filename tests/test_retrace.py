"""rebind: a learner's plain-numpy function re-run under another namespace, without side effects."""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
import math
import sys
import types
from math import exp as math_exp
from typing import NamedTuple
from numpy import exp, tanh as np_tanh

import numpy as np
import pytest

from gradcheck.usercode.frames import is_user_code, user_location
from gradcheck.usercode.rebind import rebind, rebind_guarded

SCALE = 2.0


class Recording(types.ModuleType):
    """numpy, recording which names the rebound code looked up (and tagging the module)."""

    def __init__(self) -> None:
        super().__init__("recording_numpy")
        self.used: list[str] = []

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self.used.append(name)
        return getattr(np, name)


# --- user code of every shape rebind must reach --------------------------------------------------

def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def loss_with_helper(w, x):
    return np.sum(sigmoid(w * x)) * SCALE


def loss_imported_names(w, x):
    return float(np.sum(exp(w * x) + np_tanh(x))) + math_exp(0.5)


def loss_math_module(w, x):
    return math.exp(w[0]) + math.tanh(w[1] * x[1])


def countdown(n, w):
    return np.sum(w) if n == 0 else countdown(n - 1, w) + np.sum(np.abs(w))


def loss_recursive(w, x):
    return countdown(2, w * x)


def make_closure(k):
    def inner(w, x):
        return k * np.sum(np.square(w - x))
    return inner


def loss_with_xp(w, x, xp=np):
    return xp.sum(xp.exp(w) * x)


def loss_with_linalg(w, x):
    return np.linalg.norm(w * x)


def loss_missing(w, x):
    return np.busday_count(w, x)


def loss_default_activation(w, x, act=np.tanh):
    return np.sum(act(w * x))


class Model:
    def __init__(self, k):
        self.k = k

    def forward(self, w, x):
        return np.tanh(w * x) * self.k

    def loss(self, w, x):
        return np.sum(self.forward(w, x))

    def __call__(self, w, x):
        return self.loss(w, x)


class Doubled(Model):
    def forward(self, w, x):
        return super().forward(w, x) * 2


class CrossEntropy:
    """Nielsen's cost classes: static methods, the class itself passed around."""

    @staticmethod
    def fn(a, y):
        return np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a))

    @staticmethod
    def mean(a, y):
        return CrossEntropy.fn(a, y) / len(a)  # names its own class


def make_cost_loss(cost):
    def loss(w, x):
        return cost.mean(1 / (1 + np.exp(-w * x)), np.array([0.0, 1.0]))
    return loss


class Network:
    def __init__(self, cost, activation=np.tanh):
        self.cost, self.activation, self.net = cost, activation, self

    def loss(self, w, x):
        return self.net.cost.fn(1 / (1 + np.exp(-self.activation(w * x))), np.array([0.0, 1.0]))


class Layer:
    def __init__(self, scale):
        self.scale = scale


def loss_checking_types(w, x, layer):
    assert isinstance(layer, Layer) and issubclass(type(layer), Layer)
    return np.sum(np.exp(w * x)) * layer.scale


class Mode(enum.Enum):  # cannot be subclassed
    TRAIN = 1
    EVAL = 2


class Pair(NamedTuple):
    a: float
    b: float

    def total(self, w):
        return np.sum(np.exp(w)) * (self.a + self.b)


@dataclasses.dataclass(frozen=True)
class Frozen:
    k: float

    def apply(self, w):
        return np.tanh(w) * self.k


class Base(abc.ABC):
    registered: list = []

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Base.registered.append(cls)

    @abc.abstractmethod
    def act(self, z): ...


class Sine(Base):
    def act(self, z):
        return np.sin(z)


MODE = Mode.TRAIN


def loss_with_classes_of_every_kind(w, x):
    scale = 2.0 if MODE is Mode(1) and Mode.TRAIN is MODE else 1.0
    return scale * Pair(1.0, 2.0).total(w) + np.sum(Frozen(3.0).apply(w * x)) + np.sum(Sine().act(w))


class Perceptron:
    def __init__(self):
        self.w = np.zeros(2)

    def forward(self, x):
        return np.tanh(self.w * x)


NET = Perceptron()


def loss_through_a_global_model(w, x):
    NET.w = w  # the learner's own wrapper: set the weights, call the model
    return np.sum(NET.forward(x))


class Counting(type):
    """A metaclass of the user's own."""


class WithMeta(metaclass=Counting):
    def f(self, w):
        return np.tanh(w)


@dataclasses.dataclass(slots=True)
class Slotted:
    k: float = 3.0

    def f(self, w):
        return np.sin(w) * self.k


class Dynamic:
    def __getattr__(self, name):
        if name == "act":
            return np.cosh
        raise AttributeError(name)


class Locked:
    __slots__ = ("k",)

    def __init__(self):
        object.__setattr__(self, "k", 0.5)

    def __setattr__(self, name, value):
        raise AttributeError("locked")

    def f(self, w):
        return np.log1p(w * w) * self.k


class Layers(list):
    """A builtin's subclass: copied with copy.copy, then given the rebound class."""

    def f(self, w):
        return np.exp(w) * len(self)


ODD = (WithMeta(), Slotted(), Locked(), Layers([1, 2]))
DYNAMIC = Dynamic()


def loss_through_a_dynamic_attribute(w, x):
    return np.sum(DYNAMIC.act(w * x))


OFFSET = np.array([1.0, 2.0])


def loss_reading_a_global_array(w, x):
    return np.sum((w - OFFSET) ** 2 * x)


W = np.array([0.5, -1.0])
X = np.array([1.0, 2.0])


def run(fn, *args):
    ns = Recording()
    out = rebind(fn, ns)(*(args or (W, X)))
    return out, ns.used


# --- tests --------------------------------------------------------------------------------------

def test_helpers_are_rebound_and_values_unchanged():
    out, used = run(loss_with_helper)
    assert out == pytest.approx(loss_with_helper(W, X))
    assert "sum" in used and "exp" in used  # exp is called inside the helper


def test_user_module_globals_untouched():
    before = dict(globals())
    rebound = rebind(loss_with_helper, Recording())
    rebound(W, X)
    after = dict(globals())
    assert before.keys() == after.keys()
    assert all(before[k] is after[k] for k in before)
    assert np is globals()["np"] and sigmoid.__globals__ is globals()
    assert rebound.__globals__ is not globals()


def test_from_numpy_import_names_are_rebound():
    out, used = run(loss_imported_names)
    assert out == pytest.approx(loss_imported_names(W, X))
    assert "exp" in used and "tanh" in used


def test_math_functions_map_to_the_namespace():
    out, used = run(loss_math_module)
    assert out == pytest.approx(loss_math_module(W, X))
    assert "exp" in used and "tanh" in used
    assert math.exp is math_exp  # the real math module is untouched


def test_recursion_is_memoized():
    out, used = run(loss_recursive)
    assert out == pytest.approx(loss_recursive(W, X))
    assert used.count("sum") == 3


def test_closures_and_partials():
    out, used = run(make_closure(3.0))
    assert out == pytest.approx(make_closure(3.0)(W, X)) and "square" in used
    out, used = run(functools.partial(loss_with_helper, x=X), W)
    assert out == pytest.approx(loss_with_helper(W, X)) and "exp" in used


def test_default_arguments_are_rebound():
    _, used = run(loss_default_activation)
    assert "tanh" in used


def test_xp_parameter_receives_the_namespace():
    ns = Recording()
    rebound = rebind(loss_with_xp, ns)
    assert isinstance(rebound, functools.partial) and rebound.keywords == {"xp": ns}
    assert rebound(W, X) == pytest.approx(loss_with_xp(W, X))
    assert ns.used == ["sum", "exp"]


@pytest.mark.parametrize("make", [lambda: Model(3).loss, lambda: Model(3), lambda: Doubled(3).loss],
                         ids=["bound method", "callable object", "subclass using super()"])
def test_methods_and_objects(make):
    fn = make()
    classes = {cls: dict(vars(cls)) for cls in (Model, Doubled)}
    state = dict(vars(fn.__self__ if isinstance(fn, types.MethodType) else fn))
    out, used = run(fn)
    assert out == pytest.approx(fn(W, X))
    assert used.count("tanh") == 1  # reached through self.forward (and super().forward)
    for cls, before in classes.items():  # the user's classes and object are untouched
        assert dict(vars(cls)) == before
    assert dict(vars(fn.__self__ if isinstance(fn, types.MethodType) else fn)) == state


def test_classes_in_closures_and_attributes_are_rebound():
    loss = make_cost_loss(CrossEntropy)
    before = dict(vars(CrossEntropy))
    out, used = run(loss)
    assert out == pytest.approx(loss(W, X))
    assert used.count("log") == 2  # inside CrossEntropy.fn, reached through CrossEntropy.mean
    network = Network(CrossEntropy)
    state = dict(vars(network))
    out, used = run(network.loss)
    assert out == pytest.approx(network.loss(W, X))
    assert {"tanh", "log", "exp"} <= set(used)  # self.activation, self.net.cost.fn (net is self)
    assert dict(vars(CrossEntropy)) == before and dict(vars(network)) == state
    assert network.cost is CrossEntropy and network.activation is np.tanh


def test_rebound_classes_answer_isinstance_as_the_originals():
    layer = Layer(2.0)  # an object made outside, handed over as an argument
    out, used = run(loss_checking_types, W, X, layer)
    assert out == pytest.approx(loss_checking_types(W, X, layer)) and "sum" in used


def test_classes_of_every_kind_are_rebound_or_left_as_they_are():
    out, used = run(loss_with_classes_of_every_kind)
    assert out == pytest.approx(loss_with_classes_of_every_kind(W, X))
    assert {"exp", "tanh", "sin"} <= set(used)  # methods of the NamedTuple, the dataclass, the ABC
    assert Sine in Base.registered  # __init_subclass__ ran (for the copy too: see retrace's docstring)


def test_a_model_object_in_a_global_is_copied_and_rebound():
    out, used = run(loss_through_a_global_model)
    assert out == pytest.approx(np.sum(np.tanh(W * X))) and "tanh" in used
    assert NET.w is not W and not NET.w.any()  # the weights were set on the copy, not on NET


def loss_with_a_model_argument(w, x, model, act):
    return np.sum(model.forward(x) * act(w))


def test_arguments_are_rebound_when_given_as_data():
    model = Perceptron()
    model.w = np.array([0.3, 0.1])
    data = ([X], {"model": model, "act": np.tanh}, 3)
    ns = Recording()
    fn, (xs, named, three) = rebind(loss_with_a_model_argument, ns, data=data)
    assert xs[0] is X and three == 3 and named["act"] is np.tanh  # Recording hands out numpy's own
    assert named["model"] is not model and isinstance(named["model"], Perceptron)
    assert fn(W, xs[0], **named) == pytest.approx(loss_with_a_model_argument(W, X, model, np.tanh))
    assert "tanh" in ns.used and vars(model).keys() == {"w"}


@pytest.mark.parametrize("obj", ODD, ids=["own metaclass", "slotted dataclass", "locked __setattr__",
                                         "list subclass"])
def test_objects_of_unusual_classes_are_copied_and_rebound(obj):
    def loss(w, x):
        return np.sum(obj.f(w * x))  # obj reached through a closure

    jax = pytest.importorskip("jax")
    traced = jax.jit(rebind(loss, jax.numpy))  # a method left on numpy would fail on the tracer
    assert float(traced(W, X)) == pytest.approx(loss(W, X), rel=1e-6)


def test_an_attribute_served_by_getattr_is_seen_as_the_user_sees_it():
    out, _ = run(loss_through_a_dynamic_attribute)
    assert out == pytest.approx(loss_through_a_dynamic_attribute(W, X))


def test_guard_notices_state_changed_in_place():
    network = Network(CrossEntropy)
    _, unchanged = rebind_guarded(network.loss, Recording())
    assert unchanged()
    network.activation = np.sin  # an attribute the copy was built from
    assert not unchanged()
    _, unchanged = rebind_guarded(loss_reading_a_global_array, Recording())
    assert unchanged()
    OFFSET[0] += 1.0  # a global array written in place: what JAX compiled from it is stale
    try:
        assert not unchanged()
    finally:
        OFFSET[0] -= 1.0
    assert unchanged()


def test_submodules_follow_the_namespace():
    _, used = run(loss_with_linalg)
    assert "linalg" in used


def test_missing_function_raises_when_used_not_when_rebound():
    class Small(types.ModuleType):
        def __getattr__(self, name):
            raise AttributeError(f"np.{name} has no counterpart here")

    rebound = rebind(loss_missing, Small("small"))  # rebinding itself succeeds
    with pytest.raises(AttributeError, match="busday_count has no counterpart"):
        rebound(W, X)


def test_guard_notices_a_reassigned_global(monkeypatch):
    rebound, unchanged = rebind_guarded(loss_with_helper, Recording())
    assert unchanged()
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)
    assert not unchanged()
    assert rebound(W, X) == pytest.approx(loss_with_helper(W, X) / 3.0 * 2.0)  # the copy kept its snapshot


def test_user_code_detection():
    import json

    assert is_user_code(sigmoid)
    assert not is_user_code(json.dumps)  # the standard library
    assert not is_user_code(pytest.approx)  # site-packages


def test_user_location_names_the_users_line():
    def broken(w, x):
        return np.nonexistent(w)  # noqa

    try:
        rebind(broken, np)(W, X)
    except AttributeError as exc:
        where = user_location(exc)
    assert where.startswith("test_retrace.py:") and "np.nonexistent" in where


def test_functions_reached_through_a_user_module(tmp_path, monkeypatch):
    (tmp_path / "layers_for_rebind_test.py").write_text(
        "import numpy as np\n\ndef relu(z):\n    return np.maximum(z, 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import layers_for_rebind_test as layers

    def loss(w, x):
        return np.sum(layers.relu(w * x))

    before = dict(vars(layers))
    out, used = run(loss)
    assert out == pytest.approx(loss(W, X))
    assert "maximum" in used
    assert dict(vars(layers)) == before and layers.np is np
