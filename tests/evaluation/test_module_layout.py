"""The evaluation package's modules import one another in one direction, at module level only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "patchalign3d" / "evaluation"
PREFIX = "patchalign3d.evaluation."


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """(evaluation modules imported at module level, those imported inside functions or classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    inner: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == PREFIX.rstrip("."):
            hits = {a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            hits = {node.module[len(PREFIX):].split(".")[0]}
        elif isinstance(node, ast.Import):
            hits = {a.name[len(PREFIX):].split(".")[0] for a in node.names if a.name.startswith(PREFIX)}
        else:
            continue
        if node in tree.body:
            top |= hits
        else:
            inner.extend(sorted(hits))
    return top, inner


def test_no_cycles_and_no_imports_inside_functions():
    modules = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    hidden = {m: inner for m, (_, inner) in modules.items() if inner}
    assert hidden == {}, f"evaluation modules imported inside functions: {hidden}"
    graph = {m: top & set(modules) for m, (top, _) in modules.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, (*path, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())
    # the two cycles there were: the shared pieces now sit below both sides
    assert "cli" not in graph["runner"] and "protocols" not in graph["find3d"]
    assert "prompt_table" in graph["find3d"] and "prompt_table" in graph["protocols"]
