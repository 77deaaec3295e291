"""The store's parts keep to their interfaces: each module imports only the modules its
docstring names, and none reaches into another object's private attributes (the outbox
talks to the writer through `submit` and `flush`, never through the store's insides)."""

from __future__ import annotations

import ast
from pathlib import Path

import monitor.store

STORE = Path(monitor.store.__file__).parent
MODEL = "monitor.model"


def store(*names: str) -> set[str]:
    return {f"monitor.store.{name}" for name in names}


# Lower layers first; every module may import the standard library.
ALLOWED: dict[str, set[str]] = {
    "files": set(),
    "base": {MODEL},
    "uptime": {MODEL} | store("base"),
    "schema": {MODEL} | store("base"),
    "retention": store("base"),
    "writer": store("base", "files", "schema"),
    "queries": {MODEL} | store("base", "schema", "uptime"),
    "reader": {MODEL} | store("base", "queries", "schema"),
    "rollups": {MODEL} | store("schema", "writer"),
    "outbox": store("base", "writer"),
    "sqlite": {MODEL} | store("base", "files", "outbox", "queries", "retention", "rollups",
                              "schema", "writer"),
    "__init__": store("base", "outbox", "reader", "sqlite"),
}


def imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("monitor")}


def test_each_store_module_imports_only_what_it_may() -> None:
    modules = {path.stem for path in STORE.glob("*.py")}
    assert modules == set(ALLOWED), "a new store module: say what it may import"
    for name, allowed in ALLOWED.items():
        tree = ast.parse((STORE / f"{name}.py").read_text())
        assert imports(tree) <= allowed, (name, imports(tree) - allowed)
        docstring = ast.get_docstring(tree)
        assert docstring, f"store/{name}.py says what it is for"


def test_no_store_module_touches_another_objects_private_attributes() -> None:
    for path in STORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), (
                    f"{path.name}:{node.lineno} reaches into .{node.attr}")
