"""Per-clip stages on a Ray cluster: chunks of clips as tasks, each writing its own part.

:func:`map_clips` keeps :func:`pipeline.runtime.map_items`'s contract - ``(item, result or
QuarantineError)`` in input order - and runs the work either in that local process pool
(``cluster.executor: local``) or on Ray (``ray``). With Ray the items go out in chunks of
``cluster.chunk_clips``; each chunk is one task that runs the same per-clip function through
the same quarantine boundary and writes its results to its own part file (atomically), and
the driver reads the parts back in chunk order. The stage then writes its shards and report
from the same results in the same order as with the local pool: the same bytes.

A worker process or node that dies mid-chunk costs that chunk's re-run (Ray retries the task
up to ``cluster.max_retries`` times; an unfinished part is never under its final name), not
the run. An exception other than :class:`~pipeline.runtime.QuarantineError` is a bug or a
broken environment: it is not retried and propagates from the driver.

Shared storage: the workers open the media, the faces stage's spilled tracks and the part
files by the paths the driver gives them, and import the code from the driver's checkout, so
every node must see the workspace (checkout, ``data/``) at the same path - a workspace on a
shared file system (NFS, Lustre ...) - and run the same Python environment. Nothing but the
task arguments and the part paths travels through Ray's object store.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

import pipeline
from pipeline.config import ClusterParams
from pipeline.runtime import (
    MAX_CHUNK_ITEMS,
    Item,
    QuarantineError,
    Result,
    atomic_path,
    map_items,
    quarantine_boundary,
)

log = logging.getLogger(__name__)

CODE_ROOT = Path(pipeline.__file__).resolve().parents[1]
"""The checkout the driver runs from: the workers import ``pipeline`` from there too."""
PART_NAME = "part-{:06d}.pickle"
RUNTIME_ENV = {"env_vars": {
    "PYTHONPATH": str(CODE_ROOT),
    # Ray runs task workers at niceness 15 (read from this variable); on nodes shared with
    # other work that yields the stage's CPU to it (2 cores at load 15: Ray 55 % slower than
    # the local pool, whose processes run at 0). The stage is the work: the driver's priority.
    "RAY_worker_niceness": "0",
}}
"""The Ray workers' environment: this checkout's code, the driver's priority."""


def map_clips(function: Callable[[Item], Result], items: Sequence[Item], cluster: ClusterParams,
              scratch: Path, workers: int, desc: str, unit: str = "clip",
              max_chunk: int = MAX_CHUNK_ITEMS) -> Iterator[tuple[Item, Result | QuarantineError]]:
    """Yield ``(item, function(item))`` in input order, a :class:`QuarantineError` as the value.

    ``cluster.executor`` ``local``: :func:`~pipeline.runtime.map_items` with ``workers``
    processes (``max_chunk`` items at a time). ``ray``: chunks of ``cluster.chunk_clips``
    items as Ray tasks writing their parts under ``scratch`` (a directory on storage every
    node sees; removed afterwards). ``function`` must pickle (a module-level function or a
    ``functools.partial`` of one).
    """
    if cluster.executor == "local":
        yield from map_items(function, items, workers, desc, unit, max_chunk)
        return
    import ray  # only a cluster run pays Ray's import

    connect(cluster)
    scratch.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix=f".{desc}-parts.", dir=scratch))
    try:
        chunks = [items[i:i + cluster.chunk_clips]
                  for i in range(0, len(items), cluster.chunk_clips)]
        task = ray.remote(run_chunk).options(num_cpus=1, max_retries=cluster.max_retries,
                                             retry_exceptions=False)
        shared = ray.put(function)
        refs = [task.remote(shared, chunk, str(parts / PART_NAME.format(k)))
                for k, chunk in enumerate(chunks)]
        with tqdm(total=len(items), desc=desc, unit=unit) as bar:
            for chunk, ref in zip(chunks, refs, strict=True):
                results = read_part(Path(ray.get(ref)))
                bar.update(len(chunk))
                yield from zip(chunk, results, strict=True)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def run_chunk(function: Callable[[Item], Result], chunk: Sequence[Item], part: str) -> str:
    """Return ``part`` after writing the results of ``function`` over ``chunk`` to it.

    The Ray task: each item goes through the quarantine boundary, as in the local pool; the
    part appears under its name only when the whole chunk is done.
    """
    results = [quarantine_boundary(function, item) for item in chunk]
    with atomic_path(part) as tmp, open(tmp, "wb") as out:
        pickle.dump(results, out, protocol=pickle.HIGHEST_PROTOCOL)
    return part


def read_part(path: Path) -> list[Any]:
    """Return the results a chunk of this run wrote to ``path``, after deleting the file."""
    with open(path, "rb") as part:
        results = pickle.load(part)
    path.unlink()
    return results


def connect(cluster: ClusterParams) -> None:
    """Join the Ray cluster at ``cluster.address`` (or start Ray here when it is empty), once.

    The workers get the driver's checkout on their ``PYTHONPATH``: the cluster's nodes share
    the workspace (module docstring).
    """
    import ray

    if ray.is_initialized():
        return
    if cluster.address:
        ray.init(address=cluster.address, runtime_env=RUNTIME_ENV, logging_level=logging.WARNING,
                 log_to_driver=False)
    else:
        ray.init(runtime_env=RUNTIME_ENV, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    resources = ray.cluster_resources()
    log.info("Ray: %d node(s), %g CPU(s) at %s", len(ray.nodes()), resources.get("CPU", 0),
             cluster.address or "a local instance")


@contextlib.contextmanager
def session(cluster: ClusterParams) -> Iterator[None]:
    """Run the body with Ray connected as :func:`map_clips` needs; disconnect afterwards.

    Local runs do nothing. A Ray connection this body opened is closed at its end (a Ray
    started here stops with it); one that was open before is left open.
    """
    if cluster.executor == "local":
        yield
        return
    import ray

    opened = not ray.is_initialized()
    try:
        yield
    finally:
        if opened and ray.is_initialized():
            ray.shutdown()
