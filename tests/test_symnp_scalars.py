"""One number taken out of an array, used the way learners use it, followed by the SymPy re-run.

numpy hands out a scalar for `scores[j]`, `for v in margins`, `np.sum(...)` or `np.dot(w, x)`, and
learners branch on it (`if margin > 0:`), pass it to `max()`, `abs()`, `math.exp()`, `float()`,
`sum()`, loop `while` on it, compare it with `==`, mix it with bools (`p[j] - (j == y[i])`) and
return it as the loss. Under SymPy these are symnp.SymScalars: comparisons and truth are decided
at the point being differentiated, as numpy and any autodiff decide them, and bools count as 0/1.

Each idiom comes as a pair, checked against SymPy alone: the correct gradient passes with SymPy
having run, and the planted bug fails with the expected diagnosis.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest

import gradcheck
from gradcheck.objective import Objective
from gradcheck.tree import flatten, validate_leaf

from nets import LOOP_W, LOOP_X, loop_grad, loop_loss

sympy = pytest.importorskip("sympy")

RS = np.random.RandomState(11)
X = RS.randn(6, 3)
Y_SIGN = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
Y_REAL = RS.randn(6)
Y_CLASS = np.array([0, 2, 1, 1, 0, 2])
W = 0.4 * RS.randn(3)
W_MATRIX = 0.5 * RS.randn(3, 3)


def objective(loss, params, *args) -> Objective:
    """The objective check() would build for loss(params, *args)."""
    names, leaves, treedef = flatten(params)
    return Objective(loss, treedef, [validate_leaf(n, v) for n, v in zip(names, leaves)], args, {},
                     scalar_leaves=[isinstance(v, float) for v in leaves])


def against_sympy(loss, grad, params, args) -> gradcheck.Report:
    """A check judged by SymPy alone, which must have run."""
    report = gradcheck.check(loss, grad, params, args=args, against="sympy")
    status = next(s for s in report.references if s.name == "sympy")
    assert status.ran, status.reason
    return report


def assert_pair(loss, grad, buggy, params, args, diagnosis: str) -> None:
    """The correct gradient passes; the planted bug fails with `diagnosis` on every parameter."""
    good = against_sympy(loss, grad, params, args)
    assert good.passed, str(good)
    bad = against_sympy(loss, buggy, params, args)
    assert not bad.passed, str(bad)
    assert {p.diagnosis for p in bad.failures} == {diagnosis}, str(bad)


# --- `if m > 0:` on each element of a loop `for m in margins` --------------------------------

def hinge_loss(w, X, y):
    margins = 1 - y * X.dot(w)
    loss = 0.0
    for m in margins:
        if m > 0:
            loss += m
    return loss / len(y)


def hinge_grad(w, X, y, bug=False):
    margins = 1 - y * X.dot(w)
    dw = np.zeros_like(w)
    for i in range(len(y)):
        if margins[i] > 0:
            dw += y[i] * X[i] if bug else -y[i] * X[i]   # bug: the sign of d margin / d w
    return dw / len(y)


def test_if_on_each_element_of_a_loop():
    w = 4 * W
    assert 0 < np.sum(1 - Y_SIGN * X.dot(w) > 0) < len(Y_SIGN), "both branches are taken"
    assert_pair(hinge_loss, hinge_grad, lambda *a: hinge_grad(*a, bug=True), w, (X, Y_SIGN), "sign_flipped")


# --- the builtin max(0, margin) on one class score at a time ----------------------------------

def svm_loss_max(W, x, y):
    scores = x.dot(W)
    loss = 0.0
    for j in range(W.shape[1]):
        if j != y:
            loss += max(0, scores[j] - scores[y] + 1)
    return loss


def svm_grad_max(W, x, y, bug=False):
    scores = x.dot(W)
    dW = np.zeros_like(W)
    for j in range(W.shape[1]):
        if j != y and scores[j] - scores[y] + 1 > 0:
            dW[:, j] += x
            if not bug:                  # bug: the correct class's -x forgotten
                dW[:, y] -= x
    return dW


def test_builtin_max_on_a_symbolic_scalar():
    x = X[0]
    margins = x.dot(W_MATRIX) - x.dot(W_MATRIX)[1] + 1
    assert (np.delete(margins, 1) > 0).any(), "a margin is active: the forgotten -x matters"
    assert_pair(svm_loss_max, svm_grad_max, lambda *a: svm_grad_max(*a, bug=True), W_MATRIX, (x, 1), "partial")


# --- abs() of each residual, summed with the builtin sum() ------------------------------------

def l1_loss(w, X, y):
    return sum(abs(p - t) for p, t in zip(X.dot(w), y))


def l1_grad(w, X, y, bug=False):
    r = X.dot(w) - y
    return X.T.dot(r if bug else np.sign(r))     # bug: the residual where its sign belongs


def test_abs_and_builtin_sum_over_scalars():
    assert_pair(l1_loss, l1_grad, lambda *a: l1_grad(*a, bug=True), W, (X, Y_REAL), "wrong")


def test_builtin_sum_of_squares_with_the_factor_two_forgotten():
    def loss(w, X, y):
        return sum((p - t) ** 2 for p, t in zip(X.dot(w), y)) / len(y)

    def grad(w, X, y, bug=False):
        return (1 if bug else 2) * X.T.dot(X.dot(w) - y) / len(y)   # bug: d r^2 = r, not 2 r

    good = against_sympy(loss, grad, W, (X, Y_REAL))
    assert good.passed, str(good)
    bad = against_sympy(loss, lambda *a: grad(*a, bug=True), W, (X, Y_REAL))
    assert bad["params"].diagnosis == "scaled" and bad["params"].factor == pytest.approx(0.5), str(bad)


# --- bool(...) of a comparison, and bools as 0/1 in arithmetic ---------------------------------

def leaky_loss(w, X, y):
    loss = 0.0
    for i in range(len(y)):
        z = X[i].dot(w)
        slope = 1.0 if bool(z > 0) else 0.1
        loss += (slope * z - y[i]) ** 2
    return loss


def leaky_grad(w, X, y, bug=False):
    z = X.dot(w)
    slope = np.where(z > 0, 1.0, 0.1)
    r = slope * z - y
    return 2 * X.T.dot(r if bug else r * slope)   # bug: the slope of the leaky unit forgotten


def test_bool_of_a_comparison():
    z = X.dot(W)
    assert (z > 0).any() and (z < 0).any(), "both slopes are used"
    assert_pair(leaky_loss, leaky_grad, lambda *a: leaky_grad(*a, bug=True), W, (X, Y_REAL), "wrong")


def softmax_onehot_loss(W, X, y):
    """Cross-entropy with the one-hot target written as a bool: (j == y[i])."""
    loss = 0.0
    for i in range(len(y)):
        scores = X[i].dot(W)
        p = np.exp(scores) / np.sum(np.exp(scores))
        for j in range(W.shape[1]):
            loss -= (j == y[i]) * math.log(p[j])
    return loss / len(y)


def softmax_onehot_grad(W, X, y, bug=False):
    dW = np.zeros_like(W)
    for i in range(len(y)):
        scores = X[i].dot(W)
        p = np.exp(scores) / np.sum(np.exp(scores))
        for j in range(W.shape[1]):
            dW[:, j] += (p[j] - (j == y[i])) * X[i] * (-1 if bug else 1)   # bug: minus the gradient
    return dW / len(y)


def test_bools_are_zero_and_one_in_arithmetic():
    assert_pair(softmax_onehot_loss, softmax_onehot_grad, lambda *a: softmax_onehot_grad(*a, bug=True),
                W_MATRIX, (X, Y_CLASS), "sign_flipped")


# --- a while loop on a value: exp by its Taylor series -----------------------------------------

def series_exp(z):
    total, term, k = 1.0, 1.0, 0
    while abs(term) > 1e-18 * abs(total):   # stop when the next term no longer counts
        k += 1
        term = term * z / k
        total = total + term
    return total


def series_loss(w, X):
    return sum(series_exp(z) for z in X.dot(w)) / len(X)


def series_grad(w, X, bug=False):
    return (2 if bug else 1) * X.T.dot(np.exp(X.dot(w))) / len(X)   # bug: twice the derivative


def test_while_loop_on_a_value():
    good = against_sympy(series_loss, series_grad, W, (X,))
    assert good.passed, str(good)
    bad = against_sympy(series_loss, lambda *a: series_grad(*a, bug=True), W, (X,))
    assert bad["params"].diagnosis == "scaled" and bad["params"].factor == pytest.approx(2.0), str(bad)


# --- `==` between symbolic scalars: the winning class -----------------------------------------

def top_class_loss(W, x, y):
    scores = x.dot(W)
    best = max(scores)                       # the builtin max over an array's elements
    loss = 0.0
    for j in range(len(scores)):
        if scores[j] == best:                # the winner, found by equality
            loss += scores[j] - scores[y]
    return loss


def top_class_grad(W, x, y, bug=False):
    scores = x.dot(W)
    dW = np.zeros_like(W)
    dW[:, np.argmax(scores)] += x
    if not bug:                              # bug: the true class's pull forgotten
        dW[:, y] -= x
    return dW


def test_equality_between_symbolic_scalars():
    x, y = X[1], 2
    assert np.argmax(x.dot(W_MATRIX)) != y
    report = against_sympy(top_class_loss, top_class_grad, W_MATRIX, (x, y))
    assert report.passed, str(report)
    assert not report["params"].nondifferentiable_indices, "an equality that holds is no kink"
    bad = against_sympy(top_class_loss, lambda *a: top_class_grad(*a, bug=True), W_MATRIX, (x, y))
    assert [p.diagnosis for p in bad.failures] == ["partial"], str(bad)   # the true class's column


# --- math.exp and float() of a scalar, returned with .item() -----------------------------------

def neuron_loss(w, x, target):
    z = float(np.dot(w, x))                  # a Python float, as the learner thinks of it
    out = 1.0 / (1.0 + math.exp(-z))
    return 0.5 * (target - out) ** 2


def neuron_grad(w, x, target, bug=False):
    out = 1.0 / (1.0 + math.exp(-float(np.dot(w, x))))
    delta = (out - target) * (1.0 if bug else out * (1 - out))   # bug: the sigmoid's derivative forgotten
    return delta * x


def test_math_exp_and_float_of_a_scalar():
    assert_pair(neuron_loss, neuron_grad, lambda *a: neuron_grad(*a, bug=True), W, (X[2], 0.3), "scaled")


def test_item_of_a_reduction_as_the_loss():
    def loss(w, X, y):
        r = X.dot(w) - y
        return np.sum(r * r).item()

    def grad(w, X, y):
        return 2 * X.T.dot(X.dot(w) - y)

    assert against_sympy(loss, grad, W, (X, Y_REAL)).passed


def printing_loss(w, X, y):
    value = np.mean((X.dot(w) - y) ** 2)
    print(f"loss {value:.6f}")               # learners print as they go
    return value


def test_printing_the_loss_inside_the_loss_shows_the_number(capsys):
    from gradcheck.references.sympy import reference as sympy_ref

    f0 = printing_loss(W, X, Y_REAL)
    expected = capsys.readouterr().out
    obj = objective(printing_loss, W, X, Y_REAL)
    ref = sympy_ref.sympy_gradient(obj, [np.arange(W.size)], f0=f0)   # f0 given: only symbolic runs print
    assert capsys.readouterr().out == expected
    np.testing.assert_allclose(ref.values[0], 2 * X.T.dot(X.dot(W) - Y_REAL) / len(Y_REAL), rtol=1e-12)


# --- elements through .flat, and a guard with np.isnan ---------------------------------------

def relu_sum_flat_loss(W, X):
    total = 0.0
    for z in X.dot(W).flat:                  # every pre-activation, by numpy's flat iterator
        if z > 0:
            total += z
    if np.isnan(total) or np.isinf(total):   # the learner's guard against a diverged loss
        return 0.0
    return total


def relu_sum_flat_grad(W, X, bug=False):
    mask = (X.dot(W) > 0).astype(float)
    return X.T.dot(mask) * (0.5 if bug else 1.0)   # bug: half the gradient


def test_flat_iteration_and_an_isnan_guard():
    z = X.dot(W_MATRIX)
    assert (z > 0).any() and (z < 0).any()
    good = against_sympy(relu_sum_flat_loss, relu_sum_flat_grad, W_MATRIX, (X,))
    assert good.passed, str(good)
    bad = against_sympy(relu_sum_flat_loss, lambda *a: relu_sum_flat_grad(*a, bug=True), W_MATRIX, (X,))
    assert bad["params"].diagnosis == "scaled" and bad["params"].factor == pytest.approx(0.5), str(bad)


# --- an exact tie in `if margin > 0:` is a kink, with its one-sided derivatives -----------------

def test_an_exact_tie_in_an_if_is_a_kink_with_one_sided_derivatives():
    from gradcheck.references.sympy import reference as sympy_ref

    def loss(w, x):
        margin = x.dot(w) - 1.0
        if margin > 0:
            return 3.0 * margin
        return 0.0 * margin

    w0, x = np.array([0.5, 0.25]), np.array([1.0, 2.0])   # margin == 0 exactly
    obj = objective(loss, w0, x)
    ref = sympy_ref.sympy_gradient(obj, [np.arange(2)])
    assert ref.kinks[0].all()
    np.testing.assert_array_equal(ref.lower[0], [0.0, 0.0])
    np.testing.assert_array_equal(ref.upper[0], [3.0, 6.0])


# --- the scalar type itself --------------------------------------------------------------------

def test_scalars_compare_at_the_point_and_record_ties():
    from gradcheck.references.sympy import symnp

    t = sympy.Symbol("t", real=True)
    with symnp.evaluation(point={t: sympy.Rational(1, 2)}) as state:
        v = symnp.lift(np.array([0.5, 2.0])) * t      # values 0.25 and 1.0
        a, b = v                                      # iteration hands out scalars
        assert isinstance(a, symnp.SymScalar) and isinstance(v.sum(), symnp.SymScalar)
        assert (a < b) is np.True_ and (b > 1) is np.False_ and (b >= 1) is np.True_
        assert max(a, b) is b and abs(-a) > 0 and bool(a) and not bool(a - a)
        assert state.ties == [frozenset({t}), frozenset({t})]   # b >= 1 and a - a != 0 tied
        assert isinstance(a - True, symnp.SymScalar) and isinstance(np.True_ * b, symnp.SymScalar)
        assert f"{b:.3f}" == "1.000" and float(symnp.plain(b).subs(t, 1)) == 2.0
        stored = symnp.zeros(2)
        stored[0] = a
        stored.flat[1] = b
        assert all(isinstance(x, sympy.Expr) for x in stored.view(np.ndarray)), "arrays hold expressions"
        assert isinstance(v.flat[0], symnp.SymScalar) and all(isinstance(x, symnp.SymScalar) for x in v.flat)
        assert isinstance(symnp.array([a, b]).view(np.ndarray)[1], sympy.Expr)
        assert symnp.plain(np.stack([a, b])[1]) == symnp.plain(b)
        assert (a == "a") is False and {a: 1}[a] == 1


def test_a_scalar_refuses_float_and_int_outside_the_rewrite():
    from gradcheck.references.sympy import symnp

    t = sympy.Symbol("t", real=True)
    with symnp.evaluation(point={t: sympy.Integer(1)}):
        s = symnp.scalar(2 * t)
        with pytest.raises(TypeError, match="convert expression to float"):
            float(s)
        with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
            range(s)
        assert float(symnp.scalar(sympy.Integer(2))) == 2.0   # a constant converts, as numpy's would


# --- SymPy within its time budget ---------------------------------------------------------------

slow_loss, slow_grad, W_SLOW, X_SLOW = loop_loss, loop_grad, LOOP_W, LOOP_X   # a loop SymPy builds slowly


def test_all_symbols_stops_at_its_time_budget_and_says_it_did_not_run():
    import time

    from gradcheck.errors import ReferenceUnavailable
    from gradcheck.references.sympy import reference as sympy_ref

    obj = objective(slow_loss, W_SLOW, X_SLOW)
    start = time.perf_counter()
    with pytest.raises(ReferenceUnavailable, match=r"did not finish within its time budget \(0\.2 s\).*budget="):
        sympy_ref.sympy_gradient(obj, [np.arange(3)], time_budget=0.2)
    assert time.perf_counter() - start < 0.2 + 0.5, "stopped near its budget (a loaded machine adds a little)"
    full = sympy_ref.sympy_gradient(obj, [np.arange(3)], time_budget=None)   # the same objective, unbounded
    assert full.checked[0].all()
    np.testing.assert_allclose(full.values[0], slow_grad(W_SLOW, X_SLOW), rtol=1e-12)


@pytest.mark.parametrize("against, budget", [(("numeric", "sympy"), 1.0), ("sympy", 0.3)])
def test_a_check_is_not_held_past_its_budget_by_sympy(against, budget):
    """SymPy, asked for by name, cannot finish in what is left of the budget: an error naming the
    budget, soon after it, not a pass with nothing checked (BudgetTooShort, at once, where even
    the least check does not fit the budget)."""
    import time

    from gradcheck.errors import BudgetTooShort, ReferenceUnavailable

    start = time.perf_counter()
    with pytest.raises((ReferenceUnavailable, BudgetTooShort), match="budget.*budget="):
        gradcheck.check(slow_loss, slow_grad, W_SLOW, args=(X_SLOW,), budget=budget, against=against)
    assert time.perf_counter() - start < budget + 1.0


def test_with_time_enough_sympy_catches_the_slow_loss_planted_bug():
    report = gradcheck.check(slow_loss, lambda w, x: slow_grad(w, x, bug=True), W_SLOW, args=(X_SLOW,),
                             against="sympy")
    assert report["params"].diagnosis == "wrong", str(report)


def cheap_then_slow_loss(p, x):
    """Elements of `a` make a cheap symbolic run; elements of `b` a long chain of scalar steps."""
    s = np.sum(p["b"] * x)
    for _ in range(20000):
        s = s * 0.9999 + 0.0001
    return np.sum(p["a"] ** 2) + s


def test_sampled_elements_after_the_first_stop_at_the_deadline():
    from gradcheck.references.sympy import reference as sympy_ref

    params = {"a": np.linspace(-1.0, 1.0, 40), "b": np.linspace(0.5, 1.5, 40)}
    obj = objective(cheap_then_slow_loss, params, np.linspace(1.0, 2.0, 40))
    ref = sympy_ref.sympy_gradient(obj, [np.arange(40), np.arange(40)], max_elements=4, time_budget=0.5)
    assert ref.seconds < 0.5 + 0.6
    assert ref.checked[0].sum() == 1 and not ref.checked[1].any()   # a[0] done; b[0] stopped at the deadline
    assert ref.values[0][0] == pytest.approx(2 * params["a"][0], rel=1e-15)
    assert any("1 of 80" in note and "time budget" in note for note in ref.notes), ref.notes


def test_nodes_made_directly_are_the_ones_sympys_operators_make():
    import mpmath
    from sympy.core.parameters import evaluate

    from gradcheck.references.sympy import symnp

    x, y = sympy.symbols("x y", real=True)
    with evaluate(False):
        for op in (operator.add, operator.sub, operator.mul, operator.truediv):
            for a, b in ((x, y), (x, 2), (mpmath.mpf(0.5), y), (x, sympy.Float(1.5)), (x * y, x + 1)):
                assert symnp._OPERATOR_NODES[op](a, b) == op(a, b), (op, a, b)
        assert symnp._OPERATOR_NODES[operator.add](mpmath.mpf(1), 2) == 3   # numbers stay numbers
        z = x + 1
        top = symnp._Max(z, mpmath.mpf(0.5), mpmath.mpf(2.0), z)   # as np.max over a row builds it
        # 0.5 never wins; z once (the number's digits follow mpmath's working precision, not checked here)
        assert isinstance(top, sympy.Max) and len(top.args) == 2 and top.args[0] == z and float(top.args[1]) == 2.0
