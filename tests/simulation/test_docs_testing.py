"""Every snippet of docs/testing.md runs, and every output it shows is what the command prints.

Markers in the page, on the line before a fenced block:

- ``<!-- test -->`` before a ```python block: run it in a fresh module namespace (top-level
  ``await`` allowed, run with ``asyncio.run``); a block defining ``test_*`` functions is a test
  file, run by pytest (``pytester``);
- ``<!-- test: file NAME -->``: the block is the file NAME for the blocks after it (a later block
  with the same NAME replaces it); Python files are also imported once, to show they load;
- ``<!-- test: output -->`` before a ```console block: ``$ pyworkflow ...`` and what it prints;
  the command runs (in a directory holding the files so far) and its output must match, up to
  the wall time and the directory in file paths.

Each block gets the workflow registry as it was before it, so two blocks may define the same name.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shlex
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyworkflow.cli import main
from pyworkflow.core import registry

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
ROOT = DOC.parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*test(?::\s*(.*?))?\s*-->")
INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = --strict-markers -p no:cacheprovider
"""


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    marker: str | None  # None: unmarked; "": run; "file NAME"; "output"
    files: tuple[tuple[str, str], ...]  # the files defined by the blocks before this one

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.marker or 'run'}".replace(" ", "-")


def _blocks() -> list[Block]:
    text = DOC.read_text(encoding="utf-8")
    files: dict[str, str] = {}
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = MARKER.fullmatch(before.strip())
        marker = None if marked is None else (marked[1] or "")
        blocks.append(Block(line, match[1], match[2], marker, tuple(files.items())))
        if marker is not None and marker.startswith("file "):
            files[marker.removeprefix("file ").strip()] = match[2]
    return blocks


BLOCKS = _blocks()
TESTED = [b for b in BLOCKS if b.marker is not None]


@pytest.fixture(autouse=True)
def _own_registry() -> Iterator[None]:
    workflows, steps = dict(registry._workflows), dict(registry._steps)
    yield
    registry._workflows.clear()
    registry._workflows.update(workflows)
    registry._steps.clear()
    registry._steps.update(steps)


@pytest.fixture
def workdir(pytester: pytest.Pytester) -> Path:
    """A fresh directory, the current one while the block runs (pytester's, which it chdirs to)."""
    pytester.syspathinsert(ROOT)  # the snippets import examples.onboarding
    return pytester.path


def _write_files(block: Block, where: Path) -> list[str]:
    for name, body in block.files:
        (where / name).write_text(body, encoding="utf-8")
    return [Path(name).stem for name, _ in block.files if name.endswith(".py")]


def _forget(modules: list[str]) -> None:
    for name in modules:
        sys.modules.pop(name, None)


def test_every_python_block_is_tested() -> None:
    untested = [b.line for b in BLOCKS if b.lang == "python" and b.marker is None]
    assert not untested, f"python blocks of {DOC.name} without a <!-- test --> marker: {untested}"
    assert any(b.marker == "output" for b in BLOCKS)


@pytest.mark.parametrize("block", TESTED, ids=lambda b: b.id)
def test_block(block: Block, workdir: Path, pytester: pytest.Pytester) -> None:
    modules = _write_files(block, workdir)
    try:
        if block.marker == "output":
            _check_output(block)
        elif block.marker.startswith("file "):
            _check_file(block, workdir)
        elif re.search(r"^(async )?def test_", block.body, re.MULTILINE):
            _run_as_test_file(block, pytester)
        else:
            _run_snippet(block, workdir)
    finally:
        _forget(modules)


def _run_snippet(block: Block, workdir: Path) -> None:
    name = f"docs_testing_line{block.line}"
    code = compile(block.body, f"{DOC}:{block.line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    module = types.ModuleType(name)
    sys.modules[name] = module  # so the simulator finds the snippet's steps' module
    sys.path.insert(0, str(workdir))
    try:
        result = eval(code, module.__dict__)  # noqa: S307 - the documentation's own code
        if inspect.iscoroutine(result):
            asyncio.run(result)
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop(name, None)


def _run_as_test_file(block: Block, pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(**{f"test_docs_line{block.line}": block.body})
    result = pytester.runpytest_inprocess()
    outcomes = result.parseoutcomes()
    assert result.ret == 0 and outcomes.get("passed", 0) >= 1, result.stdout.str()


def _check_file(block: Block, workdir: Path) -> None:
    name = block.marker.removeprefix("file ").strip()
    if not name.endswith(".py"):
        return
    (workdir / name).write_text(block.body, encoding="utf-8")
    sys.path.insert(0, str(workdir))
    try:
        __import__(Path(name).stem)
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop(Path(name).stem, None)


def _normalize(text: str) -> str:
    text = re.sub(r"\S*/([\w.]+\.py):", r"\1:", text)  # the directory the command ran in
    text = re.sub(r" in \d+(\.\d+)?s \(", " in <wall>s (", text)
    return text.strip("\n")


def _check_output(block: Block) -> None:
    command, _, expected = block.body.partition("\n")
    command = command.removeprefix("$ ")
    while command.endswith("\\"):
        continuation, _, expected = expected.partition("\n")
        command = command[:-1] + " " + continuation.strip()
    argv = shlex.split(command)
    assert argv[0] == "pyworkflow", f"line {block.line}: only pyworkflow commands are checked"
    result = CliRunner().invoke(main, argv[1:])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code != 2, result.output
    assert _normalize(result.stdout) == _normalize(expected)
