"""`budget=` is a promise about the wall time of the whole check, and the report says what it left out.

The losses here sleep, so the time they take is what the test says, whatever the machine does;
the bounds leave room for gradcheck's own work on a loaded machine. The figures for real losses
are measured by benchmarks/speed.py.
"""

from __future__ import annotations

import importlib
import subprocess
import os
import sys
import textwrap
import time

import numpy as np
import pytest

import gradcheck

from nets import LOOP_W, LOOP_X, loop_grad, loop_loss


def sleepy(seconds: float):
    """A tanh regression whose loss takes `seconds` per call (its gradient is instant)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 30)), rng.standard_normal(16)

    def loss(p, X, y):
        time.sleep(seconds)
        z = X @ p["w"]
        t = np.tanh(z)
        residual = t - y
        return np.mean(residual ** 2)

    def grad(p, X, y):
        t = np.tanh(X @ p["w"])
        return {"w": X.T @ (2 * (t - y) * (1 - t ** 2)) / len(y)}

    return loss, grad, {"w": rng.standard_normal(30) * 0.1}, (X, y)


def timed(*a, **kw):
    start = time.perf_counter()
    report = gradcheck.check(*a, **kw)
    return report, time.perf_counter() - start


@pytest.mark.parametrize("budget", [1.0, 2.0])
def test_a_slow_loss_stays_within_the_budget_and_says_what_it_left_out(budget):
    loss, grad, params, args = sleepy(0.05)
    gradcheck.check(loss, grad, params, args, against=("jax",))  # JAX compiled: the clock is not the compiler's
    report, seconds = timed(loss, grad, params, args, budget=budget)
    assert report.passed, str(report)
    assert seconds <= 1.1 * budget + 0.1, (seconds, report.plan)
    assert report.plan["seconds"] <= seconds
    if budget == 1.0:  # too little for the planned differences: the report says so
        assert any("finite differences" in item for item in report.plan["not_afforded"]), report.plan
    jax = next(s for s in report.references if s.name == "jax")
    assert jax.ran  # the exact reference judges every element, validated within the budget


def test_a_slow_loss_with_a_planted_bug_is_still_caught_within_the_budget():
    loss, grad, params, args = sleepy(0.05)

    def doubled(p, X, y):
        return {"w": 2 * grad(p, X, y)["w"]}

    gradcheck.check(loss, grad, params, args, against=("jax",))
    report, seconds = timed(loss, doubled, params, args, budget=2.5)
    assert not report.passed and report["w"].diagnosis == "scaled" and report["w"].factor == 2.0, str(report)
    assert seconds <= 1.1 * 2.5 + 0.1


@pytest.mark.parametrize("budget", [1.0, 3.0])
def test_the_blame_of_a_failing_gradient_fits_in_what_the_budget_leaves(budget):
    """Blame's JAX pass compiles once per loss: where that does not fit, blame does without it."""
    loss, grad, params, args = sleepy(0.05)

    def forgot_the_tanh_derivative(p, X, y):
        t = np.tanh(X @ p["w"])
        dt = 2 * (t - y) / len(y)
        dz = dt  # the planted bug: should be dt * (1 - t ** 2)
        return {"w": X.T @ dz}

    gradcheck.check(loss, grad, params, args, against=("jax",))
    report, seconds = timed(loss, forgot_the_tanh_derivative, params, args, budget=budget)
    assert not report.passed, str(report)
    assert seconds <= 1.1 * budget + 0.1, (seconds, report.plan)
    assert report.plan["seconds"] <= seconds
    skipped = [item for item in report.plan.get("not_afforded", []) if item.startswith("blame")]
    blame = report["w"].blame
    assert skipped or (blame.source.startswith("dz = dt") and "tanh" in blame.should_be), str(report)


def least_budget(*case, **options) -> float:
    """The budget BudgetTooShort names for a check asked to take no time at all."""
    with pytest.raises(gradcheck.BudgetTooShort) as info:
        gradcheck.check(*case, budget=0.0, **options)
    message = str(info.value)
    assert message.startswith("budget=0 s is too short to check this loss: one call of your loss takes"), message
    return float(message.split("Pass budget=")[1].split()[0])


def test_a_budget_shorter_than_the_least_check_is_refused_at_once():
    """A budget the least check cannot keep is an error naming the budget that can, raised once
    the case is prepared (two calls of the loss), not a check that runs past its promise."""
    loss, grad, params, args = sleepy(0.1)
    start = time.perf_counter()
    with pytest.raises(gradcheck.BudgetTooShort) as info:
        gradcheck.check(loss, grad, params, args, against="numeric", budget=0.5)
    assert time.perf_counter() - start < 0.5
    message = str(info.value)
    assert "budget=0.5 s is too short" in message and "takes 0.1 s" in message and "Pass budget=" in message
    suggested = float(message.split("Pass budget=")[1].split()[0])
    assert 0.5 < suggested < 2.0
    assert isinstance(info.value, gradcheck.InvalidCase)


def test_the_default_budget_runs_the_least_check_and_says_it_ran_past():
    """Without budget=, a loss too slow for the default still gets its verdict, with a warning."""
    from gradcheck import plan

    loss, grad, params, args = sleepy(0.05)
    original = plan.DEFAULT_BUDGET
    plan.DEFAULT_BUDGET = 0.2
    try:
        report = gradcheck.check(loss, grad, params, args, against="numeric")
    finally:
        plan.DEFAULT_BUDGET = original
    assert report.passed
    assert any("runs past the default time budget of 0.2 s" in w for w in report.warnings), report.warnings


def test_differences_alone_still_give_a_verdict_on_the_least_budget():
    """With no exact reference, the least that gives a verdict fits the budget the error names
    (with room for a loaded machine: the error's figure is one run's)."""
    loss, grad, params, args = sleepy(0.002)
    budget = 1.5 * least_budget(loss, grad, params, args, against="numeric")
    report = gradcheck.check(loss, grad, params, args, against="numeric", budget=budget)
    assert report.passed and report.plan["numeric"] == "projections, localisation and a sample"
    assert any("projection" in item for item in report.plan["not_afforded"])
    bad = gradcheck.check(loss, lambda p, X, y: {"w": -grad(p, X, y)["w"]}, params, args, against="numeric",
                          budget=budget)
    assert not bad.passed


def test_a_verdict_from_projections_alone_says_so():
    """When the budget pays for projections but no element on its own, the report says the
    verdict rests on directions only, shows no element error, and a failure names its factor
    along the direction and the way to find the elements."""
    loss, grad, params, args = sleepy(0.05)
    report = gradcheck.check(loss, grad, params, args, against="numeric", budget=1.0)
    assert not any(p.checked for p in report.parameters), report.plan  # 6 calls an element do not fit
    text = str(report)
    assert report.passed and "random direction(s) only" in text.splitlines()[0], text
    first = report.plan["projections"][0]
    assert f"resolving errors down to {abs(first['tol'] / first['yours']):.1e} of the slope" in text.splitlines()[0]
    assert report["w"].max_rel_error == 0.0 and "PASS     -" in text, text
    bad = gradcheck.check(loss, lambda p, X, y: {"w": 2 * grad(p, X, y)["w"]}, params, args, against="numeric",
                          budget=1.0)
    assert not bad.passed and "2 times the loss's slope" in bad["w"].detail, str(bad)
    assert "budget=" in bad["w"].cause and "sampled elements pass" not in bad["w"].detail, str(bad)


def test_an_exact_reference_alone_is_still_validated_on_the_least_budget():
    """With JAX the only reference (compiled by an earlier check: a first compilation takes its
    own time), its one directional test is the least that gives a verdict."""
    loss, grad, params, args = sleepy(0.0)
    assert gradcheck.check(loss, grad, params, args, against=("jax",)).passed
    budget = 1.5 * least_budget(loss, grad, params, args, against=("jax",))
    report = gradcheck.check(loss, grad, params, args, against=("jax",), budget=budget)
    assert report.passed and [s.name for s in report.references if s.ran] == ["jax"], str(report)
    bad = gradcheck.check(loss, lambda p, X, y: {"w": -grad(p, X, y)["w"]}, params, args, against=("jax",),
                          budget=budget)
    assert not bad.passed and bad["w"].diagnosis == "sign_flipped", str(bad)


def test_a_budget_that_cannot_pay_for_importing_jax_leaves_jax_out():
    """In a fresh process importing jax alone takes a second or more: a tight budget goes to
    finite differences instead, and the plan says what was left out."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import gradcheck
        X = np.linspace(-1, 1, 12).reshape(4, 3)
        def loss(w):
            return float(np.sum(np.tanh(X @ w) ** 2))
        def grad(w):
            t = np.tanh(X @ w)
            return X.T @ (2 * t * (1 - t ** 2))
        report = gradcheck.check(loss, grad, np.array([0.3, -0.2, 0.5]), budget=1.0)
        bad = gradcheck.check(loss, lambda w: 2 * grad(w), np.array([0.3, -0.2, 0.5]), budget=1.0)
        print(report.passed, bad.passed, bad.parameters[0].diagnosis, "jax" in sys.modules)
        print(report.plan["not_afforded"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    verdicts, left_out = out.stdout.splitlines()[:2]
    assert verdicts == "True False scaled False", out.stdout
    assert "the JAX reference (importing jax)" in left_out


def test_a_generous_budget_is_not_spent_for_nothing():
    """A small fast problem answers quickly, whatever the budget allows."""
    loss, grad, params, args = sleepy(0.0)
    gradcheck.check(loss, grad, params, args)
    report, seconds = timed(loss, grad, params, args, budget=1000.0)
    assert report.passed and "not_afforded" not in report.plan
    assert seconds < 5.0  # the benchmark measures the real figure; this only rules out filling the budget


def test_a_loss_too_long_to_trace_under_jax_is_left_to_the_other_references(monkeypatch):
    """Tracing stops at its share of the budget, the check goes on without JAX, and the next
    check of the same loss does not trace it again."""
    from gradcheck.references.jax import reference as jax_ref

    monkeypatch.setattr(jax_ref, "TRACE_SECONDS", 0.3)
    w, x = LOOP_W, LOOP_X
    report, seconds = timed(loop_loss, loop_grad, w, args=(x,), budget=2.0)
    jax = next(s for s in report.references if s.name == "jax")
    assert report.passed and not jax.ran and "tracing it under JAX takes more than" in jax.reason, str(report)
    assert seconds < 2.0 * 1.1 + 1.0 and sys.getprofile() is None
    bad, again = timed(loop_loss, lambda w, x: loop_grad(w, x, bug=True), w, args=(x,), budget=2.0)
    assert not bad.passed and bad["params"].diagnosis == "wrong", str(bad)
    assert next(s for s in bad.references if s.name == "jax").seconds < 0.1  # not traced again


def test_the_trace_deadline_is_not_raised_where_a_finalizer_would_swallow_it():
    """Past the deadline the hook waits for code outside JAX and the standard library: raised in
    a weakref finalizer, the exception would be printed and dropped, CPython would remove the
    hook and the trace would run on unbounded."""
    import textwrap as library_code
    import weakref

    from gradcheck.references.jax import reference as jax_ref

    class Held:
        pass

    swallowed = []
    hook, sys.unraisablehook = sys.unraisablehook, swallowed.append
    try:
        with pytest.raises(jax_ref._OutOfTime):
            with jax_ref._traced_until(jax_ref._Clock(time.perf_counter())):
                held = Held()
                weakref.finalize(held, library_code.fill, "word " * 2000)
                del held  # the finalizer runs standard-library code past the deadline
                for _ in range(5000):
                    len(())
    finally:
        sys.unraisablehook = hook
    assert not swallowed and sys.getprofile() is None


def test_the_trace_deadline_is_not_raised_in_an_installed_package_s_gc_callback():
    """A test runner's gc callback (hypothesis registers one) lives in site-packages: raised
    there, the exception is dropped as unraisable and the trace runs on; it waits for the
    learner's code instead."""
    import gc
    import sysconfig

    from gradcheck.references.jax import reference as jax_ref

    runner = os.path.join(sysconfig.get_paths()["purelib"], "a_test_runner", "gc_timing.py")
    scope: dict = {}
    exec(compile("def on_gc(phase, info):\n    for _ in range(3000):\n        len(())\n", runner, "exec"), scope)
    swallowed = []
    hook, sys.unraisablehook = sys.unraisablehook, swallowed.append
    gc.callbacks.append(scope["on_gc"])
    try:
        with pytest.raises(jax_ref._OutOfTime):
            with jax_ref._traced_until(jax_ref._Clock(time.perf_counter())):
                gc.collect()  # the callback runs past the deadline, 6000 profiled calls
                for _ in range(5000):
                    len(())
    finally:
        gc.callbacks.remove(scope["on_gc"])
        sys.unraisablehook = hook
    assert not swallowed and sys.getprofile() is None


def test_sympy_every_element_plan_is_capped_unless_asked_for(monkeypatch):
    """A small loss slow under SymPy holds a default check a tenth of the default budget at most;
    asked for by name, SymPy gets what the budget leaves."""
    from gradcheck.references.jax import reference as jax_ref

    plan_module = importlib.import_module("gradcheck.plan")
    monkeypatch.setattr(jax_ref, "TRACE_SECONDS", 0.3)
    monkeypatch.setattr(plan_module, "SYMPY_ALL_SYMBOLS_SHARE", 0.005)  # 0.1 s: below this loss's SymPy time
    w, x = LOOP_W, LOOP_X
    report = gradcheck.check(loop_loss, loop_grad, w, args=(x,))
    sympy = next(s for s in report.references if s.name == "sympy")
    assert report.passed and not sympy.ran and "time budget" in sympy.reason, str(report)
    asked = gradcheck.check(loop_loss, loop_grad, w, args=(x,), against=("numeric", "sympy"))
    assert asked.passed and [s.name for s in asked.references if s.ran] == ["numeric", "sympy"], str(asked)


def test_a_first_jax_gradient_compiling_past_its_share_is_used_by_the_next_check(monkeypatch):
    """XLA compiles JAX's first gradient of a loss in a worker thread; a check does not wait past
    JAX's share for it (it goes on without JAX, within its budget), and a later check of the
    same loss uses the compiled program."""
    from concurrent.futures import ThreadPoolExecutor

    from gradcheck.references.jax import reference as jax_ref

    class SlowCompiler(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            return super().submit(lambda: (time.sleep(1.5), fn(*args, **kwargs))[1])

    monkeypatch.setattr(jax_ref, "_COMPILER", [SlowCompiler(max_workers=1)])
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 5)), rng.standard_normal(8)

    def loss(p, X, y):  # a loss of its own: no other test compiled it
        return np.mean((np.sin(X @ p["w"]) - y) ** 2)

    def grad(p, X, y):
        z = X @ p["w"]
        return {"w": X.T @ (2 * (np.sin(z) - y) * np.cos(z)) / len(y)}

    params = {"w": rng.standard_normal(5)}
    start = time.perf_counter()
    first = gradcheck.check(loss, grad, params, (X, y), budget=1.0)
    seconds = time.perf_counter() - start
    status = next(s for s in first.references if s.name == "jax")
    assert seconds < 1.1 + 0.1, (seconds, str(first), first.plan)
    assert first.passed and not status.ran and "XLA compiling" in status.reason, status.reason
    time.sleep(1.0)  # the compilation finishes meanwhile
    again = gradcheck.check(loss, grad, params, (X, y), budget=1.0)
    status = next(s for s in again.references if s.name == "jax")
    assert again.passed and status.ran and status.seconds < 0.5, str(again)
