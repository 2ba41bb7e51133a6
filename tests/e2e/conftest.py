"""End to end: QEMU (TCG, no KVM) with Debian's iPXE ROMs netboots from a
pxed on loopback into the reference management OS (pxed/mgmtos/), which
really writes the VM's disk files.  The ``qemu`` and ``mgmtos`` fixtures and
``run_vm`` are in tests/vmfixtures.py, shared with tests/realnet."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytest_twisted

from tests import debianimage
from tests.helpers import missing, require_tool
from tests.vmfixtures import MGMTOS_CMDLINE

# The Debian image build (tests/debianimage.py) takes minutes, mostly
# waiting on deb.debian.org and dpkg: it starts with the first test here,
# if one of the session's tests takes the ``debian_image`` fixture
# (tests/e2e/test_cloud_init.py), runs beside the others and is waited for
# by those, which run last for that.  The first test here, not the
# collection: each xdist worker collects every test, but only the one that
# runs the QEMU group (tests/conftest.py) boots the image.
DEBIAN_IMAGE_TIMEOUT = 1500


def pytest_collection_modifyitems(config, items):
    """Every test here is ``e2e`` (see tests/conftest.py); the tests that
    boot the Debian image go to the end of the run, so that its build
    overlaps everything else."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    last = [item for item in items if _boots_debian(item)]
    if last:
        items[:] = [item for item in items if not _boots_debian(item)] + last


def _boots_debian(item) -> bool:
    return "debian_image" in getattr(item, "fixturenames", ())


def _image_dir(config) -> Path:
    """Where the image is built: the pytest cache (so a second run in the
    same tree boots the first one's build), under a name that changes with
    tests/debianimage.py, so that a changed recipe builds anew."""
    recipe = hashlib.sha256(Path(debianimage.__file__).read_bytes()).hexdigest()[:12]
    name = f"pxed-debian-image-{recipe}"
    if getattr(config, "cache", None) is None:
        return Path(tempfile.mkdtemp(prefix=f"{name}-"))
    out = Path(config.cache.mkdir(name))
    # An older recipe's build (some 150 MB) is of no use any more.
    for stale in out.parent.glob("pxed-debian-image-*"):
        if stale != out:
            shutil.rmtree(stale, ignore_errors=True)
    return out


def pytest_runtest_setup(item):
    """Starts the build when a selected test needs it (after -k and -m),
    at the first test here that this process runs."""
    session = item.session
    if _BUILD in session.config.stash:
        return
    session.config.stash[_BUILD] = None
    if not any(_boots_debian(other) for other in session.items):
        return
    out = _image_dir(session.config)
    log = open(out / "subprocess.log", "ab")
    # Niced: the tests beside it keep their share of the two cores.
    proc = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, "-m", "tests.debianimage", str(out)],
        cwd=Path(__file__).parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # Its own process group: stopping it stops debootstrap's dpkg too.
        start_new_session=True,
    )
    log.close()
    session.config.stash[_BUILD] = (proc, out, time.monotonic())


_BUILD = pytest.StashKey["tuple | None"]()


def pytest_unconfigure(config):
    """A build still running when the session ends (the test was
    interrupted) is stopped; the next run starts it over."""
    started = config.stash.get(_BUILD, None)
    if started and started[0].poll() is None:
        _stop(started[0])


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def debian_image(request) -> tuple[Path, dict]:
    """The built image (``disk.img.zst``) and its figures (built.json),
    once the build the session started has ended."""
    require_tool("debootstrap", "debootstrap")
    started = request.config.stash.get(_BUILD, None)
    if started is None:
        pytest.fail("the Debian image build was not started (pytest_runtest_setup)")
    proc, out, since = started
    try:
        proc.wait(timeout=max(1.0, DEBIAN_IMAGE_TIMEOUT - (time.monotonic() - since)))
    except subprocess.TimeoutExpired:
        _stop(proc)
    figures = debianimage.finished(out)
    if proc.returncode != 0 or figures is None:
        log = (
            (out / "build.log").read_text(errors="replace") if (out / "build.log").exists() else ""
        )
        sub = (out / "subprocess.log").read_text(errors="replace")
        missing(f"the Debian image build failed ({proc.returncode}): {sub[-1500:]}\n{log[-2500:]}")
    figures = dict(figures, waited_seconds=round(time.monotonic() - since, 1))
    return out / "disk.img.zst", figures


@pytest.fixture
def start_netboot(start_server, mgmtos):
    """Starts pxed with the management OS; the VM reaches it as 10.0.2.2
    (QEMU's user networking), and boot URLs come from the Host header the
    VM uses."""

    async def start(**settings):
        server = await start_server(
            static_dir=str(mgmtos),
            config_text=f'[mgmtos.x86_64]\ncmdline = "{MGMTOS_CMDLINE}"\n',
            **settings,
        )
        server.port = int(server.url.rsplit(":", 1)[1])
        return server

    return start


@pytest_twisted.async_yield_fixture
async def netboot_server(start_netboot):
    yield await start_netboot()


@pytest.fixture
def database() -> str:
    """The VMs' pxed keeps its data on SQLite only: these tests are about
    netbooting real machines, which the API tests already cover on both
    databases (tests/conftest.py)."""
    return "sqlite"
