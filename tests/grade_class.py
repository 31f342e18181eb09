"""A generated class for `check-gradients grade`: a course folder and one submission folder per student.

The course hands out `course_data.py` (parameters and a batch of 8 examples of a 3-4-2 tanh
network with a mean squared error); each student writes `backprop.py` with `loss` and `grad`.
The class holds correct submissions written the ways learners write them, planted bugs with the
diagnosis each must get, and submissions that misbehave (an import error, `sys.exit` at import,
a raise, `os.abort`, a segfault, `os._exit`, a memory hog, a missing file, an endless loop that leaves a
process behind, a sleep at import). `make_class(root)` writes it and returns what each student
must get.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

COURSE_DATA = '''
"""Handed out by the course: the parameters and the batch every submission is checked at."""
import numpy as np


def params():
    rng = np.random.default_rng(0)
    return {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4),
            "W2": rng.normal(size=(4, 2)), "b2": rng.normal(size=2)}


def data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
'''

PYPROJECT = '''
[tool.gradcheck.grade]
submissions = "submissions"
loss = "backprop:loss"
grad = "backprop:grad"
params = "course:course_data:params"
args = "course:course_data:data"
against = "numeric"
timeout = {timeout}
memory_mb = {memory_mb}
'''

LOSS = '''
import numpy as np


def loss(p, X, y):
    h = np.tanh(X @ p["W1"] + p["b1"])
    out = h @ p["W2"] + p["b2"]
    return 0.5 * np.mean(np.sum((out - y) ** 2, axis=1))
'''

# The backward pass, with slots the bugs fill in.
GRAD = '''

def grad(p, X, y):
    h = np.tanh(X @ p["W1"] + p["b1"])
    out = h @ p["W2"] + p["b2"]
    d_out = {d_out}
    d_pre = (d_out @ p["W2"].T) * {dtanh}
    return {{"W1": {dW1}, "b1": {db1}, "W2": h.T @ d_out, "b2": {db2}}}
'''
SLOTS = {"d_out": "(out - y) / len(X)", "dtanh": "(1 - h ** 2)", "dW1": "X.T @ d_pre", "db1": "d_pre.sum(axis=0)",
         "db2": "d_out.sum(axis=0)"}

# A learner's element loops with Python floats and math.tanh: the same network, written out.
LOOPS = '''
import math

import numpy as np


def loss(p, X, y):
    total = 0.0
    for n in range(len(X)):
        h = [math.tanh(sum(X[n][i] * p["W1"][i][j] for i in range(3)) + p["b1"][j]) for j in range(4)]
        for k in range(2):
            out = sum(h[j] * p["W2"][j][k] for j in range(4)) + p["b2"][k]
            total += 0.5 * (out - y[n][k]) ** 2
    return total / len(X)


def grad(p, X, y):
    g = {name: np.zeros_like(value) for name, value in p.items()}
    for n in range(len(X)):
        h = [math.tanh(sum(X[n][i] * p["W1"][i][j] for i in range(3)) + p["b1"][j]) for j in range(4)]
        d_out = [(sum(h[j] * p["W2"][j][k] for j in range(4)) + p["b2"][k] - y[n][k]) / len(X) for k in range(2)]
        for j in range(4):
            d_pre = sum(d_out[k] * p["W2"][j][k] for k in range(2)) * (1 - h[j] ** 2)
            for k in range(2):
                g["W2"][j][k] += h[j] * d_out[k]
            for i in range(3):
                g["W1"][i][j] += X[n][i] * d_pre
            g["b1"][j] += d_pre
        for k in range(2):
            g["b2"][k] += d_out[k]
    return g
'''

PARAMS = ("W1", "b1", "W2", "b2")
ALL_SCALED = {n: "scaled x8" for n in PARAMS}


@dataclass(frozen=True)
class Student:
    """A submission and the row it must get."""

    name: str
    files: dict                      # file name -> source
    status: str                      # passed / failed / error / timeout
    diagnoses: dict = field(default_factory=dict)  # parameter -> expected diagnosis label ("ok" passes)
    error_words: tuple = ()          # words the one-line feedback must contain
    score: float | None = None


def _grad(**slots: str) -> dict:
    return {"backprop.py": LOSS + GRAD.format(**{**SLOTS, **slots})}


def _correct(n: int) -> list[Student]:
    ok = {p: "ok" for p in PARAMS}
    vectorised = [Student(f"correct_{k:02d}", _grad(), "passed", ok, score=100.0) for k in range(n - 2)]
    # the same right answer written differently: element loops, and a helper module of the student's own
    helper = {"backprop.py": "from mlp import loss, grad  # the student's own module\n",
              "mlp.py": LOSS + GRAD.format(**SLOTS)}
    return vectorised + [Student("correct_loops", {"backprop.py": LOOPS}, "passed", ok, score=100.0),
                         Student("correct_helper", helper, "passed", ok, score=100.0)]


def _bugs() -> list[Student]:
    forgot_mean = [Student(f"forgot_mean_{k}", _grad(d_out="out - y"), "failed", ALL_SCALED, score=0.0)
                   for k in range(5)]
    return forgot_mean + [
        Student("sign_flip", _grad(d_out="(y - out) / len(X)"), "failed", {n: "sign_flipped" for n in PARAMS},
                score=0.0),
        Student("tanh_derivative", _grad(dtanh="(1 - h)"), "failed",
                {"W1": "wrong", "b1": "wrong", "W2": "ok", "b2": "ok"}, score=50.0),
        Student("b2_not_summed", _grad(db2="d_out"), "failed", {"W1": "ok", "b1": "ok", "W2": "ok",
                                                                "b2": "wrong_shape"}, score=75.0),
        Student("zero_b1", _grad(db1="np.zeros(4)"), "failed", {"W1": "ok", "b1": "zero", "W2": "ok", "b2": "ok"},
                score=75.0),
        Student("double_W1", _grad(dW1="2 * X.T @ d_pre"), "failed",
                {"W1": "scaled x2", "b1": "ok", "W2": "ok", "b2": "ok"}, score=75.0),
        Student("missing_b1", {"backprop.py": LOSS + GRAD.format(**SLOTS).replace('"b1": d_pre.sum(axis=0), ', "")},
                "failed", error_words=("b1",), score=0.0),
    ]


LOOP_FOREVER = '''
import subprocess
import sys
from pathlib import Path

import numpy as np


def loss(p, X, y):
    # leaves a process behind, then never returns: the timeout must kill both
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path("left_behind.pid").write_text(str(child.pid))
    while True:
        pass


def grad(p, X, y):
    return {k: np.zeros_like(v) for k, v in p.items()}
'''


def _misbehaving(memory_hog: bool) -> list[Student]:
    good = LOSS + GRAD.format(**SLOTS)
    out = [
        Student("import_error", {"backprop.py": "import numpyy as np\n" + good}, "error",
                error_words=("numpyy",)),
        Student("exits_at_import", {"backprop.py": "import sys\nprint('bye')\nsys.exit(0)\n" + good}, "error",
                error_words=("sys.exit",)),
        Student("raises", {"backprop.py": good.replace("    d_out = (out - y) / len(X)",
                                                       "    d_out = (out - y) / undefined_batch")}, "error",
                error_words=("undefined_batch",)),
        Student("aborts", {"backprop.py": "import os\n" + good.replace("    d_out = (out - y) / len(X)",
                                                                       "    os.abort()")}, "error",
                error_words=("SIGABRT",)),
        Student("segfaults", {"backprop.py": "import ctypes\n" + good.replace("    d_out = (out - y) / len(X)",
                                                                             "    ctypes.string_at(0)")}, "error",
                error_words=("SIGSEGV",)),
        Student("os_exit", {"backprop.py": "import os\n" + good + "\nos._exit(7)\n"}, "error",
                error_words=("exit status 7",)),
        Student("no_file", {"my_backprop.py": good}, "error", error_words=("backprop",)),
        Student("loops_forever", {"backprop.py": LOOP_FOREVER}, "timeout", error_words=("did not finish",)),
        Student("sleeps_at_import", {"backprop.py": "import time\ntime.sleep(600)\n" + good}, "timeout",
                error_words=("did not finish",)),
    ]
    if memory_hog:  # a loss that asks for 16 GB: the cap turns it into a MemoryError, not a dead machine
        hog = good.replace("    h = np.tanh", "    big = np.ones((2, 1024, 1024, 1024))\n    h = np.tanh", 1)
        out.append(Student("memory_hog", {"backprop.py": hog}, "error", error_words=("memory",)))
    return out


def students(*, memory_hog: bool = True, correct: int = 14) -> list[Student]:
    """The class: correct ones, planted bugs, misbehaving submissions."""
    return _correct(correct) + _bugs() + _misbehaving(memory_hog)


def make_class(root: Path, *, timeout: float = 5, memory_mb: int = 3072, memory_hog: bool = True,
               correct: int = 14) -> list[Student]:
    """Write the course folder (pyproject, course_data.py, submissions/) under `root`; return the class."""
    (root / "pyproject.toml").write_text(PYPROJECT.format(timeout=timeout, memory_mb=memory_mb))
    (root / "course_data.py").write_text(textwrap.dedent(COURSE_DATA))
    klass = students(memory_hog=memory_hog, correct=correct)
    for s in klass:
        folder = root / "submissions" / s.name
        folder.mkdir(parents=True)
        for name, source in s.files.items():
            (folder / name).write_text(source)
    return klass
