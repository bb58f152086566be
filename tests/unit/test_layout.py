"""The shape of the house, read from the code's own imports (``ast``, nothing imported or run).

- nothing under ``shipline/`` imports from ``tasks/`` or ``flows/`` (the core never reaches into Prefect's
  layer above it);
- the app spec imports nothing from the release or discovery rooms (everything downstream derives from it);
- no import cycles among the modules of ``shipline/``, ``blocks/``, ``tasks/`` and ``flows/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shipline", "blocks", "tasks", "flows")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Modules of this project that ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        # "from shipline.release import lifecycle" names a module; "from shipline.spec import X" does not.
        graph[name] = {target for target in project_imports(path) if target in modules} - {name}
    return graph


GRAPH = import_graph()


def test_the_tree_is_read() -> None:
    assert {"shipline.spec", "shipline.release.lifecycle", "tasks.deploy", "flows.release"} <= set(GRAPH)
    assert "shipline.release.plan" in GRAPH["shipline.release.compose"]


def test_the_core_never_imports_tasks_or_flows() -> None:
    offenders = {
        module: sorted(t for t in targets if t.split(".")[0] in {"tasks", "flows"})
        for module, targets in GRAPH.items()
        if module.startswith("shipline")
    }
    assert {module: targets for module, targets in offenders.items() if targets} == {}


def test_the_app_spec_depends_on_no_room_downstream() -> None:
    rooms = ("shipline.release", "shipline.discovery", "shipline.build", "shipline.stack", "tasks", "flows")
    downstream = [t for t in GRAPH["shipline.spec"] if t.startswith(rooms)]
    assert downstream == []


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []
