"""Fetch files over HTTP(S) or from ``file://`` sources: parallel, resumable, verified.

Every file is downloaded to ``<dest>.part`` and renamed onto ``<dest>`` only once its size
and SHA-256 match what was expected, so nothing unverified ever appears under a final name.

HTTP goes through urllib3: one pool of kept-alive connections per fetch, and per file one
:class:`urllib3.util.Retry` budget that retries connection errors, timeouts and 408/425/429/5xx
answers with exponential backoff, honouring ``Retry-After``. What urllib3 cannot retry by
itself is a body cut short: the ``.part`` file keeps every byte that arrived and the next
request asks for the rest with ``Range``, counted against the same budget. A ``.part`` file
left by a killed run is resumed the same way. Redirects are followed here, not by urllib3,
so that every hop passes :func:`check_source_url`. A 4xx answer, a checksum mismatch or a
Git LFS pointer served instead of the media is a per-file failure (:class:`DownloadError`)
that is returned, never raised, so the other files go on.

Already-verified files are skipped without re-hashing: :class:`VerifiedState` remembers, per
file, the ``(size, mtime_ns, inode)`` it had when its SHA-256 was last computed, the way git's
index and DVC's state database do. A file whose stat still matches is trusted; any other file
present is hashed once and then remembered.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import urllib3
from tqdm import tqdm
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError, SSLError
from urllib3.util import Retry

from pipeline.runtime import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

LFS_POINTER_PREFIX = b"version https://git-lfs"
"""How every Git LFS pointer file starts."""
LFS_POINTER_MAX_BYTES = 1024
"""Pointers are ~130 bytes; anything this large or larger is not one."""
CHUNK_BYTES = 256 * 1024
PART_SUFFIX = ".part"
RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_MAX_S = 60.0
MAX_REDIRECTS = 5
USER_AGENT = "voice2face-download/1"


class DownloadError(Exception):
    """One file could not be fetched or verified; ``reason`` is a short stable code."""

    def __init__(self, reason: str, message: str, url: str = "") -> None:
        super().__init__(f"{url}: {message}" if url else message)
        self.reason = reason
        self.detail = message
        self.url = url


class _Interrupted(Exception):
    """A transfer that ended early or unusably (body cut short, 416): try again."""


@dataclass(frozen=True)
class FetchItem:
    """One file to fetch: where from, where to (relative to the root) and what to expect."""

    url: str
    """Source URL: https://, http:// to a loopback host, or file://."""
    dest: str
    """Destination path relative to the download root (POSIX separators)."""
    size: int | None = None
    """Expected size in bytes (None = unknown, taken from the source)."""
    sha256: str | None = None
    """Expected SHA-256 hex digest (None = computed from a ``file://`` source)."""


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: parallelism, retries and timeouts."""

    workers: int = 8
    """Parallel downloads."""
    retries: int = 4
    """Retries per file on timeouts, 5xx and dropped connections."""
    timeout_s: float = 30.0
    """Socket timeout per request in seconds."""
    backoff_s: float = 1.0
    """First retry waits this long; each further retry doubles it (capped at 60 s)."""
    progress: bool = True
    """Show a tqdm progress bar (bytes, and files in the postfix)."""


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one :class:`FetchItem`."""

    item: FetchItem
    """What was asked for."""
    path: Path | None
    """The verified file, or None when it failed."""
    sha256: str = ""
    """SHA-256 of the verified file."""
    size: int = 0
    """Size of the verified file in bytes."""
    skipped: bool = False
    """True when the file was already present and verified (no transfer)."""
    resumed_from: int = 0
    """Bytes of an earlier ``.part`` file that a Range request continued from."""
    attempts: int = 0
    """Requests made (0 when skipped)."""
    error: DownloadError | None = None
    """Why the file is missing, when it is."""

    @property
    def ok(self) -> bool:
        """Return whether the file is present and verified."""
        return self.error is None


# --------------------------------------------------------------------------- sources


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_source_url(url: str) -> None:
    """Raise :class:`DownloadError` unless ``url`` is https, http to loopback, or file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return
    raise DownloadError(
        "bad_url", "only https://, file:// and http:// to a loopback host are allowed", url
    )


def safe_destination(root: Path, relative: str) -> Path:
    """Return ``root / relative``, raising :class:`DownloadError` if it would escape ``root``.

    Rejects absolute paths and ``..`` lexically, and a symlinked directory on the way that
    leads outside (directories are resolved once per process, files never followed). String
    operations, not pathlib: this runs twice per file on every no-op re-run.
    """
    parts = relative.replace("\\", "/").split("/")
    if not relative or relative.startswith(("/", "~")) or ".." in parts:
        raise DownloadError("bad_path", f"path {relative!r} escapes the output directory")
    joined = os.path.join(root, *parts)
    root_real = _realpath(os.fspath(root))
    parent_real = _realpath(os.path.dirname(joined))
    if parent_real != root_real and not parent_real.startswith(root_real + os.sep):
        raise DownloadError("bad_path", f"path {relative!r} escapes the output directory")
    return Path(joined)


@functools.lru_cache(maxsize=4096)
def _realpath(directory: str) -> str:
    return os.path.realpath(directory)


def file_url_path(url: str) -> Path:
    """Return the local path a ``file://`` URL names."""
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def is_lfs_pointer(head: bytes) -> bool:
    """Return whether ``head`` (a file's first bytes) is a Git LFS pointer."""
    return head.startswith(LFS_POINTER_PREFIX)


def lfs_pointer_error(source: str) -> DownloadError:
    """Return the error for a Git LFS pointer found where media was expected.

    The advice fits the source: a server that serves pointers needs the LFS media URL; a
    local file (a folder dataset, a clone) was never pulled.
    """
    if source.startswith(("http://", "https://")):
        advice = ("the server serves pointers, not content. Use the LFS media URL, e.g. "
                  "https://media.githubusercontent.com/media/<owner>/<repo>/<branch>/<path>, as "
                  "media_base_url, or a local clone with its media pulled (`git lfs pull`)")
    else:
        advice = ("the file was never pulled from Git LFS. Run `git lfs install && git lfs "
                  "pull` in the repository that holds it")
    return DownloadError("lfs_pointer",
                         f"got a Git LFS pointer file instead of the media: {advice}", source)


# ------------------------------------------------------------------------------ HTTP


class _Backoff(Retry):
    """urllib3's Retry with the schedule ``download.backoff_s`` documents.

    urllib3 retries the first failure at once; here the first retry waits ``backoff_factor``
    and each further one doubles it (``Retry-After`` still wins where a server sends it).
    """

    def get_backoff_time(self) -> float:
        """Return the seconds to wait before the next retry."""
        n = len(self.history)
        return 0.0 if n == 0 else min(self.backoff_max, self.backoff_factor * 2 ** (n - 1))


def retry_policy(options: FetchOptions) -> Retry:
    """Return one file's retry budget: ``options.retries`` retries of any kind, backed off."""
    return _Backoff(total=options.retries, redirect=False, status_forcelist=RETRYABLE_HTTP,
                    backoff_factor=options.backoff_s, backoff_max=BACKOFF_MAX_S,
                    respect_retry_after_header=True, raise_on_status=True)


class HttpClient:
    """Kept-alive connections for ``workers`` threads, direct or through the environment's proxy.

    Like urllib, it honours ``http_proxy`` / ``https_proxy`` / ``no_proxy``; loopback hosts
    always go direct.
    """

    def __init__(self, workers: int) -> None:
        self._direct = urllib3.PoolManager(maxsize=workers)
        self._proxied = {scheme: urllib3.ProxyManager(proxy, maxsize=workers)
                         for scheme, proxy in urllib.request.getproxies_environment().items()
                         if scheme in ("http", "https")}

    def pool(self, url: str) -> urllib3.PoolManager:
        """Return the connection pool that requests for ``url`` go through."""
        parts = urllib.parse.urlsplit(url)
        proxied = self._proxied.get(parts.scheme)
        if proxied is None or _is_loopback(parts.hostname) \
                or urllib.request.proxy_bypass_environment(parts.hostname or ""):
            return self._direct
        return proxied

    def open(self, url: str, retry: Retry, timeout_s: float, offset: int = 0,
             preload: bool = False) -> urllib3.BaseHTTPResponse:
        """Return the response for ``url`` from byte ``offset`` (a Range request if > 0).

        Transient failures are retried within ``retry``; the response's ``retries`` carries
        the budget on. Redirects are followed only to sources :func:`check_source_url`
        accepts. Raises :class:`DownloadError` when the budget is spent.
        """
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self.pool(url).urlopen(
                    "GET", url, headers=headers, retries=retry, redirect=False, timeout=timeout,
                    preload_content=preload, decode_content=False)
            except MaxRetryError as error:
                attempts = len(retry.history) + (retry.total or 0) + 1
                raise DownloadError("retries_exhausted", f"gave up after {attempts} attempts; "
                                    f"last: {error.reason}", url) from error
            location = response.get_redirect_location()
            if not location:
                return response
            response.drain_conn()
            response.release_conn()
            url = urllib.parse.urljoin(url, location)
            check_source_url(url)
            retry = response.retries or retry
        raise DownloadError("too_many_redirects", f"more than {MAX_REDIRECTS} redirects", url)

    def clear(self) -> None:
        """Close every pooled connection."""
        for manager in (self._direct, *self._proxied.values()):
            manager.clear()


def fetch_bytes(url: str, options: FetchOptions, http: HttpClient | None = None) -> bytes:
    """Return the whole body of a small file (a CSV, an LFS pointer), retrying transients."""
    check_source_url(url)
    if url.startswith("file:"):
        path = file_url_path(url)
        if not path.is_file():
            raise DownloadError("missing_file", "no such file", url)
        return path.read_bytes()
    response = (http or HttpClient(1)).open(url, retry_policy(options), options.timeout_s,
                                           preload=True)
    if response.status != 200:
        raise DownloadError(f"http_{response.status}",
                            f"HTTP {response.status} {response.reason}", url)
    return response.data


# ---------------------------------------------------------------------- verified state


class VerifiedState:
    """The SHA-256 of files as of their last hashing, keyed by path, trusted while stat matches.

    A record is ``(size, mtime_ns, inode, sha256)``. :meth:`sha256` returns the recorded hash
    while the file's stat is unchanged and re-hashes (and re-records) it otherwise, so a file
    rewritten, truncated or replaced since is never trusted. Saved as JSON, atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, list] = {}
        self._dirty = False
        if path.is_file():
            try:
                self._records = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                log.warning("ignoring unreadable verified-state %s: %s", path, error)

    @staticmethod
    def _key(path: Path) -> str:
        return str(path.absolute())

    @staticmethod
    def _stat(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def cached_sha256(self, path: Path) -> str | None:
        """Return the recorded hash of ``path`` if its stat still matches, else None."""
        with self._lock:
            record = self._records.get(self._key(path))
        try:
            if record and record[:3] == self._stat(path):
                return record[3]
        except OSError:
            return None
        return None

    def record(self, path: Path, sha256: str) -> None:
        """Remember that ``path``, as it is now, hashes to ``sha256``."""
        stat = self._stat(path)
        with self._lock:
            self._records[self._key(path)] = [*stat, sha256]
            self._dirty = True

    def sha256(self, path: Path) -> str:
        """Return the SHA-256 of ``path``, hashing it only if it changed since last recorded."""
        cached = self.cached_sha256(path)
        if cached is not None:
            return cached
        digest = sha256_file(path)
        self.record(path, digest)
        return digest

    def forget_missing(self, keep: Callable[[str], bool] = lambda key: True) -> None:
        """Drop records of files that no longer exist (or that ``keep`` rejects)."""
        with self._lock:
            stale = [k for k in self._records if not keep(k) or not os.path.exists(k)]
            for key in stale:
                del self._records[key]
            self._dirty = self._dirty or bool(stale)

    def save(self) -> None:
        """Write the records to disk (atomically) if they changed."""
        with self._lock:
            if not self._dirty:
                return
            text = json.dumps(self._records, separators=(",", ":"))
            self._dirty = False
        atomic_write_text(self.path, text)


# ------------------------------------------------------------------------- fetching


class Fetcher:
    """Fetches :class:`FetchItem` lists into one root directory."""

    def __init__(self, root: Path, options: FetchOptions, state: VerifiedState) -> None:
        self.root = root
        self.options = options
        self.state = state
        self.http = HttpClient(options.workers)
        self._bar: tqdm | None = None
        self._bar_lock = threading.Lock()

    def fetch_all(self, items: Iterable[FetchItem]) -> list[FetchResult]:
        """Return one result per item, in input order; failures are results, not raises."""
        items = list(items)
        total = sum(i.size or 0 for i in items)
        results: list[FetchResult | None] = [None] * len(items)
        last_save = time.monotonic()
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download",
                  disable=not self.options.progress, leave=False) as bar, \
                ThreadPoolExecutor(max_workers=self.options.workers) as pool:
            self._bar = bar
            for i, item in enumerate(items):  # cheap stat-only check, without a thread each
                results[i] = self.already_verified(item)
            futures = {pool.submit(self.fetch_one, item): i
                       for i, item in enumerate(items) if results[i] is None}
            done = len(items) - len(futures)
            failed = 0
            bar.update(sum(r.size for r in results if r is not None))
            try:
                for future in as_completed(futures):
                    result = future.result()
                    results[futures[future]] = result
                    done += 1
                    failed += not result.ok
                    if result.skipped:
                        self._advance(result.size)
                    bar.set_postfix(files=f"{done}/{len(items)}", failed=failed, refresh=False)
                    if time.monotonic() - last_save > 10:  # a killed run keeps most records
                        self.state.save()
                        last_save = time.monotonic()
            finally:
                self.state.save()
                self.http.clear()
                self._bar = None
        return [r for r in results if r is not None]

    def _advance(self, n: int) -> None:
        if self._bar is not None and n:
            with self._bar_lock:
                self._bar.update(n)

    def already_verified(self, item: FetchItem) -> FetchResult | None:
        """Return a skipped result if the file is present with a matching verified-state record.

        Never hashes, never raises: anything else (no record, changed stat, bad path) is
        left to :meth:`fetch_one`.
        """
        if item.sha256 is None or item.size is None:
            return None
        try:
            dest = safe_destination(self.root, item.dest)
        except DownloadError:
            return None
        if self.state.cached_sha256(dest) != item.sha256 or dest.stat().st_size != item.size:
            return None
        return FetchResult(item, dest, item.sha256, item.size, skipped=True)

    def fetch_one(self, item: FetchItem) -> FetchResult:
        """Return the outcome of fetching one item (never raises :class:`DownloadError`)."""
        try:
            check_source_url(item.url)
            dest = safe_destination(self.root, item.dest)
            item = self._complete_expectations(item)
            if dest.is_file():
                if self._verified(dest, item):
                    return FetchResult(item, dest, item.sha256 or "", dest.stat().st_size,
                                       skipped=True)
                dest.unlink()  # present but wrong: never leave it under the final name
            return self._download(item, dest)
        except DownloadError as error:
            if not error.url:
                error = DownloadError(error.reason, error.detail, item.url)
            log.warning("failed %s (%s): %s", item.dest, error.reason, error.detail)
            return FetchResult(item, None, error=error)

    def _complete_expectations(self, item: FetchItem) -> FetchItem:
        """Return ``item`` with size and SHA-256 filled in from a ``file://`` source."""
        if item.size is not None and item.sha256 is not None:
            return item
        if not item.url.startswith("file:"):
            raise DownloadError("no_checksum", "an HTTP source needs an expected size and "
                                "SHA-256", item.url)
        source = file_url_path(item.url)
        if not source.is_file():
            raise DownloadError("missing_file", "no such file", item.url)
        return replace(item, size=source.stat().st_size, sha256=self.state.sha256(source))

    def _verified(self, path: Path, item: FetchItem) -> bool:
        if path.stat().st_size != item.size:
            return False
        return self.state.sha256(path) == item.sha256

    def _download(self, item: FetchItem, dest: Path) -> FetchResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        try:
            if item.url.startswith("file:"):
                self._copy_file(item, part)  # local copies are cheap: never resumed
                digest, resumed_from, attempts = self._verify_part(item, part), 0, 1
            else:
                digest, resumed_from, attempts = self._download_http(item, part)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        self.state.record(dest, digest)
        return FetchResult(item, dest, digest, item.size or 0, resumed_from=resumed_from,
                           attempts=attempts)

    def _download_http(self, item: FetchItem, part: Path) -> tuple[str, int, int]:
        """Return ``(sha256, resumed_from, requests)`` once ``part`` is complete and verified.

        Resumed bytes that do not verify may be stitched from two versions of the file:
        they are thrown away and the file fetched from byte 0, once.
        """
        retry = retry_policy(self.options)
        resumed_from = restarts = 0
        while True:
            offset = _part_size(part, item.size or 0)
            if offset is None or offset < (item.size or 0):  # a 0-byte file still needs its .part
                resumed_from = resumed_from or offset or 0
                response = self.http.open(item.url, retry, self.options.timeout_s, offset or 0)
                retry = response.retries or retry
                try:
                    self._receive(response, item, part, offset or 0)
                except _Interrupted as error:
                    retry = _count_retry(retry, item, error)
                    continue
                finally:
                    response.close()  # no-op once the body was read to its end
                    response.release_conn()
            try:
                digest = self._verify_part(item, part)
            except DownloadError:
                if not resumed_from or restarts:
                    raise
                part.unlink(missing_ok=True)
                resumed_from, restarts = 0, 1
                continue
            return digest, resumed_from, len(retry.history) + 1 + restarts

    def _verify_part(self, item: FetchItem, part: Path) -> str:
        """Return the SHA-256 of a complete ``.part`` file that matches ``item``."""
        size = part.stat().st_size
        with open(part, "rb") as f:
            head = f.read(len(LFS_POINTER_PREFIX))
        if size < LFS_POINTER_MAX_BYTES and is_lfs_pointer(head):
            raise lfs_pointer_error(item.url)
        if size != item.size:
            raise DownloadError("size_mismatch", f"got {size} bytes, expected {item.size}",
                                item.url)
        digest = sha256_file(part)
        if digest != item.sha256:
            raise DownloadError("checksum_mismatch",
                                f"SHA-256 {digest} does not match the expected {item.sha256}",
                                item.url)
        return digest

    def _receive(self, response: urllib3.BaseHTTPResponse, item: FetchItem, part: Path,
                 offset: int) -> None:
        """Write the response's body to ``part``, appending when it continues from ``offset``."""
        if response.status == 416:  # the .part is not a prefix of this file
            part.unlink(missing_ok=True)
            raise _Interrupted("HTTP 416 on resume; restarting from byte 0")
        if response.status >= 300:
            raise DownloadError(f"http_{response.status}",
                                f"HTTP {response.status} {response.reason}", item.url)
        if offset and response.status != 206:
            offset = 0  # the server ignored Range: start again
        elif offset and not _content_range_starts_at(response, offset):
            part.unlink(missing_ok=True)
            raise _Interrupted("Content-Range does not continue the .part file")
        # unbuffered: a killed run leaves on disk every byte it received
        with open(part, "ab" if offset else "wb", buffering=0) as out:
            self._copy_stream(response, out, item, offset)

    def _copy_stream(self, response: urllib3.BaseHTTPResponse, out, item: FetchItem,
                     offset: int) -> None:
        received = offset
        limit = max(item.size or 0, LFS_POINTER_MAX_BYTES)
        head = b""
        try:
            while chunk := response.read1(CHUNK_BYTES):  # what has arrived, not 256 KB
                head = head or chunk[: len(LFS_POINTER_PREFIX)]
                out.write(chunk)
                received += len(chunk)
                self._advance(len(chunk))
                if received > limit:  # wrong file: do not fill the disk with it
                    break
        except (ReadTimeoutError, ProtocolError, SSLError) as error:
            raise _Interrupted(f"{type(error).__name__} after {received} bytes") from error
        served_pointer = offset == 0 and is_lfs_pointer(head)
        if received < (item.size or 0) and not served_pointer:  # verification will say so
            raise _Interrupted(f"connection closed after {received} of {item.size} bytes")

    def _copy_file(self, item: FetchItem, part: Path) -> None:
        source = file_url_path(item.url)
        try:
            with open(source, "rb") as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
        except FileNotFoundError as error:
            raise DownloadError("missing_file", "no such file", item.url) from error
        self._advance(item.size or 0)


def _part_size(part: Path, size: int) -> int | None:
    """Return the size of a usable ``.part`` file (None if absent; a too-large one is removed)."""
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        return None
    if offset > size:
        part.unlink()
        return None
    return offset


def _count_retry(retry: Retry, item: FetchItem, error: _Interrupted) -> Retry:
    """Return ``retry`` counted one further after its backoff; DownloadError when spent."""
    try:
        retry = retry.increment("GET", item.url, error=error)
    except MaxRetryError:
        raise DownloadError("retries_exhausted", f"gave up after {len(retry.history) + 1} "
                            f"attempts; last: {error}", item.url) from error
    log.info("retrying %s after %s (attempt %d)", item.url, error, len(retry.history) + 1)
    retry.sleep()
    return retry


def _content_range_starts_at(response: urllib3.BaseHTTPResponse, offset: int) -> bool:
    value = response.headers.get("Content-Range", "")
    return value.startswith(f"bytes {offset}-")


def fetch_all(items: Iterable[FetchItem], root: Path, options: FetchOptions,
              state: VerifiedState) -> list[FetchResult]:
    """Return the results of fetching ``items`` into ``root`` (see :class:`Fetcher`)."""
    return Fetcher(root, options, state).fetch_all(items)


def link_or_copy(source: Path, dest: Path) -> None:
    """Place ``source`` at ``dest`` as a hard link, or a copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
