"""Benchmark of the train_vae stage: training images per second and the share spent on data.

Runs :func:`pipeline.training.fit.fit` with the :class:`FaceVAE` and batch size of
``params.yaml``'s ``train_vae`` section (64x64 faces, 003's 8-bit emotion code) for
``--epochs`` epochs (the first one is warm-up) over a dataset
stage output, read two ways:

- ``in_memory``: :func:`pipeline.loaders.load_split` tensors (the demo default);
- ``streaming``: :class:`pipeline.loaders.ShardDataset` decoding Parquet row groups (faces and
  the 3.67 s audio) while training, ``--workers`` DataLoader processes.

Prints, per device, thread count and mode, the training images/s and the share of training
time spent waiting for the next batch (goal: < 10 %). Without ``--dataset`` it writes a
synthetic dataset (random 64x64 faces, 8 kHz noise audio) under a temporary directory; a
``--dataset`` without a dataset stage output is skipped with a line that says so. The
machine's load average is printed: on a shared machine the figures are lower bounds.

    .venv/bin/python benchmarks/train_vae.py [--params params.yaml] [--dataset data/dataset]
        [--faces 512]
        [--epochs 2] [--threads 1 0] [--workers 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from pipeline.config import TrainVaeParams, load_params
from pipeline.loaders import META_JSON, ShardDataset, load_split, read_meta
from pipeline.models.emotion_code import emotion_codes
from pipeline.models.vae import FaceVAE
from pipeline.schemas import DATASET
from pipeline.shards import ShardWriter
from pipeline.training.fit import FitSettings, fit
from pipeline.training.vae import VaeObjective, vae_config

EMOTIONS = ("ANG", "HAP", "NEU", "SAD")


def write_synthetic_dataset(root: Path, n_faces: int, size: int = 64) -> Path:
    """Write ``n_faces`` random train rows (and 8 val rows) as dataset shards + meta.json."""
    import json

    rng = np.random.default_rng(0)
    samples = 29_360
    for split, n in (("train", n_faces), ("val", 8)):
        rows = [{
            "clip_id": f"{split}{k:05d}", "speaker_id": f"s{k % 20}", "sentence": "IEO",
            "emotion": EMOTIONS[k % 4], "level": "XX", "sex": "Male", "age": 30, "race": None,
            "ethnicity": None, "emotion_index": k % 4, "split": split,
            "face": rng.integers(0, 256, size * size, dtype=np.uint8).tobytes(),
            "face_size": size, "frame_index": 0,
            "audio": rng.integers(-3000, 3000, samples, dtype=np.int16).astype("<i2").tobytes(),
            "sample_rate": 8000, "source": "synthetic",
        } for k in range(n)]
        with ShardWriter(root / split, "part", DATASET, 128 << 20, 256) as writer:
            writer.write(pa.Table.from_pylist(rows))
    meta = {"emotions": list(EMOTIONS), "face_size": size, "sample_rate": 8000,
            "audio_samples": samples, "splits": {}, "split_mode": "clip"}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def measure(params: TrainVaeParams, dataset: Path, mode: str, device: str, threads: int,
            workers: int, epochs: int) -> tuple[float, float]:
    """Return (images/s, data-wait share) of the last epoch of a short fit."""
    if threads:
        torch.set_num_threads(threads)
    params = dataclasses.replace(params, epochs=epochs, device=device, num_workers=workers)
    meta = read_meta(dataset)
    data = (load_split(dataset, "train") if mode == "in_memory"
            else ShardDataset(dataset, "train", seed=0))
    torch.manual_seed(0)
    model = FaceVAE(vae_config(params, int(meta["face_size"]), len(meta["emotions"])))
    objective = VaeObjective(emotion_codes(meta["emotions"], 2), params.beta)
    state = fit(model, objective, data, None, FitSettings.from_params(params), params={})
    last = state.history[-1]
    return last["time/images_per_s"], last["time/data_wait_share"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params.yaml whose train_vae section sets model and batch")
    parser.add_argument("--dataset", type=Path, help="a dataset stage output (default: synthetic)")
    parser.add_argument("--faces", type=int, default=512, help="synthetic training faces")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (first = warm-up)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch CPU thread counts to try (0 = torch default)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (streaming)")
    args = parser.parse_args()
    if args.dataset is not None and not (args.dataset / META_JSON).is_file():
        print(f"train_vae benchmark skipped: {args.dataset} holds no dataset stage output "
              f"({META_JSON} absent; `dvc repro dataset` writes it)")
        return
    params: TrainVaeParams = load_params(args.params, "train_vae")

    default_threads = torch.get_num_threads()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or write_synthetic_dataset(Path(tmp) / "dataset", args.faces)
        n = len(load_split(dataset, "train"))
        print(f"train_vae benchmark: {n} faces, batch {params.batch_size}, channels "
              f"{list(params.channels)}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for device in devices:
            for threads in args.threads if device == "cpu" else [0]:
                shown = threads or default_threads
                for mode in ("in_memory", "streaming"):
                    rate, wait = measure(params, dataset, mode, device, threads,
                                         args.workers, args.epochs)
                    print(f"  {device:4s} threads={shown} {mode:9s}: {rate:8.1f} images/s, "
                          f"waiting for data {100 * wait:5.1f} % (goal < 10 %)")


if __name__ == "__main__":
    main()
