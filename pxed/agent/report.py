"""What the agent tells: the console (``pxed-agent: ...``), pxed's log of
the machine (POST /log, best effort: never fatal, never blocking the work
for long), and the work's completion (POST /machine/{mac}/boot/complete,
retried, sent once)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from pxed.agent.client import Client, HTTPError, error_text
from pxed.agent.wire import ERASE_ORIGIN, Complete, LogLine

LOG_TIMEOUT = 10.0
COMPLETE_TRIES = 6
COMPLETE_DELAY = 2.0


class Reporter:
    def __init__(
        self, client: Client | None, mac: str, debug: bool = False, out: TextIO | None = None
    ) -> None:
        self._client = client
        self.mac = mac
        self._debug = debug
        self._out = out or sys.stderr
        self._lock = threading.Lock()
        # Log lines go to pxed only with a credential that may send them
        # (not in enlist mode) and until the completion is sent.
        self.remote = client is not None
        # BootInform answered with work: a completion is due.
        self.can_complete = False
        self.completed = False

    def console(self, message: str) -> None:
        with self._lock:
            for line in message.splitlines() or [""]:
                print(f"pxed-agent: {line}", file=self._out, flush=True)

    def log(self, level: str, message: str, origin: str = "mgmtos") -> None:
        if level == "debug" and not self._debug:
            return
        self.console(message if level == "info" else f"{level}: {message}")
        if not self.remote or self.completed or self._client is None:
            return
        try:
            self._client.request(
                "POST", "/log", LogLine(level, message, origin).to_json(), timeout=LOG_TIMEOUT
            )
        except (OSError, HTTPError) as e:
            if self._debug:
                self.console(f"debug: the log line did not reach pxed: {e}")

    def info(self, message: str) -> None:
        self.log("info", message)

    def erase_step(self, message: str) -> None:
        """A line pxed also keeps as an event of the machine (an erase's
        steps: who wiped which disk, and how, outlives the log)."""
        self.log("info", message, ERASE_ORIGIN)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    def complete(self, success: bool, message: str) -> bool:
        """Report the end of the work once; whether pxed took it."""
        if self.completed:
            return False
        self.completed = True
        if not self.can_complete or self._client is None:
            return False
        body = Complete(success, message).to_json()
        last = ""
        for attempt in range(COMPLETE_TRIES):
            if attempt:
                time.sleep(COMPLETE_DELAY)
            try:
                self._client.request("POST", f"/machine/{self.mac}/boot/complete", body)
            except HTTPError as e:
                if e.status < 500:
                    last = f"HTTP {e.status}: {error_text(e.body)}"
                    break  # refused: asking again changes nothing
                last = str(e)
            except OSError as e:
                last = str(e)
            else:
                self.console(f"reported to pxed: Success={str(success).lower()}")
                return True
        self.console(f"error: could not report completion ({last})")
        return False
