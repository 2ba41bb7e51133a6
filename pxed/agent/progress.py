"""Deploy progress: the bytes of an image received so far, posted to pxed
every 2 s while it is written (pxed wants a report at least every 5 s),
from a thread of its own so that a slow answer never slows the disk."""

from __future__ import annotations

import threading

from pxed.agent.client import Client, HTTPError
from pxed.agent.wire import Progress

INTERVAL = 2.0
POST_TIMEOUT = 3.0


class ProgressReporter:
    def __init__(self, client: Client, mac: str, image: str, total: int) -> None:
        self._client = client
        self._path = f"/machine/{mac}/progress"
        self._image = image
        self.total = total
        # Bytes received, set by the deploy as it goes (a plain int: the
        # GIL makes reading it safe, and a report one chunk late is fine).
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> None:
        self._post(0)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            # Below the total until the image is verified: the report that
            # reaches it is what pxed records as "image written".
            self._post(min(self.done, max(self.total - 1, 0)))

    def _post(self, written: int) -> None:
        try:
            self._client.request(
                "POST",
                self._path,
                Progress(self._image, written, self.total).to_json(),
                timeout=POST_TIMEOUT,
            )
        except (OSError, HTTPError):
            pass  # progress is a courtesy: the work goes on without it

    def stop(self, verified: bool) -> None:
        """Stop reporting; once *verified*, report the image whole."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(POST_TIMEOUT + 1)
        if verified:
            self._post(self.total)
