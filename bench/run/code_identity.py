"""Which source files a number depends on, and a hash of their content.

A result cell may be reused only if the code that produced it is the code that would produce it
now. Hashing the whole repository would recompute everything after a README edit; hashing nothing
let a head broken on purpose pass the regression check. So a cell is keyed by the import closure
of its head's module, its suite's module and the runner: every project file reachable from them by
``import`` statements (function-level ones included), hashed by content. A head module given by
file path (``--head-module``) is hashed the same way, with its sibling modules. A head whose source
cannot be found (defined interactively) gets a key that never matches, so it is always recomputed.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import secrets
import sys
from pathlib import Path

from bench.core import snapshot

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "heads", "suites")


def _sha(path: Path) -> str:
    return hashlib.sha256(snapshot.read_bytes(path)).hexdigest()


def _module_file(name: str, near: Path) -> list[Path]:
    """Project files that ``import name`` loads: package __init__ files along the way, then the module."""
    parts = name.split(".")
    base = REPO if parts[0] in PACKAGES else near
    found, folder = [], base
    for i, part in enumerate(parts):
        pkg, mod = folder / part / "__init__.py", folder / f"{part}.py"
        if pkg.is_file():
            found.append(pkg)
            folder = folder / part
        elif mod.is_file() and i == len(parts) - 1:
            found.append(mod)
        else:
            break
    return found


def _imports(path: Path) -> list[Path]:
    try:
        tree = ast.parse(snapshot.read_bytes(path).decode("utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return []
    here = path.parent
    out: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out += _module_file(alias.name, here)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package upwards
                folder = here
                for _ in range(node.level - 1):
                    folder = folder.parent
                prefix = [] if node.module is None else node.module.split(".")
                target = folder.joinpath(*prefix) if prefix else folder
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                candidates += [target / f"{a.name}.py" for a in node.names] + [
                    target / a.name / "__init__.py" for a in node.names
                ]
                out += [c for c in candidates if c.is_file()]
                continue
            out += _module_file(node.module, here)
            for alias in node.names:  # ``from bench import metrics`` imports a module
                out += [f for f in _module_file(f"{node.module}.{alias.name}", here) if f not in out]
    return out


def closure(roots: list[Path]) -> dict[str, str]:
    """Every project file reachable from ``roots`` by imports, as {shown path: sha256}."""
    seen: dict[Path, str] = {}
    todo = [Path(r).resolve() for r in roots]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen[path] = _sha(path)
        todo += [p.resolve() for p in _imports(path)]
    return {_shown(p): h for p, h in sorted(seen.items(), key=lambda kv: _shown(kv[0]))}


def _shown(path: Path) -> str:
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def source_file(obj) -> Path | None:
    """The file that defines a class, or None (defined interactively, in a notebook, by exec)."""
    try:
        file = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return None
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    if file is None and module is not None:
        file = getattr(module, "__file__", None)
    return Path(file) if file and Path(file).is_file() else None


def code_identity(*objects) -> dict:
    """{"hash", "files"} for the import closure of the modules defining ``objects`` plus the runner."""
    roots, unknown = [REPO / "bench" / "run" / "runner.py"], []
    for obj in objects:
        file = source_file(obj)
        if file is None:
            unknown.append(getattr(obj, "__qualname__", repr(obj)))
        else:
            roots.append(file.resolve())
    files = closure(sorted(set(roots)))
    h = hashlib.sha256("\n".join(f"{k}:{v}" for k, v in files.items()).encode())
    if unknown:  # no source to hash: a key that matches nothing, so the cell is always recomputed
        h.update(secrets.token_bytes(16))
    return {"hash": h.hexdigest()[:16], "files": {k: v[:12] for k, v in files.items()}, "unhashable": unknown}
