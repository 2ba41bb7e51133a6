"""The database layer speaks no HTTP: its modules raise the domain errors of
pxed/db/errors.py, and pxed.web.router answers each kind with one status
(tests/web/test_refusals.py has the answers clients get)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pxed.db import errors
from pxed.web import router

DB = Path(errors.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(DB.rglob("*.py")), ids=lambda p: str(p.relative_to(DB)))
def test_no_db_module_imports_the_http_errors(path):
    http = {m for m in _imports(path) if m == "pxed.errors" or m.startswith("pxed.web")}
    assert not http, f"{path.name} imports {sorted(http)}: raise pxed.db.errors instead"


KINDS = [
    kind
    for kind in vars(errors).values()
    if isinstance(kind, type) and issubclass(kind, errors.DomainError)
    if kind is not errors.DomainError
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_every_kind_has_its_status_and_keeps_its_message(kind):
    answered = router.as_api_error(kind("what went wrong"))
    assert answered.status in (400, 403, 404, 409), answered.status
    assert answered.message == "what went wrong"


def test_each_kind_has_a_status_of_its_own():
    statuses = [router.as_api_error(kind("m")).status for kind in KINDS]
    assert sorted(statuses) == [400, 403, 404, 409]
