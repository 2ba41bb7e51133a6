"""The one way to the Docker engine: docker SDK calls run on the builder's
own thread pool and come back as Deferreds."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred

from pxed.workers import ThreadPoolService

if TYPE_CHECKING:
    import docker

T = TypeVar("T")
DEFAULT_HOST = "unix:///var/run/docker.sock"
# Label on every image and container a build makes, valued with the build id.
LABEL = "pxed.build"


class EngineUnavailable(Exception):
    """The Docker engine cannot be reached."""


class DockerEngine(ThreadPoolService):
    name = "docker"

    def __init__(self, host: str, reactor, builds: int, timeout: float = 3600) -> None:
        # Each running build holds a thread for its whole length; two more
        # keep control calls (ping, kill, cleanup) from waiting behind them.
        super().__init__(reactor, builds + 2, "pxed-docker")
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        # A socket read may wait as long as a silent build step runs.
        self._timeout = int(timeout) + 60
        self._client: docker.DockerClient | None = None

    def stopService(self) -> Deferred[None]:
        # Close the client once the Docker calls still running have ended.
        d = super().stopService()
        d.addCallback(lambda _: self._client.close() if self._client is not None else None)
        return d

    def _api(self) -> docker.APIClient:
        # Created lazily on a pool thread: creating it talks to the engine.
        # The SDK is imported here too: a server that never builds saves
        # its memory (bench/: every MB counts for the RSS target).
        import docker

        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.host, timeout=self._timeout)
            except docker.errors.DockerException as e:
                raise EngineUnavailable(
                    f"cannot reach the Docker engine at {self.host}: {e}"
                ) from None
        return self._client.api

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``fn(api, *args)`` on the builder's pool."""
        return super().run(self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple) -> T:
        return fn(self._api(), *args)

    def ping(self) -> Deferred[None]:
        def _ping(api: docker.APIClient) -> None:
            try:
                api.ping()
            except Exception as e:
                raise EngineUnavailable(
                    f"the Docker engine at {self.host} does not answer ({type(e).__name__})"
                ) from None

        return self.run(_ping)
