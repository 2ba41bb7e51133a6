"""The agent's steps in order, and the step in progress, which every
failure reports with its reason:

1. the machine's facts; in enlist mode only the inventory, sent with the
   enlistment credential, and that is all;
2. BootInform (retried while the network comes up; 404: no work, nothing
   reported), then the inventory (every boot, work or not);
3. the disks (see disks.py for the mapping rule);
4. captures: each image flagged Update, from its disk;
5. the erase BootInform asks for, of every disk (erase.py);
6. deploys: each image to its disk, sha256 and size verified;
7. the machine image;
8. the completion: Success true, or false with the step and the reason of
   any failure -- any exception anywhere, so the work is never reported
   done when it is not."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TextIO

from pxed.agent import (
    capture,
    deploy,
    disks,
    erase,
    facts,
    grow,
    hints,
    inform,
    inventory,
    machineimage,
    seed,
)
from pxed.agent.client import Client, HTTPError, Unreachable, error_text
from pxed.agent.config import Settings
from pxed.agent.errors import Failed
from pxed.agent.facts import Disk, Facts, FactsError
from pxed.agent.report import Reporter
from pxed.agent.wire import Erase


class Interrupted(BaseException):
    pass


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def addresses() -> str:
    """This machine's global IPv4 addresses, for the first log line."""
    try:
        done = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = [line.split()[3] for line in done.stdout.splitlines() if len(line.split()) > 3]
    return " ".join(found) or "none"


class Agent:
    def __init__(self, settings: Settings, out: TextIO | None = None) -> None:
        self.settings = settings
        self.client = Client(settings.url, settings.token)
        self.report = Reporter(self.client, settings.mac, settings.debug, out)
        self.step = "starting"

    def run(self) -> int:
        """Everything; the exit status (0: done or no work)."""
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                try:
                    signal.signal(sig, _interrupted)
                except ValueError:  # not the main thread: the caller handles signals
                    break
        try:
            return self._run()
        except Failed as e:
            return self._fail(str(e))
        except Interrupted as e:
            return self._fail(f"interrupted ({e})")
        except KeyboardInterrupt:
            return self._fail("interrupted (SIGINT)")
        except BaseException as e:
            return self._fail(f"the agent stopped unexpectedly: {type(e).__name__}: {e}")

    def _fail(self, reason: str) -> int:
        message = f"{self.step}: {reason}"
        self.report.error(message)
        self.report.complete(False, message)
        return 1

    def _run(self) -> int:
        s = self.settings
        self.step = "gathering the machine's facts"
        try:
            found = facts.load(s.facts, s.disks)
        except FactsError as e:
            raise Failed(str(e)) from None
        if s.mode == "enlist":
            # The enlistment credential can do nothing else: no log lines.
            self.report.remote = False
        self.report.info(
            f"management OS up: kernel {found.kernel}, MAC {s.mac}, pxed at {s.url}, "
            f"address(es) {addresses()}"
        )
        if s.mode == "enlist":
            return self._enlist(found)
        return self._work(found)

    def _enlist(self, found: Facts) -> int:
        s = self.settings
        self.step = "enlisting"
        self.report.console(f"enlist mode: sending this machine's inventory to {s.url}")
        body = inventory.build(self._with_disks(found))
        for attempt in range(1, s.connect_tries + 1):
            try:
                inventory.send(self.client, s.mac, body)
            except HTTPError as e:
                self.report.console(
                    f"error: enlisting failed (HTTP {e.status}: {error_text(e.body)})"
                )
                return 1
            except OSError as e:
                if attempt == s.connect_tries:
                    self.report.console(f"error: enlisting failed: {e}")
                    return 1
                self.report.console(f"pxed not reached ({e}); trying again in {s.retry_delay:g} s")
                time.sleep(s.retry_delay)
            else:
                self.report.console("enlisted: the machine waits in pxed for an admin to accept it")
                return 0
        return 1

    def _with_disks(self, found: Facts) -> Facts:
        if found.disks is not None:
            return found
        return replace(found, disks=facts.system_disks())

    def _send_inventory(self, found: Facts) -> None:
        body = inventory.build(self._with_disks(found))
        try:
            inventory.send(self.client, self.settings.mac, body)
        except HTTPError as e:
            self.report.warning(
                f"hardware inventory not accepted (HTTP {e.status}): {error_text(e.body, 300)}"
            )
        except OSError as e:
            self.report.warning(f"hardware inventory not sent: {e}")
        else:
            text = str(body.to_json())
            self.report.info(f"hardware inventory sent: {text[:400]}")

    def _work(self, found: Facts) -> int:
        s = self.settings
        self.step = f"asking pxed for work (GET /machine/{s.mac}/boot)"
        try:
            work = inform.ask(
                self.client, s.mac, s.connect_tries, s.retry_delay, self.report.console
            )
        except Unreachable as e:
            self.report.console(f"error: pxed at {s.url} is unreachable: {e}")
            self.report.completed = True
            return 1
        except inform.NoWork as e:
            self._send_inventory(found)
            self.report.info(f"no work for this machine ({e}): nothing to do")
            self.report.completed = True
            return 0
        except Failed:
            self.report.can_complete = True  # the work, if any, is in progress now
            raise
        self.report.can_complete = True
        self._send_inventory(found)
        count = len(work.disk_images)
        self.report.info(f"work {work.id} (setup {work.name}): {count} image(s)")

        self.step = "finding the disks"
        # An erase wants every disk: wait for one at least (they probe late).
        need = max(work.disks_needed, 1 if work.erase is not None else 0)
        found_disks = disks.find(found.disks, need, s.disk_wait)
        self.report.info(f"disks: {disks.describe(found_disks)}")
        if len(found_disks) < work.disks_needed:
            raise Failed(
                f"the setup has {count} image(s) but this machine has {len(found_disks)} "
                f"disk(s) ({' '.join(d.path for d in found_disks) or 'none'}); images go to "
                f"disks in kernel name order, one each"
            )

        try:
            targets = hints.pick([(e.disk, e.disk_hints) for e in work.disk_images], found_disks)
        except hints.NoDisk as e:
            raise Failed(f"{e}; nothing was written") from None
        for entry, disk in zip(work.disk_images, targets, strict=True):
            if entry.disk_hints is not None:
                self.report.info(
                    f"{entry.name} ({entry.uuid}) goes to {disk.path}: the one disk matching "
                    f"its root device hints {entry.disk_hints.describe()}"
                )

        captured = []
        for entry, disk in zip(work.disk_images, targets, strict=True):
            if not entry.update:
                continue
            self.step = f"capturing image {entry.name} ({entry.uuid}) from {disk.path}"
            self.report.info(
                f"capturing {disk.path} ({disk.size} bytes, {entry.compression}) "
                f"into image {entry.name} ({entry.uuid})"
            )
            c = capture.capture(self.client, entry, disk)
            version = c.answer.version if c.answer.version is not None else "?"
            self.report.info(
                f"captured {entry.uuid} v{version}: {c.size} bytes from {disk.path} in "
                f"{c.seconds:.2f} s ({c.rate}), {c.answer.size or c.sent} bytes stored "
                f"({c.strategy}), sha256 {c.sha256}"
            )
            captured.append(f"{entry.name} v{version} <- {disk.path}")

        if work.erase is not None:
            self._erase(work.erase, found_disks, list(targets))

        deployed = []
        started = time.monotonic()
        for entry, disk in zip(work.disk_images, targets, strict=True):
            self.step = (
                f"deploying image {entry.name} ({entry.uuid}) v{entry.version} to {disk.path}"
            )
            self.report.info(
                f"deploying {entry.name} ({entry.uuid}) v{entry.version} ({entry.size} bytes, "
                f"{entry.compression}) to {disk.path} ({disk.size} bytes)"
            )
            d = deploy.deploy(self.client, s.mac, entry, disk)
            extra = (
                f", {d.downloaded} bytes downloaded ({d.strategy})"
                if d.written != d.downloaded
                else ""
            )
            self.report.info(
                f"deployed {entry.uuid} v{entry.version}: {d.written} bytes in {d.seconds:.2f} s "
                f"({d.rate}){extra}, sha256 verified"
            )
            deployed.append(
                f"{entry.name} v{entry.version} -> {disk.path} ({d.written} bytes, {d.rate})"
            )
            if work.erase is not None and work.erase.policy == "full":
                self.step = f"zeroing {disk.path} past image {entry.name}"
                erase.zero_from(disk, d.written, self.report.info)
                self.report.erase_step(f"zeroed {disk.path} from {d.written} bytes to its end")
            if entry.grow:
                self.step = f"growing image {entry.name} on {disk.path}"
                # The seed goes after the grown partition, on the first disk.
                seeded = work.seed_url is not None and disk is targets[0]
                g = grow.grow(disk, reserve=seed.SECTORS if seeded else 0)
                message = (
                    f"grew partition {g.partition} of {disk.path} from {g.old_size} to "
                    f"{g.new_size} bytes"
                )
                self.report.info(message + (f" ({g.note})" if g.note else f", {g.filesystem} too"))
        seconds = time.monotonic() - started

        if work.seed_url is not None and targets:
            self.step = f"writing the cloud-init seed to {targets[0].path}"
            written = seed.write(targets[0], seed.fetch(self.client, work.seed_url))
            self.report.info(
                f"cloud-init seed written to {written.disk} partition {written.partition} "
                f"({written.size} bytes, label cidata)"
            )
            deployed.append(f"cloud-init seed -> {written.disk} partition {written.partition}")

        if work.erase is not None:
            deployed.insert(0, f"{len(found_disks)} disk(s) erased ({work.erase.policy})")

        self.step = "updating the machine image"
        record = machineimage.BootRecord(
            work, found.kernel, "; ".join(deployed), "; ".join(captured)
        )
        self._machine_image(record)

        self.step = "reporting"
        message = f"deployed {count} image(s) in {seconds:.2f} s: {'; '.join(deployed)}"
        if captured:
            message += f"; captured: {'; '.join(captured)}"
        self.report.info(message)
        self.report.complete(True, message)
        return 0

    def _erase(self, order: Erase, found_disks: tuple[Disk, ...], targets: list[Disk]) -> None:
        """Every disk, the ones images go to included (before they do)."""
        if not found_disks:
            raise Failed("this machine has no disk to erase (none found); nothing was erased")
        self.report.erase_step(
            f"erasing {len(found_disks)} disk(s) ({order.policy}): {order.reason or 'asked'}"
        )
        for disk in found_disks:
            # Under full, a disk an image goes to is zeroed past the image
            # once it is written (zero_from), not twice over.
            policy = order.policy
            if policy == "full" and disk in targets:
                policy = "metadata"
            self.step = f"erasing {disk.path} ({policy})"
            self.report.info(f"erasing {disk.path} ({disk.size} bytes, {policy})")
            self.report.erase_step(erase.erase(disk, policy, self.report.info).describe())

    def _machine_image(self, record: machineimage.BootRecord) -> None:
        workdir = self.settings.workdir
        made = None
        if workdir is None:
            made = workdir = Path(tempfile.mkdtemp(prefix="pxed-agent."))
        try:
            machineimage.update(self.client, record, workdir, self.report.info, self.report.warning)
        finally:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
