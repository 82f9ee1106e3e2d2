import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.download.fetch import (
    DownloadError,
    FetchItem,
    FetchOptions,
    HttpClient,
    VerifiedState,
    check_source_url,
    fetch_all,
    fetch_bytes,
    safe_destination,
)
from tests.http_server import FaultServer

FAST = FetchOptions(workers=4, retries=3, timeout_s=0.5, backoff_s=0.01, progress=False)


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def _blob(seed: int, size: int = 50_000) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32)


def _item(server: FaultServer, name: str, data: bytes) -> FetchItem:
    server.files[f"/media/{name}"] = data
    return FetchItem(f"{server.url}/media/{name}", f"media/{name}", len(data),
                     hashlib.sha256(data).hexdigest())


def _fetch(root: Path, items, options: FetchOptions = FAST):
    state = VerifiedState(root / ".verified.json")
    return fetch_all(items, root, options, state)


def _final_names_are_verified(root: Path, expected: dict[str, bytes], stop: threading.Event,
                              seen_bad: list[str]) -> None:
    """Poll the final names during a download; record any content that is not the real one."""
    while not stop.is_set():
        for name, data in expected.items():
            path = root / "media" / name
            try:
                content = path.read_bytes()
            except FileNotFoundError:
                continue
            if content != data:
                seen_bad.append(name)


def test_every_fault_has_its_exact_outcome(server, tmp_path):
    blobs = {name: _blob(i) for i, name in enumerate(
        ["ok.flv", "e500.flv", "drop.flv", "wrong.flv", "missing.flv", "pointer.flv", "slow.flv"]
    )}
    items = [_item(server, name, data) for name, data in blobs.items()]
    del server.files["/media/missing.flv"]
    server.fail("/media/e500.flv", "500")
    server.fail("/media/drop.flv", "drop")
    server.always["/media/wrong.flv"] = "wrong"
    server.always["/media/pointer.flv"] = "pointer"
    server.fail("/media/slow.flv", "slow")
    server.slow_s = 1.5  # > timeout_s

    stop, seen_bad = threading.Event(), []
    watcher = threading.Thread(target=_final_names_are_verified,
                               args=(tmp_path, blobs, stop, seen_bad))
    watcher.start()
    try:
        results = {Path(r.item.dest).name: r for r in _fetch(tmp_path, items)}
    finally:
        stop.set()
        watcher.join()

    assert seen_bad == []
    for name in ("ok.flv", "e500.flv", "drop.flv", "slow.flv"):
        assert results[name].ok, results[name].error
        assert (tmp_path / "media" / name).read_bytes() == blobs[name]
    assert results["ok.flv"].attempts == 1
    assert results["e500.flv"].attempts == 2
    assert results["slow.flv"].attempts == 2
    half = len(blobs["drop.flv"]) // 2
    assert results["drop.flv"].resumed_from == half
    assert [r.range for r in server.requests_for("/media/drop.flv")] == [None, f"bytes={half}-"]

    expected_failures = {"wrong.flv": "checksum_mismatch", "missing.flv": "http_404",
                         "pointer.flv": "lfs_pointer"}
    for name, reason in expected_failures.items():
        assert not results[name].ok
        assert results[name].error.reason == reason
        assert results[name].error.url.endswith(f"/media/{name}")
        assert not (tmp_path / "media" / name).exists()
        assert not (tmp_path / "media" / f"{name}.part").exists()
    assert "git lfs pull" in results["pointer.flv"].error.detail
    assert len(server.requests_for("/media/missing.flv")) == 1  # 4xx is not retried
    assert len(server.requests_for("/media/wrong.flv")) == 1  # a fresh mismatch is final


def test_transient_failures_give_up_after_the_retries(server, tmp_path):
    item = _item(server, "down.flv", _blob(1))
    server.always["/media/down.flv"] = "500"
    (result,) = _fetch(tmp_path, [item])
    assert result.error.reason == "retries_exhausted"
    assert len(server.requests_for("/media/down.flv")) == FAST.retries + 1
    assert not (tmp_path / "media" / "down.flv").exists()


def test_a_verified_file_is_skipped_without_a_request_or_rehash(server, tmp_path):
    items = [_item(server, f"f{i}.flv", _blob(i, 1000)) for i in range(5)]
    assert all(r.ok and not r.skipped for r in _fetch(tmp_path, items))
    n_requests = len(server.requests)

    again = _fetch(tmp_path, items)
    assert all(r.ok and r.skipped for r in again)
    assert len(server.requests) == n_requests


def test_a_file_changed_after_verification_is_fetched_again(server, tmp_path):
    data = _blob(7, 4000)
    item = _item(server, "a.flv", data)
    _fetch(tmp_path, [item])
    path = tmp_path / "media" / "a.flv"
    path.write_bytes(b"\0" * len(data))  # same size, new mtime: the record no longer matches
    (result,) = _fetch(tmp_path, [item])
    assert result.ok and not result.skipped
    assert path.read_bytes() == data


def test_a_stale_part_that_is_not_a_prefix_is_restarted(server, tmp_path):
    data = _blob(3, 10_000)
    item = _item(server, "s.flv", data)
    part = tmp_path / "media" / "s.flv.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 100)  # resumed bytes from another version of the file
    (result,) = _fetch(tmp_path, [item])
    assert result.ok
    assert (tmp_path / "media" / "s.flv").read_bytes() == data
    assert [r.range for r in server.requests_for("/media/s.flv")] == ["bytes=700-", None]


def test_file_sources_are_copied_and_hashed(tmp_path):
    source = tmp_path / "src" / "clip.mpg"
    source.parent.mkdir()
    source.write_bytes(b"video" * 100)
    root = tmp_path / "cache"
    (result,) = _fetch(root, [FetchItem(source.as_uri(), "folder/clip.mpg")])
    assert result.ok
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (root / "folder" / "clip.mpg").read_bytes() == source.read_bytes()
    pointer = tmp_path / "src" / "pointer.flv"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    (result,) = _fetch(root, [FetchItem(pointer.as_uri(), "folder/pointer.flv")])
    assert result.error.reason == "lfs_pointer"


def test_an_http_source_without_checksum_is_refused(server, tmp_path):
    (result,) = _fetch(tmp_path, [FetchItem(f"{server.url}/x", "x")])
    assert result.error.reason == "no_checksum"


@pytest.mark.parametrize("url", [
    "http://example.com/a.flv", "ftp://127.0.0.1/a", "http://10.0.0.1/a", "gopher://x",
])
def test_only_https_loopback_http_and_file_sources(url):
    with pytest.raises(DownloadError, match="only https"):
        check_source_url(url)


@pytest.mark.parametrize("url", [
    "https://media.githubusercontent.com/x", "http://127.0.0.1:8000/a", "http://localhost/a",
    "http://[::1]:80/a", "file:///tmp/a",
])
def test_allowed_sources(url):
    check_source_url(url)


@pytest.mark.parametrize("path", ["../evil", "a/../../evil", "/etc/passwd", "", "~/x"])
def test_paths_escaping_the_root_are_rejected(tmp_path, path):
    with pytest.raises(DownloadError) as error:
        safe_destination(tmp_path, path)
    assert error.value.reason == "bad_path"


def test_escaping_manifest_entry_is_a_per_file_failure(server, tmp_path):
    good = _item(server, "g.flv", _blob(5, 100))
    bad = FetchItem(good.url, "../outside.flv", good.size, good.sha256)
    results = _fetch(tmp_path / "root", [bad, good])
    assert [r.ok for r in results] == [False, True]
    assert results[0].error.reason == "bad_path"
    assert not (tmp_path / "outside.flv").exists()


def test_symlink_escape_is_rejected(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path, tmp_path / "root" / "link")
    with pytest.raises(DownloadError):
        safe_destination(tmp_path / "root", "link/x")


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def test_a_zero_byte_file_is_fetched_over_http_and_copied_from_file(server, tmp_path):
    item = _item(server, "empty.flv", b"")
    source = tmp_path / "src" / "empty.mp4"
    source.parent.mkdir()
    source.write_bytes(b"")
    results = _fetch(tmp_path / "root", [item, FetchItem(source.as_uri(), "folder/empty.mp4")])
    for result in results:
        assert result.ok, result.error
        assert (result.size, result.sha256) == (0, EMPTY_SHA256)
        assert result.path.read_bytes() == b""
        assert not result.path.with_name(result.path.name + ".part").exists()
    assert [r.range for r in server.requests_for("/media/empty.flv")] == [None]


def test_retry_after_is_honoured(server, tmp_path):
    item = _item(server, "busy.flv", _blob(11, 2000))
    server.fail("/media/busy.flv", "429")
    server.retry_after_s = 1
    start = time.monotonic()
    (result,) = _fetch(tmp_path, [item])  # backoff_s is 0.01: only Retry-After waits 1 s
    assert time.monotonic() - start >= 0.95
    assert result.ok and result.attempts == 2
    assert [r.fault for r in server.requests_for("/media/busy.flv")] == ["429", None]


def test_connections_are_kept_alive(server, tmp_path):
    items = [_item(server, f"k{i}.flv", _blob(i, 3000)) for i in range(6)]
    one_worker = FetchOptions(workers=1, retries=0, timeout_s=5, progress=False)
    assert all(r.ok for r in _fetch(tmp_path, items, one_worker))
    assert len({r.client_port for r in server.requests}) == 1  # one connection, six requests


def test_redirects_are_followed_only_to_allowed_sources(server, tmp_path):
    data = _blob(12, 1500)
    item = _item(server, "real.flv", data)
    server.redirects["/moved.flv"] = "/media/real.flv"  # relative, same loopback server
    server.redirects["/away.flv"] = "http://example.com/real.flv"
    moved = FetchItem(f"{server.url}/moved.flv", "moved.flv", item.size, item.sha256)
    away = FetchItem(f"{server.url}/away.flv", "away.flv", item.size, item.sha256)
    ok, refused = _fetch(tmp_path, [moved, away])
    assert ok.ok and (tmp_path / "moved.flv").read_bytes() == data
    assert refused.error.reason == "bad_url"
    assert refused.error.url == "http://example.com/real.flv"
    assert not (tmp_path / "away.flv").exists()
    with pytest.raises(DownloadError) as error:
        fetch_bytes(f"{server.url}/away.flv", FAST)
    assert error.value.reason == "bad_url"


def test_fetch_bytes_retries_transients_and_names_permanent_failures(server):
    server.files["/meta.csv"] = b"a,b\n1,2\n"
    server.fail("/meta.csv", "500", "drop")
    assert fetch_bytes(f"{server.url}/meta.csv", FAST) == b"a,b\n1,2\n"
    assert len(server.requests_for("/meta.csv")) == 3
    with pytest.raises(DownloadError) as error:
        fetch_bytes(f"{server.url}/nothing.csv", FAST)
    assert (error.value.reason, error.value.url) == ("http_404", f"{server.url}/nothing.csv")
    server.always["/down.csv"] = "500"
    server.files["/down.csv"] = b"x"
    with pytest.raises(DownloadError) as error:
        fetch_bytes(f"{server.url}/down.csv", FAST)
    assert error.value.reason == "retries_exhausted"
    assert error.value.detail.startswith(f"gave up after {FAST.retries + 1} attempts")


def test_the_environment_proxy_is_used_except_for_loopback_and_no_proxy(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "mirror.example")
    http = HttpClient(2)
    direct = http.pool("http://127.0.0.1:8000/a")
    assert http.pool("https://media.githubusercontent.com/x") is not direct
    assert http.pool("https://mirror.example/x") is direct
    assert http.pool("http://localhost/a") is direct
