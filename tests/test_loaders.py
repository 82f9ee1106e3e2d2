import numpy as np
import pytest
import torch

from pipeline.loaders import ShardDataset, load_split, make_loader, read_meta
from tests.factories import make_dataset_dir


@pytest.fixture
def dataset_dir(tmp_path):
    # 37 train rows in row groups of 4 -> 10 groups, the last one short.
    return make_dataset_dir(tmp_path / "dataset", {"train": 37, "val": 6, "test": 5})


def _ids(samples):
    return [s["clip_id"] for s in samples]


def test_samples_are_model_ready(dataset_dir):
    meta = read_meta(dataset_dir)
    sample = next(iter(ShardDataset(dataset_dir, "train", shuffle=False)))
    assert sample["face"].dtype == torch.float32 and sample["face"].shape == (1, 8, 8)
    assert sample["audio"].dtype == torch.float32 and sample["audio"].shape == (40,)
    assert sample["emotion"].dtype == torch.int64 and sample["emotion"].shape == ()
    assert meta["emotions"][int(sample["emotion"])] == "ANG"
    assert (sample["clip_id"], sample["speaker_id"], sample["sex"]) == ("c0000", "s0", "Male")
    second = list(ShardDataset(dataset_dir, "train", shuffle=False))[5]
    assert torch.allclose(second["face"], torch.full((1, 8, 8), 5 / 255))
    assert second["audio"][0] == pytest.approx(5 / 32768)
    assert float(second["face"].max()) <= 1.0 and float(second["audio"].abs().max()) <= 1.0


def test_an_epoch_reads_every_row_once_in_a_seeded_order(dataset_dir):
    def epoch(seed, number):
        data = ShardDataset(dataset_dir, "train", seed=seed, buffer_size=8)
        data.set_epoch(number)
        return _ids(data)

    first = epoch(seed=1, number=0)
    assert sorted(first) == [f"c{k:04d}" for k in range(37)]
    assert epoch(seed=1, number=0) == first
    assert epoch(seed=1, number=1) != first
    assert epoch(seed=2, number=0) != first
    assert first != sorted(first)


def test_two_workers_cover_the_split_disjointly_and_deterministically(dataset_dir):
    def run():
        loader = make_loader(dataset_dir, "train", batch_size=5, seed=3, num_workers=2,
                             buffer_size=6)
        loader.dataset.set_epoch(4)
        batches = list(loader)
        return [clip for batch in batches for clip in batch["clip_id"]], batches

    ids, batches = run()
    assert len(ids) == len(set(ids)) == 37
    assert ids == run()[0]
    assert batches[0]["face"].shape == (5, 1, 8, 8) and batches[0]["audio"].shape == (5, 40)
    # Each worker reads whole row groups: rows 4g..4g+3 come from one worker's batches.
    worker_of = {}
    for b, batch in enumerate(batches):  # the DataLoader alternates workers batch by batch
        for clip in batch["clip_id"]:
            worker_of[clip] = b % 2
    for g in range(10):
        owners = {worker_of[f"c{k:04d}"] for k in range(4 * g, min(4 * g + 4, 37))}
        assert len(owners) == 1, f"row group {g} was split across workers"


def test_ranks_read_disjoint_shares(dataset_dir):
    shares = [_ids(ShardDataset(dataset_dir, "train", rank=r, world_size=3)) for r in range(3)]
    together = [clip for share in shares for clip in share]
    assert len(together) == len(set(together)) == 37


def test_load_split_matches_streaming(dataset_dir):
    split = load_split(dataset_dir, "val")
    assert split.face.shape == (6, 1, 8, 8) and split.audio.shape == (6, 40)
    assert split.clip_id == sorted(split.clip_id)
    streamed = {s["clip_id"]: s for s in ShardDataset(dataset_dir, "val")}
    for i, clip in enumerate(split.clip_id):
        item = split[i]
        assert torch.equal(item["face"], streamed[clip]["face"])
        assert torch.equal(item["audio"], streamed[clip]["audio"])
        assert int(item["emotion"]) == int(streamed[clip]["emotion"])
        assert item["speaker_id"] == streamed[clip]["speaker_id"]
    assert np.allclose(split.emotion.numpy(), [int(c[1:]) % 4 for c in split.clip_id])


def test_unknown_split_is_an_error(dataset_dir):
    with pytest.raises(ValueError, match="unknown split"):
        ShardDataset(dataset_dir, "training")


def test_batches_hold_the_same_rows_in_the_same_order_as_samples(dataset_dir):
    samples = list(ShardDataset(dataset_dir, "train", seed=9, buffer_size=6))
    batches = list(ShardDataset(dataset_dir, "train", seed=9, buffer_size=6, batch_size=8))
    assert [len(b["clip_id"]) for b in batches] == [8, 8, 8, 8, 5]
    assert [c for b in batches for c in b["clip_id"]] == _ids(samples)
    faces = torch.cat([b["face"] for b in batches])
    audio = torch.cat([b["audio"] for b in batches])
    assert torch.equal(faces, torch.stack([s["face"] for s in samples]))
    assert torch.equal(audio, torch.stack([s["audio"] for s in samples]))
    assert torch.equal(torch.cat([b["emotion"] for b in batches]),
                       torch.stack([s["emotion"] for s in samples]))
    dropped = list(ShardDataset(dataset_dir, "train", batch_size=8, drop_last=True))
    assert [len(b["clip_id"]) for b in dropped] == [8, 8, 8, 8]


def test_faces_only_skips_audio(dataset_dir):
    sample = next(iter(ShardDataset(dataset_dir, "val", with_audio=False)))
    assert "audio" not in sample and sample["face"].shape == (1, 8, 8)
    split = load_split(dataset_dir, "val", with_audio=False)
    assert split.audio.shape == (6, 0) and split.face.shape == (6, 1, 8, 8)
