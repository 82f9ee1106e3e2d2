"""Training read speed: samples/s from the dataset shards vs per-clip PNG + WAV files.

Builds one synthetic dataset of ``--clips`` samples (64 x 64 faces, 3.67 s of 8 kHz int16
audio) twice, as ``dataset`` stage shards and as one PNG + one WAV file per clip, and reads
every sample once from each in a shuffled order, in the same process, with warm page caches
(goal: shards >= 10x). Also times :func:`pipeline.loaders.load_split` (whole split to tensors).

    python benchmarks/loader.py [--clips 2000] [--workers 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.loaders import ShardDataset, load_split, make_loader
from pipeline.schemas import DATASET
from pipeline.shards import ShardWriter

FACE, SAMPLES, RATE = 64, 29_360, 8000


def synthetic_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return a smooth face-like uint8 image (PNG-compressible) and speech-like int16 audio."""
    y, x = np.mgrid[0:FACE, 0:FACE] / FACE
    face = 128 + 80 * np.sin(6 * x + rng.uniform(0, 6)) * np.cos(5 * y) + rng.normal(0, 6, (FACE,
                                                                                       FACE))
    t = np.arange(SAMPLES) / RATE
    audio = 8000 * np.sin(2 * np.pi * rng.uniform(90, 250) * t) * (0.6 + 0.4 * np.sin(25 * t))
    audio += rng.normal(0, 300, SAMPLES)
    return np.clip(face, 0, 255).astype(np.uint8), audio.astype(np.int16)


def write_both(root: Path, n: int) -> None:
    """Write ``n`` samples as train shards (``root/shards``) and as PNG + WAV (``root/files``)."""
    rng = np.random.default_rng(0)
    (root / "files").mkdir(parents=True)
    rows = []
    for i in range(n):
        face, audio = synthetic_sample(rng)
        Image.fromarray(face).save(root / "files" / f"c{i:05d}.png")
        soundfile.write(root / "files" / f"c{i:05d}.wav", audio, RATE, subtype="PCM_16")
        rows.append({"clip_id": f"c{i:05d}", "speaker_id": f"s{i // 40}", "sex": "Male",
                     "emotion": "NEU", "emotion_index": 2, "split": "train",
                     "face": face.tobytes(), "face_size": FACE, "frame_index": 0,
                     "audio": audio.astype("<i2").tobytes(), "sample_rate": RATE,
                     "source": f"c{i:05d}.flv"} | dict.fromkeys(
                         ("sentence", "level", "age", "race", "ethnicity")))
    with ShardWriter(root / "shards" / "train", "part", DATASET, 128 * 2**20, 256) as writer:
        writer.write(pa.Table.from_pylist(rows, schema=DATASET))


class PngWavDataset(Dataset):
    """The per-file baseline: one PNG and one WAV per sample, decoded the usual way."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory, self.n = directory, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        face = np.asarray(Image.open(self.directory / f"c{i:05d}.png"), dtype=np.float32) / 255
        audio, _ = soundfile.read(self.directory / f"c{i:05d}.wav", dtype="float32")
        return {"face": torch.from_numpy(face)[None], "audio": torch.from_numpy(audio),
                "emotion": torch.tensor(2), "clip_id": f"c{i:05d}"}


def rate(loader: DataLoader) -> tuple[float, float, int]:
    """Return (samples/s of wall time, samples/s of this process's CPU time, samples)."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        n += len(batch["clip_id"])
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (both)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_both(root, args.clips)
        loaders = {
            "shards, make_loader (batched)": make_loader(
                root / "shards", "train", args.batch, seed=0, num_workers=args.workers),
            "shards, per-sample + collate": DataLoader(
                ShardDataset(root / "shards", "train", seed=0), batch_size=args.batch,
                num_workers=args.workers),
            "per-clip PNG + WAV": DataLoader(
                PngWavDataset(root / "files", args.clips), batch_size=args.batch,
                shuffle=True, num_workers=args.workers),
        }
        for loader in loaders.values():
            rate(loader)  # warm the page cache for every reader
        rates = {name: rate(loader) for name, loader in loaders.items()}
        start = time.perf_counter()
        split = load_split(root / "shards", "train")
        memory_rate = len(split) / (time.perf_counter() - start)
    assert {n for _, _, n in rates.values()} == {args.clips}
    base_wall, base_cpu, _ = rates["per-clip PNG + WAV"]
    print(f"{args.clips} samples, batch {args.batch}, {args.workers} DataLoader workers "
          "(cpu: this process only, meaningful with 0 workers)")
    for name, (wall, cpu, _) in rates.items():
        print(f"  {name:31}: {wall:8.0f} samples/s wall ({wall / base_wall:5.1f}x) | "
              f"{cpu:8.0f} samples/s cpu ({cpu / base_cpu:5.1f}x)   goal >= 10x")
    print(f"  {'load_split to memory':31}: {memory_rate:8.0f} samples/s wall")


if __name__ == "__main__":
    main()
