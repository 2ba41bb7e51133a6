"""Fixtures of the import tests: the disks, made once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports.origin import make_disks


@pytest.fixture(scope="session")
def disks(tmp_path_factory) -> dict[str, Path]:
    return make_disks(tmp_path_factory.mktemp("disks"))
