"""gradcheck's own timings on the benchmark MLP, its sensitivity, and small-problem latency.

    python benchmarks/speed.py            # all sizes (1e3 .. 1e6)
    python benchmarks/speed.py --quick    # up to 1e4

Modes: "default" (against="auto": every element compared against JAX, finite differences
validate it on a sample and along random directions) and "fast" (against="numeric": no exact
reference; projections, bisection localisation and a sample). Each size is also checked with
one planted wrong element, which must be found and located. Results go to
benchmarks/results/speed.json.
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

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems  # noqa: E402

import gradcheck  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
DELTAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 0.0)
MODES = {"default": "auto", "fast": "numeric"}
WRONG = ("W1", (3, 2))


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
    from worked_examples import get_case

    case = get_case("mazur")
    run = lambda: gradcheck.check(case["loss"], case["grad"], case["params"], case.get("args", ()),  # noqa: E731
                                  against="all")
    run()
    warm = min(_time(run) for _ in range(5))
    code = ("import sys, time; t=time.perf_counter(); sys.path.insert(0, %r); import gradcheck; "
            "from worked_examples import get_case; c=get_case('mazur'); "
            "gradcheck.check(c['loss'], c['grad'], c['params'], c.get('args', ()), against='all'); "
            "print(time.perf_counter()-t)") % str(HERE.parent)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fresh_total = time.perf_counter() - start
    return {"warm_seconds": round(warm, 3), "fresh_process_seconds": round(fresh_total, 3),
            "fresh_in_process_seconds": round(float(out.stdout.strip()), 3)}


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e4 only")
    args = parser.parse_args(argv)
    sizes = [s for s in SIZES if s <= 10_000] if args.quick else SIZES
    results = {"machine": f"{os.cpu_count()} cores, CPU only", "speed": speed(sizes),
               "sensitivity": sensitivity(), "mazur_latency": latency()}
    out = HERE / "results" / "speed.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out)
    print(json.dumps(results["sensitivity"]), json.dumps(results["mazur_latency"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
