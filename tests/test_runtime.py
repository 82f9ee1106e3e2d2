import json
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.runtime import (
    QuarantineError,
    StageReport,
    atomic_directory,
    atomic_path,
    atomic_write_json,
    map_items,
    remove_stale_temporaries,
    seed_everything,
)
from tests.conftest import REPO


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert draw() != first


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_json_replaces(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1}


def test_atomic_directory_swaps_only_on_success(tmp_path):
    out = tmp_path / "shards"
    with atomic_directory(out) as tmp:
        (tmp / "part-0.parquet").write_text("x")
    assert (out / "part-0.parquet").exists()
    with pytest.raises(ValueError), atomic_directory(out) as tmp:
        (tmp / "part-1.parquet").write_text("y")
        raise ValueError
    assert sorted(os.listdir(out)) == ["part-0.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["shards"]


def test_stage_report_counts_and_quarantine_table(tmp_path):
    report = StageReport("faces")
    report.count("ok", 3)
    report.reject("clip_b", "no_face", "no face in 75 frames", "b.flv")
    report.reject_error("clip_a", QuarantineError("decode_error", "truncated", "a.flv"))
    path = report.write(tmp_path)
    data = json.loads(path.read_text())
    assert data["counts"] == {"ok": 3, "rejected:decode_error": 1, "rejected:no_face": 1}
    assert data["rejected_by_reason"] == {"decode_error": 1, "no_face": 1}
    table = pq.read_table(tmp_path / "quarantine.parquet").to_pylist()
    assert [r["item"] for r in table] == ["clip_a", "clip_b"]
    assert table[0] == {"item": "clip_a", "reason": "decode_error", "detail": "truncated",
                        "source": "a.flv"}


def test_quarantine_error_names_the_file():
    error = QuarantineError("no_audio", "no audio stream", "/data/x.flv")
    assert "/data/x.flv" in str(error) and error.reason == "no_audio"


def test_quarantine_error_survives_pickling():
    # A worker process sends it back to the stage; unpickling must not fail (a Pool hangs).
    error = pickle.loads(pickle.dumps(QuarantineError("no_audio", "no audio stream", "x.flv")))
    assert (error.reason, error.detail, error.source) == ("no_audio", "no audio stream", "x.flv")
    assert str(error) == "x.flv: no audio stream"


def test_remove_stale_temporaries_takes_only_what_atomic_directory_left(tmp_path):
    # A run killed inside atomic_directory (os._exit skips every cleanup, as SIGKILL does).
    code = ("import os, sys\nfrom pipeline.runtime import atomic_directory\n"
            "with atomic_directory(sys.argv[1]) as tmp:\n"
            "    (tmp / 'spill').write_text('x')\n    os._exit(9)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "faces")], cwd=REPO)
    assert done.returncode == 9
    (killed,) = tmp_path.glob(".faces.*.tmp")
    (tmp_path / "faces").mkdir()  # the last good output
    for name in (".faces.keep.tmp", ".faces2.abcdefgh.tmp", ".audio.abcdefgh.tmp",
                 ".faces.abcdefgh.tmp.old"):
        (tmp_path / name).mkdir()
    (tmp_path / ".faces.abcdefg_.tmp").write_text("a file, not a directory")
    kept = sorted(p.name for p in tmp_path.iterdir() if p != killed)
    assert remove_stale_temporaries(tmp_path / "faces") == [killed]
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    assert remove_stale_temporaries(tmp_path / "absent" / "faces") == []


def _square_unless_odd(n: int) -> int:
    if n % 2:
        raise QuarantineError("odd", f"{n} is odd", f"item{n}.flv")
    return n * n


def _fail_on_three(n: int) -> int:
    if n == 3:
        raise RuntimeError("a bug, not bad input")
    return n


@pytest.mark.parametrize("workers", [1, 2])
def test_map_items_keeps_input_order_and_returns_quarantine_errors(workers):
    items = list(range(40))
    results = list(map_items(_square_unless_odd, items, workers, "test"))
    assert [item for item, _ in results] == items
    for n, result in results:
        if n % 2:  # came back from a worker process with its fields
            assert isinstance(result, QuarantineError)
            assert (result.reason, result.detail, result.source) == ("odd", f"{n} is odd",
                                                                     f"item{n}.flv")
        else:
            assert result == n * n


@pytest.mark.parametrize("workers", [1, 2])
def test_map_items_propagates_anything_else(workers):
    with pytest.raises(RuntimeError, match="a bug"):
        list(map_items(_fail_on_three, list(range(8)), workers, "test"))


def test_atomic_outputs_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
        atomic_write_json(tmp_path / "f.json", {})
    finally:
        os.umask(umask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644
