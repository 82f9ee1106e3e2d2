"""Time the demo corpus: the default 192 clips with N workers, and one process per clip.

    .venv/bin/python benchmarks/demo_corpus.py [--workers 2] [--single-clips 8]

Prints total seconds and clips/s for the default corpus (target: <= 90 s on 2 cores), and
the single-process wall and CPU time per clip (CPU including ffmpeg and espeak-ng children),
which stays meaningful on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline.config import DemoCorpusParams
from pipeline.download.demo.corpus import write_corpus


def cpu_seconds() -> float:
    """Return CPU seconds used by this process and its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(out: Path, params: DemoCorpusParams, workers: int) -> tuple[int, float, float]:
    """Return (clips, wall seconds, CPU seconds) of writing ``params``' corpus into ``out``."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    truth = write_corpus(out, params, workers=workers)
    return len(truth), time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    """Print the benchmark figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--single-clips", type=int, default=8,
                        help="clips of the single-process run (speakers x 4 emotions x 1)")
    args = parser.parse_args()
    params = DemoCorpusParams()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        small = replace(params, n_speakers=max(2, args.single_clips // 4 // 2 * 2),
                        sentences=params.sentences[:1])
        n, wall, cpu = timed(Path(tmp) / "single", small, workers=1)
        print(f"single process: {n} clips, {wall / n:.3f} s wall/clip, {cpu / n:.3f} s CPU/clip")
        n, wall, cpu = timed(Path(tmp) / "default", params, workers=args.workers)
        print(f"default corpus: {n} clips in {wall:.1f} s with {args.workers} workers "
              f"({n / wall:.2f} clips/s; {cpu:.1f} CPU-s, {cpu / n:.3f} CPU-s/clip)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
