"""What the agent says: log lines reach pxed as they were written (quotes,
backslashes, newlines, any Unicode), and the machine credential appears
nowhere in what it prints, whatever happens."""

from __future__ import annotations

import io

import pytest_twisted
from twisted.internet import threads

from pxed.agent.client import Client
from pxed.agent.report import Reporter
from tests.agent.conftest import data, disk_file, version_file
from tests.helpers import MAC, MIB, machine_token, queued

HARD = 'quote " backslash \\ tab\there\nsecond line — snowman ☃, emoji 🚀, \u2028 and \x00\x1b end'


@pytest_twisted.ensureDeferred
async def test_log_lines_reach_pxed_as_written(server):
    await queued(server)
    token = await machine_token(server)
    console = io.StringIO()
    reporter = Reporter(Client(server.url, token), MAC, out=console)

    await threads.deferToThread(reporter.warning, HARD)

    r = await server.admin.get(f"/machine/{MAC}/logs")
    [line] = [x for x in r.json() if "snowman" in x["Message"]]
    # Control characters other than tab and newline are dropped, the rest kept.
    assert line["Message"] == HARD.replace("\x00", "").replace("\x1b", "")
    assert line["Level"] == "warning" and line["Origin"] == "mgmtos"
    assert console.getvalue().startswith('pxed-agent: warning: quote " backslash')
    assert "pxed-agent: second line — snowman ☃" in console.getvalue()


@pytest_twisted.ensureDeferred
async def test_the_token_never_appears_in_the_agents_output(machine_with, server, tmp_path):
    machine, [(uuid, version)] = await machine_with([(data(2 * MIB), "none", False)])
    with open(version_file(server, uuid, version), "r+b") as f:
        f.write(b"damaged")
    disk = disk_file(tmp_path / "disk", 4 * MIB)

    run = await machine.agent([disk], "--debug")

    assert run.code == 1 and "sha256 mismatch" in run.output
    assert machine.token not in run.output
    assert machine.token[8:24] not in run.output
    for message in await machine.logs():
        assert machine.token not in message
