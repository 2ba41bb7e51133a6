"""Thread pools as services: blocking work (file I/O, the Docker SDK) runs
on a pool of its own and comes back as a Deferred, never on the reactor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadPoolService(Service):
    def __init__(self, reactor, threads: int, thread_name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=thread_name)

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


class IOPool(ThreadPoolService):
    """Hashing, fsync, rename, mkfs, removing trees."""

    name = "io"

    def __init__(self, reactor, threads: int = 4) -> None:
        super().__init__(reactor, threads, "pxed-io")
