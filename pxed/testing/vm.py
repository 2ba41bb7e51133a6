"""A QEMU virtual machine as a BMC sees it: powered on (a QEMU process),
off (none), reset, and a next-boot device that holds for one boot only.
The BMC emulators (``redfish_bmc.py``, ``ipmi_bmc.py``) drive one each;
the tests read its state and serial log as the machine's ground truth.

Its description is a JSON file (written by the test): ``qemu`` (the
binary), ``args`` (everything but the boot order), ``state_dir`` (where
the pid file and the log of power events go)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

BOOT_ORDER = {"pxe": "n", "disk": "c"}


class QemuMachine:
    def __init__(self, description: Path) -> None:
        spec = json.loads(Path(description).read_text())
        self._qemu: str = spec["qemu"]
        self._args: list[str] = spec["args"]
        self._state_dir = Path(spec["state_dir"])
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        # The device of the next boot only ("pxe"/"disk"), as a BMC's
        # BootSourceOverrideEnabled=Once / IPMI's non-persistent bootdev.
        self.next_boot: str | None = None

    def _record(self, what: str) -> None:
        """A line in power.log: the tests read what the BMC did, and when."""
        with open(self._state_dir / "power.log", "a") as f:
            f.write(f"{time.time():.3f} {what}\n")

    def is_on(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def power_on(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            once = self.next_boot
            self.next_boot = None
            # order=c: the disk; once=n: the network for this boot only (a
            # guest reboot goes to the disk).
            boot = "order=c" + (f",once={BOOT_ORDER[once]}" if once else "")
            args = [self._qemu, *self._args, "-boot", boot]
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            (self._state_dir / "qemu.pid").write_text(f"{self._process.pid}\n")
        self._record(f"on boot={once or 'default'} pid={self._process.pid}")

    def power_off(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # A hard power off: the guest gets no say.
        process.send_signal(signal.SIGKILL)
        process.wait()
        with_pid = self._state_dir / "qemu.pid"
        if with_pid.exists():
            with_pid.unlink()
        self._record(f"off pid={process.pid}")

    def reset(self) -> None:
        self.power_off()
        self.power_on()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
