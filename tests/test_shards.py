"""ShardWriter: rows round-trip in order, shards roll at the target size, nothing half-written."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.shards import ShardWriter, fixed_size_blobs, list_shards, read_shards

SCHEMA = pa.schema([pa.field("clip_id", pa.string(), nullable=False),
                    pa.field("pcm", pa.binary(), nullable=False)])


def rows(n: int, start: int = 0) -> pa.Table:
    numbers = range(start, start + n)
    return pa.table({"clip_id": [f"c{i:04d}" for i in numbers],
                     "pcm": [bytes([i % 256]) * 2000 for i in numbers]}, schema=SCHEMA)


def test_rows_come_back_in_order_in_row_groups_of_the_set_size(tmp_path):
    with ShardWriter(tmp_path, "audio", SCHEMA, 2**30, 4) as writer:
        writer.write(rows(3))
        writer.write(rows(7, start=3))
    assert writer.paths == list_shards(tmp_path, "audio") == [tmp_path / "audio-00000.parquet"]
    assert read_shards(writer.paths).equals(rows(10))
    metadata = pq.ParquetFile(writer.paths[0]).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]
    blobs = fixed_size_blobs(read_shards(writer.paths).column("pcm"), "u1")
    assert blobs.shape == (10, 2000) and blobs[9, 0] == 9


def test_a_new_shard_starts_once_the_target_size_is_reached(tmp_path):
    with ShardWriter(tmp_path, "audio", SCHEMA, 10_000, 4) as writer:
        writer.write(rows(20))
    # 4 rows of 2 kB uncompressed PCM: each row group crosses 8 kB, two cross 10 kB.
    assert [p.name for p in writer.paths] == [f"audio-{i:05d}.parquet" for i in range(3)]
    assert read_shards(writer.paths).equals(rows(20))
    assert writer.rows_written == 20


def test_same_rows_give_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        with ShardWriter(tmp_path / name, "audio", SCHEMA, 2**30, 4) as writer:
            writer.write(rows(9))
    assert ((tmp_path / "a" / "audio-00000.parquet").read_bytes()
            == (tmp_path / "b" / "audio-00000.parquet").read_bytes())


def test_a_failing_writer_leaves_only_the_finished_shards(tmp_path):
    with pytest.raises(RuntimeError, match="killed"), \
         ShardWriter(tmp_path, "audio", SCHEMA, 10_000, 4) as writer:
        writer.write(rows(20))  # shards 0 and 1 finish; shard 2 is open with one row group
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio-00000.parquet",
                                                          "audio-00001.parquet"]
    assert writer.paths == list_shards(tmp_path, "audio")
    assert read_shards(writer.paths).equals(rows(16))
