"""Every module a stage imports is one of its DVC deps, so editing it makes the stage stale."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("pipeline", "stages")


def module_file(module: str) -> Path | None:
    """Return the file that defines ``module`` inside the repository, if it is ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Return the modules ``path`` imports anywhere (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_chain(module: str) -> list[Path]:
    """Return the files that importing ``module`` runs: each package's ``__init__`` and itself."""
    parts = module.split(".")
    found = (module_file(".".join(parts[:depth])) for depth in range(1, len(parts) + 1))
    return [path for path in found if path is not None]


def import_closure(module: str) -> set[Path]:
    """Return every repository file reachable from ``module`` through imports.

    Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so those count.
    """
    seen: set[Path] = set()
    todo = package_chain(module)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for imported in imported_modules(path):
            todo.extend(found for found in package_chain(imported) if found not in seen)
    return seen


def stage_module(cmd: str) -> str:
    """Return the module (``stages.X``) that a ``python -m stages.X ...`` command runs."""
    return cmd.split(" -m ", 1)[1].split()[0]


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def dvc_stages() -> dict[str, dict]:
    """Return each stage's definition; a ``foreach`` stage's ``do`` (its items share code)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_every_imported_module_is_a_dvc_dep(name):
    stage = dvc_stages()[name]
    missing = sorted(str(p.relative_to(REPO)) for p in import_closure(stage_module(stage["cmd"]))
                     if not covered(p, stage["deps"]))
    assert not missing, f"stage {name!r}: imports not covered by its deps in dvc.yaml: {missing}"


def test_closure_follows_function_level_imports_and_package_inits():
    names = {str(p.relative_to(REPO)) for p in import_closure("stages.download")}
    assert {"stages/__init__.py", "stages/download.py", "pipeline/__init__.py",
            "pipeline/download/__init__.py", "pipeline/config.py"} <= names
    # imported inside a function only (the generator is heavy)
    assert "pipeline/download/demo/corpus.py" in names
    assert "pipeline/download/demo/faces.py" in names
