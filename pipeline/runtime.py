"""Helpers every stage shares: seeding, logging, worker pools, atomic writes, stage reports."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
QUARANTINE_PARQUET = "quarantine.parquet"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA) with ``seed``."""
    import torch  # local: stages without models should not pay torch's import time

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger for a command-line stage (called once, by the CLI)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def default_workers(requested: int) -> int:
    """Return ``requested`` worker processes, or the usable core count when it is 0."""
    if requested > 0:
        return requested
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sha256_file(path: str | Path) -> str:
    """Return the SHA-256 hex digest of the file at ``path``."""
    return hash_file(path, hashlib.sha256()).hexdigest()


def hash_file(path: str | Path, digest: hashlib._Hash) -> hashlib._Hash:
    """Return ``digest`` updated with the bytes of the file at ``path`` (read in blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: digest)  # a callable returning the hash to update


Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_CHUNK_ITEMS = 16
"""Items a worker takes at once, at most: fewer round trips for short items (audio, ~10 ms
each); long items (a faces clip, 0.1-0.3 s) balance the workers better one at a time."""


def map_items(function: Callable[[Item], Result], items: Sequence[Item], workers: int,
              desc: str, unit: str = "clip", max_chunk: int = MAX_CHUNK_ITEMS,
              ) -> Iterator[tuple[Item, Result | QuarantineError]]:
    """Yield ``(item, function(item))`` in input order; a :class:`QuarantineError` is the value.

    The per-item boundary of a stage: a ``QuarantineError`` raised for one item comes back
    in its place for the caller to record, anything else propagates. Runs in a pool of
    ``workers`` forked processes (``function`` must pickle: a module-level function or a
    ``functools.partial`` of one, handed out up to ``max_chunk`` items at a time) when
    ``workers > 1``, in this process otherwise, with a tqdm bar. The order is the input
    order whatever the worker count, so what the caller writes from the results is the
    same bytes.
    """
    guarded = partial(_quarantine_boundary, function)
    if workers <= 1 or len(items) <= 1:
        results: Iterator = map(guarded, items)
        yield from zip(items, tqdm(results, total=len(items), desc=desc, unit=unit), strict=True)
        return
    chunksize = max(1, min(max_chunk, len(items) // (workers * 4)))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.imap(guarded, items, chunksize=chunksize)
        yield from zip(items, tqdm(results, total=len(items), desc=desc, unit=unit), strict=True)


def _quarantine_boundary(function: Callable[[Item], Result],
                         item: Item) -> Result | QuarantineError:
    try:
        return function(item)
    except QuarantineError as error:
        return error


def git_revision(cwd: str | Path | None = None) -> str:
    """Return the current git commit (with ``-dirty`` when modified), or ``unknown``."""
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev or "unknown"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only on success.

    A killed or failing writer leaves at most a ``.tmp`` file behind, never a half-written
    file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(_mode_from_umask(0o666))  # mkstemp makes it owner-only
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(_mode_from_umask(0o777))  # mkdtemp makes it owner-only; outputs are shared
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete what killed runs of :func:`atomic_directory` left beside ``path``; return it.

    Only the names ``atomic_directory(path)`` makes match (``.<name>.`` + tempfile's 8
    random characters + ``.tmp``): other files and other outputs' temporaries stay. For a
    stage's start: the stage owns its output (DVC runs a repository's stages one at a time).
    """
    path = Path(path)
    ours = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    siblings = path.parent.iterdir() if path.parent.is_dir() else iter(())
    stale = sorted(p for p in siblings
                   if ours.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
    for directory in stale:
        log.info("removing %s, left by a killed run", directory)
        shutil.rmtree(directory)
    return stale


def _mode_from_umask(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


class QuarantineError(Exception):
    """Expected bad input for one item (no face, no audio, truncated file ...).

    Raised inside per-item work and caught at the per-item boundary, where it is recorded in
    the stage report instead of stopping the stage. ``reason`` is a short stable code
    (``no_face``, ``decode_error``) that reports count by; the message says what and where.
    """

    def __init__(self, reason: str, message: str, source: str | Path = "") -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.reason = reason
        self.detail = message
        self.source = str(source)

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        # Exception pickles its args (the formatted message) only: a worker process's error
        # would fail to unpickle in the parent without this.
        return type(self), (self.reason, self.detail, self.source)


class EmptyOutputError(RuntimeError):
    """A stage's output would be empty, or less than the next stage needs.

    Raised after the stage wrote its report and quarantine table (so they can be read); the
    message says what is missing, the counts per quarantine reason and where the report is.
    """

    def __init__(self, problem: str, report: StageReport, out_dir: str | Path) -> None:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.reasons().items()))
        super().__init__(
            f"{report.stage}: {problem}; quarantined by reason: {reasons or 'none'}; "
            f"see {Path(out_dir) / REPORT_JSON} and {QUARANTINE_PARQUET}"
        )


@dataclass(frozen=True)
class Rejection:
    """One quarantined item: what, why, and where it came from."""

    item: str
    """The item's identity (usually the clip id)."""
    reason: str
    """Short stable code, e.g. ``no_face``."""
    detail: str
    """Human-readable explanation."""
    source: str = ""
    """The file or URL the item came from."""


@dataclass
class StageReport:
    """Counts per outcome plus a quarantine table, written next to a stage's outputs."""

    stage: str
    counts: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        """Add ``n`` to the count of ``outcome``."""
        self.counts[outcome] += n

    def reject(self, item: str, reason: str, detail: str, source: str | Path = "") -> None:
        """Quarantine ``item`` and count it under ``rejected:<reason>``."""
        self.rejections.append(Rejection(item, reason, detail, str(source)))
        self.counts[f"rejected:{reason}"] += 1
        log.warning("quarantined %s (%s): %s", item, reason, detail)

    def reject_error(self, item: str, error: QuarantineError) -> None:
        """Quarantine ``item`` with the reason, message and source of ``error``."""
        self.reject(item, error.reason, error.detail, error.source)

    @property
    def n_rejected(self) -> int:
        """Return the number of quarantined items."""
        return len(self.rejections)

    def reasons(self) -> Counter[str]:
        """Return the number of quarantined items per reason."""
        return Counter(r.reason for r in self.rejections)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (rejections sorted for stable output)."""
        return {
            "stage": self.stage,
            "counts": dict(sorted(self.counts.items())),
            "rejected": self.n_rejected,
            "rejected_by_reason": dict(sorted(self.reasons().items())),
            "info": self.info,
            "quarantine": [r.__dict__ for r in self._sorted_rejections()],
        }

    def _sorted_rejections(self) -> list[Rejection]:
        return sorted(self.rejections, key=lambda r: (r.item, r.reason, r.source))

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``quarantine.parquet`` into ``out_dir``; return the JSON."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = self._sorted_rejections()
        table = pa.table(
            {name: pa.array([getattr(r, name) for r in rows], pa.string())
             for name in ("item", "reason", "detail", "source")}
        )
        with atomic_path(out_dir / QUARANTINE_PARQUET) as tmp:
            pq.write_table(table, tmp)
        atomic_write_json(out_dir / REPORT_JSON, self.to_dict())
        return out_dir / REPORT_JSON
