"""Thread pools as services: blocking work (file I/O, the Docker SDK) runs
on a pool of its own and comes back as a Deferred, never on the reactor.

Stopping a pool waits for the work handed to it, without blocking the
reactor: Twisted's ``ThreadPool.stop`` joins its threads, which on the
reactor thread would freeze the server (and every callFromThread the work
needs) until a multi-GiB fsync is done."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class PoolStopped(RuntimeError):
    """Work handed to a pool after it has stopped."""


class ThreadPoolService(Service):
    def __init__(self, reactor, threads: int, thread_name: str) -> None:
        self.reactor = reactor
        self._thread_name = thread_name
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=thread_name)
        # Calls handed out by run() whose Deferred has not fired yet.
        self._in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []
        # Set once stopService begins: new work is still taken (a chain
        # under way, e.g. fsync then rename, must be able to finish), but
        # callers that would start something new and long can ask.
        self.stopping = False
        # Set (on the reactor) once the threads are being joined.
        self._closed = False
        # Set as stopService begins: long work (compressing, hashing a
        # blank disk) checks it between pieces and gives up, so stopping
        # waits for seconds, not for the end of an hours-long job.
        self.cancel = threading.Event()

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self.cancel.clear()
        self._pool.start()

    def stopService(self) -> Deferred[None]:
        """Fires once the work handed to the pool, and whatever that work
        chained onto it, has finished and the threads have ended."""
        super().stopService()
        self.stopping = True
        self.cancel.set()
        d = self.when_idle()
        d.addCallback(lambda _: self._join_threads())
        return d

    def when_idle(self) -> Deferred[None]:
        """Fires once no call handed out by run() is outstanding."""
        if self._in_flight == 0:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def _join_threads(self) -> Deferred[None]:
        # The threads are idle now, so joining them is quick, but it is
        # still a blocking join: done on a thread of its own.
        self._closed = True
        done: Deferred[None] = Deferred()

        def join() -> None:
            self._pool.stop()
            self.reactor.callFromThread(done.callback, None)

        threading.Thread(target=join, name=f"{self._thread_name}-stop").start()
        return done

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if self._closed:
            # ThreadPool silently drops work once stopped (the Deferred
            # would never fire), or raises while it stops.
            return fail(PoolStopped(f"{self._thread_name}: the thread pool has stopped"))
        work = deferToThreadPool(self.reactor, self._pool, fn, *args, **kwargs)
        out: Deferred[T] = Deferred()
        self._in_flight += 1

        def settle(result: T | Failure) -> None:
            # The caller's callbacks run first (inside out.callback), so work
            # they chain onto this pool is counted before this call is
            # uncounted: when_idle does not fire between links of a chain.
            try:
                if isinstance(result, Failure):
                    out.errback(result)
                else:
                    out.callback(result)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    waiters, self._idle_waiters = self._idle_waiters, []
                    for w in waiters:
                        w.callback(None)

        work.addBoth(settle)
        return out


class IOPool(ThreadPoolService):
    """Hashing, fsync, rename, mkfs, removing trees, writing uploads."""

    name = "io"

    def __init__(self, reactor, threads: int = 4) -> None:
        super().__init__(reactor, threads, "pxed-io")
