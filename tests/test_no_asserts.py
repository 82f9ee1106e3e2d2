"""Library code raises instead of asserting: ``assert`` statements vanish under ``python -O``."""

import ast

from tests.conftest import REPO


def test_the_library_has_no_assert_statements():
    found = [f"{path.relative_to(REPO)}:{node.lineno}"
             for path in sorted((REPO / "pipeline").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(), str(path)))
             if isinstance(node, ast.Assert)]
    assert found == []
