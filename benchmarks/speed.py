"""gradcheck's own timings and memory on the benchmark MLP, its sensitivity, and small-problem latency.

    python benchmarks/speed.py            # all sizes (1e3 .. 1e6)
    python benchmarks/speed.py --quick    # up to 1e4

Modes: "default" (against="auto": every element compared against JAX, finite differences
validate it on a sample and along random directions) and "fast" (against="numeric": no exact
reference; projections, bisection localisation and a sample). Each size is also checked with
one planted wrong element, which must be found and located. "differences" times
finite differences over every element, one numpy loss call per point against the batched
loss (re-run under jax.numpy, jitted, many points per call). "memory" is the peak resident
size of one check in a fresh process (Linux). Results go to benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as in peers.py, so timings compare
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems  # noqa: E402

import gradcheck  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
DIFFERENCE_SIZES = (1_000, 3_000, 10_000)
DELTAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 0.0)
MODES = {"default": "auto", "fast": "numeric"}
WRONG = ("W1", (3, 2))
FRESH_RUNS = 7  # fresh-process Mazur checks; the median and the range are reported


def planted(problem: dict, factor: float = 1.01):
    """The correct gradient with one element of W1 off by 1%."""
    def grad(params, X, y):
        g = problem["grad"](params, X, y)
        g["W1"] = g["W1"].copy()
        g["W1"][WRONG[1]] *= factor
        return g
    return grad


def scaled(problem: dict, delta: float):
    """The correct gradient scaled by (1 + delta) everywhere."""
    def grad(params, X, y):
        return {k: v * (1 + delta) for k, v in problem["grad"](params, X, y).items()}
    return grad


def timed(problem: dict, grad, against: str) -> tuple[float, "gradcheck.Report"]:
    start = time.perf_counter()
    report = gradcheck.check(problem["loss"], grad, problem["params"], problem["args"], against=against)
    return time.perf_counter() - start, report


def speed(sizes) -> list[dict]:
    rows = []
    for n in sizes:
        problem = problems.make_mlp(n)
        for mode, against in MODES.items():
            timed(problem, problem["grad"], against) if n <= 10_000 else None  # warm caches for small sizes
            t_ok, ok = timed(problem, problem["grad"], against)
            t_bad, bad = timed(problem, planted(problem), against)
            w = bad["W1"]
            rows.append({
                "params": problem["n_params"], "mode": mode, "seconds_correct": round(t_ok, 3),
                "seconds_planted": round(t_bad, 3), "correct_passed": ok.passed,
                "planted_found": (not bad.passed) and tuple(w.worst_index or ()) == WRONG[1],
                "planted_diagnosis": w.diagnosis, "references": [r.name for r in ok.references if r.ran],
                "plan": ok.plan.get("numeric"),
            })
            print(rows[-1], flush=True)
    return rows


def differences(sizes) -> list[dict]:
    """Every element by finite differences: per-element numpy calls against the batched loss."""
    from gradcheck.case import prepare
    from gradcheck.references.jax import reference as jax_ref
    from gradcheck.references.numeric import numeric_gradient

    rows = []
    for n in sizes:
        problem = problems.make_mlp(n)
        prep = prepare(problem["loss"], problem["grad"], problem["params"], problem["args"])
        everything = [np.arange(x.size) for x in prep.x0]
        t_numpy, plain = _timed(lambda: numeric_gradient(prep.objective, everything, f0=prep.loss_value,
                                                         use_complex=False))
        jax_ref._CACHE.clear()  # the build figure includes tracing and compiling, as on a first check
        t_build, batched = _timed(lambda: jax_ref.batched_loss(prep.objective))  # traces, compiles, times one call
        t_batched, fast = _timed(lambda: numeric_gradient(prep.objective, everything, f0=prep.loss_value,
                                                          use_complex=False, batched=batched))
        # How far apart the two estimates are, in units of their combined error bars.
        gap = max(float(np.max(np.abs(a - b) / (3 * (ea + eb) + 1e-9 * np.abs(a))))
                  for a, b, ea, eb in zip(plain.values, fast.values, plain.errors, fast.errors))
        rows.append({"params": problem["n_params"], "numpy_seconds": round(t_numpy, 3),
                     "batched_build_seconds": round(t_build, 3), "batched_seconds": round(t_batched, 3),
                     "speedup": round(t_numpy / t_batched, 1), "speedup_with_build": round(t_numpy / (t_build + t_batched), 1),
                     "rows_per_call": batched.rows, "batched_method": fast.method,
                     "max_gap_in_error_bars": round(gap, 3)})
        print(rows[-1], flush=True)
    return rows


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sensitivity() -> list[dict]:
    problem = problems.make_mlp(1_000)
    rows = []
    for mode, against in MODES.items():
        for delta in DELTAS:
            _, report = timed(problem, scaled(problem, delta), against)
            rows.append({"mode": mode, "delta": delta, "flagged": not report.passed})
    return rows


def latency() -> dict:
    sys.path.insert(0, str(HERE.parent))
    from gradcheck.worked_examples import get_case

    case = get_case("mazur")
    run = lambda: gradcheck.check(case["loss"], case["grad"], case["params"], case.get("args", ()),  # noqa: E731
                                  against="all")
    run()
    warm = min(_timed(run)[0] for _ in range(5))
    code = ("import sys; sys.path.insert(0, %r); import gradcheck; "
            "from gradcheck.worked_examples import get_case; c=get_case('mazur'); "
            "gradcheck.check(c['loss'], c['grad'], c['params'], c.get('args', ()), against='all'); "
            "print('done', flush=True)") % str(HERE.parent)
    verdicts, exits = [], []
    for _ in range(FRESH_RUNS):
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        line = process.stdout.readline()
        verdicts.append(time.perf_counter() - start)  # launch to the check's result
        if process.wait() != 0 or line.strip() != "done":
            raise RuntimeError("the fresh-process Mazur check failed")
        exits.append(time.perf_counter() - start)  # plus the interpreter tearing down jax and sympy
    return {"warm_seconds": round(warm, 3), "fresh_process_to_result_seconds": round(float(np.median(verdicts)), 3),
            "fresh_process_to_exit_seconds": round(float(np.median(exits)), 3), "fresh_runs": FRESH_RUNS,
            "fresh_process_to_result_range": [round(min(verdicts), 3), round(max(verdicts), 3)],
            "fresh_process_to_exit_range": [round(min(exits), 3), round(max(exits), 3)]}


def slowed(fn, seconds: float):
    """`fn`, busy for at least `seconds` per call (a loss as slow as a bigger model's)."""
    def slow(*args):
        start = time.perf_counter()
        value = fn(*args)
        while time.perf_counter() - start < seconds:
            pass
        return value
    return slow


#: (parameters, seconds per loss call) for the warm latency of a default check.
SMALL = ((100, 0.0), (1_000, 0.0), (10_000, 0.0), (1_000, 0.001), (10_000, 0.001))
BUDGETS = ((100_000, 0.05, 2.0), (100_000, 0.05, 1.0), (10_000, 0.02, 1.0))


def small_latency() -> list[dict]:
    """Warm wall time of a default check (all three references) on small problems: median of 5."""
    rows = []
    for n, delay in SMALL:
        problem = problems.make_mlp(n)
        loss = slowed(problem["loss"], delay) if delay else problem["loss"]
        run = lambda: gradcheck.check(loss, problem["grad"], problem["params"], problem["args"])  # noqa: E731
        report = run()
        times = [_timed(run)[0] for _ in range(5)]
        rows.append({"params": problem["n_params"], "loss_seconds": delay, "median_seconds": round(float(np.median(times)), 3),
                     "max_seconds": round(max(times), 3), "passed": report.passed,
                     "references": [r.name for r in report.references if r.ran],
                     "seconds_by_reference": {r.name: round(r.seconds, 3) for r in report.references}})
        print(rows[-1], flush=True)
    return rows


def _halved_b1(grad: Callable) -> Callable:
    """A planted bug: b1's gradient halved, so the check fails and blame runs too."""
    def wrong(params: dict, *args: Any) -> dict:
        g = grad(params, *args)
        return {**g, "b1": 0.5 * g["b1"]}
    return wrong


def budget_bound() -> list[dict]:
    """Wall time of checks with `budget=` on a slow loss: first (JAX compiles), warm, and warm
    with a wrong gradient (the failure's diagnosis and blame inside the budget too)."""
    rows = []
    for n, delay, budget in BUDGETS:
        problem = problems.make_mlp(n)
        loss = slowed(problem["loss"], delay)
        for run in ("first", "warm", "warm, wrong b1"):
            grad = _halved_b1(problem["grad"]) if "wrong" in run else problem["grad"]
            start = time.perf_counter()
            report = gradcheck.check(loss, grad, problem["params"], problem["args"], budget=budget)
            seconds = time.perf_counter() - start
            rows.append({"params": problem["n_params"], "loss_seconds": delay, "budget": budget, "run": run,
                         "seconds": round(seconds, 3), "over_budget": round(seconds / budget - 1, 3),
                         "passed": report.passed, "references": [r.name for r in report.references if r.ran],
                         "not_afforded": report.plan.get("not_afforded", [])})
            print(rows[-1], flush=True)
    return rows


_MEMORY_CHILD = """
import json, sys
sys.path.insert(0, {here!r})
import problems, gradcheck
import gradcheck.references.jax.reference, gradcheck.references.sympy.reference  # imports are not the check's memory

def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # kB

problem = problems.make_mlp({n})
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size
before = status_mb("VmRSS")
report = gradcheck.check(problem["loss"], problem["grad"], problem["params"], problem["args"], against={against!r})
print(json.dumps({{"passed": report.passed, "before_mb": before, "peak_mb": status_mb("VmHWM")}}))
"""


def memory(sizes) -> list[dict]:
    """Peak memory of one check in a fresh process, above what the process held before it.

    Linux only: the peak resident size (VmHWM) is reset just before the check. The child
    imports gradcheck's JAX and SymPy references first, so their import is not counted.
    """
    rows = []
    for n in sizes:
        for mode, against in MODES.items():
            code = _MEMORY_CHILD.format(here=str(HERE), n=n, against=against)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            child = json.loads(out.stdout.strip().splitlines()[-1])
            n_params = problems.count_params(problems.hidden_for(n), problems.hidden_for(n))
            extra = child["peak_mb"] - child["before_mb"]
            rows.append({"params": n_params, "mode": mode, "passed": child["passed"],
                         "parameters_mb": round(8 * n_params / 2**20, 2), "check_peak_extra_mb": round(extra, 1),
                         "extra_per_parameter_bytes": round(extra * 2**20 / n_params, 1)})
            print(rows[-1], flush=True)
    return rows


def _write(out: Path, results: dict) -> None:
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    os.replace(tmp, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e4 only")
    parser.add_argument("--latency", action="store_true",
                        help="only the whole-check figures (budget=, small problems, Mazur, sensitivity, 1e5 and 1e6), "
                             "into results/speed_budget_latency.json")
    args = parser.parse_args(argv)
    if args.latency:
        results = {"machine": f"{os.cpu_count()} cores, CPU only", "load_average": os.getloadavg()[0],
                   "mazur_latency": latency(), "small_latency": small_latency(), "budget": budget_bound(),
                   "sensitivity": sensitivity(), "speed": speed([100_000, 1_000_000])}
        _write(HERE / "results" / "speed_budget_latency.json", results)
        return 0
    sizes = [s for s in SIZES if s <= 10_000] if args.quick else SIZES
    results = {"machine": f"{os.cpu_count()} cores, CPU only", "speed": speed(sizes),
               "differences": differences(DIFFERENCE_SIZES[:2] if args.quick else DIFFERENCE_SIZES),
               "memory": memory(sizes), "sensitivity": sensitivity(), "mazur_latency": latency(),
               "small_latency": small_latency(), "budget": budget_bound()}
    _write(HERE / "results" / "speed.json", results)
    print(json.dumps(results["sensitivity"]), json.dumps(results["mazur_latency"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
