"""The agent's parts that need no server: its settings, the wire types
against a real BootInform, and the decoders on streams that end early."""

from __future__ import annotations

import gzip

import pytest
import pytest_twisted
import zstandard

from pxed.agent import compression, config
from pxed.agent.wire import BootInform, Complete, LogLine
from tests.agent.conftest import data
from tests.helpers import MAC, MIB, machine_client, queued


def settings(*argv: str, cmdline: str = "", env: dict | None = None, tmp=None):
    path = tmp / "cmdline"
    path.write_text(cmdline)
    return config.settings([*argv, "--cmdline", str(path)], env or {})


def test_settings_from_a_kernel_command_line(tmp_path):
    s = settings(
        cmdline="quiet pxed.url=http://10.0.2.2:4848/ pxed.mac=52-54-00-AB-CD-EF "
        "pxed.token=pxe_abc pxed.mode=enlist pxed.after=poweroff pxed.debug=1",
        tmp=tmp_path,
    )
    assert (s.url, s.mac, s.token) == ("http://10.0.2.2:4848", "52:54:00:ab:cd:ef", "pxe_abc")
    assert (s.mode, s.after, s.debug) == ("enlist", "poweroff", True)
    assert "pxe_abc" not in repr(s)
    # An unknown pxed.after reboots, as the management OS always did.
    s = settings(cmdline="pxed.url=http://x pxed.mac=" + MAC + " pxed.token=t pxed.after=stay",
                 tmp=tmp_path)  # fmt: skip
    assert s.after == "reboot" and s.mode == "deploy" and s.debug is False


def test_flags_win_and_the_token_may_come_from_the_environment(tmp_path):
    s = settings(
        "--url", "https://pxed.example/", "--mac", MAC, "--after", "exit",
        env={"PXED_TOKEN": "pxe_env"}, cmdline="pxed.url=http://other pxed.token=pxe_cmd",
        tmp=tmp_path,
    )  # fmt: skip
    assert (s.url, s.token, s.after) == ("https://pxed.example", "pxe_env", "exit")


@pytest.mark.parametrize(
    ("cmdline", "reason"),
    [
        ("pxed.mac=52:54:00:12:34:56 pxed.token=t", "missing: pxed.url"),
        ("pxed.url=http://x pxed.token=t", "missing: pxed.mac"),
        ("pxed.url=http://x pxed.mac=52:54:00:12:34:56", "missing: pxed.token"),
        ("pxed.url=ftp://x pxed.mac=52:54:00:12:34:56 pxed.token=t", "not an http(s) URL"),
        ("pxed.url=http://x pxed.mac=52:54:00:12:34 pxed.token=t", "not a MAC address"),
        ("pxed.url=http://x pxed.mac=52:54:00:12:34:56 pxed.token=t pxed.mode=x", "pxed.mode=x"),
    ],
)
def test_bad_command_lines_are_refused_with_the_reason(tmp_path, cmdline, reason):
    with pytest.raises(config.ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        settings(cmdline=cmdline, tmp=tmp_path)


@pytest_twisted.ensureDeferred
async def test_the_wire_types_read_a_real_boot_inform(server):
    await queued(server)
    agent = await machine_client(server)
    answer = (await agent.get(f"/machine/{MAC}/boot")).json()

    work = BootInform.from_json(answer)

    assert work.id == answer["ID"] and work.setup_uuid == answer["SetupUUID"]
    [entry] = work.disk_images
    assert entry.disk == 0 and entry.uuid == answer["Images"][0]["Image"]["UUID"]
    assert entry.size == MIB and entry.sha256 == answer["Images"][0]["Sha256"]
    assert entry.url.endswith(f"/image/{entry.uuid}/0")
    assert work.machine_image is not None and work.machine_image.upload_url
    assert work.images[-1].disk is None, "the machine image goes to no disk"
    assert work.disks_needed == 1
    assert BootInform.from_json(work.to_json()) == work
    assert Complete(True, "x" * 5000).to_json()["Message"] == "x" * 3900
    assert LogLine("info", "a\x07b").to_json() == {"Level": "info", "Message": "ab",
                                                   "Origin": "mgmtos"}  # fmt: skip


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def feed_all(strategy: str, blob: bytes) -> bytes:
    sink = Sink()
    view = memoryview(blob)
    chunks = (view[i : i + 100_000] for i in range(0, len(blob), 100_000))
    compression.decode(strategy, chunks, sink)
    return bytes(sink.data)


RAW = data(MIB, seed=3) + bytes(4 * MIB)


@pytest.mark.parametrize(
    ("strategy", "blob"),
    [
        ("gzip", gzip.compress(RAW, mtime=0) + gzip.compress(RAW, mtime=0)),
        ("zstd", zstandard.ZstdCompressor().compress(RAW)
         + zstandard.ZstdCompressor(write_checksum=True).compress(RAW)),
    ],
    # Named, not by their bytes: gzip's header holds the time, and xdist's
    # workers must collect the same test ids.
    ids=["gzip", "zstd"],
)  # fmt: skip
def test_decoders_take_several_members_and_refuse_a_truncated_one(strategy, blob):
    assert feed_all(strategy, blob) == RAW + RAW
    for cut in (1, 5, len(blob) // 3):
        with pytest.raises(compression.DecodeError, match="truncated"):
            feed_all(strategy, blob[:-cut])
    with pytest.raises(compression.DecodeError, match=f"not (valid )?{strategy} data"):
        feed_all(strategy, b"\x00" * 64 + blob)
