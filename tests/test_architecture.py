"""The package's shape, checked by reading its source: imports point one way, private names stay
in their module, jax and sympy are imported only under references/, and mypy accepts it."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gradcheck"
HEAVY = {"jax": "gradcheck.references.jax", "jaxlib": "gradcheck.references.jax",
         "sympy": "gradcheck.references.sympy", "mpmath": "gradcheck.references.sympy"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import that runs in module `name`, at any depth."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # `if TYPE_CHECKING:` imports are for annotations, never run

        if isinstance(node, ast.Import):
            out += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                out.append((submodule, "", node.lineno) if submodule in MODULES else (target, alias.name, node.lineno))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        for target, _, _ in _imports(name):
            if target in MODULES and target != name and not name.startswith(target + "."):
                edges.setdefault(name, set()).add(target)
    return edges


def test_no_module_is_named_like_a_public_function():
    """`gradcheck.check` is the function, never a module that importing would put in its place."""
    import gradcheck

    assert not {f"gradcheck.{name}" for name in gradcheck.__all__} & set(MODULES)


def test_the_worked_examples_install_inside_the_package():
    """No top-level `worked_examples` package lands in site-packages; one version number."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from gradcheck import worked_examples
    import gradcheck

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert worked_examples.__name__ == "gradcheck.worked_examples" and worked_examples.all_cases()
    assert all(p == "gradcheck" or p.startswith("gradcheck.") for p in setuptools["packages"])
    assert setuptools["package-dir"] == {"gradcheck.worked_examples": "worked_examples"}
    assert "version" not in config["project"] and config["project"]["dynamic"] == ["version"]
    assert setuptools["dynamic"]["version"] == {"attr": "gradcheck.__version__"} and gradcheck.__version__
    listed = {p.replace(".", "/") for p in setuptools["packages"]} - {"gradcheck/worked_examples"}
    assert listed == {str(p.parent.relative_to(ROOT)) for p in PACKAGE.rglob("__init__.py")}


def test_no_import_cycle():
    edges, state, cycles = _edges(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_imported_across_modules():
    found = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}.{imported}"
             for name in MODULES for target, imported, line in _imports(name)
             if imported.startswith("_") and not imported.startswith("__") and target.startswith("gradcheck")]
    assert not found, "\n".join(found)


def test_only_the_references_import_jax_and_sympy():
    found = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
             for name in MODULES for target, _, line in _imports(name)
             if target.split(".")[0] in HEAVY and not name.startswith(HEAVY[target.split(".")[0]])]
    assert not found, "\n".join(found)


def test_the_scanner_sees_imports_inside_functions():
    """The tests above would pass vacuously if the scanner missed function-level imports."""
    inner = [target for target, _, _ in _imports("gradcheck.references.jax.reference")]
    assert "jax" in inner
    assert any(t == "gradcheck.references.jax.adjoints" for name in MODULES for t, _, _ in _imports(name))


def test_mypy_finds_no_error_in_the_package():
    """`py.typed` ships: the package's annotations must hold (pyproject.toml's [tool.mypy], default mode)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
