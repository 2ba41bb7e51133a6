"""An IPMI BMC for tests: pyghmi's BMC server (``pyghmi.ipmi.bmc.Bmc``,
IPMI 2.0 lanplus over UDP, with RAKP authentication) whose chassis is a
QEMU VM (pxed.testing.vm): chassis power on/off/cycle/reset start and stop
the VM, chassis bootdev sets its next boot.

    python -m pxed.testing.ipmi_bmc --port 6230 --vm vm.json \\
        --username admin --password-file password
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import serversession, session

from pxed.testing.vm import QemuMachine

BOOT_DEVICES = {"network": "pxe", "hd": "disk"}
# RMCP+ status code: invalid authentication algorithm (IPMI 2.0, table 13-15).
INVALID_AUTH_ALGORITHM = 0x11


class SHA1Session(serversession.ServerSession):
    """pyghmi's server session only does cipher suite 3 (HMAC-SHA1) but
    accepts any proposal, so a client proposing SHA-256 first (pyghmi's
    own, ipmitool's suite 17) computes its keys with the wrong hash.  A
    real BMC refuses an algorithm it lacks, and the client then proposes
    the next: this one does too."""

    def create_open_session_response(self, request):
        # The proposal's authentication payload: its algorithm at byte 12.
        if len(request) >= 13 and request[12] != 1:
            clienttag, console_session = request[0], request[4:8]
            return bytearray([clienttag, INVALID_AUTH_ALGORITHM, 0, 0]) + console_session
        return super().create_open_session_response(request)


serversession.ServerSession = SHA1Session


class QemuBmc(bmc.Bmc):
    def __init__(self, authdata: dict, port: int, vm: QemuMachine) -> None:
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.vm = vm
        self.bootdevice = "default"

    def get_power_state(self) -> str:
        return "on" if self.vm.is_on() else "off"

    def power_on(self) -> None:
        self.vm.power_on()

    def power_off(self) -> None:
        self.vm.power_off()

    def power_shutdown(self) -> None:
        self.vm.power_off()

    def power_cycle(self) -> None:
        self.vm.reset()

    def power_reset(self) -> None:
        self.vm.reset()

    def get_boot_device(self) -> str:
        return self.bootdevice

    def set_boot_device(self, bootdevice: str) -> None:
        # pyghmi's server does not tell persistent from one-time requests:
        # the VM's next boot is the one-time kind (what pxed asks for).
        self.bootdevice = bootdevice
        self.vm.next_boot = BOOT_DEVICES.get(bootdevice)

    def cold_reset(self) -> None:
        raise NotImplementedError

    def is_active(self) -> bool:
        return self.vm.is_on()

    def serve(self) -> None:
        """pyghmi's own loop (``Bmc.listen``) ends the process on the first
        packet its server fails on; a real BMC answers the next one, and
        the test's log says what failed."""
        while True:
            try:
                session.Session.wait_for_rsp(30)
            except Exception:
                traceback.print_exc()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vm", type=Path, required=True)
    parser.add_argument("--username", default="admin")
    # In a file, not on the command line (ps shows every process's).
    parser.add_argument("--password-file", type=Path, required=True)
    args = parser.parse_args(argv)
    password = args.password_file.read_text().strip()
    server = QemuBmc({args.username: password}, args.port, QemuMachine(args.vm))
    print(f"IPMI BMC listening on 127.0.0.1:{args.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
