"""`check-gradients`: check hand-written gradients from the command line.

    check-gradients                                   the cases in [tool.gradcheck] of ./pyproject.toml
    check-gradients LOSS GRAD PARAMS [--args DATA]    one case, each a target "module:attr" or "file.py:attr"
    check-gradients --value-and-grad F PARAMS         one case written as f(params, *args) -> (loss, grads)
    check-gradients examples                          list the worked examples
    check-gradients example NAME                      replay one worked example
    check-gradients explain LOSS PARAMS --leaf W1 --index 0,2    the chain rule for one element
    check-gradients grade SUBMISSIONS_DIR --loss M:N --grad M:N --params M:N   grade a class, one process each

Exit status: 0 every gradient matches, 1 a gradient is wrong, 2 a usage or configuration
error, 3 your code raised or a required reference could not run, 4 gradcheck itself failed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from .errors import (ConfigError, GradcheckError, NondeterministicLoss, ReferenceUnavailable,
                     StructureMismatch, UserCodeError)
from .progress import Progress

OK, MISMATCH, USAGE, USER_CODE, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 4, 130
COLOR_CHOICES = ("auto", "always", "never")
SUBCOMMANDS = ("examples", "example", "explain", "grade")
#: Every exit status, as `--help` and the README list them.
EXIT_CODES = (
    (OK, "every gradient matches (kinks excused)"),
    (MISMATCH, "a gradient is wrong, or shaped unlike its parameter"),
    (USAGE, "usage or configuration error: a bad option, a target that does not exist"),
    (USER_CODE, "your code raised, or a required reference could not run"),
    (INTERNAL, "gradcheck itself failed: a bug in gradcheck, please report it"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)
_EPILOG = ("targets are \"module:attribute\" (imported from the current directory) or\n"
           "\"path/to/file.py:attribute\".\n\nExit status:\n"
           + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES))


class Usage(Exception):
    """A usage error found after argument parsing (exit 2)."""


@dataclass
class Outcome:
    """One case's result: its report, or the error that stopped it, and the exit code that follows."""

    name: str
    report: Any = None
    error: BaseException | None = None
    code: int = OK
    extra: list = field(default_factory=list)  # lines printed after the report


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run `check-gradients` with these arguments (default: sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "check"
    handler = {"check": _cmd_check, "examples": _cmd_examples, "example": _cmd_example, "explain": _cmd_explain,
               "grade": _cmd_grade}
    parser = _parser(command)
    try:
        # Intermixed: targets may come before, between or after the options.
        args = parser.parse_intermixed_args(argv if command == "check" else argv[1:])
    except SystemExit as exc:  # argparse has printed the usage error (2) or the help (0)
        return int(exc.code or 0) if not isinstance(exc.code, str) else USAGE
    try:
        return handler[command](args)
    except Usage as exc:
        parser.print_usage(sys.stderr)
        _error(f"{parser.prog}: error: {exc}", prefix=False)
        return USAGE
    except GradcheckError as exc:
        _error(_message(exc))
        return exit_code(exc)
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one message, not a traceback
        _error(_message(exc))
        return INTERNAL


def exit_code(exc: BaseException) -> int:
    """The exit status an error stands for."""
    if isinstance(exc, StructureMismatch):
        return MISMATCH  # the gradient's structure is wrong: a mismatch, not a usage error
    if isinstance(exc, (UserCodeError, NondeterministicLoss, ReferenceUnavailable)):
        return USER_CODE
    if isinstance(exc, GradcheckError):
        return USAGE
    return INTERNAL


def _message(exc: BaseException) -> str:
    if isinstance(exc, GradcheckError):
        return str(exc)  # UserCodeError's str carries the user's traceback
    return (f"gradcheck itself failed with {type(exc).__name__}: {exc}. This is a bug in gradcheck; "
            f"please report it with the command you ran.")


def _say(text: str) -> None:
    """Print to stdout; a reader that has gone away (`| head`) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        try:  # send the rest to /dev/null, so that Python's exit-time flush stays quiet too
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass


def _error(text: str, *, prefix: bool = True) -> None:
    print(("error: " if prefix else "") + text, file=sys.stderr)


# --------------------------------------------------------------------------- argument parsing


def _parser(command: str) -> argparse.ArgumentParser:
    prog = "check-gradients" + ("" if command == "check" else f" {command}")
    builders = {"check": _check_parser, "examples": _examples_parser, "example": _example_parser,
                "explain": _explain_parser, "grade": _grade_parser}
    return builders[command](prog)


def _add_check_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("check options")
    g.add_argument("--against", metavar="REFS", type=_against,
                   help="references, comma separated: numeric, jax, sympy, all or auto (default: auto)")
    g.add_argument("--rtol", type=float, metavar="X", help="relative tolerance (default: by dtype, 1e-8 for float64)")
    g.add_argument("--atol", type=float, metavar="X", help="absolute tolerance (default: by dtype and gradient size)")
    g.add_argument("--seed", type=int, metavar="N", help="seed for sampled elements and random upstream gradients")
    g.add_argument("--budget", type=float, metavar="SECONDS", help="time a check may plan for (default: 20)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as JSON on stdout, and nothing else")
    o.add_argument("--plot", metavar="FILE.png", help="draw error heatmaps and a step-size sweep to this file")
    o.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                   help="colour the table: auto (on a terminal, unless NO_COLOR is set), always or never")
    o.add_argument("--no-color", action="store_true", help="the same as --color=never")
    o.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (shown only on a terminal, once a check takes over a second)")


def _against(text: str) -> Any:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give reference names such as numeric,jax")
    return names[0] if len(names) == 1 else names


class _Formatter(argparse.HelpFormatter):
    """Wraps one-line texts as usual; keeps the lines of a text written in lines (the exit status table)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


def _check_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, epilog=_EPILOG, formatter_class=_Formatter,
        usage="%(prog)s [LOSS GRAD PARAMS | --value-and-grad F PARAMS] [--args DATA] [options]\n"
              "       %(prog)s {examples, example NAME, explain ...} [options]",
        description="Check hand-written gradients against finite differences, JAX and SymPy. Without targets, "
                    "run the cases in [tool.gradcheck] of ./pyproject.toml.")
    _add_targets(p, "LOSS GRAD PARAMS, or PARAMS with --value-and-grad",
                 "target of the extra arguments: a tuple (X, y), or one value")
    p.add_argument("--value-and-grad", metavar="F", help="target of f(params, *args) -> (loss, grads)")
    p.add_argument("--config", metavar="FILE", help="read [tool.gradcheck] from FILE (default: ./pyproject.toml)")
    p.add_argument("--case", action="append", metavar="NAME", help="run only this configured case (repeatable)")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_check_options(p)
    return p


def _add_targets(p: argparse.ArgumentParser, targets: str, args: str) -> None:
    p.add_argument("targets", nargs="*", metavar="TARGET", help=targets)
    p.add_argument("--args", metavar="DATA", help=args)


def _add_display_flags(p: argparse.ArgumentParser) -> None:
    """Display flags every subcommand accepts (for scripts), shown only in the main help."""
    p.add_argument("--no-color", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto", help=argparse.SUPPRESS)


def _version() -> str:
    from . import __version__

    return __version__


def _examples_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="List the worked examples.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_display_flags(p)
    return p


def _example_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, epilog=_EPILOG, formatter_class=_Formatter,
                                description="Replay a worked example: exit 0 if it passes, 1 if it is a buggy twin "
                                            "and the bug is found.")
    p.add_argument("name", metavar="NAME", help="the example's name (see: check-gradients examples)")
    _add_check_options(p)
    return p


def _explain_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, usage="%(prog)s (LOSS PARAMS [--args DATA] [--grad GRAD] | --example NAME) --leaf NAME "
                         "[--index I,J]",
        description="Walk the chain rule from the loss down to one parameter element, each local derivative "
                    "with its value (as Matt Mazur's step-by-step backpropagation post does).")
    _add_targets(p, "LOSS PARAMS", "target of the extra arguments")
    p.add_argument("--grad", metavar="GRAD", help="target of your gradient, shown beside the chain")
    p.add_argument("--example", metavar="NAME", help="explain a worked example instead (e.g. mazur)")
    p.add_argument("--leaf", required=True, help="the parameter, as gradcheck names it (W1, layer1.W, weights[0])")
    p.add_argument("--index", default="", help="the element, e.g. 0,2 (default: the scalar itself)")
    _add_display_flags(p)
    return p


# --------------------------------------------------------------------------- check


def _cmd_check(args: argparse.Namespace) -> int:
    options = _options(args)
    cases, config_mode = _cases_from(args)
    if args.plot:
        _prepare_plot(args.plot)
    outcomes = [_run(spec.name or "command line", partial(spec.resolve, root),
                     partial(_run_spec, spec, root, options), args, several=len(cases) > 1) for spec, root in cases]
    _print(outcomes, args, config_mode)
    return max(o.code for o in outcomes)


def _options(args: argparse.Namespace) -> dict:
    """The check options given on the command line, validated as a config's are."""
    from .config import validate_options

    raw = {k: getattr(args, k, None) for k in ("against", "rtol", "atol", "seed", "budget")}
    return validate_options(raw, "the command line", label="--{key}")


def _cases_from(args: argparse.Namespace) -> tuple[list, bool]:
    """[(case, the folder its targets resolve from)], and whether the cases came from a config file."""
    from .config import CaseSpec, load_config

    if args.targets or args.value_and_grad:
        if args.config or args.case:
            raise Usage("give targets on the command line, or --config/--case, not both")
        roles = ("params",) if args.value_and_grad else ("loss", "grad", "params")
        if len(args.targets) != len(roles):
            raise Usage(f"expected {' '.join(r.upper() for r in roles)} "
                        f"{'(with --value-and-grad) ' if args.value_and_grad else ''}but got {len(args.targets)} "
                        f"target{'s' if len(args.targets) != 1 else ''}: {' '.join(args.targets) or '(none)'}")
        named = dict(zip(roles, args.targets))
        named.update({k: v for k, v in (("value_and_grad", args.value_and_grad), ("args", args.args)) if v})
        return [(CaseSpec(name="", kind="gradient", targets=named), Path("."))], False
    if args.args:
        raise Usage("--args goes with targets: check-gradients LOSS GRAD PARAMS --args DATA")
    config = load_config(_config_path(args.config))
    if not config.cases:
        raise ConfigError(f"{config.path} declares no cases: add [[tool.gradcheck.cases]] tables (name, loss, grad, "
                          f"params, ...), or name a case: check-gradients LOSS GRAD PARAMS")
    specs = [config.case(n) for n in args.case] if args.case else config.cases
    return [(spec, config.root) for spec in specs], True


def _run_spec(spec: Any, root: Path, options: dict, objs: dict) -> Any:
    from .config import run_case

    return run_case(spec, root, objects=objs, **options)


def _config_path(given: str | None) -> Path:
    if given:
        return Path(given)
    path = Path("pyproject.toml")
    if not path.is_file():
        raise Usage("no pyproject.toml in this directory: name a case (check-gradients LOSS GRAD PARAMS), "
                    "or point to a config with --config FILE")
    return path


def _run(name: str, resolve: Callable[[], dict], run: Callable[[dict], Any], args: argparse.Namespace, *,
         several: bool) -> Outcome:
    """Resolve, check and (if asked) plot one case; errors become the outcome, not an exit."""
    outcome = Outcome(name)
    try:
        with Progress(f"checking {name}" if several else "checking", stream=sys.stderr,
                      enabled=not getattr(args, "no_progress", False)):
            objs = resolve()
            outcome.report = run(objs)
            if args.plot:
                outcome.extra.append(_plot(outcome.report, objs, _plot_path(args.plot, name, several)))
        outcome.code = OK if outcome.report.passed else MISMATCH
    except GradcheckError as exc:
        outcome.error, outcome.code = exc, exit_code(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one message, not a traceback
        outcome.error, outcome.code = exc, INTERNAL
    return outcome


def _print(outcomes: list, args: argparse.Namespace, config_mode: bool) -> None:
    """Reports on stdout (a table each, or JSON), errors on stderr."""
    for o in outcomes:
        if o.error is not None:
            _error((f"case {o.name!r}: " if config_mode else "") + _message(o.error))
    if args.json:
        if config_mode:
            doc = {"passed": all(o.code == OK for o in outcomes), "cases": {o.name: _json_case(o) for o in outcomes}}
            _say(json.dumps(doc, indent=2))
        elif outcomes[0].report is not None:
            _say(json.dumps(outcomes[0].report.to_dict(), indent=2))
        return
    from .report import render_text

    color = _use_color(args)
    shown = [o for o in outcomes if o.report is not None]
    for n, o in enumerate(shown):
        _say(("\n" if n else "") + render_text(o.report, color=color))
        for line in o.extra:
            _say(line)
    if config_mode and len(outcomes) > 1:
        bad = [o.name for o in outcomes if o.code != OK]
        _say(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} cases passed" + (f"; not passed: {', '.join(bad)}"
                                                                                  if bad else ""))


def _json_case(o: Outcome) -> dict:
    if o.report is not None:
        return o.report.to_dict()
    assert o.error is not None  # _run records a report or the error that stopped it
    return {"passed": False, "error": {"type": type(o.error).__name__, "message": _message(o.error),
                                       "exit_code": o.code}}


def _use_color(args: argparse.Namespace) -> bool:
    """--color=always, or auto on a terminal unless NO_COLOR is set; --no-color is --color=never."""
    choice = "never" if getattr(args, "no_color", False) else getattr(args, "color", "auto")
    if choice != "auto":
        return choice == "always"
    return not os.environ.get("NO_COLOR") and _isatty(sys.stdout)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------- plotting


def _prepare_plot(path: str) -> None:
    """Fail before the check, not after it: the folder must exist, the format be known, matplotlib be there."""
    from .plot import require_matplotlib

    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise Usage(f"--plot {path}: name a .png (or .svg, .pdf) file")
    if not target.parent.is_dir():
        raise Usage(f"--plot {path}: the folder {target.parent.as_posix()!r} does not exist")
    require_matplotlib()


def _plot_path(path: str, name: str, several: bool) -> Path:
    """FILE.png for one case; FILE-<case>.png for each of several."""
    p = Path(path)
    return p.with_name(f"{p.stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}{p.suffix}") if several else p


def _plot(report: Any, objs: dict, path: Path) -> str:
    from .plot import objective_for, plot_report, sweep_for_report

    if "forward" in objs:  # a layer is checked through its loss projected onto the seeded dout
        from .layer import projected_loss

        proj = projected_loss(objs["forward"], objs["inputs"], wrt=objs.get("wrt"), seed=report.seed)
        objective = objective_for(proj.loss, proj.params, ())
    else:
        objective = objective_for(objs.get("loss"), objs["params"], objs.get("args", ()),
                                  value_and_grad=objs.get("value_and_grad"), kwargs=objs.get("kwargs"))
    sweep = sweep_for_report(report, objective)
    plot_report(report, path, sweep=sweep)
    return f"plot written to {path.as_posix()}"


# --------------------------------------------------------------------------- worked examples


def _examples() -> Any:
    try:
        from . import worked_examples
    except ImportError as exc:
        raise ConfigError(f"the worked examples are not installed ({exc}); reinstall gradcheck") from None
    if not hasattr(worked_examples, "all_cases"):
        raise ConfigError("the installed worked_examples package has no all_cases(); reinstall gradcheck")
    return worked_examples


def _cmd_examples(args: argparse.Namespace) -> int:
    cases = _examples().all_cases()
    rows = [{"name": c["name"], "kind": c.get("kind", "gradient"), "expect": describe_expect(c.get("expect", "pass")),
             "description": c.get("description", "")} for c in cases]
    if args.json:
        _say(json.dumps(rows, indent=2))
        return OK
    width = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "kind", "expect")} if rows else {}
    _say("  ".join(k.ljust(width[k]) for k in width) + "  description" if rows else "no worked examples")
    for r in rows:
        _say("  ".join(r[k].ljust(width[k]) for k in width) + "  " + r["description"])
    if rows:
        _say("\nreplay one with: check-gradients example NAME")
    return OK


def describe_expect(expect: Any) -> str:
    """'pass', or e.g. 'scaled x200: W1, b1'."""
    if expect == "pass" or not isinstance(expect, dict):
        return str(expect)
    factor = f" x{expect['factor']:g}" if expect.get("factor") is not None else ""
    return f"{expect.get('diagnosis', '?')}{factor}: {', '.join(expect.get('leaves', []))}"


def _find_example(name: str) -> dict:
    cases = _examples().all_cases()
    for c in cases:
        if c["name"] == name:
            return c
    names = [c["name"] for c in cases]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else (
        "see: check-gradients examples")
    raise ConfigError(f"no worked example named {name!r}; {hint}")


def _cmd_example(args: argparse.Namespace) -> int:
    options = _options(args)
    case = _find_example(args.name)
    if args.plot:
        _prepare_plot(args.plot)
    outcome = _run(case["name"], lambda: case, partial(_run_example, options=options), args, several=False)
    if outcome.report is not None and not args.json:
        outcome.extra.append(_expectation(case, outcome.report))
    _print([outcome], args, config_mode=False)
    return outcome.code


def _run_example(case: dict, *, options: dict) -> Any:
    from .config import OPTION_KEYS, run_objects

    own = {k: case[k] for k in OPTION_KEYS if case.get(k) is not None}
    return run_objects(case, kind=case.get("kind"), title=case["name"], **{**own, **options})


def _expectation(case: dict, report: Any) -> str:
    """The example's documented outcome beside what the check found."""
    expect = case.get("expect", "pass")
    found = _found(report)
    if expect == "pass":
        verdict = "as documented" if report.passed else "NOT AS DOCUMENTED: this example should pass"
        return f"\nexpected: pass\nfound:    {found}  ({verdict})"
    ok = _matches(expect, report)
    verdict = "as documented" if ok else "NOT AS DOCUMENTED"
    return f"\nexpected: {describe_expect(expect)}\nfound:    {found}  ({verdict})"


def _found(report: Any) -> str:
    if report.passed:
        return "pass"
    by_diag: dict = {}
    for p in report.failures:
        key = p.diagnosis + (f" x{p.factor:g}" if p.factor is not None else "")
        by_diag.setdefault(key, []).append(p.name)
    return "; ".join(f"{d}: {', '.join(names)}" for d, names in by_diag.items())


def _matches(expect: dict, report: Any) -> bool:
    failed = {p.name: p for p in report.failures}
    if set(failed) != set(expect.get("leaves", failed)):
        return False
    if any(p.diagnosis != expect.get("diagnosis", p.diagnosis) for p in failed.values()):
        return False
    factor = expect.get("factor")
    return factor is None or all(p.factor is not None and abs(p.factor - factor) <= 1e-6 * abs(factor)
                                 for p in failed.values())


# --------------------------------------------------------------------------- explain


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explanation import explain, render_explanation

    loss, params, data, grad = _explain_case(args)
    index = _parse_index(args.index)
    grad_fn = grad if callable(grad) else None
    if callable(grad):
        grad = _call_grad(grad, params, data)
    expl = explain(loss, params, data, leaf=args.leaf, index=index, grad=grad)
    _say(render_explanation(expl))
    if expl.matches is False and grad_fn is not None:  # the line of your backward pass where it goes wrong
        from .blame import blame
        from .report import blame_lines

        _say("\n".join(line.strip() for line in blame_lines(blame(loss, grad_fn, params, data,
                                                                    leaves=[args.leaf])[args.leaf])))
    return OK if expl.matches in (None, True) else MISMATCH


def _explain_case(args: argparse.Namespace) -> tuple:
    """(loss, params, args, grad function or None) from --example or from targets."""
    from .config import CaseSpec

    if args.example:
        if args.targets or args.args or args.grad:
            raise Usage("give --example NAME, or targets LOSS PARAMS, not both")
        case = _find_example(args.example)
        if case.get("kind") == "layer":
            raise Usage(f"example {args.example!r} is a layer case; explain walks through loss functions")
        loss = case.get("loss") or _first(case["value_and_grad"])
        return loss, case["params"], tuple(_as_args(case.get("args", ()))), case.get("grad")
    if len(args.targets) != 2:
        raise Usage(f"expected LOSS PARAMS (or --example NAME) but got {len(args.targets)} targets")
    named = dict(zip(("loss", "params"), args.targets))
    named.update({k: v for k, v in (("args", args.args), ("grad", args.grad)) if v})
    objs = CaseSpec(name="", kind="gradient", targets=named).resolve(".")
    return objs["loss"], objs["params"], tuple(_as_args(objs.get("args", ()))), objs.get("grad")


def _first(value_and_grad: Callable) -> Callable:
    def loss(p: Any, *a: Any) -> Any:
        return value_and_grad(p, *a)[0]
    return loss


def _as_args(data: Any) -> tuple:
    return tuple(data) if isinstance(data, (list, tuple)) else (data,)


def _call_grad(grad: Callable, params: Any, data: tuple) -> Any:
    from .usercode.frames import call_user

    return call_user(grad, "gradient function", params, *data)


def _parse_index(text: str) -> tuple:
    """'0,2' / '(0, 2)' / '[3]' / '' -> a tuple of ints."""
    body = text.strip().strip("()[]").strip()
    if not body:
        return ()
    parts = [s.strip() for s in body.split(",") if s.strip()]
    if not all(re.fullmatch(r"-?\d+", s) for s in parts):
        raise Usage(f"--index {text!r}: give integers separated by commas, e.g. --index 0,2")
    return tuple(int(s) for s in parts)


# --------------------------------------------------------------------------- grade


def _grade_parser(prog: str) -> argparse.ArgumentParser:
    from .grade import add_arguments

    p = argparse.ArgumentParser(prog=prog, description="Grade a class: check every submission (a subfolder each) in "
                                "its own process, with a timeout and a memory cap; write a gradebook. Exit 0 once "
                                "grading ran, whatever the students' results; 2 on a usage error.")
    add_arguments(p)
    return p


def _cmd_grade(args: argparse.Namespace) -> int:
    from .grade import run_command

    return run_command(args, sys.stdout, sys.stderr)


# --------------------------------------------------------------------------- progress

#: The status line on stderr while a case runs (kept under its first name for callers of the CLI module).
Ticker = Progress


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
