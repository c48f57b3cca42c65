"""The layout the README describes is the layout of the code: rooms, and dependencies one way.

Each project module belongs to a layer; a module may import from its own room and from layers
below it, never from above and never from a sibling room of its own layer. A new file in a new
room fails here until the README's layout section and this table name it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# room -> layer; lower layers never import higher ones (see README, "Layout").
LAYERS = {
    "bench": 0,
    "bench.core": 0,
    "bench.data": 1,
    "bench.eval": 1,
    "bench.features": 2,
    "bench.report": 2,  # report builds intervals with eval's statistics
    "heads": 3,
    "suites": 4,
    "bench.run": 5,
    "bench.cli": 6,
    "bench.api": 6,  # the Python API: the command line without argv
    "bench.tools": 7,  # benchmarks and end-to-end checks drive the command line
}
# Sibling rooms of one layer that may use each other, and why.
SIBLINGS_ALLOWED: set[tuple[str, str]] = set()


def room_of(module: str) -> str | None:
    parts = module.split(".")
    for n in (2, 1):
        name = ".".join(parts[:n])
        if name in LAYERS and (n == 1 or len(parts) >= 2):
            if n == 2 or name != "bench" or len(parts) == 1:
                return name
    return None


def project_modules():
    for top in ("bench", "heads", "suites"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imported(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:  # ``from bench.core import atomic`` imports bench.core.atomic
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name


def test_room_table_knows_every_module():
    unknown = [m for m, _ in project_modules() if room_of(m) is None]
    assert not unknown, f"modules outside any room in LAYERS: {unknown}"


def test_dependencies_run_one_way():
    wrong = []
    for module, path in project_modules():
        here = room_of(module)
        for line, target in imported(path, module):
            if target.split(".")[0] not in ("bench", "heads", "suites"):
                continue
            there = room_of(target)
            if there is None or there == here or there == "bench":
                continue
            if LAYERS[there] > LAYERS[here]:
                wrong.append(
                    f"{path.relative_to(REPO)}:{line} imports {target} (layer {LAYERS[there]} > {LAYERS[here]})"
                )
            elif LAYERS[there] == LAYERS[here] and (here, there) not in SIBLINGS_ALLOWED:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports sibling room {target}")
    assert not wrong, "dependencies against the layering:\n" + "\n".join(wrong)


def test_no_module_reaches_into_another_modules_private_names():
    wrong = []
    for _module, path in project_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("bench", "heads", "suites"):
                wrong += [
                    f"{path.relative_to(REPO)}:{node.lineno} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not wrong, "\n".join(wrong)


def test_nothing_in_the_repository_points_outside_it():
    tracked = [
        p
        for p in REPO.rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".md", ".yaml", ".toml", ".sh"}
        and not {"mutants", "outputs", ".git", ".hypothesis"} & set(p.relative_to(REPO).parts)
        and "egg-info" not in str(p)
    ]
    wrong = [
        str(p.relative_to(REPO))
        for p in tracked
        if p.name != "test_layout.py" and ("../shared" in (t := p.read_text(errors="ignore")) or "DESIGN.md" in t)
    ]
    assert not wrong, f"files that point outside the repository: {wrong}"


def test_every_cited_doc_exists():
    import re

    cited = {}
    for p in [
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *(p for _, p in project_modules()),
        *REPO.glob("tests/*.py"),
    ]:
        for ref in re.findall(r"docs/[\w./-]+\.md", p.read_text(encoding="utf-8")):
            cited.setdefault(ref, str(p.relative_to(REPO)))
    missing = {ref: where for ref, where in cited.items() if not (REPO / ref).is_file()}
    assert cited and not missing, f"cited but absent: {missing}"


def _module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports, at the top or inside a function alike."""
    paths = dict(project_modules())
    graph = {}
    for module, path in paths.items():
        targets = set()
        for _, target in imported(path, module):
            parts = target.split(".")
            for n in range(len(parts), 0, -1):  # ``bench.data.types.RetrievalSet`` imports bench.data.types
                if ".".join(parts[:n]) in paths:
                    targets.add(".".join(parts[:n]))
                    break
        graph[module] = targets - {module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_anywhere_inside_a_room_or_across():
    """Packages (``__init__``) may import their own modules; nothing else may close a circle."""
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in _module_graph().items()}
    found = _cycle(graph)
    assert found is None, "import circle: " + " -> ".join(found)


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_environment_variables_are_read_in_one_place_and_never_written():
    wrong = [
        f"{path.relative_to(REPO)}:{i}"
        for _, path in project_modules()
        if path.name != "environment.py"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "os.environ" in line or "os.getenv" in line or "putenv" in line
    ]
    assert not wrong, f"environment read or written outside bench/core/environment.py: {wrong}"
