"""The web dashboard: ``GET /`` its page, ``GET /ui/<file>`` its scripts,
styles and images, files in the package (pxed/web/dashboard/, no build
step).  The files are public; what they show comes from the API, which
authenticates every call (a session cookie, and for changes the CSRF
header).

Every answer carries a strict Content-Security-Policy: only the
dashboard's own scripts and styles run, nothing inline, nothing from
elsewhere, and no page may frame it."""

from __future__ import annotations

from pathlib import Path

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from pxed.web.router import route
from pxed.web.static import StaticFiles

FILES = Path(__file__).with_name("dashboard")

# A resource answering an HTML page (pxed.web.openapi documents it so).
HTMLPage = IResource

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    # Revalidated each time (Last-Modified): a new pxed's files are seen at
    # once, without versioned names.
    b"cache-control": b"no-cache",
}


def _secure(request: IRequest) -> None:
    for name, value in HEADERS.items():
        request.setHeader(name, value)


class DashboardFiles(StaticFiles):
    """The files, with their types named whatever the host's mime.types says
    (``nosniff``: a script served as text/plain would not run)."""

    contentTypes = {
        **StaticFiles.contentTypes,
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
        ".svg": "image/svg+xml",
    }
    # The page is served at / only.
    indexNames: list[str] = []


class DashboardResource:
    def __init__(self, path: Path = FILES) -> None:
        self._files = DashboardFiles(str(path))
        self._index = DashboardFiles(str(path / "index.html"))
        # A file, not a directory: "/" leaves an empty path segment to it.
        self._index.isLeaf = True

    @route("/", ["GET", "HEAD"], access="public")
    async def dashboard(self, request: IRequest) -> HTMLPage:
        """The dashboard's page (HTML): a single page, signed in with an
        API token or GitHub, on the public API."""
        _secure(request)
        return self._index

    @route("/ui/", ["GET", "HEAD"], access="public", branch=True)
    async def dashboard_files(self, request: IRequest) -> IResource:
        """The dashboard's scripts, styles and images."""
        _secure(request)
        return self._files
