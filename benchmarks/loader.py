"""Training read speed: samples/s from the dataset shards vs per-clip PNG + WAV files.

Builds one synthetic dataset of ``--clips`` samples (64 x 64 faces, 3.67 s of 8 kHz int16
audio) twice, as ``dataset`` stage shards and as one PNG + one WAV file per clip, and reads
every sample once from each in a shuffled order, in the same process, with warm page caches
(goal: shards >= 10x). Also times :func:`pipeline.loaders.load_split` (whole split to tensors).

After one untimed pass of every reader, each round times every reader once, back to back;
the figures are medians over the rounds, and each ratio is the median of the per-round
ratios to the baseline (with their range), so that other work on a shared machine weighs
on both sides of a ratio alike. The load average is printed before and after.

    python benchmarks/loader.py [--clips 2000] [--workers 0] [--rounds 5]

A script imports ``pipeline`` from the venv's editable install, which may be another checkout
(a worktree sharing a venv): ``PYTHONPATH=.`` measures this one. The last line names it.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Pass:
    """One timed read of every sample: wall seconds, this process's CPU seconds, samples."""

    wall: float
    user: float
    system: float
    samples: int

    def per_second(self, column: str) -> float:
        """Return samples per second of ``wall`` or of ``cpu`` (user + system) time."""
        seconds = self.wall if column == "wall" else self.user + self.system
        return self.samples / seconds


def timed(read: Callable[[], int]) -> Pass:
    """Return the :class:`Pass` of ``read()``, which returns the samples it read."""
    wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    n = read()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Pass(time.perf_counter() - wall, after.ru_utime - before.ru_utime,
                after.ru_stime - before.ru_stime, n)


def count(loader: DataLoader) -> int:
    """Return the samples in one pass over ``loader``."""
    return sum(len(batch["clip_id"]) for batch in loader)


def rounds_of(readers: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[Pass]]:
    """Return every reader's passes, one per round, after an untimed pass of each."""
    for read in readers.values():
        read()  # warms the page cache and the allocators for every reader
    passes: dict[str, list[Pass]] = {name: [] for name in readers}
    for _ in range(rounds):
        for name, read in readers.items():
            passes[name].append(timed(read))
    return passes


def summary(passes: list[Pass], base: list[Pass], column: str) -> str:
    """Return "median samples/s (median ratio to base, its range)" of ``column``."""
    ratios = [ours.per_second(column) / theirs.per_second(column)
              for ours, theirs in zip(passes, base, strict=True)]
    return (f"{statistics.median(p.per_second(column) for p in passes):6.0f}/s "
            f"({statistics.median(ratios):4.1f}x, {min(ratios):4.1f}-{max(ratios):4.1f})")


def cpu_split(passes: list[Pass]) -> str:
    """Return the user and system CPU microseconds per sample over all ``passes``.

    Summed over the rounds: the kernel splits CPU time between user and system by ticks,
    too coarse for one pass of the fast readers.
    """
    samples = sum(p.samples for p in passes)
    user, system = (1e6 * sum(getattr(p, f) for p in passes) / samples for f in ("user", "system"))
    return f"{user:4.0f} + {system:4.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (both)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed passes of every reader")
    args = parser.parse_args()
    load_before = os.getloadavg()
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
        readers = {name: (lambda loader=loader: count(loader))
                   for name, loader in loaders.items()}
        passes = rounds_of(readers, args.rounds)
        # A training run calls load_split once, not once per epoch: its rounds come after the
        # streaming readers', whose passes would otherwise start on the hundreds of MB it frees
        # (pages the kernel must zero again, as perf shows in clear_page_erms).
        passes |= rounds_of({"load_split to memory": lambda: len(
            load_split(root / "shards", "train"))}, args.rounds)
    if {p.samples for runs in passes.values() for p in runs} != {args.clips}:
        raise RuntimeError(f"a reader did not read all {args.clips} samples: {passes}")
    base = passes["per-clip PNG + WAV"]
    print(f"{args.clips} samples, batch {args.batch}, {args.workers} DataLoader workers; "
          f"median of {args.rounds} rounds, ratio to PNG + WAV as median and range "
          "(goal: shards >= 10x); cpu and its user + system split: this process only, "
          "meaningful with 0 workers")
    for name, runs in passes.items():
        print(f"  {name:29}: wall {summary(runs, base, 'wall')} | cpu "
              f"{summary(runs, base, 'cpu')} = {cpu_split(runs)} per sample")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{x:.1f}' for x in load_before)}; "
          f"after {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"code measured: {inspect.getsourcefile(load_split)}")


if __name__ == "__main__":
    main()
