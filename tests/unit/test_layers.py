"""The layering of the package, checked by walking every import (docs/architecture.md, "Layers").

Each module of ``pyworkflow`` and ``pyworkflow_testing`` is parsed with ``ast``; every ``import``
and ``from ... import`` counts, including those inside functions (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``. A module may import its own layer and the
layers below it, never one above. This test never imports the modules it checks, so a broken or
circular import cannot hide a violation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pyworkflow", "pyworkflow_testing")

# Bottom to top: the one layer order, as docs/architecture.md ("Layers") and CLAUDE.md state it.
# A rule is an exact module name or, ending in "*", the name and everything below it; no module
# matches two rules (checked below). The old homes of the data model (pyworkflow.engine.events,
# pyworkflow.storage.schemas, pyworkflow.core.exceptions) are re-exports in their packages'
# layers; the package's own code imports pyworkflow.model.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data model", ("pyworkflow.model*",)),
    ("leaves", ("pyworkflow.serialization*", "pyworkflow.utils*", "pyworkflow.observability*")),
    ("context", ("pyworkflow.context*",)),
    ("storage", ("pyworkflow.storage*",)),
    ("core", ("pyworkflow.core*",)),
    ("primitives", ("pyworkflow.primitives*",)),
    ("engine", ("pyworkflow.engine*",)),
    (
        "runtime",
        ("pyworkflow.config", "pyworkflow.runtime*", "pyworkflow.api", "pyworkflow.scheduling"),
    ),
    ("celery", ("pyworkflow.celery*",)),
    ("testing", ("pyworkflow_testing*",)),
    ("cli", ("pyworkflow.cli*", "pyworkflow", "pyworkflow.__main__")),
)
EMPTY_PACKAGES = ("pyworkflow.engine", "pyworkflow.core")  # their __init__ imports nothing eagerly


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, resolved to a module name."""

    importer: str
    imported: str
    path: str
    line: int
    eager: bool  # runs when the importer is imported (not inside a function body)


def _matches(rule: str, module: str) -> bool:
    if rule.endswith("*"):
        base = rule[:-1]
        return module == base or module.startswith(base + ".")
    return module == rule


def layer_of(module: str) -> int | None:
    """The layer index of ``module``, or None when no rule covers it."""
    for index, (_, rules) in enumerate(LAYERS):
        if any(_matches(rule, module) for rule in rules):
            return index
    return None


def _layer_label(module: str) -> str:
    layer = layer_of(module)
    return "unplaced" if layer is None else f"{layer} {LAYERS[layer][0]}"


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = _package_of(module, is_package).split(".")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PACKAGES)


def collect_imports(
    module: str, source: str, path: str, *, is_package: bool, known: Iterable[str] = ()
) -> list[Import]:
    """Every import in ``source`` (the module ``module``), resolved to a module name.

    ``from a import b`` names ``a.b`` when that is a known module, else ``a``. Imports of
    third-party modules are kept (the celery rules need them); ``__future__`` is dropped.
    """
    known_modules = set(known)
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for branch in node.orelse:
                visit(branch, in_function)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, path, node.lineno, not in_function))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(node, module, is_package)
            if target == "__future__":
                return
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                name = candidate if candidate in known_modules else target
                found.append(Import(module, name, path, node.lineno, not in_function))
        nested = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(ast.parse(source, filename=path), False)
    return found


def _is_celery(name: str) -> bool:
    return any(
        _matches(rule, name) for rule in ("celery*", "kombu*", "billiard*", "pyworkflow.celery*")
    )


# Who must never depend on Celery (or kombu/billiard), not even lazily: the engine and what it
# stands on, the runtime port and the local runtime, and the testing toolkit.
CELERY_FREE = (
    "pyworkflow.core*",
    "pyworkflow.engine*",
    "pyworkflow.runtime*",
    "pyworkflow_testing*",
)


def find_violations(imports: Iterable[Import], modules: Iterable[str]) -> list[str]:
    """Every broken rule, one line each: ``importer (layer) -> imported (layer) at file:line``."""
    problems: list[str] = []
    imports = list(dict.fromkeys(imports))  # `from a import b, c` is one edge when both are `a`
    for module in sorted(set(modules)):
        if layer_of(module) is None:
            problems.append(
                f"{module} is not placed in any layer: add it to LAYERS in"
                " tests/unit/test_layers.py (and to the Layers section of docs/architecture.md)"
            )
    for imp in imports:
        where = f"at {imp.path}:{imp.line}"
        edge = f"{imp.importer} ({_layer_label(imp.importer)}) -> {imp.imported}"
        edge += f" ({_layer_label(imp.imported)}) {where}"
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if _is_celery(imp.imported) and any(_matches(rule, imp.importer) for rule in CELERY_FREE):
            problems.append(
                f"{edge}: core, engine, runtime and pyworkflow_testing never import celery"
            )
        if imp.eager and imp.importer in EMPTY_PACKAGES:
            problems.append(f"{edge}: {imp.importer}/__init__.py must import nothing eagerly")
        if not _ours(imp.imported):
            continue
        if high is None:
            problems.append(f"{edge}: the imported module is not placed in any layer")
        elif low is not None and high > low:
            problems.append(f"{edge}: upward import")
    return problems


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _sources() -> Iterator[tuple[str, bool, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module, is_package = _module_name(path)
            yield module, is_package, path


def _all_imports() -> tuple[list[Import], list[str]]:
    sources = list(_sources())
    modules = [module for module, _, _ in sources]
    imports: list[Import] = []
    for module, is_package, path in sources:
        rel = str(path.relative_to(ROOT))
        imports += collect_imports(
            module, path.read_text(), rel, is_package=is_package, known=modules
        )
    return imports, modules


def _report(problems: list[str]) -> str:
    return f"{len(problems)} layering violation(s):\n" + "\n".join(f"  {p}" for p in problems)


def test_no_module_imports_a_higher_layer() -> None:
    imports, modules = _all_imports()
    assert "pyworkflow.engine.activation" in modules  # the walk found the package
    problems = find_violations(imports, modules)
    assert not problems, _report(problems)


def test_every_module_sits_in_exactly_one_layer() -> None:
    _, modules = _all_imports()
    for module in modules:
        matching = [name for name, rules in LAYERS if any(_matches(r, module) for r in rules)]
        assert len(matching) == 1, f"{module} matches layers {matching}"


def test_the_data_model_imports_nothing_of_the_package_but_itself() -> None:
    imports, _ = _all_imports()
    outside = [
        f"{i.importer} -> {i.imported}"
        for i in imports
        if _matches("pyworkflow.model*", i.importer)
        and _ours(i.imported)
        and not _matches("pyworkflow.model*", i.imported)
    ]
    assert not outside, outside


def test_the_layer_order_is_the_one_the_docs_state() -> None:
    """docs/architecture.md and CLAUDE.md list the same layers, in this order (top first)."""
    names = [name for name, _ in reversed(LAYERS)]
    for doc in ("docs/architecture.md", "CLAUDE.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        positions = [text.find(f"<!-- layer: {name} -->") for name in names]
        assert -1 not in positions, f"{doc} does not mark every layer: {names}"
        assert positions == sorted(positions), f"{doc} lists the layers in another order"


# -- the checker checks ---------------------------------------------------------------------------

KNOWN = ["pyworkflow.storage.fake", "pyworkflow.engine.activation", "pyworkflow.model.events"]


def _check(module: str, source: str, *, is_package: bool = False) -> list[str]:
    path = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    imports = collect_imports(module, source, path, is_package=is_package, known=KNOWN)
    return find_violations(imports, [module])


def test_checker_catches_a_planted_upward_import_inside_a_function() -> None:
    source = (
        '"""A storage module that reaches up into the engine."""\n'
        "from pyworkflow.model.events import Event\n"
        "\n"
        "def lazy() -> None:\n"
        "    from pyworkflow.engine.activation import Engine\n"
    )
    problems = _check("pyworkflow.storage.fake", source)
    assert problems == [
        "pyworkflow.storage.fake (3 storage) -> pyworkflow.engine.activation (6 engine)"
        " at pyworkflow/storage/fake.py:5: upward import"
    ]


def test_checker_resolves_relative_and_plain_imports() -> None:
    source = "from ..engine import activation\nimport pyworkflow.cli.main\n"
    problems = _check("pyworkflow.storage.fake", source)
    assert len(problems) == 2
    assert (
        "-> pyworkflow.engine.activation (6 engine) at pyworkflow/storage/fake.py:1" in problems[0]
    )
    assert "-> pyworkflow.cli.main (10 cli) at pyworkflow/storage/fake.py:2" in problems[1]


def test_checker_ignores_type_checking_imports_but_not_their_else_branch() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pyworkflow.engine.activation import Engine\n"
        "else:\n"
        "    from pyworkflow.api import start\n"
    )
    problems = _check("pyworkflow.storage.fake", source)
    assert len(problems) == 1 and "pyworkflow.api (7 runtime)" in problems[0]


def test_checker_enforces_the_extra_rules() -> None:
    assert any("never import celery" in p for p in _check("pyworkflow.engine.x", "import celery\n"))
    assert any(
        "never import celery" in p
        for p in _check("pyworkflow_testing.sim", "from pyworkflow.celery import app\n")
    )
    eager = _check("pyworkflow.core", "import os\n", is_package=True)
    assert any("must import nothing eagerly" in p for p in eager)
    lazy = "def __getattr__(name: str) -> object:\n    import importlib\n    return name\n"
    assert _check("pyworkflow.core", lazy, is_package=True) == []
    assert any("unplaced" in p or "not placed" in p for p in _check("pyworkflow.gadget", ""))
    assert _check("pyworkflow.model.events", "from pyworkflow.model.schemas import Hook\n") == []
    upward = _check("pyworkflow.model.events", "from pyworkflow.serialization import dumps\n")
    assert any("upward import" in p for p in upward)


# -- the celery layer ----------------------------------------------------------------------------


def test_the_celery_package_is_walked_and_sits_in_the_celery_layer() -> None:
    _, modules = _all_imports()
    celery_modules = [m for m in modules if _matches("pyworkflow.celery*", m)]
    assert {"pyworkflow.celery.app", "pyworkflow.celery.tasks", "pyworkflow.celery.runtime"} <= set(
        celery_modules
    )
    assert {LAYERS[layer_of(m) or 0][0] for m in celery_modules} == {"celery"}


def test_only_the_celery_package_and_the_worker_commands_import_celery() -> None:
    imports, _ = _all_imports()
    importers = {i.importer for i in imports if _is_celery(i.imported)}
    outside = {
        m
        for m in importers
        if not _matches("pyworkflow.celery*", m) and m != "pyworkflow.cli.worker"
    }
    assert not outside, f"modules outside pyworkflow.celery import celery: {sorted(outside)}"
    cli = [i for i in imports if i.importer == "pyworkflow.cli.worker" and _is_celery(i.imported)]
    assert cli and not any(i.eager for i in cli), "the cli imports celery only in worker commands"


def test_the_checker_keeps_celery_out_of_the_runtime_and_the_engine() -> None:
    planted = _check("pyworkflow.runtime.local", "from pyworkflow.celery.app import celery_app\n")
    assert any("upward import" in p for p in planted)
    assert any("never import celery" in p for p in planted)
    assert any("never import celery" in p for p in _check("pyworkflow.engine.x", "import kombu\n"))


def test_importing_everything_but_the_celery_package_loads_no_celery() -> None:
    code = (
        "import sys, pyworkflow, pyworkflow.api, pyworkflow.cli, pyworkflow_testing,"
        " pyworkflow.engine.activation, pyworkflow.runtime.local\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu',"
        " 'billiard') or m.startswith('pyworkflow.celery'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
