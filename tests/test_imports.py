"""Every module of the package and of tests/ imports in the environment pyproject.toml declares.

CI runs this in a virtual environment made fresh for the run (.ci/run), so a module that needs a
package nobody declared fails here, not on a new user's machine."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def modules() -> list[str]:
    found = []
    for top in ("bench", "heads", "suites", "tests"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if top == "tests":
                parts = parts[1:]  # tests/ is on sys.path (rootdir conftest), not a package
            found.append(".".join(parts))
    return found + ["run_bench"]


@pytest.mark.parametrize("name", modules())
def test_module_imports(name):
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    importlib.import_module(name)


def test_every_module_is_listed():
    names = modules()
    assert {"bench.cli", "bench.core.records", "heads.filip", "suites.synthetic", "conftest", "helpers"} <= set(names)
