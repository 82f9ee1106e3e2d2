"""Audio stage throughput, in x realtime per core, including decode (goal >= 250x).

Two inputs: the real GRID clips (44.1 kHz stereo MP2 inside MPEG-1 video, ../shared) and
synthetic CREMA-D-like WAVs (16 kHz mono, 2.5 s, with a pause). Each is run through the
whole stage (``process_catalogue``: decode, resample, silence removal, tiling, shard
writing) with one worker, so the figure is per core. Wall and CPU time are both shown:
on a shared machine the CPU-time figure is the one that reflects the code. Without the
GRID clips that part is skipped with a line that says so.

    python benchmarks/audio.py [--grid DIR] [--repeat 8] [--synthetic 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # measure this checkout, not the installed one

from pipeline.audio.stage import process_catalogue  # noqa: E402
from pipeline.config import AudioParams  # noqa: E402
from pipeline.schemas import CATALOGUE, conform  # noqa: E402

GRID = REPO.parent / "shared" / "datasets" / "grid-samples"


def write_catalogue(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True)
    full = [{name: row.get(name) for name in CATALOGUE.names} | {"speaker_id": "x",
            "dataset": "folder"} | row for row in rows]
    path = directory / "catalogue.parquet"
    pq.write_table(conform(pa.Table.from_pylist(full, schema=CATALOGUE), CATALOGUE), path)
    return path


def speech(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    """Voiced harmonics with a 4 Hz syllable envelope, about -14 dBFS."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(rng.uniform(100, 220) * (1 + 0.05 * np.sin(6 * t))) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.65 + 0.35 * np.sin(25 * t))
    return (0.2 * voiced / np.abs(voiced).max()).astype(np.float32)


def grid_rows(grid: Path, repeat: int) -> list[dict]:
    clips = sorted(grid.glob("*.mpg"))
    return [{"clip_id": f"{c.stem}_{r}", "video_path": str(c)} for r in range(repeat)
            for c in clips]


def synthetic_rows(directory: Path, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        pause = (1e-3 * rng.standard_normal(17600)).astype(np.float32)  # 1.1 s at -60 dBFS
        wave = np.concatenate([pause[:3200], speech(rng, 1.0, 16000), pause,
                               speech(rng, 0.8, 16000)])
        path = directory / f"s{i:04d}.wav"
        soundfile.write(path, wave, 16000, subtype="PCM_16")
        rows.append({"clip_id": f"s{i:04d}", "audio_path": str(path)})
    return rows


def measure(name: str, rows: list[dict], work: Path, params: AudioParams) -> None:
    catalogue = write_catalogue(work / name, rows)
    process_catalogue(catalogue, work / f"{name}-warm", params)  # page cache, imports
    wall, cpu = time.perf_counter(), time.process_time()
    report = process_catalogue(catalogue, work / f"{name}-out", params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    audio_s = report.info["input_hours"] * 3600
    print(f"{name:>9}: {len(rows)} clips, {audio_s:7.1f} s of audio, "
          f"{report.counts['written']} written | wall {wall:6.2f} s = {audio_s / wall:6.0f}x "
          f"realtime | cpu {cpu:6.2f} s = {audio_s / cpu:6.0f}x realtime per core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=GRID, help="folder of GRID *.mpg clips")
    parser.add_argument("--repeat", type=int, default=8, help="passes over the GRID clips")
    parser.add_argument("--synthetic", type=int, default=64, help="synthetic WAV files")
    args = parser.parse_args()
    params = dataclasses.replace(AudioParams(), workers=1)
    print("audio stage, 1 worker, goal >= 250x realtime per core")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = grid_rows(args.grid, args.repeat)
        if rows:
            measure("grid", rows, work, params)
        else:
            print(f"grid: skipped, no *.mpg in {args.grid} (absent?)")
        (work / "wav").mkdir()
        measure("synthetic", synthetic_rows(work / "wav", args.synthetic), work, params)


if __name__ == "__main__":
    main()
