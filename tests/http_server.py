"""A real HTTP server on 127.0.0.1 that serves bytes by path and injects faults per path.

Faults are queued per path and consumed one request at a time (``server.fail("/a", "500",
"drop")``: the first request gets a 500, the second is dropped mid-body, the third succeeds);
``server.always[path] = "404"`` makes one permanent. Every request is logged with its Range
header, so tests can assert that a resume really asked for the missing bytes only.

Faults: ``500``, ``404``, ``429`` (with ``Retry-After: retry_after_s``), ``drop`` (headers
with the full length, half the body, then the connection is closed), ``wrong`` (same length,
other bytes), ``pointer`` (a Git LFS pointer instead of the media), ``slow`` (answer after
``slow_s``, longer than the client's timeout). ``redirects[path] = location`` answers 302.
``latency_s`` delays every answer (a remote server's time to first byte); ``throttle_bps``
trickles the bodies of paths under ``throttle_prefix`` (for killing a client mid-download).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def lfs_pointer(data: bytes) -> bytes:
    """Return the Git LFS pointer text for ``data``."""
    return lfs_pointer_for(hashlib.sha256(data).hexdigest(), len(data))


def lfs_pointer_for(sha256: str, size: int) -> bytes:
    """Return the Git LFS pointer text for a file of ``size`` bytes and hash ``sha256``."""
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return text.encode()


@dataclass(frozen=True)
class Request:
    """One request the server saw."""

    path: str
    range: str | None
    fault: str | None
    client_port: int = 0
    """The client's port: requests on one kept-alive connection share it."""


class FaultServer(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) and, failing that, ``resolve(path)``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.resolve: Callable[[str], bytes | None] = lambda path: None
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.always: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.retry_after_s = 1
        self.requests: list[Request] = []
        self.slow_s = 2.0
        self.latency_s = 0.0
        self.throttle_bps = 0
        self.throttle_prefix = "/"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail(self, path: str, *faults: str) -> None:
        """Queue ``faults`` for the next requests of ``path``."""
        self.faults[path].extend(faults)

    def next_fault(self, path: str) -> str | None:
        """Return (and consume) the fault for this request of ``path``, if any."""
        with self._lock:
            if self.faults.get(path):
                return self.faults[path].pop(0)
            return self.always.get(path)

    def log_request_seen(self, request: Request) -> None:
        """Record a request."""
        with self._lock:
            self.requests.append(request)

    def requests_for(self, path: str) -> list[Request]:
        """Return the requests seen for ``path``, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"
    # As real servers do (nginx's tcp_nodelay): with Nagle, a kept-alive connection stalls
    # ~40 ms on every small answer (headers and body are two writes; delayed ACK).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        fault = self.server.next_fault(path)
        range_header = self.headers.get("Range")
        self.server.log_request_seen(Request(path, range_header, fault, self.client_address[1]))
        if path in self.server.redirects:
            self._send_status(302, Location=self.server.redirects[path])
            return
        if fault == "429":
            self._send_status(429, **{"Retry-After": str(self.server.retry_after_s)})
            return
        data = self.server.files.get(path)
        if data is None:
            data = self.server.resolve(path)
        time.sleep(self.server.slow_s if fault == "slow" else self.server.latency_s)
        if data is None or fault in ("404", "500"):
            code = 500 if fault == "500" else 404
            self._send_status(code)
            return
        if fault == "pointer":
            data = lfs_pointer(data)
        elif fault == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        start = 0
        if range_header and range_header.startswith("bytes=") and fault != "pointer":
            start = int(range_header[6:].split("-")[0])
            if start >= len(data):
                self._send_status(416)
                return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = data[start:]
        if fault == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._write(body, throttle=path.startswith(self.server.throttle_prefix))

    def _send_status(self, code: int, **headers: str) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _write(self, body: bytes, throttle: bool) -> None:
        rate = self.server.throttle_bps
        if not rate or not throttle:
            self.wfile.write(body)
            return
        step = max(1, rate // 20)
        try:
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(step / rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
