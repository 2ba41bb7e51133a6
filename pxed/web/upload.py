"""Request bodies that are disk images: streamed into staging files while
they arrive, never held in memory or written to /tmp.

PxedRequest.headers_received installs an UploadBody as ``request.content`` when the
Content-Type is ``application/octet-stream`` or ``multipart/form-data``.
Twisted then writes the body into it piece by piece.  Each file goes to a
StagedUpload (pxed.web.staging), which writes and hashes it on the
server's IO pool while it arrives, so memory stays flat whatever the
size.  Twisted closes the content when the request ends: whatever a
handler did not commit is removed then."""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header
from twisted.logger import Logger

from pxed.metrics import Metrics
from pxed.storage import Storage
from pxed.web.staging import StagedUpload
from pxed.workers import ThreadPoolService

log = Logger()

# Form fields that are not files (small text values) are kept in memory,
# within these limits (a body over them is answered 400 or 413): the
# size of one field, how many there are, their size together (values and
# part headers), and the headers of any one part.
MAX_FIELD = 64 * 1024
MAX_FIELDS = 64
MAX_FIELDS_SIZE = 1024 * 1024
MAX_PART_HEADERS = 16 * 1024
# Multipart parts streamed to staging files.
FILE_PARTS = ("file", "context")


def is_upload(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    kind = content_type.split(b";")[0].strip().lower()
    return kind in (b"application/octet-stream", b"multipart/form-data")


class UploadBody:
    """The file-like object Twisted writes the request body into."""

    def __init__(
        self,
        storage: Storage,
        pool: ThreadPoolService,
        content_type: bytes,
        transport,
        metrics: Metrics | None = None,
    ) -> None:
        self._storage = storage
        self._pool = pool
        self._metrics = metrics if metrics is not None else Metrics()
        self._transport = transport
        self._paused = False
        self.complete = False
        self.received = 0
        self.files: dict[str, StagedUpload] = {}
        self.fields: dict[str, bytes] = {}
        self.error: str | None = None
        # The status to answer *error* with: 400, or 413 for a limit.
        self.error_status = 400
        self.filenames: dict[str, str] = {}
        kind, options = parse_options_header(content_type)
        self._parser: MultipartParser | None = None
        if kind == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                self.error = "multipart/form-data without a boundary"
            else:
                self._parser = MultipartParser(boundary, self._callbacks())
                # The original management OS ends its body with this line
                # and no closing "--" (see _ended_at_boundary).
                self._boundary_line = b"\r\n--" + boundary + b"\r\n"
                self._tail = b""
                self._part: str | None = None
                self._headers: dict[bytes, bytes] = {}
                self._field = b""
                self._value = b""
                self._field_parts = 0
                self._form_bytes = 0
                self._header_bytes = 0
        else:
            self.files["file"] = self._new_file()

    def _new_file(self) -> StagedUpload:
        return StagedUpload(self._storage, self._pool, self._set_pressure, self._metrics)

    def _set_pressure(self, behind: bool) -> None:
        # Pause reading while the writer is behind.  Once the body is
        # complete Twisted pauses and resumes the socket itself; leave it.
        if behind and not self._paused and not self.complete:
            self._paused = True
            self._transport.pauseProducing()
        elif not behind and self._paused:
            self._paused = False
            if not self.complete:
                self._transport.resumeProducing()

    # -- multipart ----------------------------------------------------------

    def _callbacks(self) -> dict:
        def on_part_begin() -> None:
            self._part = None
            self._headers = {}
            self._header_bytes = 0
            # A part ended and the boundary line after it is complete.
            self._at_boundary = self._parts_ended > 0

        def on_part_end() -> None:
            self._parts_ended += 1

        def header_bytes(n: int) -> bool:
            self._header_bytes += n
            self._form_bytes += n
            if self._header_bytes > MAX_PART_HEADERS:
                self._too_large(f"multipart part headers are limited to {MAX_PART_HEADERS} bytes")
            elif self._form_bytes > MAX_FIELDS_SIZE:
                self._too_large(f"form fields are limited to {MAX_FIELDS_SIZE} bytes together")
            return self.error is None

        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._at_boundary = False
            if header_bytes(end - start):
                self._field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            if header_bytes(end - start):
                self._value += data[start:end]

        def on_header_end() -> None:
            self._headers[self._field.lower()] = self._value
            self._field = self._value = b""

        def on_headers_finished() -> None:
            self._at_boundary = False
            _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
            name = opts.get(b"name", b"").decode("utf-8", "replace")
            self._part = name
            if name in FILE_PARTS:
                if name in self.files:
                    self.error = f"more than one {name!r} part"
                    return
                self.files[name] = self._new_file()
                self.filenames[name] = opts.get(b"filename", b"").decode("utf-8", "replace")
            else:
                self._field_parts += 1
                if self._field_parts > MAX_FIELDS:
                    self.error = f"more than {MAX_FIELDS} form fields"
                    return
                self.fields[name] = b""

        def on_part_data(data: bytes, start: int, end: int) -> None:
            name = self._part
            if name is None or self.error:
                return
            if name in self.files:
                self.files[name].write(data[start:end])
            else:
                value = self.fields[name] + data[start:end]
                self._form_bytes += end - start
                if len(value) > MAX_FIELD:
                    self._too_large(f"form field {name!r} is larger than {MAX_FIELD} bytes")
                    return
                if self._form_bytes > MAX_FIELDS_SIZE:
                    self._too_large(f"form fields are limited to {MAX_FIELDS_SIZE} bytes together")
                    return
                self.fields[name] = value

        def on_end() -> None:
            self._ended = True

        self._ended = False
        self._parts_ended = 0
        self._at_boundary = False
        return {
            "on_part_begin": on_part_begin,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_end": on_end,
        }

    def _too_large(self, message: str) -> None:
        self.error = message
        self.error_status = 413

    # -- the file interface Twisted uses ------------------------------------

    def write(self, data: bytes) -> None:
        self.received += len(data)
        self._metrics.uploaded_bytes.inc(len(data))
        if self.error:
            return
        if self._parser is None:
            self.files["file"].write(data)
            return
        keep = len(self._boundary_line)
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]
        try:
            self._parser.write(data)
        except Exception as e:  # python_multipart raises its own errors
            self.error = f"malformed multipart body: {e}"

    def _ended_at_boundary(self) -> bool:
        """The body stopped right after a complete part and the boundary
        line following it (``\\r\\n--BOUNDARY\\r\\n``, then EOF), as the
        original management OS sends it: complete, though the closing
        ``--`` is missing.  A body cut off anywhere else is not."""
        return self._at_boundary and self._tail == self._boundary_line

    def seek(self, offset: int, whence: int = 0) -> int:
        # Twisted rewinds the content once the whole body has arrived.
        self.complete = True
        if self._paused:
            self._paused = False
        if (
            self._parser is not None
            and not self._ended
            and not self.error
            and not self._ended_at_boundary()
        ):
            self.error = "multipart body ended early"
        return 0

    def tell(self) -> int:
        return self.received

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        for f in self.files.values():
            f.close()
