#!/usr/bin/env python3
"""A minimal HTTP/1.1 GET client for download benchmarks: reads the body
with ``recv_into`` a 1 MiB buffer and throws it away.

curl reads 16 KiB at a time and cannot be told otherwise from its command
line; on a 2-core machine it then tops out below what nginx can send over
loopback, so it would measure itself rather than the server.  This client
costs a fraction of a core at the same rate.

    python bench/httpget.py URL [--header-file FILE] [--timeout S]

Prints one JSON line: status, bytes (body bytes read), seconds (from connect
to the last byte).  Exits non-zero if the body is shorter than its
Content-Length."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit

BUFFER = 1024 * 1024


def get(url: str, headers: list[str], timeout: float) -> dict:
    u = urlsplit(url)
    if u.scheme != "http" or u.hostname is None:
        raise SystemExit(f"httpget: only http:// URLs: {url}")
    path = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.netloc}", "Connection: close", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    t0 = time.monotonic()
    with socket.create_connection((u.hostname, u.port or 80), timeout=timeout) as s:
        s.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            n = s.recv_into(view)
            if not n:
                raise SystemExit("httpget: connection closed before the headers ended")
            head += view[:n]
        head, _, body = head.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        fields = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "chunked" in fields.get("transfer-encoding", ""):
            raise SystemExit("httpget: chunked bodies are not supported")
        length = int(fields["content-length"]) if "content-length" in fields else None
        received = len(body)
        deadline = t0 + timeout
        while length is None or received < length:
            n = s.recv_into(view)
            if not n:
                break
            received += n
            if time.monotonic() > deadline:
                raise SystemExit(f"httpget: timed out after {timeout}s")
        seconds = time.monotonic() - t0
    if length is not None and received < length:
        raise SystemExit(f"httpget: body ended after {received} of {length} bytes")
    return {"status": status, "bytes": received, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description="HTTP GET to nowhere, timed")
    p.add_argument("url")
    p.add_argument("--header-file", help="file of extra request headers, one a line")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    headers = []
    if args.header_file:
        with open(args.header_file) as f:
            headers = [line.rstrip("\r\n") for line in f if line.strip()]
    json.dump(get(args.url, headers, args.timeout), sys.stdout)
    print()


if __name__ == "__main__":
    main()
