"""Where clients reach us: the public base URL and whether it is TLS."""

from __future__ import annotations

from twisted.web.iweb import IRequest


class Origin:
    def __init__(self, base_url: str = "") -> None:
        self._base_url = base_url.rstrip("/")

    def base_url(self, request: IRequest) -> str:
        """The public URL machines reach us at: the configured one, else the
        Host the client used (pixiecore and iPXE use the address they were
        given, which is one the machines can reach)."""
        if self._base_url:
            return self._base_url
        scheme = "https" if request.isSecure() else "http"
        host = request.getHeader("host") or request.getHost().host
        return f"{scheme}://{host}"

    def secure(self, request: IRequest) -> bool:
        """Whether cookies get the Secure flag: served over TLS, directly or
        behind a proxy that the base URL says is https."""
        return request.isSecure() or self._base_url.startswith("https://")
