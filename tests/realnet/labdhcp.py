"""The lab's own DHCP server: a dnsmasq of the test's (not pxed's) in the
lab's DHCP namespace, as a lab runs one.  It serves either of two
configurations:

- ``plain``: addresses only, as a lab whose DHCP server knows nothing of
  netbooting; PXE clients then depend on pxed's proxyDHCP.
- ``standalone``: addresses and what ``pxed-admin boot-network-config``
  tells a lab to add: TFTP of Debian's iPXE, undionly.kpxe to BIOS PXE,
  snponly.efi to UEFI PXE (option 93), pxed's /boot/snponly.efi over HTTP
  to UEFI HTTP boot (vendor class HTTPClient), and the chain URL pxed's
  /ipxe to iPXE (user class iPXE): a lab that keeps netbooting in its own
  DHCP server and points it at pxed.

Neither hands out a router or DNS server: the VMs get an address on the
lab's subnet and nothing beyond it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import require_tool
from tests.realnet import lab

IPXE_DIR = Path("/usr/lib/ipxe")  # Debian's ipxe package


def plain(leases: Path) -> str:
    """Addresses from the lab's pool, nothing else."""
    return "\n".join(
        [
            "port=0",  # no DNS
            "user=root",
            f"interface={lab.LAB_INTERFACE}",
            "bind-interfaces",
            f"dhcp-range={lab.POOL[0]},{lab.POOL[1]},{lab.SUBNET.netmask},1h",
            f"dhcp-leasefile={leases}",
            "dhcp-authoritative",
            # Offer at once: no ping of the address first (seconds each).
            "no-ping",
            # An empty option 3: no default route for anyone.
            "dhcp-option=3",
            "log-dhcp",
            "",
        ]
    )


def standalone(leases: Path, pxed_url: str) -> str:
    """*plain*, and the lines ``pxed-admin boot-network-config`` gives a lab
    for its own dnsmasq, pointing at pxed at *pxed_url*."""
    done = subprocess.run(
        [sys.executable, "-m", "pxed.admin", "boot-network-config", "--url", pxed_url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return plain(leases) + done.stdout


class LabDHCP:
    """The lab's dnsmasq, (re)started with a configuration by ``serve``;
    its log (every packet's tags and options, log-dhcp) in *workdir*."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "lab-dhcp.log"
        self.config = ""
        self._proc: subprocess.Popen | None = None

    # Each configuration is a lab of its own, with leases of its own.  With
    # one file for both, the proxy scenarios' leases moved the standalone
    # VMs' addresses (dnsmasq picks by the MAC's hash, skipping leased ones)
    # until two VMs booting together were offered the same one: the second
    # REQUEST got a NAK, "address in use", and OVMF's HTTP boot does not
    # start over after a NAK, it gives up ("Could not retrieve NBP file size").
    def serve_plain(self) -> None:
        self.serve(plain(self.workdir / "leases-plain"))

    def serve_standalone(self, pxed_url: str) -> None:
        self.serve(standalone(self.workdir / "leases-standalone", pxed_url))

    def serve(self, config: str) -> None:
        """Answer with *config* from now on (restarting the server only if
        it is a different one)."""
        if self._proc is not None and self._proc.poll() is None and config == self.config:
            return
        self.stop()
        self.config = config
        conf = self.workdir / "lab-dhcp.conf"
        conf.write_text(config)
        dnsmasq = require_tool("dnsmasq", "dnsmasq-base")
        started = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as out:
            self._proc = subprocess.Popen(
                lab.netns_exec(
                    lab.DHCP,
                    dnsmasq,
                    "--keep-in-foreground",
                    "--log-facility=-",
                    f"--conf-file={conf}",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while "DHCP, sockets bound" not in self.log.read_text(errors="replace")[started:]:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the lab's dnsmasq did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        self._proc = None
