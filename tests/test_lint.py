"""The code stays ruff clean (lint and format), so CI catches a slip."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs ruff over the tree

ROOT = Path(__file__).parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_check():
    r = ruff("check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = ruff("format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr
