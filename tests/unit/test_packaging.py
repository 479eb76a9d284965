"""poetry.lock against pyproject.toml, and the pinned requirements scripts/setup installs from it.

No network and no Poetry: CI installs with pip from the lock, so these checks stand in for
`poetry check --lock` there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK_REQUIREMENTS = ROOT / "scripts" / "lock_requirements.py"


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


PYPROJECT = _load(ROOT / "pyproject.toml")
LOCK = _load(ROOT / "poetry.lock")


def _poetry_specifier(constraint: str) -> SpecifierSet:
    if constraint.strip() == "*":
        return SpecifierSet()
    if constraint.lstrip()[:1] in ("^", "~") and not constraint.lstrip().startswith("~="):
        raise AssertionError(f"write {constraint!r} as a PEP 440 specifier (lower bounds only)")
    return SpecifierSet(constraint)


def _declared() -> list[tuple[str, str, SpecifierSet]]:
    """(where, canonical name, specifier) of every dependency pyproject.toml declares."""
    project = PYPROJECT["project"]
    declared = [
        ("project.dependencies", req) for req in map(Requirement, project.get("dependencies", []))
    ]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        declared += [(f"extra {extra!r}", Requirement(req)) for req in reqs]
    result: list[tuple[str, str, SpecifierSet]] = [
        (where, canonicalize_name(req.name), req.specifier) for where, req in declared
    ]
    dev = PYPROJECT["tool"]["poetry"]["group"]["dev"]["dependencies"]
    for name, spec in dev.items():
        constraint = spec if isinstance(spec, str) else spec.get("version", "*")
        result.append(("dev group", canonicalize_name(name), _poetry_specifier(constraint)))
    return result


DECLARED = _declared()
DECLARED_NAMES = sorted({name for _, name, _ in DECLARED})


def _locked(name: str) -> list[dict[str, Any]]:
    return [p for p in LOCK["package"] if canonicalize_name(p["name"]) == name]


@pytest.mark.parametrize(("where", "name", "specifier"), DECLARED, ids=lambda v: str(v))
def test_every_declared_dependency_is_locked_within_its_specifier(
    where: str, name: str, specifier: SpecifierSet
) -> None:
    locked = _locked(name)
    assert locked, f"{name} ({where}) is not in poetry.lock; run scripts/lock"
    for package in locked:
        assert specifier.contains(Version(package["version"]), prereleases=True), (
            f"{name} ({where}) is locked at {package['version']}, outside {specifier}; "
            "run scripts/lock"
        )


def test_lock_names_no_url() -> None:
    text = (ROOT / "poetry.lock").read_text(encoding="utf-8")
    assert "https://" not in text and "://" not in text
    assert all("source" not in package for package in LOCK["package"])


def test_lock_content_hash_matches_pyproject() -> None:
    # Poetry 2.5.1's Locker._get_content_hash for a pyproject.toml with a [project] table.
    project = PYPROJECT.get("project", {})
    poetry = PYPROJECT.get("tool", {}).get("poetry", {})
    relevant: dict[str, Any] = {
        "project": {
            key: project[key]
            for key in ("requires-python", "dependencies", "optional-dependencies")
            if key in project
        }
    }
    if PYPROJECT.get("dependency-groups"):
        relevant["dependency-groups"] = PYPROJECT["dependency-groups"]
    relevant["tool"] = {
        "poetry": {
            key: poetry[key]
            for key in ("dependencies", "source", "extras", "dev-dependencies", "group")
            if poetry.get(key) is not None
        }
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    assert (
        LOCK["metadata"]["content-hash"] == digest
    ), "poetry.lock is stale for pyproject.toml; run scripts/lock"


def _requirement_lines() -> list[Requirement]:
    out = subprocess.run(
        [sys.executable, str(LOCK_REQUIREMENTS), str(ROOT / "poetry.lock")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Requirement(line) for line in out.splitlines() if line and not line.startswith("#")]


def test_requirements_list_each_declared_package_once_per_marker() -> None:
    lines = _requirement_lines()
    keys = [(canonicalize_name(req.name), str(req.marker)) for req in lines]
    assert len(keys) == len(set(keys)), "a package is listed twice under the same marker"
    for req in lines:
        assert "extra" not in str(req.marker), f"{req}: extras are resolved, not left in"
        (pin,) = req.specifier
        assert pin.operator == "==", req
        versions = {p["version"] for p in _locked(canonicalize_name(req.name))}
        assert pin.version in versions, f"{req} is not a version in poetry.lock"
    listed = {canonicalize_name(req.name) for req in lines}
    for name in DECLARED_NAMES:
        assert name in listed, f"{name} is declared but not in the requirements"
        entries = [req for req in lines if canonicalize_name(req.name) == name]
        markers = {str(req.marker) for req in entries}
        assert len(entries) == len(markers), f"{name}: {entries}"
        # A package locked once needs one line; several entries must each say when they apply.
        assert len(entries) == 1 or all(req.marker is not None for req in entries), entries


def test_requirements_install_one_version_of_each_package_here() -> None:
    installed: dict[str, list[str]] = {}
    for req in _requirement_lines():
        if req.marker is None or req.marker.evaluate():
            installed.setdefault(canonicalize_name(req.name), []).append(str(req.specifier))
    assert {name: pins for name, pins in installed.items() if len(pins) > 1} == {}
    assert set(DECLARED_NAMES) <= set(installed)


def _lock_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_requirements", LOCK_REQUIREMENTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markers_resolve_groups_and_extras() -> None:
    lock = {
        "package": [
            {"name": "a", "version": "1", "groups": ["main"]},
            {"name": "b", "version": "1", "groups": ["main"], "markers": 'extra == "x"'},
            {"name": "c", "version": "1", "groups": ["main"], "markers": 'extra == "other"'},
            {
                "name": "d",
                "version": "1",
                "groups": ["main", "dev"],
                "markers": {"main": '(extra == "x" or extra == "y") and os_name == "nt"'},
            },
            {"name": "e", "version": "1", "groups": ["docs"]},
            {
                "name": "f",
                "version": "1",
                "groups": ["main", "dev"],
                "markers": {
                    "main": 'extra == "x" and python_version < "3.12"',
                    "dev": 'python_version < "3.12"',
                },
            },
            {"name": "g", "version": "1", "groups": ["dev"], "markers": 'sys_platform == "win32"'},
            {"name": "g", "version": "2", "groups": ["dev"], "markers": 'sys_platform != "win32"'},
        ]
    }
    pyproject: dict[str, Any] = {"project": {"optional-dependencies": {"x": [], "Y": []}}}
    assert _lock_requirements().requirement_lines(lock, pyproject) == [
        "a==1",
        "b==1",
        "d==1",  # no marker for dev, so always
        'f==1 ; python_version < "3.12"',
        'g==1 ; sys_platform == "win32"',
        'g==2 ; sys_platform != "win32"',
    ]
    for line in _lock_requirements().requirement_lines(lock, pyproject):
        if ";" in line:
            Marker(line.split(";", 1)[1])
