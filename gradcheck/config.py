"""Cases declared in `[tool.gradcheck]` of a pyproject.toml, and `module:attr` targets.

    [tool.gradcheck]
    against = ["numeric", "jax"]        # defaults for every case
    rtol = 1e-7

    [[tool.gradcheck.cases]]
    name = "mlp"
    loss = "mymodule:loss"              # or "path/to/file.py:loss"
    grad = "mymodule:grad"              # or value_and_grad = "mymodule:loss_and_grad"
    params = "mymodule:params"          # a value, or a function of no arguments returning it
    args = "mymodule:data"              # optional, likewise

    [[tool.gradcheck.cases]]
    name = "affine"
    forward = "layers:affine_forward"   # a layer case: forward/backward/inputs
    backward = "layers:affine_backward"
    inputs = "layers:affine_inputs"

The file is parsed as TOML data and never evaluated; the code it names is imported only
when a case is resolved, and only the modules it names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError, GradcheckError, UserCodeError
from .options import AGAINST_WORDS, OPTION_KEYS, option_problem
from .references import REFERENCE_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: What `against` may name: a reference, 'all' or 'auto'.
AGAINST_NAMES = REFERENCE_NAMES + AGAINST_WORDS
#: The targets of each kind of case: (required, optional).
TARGET_KEYS = {
    "gradient": (("loss", "grad", "params"), ("value_and_grad", "args")),
    "layer": (("forward", "backward", "inputs"), ()),
}
#: Targets whose value may be given as a zero-argument function returning it.
DATA_KEYS = ("params", "args", "inputs")
_TOP_KEYS = OPTION_KEYS + ("cases", "grade")
_ALL_TARGETS = tuple(k for req, opt in TARGET_KEYS.values() for k in req + opt)
_CASE_KEYS = ("name", "kind", "description", "wrt") + OPTION_KEYS + _ALL_TARGETS
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(\.{_IDENT})*\Z")


@dataclass(frozen=True)
class CaseSpec:
    """One declared case: its name, kind, target strings and check options (defaults merged in)."""

    name: str
    kind: str                                   # "gradient" or "layer"
    targets: dict = field(default_factory=dict)  # role ("loss", "params", ...) -> "module:attr"
    options: dict = field(default_factory=dict)  # against/rtol/atol/seed/budget/max_elements
    wrt: tuple | None = None                     # layer cases: inputs to check
    description: str = ""

    def resolve(self, root: str | Path = ".") -> dict:
        """Import the targets: {"loss": fn, "grad": fn, "params": value, ...} (data roles called if callable)."""
        modules: dict = {}
        out = {}
        for role, target in self.targets.items():
            obj = load_target(target, root, modules=modules)
            if role in DATA_KEYS and callable(obj):
                obj = call_data(obj, role, target, self.name)
            out[role] = obj
        return out


@dataclass(frozen=True)
class Config:
    """The `[tool.gradcheck]` table: default options and declared cases."""

    path: Path | None
    options: dict = field(default_factory=dict)
    cases: list = field(default_factory=list)
    grade: dict | None = None  # the [tool.gradcheck.grade] table as written (gradcheck.grade reads it)

    @property
    def root(self) -> Path:
        """The directory targets are resolved from: the pyproject's own."""
        return self.path.parent if self.path is not None else Path(".")

    def case(self, name: str) -> CaseSpec:
        """The case called `name`; ConfigError with the closest names otherwise."""
        for spec in self.cases:
            if spec.name == name:
                return spec
        names = [c.name for c in self.cases]
        raise ConfigError(f"no case named {name!r} in [tool.gradcheck]{_where(self.path)}; "
                          + (_suggest(name, names) or f"the cases are: {', '.join(names) or '(none)'}."))


# --------------------------------------------------------------------------- reading


def load_config(path: str | Path) -> Config:
    """Read `[tool.gradcheck]` from a pyproject.toml; a file without the table gives an empty Config."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    return parse_config(text, path=path)


def parse_config(text: str, *, path: str | Path | None = None) -> Config:
    """Parse pyproject text (TOML data only); validate the `[tool.gradcheck]` table."""
    path = Path(path) if path is not None else None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML{_where(path)}: {exc}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"'tool'{_where(path)} must be a table, not {_type(tool)}.")
    table = tool.get("gradcheck", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.gradcheck]{_where(path)} must be a table, not {_type(table)}.")
    _reject_unknown(table, _TOP_KEYS, f"[tool.gradcheck]{_where(path)}")
    options = validate_options({k: v for k, v in table.items() if k in OPTION_KEYS},
                               f"[tool.gradcheck]{_where(path)}")
    raw_cases = table.get("cases", [])
    if not isinstance(raw_cases, list):
        raise ConfigError(f"'cases' in [tool.gradcheck]{_where(path)} must be an array of tables "
                          f"([[tool.gradcheck.cases]]), not {_type(raw_cases)}.")
    cases: list[CaseSpec] = []
    for n, raw in enumerate(raw_cases, 1):
        spec = _parse_case(raw, n, options, path)
        if any(c.name == spec.name for c in cases):
            raise ConfigError(f"two cases are named {spec.name!r} in [tool.gradcheck]{_where(path)}; "
                              f"give each case its own name.")
        cases.append(spec)
    grade = table.get("grade")
    if grade is not None and not isinstance(grade, dict):
        raise ConfigError(f"[tool.gradcheck.grade]{_where(path)} must be a table, not {_type(grade)}.")
    return Config(path=path, options=options, cases=cases, grade=grade)


def _parse_case(raw: Any, n: int, defaults: dict, path: Path | None) -> CaseSpec:
    """Validate one [[tool.gradcheck.cases]] table."""
    label = f"case #{n}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{label} in [tool.gradcheck]{_where(path)} must be a table, not {_type(raw)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label} in [tool.gradcheck]{_where(path)} needs a 'name' (a non-empty string)"
                          + (f", not {_type(name)}." if name is not None else "."))
    where = f"case {name!r} in [tool.gradcheck]{_where(path)}"
    _reject_unknown(raw, _CASE_KEYS, where)
    kind = raw.get("kind", "layer" if any(k in raw for k in TARGET_KEYS["layer"][0]) else "gradient")
    if kind not in TARGET_KEYS:
        raise ConfigError(f"'kind' of {where} is {kind!r}; choose 'gradient' or 'layer'.")
    targets = _case_targets(raw, kind, where)
    wrt = raw.get("wrt")
    if wrt is not None:
        if kind != "layer" or not isinstance(wrt, list) or not all(isinstance(w, str) for w in wrt):
            raise ConfigError(f"'wrt' of {where} must be a list of input names, and only layer cases take it.")
        wrt = tuple(wrt)
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"'description' of {where} must be a string, not {_type(description)}.")
    options = {**defaults, **validate_options({k: v for k, v in raw.items() if k in OPTION_KEYS}, where)}
    return CaseSpec(name=name, kind=kind, targets=targets, options=options, wrt=wrt, description=description)


def _case_targets(raw: dict, kind: str, where: str) -> dict:
    """The target strings of a case, checked for presence, exclusivity and syntax."""
    required: tuple[str, ...]
    required, optional = TARGET_KEYS[kind]
    other = [k for k in _ALL_TARGETS if k in raw and k not in required + optional]
    if other:
        raise ConfigError(f"{where} is a {kind} case but sets {other[0]!r}; a gradient case takes "
                          f"loss/grad (or value_and_grad)/params/args, a layer case forward/backward/inputs.")
    if kind == "gradient" and "value_and_grad" in raw:
        both = [k for k in ("loss", "grad") if k in raw]
        if both:
            raise ConfigError(f"{where} sets both 'value_and_grad' and {both[0]!r}; give value_and_grad alone, "
                              f"or loss and grad.")
        required = ("value_and_grad", "params")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where} is missing the required key {missing[0]!r} "
                          f"(a target such as \"mymodule:{missing[0]}\").")
    targets = {}
    for key in required + tuple(k for k in optional if k in raw and k not in required):
        targets[key] = parse_target(raw[key], f"{key!r} of {where}")[2]
    return targets


def validate_options(options: Mapping[str, Any], where: str = "options", *,
                     label: str = "{key!r} in {where}") -> dict:
    """Check option values (against, rtol, atol, seed, budget, max_elements); None means unset.

    `label` formats how messages name an option (the CLI says "--rtol").
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in OPTION_KEYS:
            raise ConfigError(f"unknown option {key!r} in {where}; " + (
                _suggest(key, OPTION_KEYS) or f"options are {', '.join(OPTION_KEYS)}."))
        out[key] = _VALIDATORS[key](value, label.format(key=key, where=where))
    return out


def _against(value: Any, what: str) -> Any:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{what} must be a reference name or a list of them "
                          f"({', '.join(AGAINST_NAMES)}), not {_type(value)}.")
    for n in names:
        if n not in AGAINST_NAMES:
            raise ConfigError(f"{what} names an unknown reference {n!r}; "
                              + (_suggest(n, AGAINST_NAMES) or f"choose from {', '.join(AGAINST_NAMES)}."))
    return value if isinstance(value, str) else list(value)


def _option(key: str) -> Callable[[Any, str], Any]:
    """The validator of a numeric option: gradcheck.options' rule, in the configuration's words."""
    def validate(value: Any, what: str) -> Any:
        rule = option_problem(key, value)
        if rule is not None:
            raise ConfigError(f"{what} is {value!r}; it must be {rule}.")
        return value if key in ("seed", "max_elements") else float(value)
    return validate


_VALIDATORS = {"against": _against, **{key: _option(key) for key in OPTION_KEYS if key != "against"}}


def _reject_unknown(table: dict, allowed: tuple, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in {where}; "
                              + (_suggest(key, allowed) or f"allowed keys are {', '.join(allowed)}."))


# --------------------------------------------------------------------------- targets


def parse_target(target: Any, what: str = "target") -> tuple[str, str, str]:
    """("module" or "file", where, "where:attr") from "pkg.module:attr" or "path/to/file.py:attr"."""
    if not isinstance(target, str):
        raise ConfigError(f"{what} must be a string \"module:attribute\", not {_type(target)}.")
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not _DOTTED.match(attr):
        raise ConfigError(f"{what} is {target!r}; write it as \"module:attribute\" or \"path/to/file.py:attribute\".")
    if where.endswith(".py") or "/" in where or os.sep in where:
        return "file", where, target
    if not _DOTTED.match(where):
        raise ConfigError(f"{what} names the module {where!r}, which is not a module name; write \"package.module:"
                          f"attribute\", or a path ending in .py.")
    return "module", where, target


def load_target(target: str, root: str | Path = ".", *, modules: dict | None = None) -> Any:
    """The object a "module:attr" or "path/file.py:attr" target names, imported from `root`.

    Module targets are imported with `root` first on sys.path (for that import only); a file is
    executed as a module of its own without staying in sys.modules. `modules` caches loaded
    modules so one case's targets share a module.
    """
    kind, where, _ = parse_target(target)
    attr = target.rpartition(":")[2]
    root = Path(root)
    cache = {} if modules is None else modules
    key = (kind, str((root / where).resolve()) if kind == "file" else where)
    if key not in cache:
        cache[key] = _load_file(root, where, target) if kind == "file" else _load_module(where, root, target)
    return _get_attr(cache[key], attr, target)


@contextmanager
def _on_path(directory: Path) -> Iterator[None]:
    """`directory` first on sys.path, then sys.path as it was."""
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def _load_module(name: str, root: Path, target: str) -> Any:
    top = name.partition(".")[0]
    _forget_shadowed(top, root)
    with _on_path(root.resolve()):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                raise ConfigError(_missing_module(name, exc.name, root, target)) from None
            raise _import_failed(exc, target) from exc
        except GradcheckError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the user's module raised while importing
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _import_failed(exc, target) from exc


def _forget_shadowed(top: str, root: Path) -> None:
    """Drop an imported module of the same name that lives elsewhere than `root` (e.g. another project)."""
    mod = sys.modules.get(top)
    if mod is None:
        return
    local = [root / f"{top}.py", root / top / "__init__.py"]
    existing = [p.resolve() for p in local if p.exists()]
    origin = getattr(mod, "__file__", None)
    if existing and (origin is None or Path(origin).resolve() not in existing):
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]


def _missing_module(name: str, missing: str, root: Path, target: str) -> str:
    parent, _, leaf = missing.rpartition(".")
    try:
        search = [str(root)] if not parent else list(getattr(importlib.import_module(parent), "__path__", []))
        candidates = [m.name for m in pkgutil.iter_modules(search)]
    except Exception:  # noqa: BLE001 - suggestions are a courtesy
        candidates = []
    prefix = f"{parent}." if parent else ""
    hint = _suggest(leaf, candidates, prefix=prefix)
    return (f"cannot import module {missing!r} for target {target!r} (looked in {root.as_posix() or '.'} and "
            f"on sys.path); " + (hint or "check the spelling, or use \"path/to/file.py:attribute\"."))


def _load_file(root: Path, where: str, target: str) -> Any:
    path = root / where
    if not path.is_file():
        siblings = [p.name for p in path.parent.glob("*.py")] if path.parent.is_dir() else []
        folder = where[: len(where) - len(path.name)]  # the folder as the user wrote it
        raise ConfigError(f"file {where!r} of target {target!r} does not exist in {root.as_posix()}; "
                          + (_suggest(path.name, siblings, prefix=folder)
                             or "check the path (it is relative to the config's folder, or the current one)."))
    name = "_gradcheck_file_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path.as_posix()!r} of target {target!r} as Python.")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses and friends look themselves up while the file runs
    try:
        with _on_path(path.parent.resolve()):  # so the file can import its neighbours
            spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - the user's file raised while running
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_failed(exc, target) from exc
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
    return module


def _import_failed(exc: BaseException, target: str) -> UserCodeError:
    from .usercode.frames import skip_leading, user_location, user_traceback

    skip_leading(exc, ("<frozen",))  # importlib's frames, then gradcheck's
    return UserCodeError(f"importing the code of target {target!r} raised {type(exc).__name__}: {exc}",
                         where=user_location(exc), user_traceback=user_traceback(exc))


def _get_attr(module: Any, attr: str, target: str) -> Any:
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("_")]
            owner = getattr(obj, "__name__", type(obj).__name__)
            if owner.startswith("_gradcheck_file_"):
                owner = target.rpartition(":")[0]
            raise ConfigError(f"{owner!r} has no attribute {part!r} (target {target!r}); "
                              + (_suggest(part, names) or f"it defines: {', '.join(names[:12]) or 'nothing public'}."))
        except Exception as exc:  # noqa: BLE001 - a property or module __getattr__ of the user's raised
            raise _import_failed(exc, target) from exc
    return obj


def call_data(fn: Any, role: str, target: str, case: str) -> Any:
    """Call a zero-argument function that returns a case's params, args or inputs (errors name the case)."""
    from .usercode.frames import user_location, user_traceback

    try:
        return fn()
    except TypeError as exc:
        if "argument" in str(exc) and exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            raise ConfigError(f"{role} target {target!r}{_of_case(case)} is a function that needs arguments; "
                              f"give a value, or a function of no arguments returning it.") from None
        raise UserCodeError(f"{target} (the {role}{_of_case(case)}) raised TypeError: {exc}",
                            where=user_location(exc), user_traceback=user_traceback(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise UserCodeError(f"{target} (the {role}{_of_case(case)}) raised {type(exc).__name__}: {exc}",
                            where=user_location(exc), user_traceback=user_traceback(exc)) from exc


# --------------------------------------------------------------------------- running


def run_case(spec: CaseSpec, root: str | Path = ".", *, objects: Mapping[str, Any] | None = None,
             **options: Any) -> Any:
    """Resolve and check one case; keyword options (None = unset) override the config's. Returns a Report.

    `objects` are the case's targets already resolved (`spec.resolve(root)`), to reuse them.
    """
    merged = {**spec.options, **validate_options(options, f"the options for case {spec.name!r}")}
    objs = dict(spec.resolve(root) if objects is None else objects)
    if spec.wrt is not None:
        objs["wrt"] = spec.wrt
    return run_objects(objs, kind=spec.kind, title=spec.name, **merged)


def run_objects(case: Mapping[str, Any], *, kind: str | None = None, title: str = "", **options: Any) -> Any:
    """Check a case given as objects: loss/grad (or value_and_grad)/params/args, or forward/backward/inputs.

    The one place a case dict (resolved from a config, named on the command line, or a worked
    example) becomes a `check` or `check_layer` call.
    """
    kind = kind or case.get("kind") or ("layer" if "forward" in case else "gradient")
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "layer":
        from .layer import check_layer

        extra = {k: case[k] for k in ("wrt", "dout") if case.get(k) is not None}
        return check_layer(case["forward"], case["backward"], case["inputs"], title=title, **extra, **options)
    from .pipeline import check

    return check(case.get("loss"), case.get("grad"), case.get("params"), case.get("args", ()),
                 value_and_grad=case.get("value_and_grad"), kwargs=case.get("kwargs"), title=title, **options)


# --------------------------------------------------------------------------- messages


def _suggest(word: str, candidates: Any, *, prefix: str = "") -> str:
    """'did you mean 'x' or 'y'?', or '' when nothing is close."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=3, cutoff=0.6)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(prefix + c) for c in close) + "?"


def _of_case(case: str) -> str:
    return f" of case {case!r}" if case else ""


def _where(path: Path | None) -> str:
    return f" of {path.as_posix()}" if path is not None else ""


def _type(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)
