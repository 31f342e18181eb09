"""What blaming the line costs on a problem of 1e4 parameters, next to one gradient.

    python benchmarks/blame.py

The benchmark MLP of problems.py (tanh hidden layer, softmax cross-entropy, 10,080
parameters, batch 32), written as a learner writes it (named intermediates), with its
backward pass missing the tanh's derivative. In one run, each figure the median of RUNS warm
runs, the blame's runs and the gradient's interleaved so that the machine's load weighs on
both alike:

- `one_gradient`: one gradient of the loss as the JAX reference computes it (jitted, warm), the
  faster of its median between the blame's runs and its median run back to back (the ratios
  divide by it, so they err against the blame);
- the blame of a check's failing parameters, as `check` calls it (the Case holds the check's
  Objective, so the JAX re-run is shared), timed phase by phase from `Case.timings`:
  `record_forward` / `record_backward` (the loss and the gradient function run under the
  line-by-line recorder), `adjoints` (the JAX pass giving every intermediate's adjoint and
  the parameters' gradient), `quantities` (the known quantities), `search` (matching and
  following the failing gradients back), and `total`;
- the ratios the issue asks for: adjoints / one gradient, and (total - recordings) / one gradient;
- `sizes`: the same phases and ratio on the MLP of 1e3 and 1e5 parameters;
- `blame_api`: gradcheck.blame.blame called on its own (a new Objective each call), and `check`;
- cold: the first blame of the loss (JAX traces and compiles the adjoints' program) next to
  the JAX reference's first gradient of it (which compiles too);
- without JAX (`use_jax=False`, as a check with against="numeric" runs it): the 1e4 problem,
  where finite differences on the intermediates would need more elements than they visit, and
  the same code with 112 parameters and a batch of 4, where they run.

Results go to benchmarks/results/blame.json.
"""

from __future__ import annotations

import json
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as in speed.py
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems  # noqa: E402

import gradcheck  # noqa: E402
from gradcheck import blame as blame_module  # noqa: E402
from gradcheck.usercode.capture import record  # noqa: E402

RUNS = 21
TARGET = 10_000


def loss(params: dict, X: np.ndarray, y: np.ndarray):
    """problems.loss with its steps named."""
    z1 = X @ params["W1"] + params["b1"]
    h = np.tanh(z1)
    logits = h @ params["W2"] + params["b2"]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    onehot = y[:, None] == np.arange(logits.shape[1])
    return -np.sum(np.where(onehot, log_probs, 0.0)) / X.shape[0]


def grad_missing_derivative(params: dict, X: np.ndarray, y: np.ndarray) -> dict:
    """The hand-written gradient with the tanh's derivative left out."""
    n = X.shape[0]
    z1 = X @ params["W1"] + params["b1"]
    h = np.tanh(z1)
    logits = h @ params["W2"] + params["b2"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    dlogits = (probs - np.eye(logits.shape[1])[y]) / n
    dh = dlogits @ params["W2"].T
    dz1 = dh  # the planted bug: should be dh * (1 - h**2)
    return {"W1": X.T @ dz1, "b1": dz1.sum(axis=0), "W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}


def median_seconds(fn: Callable[[], Any], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _case(problem: dict, objective: Any = None, use_jax: bool = True) -> blame_module.Case:
    names, leaves, treedef = gradcheck.tree.flatten(problem["params"])
    return blame_module.Case(loss, grad_missing_derivative, names, leaves, treedef, [False] * len(names),
                             tuple(problem["args"]), {}, use_jax=use_jax, objective=objective)


def _objective(problem: dict) -> Any:
    from gradcheck.objective import Objective

    names, leaves, treedef = gradcheck.tree.flatten(problem["params"])
    return Objective(loss, treedef, leaves, tuple(problem["args"]))


def _phases(problem: dict, objective: Any) -> tuple[dict, float]:
    """Median seconds per blame phase and of one gradient, their runs interleaved."""
    from gradcheck.references.jax.reference import jax_value_and_grad

    runs, gradients = [], []
    for _ in range(RUNS):
        case = _case(problem, objective)
        t0 = time.perf_counter()
        blame_module.blame_case(case, ["W1", "b1"])  # the failing parameters, as check asks
        case.timings["total"] = time.perf_counter() - t0
        runs.append(case.timings)
        t0 = time.perf_counter()
        jax_value_and_grad(objective)
        gradients.append(time.perf_counter() - t0)
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}, statistics.median(gradients)


def _without_jax(problem: dict) -> dict:
    """Blame with use_jax=False: its seconds (median) and what it says for W1."""
    case = _case(problem, use_jax=False)
    found = blame_module.blame_case(case, ["W1"])["W1"]
    seconds = median_seconds(lambda: blame_module.blame_case(_case(problem, use_jax=False), ["W1"]), runs=3)
    said = f"line {found.line}: {found.source}" if found.located else found.reason
    return {"parameters": problem["n_params"], "seconds": round(seconds, 4), "W1": said,
            "phases_ms": {k: round(1e3 * v, 3) for k, v in case.timings.items()}}


def _ratio(phases: dict, one_gradient: float) -> float:
    """(blame - recordings) / one gradient: what blame adds besides running the learner's code."""
    return round((phases["total"] - phases["record_forward"] - phases["record_backward"]) / one_gradient, 2)


def _at_size(n_params: int) -> dict:
    """The phases and the ratio on the same MLP with about n_params parameters (one run, interleaved)."""
    from gradcheck.references.jax.reference import jax_value_and_grad

    problem = problems.make_mlp(n_params)
    objective = _objective(problem)
    blame_module.blame_case(_case(problem, objective), ["W1", "b1"])  # compiled once, as in a warm check
    phases, between = _phases(problem, objective)
    one_gradient = min(between, median_seconds(lambda: jax_value_and_grad(objective)))
    return {"parameters": problem["n_params"], "one_gradient_ms": round(1e3 * one_gradient, 3),
            "ms": {k: round(1e3 * v, 3) for k, v in phases.items()},
            "(blame - recordings) / one_gradient": _ratio(phases, one_gradient)}


def measure() -> dict:
    problem = problems.make_mlp(TARGET)
    params, args = problem["params"], tuple(problem["args"])
    import jax  # noqa: F401 - importing JAX is not the blame's cost

    from gradcheck.references.jax.reference import jax_value_and_grad

    objective = _objective(problem)
    cold_t0 = time.perf_counter()
    jax_value_and_grad(objective)
    cold_gradient = time.perf_counter() - cold_t0
    cold_t0 = time.perf_counter()  # the first blame of this loss: JAX traces and compiles its program
    first = blame_module.blame_case(_case(problem, objective), list(params))
    cold = time.perf_counter() - cold_t0
    phases, between = _phases(problem, objective)
    alone = median_seconds(lambda: jax_value_and_grad(objective))
    one_gradient = min(between, alone)
    recording = phases["record_forward"] + phases["record_backward"]
    fwd = record(loss, _case(problem).params(), *args)
    bwd = record(grad_missing_derivative, _case(problem).params(), *args)
    timings = {
        "loss": median_seconds(lambda: loss(params, *args)),
        "grad": median_seconds(lambda: grad_missing_derivative(params, *args)),
        "one_gradient": one_gradient,
        "one_gradient_between_blames": between,
        "one_gradient_back_to_back": alone,
        **{f"blame.{k}": v for k, v in phases.items()},
        "blame_api": median_seconds(lambda: gradcheck.blame.blame(loss, grad_missing_derivative, params, args)),
        "check": median_seconds(lambda: gradcheck.check(loss, grad_missing_derivative, params, args), runs=3),
    }
    blamed = {name: (b.line, b.source, b.should_be) if b.located else b.reason for name, b in first.items()}
    small = problems.make_mlp(120)  # 112 parameters; a batch of 4, as the tutorials' toy problems have
    small["args"] = tuple(a[:4] for a in small["args"])
    return {
        "problem": {"parameters": problem["n_params"], "shape": problem["shape"],
                    "intermediates": len(blame_module._intermediates(fwd, {id(x) for x in params.values()})),
                    "backward_bindings": len(bwd.bindings)},
        "ms": {k: round(1e3 * v, 3) for k, v in timings.items()},
        "ratios": {
            "adjoints / one_gradient": round(phases["adjoints"] / one_gradient, 2),
            "(blame - recordings) / one_gradient": _ratio(phases, one_gradient),
            "(quantities + search) / one_gradient": round((phases["quantities"] + phases["search"]) / one_gradient, 2),
            "recordings / (loss + grad)": round(recording / (timings["loss"] + timings["grad"]), 1),
        },
        "recording_ms": round(1e3 * recording, 3),
        "sizes": {"1e3": _at_size(1_000), "1e5": _at_size(100_000)},
        "cold_seconds": {"first_blame": round(cold, 4), "first_jax_gradient": round(cold_gradient, 4)},
        "without_jax": {"1e4": _without_jax(problem), "small": _without_jax(small)},
        "blamed": blamed,
        "runs": RUNS,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main() -> None:
    out = measure()
    path = HERE / "results" / "blame.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
