"""A Redfish BMC for tests: sushy-tools' emulator (its real Flask
application: the Redfish resources, the ComputerSystem.Reset action, the
Boot PATCH, HTTP basic authentication) with a systems driver of ours whose
one ComputerSystem is a QEMU VM (pxed.testing.vm).

Why not sushy-tools' libvirt driver: it needs a libvirt daemon running as
root and libvirt-python built against it, and libvirt's user-mode network
cannot hand the VM a boot file URL without QEMU command-line passthrough;
this driver starts QEMU exactly as tests/e2e does.

    python -m pxed.testing.redfish_bmc --port 8000 --vm vm.json \\
        --auth-file htpasswd --system System.Embedded.1
"""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path

from pxed.testing.vm import QemuMachine


def make_driver(vm: QemuMachine, system: str):
    # Imported here: the module is also read (for its docstring, by tests
    # that only need the command) where sushy-tools is not installed.
    from sushy_tools import error
    from sushy_tools.emulator.resources.systems.base import AbstractSystemsDriver

    system_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pxed-test/{system}"))

    class QemuSystemsDriver(AbstractSystemsDriver):
        """One system, named *system*: the VM."""

        def __init__(self) -> None:
            # The Boot override target shown (the VM keeps the one-boot one).
            self._boot = "Hdd"

        def _check(self, identity: str) -> None:
            if identity not in (system, system_uuid):
                raise error.NotFound(f"no system {identity}")

        @property
        def driver(self) -> str:
            return "<pxed qemu>"

        @property
        def systems(self) -> list[str]:
            return [system]

        def uuid(self, identity):
            self._check(identity)
            return system_uuid

        def name(self, identity):
            self._check(identity)
            return system

        def get_power_state(self, identity):
            self._check(identity)
            return "On" if vm.is_on() else "Off"

        def set_power_state(self, identity, state):
            self._check(identity)
            if state in ("On", "ForceOn"):
                vm.power_on()
            elif state in ("ForceOff", "GracefulShutdown"):
                vm.power_off()
            elif state in ("ForceRestart", "GracefulRestart", "PowerCycle"):
                vm.reset()
            else:
                raise error.NotSupportedError(f"ResetType {state} is not supported")

        def get_boot_device(self, identity):
            self._check(identity)
            return self._boot

        def set_boot_device(self, identity, boot_source):
            self._check(identity)
            targets = {"Pxe": "pxe", "Hdd": "disk"}
            if boot_source not in targets:
                raise error.BadRequest(f"BootSourceOverrideTarget {boot_source} not supported")
            self._boot = boot_source
            vm.next_boot = targets[boot_source]

        def get_boot_mode(self, identity):
            return "Legacy"

        def set_boot_mode(self, identity, boot_mode):
            raise error.NotSupportedError("boot mode")

        def get_total_memory(self, identity):
            return 1

        def get_total_cpus(self, identity):
            return 1

        def get_bios(self, identity):
            raise error.NotSupportedError("BIOS")

        def set_bios(self, identity, attributes):
            raise error.NotSupportedError("BIOS")

        def reset_bios(self, identity):
            raise error.NotSupportedError("BIOS")

        def get_nics(self, identity):
            return []

        def get_boot_image(self, identity, device):
            return None, False, False

        def set_boot_image(self, identity, device, boot_image=None, write_protected=True):
            raise error.NotSupportedError("virtual media")

        def get_simple_storage_collection(self, identity):
            raise error.NotSupportedError("storage")

    # sushy-tools' abstract methods vary with its version: any not written
    # above is not supported by this machine.
    for name in getattr(QemuSystemsDriver, "__abstractmethods__", ()):

        def unsupported(self, *args, _name=name, **kwargs):
            raise error.NotSupportedError(_name)

        setattr(QemuSystemsDriver, name, unsupported)
    QemuSystemsDriver.__abstractmethods__ = frozenset()
    return QemuSystemsDriver()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vm", type=Path, required=True)
    parser.add_argument("--auth-file", type=Path, required=True)
    parser.add_argument("--system", default="System.Embedded.1")
    parser.add_argument("--state-dir", type=Path)
    # HTTPS with this certificate and key (PEM files), as a real BMC.
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    args = parser.parse_args(argv)
    from sushy_tools.emulator import main as emulator

    driver = make_driver(QemuMachine(args.vm), args.system)
    # The application's systems driver, chosen by its config among its
    # own, is ours instead.
    emulator.Application.systems = property(lambda self: driver)
    config = {"SUSHY_EMULATOR_AUTH_FILE": str(args.auth_file)}
    if args.state_dir is not None:
        config["SUSHY_EMULATOR_STATE_DIR"] = str(args.state_dir)
    emulator.app.configure(extra_config=config)
    logging.basicConfig(level=logging.INFO)
    tls = (str(args.tls_cert), str(args.tls_key)) if args.tls_cert else None
    emulator.app.run(host="127.0.0.1", port=args.port, threaded=False, ssl_context=tls)


if __name__ == "__main__":
    main()
