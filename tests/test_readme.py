"""The README's test command is the one CI runs."""

from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_command(label: str) -> str:
    lines = (ROOT / "README.rst").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{label}**"))
    block = next(i for i in range(start, len(lines)) if lines[i].startswith("    "))
    return lines[block].strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_command("Test") in [line.strip() for line in ci]


def test_readme_run_command_starts_the_daemon():
    assert readme_command("Run").endswith("twistd -n pxed")
