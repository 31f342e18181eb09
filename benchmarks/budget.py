"""Is `budget=` kept? Wall time of whole checks against their budget, over sizes, slow losses and budgets.

    python benchmarks/budget.py           # 1e3, 1e4, 1e5 parameters
    python benchmarks/budget.py --quick   # 1e3 and 1e5, fewer losses

The benchmark MLP of problems.py with its loss slowed to a fixed time per call (a busy
loop, as a bigger model's loss would be). For each size, loss time and budget: a fresh loss
(its first check: JAX traces and compiles it, within its share), the same loss again (warm),
and a wrong gradient (b1 halved: localisation, the diagnosis and blame within the budget
too). JAX is imported before the first check, so every check may try it. A check either
returns within 10% of its budget with the right verdict, or, when the budget cannot pay the
least check of that loss, raises BudgetTooShort at once naming the budget that would do.
Results go to benchmarks/results/budget.json; the summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as in speed.py
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems  # noqa: E402
from speed import _halved_b1, slowed  # noqa: E402

import gradcheck  # noqa: E402

SIZES = (1_000, 10_000, 100_000)
LOSS_SECONDS = (0.001, 0.01, 0.05, 0.2)
BUDGETS = (0.5, 1.0, 2.0, 5.0)
RUNS = ("first", "warm", "wrong b1")


def one(problem: dict, loss, run: str, budget: float) -> dict:
    grad = _halved_b1(problem["grad"]) if run == "wrong b1" else problem["grad"]
    start = time.perf_counter()
    try:
        report = gradcheck.check(loss, grad, problem["params"], problem["args"], budget=budget)
    except gradcheck.BudgetTooShort as exc:
        return {"seconds": round(time.perf_counter() - start, 3), "refused": True,
                "suggested": float(str(exc).split("Pass budget=")[1].split()[0])}
    seconds = time.perf_counter() - start
    wrong = [p.name for p in report.parameters if not p.passed]
    return {"seconds": round(seconds, 3), "over_budget": round(seconds / budget - 1, 3), "refused": False,
            "verdict_right": wrong == (["b1"] if run == "wrong b1" else []),
            "references": [r.name for r in report.references if r.ran],
            "not_afforded": report.plan.get("not_afforded", [])}


def sweep(sizes, loss_seconds, budgets) -> list[dict]:
    rows = []
    for n in sizes:
        problem = problems.make_mlp(n)
        for delay in loss_seconds:
            for budget in budgets:
                loss = slowed(problem["loss"], delay)  # a new function: nothing compiled for it yet
                for run in RUNS:
                    row = {"params": problem["n_params"], "loss_seconds": delay, "budget": budget, "run": run,
                           **one(problem, loss, run, budget)}
                    rows.append(row)
                    print({k: v for k, v in row.items() if k != "not_afforded"}, flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    ran = [r for r in rows if not r["refused"]]
    refused = [r for r in rows if r["refused"]]
    worst = max(ran, key=lambda r: r["over_budget"]) if ran else None
    return {"checks": len(rows), "ran": len(ran), "refused": len(refused),
            "verdicts_right": sum(r["verdict_right"] for r in ran),
            "over_budget_by_more_than_10_percent": sum(r["over_budget"] > 0.1 for r in ran),
            "max_over_budget": worst and {k: worst[k] for k in ("params", "loss_seconds", "budget", "run",
                                                                "seconds", "over_budget")},
            "max_seconds_to_refuse": max((r["seconds"] for r in refused), default=None),
            "refused_with_budget_over_suggested": sum(r["budget"] >= r["suggested"] for r in refused)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e3 and 1e5 parameters, losses of 0.01 and 0.05 s")
    args = parser.parse_args(argv)
    from gradcheck.references.jax import reference  # noqa: F401 - importing jax is not a check's time

    sizes, losses = ((1_000, 100_000), (0.01, 0.05)) if args.quick else (SIZES, LOSS_SECONDS)
    rows = sweep(sizes, losses, BUDGETS)
    results = {"machine": f"{os.cpu_count()} cores, CPU only", "load_average": os.getloadavg(),
               "summary": summary(rows), "rows": rows}
    out = HERE / "results" / "budget.json"
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
