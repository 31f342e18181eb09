"""The JAX and SymPy references on learners' plain-numpy losses, against known gradients."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import numpy as np
import pytest

from gradcheck.errors import ReferenceUnavailable
from gradcheck.objective import Objective
from gradcheck.tree import flatten, validate_leaf

from nets import mazur_golden

pytest.importorskip("jax")
pytest.importorskip("sympy")


class _Lazy:
    """A module imported on first use, not when tests are collected (other tests may need to
    hide jax before gradcheck's reference modules are first imported)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


jax_ref = _Lazy("gradcheck.references.jax.reference")
sympy_ref = _Lazy("gradcheck.references.sympy.reference")



def objective(loss, params, *args, **kwargs) -> Objective:
    """The objective check() would build for loss(params, *args, **kwargs)."""
    names, leaves, treedef = flatten(params)
    arrays = [validate_leaf(n, v) for n, v in zip(names, leaves)]
    scalars = [isinstance(v, float) for v in leaves]
    return Objective(loss, treedef, arrays, args, kwargs, scalar_leaves=scalars)


def everything(obj: Objective) -> list:
    return [np.arange(x.size) for x in obj.x0]


def finite_differences(obj: Objective) -> list:
    """Central differences with one Richardson step (error ~1e-10 relative on smooth losses)."""
    out = []
    for k, x in enumerate(obj.x0):
        g = np.zeros(x.size)
        for i in range(x.size):
            h = 1e-3 * max(1.0, abs(float(x.reshape(-1)[i])))

            def d(step):
                return (obj(obj.perturb(obj.x0, k, i, x.reshape(-1)[i] + step))
                        - obj(obj.perturb(obj.x0, k, i, x.reshape(-1)[i] - step))) / (2 * step)

            g[i] = (4 * d(h / 2) - d(h)) / 3
        out.append(g.reshape(x.shape))
    return out


def assert_close(ref, expected, rtol, atol_scale):
    for got, want in zip(ref.values, expected):
        scale = max(float(np.max(np.abs(want))), 1e-300) if np.size(want) else 1.0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol_scale * scale)


# --- the tutorials' numpy, one operation family per case -----------------------------------------

rng = np.random.default_rng(7)
X = rng.normal(size=(5, 3))
Y = np.array([0, 2, 1, 1, 0])
W = rng.normal(size=(3, 4)) * 0.7
B = rng.normal(size=4) * 0.1
V = rng.normal(size=4)


def matmul_loss(p, X):
    return np.sum((X @ p["W"] + p["b"]) ** 2)


def dot_loss(p, X):
    return np.dot(np.dot(X, p["W"]).sum(axis=0), p["v"]) + np.dot(p["v"], p["v"])


def outer_loss(p, X):
    return np.sum(np.outer(p["v"], p["b"]) ** 2 * 0.5)


def exp_log_loss(p, X):
    return np.sum(np.log(np.exp(X @ p["W"]) + 1.0))


def log1p_logaddexp_loss(p, X):
    z = X @ p["W"]
    return np.sum(np.log1p(z**2)) + np.sum(np.logaddexp(z, 0.5 * z))


def tanh_sqrt_power_loss(p, X):
    h = np.tanh(X @ p["W"])
    return np.sum(np.sqrt(h**2 + 1.0)) + np.sum(np.power(p["b"], 3)) + np.sum(p["v"] ** 2)


def maximum_minimum_loss(p, X):
    z = X @ p["W"] + p["b"]
    return np.sum(np.maximum(z, 0.0) ** 2) + np.sum(np.minimum(z, 0.1))


def where_clip_abs_loss(p, X):
    z = X @ p["W"] + p["b"]
    leaky = np.where(z > 0, z, 0.01 * z)
    return np.sum(leaky) + np.sum(np.clip(z, -0.5, 0.5) ** 2) + np.sum(np.abs(z))


def reductions_loss(p, X):
    z = np.tanh(X @ p["W"])
    return (np.sum(z, axis=0, keepdims=True).sum() + np.mean(z, axis=1).sum()
            + np.max(z, axis=1, keepdims=True).sum() + np.var(z, axis=0).sum() + z.max() + z.mean()
            + np.var(z))


def transpose_reshape_loss(p, X):
    return np.sum((p["W"].T @ X.T).reshape(-1) ** 2) + np.sum(p["W"].reshape(2, 6)[1] ** 3)


def zeros_ones_like_loss(p, X):
    total = np.zeros_like(p["b"])
    total = total + p["b"] ** 2
    return np.sum(total * np.ones_like(p["b"]) * 3.0)


def softmax_cross_entropy(p, X, y):
    z = X @ p["W"] + p["b"]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    n = X.shape[0]
    return -np.mean(logp[np.arange(n), y])


def range_indexing_loop_loss(p, X, y):
    # The CS231n case study's style: a Python loop, and probs[range(n), y].
    scores = X @ p["W"] + p["b"]
    loss = 0.0
    for i in range(X.shape[0]):
        row = scores[i] - np.max(scores[i])
        loss += np.log(np.sum(np.exp(row)))
    probs = np.exp(scores) / np.sum(np.exp(scores), axis=1, keepdims=True)
    return loss / X.shape[0] - np.mean(np.log(probs[range(X.shape[0]), y]))


def broadcasting_loss(p, X):
    centres = p["W"].T[:, :3]  # (4, 3)
    return np.sum((X[:, None, :] - centres[None, :, :]) ** 2 * p["v"][None, :, None])


def python_float_loss(p, X):
    net = p["a"] * X[0, 0] + p["c"] * X[0, 1] + 0.25
    return (1.0 / (1.0 + np.exp(-net)) - 0.5) ** 2 + p["c"] ** 2


def zero_d_loss(p, X):
    return np.sum(X * p["s"]) ** 2 + p["s"] * 3.0


CASES = {
    "matmul": (matmul_loss, {"W": W, "b": B}, (X,)),
    "dot": (dot_loss, {"W": W, "v": V}, (X,)),
    "outer": (outer_loss, {"v": V, "b": B}, (X,)),
    "exp_log": (exp_log_loss, {"W": W}, (X,)),
    "log1p_logaddexp": (log1p_logaddexp_loss, {"W": W}, (X,)),
    "tanh_sqrt_power": (tanh_sqrt_power_loss, {"W": W, "b": B, "v": V}, (X,)),
    "maximum_minimum": (maximum_minimum_loss, {"W": W, "b": B}, (X,)),
    "where_clip_abs": (where_clip_abs_loss, {"W": W, "b": B}, (X,)),
    "reductions": (reductions_loss, {"W": W}, (X,)),
    "transpose_reshape": (transpose_reshape_loss, {"W": W}, (X,)),
    "zeros_ones_like": (zeros_ones_like_loss, {"b": B}, (X,)),
    "indexing_softmax": (softmax_cross_entropy, {"W": W, "b": B}, (X, Y)),
    "range_indexing_loop": (range_indexing_loop_loss, {"W": W, "b": B}, (X, Y)),
    "broadcasting": (broadcasting_loss, {"W": W, "v": V}, (X,)),
    "python_floats": (python_float_loss, {"a": 0.3, "c": -1.2}, (X,)),
    "zero_d_array": (zero_d_loss, {"s": np.array(0.7)}, (X,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_references_match_finite_differences(case):
    loss, params, args = CASES[case]
    obj = objective(loss, params, *args)
    expected = finite_differences(obj)
    jax = jax_ref.jax_gradient(obj, everything(obj))
    sym = sympy_ref.sympy_gradient(obj, everything(obj))
    assert_close(jax, expected, rtol=1e-7, atol_scale=1e-9)
    assert_close(sym, expected, rtol=1e-7, atol_scale=1e-9)
    # Both are exact: they agree to float64 rounding, far beyond finite differences.
    assert_close(jax, sym.values, rtol=1e-12, atol_scale=1e-14)
    assert jax.exact and sym.exact and jax.name == "jax" and sym.name == "sympy"


def test_sampled_plan_differentiates_one_element_at_a_time():
    loss, params, args = CASES["indexing_softmax"]
    obj = objective(loss, params, *args)
    sym = sympy_ref.sympy_gradient(obj, everything(obj), all_symbols_limit=0, max_elements=5)
    jax = jax_ref.jax_gradient(obj, everything(obj))
    assert sum(int(c.sum()) for c in sym.checked) == 5
    assert any("sampled: 5 of 16" in note for note in sym.notes)
    for s, j, c in zip(sym.values, jax.values, sym.checked):
        np.testing.assert_allclose(s[c], j[c], rtol=1e-12, atol=1e-15)
        assert np.isnan(s[~c]).all()


def test_selection_limits_what_is_reported():
    obj = objective(matmul_loss, {"W": W, "b": B}, X)
    selection = [np.array([0, 5]), np.array([], dtype=int)]
    for ref in (jax_ref.jax_gradient(obj, selection), sympy_ref.sympy_gradient(obj, selection)):
        assert ref.checked[0].reshape(-1).nonzero()[0].tolist() == [0, 5]
        assert not ref.checked[1].any() and np.isnan(ref.values[1]).all()
        assert np.isfinite(ref.errors[0][ref.checked[0]]).all()


def cancelling_loss(p):
    # d/dx [(x + 1e8)^2 - 2e8 x] = 2x, but float64 computes 2(x + 1e8) - 2e8: 8 digits cancel.
    return np.sum((p["x"] + 1e8) ** 2 - 2e8 * p["x"])


def test_sympy_is_exact_beyond_float64():
    obj = objective(cancelling_loss, {"x": np.array([1e-3, 3.0])})
    sym = sympy_ref.sympy_gradient(obj, everything(obj))
    np.testing.assert_array_equal(sym.values[0], [2e-3, 6.0])  # correctly rounded
    assert (sym.errors[0] <= 1e-30 * np.abs(sym.values[0])).all()
    jax = jax_ref.jax_gradient(obj, everything(obj))
    assert abs(jax.values[0][0] - 2e-3) > 1e-12  # float64 autodiff cannot avoid the cancellation


# --- Mazur's worked example ------------------------------------------------------------------------

def mazur_loss(p, i, t):
    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    out_h1 = sigmoid(p["w1"] * i[0] + p["w2"] * i[1] + p["b1"])
    out_h2 = sigmoid(p["w3"] * i[0] + p["w4"] * i[1] + p["b1"])
    out_o1 = sigmoid(p["w5"] * out_h1 + p["w6"] * out_h2 + p["b2"])
    out_o2 = sigmoid(p["w7"] * out_h1 + p["w8"] * out_h2 + p["b2"])
    return 0.5 * (t[0] - out_o1) ** 2 + 0.5 * (t[1] - out_o2) ** 2


@pytest.fixture(scope="module")
def mazur():
    golden = mazur_golden()
    setup = golden["setup"]
    params = {**setup["weights"], **setup["biases"]}
    inputs = np.array([setup["inputs"]["i1"], setup["inputs"]["i2"]])
    targets = np.array([setup["targets"]["o1"], setup["targets"]["o2"]])
    printed = {row["name"]: row for row in golden["printed"]}
    expected = {"w5": printed["dEtotal_dw5"]["float64_correct_backprop"],
                "w1": printed["dEtotal_dw1"]["float64_correct_backprop"]}
    notes = " ".join(golden["notes"])
    expected.update({m.group(1): float(m.group(2)) for m in re.finditer(r"dE/d(\w+) (-?\d+\.\d+(?:e-?\d+)?)", notes)})
    return objective(mazur_loss, params, inputs, targets), expected, printed


@pytest.mark.parametrize("reference", ["jax", "sympy"])
def test_mazur_gradients(mazur, reference):
    obj, expected, printed = mazur
    assert set(expected) == {f"w{i}" for i in range(1, 9)} | {"b1", "b2"}
    run = jax_ref.jax_gradient if reference == "jax" else sympy_ref.sympy_gradient
    ref = run(obj, everything(obj))
    names = list(obj.params(obj.x0))
    got = {name: float(v) for name, v in zip(names, ref.values)}
    for name, want in expected.items():
        assert got[name] == pytest.approx(want, rel=1e-13), name
    assert f"{got['w5']:.9f}" == printed["dEtotal_dw5"]["printed"]  # 0.082167041
    assert f"{got['w1']:.9f}" == printed["dEtotal_dw1"]["printed"]  # 0.000438568


def _symbols(text: str) -> dict:
    import sympy

    return {name: sympy.Symbol(name, real=True) for name in set(re.findall(r"[A-Za-z_]\w*", text))
            if name not in ("exp", "log", "tanh", "sqrt", "Abs", "Max", "Min")}


def test_mazur_formula_in_parameters_evaluates_to_the_printed_gradient(mazur):
    import sympy

    obj, _, printed = mazur
    formula = sympy_ref.sympy_formula(obj, "w5")
    expr = sympy.sympify(formula, locals=_symbols(formula))
    values = {sympy.Symbol(k, real=True): sympy.Rational(v) for k, v in obj.params(obj.x0).items()}
    assert f"{float(expr.evalf(30, subs=values)):.9f}" == "0.082167041" == printed["dEtotal_dw5"]["printed"]


def test_mazur_formula_in_the_networks_own_quantities(mazur):
    import sympy

    obj, _, _ = mazur
    text = sympy_ref.sympy_formula(obj, "w5", in_terms="locals")
    head, *definitions = [line.strip() for line in text.splitlines() if line.strip() != "where"]
    assert head == "dloss/dw5 = -out_h1*out_o1*(0.01 - out_o1)*(1 - out_o1)"
    values = {sympy.Symbol(k, real=True): sympy.Rational(v) for k, v in obj.params(obj.x0).items()}
    for line in definitions:  # out_h1 = ..., in order of definition
        name, rhs = (s.strip() for s in line.split("=", 1))
        values[sympy.Symbol(name, real=True)] = sympy.sympify(rhs, locals=_symbols(rhs)).evalf(40, subs=values)
    rhs = head.split("=", 1)[1]
    assert float(sympy.sympify(rhs, locals=_symbols(rhs)).evalf(30, subs=values)) == pytest.approx(
        0.08216704056423078, rel=1e-15)


def test_formulas_in_the_reference_are_derived_on_demand(mazur):
    obj, _, _ = mazur
    ref = sympy_ref.sympy_gradient(obj, everything(obj))
    assert len(ref.formulas) == 10 and ("w5", ()) in ref.formulas
    assert "out_o1*(0.01 - out_o1)*(1 - out_o1)" in ref.formulas[("w5", ())]


# --- code a reference cannot run ---------------------------------------------------------------

def inplace_loss(p, X):
    z = X @ p["W"]
    z[0, 0] = 0.0  # JAX runs it rewritten as z = z.at[0, 0].set(0.0)
    X[1] *= 2.0    # into the data itself
    return np.sum(z**2) + np.sum(X)


class Cache:
    """Where a learner keeps intermediate results."""


def attribute_write_loss(p, X):
    cache = Cache()
    cache.z = X @ p["W"]
    cache.z[0, 0] = 0.0  # through an attribute: not rewritten
    return np.sum(cache.z**2)


def svd_loss(p, X):
    return np.sum(np.linalg.svd(p["W"])[1])


def fft_loss(p, X):
    return np.sum(np.abs(np.fft.fft(X @ p["W"])))


def control_flow_loss(p, X):
    s = np.sum(X @ p["W"])
    if s > 0:
        return s**2
    return -s


def random_loss(p, X):
    return np.sum(X @ p["W"] * np.random.rand(4))


def test_jax_runs_assignment_into_arrays():
    obj = objective(inplace_loss, {"W": W}, X)
    assert_close(jax_ref.jax_gradient(obj, everything(obj)), finite_differences(obj), rtol=1e-7, atol_scale=1e-9)


def test_jax_names_the_in_place_assignment_and_its_line():
    obj = objective(attribute_write_loss, {"W": W}, X)
    with pytest.raises(ReferenceUnavailable, match=r"in-place assignment.*test_references_exact\.py:\d+ "
                                                   r"\(cache\.z\[0, 0\] = 0\.0"):
        jax_ref.jax_gradient(obj, everything(obj))
    # SymPy's object arrays accept the assignment; the other references carry on.
    sym = sympy_ref.sympy_gradient(obj, everything(obj))
    assert_close(sym, finite_differences(obj), rtol=1e-7, atol_scale=1e-9)


@pytest.mark.parametrize("loss, op", [(svd_loss, "np.linalg.svd"), (fft_loss, "np.fft.fft")])
def test_sympy_names_the_unsupported_operation_and_its_line(loss, op):
    obj = objective(loss, {"W": W}, X)
    with pytest.raises(ReferenceUnavailable) as info:
        sympy_ref.sympy_gradient(obj, everything(obj))
    message = str(info.value)
    assert f"numpy function {op} has no symbolic counterpart" in message
    assert re.search(rf"test_references_exact\.py:{loss.__code__.co_firstlineno + 1}\b", message)


@pytest.mark.parametrize("reference", [jax_ref.jax_gradient, sympy_ref.sympy_gradient])
def test_unseeded_draws_are_named_with_the_fix(reference):
    obj = objective(random_loss, {"W": W}, X)
    state = np.random.get_state()
    with pytest.raises(ReferenceUnavailable, match=r"np\.random\.rand draws random numbers inside the loss "
                                                   r"without a fixed seed.*np\.random\.seed\(0\).*"
                                                   r"test_references_exact\.py:\d+"):
        reference(obj, everything(obj))
    assert np.array_equal(np.random.get_state()[1], state[1]), "the caller's generator is untouched"


def test_python_control_flow():
    obj = objective(control_flow_loss, {"W": W}, X)
    jax = jax_ref.jax_gradient(obj, everything(obj))  # eager jax.grad follows the branch taken
    assert_close(jax, finite_differences(obj), rtol=1e-7, atol_scale=1e-9)
    assert any("without jit" in note for note in jax.notes)
    sym = sympy_ref.sympy_gradient(obj, everything(obj))  # `if s > 0:` decided at the point, as numpy does
    assert_close(sym, finite_differences(obj), rtol=1e-7, atol_scale=1e-9)
    assert not any(k.any() for k in sym.kinks)


def test_kink_at_an_exact_tie_is_reported_with_one_sided_derivatives():
    def relu_loss(p, X):
        z = X @ p["W"] + p["b"]
        return np.sum(np.maximum(z, 0.0) ** 2 + np.maximum(z, 0.0))

    Xk = np.array([[1.0, 2.0], [0.5, -1.0]])
    params = {"W": np.array([[1.0, -1.0], [0.5, 0.25]]), "b": np.array([-2.0, 0.5])}  # z[0] == 0 exactly
    obj = objective(relu_loss, params, Xk)
    sym = sympy_ref.sympy_gradient(obj, everything(obj))
    assert sym.kinks[0].all() and sym.kinks[1].all()
    np.testing.assert_array_equal(sym.lower[0], [[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(sym.upper[0], [[1.0, 1.0], [2.0, 2.0]])
    jax = jax_ref.jax_gradient(obj, everything(obj))
    np.testing.assert_array_equal(jax.values[1], sym.values[1])  # both split a tie evenly: 0.5


# --- JAX specifics -------------------------------------------------------------------------------

def test_user_jax_configuration_is_left_alone():
    import jax

    obj = objective(matmul_loss, {"W": W, "b": B}, X)
    before = jax.config.jax_enable_x64
    ref = jax_ref.jax_gradient(obj, everything(obj))
    assert jax.config.jax_enable_x64 == before
    assert ref.values[0].dtype == np.float64
    assert_close(ref, finite_differences(obj), rtol=1e-7, atol_scale=1e-9)  # float64, not float32


def test_full_gradient_and_batched_loss():
    loss, params, args = CASES["indexing_softmax"]
    obj = objective(loss, params, *args)
    full = jax_ref.jax_full_gradient(obj)
    ref = jax_ref.jax_gradient(obj, everything(obj))
    for f, v in zip(full, ref.values):
        np.testing.assert_array_equal(f, v)
    batched = jax_ref.batched_loss(obj)
    assert batched.offsets == tuple(np.cumsum([0] + [x.size for x in obj.x0])[:-1])
    # More rows than one call holds: chunks, the padded last one included, come back in order.
    k = len(obj.x0) - 1
    index = np.arange(2 * batched.rows + 3) % obj.x0[k].size
    values = np.linspace(-1.0, 1.0, index.size)
    expected = [obj(obj.perturb(obj.x0, k, int(i), v)) for i, v in zip(index, values)]
    np.testing.assert_allclose(batched(batched.offsets[k] + index, values), expected, rtol=1e-13)
    assert batched.f0 == pytest.approx(obj(obj.x0), rel=1e-13)
    assert jax_ref.batched_loss(obj) is batched  # built once per objective
    assert jax_ref.batched_loss(objective(attribute_write_loss, {"W": W}, X)) is None


SHIFT = 0.0


def shifted_loss(p, X):
    return np.sum((X @ p["W"] - SHIFT) ** 2)


def test_compiled_loss_is_reused_but_not_when_a_global_changes(monkeypatch):
    first = jax_ref.jax_full_gradient(objective(shifted_loss, {"W": W}, X))
    again = jax_ref.jax_full_gradient(objective(shifted_loss, {"W": W}, X))
    np.testing.assert_array_equal(first[0], again[0])
    monkeypatch.setattr(sys.modules[__name__], "SHIFT", 1.0)
    moved = jax_ref.jax_full_gradient(objective(shifted_loss, {"W": W}, X))
    np.testing.assert_allclose(moved[0], first[0] - 2 * X.sum(axis=0)[:, None], rtol=1e-12)


class Scaled:
    """A learner's model object whose loss reads its own state."""

    def __init__(self, k):
        self.k = k
        self.target = np.zeros(4)

    def loss(self, p, X):
        return self.k * np.sum(np.tanh(X @ p["W"] - self.target) ** 2)


def test_compiled_method_follows_the_objects_state():
    model = Scaled(1.0)
    first = jax_ref.jax_full_gradient(objective(model.loss, {"W": W}, X))[0]
    model.k = 3.0  # reassigned
    np.testing.assert_allclose(jax_ref.jax_full_gradient(objective(model.loss, {"W": W}, X))[0], 3 * first,
                               rtol=1e-12)
    model.target += 0.5  # written in place
    moved = objective(model.loss, {"W": W}, X)
    np.testing.assert_allclose(jax_ref.jax_full_gradient(moved)[0], finite_differences(moved)[0],
                               rtol=1e-7, atol=1e-9)


class TwoLayer:
    """The object-oriented learner: weights on the object, a wrapper sets them and calls it."""

    def __init__(self):
        self.W = np.zeros((3, 4))
        self.reg = 0.05

    def forward(self, X):
        return np.tanh(X @ self.W)

    def loss(self, X):
        return np.sum(self.forward(X) ** 2) + self.reg * np.sum(self.W ** 2)

    def grad(self, X, sign=1.0):
        h = self.forward(X)
        return sign * X.T @ (2 * h * (1 - h ** 2)) + 2 * self.reg * self.W


MODEL = TwoLayer()


def model_loss(p, X):
    MODEL.W = p["W"]
    return MODEL.loss(X)


@pytest.mark.parametrize("reference", ["jax", "sympy"])
def test_a_model_object_reached_through_a_global_is_re_run(reference):
    import gradcheck

    def grad(p, X, sign=1.0):
        MODEL.W = p["W"]
        return {"W": MODEL.grad(X, sign)}

    params = {"W": W.copy()}
    report = gradcheck.check(model_loss, grad, params, (X,), against=(reference,))
    assert report.passed, str(report)
    wrong = gradcheck.check(model_loss, lambda p, X: grad(p, X, -1.0), params, (X,), against=(reference,))
    # The data term's sign flipped, the regulariser's not: no single factor explains it.
    assert not wrong.passed and wrong["W"].diagnosis == "wrong", str(wrong)
    np.testing.assert_array_equal(params["W"], W)


def loss_with_model_argument(p, model, X):
    model.W = p["W"]
    return model.loss(X)


def loss_with_activation_argument(p, X, act):
    return np.sum(act(X @ p["W"]))


@pytest.mark.parametrize("reference", ["jax", "sympy"])
def test_objects_and_functions_passed_as_arguments_are_re_run(reference):
    import gradcheck

    def grad(p, model, X):
        model.W = p["W"]
        return {"W": model.grad(X)}

    model = TwoLayer()
    state = dict(vars(model))
    report = gradcheck.check(loss_with_model_argument, grad, {"W": W.copy()}, (model, X), against=(reference,))
    assert report.passed, str(report)
    assert vars(model).keys() == state.keys() and model.reg == state["reg"]
    act = gradcheck.check(loss_with_activation_argument, lambda p, X, act: {"W": X.T @ (1 - np.tanh(X @ p["W"]) ** 2)},
                          {"W": W.copy()}, (X, np.tanh), against=(reference,))
    assert act.passed, str(act)


def test_references_never_touch_the_callers_data():
    data = X.copy()
    obj = objective(inplace_loss, {"W": W}, data)
    sympy_ref.sympy_gradient(obj, everything(obj))
    jax_ref.jax_gradient(obj, everything(obj))
    np.testing.assert_array_equal(data, X)
    np.testing.assert_array_equal(obj.args[0], X)


def test_jax_keeps_its_own_copy_of_the_data():
    # The JAX program holds the data it was built with; writing into the caller's array later
    # (a learner reusing a batch buffer) must neither reach it nor be reached by it.
    data = X.copy()
    obj = objective(shifted_loss, {"W": W}, data)
    before = jax_ref.jax_full_gradient(obj)[0]
    data[...] = 0.0
    np.testing.assert_array_equal(jax_ref.jax_full_gradient(obj)[0], before)
    leaf = W.copy()
    jax_ref.jax_value_and_grad(obj, [leaf])
    np.testing.assert_array_equal(leaf, W)


def test_importing_gradcheck_loads_no_reference_machinery():
    code = ("import sys, gradcheck; "
            "bad = [m for m in ('jax', 'sympy', 'mpmath', 'gradcheck.usercode.rebind', 'gradcheck.references.sympy.symnp', "
            "'gradcheck.references.jax.reference', 'gradcheck.references.sympy.reference') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
