"""Telling formats apart and converting them with Debian's qemu-img and
python's lzma, on the disks of tests/imports/origin.py."""

from __future__ import annotations

import hashlib
import lzma
import subprocess
import threading

import pytest

from pxed.imports import formats
from tests.helpers import require_tool
from tests.imports.origin import DISK_SIZE, raw_disk


def test_formats_are_told_apart_by_their_first_bytes(disks):
    assert formats.detect_file(disks["raw"]) == formats.RAW
    assert formats.detect_file(disks["qcow2"]) == formats.QCOW2
    assert formats.detect_file(disks["xz"]) == formats.XZ
    assert formats.detect(b"\x1f\x8b\x08\x00") == formats.GZIP
    assert formats.detect(b"\x28\xb5\x2f\xfd\x00") == formats.ZSTD
    assert formats.detect(b"") == formats.RAW


@pytest.mark.parametrize("fmt", ["qcow2", "xz"])
def test_converted_to_the_raw_disk_with_its_sha256(disks, tmp_path, fmt):
    out = tmp_path / "out.img"
    size, sha256 = formats.convert(fmt, disks[fmt], out, DISK_SIZE, threading.Event())
    assert out.read_bytes() == raw_disk()
    assert (size, sha256) == (DISK_SIZE, hashlib.sha256(raw_disk()).hexdigest())


@pytest.mark.parametrize("fmt", ["qcow2", "xz"])
def test_a_disk_larger_than_the_limit_is_refused(disks, tmp_path, fmt):
    with pytest.raises(formats.TooLarge):
        formats.convert(fmt, disks[fmt], tmp_path / "out.img", DISK_SIZE - 1, threading.Event())


def test_a_qcow2_naming_a_backing_file_is_refused(disks, tmp_path):
    # The server would copy a file of its own choosing into the image.
    with pytest.raises(formats.ConversionError, match="backing file"):
        formats.convert(
            "qcow2", disks["backed"], tmp_path / "out.img", DISK_SIZE, threading.Event()
        )


def test_damaged_and_cut_off_xz_is_refused(tmp_path):
    whole = lzma.compress(raw_disk(), format=lzma.FORMAT_XZ)
    cut = tmp_path / "cut.xz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(formats.ConversionError, match="cut off"):
        formats.convert("xz", cut, tmp_path / "out.img", DISK_SIZE, threading.Event())
    damaged = tmp_path / "damaged.xz"
    damaged.write_bytes(whole[:100] + bytes(200) + whole[300:])
    with pytest.raises(formats.ConversionError, match="damaged"):
        formats.convert("xz", damaged, tmp_path / "out.img", DISK_SIZE, threading.Event())


def test_concatenated_xz_streams_are_one_file(tmp_path):
    two = tmp_path / "two.xz"
    two.write_bytes(lzma.compress(b"a" * 1000) + lzma.compress(b"b" * 1000))
    size, _ = formats.convert("xz", two, tmp_path / "out.img", DISK_SIZE, threading.Event())
    assert (tmp_path / "out.img").read_bytes() == b"a" * 1000 + b"b" * 1000
    assert size == 2000


def test_a_cancelled_conversion_stops(disks, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(formats.Cancelled):
        formats.convert("qcow2", disks["qcow2"], tmp_path / "out.img", DISK_SIZE, cancel)


@pytest.mark.parametrize(("fmt", "options"), [("vmdk", []), ("vhdx", []), ("qcow2", ["-c"])])
def test_vmdk_vhdx_and_compressed_qcow2_are_converted(disks, tmp_path, fmt, options):
    qemu_img = require_tool("qemu-img", "qemu-utils")
    made = tmp_path / f"disk.{fmt}"
    subprocess.run(
        [qemu_img, "convert", *options, "-f", "raw", "-O", fmt, str(disks["raw"]), str(made)],
        check=True,
    )
    assert formats.detect_file(made) == fmt
    out = tmp_path / "out.img"
    size, sha256 = formats.convert(fmt, made, out, DISK_SIZE, threading.Event())
    assert out.read_bytes() == raw_disk()
    assert (size, sha256) == (DISK_SIZE, hashlib.sha256(raw_disk()).hexdigest())


def test_a_vmdk_whose_data_is_in_another_file_is_refused(tmp_path):
    qemu_img = require_tool("qemu-img", "qemu-utils")
    descriptor = tmp_path / "flat.vmdk"
    subprocess.run(
        [
            qemu_img,
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            str(descriptor),
            str(DISK_SIZE),
        ],
        check=True,
    )
    assert formats.detect_file(descriptor) == formats.VMDK
    with pytest.raises(formats.ConversionError, match="other files"):
        formats.convert("vmdk", descriptor, tmp_path / "out.img", DISK_SIZE, threading.Event())
