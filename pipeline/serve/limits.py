"""What keeps a burst from exhausting the machine: a bounded inference queue, a body limit.

- :class:`InferenceQueue` runs blocking work (decoding, the models, dlib) on a few threads
  off the event loop. At most ``capacity`` jobs wait or run; one more is refused at once
  with :class:`QueueFullError` (the app answers 503 with ``Retry-After``), so memory stays
  bounded however many clients call.
- :class:`BodyLimit` (ASGI middleware) answers 413 to a request body over the limit, from
  its ``Content-Length`` before reading anything, or as soon as a streamed body passes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueFullError(RuntimeError):
    """The inference queue holds ``capacity`` jobs already."""


class InferenceQueue:
    """A thread pool of ``workers`` behind a queue of at most ``capacity`` jobs.

    Used from one event loop: the count of jobs is only touched there, so it needs no lock.
    """

    def __init__(self, workers: int, capacity: int) -> None:
        if workers < 1 or capacity < workers:
            raise ValueError(f"need workers >= 1 and capacity >= workers, got {workers}, "
                             f"{capacity}")
        self.capacity = capacity
        self.pending = 0
        """Jobs waiting or running."""
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="inference")

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Return ``function(*args)`` computed on a worker thread.

        Raises :class:`QueueFullError` without queueing when ``capacity`` jobs are pending.
        """
        if self.pending >= self.capacity:
            raise QueueFullError(f"{self.pending} requests are being served; try again shortly")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
        finally:
            self.pending -= 1

    def close(self) -> None:
        """Stop the threads after the jobs in hand."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class _BodyTooLargeError(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for HTTP request bodies over ``max_bytes``."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Pass the request on, counting its body; answer 413 once it passes the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received, exceeded, started = 0, False, False

        async def counting_receive() -> dict:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                exceeded = True
                raise _BodyTooLargeError
            return message

        async def guarded_send(message: dict) -> None:
            # Whatever the app makes of the interrupted body (FastAPI: a 400 "error parsing
            # the body"), the client is told why.
            nonlocal started
            if not exceeded:
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not started:
                started = True
                await self._refuse(send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLargeError:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        megabytes = self.max_bytes / 2**20
        body = json.dumps({"reason": "too_large",
                           "detail": f"the upload is over the limit of {megabytes:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
