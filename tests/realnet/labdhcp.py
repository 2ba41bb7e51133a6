"""The lab's own DHCP server: a dnsmasq of the test's (not pxed's) in the
lab's DHCP namespace, as a lab runs one.  It serves either of two
configurations:

- ``plain``: addresses only, as a lab whose DHCP server knows nothing of
  netbooting; PXE clients then depend on pxed's proxyDHCP.
- ``standalone``: addresses, TFTP of Debian's iPXE and the boot file by
  client: undionly.kpxe to BIOS PXE, snponly.efi to UEFI PXE (option 93),
  snponly.efi over HTTP from pxed to UEFI HTTP boot (vendor class
  HTTPClient), and the chain URL pxed's /ipxe to iPXE (user class iPXE): a
  lab that keeps netbooting in its own DHCP server and points it at pxed.

Neither hands out a router or DNS server: the VMs get an address on the
lab's subnet and nothing beyond it."""

from __future__ import annotations

import subprocess
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
            # An empty option 3: no default route for anyone.
            "dhcp-option=3",
            "log-dhcp",
            "",
        ]
    )


def standalone(leases: Path, pxed_url: str, efi_url: str) -> str:
    """*plain*, and the netboot chain to pxed at *pxed_url* (UEFI HTTP boot
    clients fetch *efi_url*)."""
    return plain(leases) + "\n".join(
        [
            "enable-tftp",
            f"tftp-root={IPXE_DIR}",
            "dhcp-userclass=set:ipxe,iPXE",
            "dhcp-match=set:bios,option:client-arch,0",
            "dhcp-match=set:efi64,option:client-arch,7",
            "dhcp-match=set:efi64,option:client-arch,9",
            "dhcp-vendorclass=set:http,HTTPClient",
            f"dhcp-boot=tag:ipxe,{pxed_url}/ipxe",
            "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe",
            "dhcp-boot=tag:!ipxe,tag:efi64,tag:!http,snponly.efi",
            # HTTP boot firmware takes an offer only if it says HTTPClient.
            "dhcp-option-force=tag:http,60,HTTPClient",
            f"dhcp-boot=tag:!ipxe,tag:http,{efi_url}",
            "",
        ]
    )


class LabDHCP:
    """The lab's dnsmasq, (re)started with a configuration by ``serve``;
    its log (every packet's tags and options, log-dhcp) in *workdir*."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "lab-dhcp.log"
        self.config = ""
        self._proc: subprocess.Popen | None = None

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
