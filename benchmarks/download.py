"""Download stage figures, against a loopback HTTP server running in its own process.

1. Throughput for 500 files of ~330 KB (CREMA-D's median video size) with 1 vs N workers.
2. The full CREMA-D manifest (7,442 clips x 2 files, real names and metadata, small
   fabricated media so that it fits here): first run, then the no-op re-run with every file
   present (verified-state record: stat only), and for comparison a re-run that has lost its
   verified-state record and must re-hash every file.

Usage: ``python benchmarks/download.py [--workers 8] [--files 500]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.http_server, when run as a script

from pipeline.config import CremaDParams, DownloadParams  # noqa: E402
from pipeline.download.catalogue import LAST_RUN_JSON, prepare_dataset  # noqa: E402
from pipeline.download.fetch import FetchItem, FetchOptions, VerifiedState, fetch_all  # noqa: E402
from pipeline.runtime import sha256_file  # noqa: E402
from tests.http_server import FaultServer, lfs_pointer_for  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets" / "crema-d"
MEDIAN_BYTES = 330_000


def blob(name: str, size: int) -> bytes:
    """Deterministic bytes of ``size`` for ``name``."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


def sizes(n: int) -> dict[str, int]:
    """Sizes of the throughput files: 330 KB +- 20 %."""
    return {f"f{i:04d}.flv": MEDIAN_BYTES + (i * 7919 % 132_000) - 66_000 for i in range(n)}


def small_media(path: str) -> bytes:
    """Fabricated media for the full-manifest run (1-3 KB per file)."""
    return blob(path, 1000 + hashlib.sha256(path.encode()).digest()[0] * 8)


def serve(kind: str, n_files: int, port_queue: mp.Queue, latency_s: float = 0.0) -> None:
    """Run a server (in a child process) for the throughput files or the CREMA-D layout."""
    server = FaultServer()
    server.latency_s = latency_s
    if kind == "throughput":
        server.files = {f"/media/{name}": blob(name, size) for name, size in sizes(n_files).items()}
    else:
        for name in ("VideoDemographics.csv", "SentenceFilenames.csv"):
            server.files[f"/raw/{name}"] = (SHARED / name).read_bytes()
        server.files["/raw/processedResults/summaryTable.csv"] = (
            SHARED / "summaryTable.csv").read_bytes()

        def resolve(path: str) -> bytes | None:
            kind_, _, repo_path = path[1:].partition("/")
            data = small_media(repo_path)
            if kind_ == "raw":
                return lfs_pointer_for(hashlib.sha256(data).hexdigest(), len(data))
            return data if kind_ == "media" else None

        server.resolve = resolve
    port_queue.put(server.server_address[1])
    server.serve_forever()


def start(kind: str, n_files: int = 0, latency_s: float = 0.0) -> tuple[mp.Process, str]:
    """Start a server process; return it and its base URL."""
    queue: mp.Queue = mp.Queue()
    process = mp.Process(target=serve, args=(kind, n_files, queue, latency_s), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{queue.get(timeout=120)}"


def throughput(url: str, n_files: int, workers: int, root: Path) -> tuple[float, int]:
    """Return (seconds, bytes) to fetch the throughput files with ``workers``."""
    items = [FetchItem(f"{url}/media/{name}", f"m/{name}", size,
                       hashlib.sha256(blob(name, size)).hexdigest())
             for name, size in sizes(n_files).items()]
    options = FetchOptions(workers=workers, retries=2, timeout_s=30, progress=False)
    start_s = time.perf_counter()
    results = fetch_all(items, root, options, VerifiedState(root / "verified.json"))
    elapsed = time.perf_counter() - start_s
    assert all(r.ok and not r.skipped for r in results), [r.error for r in results if not r.ok]
    return elapsed, sum(r.size for r in results)


def timed_prepare(params: DownloadParams, out: Path, cache: Path) -> tuple[float, dict]:
    """Return (seconds, this run's fetch counts) of one run of the stage's library function."""
    start_s = time.perf_counter()
    report = prepare_dataset(params, out, cache, progress=False)
    elapsed = time.perf_counter() - start_s
    assert report.info["missing_required"] == 0, report.to_dict()["rejected_by_reason"]
    last_run = json.loads((cache / params.dataset / LAST_RUN_JSON).read_text())
    return elapsed, last_run["counts"]


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--latency-ms", type=int, default=50,
                        help="time to first byte of the second throughput run (a remote CDN)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        for latency_ms in (0, args.latency_ms):
            process, url = start("throughput", args.files, latency_ms / 1000)
            one_s, total = throughput(url, args.files, 1, work / f"w1-{latency_ms}")
            many_s, _ = throughput(url, args.files, args.workers, work / f"wn-{latency_ms}")
            process.terminate()
            mb = total / 1e6
            print(f"throughput, {args.files} files, {mb:.0f} MB, loopback server, "
                  f"{latency_ms} ms time to first byte:")
            print(f"  1 worker : {one_s:6.2f} s  {mb / one_s:7.1f} MB/s  "
                  f"{args.files / one_s:6.1f} files/s")
            print(f"  {args.workers} workers: {many_s:6.2f} s  {mb / many_s:7.1f} MB/s  "
                  f"{args.files / many_s:6.1f} files/s  ({one_s / many_s:.2f}x vs 1 worker)")
        start_s = time.perf_counter()
        for path in (work / "w1-0").rglob("*.flv"):
            sha256_file(path)
        hash_mb_s = mb / (time.perf_counter() - start_s)
        print(f"SHA-256 of files on disk: {hash_mb_s:.0f} MB/s, so re-verifying CREMA-D's "
              f"3,049 MB without the verified-state record would take ~{3049 / hash_mb_s:.0f} s")

        if not SHARED.is_dir():
            print(f"full-manifest no-op run skipped: {SHARED} is absent")
            return
        process, url = start("crema-d")
        params = DownloadParams(dataset="crema-d", workers=args.workers, crema_d=CremaDParams(
            raw_base_url=f"{url}/raw", media_base_url=f"{url}/media", known_bad="flag"))
        out, cache = work / "out", work / "cache"
        first_s, counts = timed_prepare(params, out, cache)
        print(f"full CREMA-D manifest ({counts['files_fetched']} files, small fabricated media):")
        print(f"  first run (14,884 pointers + files): {first_s:7.2f} s")
        noop_s, counts = timed_prepare(params, out, cache)
        assert counts["files_already_verified"] == 7442 * 2 and "files_fetched" not in counts
        print(f"  no-op re-run (verified-state)      : {noop_s:7.2f} s")
        (cache / "crema-d" / "verified.json").unlink()
        rehash_s, counts = timed_prepare(params, out, cache)
        assert counts["files_already_verified"] == 7442 * 2
        print(f"  re-run without the state (re-hash) : {rehash_s:7.2f} s  (media here is tiny; "
              "see the SHA-256 rate above for real sizes)")
        process.terminate()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
