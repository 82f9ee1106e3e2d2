"""Parquet shards: a size-rolling atomic writer and small readers.

Stages write their outputs as a few large Parquet files (``<prefix>-NNNNN.parquet``) rather
than many small files; DVC tracks and pushes those far better. :class:`ShardWriter` buffers
rows into row groups of a fixed row count and starts a new file once the current one reaches
the target size. Each file is written under a temporary name and renamed when complete, so
a killed writer never leaves a half-written shard under a final name. The bytes depend only
on the rows written and the settings: no timestamps, so equal inputs give equal files.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runtime import atomic_path
from pipeline.schemas import conform

log = logging.getLogger(__name__)

COMPRESSION = "snappy"  # reads 2-3x faster than zstd
# PCM barely compresses (under 10 %) yet is most of a shard's bytes: store it plain, so that
# training reads skip decompressing it.
UNCOMPRESSED_COLUMNS = frozenset({"audio", "pcm"})


def shard_name(prefix: str, index: int) -> str:
    """Return the file name of shard ``index``: ``<prefix>-NNNNN.parquet``."""
    return f"{prefix}-{index:05d}.parquet"


def list_shards(directory: str | Path, prefix: str) -> list[Path]:
    """Return the shards ``<prefix>-*.parquet`` in ``directory``, sorted by name."""
    return sorted(Path(directory).glob(f"{prefix}-[0-9]*.parquet"))


class ShardWriter:
    """Writes tables with one schema into size-bounded Parquet shards.

    Use as a context manager; :meth:`write` accepts any table that :func:`conform` can cast
    to the schema. Rows are written in the order given.

    Args:
        directory: Where the shards go (created if needed).
        prefix: File name prefix: ``<prefix>-00000.parquet``, ``<prefix>-00001.parquet`` ...
        schema: Arrow schema every shard has exactly (with its field docs).
        target_bytes: Start a new shard once the current file reaches this size.
        row_group_rows: Rows per Parquet row group (the unit that readers fetch).
    """

    def __init__(
        self,
        directory: str | Path,
        prefix: str,
        schema: pa.Schema,
        target_bytes: int,
        row_group_rows: int,
    ) -> None:
        if target_bytes <= 0 or row_group_rows <= 0:
            raise ValueError("target_bytes and row_group_rows must be positive")
        self.directory = Path(directory)
        self.prefix = prefix
        self.schema = schema
        self.target_bytes = target_bytes
        self.row_group_rows = row_group_rows
        self.paths: list[Path] = []
        self.rows_written = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._open: _OpenShard | None = None
        # Dictionary-encoding unique blobs (faces, PCM) costs time and saves nothing.
        self._dictionary_columns = [
            f.name for f in schema if not pa.types.is_binary(f.type)
            and not pa.types.is_large_binary(f.type)
        ]

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)

    def write(self, table: pa.Table) -> None:
        """Append the rows of ``table`` (cast to the schema) to the shards."""
        table = conform(table, self.schema)
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.row_group_rows:
            self._flush_row_group(self.row_group_rows)

    def close(self) -> list[Path]:
        """Write the last partial row group, finish the open shard; return all shard paths."""
        if self._pending_rows:
            self._flush_row_group(self._pending_rows)
        self._finish_shard()
        return self.paths

    def _flush_row_group(self, n_rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        group, rest = pending.slice(0, n_rows), pending.slice(n_rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        shard = self._open or self._open_shard()
        shard.writer.write_table(group, row_group_size=n_rows)
        self.rows_written += n_rows
        if shard.tmp.stat().st_size >= self.target_bytes:
            self._finish_shard()

    def _open_shard(self) -> _OpenShard:
        path = self.directory / shard_name(self.prefix, len(self.paths))
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(path))
            writer = stack.enter_context(pq.ParquetWriter(
                tmp,
                self.schema,
                compression={name: "none" if name in UNCOMPRESSED_COLUMNS else COMPRESSION
                             for name in self.schema.names},
                use_dictionary=self._dictionary_columns,
                write_statistics=False,
            ))
            # Kept open past this block: closing the stack closes the writer, then renames.
            self._open = _OpenShard(writer, tmp, stack.pop_all())
        self.paths.append(path)
        return self._open

    def _finish_shard(self) -> None:
        shard, self._open = self._open, None
        if shard is not None:
            shard.closing.close()  # the writer's footer, then the rename onto the final name
            log.debug("wrote %s", self.paths[-1])

    def _abort(self, *exc_info: Any) -> None:
        shard, self._open = self._open, None
        if shard is not None:
            # Closes the writer and lets atomic_path delete the temporary file.
            shard.closing.__exit__(*exc_info)
        if self.paths and not self.paths[-1].exists():
            self.paths.pop()


@dataclass(frozen=True)
class _OpenShard:
    """The shard being written: its Parquet writer, temporary file, and how to close both."""

    writer: pq.ParquetWriter
    tmp: Path
    closing: contextlib.ExitStack


def read_shards(paths: Sequence[str | Path], columns: Sequence[str] | None = None) -> pa.Table:
    """Return the rows of all ``paths`` concatenated in order (only ``columns`` if given)."""
    tables = [pq.read_table(p, columns=list(columns) if columns else None) for p in paths]
    if not tables:
        raise ValueError("no shards to read")
    return pa.concat_tables(tables)


def iter_row_groups(path: str | Path, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """Yield each row group of the Parquet file at ``path`` as a table."""
    with pq.ParquetFile(path) as parquet:
        for index in range(parquet.num_row_groups):
            yield parquet.read_row_group(index, columns=list(columns) if columns else None)


def fixed_size_blobs(array: pa.Array | pa.ChunkedArray, dtype: np.dtype | type) -> np.ndarray:
    """Return a binary column whose values all have one length as an ``(n, k)`` array.

    Zero-copy where the column is one chunk: the values of a binary array lie back to back
    in its data buffer. Raises ``ValueError`` when the values differ in length.
    """
    if isinstance(array, pa.ChunkedArray):
        # combine_chunks copies even a single chunk; take that chunk as it is.
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    if array.null_count:
        raise ValueError("binary column holds nulls")
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset:array.offset + n + 1]
    lengths = np.diff(offsets)
    if (lengths != lengths[0]).any():
        raise ValueError(f"binary values differ in length ({lengths.min()}..{lengths.max()})")
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data.view(dtype).reshape(n, -1)

