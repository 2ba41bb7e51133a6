"""The reference for the boot answers: a plain twisted.web resource that
answers every GET with one fixed JSON body, with no routing, no database
and no access log.  ``python bench/plainweb.py PORT BODY_FILE``"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site


class Fixed(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self._body


def main() -> None:
    port, body_file = int(sys.argv[1]), sys.argv[2]
    with open(body_file, "rb") as f:
        body = f.read()
    reactor.listenTCP(port, Site(Fixed(body)), backlog=1024, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
