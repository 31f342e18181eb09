"""blame: the line of the learner's backward pass where a failing gradient first goes wrong.

The corpus (tests/blame_corpus.py) plants one bug per backward pass in the tutorials' styles
and marks its line with `# BUG`; the blamed line must be that line in at least 85% of them,
both with the adjoints JAX gives and with those of finite differences on the intermediates
(a check without JAX), and no correct implementation may get a blame.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dataclasses import replace
from typing import Callable

import numpy as np
import pytest

import gradcheck
from gradcheck.blame import Case, attach_blame, blame, blame_case
from gradcheck.usercode.capture import environment, record, statement_at, substituting
from gradcheck.model import Blame

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blame_corpus as corpus  # noqa: E402

HIT_RATE = 0.85


def _check(case: corpus.BlameCase) -> gradcheck.Report:
    kw = dict(value_and_grad=case.value_and_grad) if case.value_and_grad else dict(loss=case.loss, grad=case.grad)
    return gradcheck.check(params=case.params(), args=case.args, against="numeric", **kw)


@pytest.fixture(scope="module")
def reports() -> dict:
    """Every corpus case checked once without JAX (finite differences judge, and give blame its adjoints)."""
    return {case.name: _check(case) for case in corpus.CASES}


def _hit(case: corpus.BlameCase, report: gradcheck.Report) -> bool:
    file, line = corpus.bug_line(case.bug)
    return bool(report.failures) and all(
        p.blame is not None and p.blame.located and p.blame.line == line
        and Path(p.blame.file).resolve() == Path(file).resolve() for p in report.failures)


def _describe(p) -> str:
    b = p.blame
    if b is None:
        return f"{p.name}: no blame"
    return f"{p.name}: " + (f"line {b.line} ({b.source})" if b.located else f"not located: {b.reason}")


# ----------------------------------------------------------------------------- the corpus


def test_corpus_has_twenty_planted_bugs_in_every_style():
    assert len(corpus.BUGGY) >= 20
    assert {c.style for c in corpus.BUGGY} == {"mazur", "mlp-mse", "tanh-softmax", "cs231n", "nielsen", "trask"}
    assert {c.style for c in corpus.CORRECT} == {c.style for c in corpus.BUGGY}
    for c in corpus.BUGGY:
        corpus.bug_line(c.bug)  # exactly one marked line each


def _hit_rate(failures: Callable[[corpus.BlameCase], list], how: str, capsys) -> None:
    """At least HIT_RATE of the planted bugs blamed at their line; a miss never names another line."""
    hits, misses = 0, []
    for case in corpus.BUGGY:
        found = failures(case)
        assert found, f"{case.name}: the planted bug is not caught"
        file, line = corpus.bug_line(case.bug)
        for p in found:
            if p.blame is not None and p.blame.located:
                assert p.blame.line == line, f"{case.name} ({how}): {_describe(p)}"
        if all(p.blame is not None and p.blame.located and Path(p.blame.file).resolve() == Path(file).resolve()
               for p in found):
            hits += 1
        else:
            misses.append(f"{case.name} (bug at line {line}): " + "; ".join(_describe(p) for p in found))
    rate = hits / len(corpus.BUGGY)
    with capsys.disabled():
        print(f"\nblame hit rate ({how}) {hits}/{len(corpus.BUGGY)} = {rate:.0%}")
        for m in misses:
            print("  miss:", m)
    assert rate >= HIT_RATE, "\n".join(misses)


def test_blamed_line_is_the_planted_one(reports, capsys):
    """Checked against finite differences alone: the adjoints are finite differences too."""
    _hit_rate(lambda case: list(reports[case.name].failures), "finite differences, no JAX", capsys)


def test_blamed_line_is_the_planted_one_with_jax_adjoints(reports, capsys):
    """The same failing parameters blamed with the adjoints JAX gives (where it can run the loss)."""
    def failures(case: corpus.BlameCase) -> list:
        wrong = [p.name for p in reports[case.name].failures]
        found = blame(case.loss, case.grad, case.params(), case.args, value_and_grad=case.value_and_grad,
                      leaves=wrong)
        return [replace(p, blame=found[p.name]) for p in reports[case.name].failures]

    _hit_rate(failures, "JAX adjoints", capsys)


@pytest.mark.parametrize("case", corpus.CORRECT, ids=lambda c: c.name)
def test_correct_implementations_get_no_blame(case, reports):
    report = reports[case.name]
    assert report.passed
    assert all(p.blame is None for p in report.parameters)
    found = blame(case.loss, case.grad, case.params(), case.args, value_and_grad=case.value_and_grad)
    assert set(found) == {p.name for p in report.parameters}
    for name, b in found.items():
        assert not b.located, f"{case.name}: {name} blamed at line {b.line} ({b.source})"
        assert "matches" in b.reason


def test_no_wrong_line_is_ever_blamed(reports):
    """A miss may leave a parameter without a line, never with another line than the bug's."""
    for case in corpus.BUGGY:
        line = corpus.bug_line(case.bug)[1]
        for p in reports[case.name].failures:
            if p.blame is not None and p.blame.located:
                assert p.blame.line == line, f"{case.name}: {_describe(p)}"


# ----------------------------------------------------------------------------- what a blame says


def _case(name: str) -> corpus.BlameCase:
    return next(c for c in corpus.CASES if c.name == name)


def _blame_of(name: str, leaf: str) -> Blame:
    c = _case(name)
    return blame(c.loss, c.grad, c.params(), c.args, value_and_grad=c.value_and_grad, leaves=[leaf])[leaf]


def test_missing_sigmoid_derivative_is_named():
    b = _blame_of("mlp-no-derivative", "W1")
    assert b.source.startswith("dz1 = dh")
    assert b.function == "mlp_grad_no_derivative"
    assert b.equals == "dL/dh, the gradient with respect to h"
    assert b.should_be == "dL/dz1 = dL/dh * h * (1 - h): the sigmoid's derivative is missing"


def test_patterns_sign_scale_transpose_and_wrong_derivative():
    assert "the sign is flipped" in _blame_of("softmax-sign", "W1").should_be
    assert _blame_of("softmax-no-mean", "W2").equals.startswith("8 x dL/dscores")
    assert "transposed" in _blame_of("mlp-transposed", "W2").should_be
    b = _blame_of("softmax-sigmoid-derivative", "W1")
    assert "(1 - h**2)" in b.should_be and "multiplies by h * (1 - h) instead" in b.should_be
    b = _blame_of("mlp-wrong-variable", "W1")
    assert "it uses dh (= dL/dh) where dL/dz1 is needed" in b.should_be


def test_prints_rule_out_only_what_the_element_comparison_would():
    """Matching on prints finds what comparing every element finds: a value within the tolerance
    of a quantity is it (exactly, negated, transposed, scaled), one element past it is not."""
    from gradcheck.blame import Known, Quantity

    rng = np.random.default_rng(3)
    q = Quantity("dL/dh", "", rng.standard_normal((6, 5)), "adjoint")
    other = Quantity("h", "", rng.standard_normal((6, 5)), "forward")
    known = Known([other, q], [])
    inside = rng.uniform(-0.9, 0.9, q.value.shape) * q.tol
    for value, pattern in ((q.value + inside, "exact"), (-(q.value + inside), "sign"),
                           ((q.value + inside).T, "transposed"), (-3.5 * q.value, "scale")):
        found = known.match(value)
        assert found is not None and found.quantity is q and found.pattern == pattern, pattern
    assert known.match(-3.5 * q.value).factor == -3.5
    past = q.value.copy()
    past[2, 1] += 3 * q.tol  # one element out of tolerance: the element comparison says no
    assert not q.holds(past)
    for value in (past, -past, past.T):
        assert known.match(value) is None, known.match(value)
    assert known.match(np.zeros((6, 5))) is None and known.match(np.full((6, 5), np.nan)) is None
    # a duplicate is dropped on the way, the first of equal values kept
    twin = Quantity("z", "", q.value.copy(), "forward")
    assert [x.label for x in Known([q, other, twin], []).of()] == ["dL/dh", "h"]


def test_local_derivatives_decided_ahead_of_the_order_are_those_the_order_keeps():
    """_Slopes decides whether the shelf keeps a local derivative from a few elements, without making
    the ones before it: it keeps exactly those the shelf keeps when it makes every one in turn (ties
    included: the ReLU mask of z and of tanh(z), a forward value that is a derivative form, zeros)."""
    from gradcheck.blame import Known, Quantity, _Slopes

    rng = np.random.default_rng(5)
    z = rng.normal(size=(7, 6))
    h = np.tanh(z)
    forms = [("z", z), ("h", h), ("neg", -np.abs(z)), ("s", 1 / (1 + np.exp(-z)))]
    eager = [Quantity("dL/dh", "", rng.normal(size=(7, 6)), "adjoint"),
             Quantity("one_minus_h", "", 1 - h, "forward"),  # the form 1 - h, bound by the loss
             Quantity("mask", "", (z > 0).astype(float), "forward")]  # the ReLU's derivative at z
    for order in (range(60), reversed(range(60)), rng.permutation(60), rng.permutation(60)):
        ahead = Known(eager, forms)
        slopes = _Slopes(ahead, z.shape)
        shelf = ahead.shelf(z.shape)
        derivatives = [int(k) for k in order if k < len(shelf.raw) and isinstance(shelf.raw[k][1], tuple)]
        decided = {k: slopes._kept(k) for k in derivatives}
        in_turn = Known(eager, forms).shelf(z.shape)
        kept = {pos: q.label for pos, q in in_turn.items()}
        assert {k: q and q.label for k, q in decided.items()} == {
            k: kept.get(shelf.raw[k][0]) for k in decided}
        assert None in decided.values()  # some were dropped as duplicates or zero


def test_blame_inside_a_layers_backward_function():
    b = _blame_of("cs231n-relu-forgot", "W1")
    assert (b.function, b.source) == ("relu_backward_forgot", "dx = dout  # BUG")
    assert "the ReLU's derivative at a1 is missing" in b.should_be


def test_finite_differences_serve_where_jax_cannot_run():
    from gradcheck.objective import Objective
    from gradcheck.references.jax.adjoints import start_adjoints

    c = _case("mazur-float-sign")
    names, leaves, treedef = gradcheck.tree.flatten(c.params())
    with pytest.raises(Exception):  # math.fsum of traced values
        start_adjoints(Objective(c.loss, treedef, leaves, c.args), leaves, {})()
    found = blame(c.loss, c.grad, c.params(), c.args)  # JAX allowed, but it cannot run this loss
    assert found["w7"].line == corpus.bug_line(c.bug)[1]
    assert "the sign is flipped" in found["w7"].should_be


def test_numeric_check_blames_without_importing_jax():
    """against="numeric": the failing gradient is blamed at its line, and JAX is never imported."""
    tests = Path(__file__).resolve().parent
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tests)!r})
        import gradcheck, blame_corpus as corpus
        for name in ("mlp-no-derivative", "cs231n-relu-forgot", "nielsen-cost-sign"):
            c = next(x for x in corpus.CASES if x.name == name)
            kw = dict(value_and_grad=c.value_and_grad) if c.value_and_grad else dict(loss=c.loss, grad=c.grad)
            report = gradcheck.check(params=c.params(), args=c.args, against="numeric", **kw)
            line = corpus.bug_line(c.bug)[1]
            assert report.failures and all(p.blame.line == line for p in report.failures), (name, report)
        assert "jax" not in sys.modules, "jax was imported"
        print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _tanh_loss(p, X):
    h = np.tanh(X @ p["W"])
    return float(np.sum(h ** 2))


def _tanh_grad_missing_derivative(p, X):
    h = np.tanh(X @ p["W"])
    dh = 2 * h
    dz = dh  # the tanh's derivative missing
    return {"W": X.T @ dz}


def _tanh_case(loss, **options) -> Case:
    """A 5 x 4 weight, 20 examples, the tanh's derivative missing; 0.3 s of blame, without JAX."""
    X = np.random.default_rng(0).normal(size=(20, 5))
    names, leaves, treedef = gradcheck.tree.flatten({"W": np.full((5, 4), 0.1)})
    return Case(loss, _tanh_grad_missing_derivative, names, leaves, treedef, [False], (X,), {}, seconds=0.3,
                use_jax=False, **options)


def test_finite_differences_on_intermediates_keep_to_the_time_blame_has():
    """A slow loss: the differences stop as soon as they clearly cannot fit, with the reason."""
    def loss(p, X):
        time.sleep(0.004)
        return _tanh_loss(p, X)

    case = _tanh_case(loss)
    start = time.perf_counter()
    found = blame_case(case, ["W"])["W"]
    assert time.perf_counter() - start < 0.3 + 0.5  # the cap, and at most the calls that measured the pace
    assert not found.located and "blame may spend" in found.reason and "without JAX" in found.reason


def test_differences_known_not_to_fit_are_not_started():
    """With the check's measured call time, differences that cannot fit make no call at all,
    and too many parameters for them are refused before the loss is even recorded."""
    calls = []

    def loss(p, X):
        calls.append(1)
        return _tanh_loss(p, X)

    case = _tanh_case(loss, call_seconds=0.05)  # 2 x (20 + 20 + ...) calls at 0.05 s: more than 0.3 s
    found = blame_case(case, ["W"])["W"]
    assert not found.located and "blame may spend" in found.reason, found.reason
    assert len(calls) == 1  # the recorded forward pass, and no difference
    big = gradcheck.tree.flatten({"W": np.full((50, 40), 0.1)})
    calls.clear()
    found = blame_case(Case(loss, _tanh_grad_missing_derivative, big[0], big[1], big[2], [False],
                            (np.ones((3, 50)),), {}, use_jax=False), ["W"])["W"]
    assert not found.located and "more than the 1,000" in found.reason and not calls, found.reason


def test_finite_differences_after_a_failed_jax_pass_get_the_time_blame_has(monkeypatch):
    """A JAX pass that fails after a while (a slow trace, a loss it cannot run) does not spend the
    finite differences' time: they get what they would have had without it."""
    import gradcheck.references.jax.adjoints as jax_adjoints

    def slow_failure(*args, **kwargs):
        time.sleep(0.4)
        raise TypeError("JAX cannot run this loss")

    monkeypatch.setattr(jax_adjoints, "start_adjoints", slow_failure)

    def loss(p, X):  # z named: dL/dz is a known quantity, and the line that should make it is found
        z = X @ p["W"]
        h = np.tanh(z)
        return float(np.sum(h ** 2))

    X = np.random.default_rng(0).normal(size=(6, 3))
    names, leaves, treedef = gradcheck.tree.flatten({"W": np.full((3, 2), 0.1)})
    case = Case(loss, _tanh_grad_missing_derivative, names, leaves, treedef, [False], (X,), {}, seconds=0.3)
    found = blame_case(case, ["W"])["W"]
    assert found.located, found.reason
    assert found.source == "dz = dh  # the tanh's derivative missing"


def test_regularised_data_part_is_known_where_the_backward_pass_shows_it():
    """dW2 = dL/dW2 - 0.1 x W2 shows the regularisation: the data part of dW1 is known too."""
    b = _blame_of("cs231n-relu-flipped-reg", "W1")
    assert (b.line, b.source) == (corpus.bug_line(corpus.relu_backward_flipped)[1], "dx = dout * (x < 0)  # BUG")
    b = _blame_of("cs231n-reg-doubled", "W2")
    assert b.line == corpus.bug_line(corpus.cs_loss_reg_wrong)[1]
    assert "it is dL/dW2 + 0.1 x W2: the regularisation's gradient is off" in b.should_be


def test_regularised_data_part_is_not_blamed_without_evidence():
    """One regularised weight whose data part is wrong: nothing shows what the data part is."""
    def loss(p, X, y, reg):
        h = np.tanh(X @ p["W"])
        return 0.5 * np.sum((h - y) ** 2) + 0.5 * reg * np.sum(p["W"] ** 2)

    def grad(p, X, y, reg):
        z = X @ p["W"]
        h = np.tanh(z)
        dh = h - y
        dz = dh * (1 - h)  # the tanh's derivative is 1 - h**2
        dW = X.T @ dz
        return {"W": dW + reg * p["W"]}

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    for use_jax in (True, False):
        b = blame(loss, grad, {"W": rng.normal(size=(3, 2))}, (X, y, 0.1), use_jax=use_jax)["W"]
        assert not b.located
        assert "matches no known quantity" in b.reason


def test_one_expression_gets_a_reason_not_a_line():
    def loss(p, X, y):
        return 0.5 * np.mean((X @ p["w"] - y) ** 2)

    def grad(p, X, y):
        return {"w": X.T @ (X @ p["w"] - y)}

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=10)
    b = blame(loss, grad, {"w": rng.normal(size=3)}, (X, y))["w"]
    assert not b.located
    assert "one expression" in b.reason


# ----------------------------------------------------------------------------- the report and the CLI


def test_report_text_and_json_carry_the_blame(reports):
    c = _case("mlp-no-derivative")
    report = reports[c.name]
    text = str(report)
    line = corpus.bug_line(c.bug)[1]
    assert f"blame_corpus.py:{line} in mlp_grad_no_derivative: dz1 = dh  # BUG" in text
    assert "it should be dL/dz1 = dL/dh * h * (1 - h)" in text
    d = json.loads(json.dumps(report.to_dict()))
    w1 = next(p for p in d["parameters"] if p["name"] == "W1")
    assert w1["blame"]["line"] == line and w1["blame"]["equals"].startswith("dL/dh")
    w2 = next(p for p in d["parameters"] if p["name"] == "W2")
    assert "blame" not in w2  # passing parameters carry none


def test_explain_command_shows_the_blamed_line(tmp_path, monkeypatch, capsys):
    from gradcheck.cli import main

    source = textwrap.dedent('''
        import numpy as np

        def loss(p, X, y):
            z = X @ p["W"]
            h = np.tanh(z)
            return np.sum((h - y) ** 2)

        def grad(p, X, y):
            z = X @ p["W"]
            h = np.tanh(z)
            dh = 2 * (h - y)
            dz = dh * h * (1 - h)
            return {"W": X.T @ dz}

        def params():
            return {"W": np.array([[0.1, -0.2], [0.3, 0.4]])}

        data = (np.array([[1.0, 2.0], [0.5, -1.0]]), np.array([[0.2, 0.1], [-0.3, 0.5]]))
    ''')
    (tmp_path / "blame_learner.py").write_text(source)
    line = source.splitlines().index("    dz = dh * h * (1 - h)") + 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["explain", "blame_learner:loss", "blame_learner:params", "--args", "blame_learner:data",
                 "--grad", "blame_learner:grad", "--leaf", "W", "--index", "0,0"])
    out = capsys.readouterr().out
    sys.modules.pop("blame_learner", None)
    assert code == 1
    assert f"blame: blame_learner.py:{line} in grad: dz = dh * h * (1 - h)" in out
    assert "multiplies by h * (1 - h) instead" in out


def test_the_example_in_the_docs_prints_what_they_show(tmp_path):
    """docs/blame.md's example, run as mlp.py, ends with the blame the page shows."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "blame.md").read_text()
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    shown = page.split("ends with\n\n```\n", 1)[1].split("```", 1)[0].strip()
    (tmp_path / "mlp.py").write_text(code)
    out = subprocess.run([sys.executable, "mlp.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(shown), out.stdout


# ----------------------------------------------------------------------------- never in the way


def test_blame_never_raises_and_never_fails_a_check():
    class Broken:
        objective = None
        names = ["w"]

    results = [gradcheck.model.ParamResult("w", (), "float64", False, "wrong", "")]
    assert attach_blame(results, Broken(), None, None) == results

    def loss(p):
        return p["w"] ** 2

    def grad(p):
        if sys.gettrace() is not None:  # fine for the check, raises when blame records it
            raise RuntimeError("traced")
        return {"w": 3 * p["w"]}

    report = gradcheck.check(loss, grad, {"w": 1.5}, against="numeric")
    assert not report.passed and report["w"].diagnosis != "ok"
    assert report["w"].blame is not None and not report["w"].blame.located

    def grad_exits(p):
        if sys.gettrace() is not None:  # sys.exit while blame records it
            sys.exit(3)
        return {"w": 3 * p["w"]}

    report = gradcheck.check(loss, grad_exits, {"w": 1.5}, against="numeric")
    assert "SystemExit" in report["w"].blame.reason


def test_blame_leaves_the_callers_arrays_alone():
    c = _case("mlp-half")
    params = c.params()
    before = {k: v.copy() for k, v in params.items()}
    X = c.args[0].copy()
    blame(c.loss, c.grad, params, c.args)
    assert all(np.array_equal(before[k], params[k]) for k in params)
    assert np.array_equal(X, c.args[0])


def test_time_cap_gives_a_reason():
    c = _case("cs231n-relu-flipped")
    names, leaves, treedef = gradcheck.tree.flatten(c.params())
    case = Case(lambda p, *a: c.value_and_grad(p, *a)[0], c.value_and_grad, names, leaves, treedef,
                [False] * len(names), c.args, {}, True, seconds=0.0)
    found = blame_case(case, ["W1"])
    assert not found["W1"].located and "time" in found["W1"].reason


# ----------------------------------------------------------------------------- the capturer


def _traced(x, y):
    a = x * 2.0
    b = np.array(a)
    b /= 4.0
    d = {"k": a + y}
    return {"out": d["k"] * b, "b": b}


def test_record_binds_names_entries_in_place_writes_and_returns():
    x, y = np.arange(3.0), np.ones(3)
    rec = record(_traced, x, y)
    lines = {(b.label, b.kind): b for b in rec.bindings}
    start = _traced.__code__.co_firstlineno
    assert lines[("a", "line")].statement.line == start + 1
    b_inplace = [b for b in rec.bindings if b.label == "b"]
    assert [b.statement.line for b in b_inplace] == [start + 2, start + 3]
    np.testing.assert_allclose(b_inplace[0].value, 2 * x)  # a private copy: the later /= is not in it
    assert lines[("d['k']", "line")].statement.line == start + 4
    ret = lines[("return['out']", "return")]
    assert set(ret.statement.reads(ret.label)) == {"d", "b"}
    np.testing.assert_allclose(ret.statement.rerun(environment(ret), ret.globals, ret.label), ret.value)
    again = ret.statement.rerun(environment(ret, {"b": np.zeros(3)}), ret.globals, ret.label)
    np.testing.assert_allclose(again, 0.0)


class _Counted:
    """A value whose products count themselves: which entries of a `return` a re-run evaluated."""

    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def __mul__(self, other):
        self.seen.append(self.name)
        return other


def _returns_many(a, b, c):
    return {"a": a * 1.0, "b": b * 2.0, "c": c * 3.0}


def _returns_pair(a, b):
    return a * 1.0, {"g": b * 2.0, "h": a * 3.0}


def _returns_awkward(a, b, extra):
    return {"a": a * 1.0, "c": b * 2.0, **extra}, [*extra.values(), b * 2.0, a * 3.0]


@pytest.mark.parametrize("fn, args, label, entries", [
    (_returns_many, ("a", "b", "c"), "return['b']", ["b"]),
    (_returns_pair, ("a", "b"), "return[1]['g']", ["b"]),
    (_returns_pair, ("a", "b"), "return[0]", ["a"]),
    # `**` may override any key, `*` shifts the positions: the whole display is evaluated
    (_returns_awkward, ("a", "b"), "return[0]['a']", ["a", "b"]),
    (_returns_awkward, ("a", "b"), "return[1][0]", ["a", "b"]),
])
def test_a_rerun_of_a_return_evaluates_only_the_entry_it_is_asked_for(fn, args, label, entries):
    rec = record(fn, *[np.full(2, float(i + 1)) for i in range(len(args))],
                 *([{"z": np.ones(2)}] if fn is _returns_awkward else []))
    ret = next(b for b in rec.bindings if b.label == label)
    seen: list = []
    env = {**environment(ret), **{name: _Counted(name, seen) for name in args}}
    value = ret.statement.rerun(env, ret.globals, label)
    assert sorted(seen) == entries
    # on the recorded values, the entry re-run gives what the whole return gave
    np.testing.assert_array_equal(ret.statement.rerun(environment(ret), ret.globals, label), ret.value)
    assert value is not None


def test_substituting_replaces_a_local_after_its_line():
    def f(x):
        h = x + 1.0
        out = h * 3.0
        return out

    line = f.__code__.co_firstlineno + 1

    def replace(key, value):
        return value + 10.0 if key[2:4] == (line, "h") else None

    with substituting(replace):
        got = f(np.ones(2))
    np.testing.assert_allclose(got, 36.0)
    with substituting(replace):
        got = f(1.0)  # Python floats too
    assert got == 36.0
    assert f(1.0) == 6.0  # and nothing stays hooked


def _helper(x):
    out = x * 2.0
    out = out + 1.0
    return out


def _caller(x):
    a = _helper(x)
    h = _helper(a)
    return float(np.sum(h))


def test_substituting_only_one_function_and_name_gives_the_same_keys():
    """`only` watches one local of one function: the same binding changes as without it."""
    line = _helper.__code__.co_firstlineno + 2  # the second `out = ...`, bound once per call
    for occurrence in (0, 1):
        key = (_helper.__code__.co_filename, "_helper", line, "out", occurrence)
        change = (lambda k, v, key=key: v + 5.0 if k == key else None)
        with substituting(change):
            everywhere = _caller(np.ones(3))
        with substituting(change, only=key[:2] + (key[3],)):
            alone = _caller(np.ones(3))
        assert everywhere == alone != _caller(np.ones(3))


def test_substituting_sees_in_place_writes_as_bindings():
    def f(x):
        p = x.copy()
        p /= 2.0
        return float(np.sum(p))

    line = f.__code__.co_firstlineno + 2
    seen = []

    def replace(key, value):
        seen.append(key[2:])
        return value * 0 if key[2:4] == (line, "p") else None

    with substituting(replace):
        assert f(np.ones(3)) == 0.0
    assert (line, "p", 0) in seen


def test_statement_spans_the_whole_multiline_statement():
    def f(x):
        y = (x
             + 1.0)
        return y

    start = f.__code__.co_firstlineno
    s = statement_at(f.__code__.co_filename, start + 2)
    assert (s.line, s.end) == (start + 1, start + 2)
    assert s.reads("y") == ("x",)
    assert math.isclose(record(f, 1.0).bindings[1].value, 2.0)


def test_constants_the_loss_branches_on_get_no_delta_and_the_adjoint_pass_stays_compiled():
    """A Python number bound in the loss (a clock reading, a switch) is no intermediate under
    JAX: perturbing it would turn the loss's own `while`/`if` on it into control flow on a
    traced value, and the adjoint pass would fall back to running op by op."""
    from gradcheck.references.jax import adjoints as jax_adjoints

    X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)

    def loss(w):
        z = X @ w
        h = np.tanh(z)
        scale = 2.0
        if scale > 1.0:
            h = h * scale
        return np.sum(h ** 2)

    def grad(w):
        z = X @ w
        h = np.tanh(z)
        dh = 2 * (2.0 * h) * 2.0
        dz = dh  # the planted bug: should be dh * (1 - h ** 2)
        return X.T @ dz

    report = gradcheck.check(loss, grad, np.array([0.3, -0.2, 0.5]), against=("numeric", "jax"))
    assert not report.passed
    assert report.parameters[0].blame.source.startswith("dz = dh"), str(report)
    programs = [p for p in jax_adjoints._CACHE.values() if p.hit]
    assert programs and programs[-1].jitted is not None  # compiled, not run op by op


def test_a_mask_made_from_the_data_keeps_the_adjoint_pass_compiled():
    """`yhat[onehot == 1]` (CS224n) stops jit while the data is an argument; the adjoint pass,
    like the JAX reference, compiles with the data as constants instead of running op by op."""
    from gradcheck.references.jax import adjoints as jax_adjoints

    rng = np.random.default_rng(11)
    X, onehot = rng.normal(size=(5, 3)), np.eye(2)[[0, 1, 1, 0, 1]]

    def loss(W, X, onehot):
        z = X @ W
        e = np.exp(z)
        yhat = e / np.sum(e, axis=1, keepdims=True)
        return np.sum(-np.log(yhat[onehot == 1]))

    def grad(W, X, onehot):
        z = X @ W
        e = np.exp(z)
        yhat = e / np.sum(e, axis=1, keepdims=True)
        dz = onehot - yhat  # the planted bug: the sign of yhat - onehot
        return X.T @ dz

    report = gradcheck.check(loss, grad, rng.normal(size=(3, 2)), args=(X, onehot), against=("numeric", "jax"))
    assert not report.passed and report.parameters[0].blame.source.startswith("dz = onehot - yhat"), str(report)
    programs = [p for p in jax_adjoints._CACHE.values() if p.hit and p.constant.programs]
    assert programs and not programs[-1].constant.fails


@pytest.mark.parametrize("enabled", [True, False])
def test_blame_leaves_the_garbage_collector_as_it_found_it(enabled):
    import gc

    def loss(p):
        h = np.tanh(p["w"])
        return float(np.sum(h ** 2))

    def grad(p):
        h = np.tanh(p["w"])
        dh = 2 * h
        return {"w": dh}  # the tanh's derivative missing

    def raising(p):
        raise RuntimeError("the learner's gradient fails")

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        found = blame(loss, grad, {"w": np.linspace(-1, 1, 5)})
        assert found["w"].located and gc.isenabled() is enabled
        failed = blame(loss, raising, {"w": np.linspace(-1, 1, 5)})
        assert not failed["w"].located and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _adjoints_both_ways(loss: Callable, params: dict, args: tuple) -> tuple:
    """(JAX's value, gradients and adjoints; finite differences' gradients and adjoints) of a loss."""
    from gradcheck import blame as blame_module

    names, leaves, treedef = gradcheck.tree.flatten(params)
    case = Case(loss, loss, names, [np.asarray(x, float) for x in leaves], treedef, [False] * len(names), args, {})
    fwd = record(loss, case.params(), *args)
    forward = blame_module._intermediates(fwd, set())
    started = blame_module.start_adjoints(case, forward)
    assert started[0] is not None
    value, grads, adj = started[0]()
    case.deadline = time.perf_counter() + 10.0
    fd_grads, fd_adj, _, _ = blame_module._numeric_adjoints(case, forward)
    assert math.isclose(value, blame_module.loss_value(fwd.result), rel_tol=1e-12)
    return (grads, adj), (fd_grads, fd_adj)


@pytest.mark.parametrize("way", ["compiled", "data as constants", "eager"])
def test_the_adjoint_pass_lays_out_its_one_array_right_however_the_loss_runs(way):
    """The JAX pass returns the value, the gradients and every adjoint in one array; each part,
    cut from it by the layout kept with the program, is the finite differences' value, whether
    the loss compiles, compiles with its data as constants (a mask made from the data), or runs op
    by op (Python control flow on a value)."""
    rng = np.random.default_rng(5)
    X, onehot = rng.normal(size=(4, 3)), np.eye(2)[[0, 1, 1, 0]]
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}

    def loss(p, X, onehot):
        z = X @ p["W"] + p["b"]
        h = np.tanh(z)
        if way == "data as constants":
            picked = h[onehot == 1]
        else:
            picked = np.sum(h * onehot, axis=1)
        if way == "eager" and float(np.sum(picked)) > 100.0:  # a branch on a traced value
            picked = picked * 2.0
        return np.sum(picked ** 2) + 0.5 * np.sum(p["b"] ** 2)

    for _ in range(2):  # the first pass traces (and fills the layout), the second reuses the program
        (grads, adj), (fd_grads, fd_adj) = _adjoints_both_ways(loss, params, (X, onehot))
        assert len(grads) == 2 and set(adj) == set(fd_adj) and len(adj) >= 3
        for mine, theirs in zip(grads, fd_grads):
            assert np.allclose(mine, theirs, rtol=1e-6, atol=1e-8)
        for key in adj:
            assert adj[key].shape == fd_adj[key].shape
            assert np.allclose(adj[key], fd_adj[key], rtol=1e-6, atol=1e-8), key
    from gradcheck.references.jax import adjoints as jax_adjoints

    program = next(reversed(jax_adjoints._CACHE.values()))  # the one just used
    assert program.hit and program.cuts_for == program.hit
    ran = ("eager" if program.jitted is None and not program.constant.programs
           else "data as constants" if program.jitted is None else "compiled")
    assert ran == way
