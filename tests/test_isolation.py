"""A check leaves the process as it found it: global state, the user's modules, other threads, memory.

What "as it found it" means for the user's own state (a module global or class attribute their
loss assigns): after a check it holds what one call of the loss and the gradient at the caller's
own parameters leaves there, as after a training step. It never holds a perturbed value from
finite differences, a complex number from a complex step, a JAX tracer or a SymPy symbol.
"""

from __future__ import annotations

import gc
import sys
import threading
import warnings

import numpy as np
import pytest

import gradcheck


def loss(p, X):
    return np.sum(np.tanh(X @ p) ** 2)


def grad(p, X):
    t = np.tanh(X @ p)
    return X.T @ (2 * t * (1 - t ** 2))


X = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])
P = np.array([0.4, -0.2])


RANDOM_STATE_SCRIPT = """
import random, sys
import numpy as np
import gradcheck

X = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])
def loss(p, X):
    return np.sum(np.tanh(X @ p) ** 2)
def grad(p, X):
    t = np.tanh(X @ p)
    return X.T @ (2 * t * (1 - t ** 2))
np.random.seed(1234)
random.seed(99)
before, py_before = np.random.get_state(), random.getstate()
gradcheck.check(loss, grad, np.array([0.4, -0.2]), (X,), against=sys.argv[1])
gradcheck.check(loss, lambda p, X: 2 * grad(p, X), np.array([0.1, 0.3]), (X,), against=sys.argv[1])
after = np.random.get_state()
same = before[0] == after[0] and (before[1] == after[1]).all() and before[2:] == after[2:]
print("numpy", same, "python", random.getstate() == py_before)
"""


@pytest.mark.parametrize("against", ["auto", "numeric", "jax", "sympy"])
def test_global_random_states_are_untouched(against):
    """In a fresh process, so the first import of jax or sympy (which may draw) happens inside the check."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", RANDOM_STATE_SCRIPT, against], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.split() == ["numpy", "True", "python", "True"], out


def test_numpy_error_state_is_untouched():
    old = np.seterr(divide="raise", over="ignore", under="warn", invalid="print")
    try:
        expected = np.geterr()
        gradcheck.check(loss, grad, P, (X,))
        with pytest.raises(gradcheck.InvalidCase):
            gradcheck.check(lambda p: np.sum(np.log(p)), lambda p: 1 / p, np.array([-1.0, 1.0]))
        assert np.geterr() == expected
    finally:
        np.seterr(**old)


def test_warnings_filters_are_untouched():
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("error", message="my own filter")
        before = list(warnings.filters)

        def noisy(p, X):
            warnings.warn("a warning from the user's loss", UserWarning)
            return loss(p, X)
        gradcheck.check(noisy, grad, P, (X,))
        assert list(warnings.filters) == before


def _process_state() -> dict:
    import os
    # (not os.environ: importing jax sets TF_CPP_MIN_LOG_LEVEL for its own C++ logging)
    return {"printoptions": np.get_printoptions(), "recursionlimit": sys.getrecursionlimit(),
            "stdout": sys.stdout, "stderr": sys.stderr, "path": list(sys.path), "cwd": os.getcwd(),
            "floatmode": np.geterr(), "excepthook": sys.excepthook}


@pytest.mark.parametrize("against", ["auto", "sympy", "numeric"])
def test_process_wide_settings_are_untouched(against):
    """Print options, the recursion limit (SymPy's deep trees), streams, import path, cwd."""
    before = _process_state()
    gradcheck.check(loss, grad, P, (X,), against=against)
    gradcheck.check(loss, lambda p, X: 3 * grad(p, X), P, (X,), against=against)
    assert _process_state() == before


@pytest.mark.parametrize("x64", [False, True])
def test_jax_x64_flag_is_untouched(x64):
    import jax
    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", x64)
    try:
        report = gradcheck.check(loss, grad, P, (X,), against=["jax", "numeric"])
        assert report.passed and any(r.name == "jax" and r.ran for r in report.references), str(report)
        assert bool(jax.config.jax_enable_x64) is x64
        import jax.numpy as jnp
        assert jnp.zeros(1).dtype == (np.float64 if x64 else np.float32)
    finally:
        jax.config.update("jax_enable_x64", old)


# ---------------------------------------------------------------------------------------------
# The user's module globals and class attributes
# ---------------------------------------------------------------------------------------------

STATEFUL_SOURCE = '''
import numpy as np

LAST = None
CALLS = 0


class Model:
    seen = None


def loss(p, X):
    global LAST, CALLS
    LAST = p * 1.0                 # e.g. "keep the last weights for plotting"
    CALLS += 1
    Model.seen = p[0]
    return np.sum(np.tanh(X @ p) ** 2)


def grad(p, X):
    t = np.tanh(X @ p)
    Model.last_grad = X.T @ (2 * t * (1 - t ** 2))
    return Model.last_grad
'''


@pytest.fixture
def stateful_module(tmp_path, monkeypatch):
    path = tmp_path / "learner_state.py"
    path.write_text(STATEFUL_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    module = importlib.import_module("learner_state")
    yield module
    sys.modules.pop("learner_state", None)


@pytest.mark.parametrize("against", ["auto", "numeric", "jax", "sympy"])
@pytest.mark.parametrize("right", [True, False], ids=["right", "wrong"])
def test_module_global_holds_the_value_at_the_callers_parameters(stateful_module, against, right):
    m = stateful_module
    g = m.grad if right else (lambda p, X: 2 * m.grad(p, X))
    report = gradcheck.check(m.loss, g, P, (X,), against=against)
    assert report.passed is right
    assert type(m.LAST) is np.ndarray and m.LAST.dtype == np.float64, repr(m.LAST)
    assert m.LAST.tobytes() == P.tobytes(), f"left at a perturbed point: {m.LAST!r}"
    assert type(m.Model.seen) in (float, np.float64) and m.Model.seen == P[0], repr(m.Model.seen)
    last = m.Model.last_grad
    assert type(last) is np.ndarray and last.dtype == np.float64 and np.array_equal(last, m.grad(P, X))


def test_settle_puts_the_users_state_back_at_their_parameters(stateful_module):
    """The building block a check ends with: after calls at perturbed and complex points, settle()."""
    import importlib
    m = stateful_module
    prep = importlib.import_module("gradcheck.case").prepare(m.loss, m.grad, P, (X,))
    obj = prep.objective
    obj(obj.perturb(obj.x0, 0, 1, complex(P[1], 1e-30)), allow_complex=True)
    assert m.LAST.dtype == np.complex128
    with obj.settled():
        obj(obj.perturb(obj.x0, 0, 0, P[0] + 1e-3))
    assert m.LAST.dtype == np.float64 and m.LAST.tobytes() == P.tobytes()
    assert m.Model.seen == P[0] and np.array_equal(m.Model.last_grad, m.grad(P, X))
    with pytest.raises(KeyboardInterrupt), obj.settled():   # after Ctrl-C the user's code is not called
        obj(obj.perturb(obj.x0, 0, 0, P[0] + 1e-3))
        raise KeyboardInterrupt
    assert m.LAST[0] == P[0] + 1e-3


def test_module_global_after_a_failure_at_a_perturbed_point(stateful_module):
    m = stateful_module

    def loss(p, X):
        value = m.loss(p, X)
        if p[0] > P[0]:
            raise ValueError("outside the domain")
        return value
    with pytest.raises(gradcheck.UserCodeError):
        gradcheck.check(loss, m.grad, P, (X,), against="numeric")
    assert m.LAST.tobytes() == P.tobytes(), f"left at a perturbed point: {m.LAST!r}"


def test_after_ctrl_c_the_users_code_is_not_called_again(stateful_module):
    m = stateful_module
    calls = []

    def loss(p, X):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return m.loss(p, X)
    with pytest.raises(KeyboardInterrupt):
        gradcheck.check(loss, m.grad, P, (X,), against="numeric")
    assert len(calls) == 4


def test_the_users_functions_and_classes_are_not_replaced(stateful_module):
    """The re-runs work on copies: the module's functions and classes stay the very same objects."""
    m = stateful_module
    before = {name: getattr(m, name) for name in ("loss", "grad", "Model", "np")}
    class_before = set(vars(m.Model))
    gradcheck.check(m.loss, m.grad, P, (X,))
    assert all(getattr(m, name) is obj for name, obj in before.items())
    assert set(vars(m.Model)) - class_before <= {"seen", "last_grad"}
    assert isinstance(m.CALLS, int) and m.CALLS > 0


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------

def _problems():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 4))

    def loss2(p):
        return np.sum(np.sin(A @ p["w"]) ** 2) + p["b"] ** 2

    def grad2(p):
        s = np.sin(2 * (A @ p["w"]))
        return {"w": A.T @ s, "b": 2 * p["b"]}

    return [
        (loss, grad, P, (X,), True),
        (loss, lambda p, X: 2 * grad(p, X), P, (X,), False),
        (loss2, grad2, {"w": rng.standard_normal(4) * 0.3, "b": 0.7}, (), True),
        (loss2, lambda p: {**grad2(p), "b": 2.002 * p["b"]}, {"w": rng.standard_normal(4) * 0.3, "b": 0.7}, (), False),
    ]


def _summary(report):
    return [(p.name, p.passed, p.diagnosis, p.worst_index) for p in report.parameters]


@pytest.mark.parametrize("against", ["auto", "numeric"])
def test_two_threads_checking_different_problems_at_once(against):
    problems = _problems()
    expected = [_summary(gradcheck.check(f, g, p, a, against=against)) for f, g, p, a, _ in problems]
    assert [all(row[1] for row in s) for s in expected] == [ok for *_, ok in problems]
    results: dict = {}
    errors: list = []

    def worker(k: int) -> None:
        try:
            for _ in range(3):
                f, g, p, a, _ok = problems[k]
                results.setdefault(k, []).append(_summary(gradcheck.check(f, g, p, a, against=against)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for pair in ((0, 3), (1, 2)):
        threads = [threading.Thread(target=worker, args=(k,)) for k in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors
    for k, runs in results.items():
        assert all(r == expected[k] for r in runs), (k, runs, expected[k])


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _fresh_problem(k: int):
    """A new loss function object per check (a closure), so no cache is reused by identity."""
    scale = 1.0 + k / 200

    def loss_k(p, X):
        return np.sum(np.tanh(scale * (X @ p)) ** 2)

    def grad_k(p, X):
        t = np.tanh(scale * (X @ p))
        return scale * X.T @ (2 * t * (1 - t ** 2))
    return loss_k, grad_k


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_two_hundred_checks_do_not_grow_memory_without_bound():
    def batch(start: int, count: int) -> None:
        for k in range(start, start + count):
            f, g = _fresh_problem(k)
            wrong = k % 2 == 1
            report = gradcheck.check(f, (lambda p, X, g=g: 1.5 * g(p, X)) if wrong else g, P, (X,),
                                     against=["numeric", "jax"])
            assert report.passed is not wrong
    batch(0, 50)                          # warm-up: caches fill to their bounds (32 compiled re-runs)
    gc.collect()
    warm = _rss_mb()
    batch(50, 150)
    gc.collect()
    grown = _rss_mb() - warm
    # measured: about 9 MB over these 150 (caches settling), then flat (+-0.5 MB per 150 more)
    assert grown < 25.0, f"RSS grew {grown:.1f} MB over 150 checks after warm-up"
    from gradcheck.references.jax import reference as jax_ref
    assert len(jax_ref._CACHE) <= jax_ref._CACHE_SIZE
