"""The shared runner for external programs (mkfs, debugfs, mtools): what a
caller gets back, and the one line a failure turns into."""

from __future__ import annotations

import pytest

from pxed import tools


def sh(script: str, **kwargs) -> str:
    return tools.run([tools.find("sh"), "-c", script], timeout=kwargs.pop("timeout", 10), **kwargs)


def test_returns_stderr():
    # debugfs reports failed commands on stderr while exiting 0.
    assert sh("echo out; echo problem >&2") == "problem\n"


def test_failure_is_one_line_with_the_last_stderr_line():
    with pytest.raises(tools.ToolFailed) as e:
        sh("echo first >&2; echo 'the real reason  ' >&2; echo >&2; exit 3")
    assert e.value.message == "sh failed (exit 3): the real reason"
    assert (e.value.returncode, e.value.detail, e.value.tool) == (3, "the real reason", "sh")


def test_failure_falls_back_to_stdout_then_to_nothing():
    with pytest.raises(tools.ToolFailed, match=r"^sh failed \(exit 1\): on stdout$"):
        sh("echo on stdout; exit 1")
    with pytest.raises(tools.ToolFailed) as e:
        sh("exit 2")
    assert e.value.detail == "" and e.value.message == "sh failed (exit 2): no output"


def test_environment_is_added_to():
    assert sh('echo "$LC_ALL $EXTRA" >&2', env={"EXTRA": "x"}) == "C x\n"


def test_timeout():
    with pytest.raises(tools.ToolError, match=r"^sh did not finish within 0\.2 s$"):
        sh("sleep 5", timeout=0.2)


def test_missing_program_names_its_package():
    with pytest.raises(tools.ToolNotFound, match=r"^no-such-mkfs not found: install .* pkg$"):
        tools.find("no-such-mkfs", package="pkg")
