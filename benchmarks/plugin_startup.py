"""What the gradcheck pytest plugin adds to starting pytest on a suite that does not use it.

    python benchmarks/plugin_startup.py              # 25 repetitions of each arm
    python benchmarks/plugin_startup.py --reps 60

A tiny suite (two files, twenty trivial tests, no gradient checks) is collected with
`pytest --collect-only -q` in a fresh interpreter, alternately with `-p no:gradcheck` and
with the plugin, and the medians are compared. Unrelated installed plugins whose own startup
is slow and noisy (hypothesis imports itself at the end of every session) are disabled in
both arms, since they would drown a difference of milliseconds. `python -X importtime`
gives a second, in-process figure: the import of `gradcheck.pytest_plugin` after pytest.

The target is under 50 ms. Results go to benchmarks/results/plugin_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_MS = 50.0
#: Disabled in both arms: installed plugins that are not under test and cost seconds.
UNRELATED = ("no:hypothesispytest", "no:benchmark", "no:cacheprovider")
TEST_FILE = "".join(f"def test_{i}():\n    assert {i} + 1 > {i}\n\n" for i in range(10))


def make_suite(root: Path) -> Path:
    """A suite that never checks a gradient: pyproject with pytest settings, two test files."""
    (root / "pyproject.toml").write_text('[project]\nname = "plain"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n')
    tests = root / "tests"
    tests.mkdir()
    for name in ("test_one.py", "test_two.py"):
        (tests / name).write_text(TEST_FILE)
    return root


def run_once(suite: Path, with_plugin: bool) -> float:
    """Wall-clock seconds of one `pytest --collect-only` in a fresh interpreter."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q"]
    for p in UNRELATED + (() if with_plugin else ("no:gradcheck",)):
        cmd += ["-p", p]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def plugin_import_ms(reps: int) -> float:
    """Median cumulative import time of gradcheck.pytest_plugin, pytest already imported (-X importtime)."""
    times = []
    for _ in range(reps):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import pytest, gradcheck.pytest_plugin"],
                              capture_output=True, text=True)
        match = re.search(r"\|\s*(\d+)\s*\|\s*gradcheck\.pytest_plugin\s*$", proc.stderr, re.M)
        if match is None:
            raise SystemExit("gradcheck.pytest_plugin was not imported; install gradcheck first:\n" + proc.stderr)
        times.append(int(match.group(1)) / 1000.0)
    return statistics.median(times)


def measure(reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        suite = make_suite(Path(tmp))
        run_once(suite, True), run_once(suite, False)  # warm the file cache and bytecode
        arms: dict[str, list] = {"without": [], "with": []}
        for _ in range(reps):  # interleaved, so drift in machine load hits both arms alike
            arms["without"].append(run_once(suite, False))
            arms["with"].append(run_once(suite, True))
    med = {k: statistics.median(v) * 1000 for k, v in arms.items()}
    quartiles = {k: [round(q * 1000, 1) for q in statistics.quantiles(v, n=4)] for k, v in arms.items()}
    return {"median_ms": {k: round(v, 1) for k, v in med.items()}, "quartiles_ms": quartiles,
            "overhead_ms": round(med["with"] - med["without"], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=25, help="repetitions of each arm (default 25)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "plugin_startup.json")
    args = parser.parse_args(argv)
    import pytest

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    startup = measure(args.reps)
    results = {
        "what": "pytest --collect-only on 20 trivial tests, fresh interpreter, with vs without -p no:gradcheck",
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "pytest": pytest.__version__,
                    "load_average_start": load},
        "reps": args.reps, "disabled_in_both_arms": list(UNRELATED),
        "startup": startup,
        "plugin_import_ms": round(plugin_import_ms(max(5, args.reps // 2)), 1),
        "target_ms": TARGET_MS,
        "within_target": startup["overhead_ms"] < TARGET_MS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, args.out)
    s = startup["median_ms"]
    print(f"pytest startup, median of {args.reps}: {s['without']:.0f} ms without the plugin, {s['with']:.0f} ms "
          f"with it: +{startup['overhead_ms']:.0f} ms (target < {TARGET_MS:.0f} ms); importing "
          f"gradcheck.pytest_plugin: {results['plugin_import_ms']:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
