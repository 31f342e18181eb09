"""What blaming the line costs on a problem of 1e4 parameters, next to one gradient.

    python benchmarks/blame.py

The benchmark MLP of problems.py (tanh hidden layer, softmax cross-entropy, 10,080
parameters, batch 32), written as a learner writes it (named intermediates), with its
backward pass missing the tanh's derivative. Timed, each the median of several warm runs
(JAX has compiled its operations once before):

- `record_forward` / `record_backward`: running the loss / the gradient function under the
  line-by-line recorder (gradcheck.capture), next to running them plainly;
- `adjoints`: the JAX pass that gives every intermediate's adjoint and the parameters'
  gradient (gradcheck.references.jax_adjoints), next to `one_gradient`: one gradient of the
  same loss as the JAX reference computes it (jitted), `one_gradient_eager` (jax.grad without
  jit), and the learner's own numpy gradient;
- `search`: matching the recorded values and following the failing gradients back;
- `blame`: the whole of gradcheck.blame.blame, and `check` (which calls it on the failures);
- cold: the first blame of the loss (JAX traces and compiles the adjoints' program) next to
  the JAX reference's first gradient of it (which compiles too).

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
from gradcheck.capture import record  # noqa: E402

RUNS = 5
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


def _case(problem: dict) -> blame_module.Case:
    names, leaves, treedef = gradcheck.tree.flatten(problem["params"])
    return blame_module.Case(loss, grad_missing_derivative, names, leaves, treedef, [False] * len(names),
                             tuple(problem["args"]), {})


def _one_gradient(problem: dict, case: blame_module.Case) -> Callable[[], Any]:
    """One gradient of the same loss as the JAX reference takes it (rebound, jitted, warm)."""
    from gradcheck.objective import Objective
    from gradcheck.references.jax_ref import jax_value_and_grad

    objective = Objective(loss, case.treedef, case.leaves, tuple(problem["args"]))
    return lambda: jax_value_and_grad(objective)


def _eager_gradient(problem: dict) -> Callable[[], Any]:
    """One eager jax.grad of the same rebound loss (no compilation)."""
    import jax

    from gradcheck.references.jax_ref import float64, namespace
    from gradcheck.retrace import rebind

    fn = rebind(loss, namespace())
    X, y = problem["args"]

    def run() -> Any:
        with float64():
            params = {k: jax.numpy.asarray(v) for k, v in problem["params"].items()}
            return jax.block_until_ready(jax.grad(fn)(params, X, y))

    return run


def measure() -> dict:
    from gradcheck.references.jax_adjoints import intermediate_adjoints

    problem = problems.make_mlp(TARGET)
    params, args = problem["params"], tuple(problem["args"])
    import jax  # noqa: F401 - importing JAX is not the blame's cost

    cold_t0 = time.perf_counter()  # the first blame of this loss: JAX traces and compiles its program
    first = gradcheck.blame.blame(loss, grad_missing_derivative, params, args)
    cold = time.perf_counter() - cold_t0
    case = _case(problem)
    leaf_ids = {id(x) for x in case.leaves}
    fwd = record(loss, case.params(), *args)
    forward = blame_module._intermediates(fwd, leaf_ids)
    shapes = {b.key: np.shape(b.value) for b in forward}

    def adjoints() -> Any:
        return intermediate_adjoints(loss, case.treedef, case.leaves, args, {}, shapes)

    grads, adj, method, rtol = blame_module.adjoints(case, forward, leaf_ids)
    quantities = blame_module.known_quantities(case, fwd, grads, adj, rtol, leaf_ids)
    bwd_params = case.params()
    bwd = record(grad_missing_derivative, bwd_params, *args)
    objs = gradcheck.tree.flatten_like(case.treedef, bwd.result)

    def search() -> Any:
        s = blame_module._Search(bwd, quantities, time.perf_counter() + 60,
                                 {id(x) for x in gradcheck.tree.flatten(bwd_params)[1]})
        for k, name in enumerate(case.names):
            expected = blame_module.Quantity(f"dL/d{name}", "", grads[k], "adjoint", name, rtol)
            blame_module._blame_leaf(s, bwd, objs[k], expected, name)

    one_gradient, eager_gradient = _one_gradient(problem, case), _eager_gradient(problem)
    cold_t0 = time.perf_counter()
    one_gradient()
    cold_gradient = time.perf_counter() - cold_t0
    eager_gradient()
    timings = {
        "loss": median_seconds(lambda: loss(params, *args)),
        "grad": median_seconds(lambda: grad_missing_derivative(params, *args)),
        "record_forward": median_seconds(lambda: record(loss, case.params(), *args)),
        "record_backward": median_seconds(lambda: record(grad_missing_derivative, case.params(), *args)),
        "one_gradient": median_seconds(one_gradient),
        "one_gradient_eager": median_seconds(eager_gradient),
        "adjoints": median_seconds(adjoints),
        "search": median_seconds(search),
        "blame": median_seconds(lambda: gradcheck.blame.blame(loss, grad_missing_derivative, params, args)),
        "check": median_seconds(lambda: gradcheck.check(loss, grad_missing_derivative, params, args), runs=3),
    }
    blamed = {name: (b.line, b.source, b.should_be) if b.located else b.reason for name, b in first.items()}
    return {
        "problem": {"parameters": problem["n_params"], "shape": problem["shape"], "intermediates": len(forward),
                    "backward_bindings": len(bwd.bindings), "known_quantities": len(quantities),
                    "adjoint_method": method},
        "seconds": {k: round(v, 5) for k, v in timings.items()},
        "cold_seconds": {"first_blame": round(cold, 4), "first_jax_gradient": round(cold_gradient, 4)},
        "ratios": {
            "adjoints / one_gradient": round(timings["adjoints"] / timings["one_gradient"], 3),
            "blame / (one_gradient + recordings)": round(
                timings["blame"] / (timings["one_gradient"] + timings["record_forward"] + timings["record_backward"]),
                3),
            "record_forward / loss": round(timings["record_forward"] / timings["loss"], 1),
            "record_backward / grad": round(timings["record_backward"] / timings["grad"], 1),
        },
        "blamed": blamed,
        "runs": RUNS,
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
