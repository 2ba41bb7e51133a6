"""The original management OS client against pxed.

``OriginalClient`` is written from the original's
``management_os/entrypoint/api.go`` (BootInform, DownloadDiskHTTP,
UploadDiskHTTP) and ``pkg/httplog/loghook.go`` (the logrus hook), and sends
what they send, byte for byte as Go's net/http writes it: the same request
lines, the same headers (Go's canonical names, its User-Agent and
Accept-Encoding), the same JSON, the same multipart framing with its
unterminated last boundary, chunked.  It changes only what pxed's security
requires: ``Authorization: Bearer <pxed.token>`` on every request (the
machine credential from the netboot cmdline), and the call to
``POST /machine/{mac}/boot/complete`` at the end.  One more difference is
the order: the original uploaded the previous boot's Update images before
BootInform; pxed takes captures only for the work in progress, so this
client uploads after it."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest_twisted
from twisted.internet import threads

from tests.helpers import MAC, MIB, add_machine, enqueue, machine_token, new_image, upload_version
from tests.original_structs import decode

# logrus's levels as Level.String() spells them, most severe last, and the
# level pxed stores each as.
LOGRUS_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
}

# api.go's constants.
BOUNDARY = "ProfessorDrIngJanRellermeyer"
FILE_NAME = "image.img"
ORIGIN = "http://localhost:9090"
# What Go's Transport adds to every request (Go 1.19).
GO_USER_AGENT = "Go-http-client/1.1"
# io.Copy's buffer: how Go's chunked writer sees a streamed body.
COPY_BUFFER = 32 * 1024


def go_json(value: dict) -> bytes:
    """encoding/json's Marshal: compact, keys in struct order, HTML
    characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for c, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(c, escaped)
    return text.encode()


@dataclass
class Answer:
    status: int
    body: bytes


class OriginalClient:
    """api.go's APIClient and loghook.go's Hook, over plain sockets
    (blocking: call it from a thread)."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        parts = urlsplit(self.base_url)
        self._host, self._port = parts.hostname, parts.port
        self._netloc = parts.netloc

    # -- the wire, as Go's net/http writes it ----------------------------------

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None = None,
        stream: Iterable[bytes] | None = None,
    ) -> Answer:
        """One request on a new connection (Go reuses connections; nothing
        here depends on it).  Go writes Host, User-Agent, the length or
        the chunked encoding, the request's headers sorted by name, then
        Accept-Encoding."""
        path = urlsplit(url).path
        conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._netloc)
            conn.putheader("User-Agent", GO_USER_AGENT)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            elif stream is not None:
                conn.putheader("Transfer-Encoding", "chunked")
            # pxed's one addition: the machine credential.
            for name, value in sorted({**headers, "Authorization": f"Bearer {self.token}"}.items()):
                conn.putheader(name, value)
            conn.putheader("Accept-Encoding", "gzip")
            conn.endheaders()
            if body is not None:
                conn.send(body)
            elif stream is not None:
                for chunk in stream:
                    if chunk:
                        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
            return Answer(response.status, response.read())
        finally:
            conn.close()

    # -- loghook.go --------------------------------------------------------------

    def fire(self, level: str, message: str, origin: str = "MMOS") -> Answer:
        """Hook.Fire: the log entry as logMessage{Level, Message, Origin}."""
        return self._send(
            "POST",
            f"{self.base_url}/log",
            # req.Header.Set canonicalises "type" to "Type".
            {"Content-Type": "application/json", "Type": "log", "Origin": ORIGIN},
            body=go_json({"Level": level, "Message": message, "Origin": origin}),
        )

    # -- api.go ------------------------------------------------------------------

    def boot_inform(self, mac: str) -> dict:
        answer = self._send(
            "GET", f"{self.base_url}/machine/{mac}/boot", {"Type": "system", "Origin": ORIGIN}
        )
        assert answer.status == 200, f"inform request failed ({answer.body.decode().strip()})"
        return json.loads(answer.body)

    def download_disk_http(self, uuid: str, version: int) -> bytes:
        answer = self._send(
            "GET", f"{self.base_url}/image/{uuid}/{version}", {"Type": "system", "Origin": ORIGIN}
        )
        assert answer.status == 200, f"http error while downloading disk ({answer.body[:300]!r})"
        return answer.body

    def upload_disk_http(self, data: bytes, uuid: str) -> Answer:
        """UploadDiskHTTP: the file part's header, the disk, and the
        boundary line with no closing "--", streamed (chunked)."""
        file_part = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{FILE_NAME}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        end = f"\r\n--{BOUNDARY}\r\n".encode()

        def multi_reader() -> Iterator[bytes]:
            yield file_part
            for i in range(0, len(data), COPY_BUFFER):
                yield data[i : i + COPY_BUFFER]
            yield end

        return self._send(
            "POST",
            f"{self.base_url}/image/{uuid}",
            {
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "Origin": ORIGIN,
                "Type": "system",
                # Canonical form of X-BAAS-NewVersion.
                "X-Baas-Newversion": "true",
            },
            stream=multi_reader(),
        )

    # -- pxed's one extra call ---------------------------------------------------

    def complete(self, mac: str, success: bool, message: str) -> Answer:
        return self._send(
            "POST",
            f"{self.base_url}/machine/{mac}/boot/complete",
            {"Content-Type": "application/json", "Origin": ORIGIN},
            body=go_json({"Success": success, "Message": message}),
        )


def blob(size: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


@pytest_twisted.ensureDeferred
async def test_the_original_management_os_client_gets_through(server):
    machine = await add_machine(server)
    alice = await server.user("alice")
    fixed, captured = await new_image(alice, "fixed"), await new_image(alice, "captured")
    deployed = blob(3 * MIB + 11, seed=1)
    await upload_version(alice, fixed, deployed)
    await enqueue(alice, [{"UUID": fixed, "Version": 1}, {"UUID": captured, "Update": True}])
    client = OriginalClient(server.url, await machine_token(server))

    def call(method, *args):
        return threads.deferToThread(method, *args)

    # The log hook: every level logrus has.
    for level in LOGRUS_LEVELS:
        answer = await call(client.fire, level, f"{level}: <sda> & friends")
        assert answer.status == 200, (level, answer)

    # BootInform decodes into images.ImageSetup, every image named.
    info = await call(client.boot_inform, MAC)
    setup = decode("ImageSetup", info)
    assert (setup.Name, setup.Username) == ("s", "alice")
    assert all(f.Image.UUID for f in setup.Images)
    assert [(f.Image.UUID, f.Version.Version, f.Update) for f in setup.Images] == [
        (fixed, 1, False),
        (captured, 0, True),
        (machine["ImageUUID"], 0, True),
    ]
    assert setup.Images[-1].Image.Type == "machine"

    # DownloadDiskHTTP by Image.UUID and Version.Version, byte for byte.
    for frozen in setup.Images:
        got = await call(client.download_disk_http, frozen.Image.UUID, frozen.Version.Version)
        stored = await server.admin.get(f"/image/{frozen.Image.UUID}/{frozen.Version.Version}")
        assert stored.code == 200, stored.text
        assert got == stored.body, frozen.Image.UUID
    assert await call(client.download_disk_http, fixed, 1) == deployed

    # UploadDiskHTTP of the image flagged Update: a new version.
    disk = blob(2 * MIB + 5, seed=2)
    answer = await call(client.upload_disk_http, disk, captured)
    assert answer.status == 200, answer
    versions = (await alice.get(f"/image/{captured}")).json()["Versions"]
    assert [v["Version"] for v in versions] == [0, 1]
    assert versions[1]["Sha256"] == hashlib.sha256(disk).hexdigest()
    assert versions[1]["Size"] == len(disk)
    assert (await alice.get(f"/image/{captured}/1")).body == disk

    answer = await call(client.complete, MAC, True, "reprovisioning done")
    assert answer.status == 200, answer
    assert json.loads(answer.body)["State"] == "done"
    assert (await server.admin.get(f"/machine/{MAC}")).json()["State"] == "deployed"

    lines = (await server.admin.get(f"/machine/{MAC}/logs")).json()
    assert [(x["Level"], x["Message"], x["Origin"]) for x in lines] == [
        (stored, f"{level}: <sda> & friends", "MMOS") for level, stored in LOGRUS_LEVELS.items()
    ]
