"""gradcheck on the learner-idiom corpus (tests/learner_idioms.py): latency, references, verdicts.

    python benchmarks/idioms.py

For each case, a default check (`gradcheck.check` with no options) of the correct gradient is
run once to warm caches (JAX compiles, SymPy imports), then timed 5 times on the same data
(as a learner re-runs a check of the same loss and net; the parameters are fresh copies each
time): the median is the warm latency. The planted bug is checked once; its verdict and whether the findings are the
ones the case expects are recorded. Which references ran, and why the others did not, comes
from the correct check. The summary gives the fraction of cases on which all three references
ran, the median and the maximum warm latency, and the wall time of `check-gradients example
mazur` in a fresh process (median of 5). Results go to benchmarks/results/idioms.json.
"""

from __future__ import annotations

import json
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as in speed.py, so timings compare
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import learner_idioms  # noqa: E402

import gradcheck  # noqa: E402

WARM_RUNS = 5
FRESH_RUNS = 5
ALL = ("numeric", "jax", "sympy")


def run(case: learner_idioms.Case, buggy: bool = False, data: dict | None = None) -> tuple[float, gradcheck.Report]:
    """Seconds of one default check of `case` (on `data`'s args if given), and its report."""
    kwargs = learner_idioms.check_kwargs(case, buggy)
    if data is not None:
        kwargs["args"] = data["args"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        report = gradcheck.check(**kwargs)
        return time.perf_counter() - start, report


def as_expected(case: learner_idioms.Case, report: gradcheck.Report) -> bool:
    """The planted bug fails exactly the expected leaves, each with the expected diagnosis."""
    found = {p.name: p.diagnosis for p in report.failures}
    return found == {leaf: diagnosis for leaf, (diagnosis, _) in case.expect.items()}


def measure(case: learner_idioms.Case) -> dict:
    data = learner_idioms.check_kwargs(case)
    first, report = run(case, data=data)
    warm = [run(case, data=data)[0] for _ in range(WARM_RUNS)]
    _, bad = run(case, buggy=True)
    ran = [s.name for s in report.references if s.ran]
    return {
        "name": case.name, "style": case.style, "bug": case.bug,
        "parameters": int(sum(p.total for p in report.parameters)),
        "first_seconds": round(first, 3), "warm_median_seconds": round(float(np.median(warm)), 3),
        "warm_max_seconds": round(max(warm), 3),
        "references": ran, "all_three": set(ran) == set(ALL),
        "expected_references": sorted(case.references), "reason": case.reason,
        "not_run": {s.name: s.reason for s in report.references if not s.ran},
        "seconds_by_reference": {s.name: round(s.seconds, 3) for s in report.references},
        "correct_passed": report.passed,
        "bug_passed": bad.passed, "bug_diagnosis": {p.name: p.diagnosis for p in bad.failures},
        "bug_as_expected": as_expected(case, bad),
    }


def fresh_mazur() -> dict:
    """Wall time of `check-gradients example mazur` in a fresh process, launch to exit."""
    exe = shutil.which("check-gradients")
    command = [exe] if exe else [sys.executable, "-m", "gradcheck"]
    times = []
    for _ in range(FRESH_RUNS):
        start = time.perf_counter()
        done = subprocess.run(command + ["example", "mazur", "--no-progress"], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"check-gradients example mazur exited {done.returncode}: {done.stderr[-500:]}")
    return {"median_seconds": round(float(np.median(times)), 3),
            "range_seconds": [round(min(times), 3), round(max(times), 3)], "runs": FRESH_RUNS}


def summary(rows: list[dict], mazur: dict) -> dict:
    warm = [r["warm_median_seconds"] for r in rows]
    return {"cases": len(rows), "all_three_fraction": round(sum(r["all_three"] for r in rows) / len(rows), 3),
            "warm_median_seconds": round(float(np.median(warm)), 3), "warm_max_seconds": round(max(warm), 3),
            "slowest": max(rows, key=lambda r: r["warm_median_seconds"])["name"],
            "correct_passed": sum(r["correct_passed"] for r in rows),
            "bugs_as_expected": sum(r["bug_as_expected"] for r in rows),
            "declared_without": {r["name"]: r["reason"] for r in rows if r["reason"]},
            "fresh_check_gradients_example_mazur": mazur}


def table(rows: list[dict]) -> str:
    head = f"{'case':42} {'params':>6} {'first s':>8} {'warm s':>7}  {'references':22} {'correct':7}  bug"
    lines = [head, "-" * len(head)]
    for r in rows:
        bug = "as expected" if r["bug_as_expected"] else "UNEXPECTED " + json.dumps(r["bug_diagnosis"])
        lines.append(f"{r['name']:42} {r['parameters']:>6} {r['first_seconds']:>8.3f} {r['warm_median_seconds']:>7.3f}  "
                     f"{','.join(r['references']):22} {'PASS' if r['correct_passed'] else 'FAIL':7}  {bug}")
    return "\n".join(lines)


def main() -> int:
    rows = []
    for case in learner_idioms.CASES:
        rows.append(measure(case))
        print(f"{case.name}: warm {rows[-1]['warm_median_seconds']} s, {rows[-1]['references']}", file=sys.stderr,
              flush=True)
    mazur = fresh_mazur()
    results = {"machine": f"{os.cpu_count()} cores, CPU only", "summary": summary(rows, mazur), "cases": rows}
    print(table(rows))
    s = results["summary"]
    print(f"\n{s['cases']} cases; all three references on {s['all_three_fraction']:.1%}; warm latency median "
          f"{s['warm_median_seconds']} s, max {s['warm_max_seconds']} s ({s['slowest']}); correct passed "
          f"{s['correct_passed']}, planted bugs as expected {s['bugs_as_expected']}; fresh-process "
          f"`check-gradients example mazur` {mazur['median_seconds']} s (median of {mazur['runs']})")
    for r in rows:
        for name, reason in r["not_run"].items():
            print(f"  {r['name']}: {name} did not run: {reason[:160]}")
    out = HERE / "results" / "idioms.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
