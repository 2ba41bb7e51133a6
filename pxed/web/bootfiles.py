"""iPXE's binaries over HTTP, at /boot/<file>: what UEFI HTTP boot
firmware downloads (pxed's proxyDHCP, or the lab's DHCP server, hands it
``<url>/boot/snponly.efi``).  Debian's files from boot_dhcp_ipxe_dir,
streamed with Range and HEAD as /static/ is; like the other boot routes,
only to clients on ``boot_networks``."""

from __future__ import annotations

from pathlib import Path

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxed.boot import networks
from pxed.bootnet.dnsmasqconf import FILES
from pxed.errors import Forbidden, NotFound
from pxed.web.router import route
from pxed.web.static import StaticFiles


class BootFilesResource:
    def __init__(self, ipxe_dir: Path, boot_networks: tuple[str, ...]) -> None:
        self._dir = ipxe_dir
        self._networks = networks.networks(boot_networks)

    @route("/boot/<name>", ["GET", "HEAD"], access="public")
    async def boot_file(self, request: IRequest, name: str) -> IResource:
        if not networks.on_network(networks.client_address(request), self._networks):
            raise Forbidden("not on a boot network (boot_networks)")
        if name not in FILES:
            raise NotFound(f"no boot file {name!r} (there are: {', '.join(FILES)})")
        path = self._dir / name
        if not path.is_file():
            raise NotFound(f"{path} is not there (Debian's iPXE: apt-get install ipxe)")
        return StaticFiles(str(path.resolve()))
