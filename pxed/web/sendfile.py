"""Downloads with os.sendfile: the kernel copies file to socket, as nginx
does (0.94x nginx instead of 0.79x with 1 MiB reads through Twisted; bench/).

Twisted has no public way to say "call me when your write buffer is empty
and the socket is writable", so this is the one module that touches a TCP
transport's private state (``dataBuffer``, ``offset``, ``_tempDataLen``,
``producerPaused``).  ``usable`` checks them on each connection before
sendfile is used; where they are missing or changed, downloads fall back to
Twisted's own producers, slower but correct.  tests/web/test_sendfile.py
checks them on a real connection, and setup.py pins Twisted to the versions
it passes on."""

from __future__ import annotations

import os
from typing import IO, Any

from twisted.internet import tcp
from twisted.logger import Logger
from twisted.web.iweb import IRequest

log = Logger()

# The private attributes of a tcp.Server this module reads or sets, and the
# types they have (twisted.internet.abstract.FileDescriptor, Twisted 24-26).
PRIVATE: dict[str, type | tuple[type, ...]] = {
    "dataBuffer": bytes,  # what doWrite is sending ...
    "offset": int,  # ... from this offset
    "_tempDataLen": int,  # bytes written but not yet moved into dataBuffer
    "producerPaused": (bool, int),  # doWrite resumes the producer if set
}
# Public methods used as well (IReadWriteDescriptor, ISystemHandle).
METHODS = ("startWriting", "getHandle", "abortConnection")

_warned = False


def missing(transport: object) -> list[str]:
    """The attributes sendfile needs that *transport* lacks or has with
    another type; empty when sendfile can be used."""
    out = [
        name
        for name, kind in PRIVATE.items()
        if not isinstance(getattr(transport, name, None), kind)
    ]
    out += [name for name in METHODS if not callable(getattr(transport, name, None))]
    return out


def usable(transport: object) -> bool:
    """Whether downloads on *transport* can go by sendfile."""
    global _warned
    # Exactly tcp.Server: TLS (a wrapping protocol) must encrypt every byte
    # itself, and a subclass may buffer differently.
    if type(transport) is not tcp.Server or not hasattr(os, "sendfile"):
        return False
    gone = missing(transport)
    if gone and not _warned:
        _warned = True
        log.warn(
            "this Twisted's TCP transport lacks {names}: downloads use Twisted's "
            "producers instead of sendfile (slower); see pxed/web/sendfile.py",
            names=", ".join(gone),
        )
    return not gone


def _buffered(transport: Any) -> int:
    """Bytes Twisted still holds for the socket."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _resume_when_flushed(transport: Any) -> None:
    """Have the transport resume its producer (the HTTP channel, which
    resumes ours) once its buffer is sent and the socket is writable:
    doWrite does that for a producer it paused itself."""
    transport.producerPaused = True
    transport.startWriting()


class SendfileProducer:
    """Sends *size* bytes of a file from *offset* with os.sendfile, driven
    by the transport: whenever its buffer is empty and the socket writable,
    the transport resumes the HTTP channel, which resumes this producer.
    Only for a transport ``usable`` said yes to."""

    CHUNK = 4 * 1024 * 1024

    def __init__(self, request: IRequest, fileobj: IO[bytes], offset: int, size: int) -> None:
        self.request = request
        self.file = fileobj
        self.offset = offset
        self.remaining = size
        self.transport: Any = request.channel.transport
        self.done = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.write(b"")  # the status line and headers, into the buffer
        _resume_when_flushed(self.transport)

    def resumeProducing(self) -> None:
        if self.done:
            return
        t = self.transport
        # The headers (or anything else) go first, through Twisted.
        if _buffered(t):
            _resume_when_flushed(t)
            return
        sock = t.getHandle().fileno()
        fd = self.file.fileno()
        try:
            while self.remaining > 0:
                sent = os.sendfile(sock, fd, self.offset, min(self.remaining, self.CHUNK))
                if sent == 0:  # the file got shorter: nothing sane to send
                    self.stopProducing()
                    t.abortConnection()
                    return
                self.offset += sent
                self.remaining -= sent
                self.request.sentLength += sent
        except BlockingIOError:
            _resume_when_flushed(t)
            return
        except OSError:
            self.stopProducing()
            t.abortConnection()
            return
        self.done = True
        self.file.close()
        self.request.unregisterProducer()
        self.request.finish()

    def pauseProducing(self) -> None:
        # Nothing to pause: we only send when the transport asks.
        pass

    def stopProducing(self) -> None:
        self.done = True
        self.file.close()
