"""The agent's last act: the management OS reboots (into what it wrote) or
powers off, after sync; on a host it exits."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

COMMANDS = {"reboot": ["reboot", "-f"], "poweroff": ["poweroff", "-f"], "halt": ["poweroff", "-f"]}


def after(mode: str, status: int, say: Callable[[str], None]) -> int:
    """Do *mode* (reboot, poweroff, halt, exit); the exit status if the
    machine is still up after it."""
    os.sync()
    if mode == "exit":
        return status
    say("powering off" if mode in ("poweroff", "halt") else "rebooting")
    try:
        subprocess.run(COMMANDS.get(mode, COMMANDS["reboot"]), timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        say(f"error: {mode} failed: {e}")
    # reboot -f does not return when it works; give it the time it takes.
    time.sleep(30)
    return status
