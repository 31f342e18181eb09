"""Time gradcheck's peers on the MLP benchmark and probe how small a bug each one flags.

Peers: scipy.optimize.check_grad, torch.autograd.gradcheck (slow and fast mode) and
jax.test_util.check_grads, each fed the hand-written numpy gradient of `problems.make_mlp`.

    python benchmarks/peers.py                   # 1e3 .. 1e6 parameters, about 2 minutes on 2 cores
    python benchmarks/peers.py --quick           # 1e3 and 1e4 only
    python benchmarks/peers.py --run-limit 900   # run the 1e5 checks too instead of estimating them

Writes results/peers.json and results/peers.md (peers-quick.* with --quick) next to this
file and prints the tables.
"""

from __future__ import annotations

import os

# One BLAS thread, set before numpy loads. Every peer calls the same numpy loss; on 2 cores
# a second BLAS thread makes these small matmuls no faster alone and up to 20x slower while
# anything else runs. Export the variables to override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from problems import PARAM_NAMES, flat, make_mlp

SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = SIZES[:2]
DELTAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 0.0)
RUN_LIMIT_S = 60.0      # a check predicted to take longer is estimated, not run
PROBE_S = 3.0           # wall time spent measuring the per-call cost of a long check
SHORT = 20              # loss calls in the short probe that measures a check's fixed cost
SCIPY_NOISE_FACTOR = 10.0
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Stop(Exception):
    """Raised by a counted loss to cut a timing probe short."""


@dataclass
class Counter:
    """Counts loss calls; raises Stop after `limit` of them when a limit is set."""

    calls: int = 0
    limit: int | None = None

    def tick(self) -> None:
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise Stop


@dataclass
class Outcome:
    """One check's verdict: flagged is None when the peer only returns a number."""

    flagged: bool | None
    value: float | None = None
    message: str = ""


@dataclass
class Timing:
    """Seconds for one check of one size; `estimated` when extrapolated from a probe."""

    peer: str
    n_params: int
    seconds: float
    cpu_seconds: float
    estimated: bool
    outcome: Outcome | None = None
    cold_seconds: float | None = None
    repeats: int = 0
    forecast: dict = field(default_factory=dict)


@dataclass
class Peer:
    """A peer: `build(problem, grad, counter)` returns a zero-argument check.

    `calls(n)` is the number of loss calls a full check makes on n parameters, for
    peers whose cost grows with n; it lets a truncated run predict the full one.
    """

    name: str
    build: Callable[[dict, Callable, Counter], Callable[[], Outcome]]
    calls: Callable[[int], int] | None = None
    wrong_by: float = 0.0  # time the check of a gradient scaled by (1 + wrong_by)


def counted(problem: dict, grad: Callable, counter: Counter) -> dict:
    """A copy of `problem` whose loss ticks `counter` and whose gradient is `grad`."""
    loss = problem["loss"]

    def counted_loss(params: dict, *args: Any) -> Any:
        counter.tick()
        return loss(params, *args)

    return {**problem, "loss": counted_loss, "grad": grad}


def scaled(grad: Callable, delta: float) -> Callable:
    """`grad` with every entry multiplied by (1 + delta)."""
    if not delta:
        return grad

    def wrong(params: dict, *args: Any) -> dict:
        return {k: (1.0 + delta) * v for k, v in grad(params, *args).items()}

    return wrong


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


# --- scipy -----------------------------------------------------------------------------

def build_scipy(problem: dict, grad: Callable, counter: Counter) -> Callable[[], Outcome]:
    """scipy.optimize.check_grad on the flat vector; value = ||num - grad|| / ||grad||."""
    from scipy.optimize import check_grad

    f, g, x0 = flat(counted(problem, grad, counter))

    def run() -> Outcome:
        # check_grad returns the absolute 2-norm of the difference; users compare it
        # against the gradient's size, so report it relative to ||grad||.
        err = check_grad(f, g, x0)
        return Outcome(flagged=None, value=float(err / np.linalg.norm(g(x0))))

    return run


# --- torch -----------------------------------------------------------------------------

def torch_function(problem: dict) -> Any:
    """A torch.autograd.Function whose forward is the numpy loss, backward the numpy grad."""
    import torch

    X, y = problem["args"]

    def as_params(tensors: Sequence[Any]) -> dict:
        return {name: t.detach().numpy() for name, t in zip(PARAM_NAMES, tensors)}

    class NumpyLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *tensors: Any) -> Any:
            ctx.save_for_backward(*tensors)
            return torch.tensor(float(problem["loss"](as_params(tensors), X, y)), dtype=torch.float64)

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> tuple:
            grads = problem["grad"](as_params(ctx.saved_tensors), X, y)
            return tuple(grad_out * torch.from_numpy(np.asarray(grads[n], dtype=np.float64)) for n in PARAM_NAMES)

    return NumpyLoss


def build_torch(fast_mode: bool) -> Callable[[dict, Callable, Counter], Callable[[], Outcome]]:
    """torch.autograd.gradcheck with default tolerances, in slow or fast mode."""

    def build(problem: dict, grad: Callable, counter: Counter) -> Callable[[], Outcome]:
        import torch
        # `torch.autograd.gradcheck` is the function; the error class lives in its module.
        GradcheckError = importlib.import_module("torch.autograd.gradcheck").GradcheckError

        fn = torch_function(counted(problem, grad, counter))
        inputs = tuple(torch.tensor(problem["params"][n], dtype=torch.float64, requires_grad=True)
                       for n in PARAM_NAMES)

        def run() -> Outcome:
            torch.manual_seed(0)  # fast mode draws its random projections from torch's RNG
            try:
                torch.autograd.gradcheck(fn.apply, inputs, fast_mode=fast_mode)
            except GradcheckError as exc:
                return Outcome(flagged=True, message=first_line(exc))
            return Outcome(flagged=False)

        return run

    return build


# --- jax -------------------------------------------------------------------------------

def jax_function(problem: dict) -> Callable:
    """A jax function of the parameter leaves with the numpy loss and grad as its custom VJP."""
    import jax

    X, y = problem["args"]
    scalar = jax.ShapeDtypeStruct((), np.float64)

    def as_params(leaves: Sequence[Any]) -> dict:
        return {n: np.asarray(v) for n, v in zip(PARAM_NAMES, leaves)}

    def np_loss(*leaves: Any) -> np.ndarray:
        return np.asarray(problem["loss"](as_params(leaves), X, y), dtype=np.float64)

    def np_grad(*leaves: Any) -> tuple:
        grads = problem["grad"](as_params(leaves), X, y)
        return tuple(np.asarray(grads[n], dtype=np.float64) for n in PARAM_NAMES)

    @jax.custom_vjp
    def f(*leaves: Any) -> Any:
        return jax.pure_callback(np_loss, scalar, *leaves)

    def f_fwd(*leaves: Any) -> tuple:
        return f(*leaves), leaves

    def f_bwd(leaves: tuple, g: Any) -> tuple:
        shapes = tuple(jax.ShapeDtypeStruct(np.shape(v), np.float64) for v in leaves)
        return tuple(g * gi for gi in jax.pure_callback(np_grad, shapes, *leaves))

    f.defvjp(f_fwd, f_bwd)
    return f


def build_jax(problem: dict, grad: Callable, counter: Counter) -> Callable[[], Outcome]:
    """jax.test_util.check_grads(order=1, modes=["rev"]) with default tolerances."""
    import jax
    from jax.test_util import check_grads

    jax.config.update("jax_enable_x64", True)  # float64 throughout, like the other peers
    f = jax_function(counted(problem, grad, counter))
    leaves = tuple(jax.numpy.asarray(problem["params"][n]) for n in PARAM_NAMES)

    def run() -> Outcome:
        try:
            check_grads(f, leaves, order=1, modes=["rev"])
        except AssertionError as exc:
            return Outcome(flagged=True, message=first_line(exc))
        return Outcome(flagged=False)

    return run


PEERS = (
    # approx_fprime: one call at x0, then one forward-difference call per parameter.
    Peer("scipy check_grad", build_scipy, calls=lambda n: n + 1),
    # one call for the output, two central-difference calls per parameter, one more check.
    Peer("torch gradcheck (slow)", build_torch(fast_mode=False), calls=lambda n: 2 * n + 2),
    Peer("torch gradcheck (fast)", build_torch(fast_mode=True)),
    Peer("jax check_grads (rev)", build_jax),
    # A failing fast check recomputes the full slow-mode Jacobian for its error message.
    Peer("torch gradcheck (fast), 1% wrong", build_torch(fast_mode=True), calls=lambda n: 2 * n + 4,
         wrong_by=1e-2),
)


# --- timing ----------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of one call.

    CPU seconds barely move when other work shares the machine; wall seconds do.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def probe(peer: Peer, problem: dict, limit: int) -> tuple[float, float, int]:
    """(wall s, CPU s, loss calls) of a full-size check cut short after `limit` loss calls."""
    counter = Counter(limit=limit)
    check = peer.build(problem, problem["grad"], counter)

    def run() -> None:
        try:
            check()
        except Stop:
            pass

    wall, cpu, _ = timed(run)
    return wall, cpu, counter.calls


def fastest_probe(peer: Peer, problem: dict, limit: int, tries: int) -> tuple[float, float, int]:
    """The fastest of `tries` truncated runs: the least disturbed by other work on the machine."""
    return min((probe(peer, problem, limit) for _ in range(tries)), key=lambda run: run[0])


def extrapolate(short: tuple, long: tuple, total: int) -> float:
    """Seconds for `total` calls, from (seconds, calls) after a short and a long truncated run."""
    (t_short, n_short), (t_long, n_long) = short, long
    per_call = (t_long - t_short) / (n_long - n_short)
    if per_call <= 0:  # the short run was disturbed; fall back to the long run's average
        per_call = t_long / n_long
    return t_long + (total - n_long) * per_call


def predict(peer: Peer, problem: dict) -> dict:
    """Predicted seconds of a full check: fixed cost plus per-call cost, both measured at this size.

    Truncated runs of the real check, after `SHORT` loss calls and after about PROBE_S
    seconds of calls, separate the one-off cost (setup, allocations) from the cost per call.
    """
    total = peer.calls(problem["n_params"])
    wall_s, cpu_s, n_s = fastest_probe(peer, problem, min(total, SHORT), tries=3)
    if n_s >= total:
        return {"calls": total, "predicted_s": wall_s, "predicted_cpu_s": cpu_s, "probes": [[n_s, wall_s, cpu_s]]}
    limit = int(min(total, n_s + max(50, PROBE_S * n_s / wall_s)))
    wall_l, cpu_l, n_l = fastest_probe(peer, problem, limit, tries=2)
    return {"calls": total,
            "predicted_s": extrapolate((wall_s, n_s), (wall_l, n_l), total),
            "predicted_cpu_s": extrapolate((cpu_s, n_s), (cpu_l, n_l), total),
            "probes": [[n_s, wall_s, cpu_s], [n_l, wall_l, cpu_l]]}


def run_repeated(check: Callable[[], Outcome]) -> dict:
    """Wall and CPU seconds of a check: the median of warm re-runs where affordable.

    The first (cold) run includes one-off costs such as jax compiling for new shapes.
    """
    cold_wall, cold_cpu, outcome = timed(check)
    repeats = 3 if cold_wall < 2.0 else 1 if cold_wall < 20.0 else 0
    warm = [timed(check)[:2] for _ in range(repeats)] or [(cold_wall, cold_cpu)]
    return {"seconds": statistics.median(w for w, _ in warm), "cpu_seconds": statistics.median(c for _, c in warm),
            "cold_seconds": cold_wall, "repeats": repeats, "outcome": outcome}


def time_peer(peer: Peer, problem: dict, run_limit: float) -> Timing:
    """Time one check of `problem` by `peer`, or estimate it when predicted over `run_limit` s."""
    n = problem["n_params"]
    problem = {**problem, "grad": scaled(problem["grad"], peer.wrong_by)}
    forecast = predict(peer, problem) if peer.calls else {}
    if forecast and forecast["predicted_s"] > run_limit:
        return Timing(peer.name, n, forecast["predicted_s"], forecast["predicted_cpu_s"], estimated=True,
                      forecast=forecast)
    run = run_repeated(peer.build(problem, problem["grad"], Counter()))
    return Timing(peer.name, n, estimated=False, forecast=forecast, **run)


# --- sensitivity -----------------------------------------------------------------------

def sensitivity(problem: dict) -> dict[str, list[Outcome]]:
    """Each peer's outcome on the gradient scaled by (1 + delta), for every delta in DELTAS."""
    rows = {}
    for peer in (p for p in PEERS if not p.wrong_by):
        rows[peer.name] = [peer.build(problem, scaled(problem["grad"], d), Counter())() for d in DELTAS]
    return rows


def apply_scipy_rule(rows: dict[str, list[Outcome]], timings: list[Timing]) -> float:
    """Judge scipy's numbers: flagged when above 10x its value on the correct gradient."""
    scipy_rows = rows["scipy check_grad"]
    threshold = SCIPY_NOISE_FACTOR * scipy_rows[DELTAS.index(0.0)].value
    outcomes = scipy_rows + [t.outcome for t in timings if t.peer == "scipy check_grad" and t.outcome]
    for outcome in outcomes:
        outcome.flagged = outcome.value > threshold
    return threshold


# --- report ----------------------------------------------------------------------------

def machine() -> dict:
    """CPU, core count and library versions of this run."""
    model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    versions = {name: importlib.import_module(name).__version__
                for name in ("numpy", "scipy", "torch", "jax", "jaxlib")}
    threads = {var: os.environ.get(var) for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "gpu": None,
            "python": platform.python_version(), "versions": versions, "blas_threads": threads}


def fmt_seconds(t: Timing, attr: str = "seconds") -> str:
    """'0.012 s', or '~1234 s (est.)' for an extrapolated time."""
    value = getattr(t, attr)
    s = f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"
    return f"~{s} (est.)" if t.estimated else s


def progress(t: Timing) -> str:
    """One line per timed check, with the forecast next to a measured time."""
    line = f"{t.peer:34s} {t.n_params:>9,d}  {fmt_seconds(t)}"
    if t.forecast and not t.estimated:
        line += f"  (forecast {t.forecast['predicted_s']:.3g} s)"
    return line


def verdict(t: Timing) -> str:
    """'pass', 'FAIL' or 'n/a' (not run) for a check of the correct gradient."""
    if t.outcome is None or t.outcome.flagged is None:
        return "n/a"
    return "FAIL" if t.outcome.flagged else "pass"


def speed_table(timings: list[Timing], attr: str = "seconds") -> str:
    """Markdown: `attr` seconds per check and verdict, one row per peer, one column per size."""
    cols = sorted({t.n_params for t in timings})
    lines = ["| peer | " + " | ".join(f"{n:,} params" for n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for peer in PEERS:
        cells = {t.n_params: f"{fmt_seconds(t, attr)}, {verdict(t)}" for t in timings if t.peer == peer.name}
        lines.append(f"| {peer.name} | " + " | ".join(cells.get(n, "") for n in cols) + " |")
    return "\n".join(lines)


def sensitivity_table(rows: dict[str, list[Outcome]]) -> str:
    """Markdown: one row per peer, one column per delta; 'caught' where the peer flagged it."""
    head = "| peer | " + " | ".join(f"{d:g}" for d in DELTAS) + " |"
    lines = [head, "|---" * (len(DELTAS) + 1) + "|"]
    for name, outcomes in rows.items():
        lines.append(f"| {name} | " + " | ".join("caught" if o.flagged else "-" for o in outcomes) + " |")
    scipy_values = " | ".join(f"{o.value:.1e}" for o in rows["scipy check_grad"])
    lines.append(f"| scipy relative error | {scipy_values} |")
    return "\n".join(lines)


def write_results(stem: str, data: dict, markdown: str) -> None:
    """results/<stem>.json and results/<stem>.md."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{stem}.json"), "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    with open(os.path.join(RESULTS_DIR, f"{stem}.md"), "w") as fh:
        fh.write(markdown + "\n")


def render(timings: list[Timing], rows: dict[str, list[Outcome]], threshold: float) -> str:
    """The markdown tables printed at the end of a run and saved to results/peers.md."""
    n_small = next(t.n_params for t in timings)
    return "\n\n".join([
        "Wall seconds per check, with the peer's verdict (pass/FAIL) on the correct gradient, "
        "or on a 1% wrong one where the row says so:", speed_table(timings),
        "CPU seconds of the process per check (steady while other work shares the machine):",
        speed_table(timings, "cpu_seconds"),
        f"Sensitivity on the {n_small:,}-parameter problem, gradient scaled by (1 + delta); "
        "'caught' where the peer flags it:", sensitivity_table(rows),
        f"scipy rule: caught when relative error > {SCIPY_NOISE_FACTOR:g} x its value at delta = 0 "
        f"(threshold {threshold:.1e}).",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 1e4 parameters only")
    parser.add_argument("--run-limit", type=float, default=RUN_LIMIT_S, metavar="SECONDS",
                        help=f"estimate checks predicted to take longer (default {RUN_LIMIT_S:g})")
    opts = parser.parse_args(argv)
    started, load_start = time.perf_counter(), os.getloadavg()
    rows = sensitivity(make_mlp(SIZES[0]))
    timings = []
    for size in QUICK_SIZES if opts.quick else SIZES:
        problem = make_mlp(size)
        for peer in PEERS:
            timings.append(time_peer(peer, problem, opts.run_limit))
            print(progress(timings[-1]), flush=True)
    threshold = apply_scipy_rule(rows, timings)
    markdown = render(timings, rows, threshold)
    print("\n" + markdown)
    write_results("peers-quick" if opts.quick else "peers", {
        "machine": {**machine(), "load_average_start": load_start, "load_average_end": os.getloadavg()},
        "rules": {"run_limit_s": opts.run_limit, "probe_s": PROBE_S, "scipy_threshold": threshold,
                  "scipy_noise_factor": SCIPY_NOISE_FACTOR},
        "timings": [asdict(t) for t in timings],
        "sensitivity": {"deltas": list(DELTAS), "rows": {k: [asdict(o) for o in v] for k, v in rows.items()}},
        "total_seconds": time.perf_counter() - started,
    }, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
