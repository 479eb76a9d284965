"""Print a pinned pip requirements file for the development environment from poetry.lock.

    python scripts/lock_requirements.py [poetry.lock [pyproject.toml]]

The environment is what `poetry install --all-extras --with dev` would give: the main
dependencies, every extra of [project.optional-dependencies] and the dev group. One line per
locked package entry that belongs to it, `name==version` followed by `; marker` when the entry is
only for some platforms or Python versions. A package locked twice (one version per marker, e.g.
for different Python versions) gets one line per entry. The lock is complete, so the output is
meant for `pip install --no-deps -r`.

Standard library only: scripts/setup runs this before anything is installed. Reads lock files of
format 2.1 (Poetry 2), where each package lists its `groups` and its `markers`, either one marker
for all of its groups or a table of markers by group (a group missing from that table has none).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

GROUPS = ("main", "dev")  # the project's dependencies (with their extras) and the dev group

# A marker is parsed into a small tree: ("or", [..]), ("and", [..]), ("cmp", text) or a bool.
Marker = Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lpar>\() | (?P<rpar>\)) |
        (?P<str>'[^']*'|"[^"]*") |
        (?P<op>===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b) |
        (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse marker {text!r} at {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "word" and value in ("and", "or"):
            kind = value
        elif kind == "op":
            value = " ".join(value.split())
        tokens.append((kind, value))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, extras: set[str]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.extras = extras
        self.text = text

    def parse(self) -> Marker:
        tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"cannot parse marker {self.text!r}")
        return tree

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _take(self, kind: str | None = None) -> str:
        if self.pos >= len(self.tokens) or (kind and self.tokens[self.pos][0] != kind):
            raise ValueError(f"cannot parse marker {self.text!r}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]

    def _or(self) -> Marker:
        items = [self._and()]
        while self._peek() == "or":
            self._take()
            items.append(self._and())
        return _simplify("or", items)

    def _and(self) -> Marker:
        items = [self._atom()]
        while self._peek() == "and":
            self._take()
            items.append(self._atom())
        return _simplify("and", items)

    def _atom(self) -> Marker:
        if self._peek() == "lpar":
            self._take()
            tree = self._or()
            self._take("rpar")
            return tree
        left = self._value()
        op = self._take("op")
        right = self._value()
        if "extra" in (left, right):
            # With every extra requested, `extra == "x"` holds exactly for the project's extras.
            name = right if left == "extra" else left
            name = re.sub(r"[-_.]+", "-", name.strip("'\"")).lower()
            if op in ("==", "==="):
                return name in self.extras
            if op == "!=":
                return name not in self.extras
            raise ValueError(f"unsupported extra comparison in marker {self.text!r}")
        return ("cmp", f"{left} {op} {right}")

    def _value(self) -> str:
        kind = self._peek()
        if kind == "str":
            return '"' + self._take()[1:-1] + '"'
        return self._take("word")


def _simplify(kind: str, items: list[Marker]) -> Marker:
    absorbing = kind == "or"  # True absorbs an "or", False absorbs an "and"
    kept: list[Marker] = []
    for item in items:
        if item is absorbing:
            return absorbing
        if item is (not absorbing):
            continue
        for sub in item[1] if item[0] == kind else [item]:
            if sub not in kept:
                kept.append(sub)
    if not kept:
        return not absorbing
    return kept[0] if len(kept) == 1 else (kind, kept)


def _render(tree: Marker, parent: str | None = None) -> str:
    if tree[0] == "cmp":
        return str(tree[1])
    text = f" {tree[0]} ".join(_render(sub, tree[0]) for sub in tree[1])
    return f"({text})" if parent == "and" and tree[0] == "or" else text


def _group_marker(package: dict[str, Any], group: str) -> str | None:
    markers = package.get("markers")
    if isinstance(markers, dict):
        return markers.get(group)
    return markers


def package_marker(package: dict[str, Any], extras: set[str]) -> Marker:
    """The marker under which `package` belongs to the environment: True, False or a tree."""
    per_group: list[Marker] = []
    for group in GROUPS:
        if group in package.get("groups", ["main"]):
            text = _group_marker(package, group)
            per_group.append(True if not text else _Parser(text, extras).parse())
    return _simplify("or", per_group) if per_group else False


def requirement_lines(lock: dict[str, Any], pyproject: dict[str, Any]) -> list[str]:
    extras = {
        re.sub(r"[-_.]+", "-", name).lower()
        for name in pyproject.get("project", {}).get("optional-dependencies", {})
    }
    lines: list[str] = []
    for package in sorted(lock.get("package", []), key=lambda p: (p["name"], p["version"])):
        marker = package_marker(package, extras)
        if marker is False:
            continue
        line = f"{package['name']}=={package['version']}"
        if marker is not True:
            line += f" ; {_render(marker)}"
        if line not in lines:
            lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    lock_path = Path(argv[1] if len(argv) > 1 else "poetry.lock")
    pyproject_path = Path(argv[2] if len(argv) > 2 else lock_path.with_name("pyproject.toml"))
    with lock_path.open("rb") as f:
        lock = tomllib.load(f)
    with pyproject_path.open("rb") as f:
        pyproject = tomllib.load(f)
    version = str(lock.get("metadata", {}).get("lock-version", "1.0"))
    if tuple(int(part) for part in version.split(".")[:2]) < (2, 1):
        print(f"{lock_path}: lock format {version}; run scripts/lock", file=sys.stderr)
        return 1
    print(f"# generated by scripts/lock_requirements.py from {lock_path.name}; do not edit")
    for line in requirement_lines(lock, pyproject):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
