"""Dependencies between apps point one way: down the order in docs/architecture.md.

Every module of every app is parsed with `ast`, imports inside functions
included, and each import of another app is checked against the order. An app
may import the apps below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top. config/ is the composition root and may import any app.
ORDER = ["core", "live", "audit", "agents", "accounts", "approvals", "runtime", "gateway", "ops", "demo", "config"]


def _imports() -> set[tuple[str, str]]:
    found = set()
    for app in ORDER:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in ORDER and top != app:
                        found.add((module, top))
    return found


def _upward(imports: set[tuple[str, str]]) -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, target in imports
        if module.split(".")[0] != "config" and ORDER.index(target) > ORDER.index(module.split(".")[0])
    }


def test_no_app_imports_one_above_it():
    upward = sorted(_upward(_imports()))
    assert not upward, f"imports against the layer order {ORDER}: {upward}"


def test_core_depends_on_no_app():
    assert not {(m, t) for m, t in _imports() if m.startswith("core")}
