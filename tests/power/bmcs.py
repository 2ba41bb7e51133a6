"""BMCs for the power tests, each a real protocol server in a subprocess
driving a real QEMU VM (pxed.testing): sushy-tools' Redfish emulator and
pyghmi's IPMI BMC; and BMCs that never answer (scenario d)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import IN_CI, MAC, free_port, missing, require_tool

ROOT = Path(__file__).parent.parent.parent
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
SYSTEM = "System.Embedded.1"


def password() -> str:
    """A BMC password no test could find by accident (IPMI's are at most
    20 bytes)."""
    return f"Pw-{secrets.token_hex(8)}"


@dataclass
class BMC:
    """A BMC subprocess and the VM behind it."""

    process: subprocess.Popen
    driver: str
    address: str
    username: str
    password: str
    vm_dir: Path
    log: Path

    def settings(self, **more) -> dict:
        """The machine's ``Power`` settings for PUT /machine/{mac}."""
        return {
            "Driver": self.driver,
            "Address": self.address,
            "Username": self.username,
            "Password": self.password,
            **more,
        }

    def power_log(self) -> list[str]:
        """What the VM went through: "on boot=pxe pid=…", "off pid=…"."""
        path = self.vm_dir / "power.log"
        if not path.exists():
            return []
        return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]

    def vm_pid(self) -> int | None:
        path = self.vm_dir / "qemu.pid"
        return int(path.read_text()) if path.exists() else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # The VM, if the BMC left it on.
        pid = self.vm_pid()
        if pid is not None:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def vm_description(tmp: Path, args: list[str]) -> Path:
    """The VM's description (pxed.testing.vm) with QEMU *args*."""
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    path = tmp / "vm.json"
    path.write_text(json.dumps({"qemu": qemu, "args": args, "state_dir": str(tmp / "vm")}))
    return path


def idle_vm(tmp: Path) -> Path:
    """A VM with nothing to boot: cheap to run, enough to power on and off."""
    serial = tmp / "serial.log"
    return vm_description(
        tmp,
        [
            *("-machine", "pc", "-m", "32", "-display", "none", "-monitor", "none"),
            *("-nic", "none", "-serial", f"file:{serial}"),
        ],
    )


def netboot_vm(tmp: Path, pxed_port: int, disk: Path) -> Path:
    """A VM that netboots from pxed on *pxed_port* (QEMU user networking,
    as tests/e2e/conftest.py's run_vm) and has *disk*; it reboots rather
    than exits (no -no-reboot): only its BMC powers it off."""
    if not IPXE_ROM.exists():
        missing(f"{IPXE_ROM} missing: apt-get install ipxe-qemu")
    serial = tmp / "serial.log"
    return vm_description(
        tmp,
        [
            *("-machine", "pc", "-m", "768", "-display", "none", "-monitor", "none"),
            *("-serial", f"file:{serial}"),
            *("-drive", f"file={disk},if=virtio,format=raw,index=0"),
            *("-netdev", f"user,id=n0,bootfile=http://10.0.2.2:{pxed_port}/ipxe"),
            *("-device", f"virtio-net-pci,netdev=n0,mac={MAC}"),
        ],
    )


def _python(module: str, args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def _needs(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        missing(f"{module} not installed: pip install {package} (pip install -e '.[test]')")


def _wait(process: subprocess.Popen, log: Path, ready, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited: {log.read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"{what} did not start: {log.read_text()[-3000:]}")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A BMC's factory certificate: self-signed, for 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idrac-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "bmc.crt", tmp / "bmc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def start_redfish(tmp: Path, vm: Path, tls: bool = False) -> BMC:
    """sushy-tools' emulator on a loopback port, with HTTP basic auth (and
    HTTPS with a self-signed certificate, with *tls*)."""
    _needs("sushy_tools", "sushy-tools")
    import bcrypt

    secret = password()
    auth = tmp / "htpasswd"
    hashed = bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=4)).decode()
    auth.write_text(f"admin:{hashed}\n")
    port = free_port()
    log = tmp / "redfish.log"
    args = ["--port", str(port), "--vm", str(vm), "--auth-file", str(auth), "--system", SYSTEM]
    args += ["--state-dir", str(tmp)]
    context = None
    if tls:
        cert, key = self_signed(tmp)
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
        context = ssl.create_default_context(cafile=str(cert))
    process = _python("pxed.testing.redfish_bmc", args, log)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/redfish/v1/", timeout=2, context=context):  # noqa: S310
                return True
        except OSError:
            return False

    _wait(process, log, ready, "sushy-emulator")
    return BMC(process, "redfish", url, "admin", secret, vm.parent / "vm", log)


def start_ipmi(tmp: Path, vm: Path) -> BMC:
    """pyghmi's BMC on a loopback UDP port."""
    _needs("pyghmi", "pyghmi")
    secret = password()
    secret_file = tmp / "ipmi-password"
    secret_file.write_text(secret)
    port = free_udp_port()
    log = tmp / "ipmi.log"
    args = ["--port", str(port), "--vm", str(vm), "--password-file", str(secret_file)]
    process = _python("pxed.testing.ipmi_bmc", args, log)
    _wait(process, log, lambda: "listening" in log.read_text(), "pyghmi BMC")
    return BMC(process, "ipmi", f"127.0.0.1:{port}", "admin", secret, vm.parent / "vm", log)


def free_udp_port() -> int:
    """A loopback UDP port nobody listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(bmc: BMC) -> Iterator[BMC]:
    try:
        yield bmc
    finally:
        bmc.stop()


__all__ = ["BMC", "IN_CI", "idle_vm", "netboot_vm", "running", "start_ipmi", "start_redfish"]
