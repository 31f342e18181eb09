"""How long `check-gradients grade` takes over a class of 30, and what one child process costs.

    python benchmarks/grade.py                 # the class as its pyproject says (numeric), then --against auto
    python benchmarks/grade.py --skip-auto     # the configured run only

The class is tests/grade_class.py with 9 correct submissions (30 in all): planted bugs, an
import error, sys.exit and os._exit, os.abort, a segfault, a memory hog, a missing file, an endless loop
and a sleep at import (the last two each cost the whole timeout). It is graded with
`--timeout 10 --jobs 2` in a fresh `check-gradients` process, timed from outside. The target
is under 60 s on 2 cores.

Per child: the import floor (Python, numpy and the gradcheck modules a child loads), each
status's median seconds as the gradebook records them, and the peak address space of a check
with and without JAX, which is what the default memory cap (RLIMIT_AS) must leave room for.
Results go to benchmarks/results/grade.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import grade_class  # noqa: E402

TARGET_SECONDS = 60.0
TIMEOUT, JOBS, CORRECT = 10, 2, 9
#: A child's imports: what `python -m gradcheck.grade_worker` loads before the student's code.
CHILD_IMPORTS = "import gradcheck.grade_worker, gradcheck.config, gradcheck.pipeline, gradcheck.report"
PEAK = '''
import sys, gradcheck
sys.path[:0] = [{folder!r}, {root!r}]
import backprop, course_data
gradcheck.check(backprop.loss, backprop.grad, course_data.params(), course_data.data(), against={against!r},
                progress=False)
print([ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmPeak")][0])
'''


def grade_run(root: Path, extra: list) -> dict:
    """Wall seconds of one `check-gradients grade` over the class, and its JSON gradebook."""
    cmd = [sys.executable, "-m", "gradcheck", "grade", "--timeout", str(TIMEOUT), "--jobs", str(JOBS),
           "--json", "gradebook.json", "--no-progress", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"grading failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    doc = json.loads((root / "gradebook.json").read_text())
    by_status: dict = {}
    for sub in doc["submissions"]:
        by_status.setdefault(sub["status"], []).append(sub["seconds"])
    return {"wall_seconds": round(seconds, 2), "summary": {k: v for k, v in doc["summary"].items() if k != "findings"},
            "median_child_seconds": {k: round(statistics.median(v), 3) for k, v in sorted(by_status.items())},
            "within_target": seconds < TARGET_SECONDS}


def import_floor(reps: int = 7) -> float:
    """Median seconds of a fresh interpreter that imports what a child imports."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD_IMPORTS], check=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def peak_mb(root: Path, against: str) -> float | None:
    """Peak address space (VmPeak, Linux) of a check of one correct submission."""
    if not Path("/proc/self/status").is_file():
        return None
    code = PEAK.format(folder=str(root / "submissions" / "correct_00"), root=str(root), against=against)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return round(int(proc.stdout.split()[-1]) / 1024, 1)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-auto", action="store_true", help="grade only with the class's own references")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "grade.json")
    args = parser.parse_args(argv)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        klass = grade_class.make_class(root, timeout=TIMEOUT, correct=CORRECT)
        runs = {"configured (against numeric)": grade_run(root, [])}
        if not args.skip_auto:
            runs["against auto (numeric, jax, sympy)"] = grade_run(root, ["--against", "auto"])
        child = {"import_floor_seconds": import_floor(),
                 "peak_address_space_mb": {a: peak_mb(root, a) for a in ("numeric", "auto")}}
    results = {
        "what": f"check-gradients grade over {len(klass)} submissions, --timeout {TIMEOUT} --jobs {JOBS}, "
                f"timed from outside a fresh process",
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "load_average_start": load},
        "submissions": len(klass), "slow_submissions": sum(s.status == "timeout" for s in klass),
        "runs": runs, "child": child, "target_seconds": TARGET_SECONDS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp_out, args.out)
    for name, run in runs.items():
        print(f"{name}: {run['wall_seconds']:.1f} s for {len(klass)} submissions (target < {TARGET_SECONDS:.0f} s); "
              f"median child by status {run['median_child_seconds']}")
    print(f"child import floor {child['import_floor_seconds']:.2f} s; peak address space {child['peak_address_space_mb']}"
          f" MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
