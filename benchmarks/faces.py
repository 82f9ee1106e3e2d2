"""Faces stage speed and memory, per core (one process), on the demo corpus and GRID.

Prints, for each corpus, three rates measured in this one process on the same clips, in
frames per CPU-second of this process (``time.process_time``: on a loaded, shared machine
wall time measures the neighbours; CPU time is what one core would take):
decode-only frames/s, a naive baseline (HOG detector at full resolution + 68 landmarks on
every frame), the stage with landmarks on every frame (``landmark_every`` 1, the reference
for the coarse-to-fine scheme) and the end-to-end stage (``run_faces`` with one worker and
the default ``landmark_every``: both passes, crops, shards). Goals (issue 5): end-to-end
>= 25% of decode-only and >= 8x naive. From the
end-to-end rate at 480x360 it estimates full CREMA-D (7,442 clips x ~75 frames) on 2 cores
(goal <= 12 min). Then peak memory (ru_maxrss of a fresh process) for one clip vs that clip
looped 20 times and for 1 vs all clips (GRID's 3 s clips, else the demo's): it should be
flat in both. A corpus that is absent is skipped with a line that says so.

Each rate is the median of ``--repeat`` rounds (default 3) that interleave the four
measurements, so a neighbour's load drifting during the run shifts all of them alike.

Usage: ``python benchmarks/faces.py [--grid DIR] [--demo-speakers N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import DemoCorpusParams, FacesParams  # noqa: E402
from pipeline.dlib_models import face_detector, load_model  # noqa: E402
from pipeline.faces.landmarks import detect_faces, predict_landmarks  # noqa: E402
from pipeline.faces.stage import run_faces  # noqa: E402
from pipeline.faces.video import iter_gray_frames  # noqa: E402
from tests.factories import make_catalogue  # noqa: E402

CREMA_D_FRAMES = 7442 * 75
CORES = 2


def decode_only(videos: list[Path]) -> tuple[int, float]:
    start, n = time.process_time(), 0
    for video in videos:
        for _ in iter_gray_frames(video):
            n += 1
    return n, time.process_time() - start


def naive(videos: list[Path]) -> tuple[int, float]:
    start, n = time.process_time(), 0
    for video in videos:
        for frame in iter_gray_frames(video):
            boxes = detect_faces(frame, 1.0)
            if boxes:
                predict_landmarks(frame, boxes[0])
            n += 1
    return n, time.process_time() - start


def end_to_end(videos: list[Path], work: Path, params: FacesParams) -> tuple[int, float]:
    catalogue = make_catalogue(work, [{"clip_id": v.stem, "video_path": str(v)} for v in videos])
    start = time.process_time()
    report = run_faces(catalogue, work / "out", params)
    seconds = time.process_time() - start
    counts = report.counts
    calls = counts["landmark_calls_track"] + counts["landmark_calls_refine"]
    print(f"    (landmark_every={params.landmark_every}: {calls / counts['frames']:.2f} predictor "
          f"calls per frame: {counts['landmark_calls_track']} tracking + "
          f"{counts['landmark_calls_refine']} refining)")
    return counts["frames"], seconds


def compare(name: str, videos: list[Path], work: Path, repeat: int) -> float:
    """Print the four rates (median of ``repeat`` interleaved rounds); return end-to-end's."""
    face_detector(), load_model("landmarks_68")  # load once, outside every timing
    decode_only(videos[:1])  # warm the file cache
    dense = FacesParams(workers=1, sheet_samples=0, landmark_every=1)
    params = replace(dense, landmark_every=FacesParams().landmark_every)
    runs = (("decode-only", decode_only), ("naive (HOG every frame)", naive),
            ("stage, landmarks every frame", lambda v: end_to_end(v, work / name, dense)),
            ("end-to-end stage", lambda v: end_to_end(v, work / name, params)))
    # Rounds interleave the measurements, so a neighbour's load shifts all of them alike.
    samples: dict[str, list[tuple[int, float]]] = {label: [] for label, _ in runs}
    for _ in range(repeat):
        for label, run in runs:
            samples[label].append(run(videos))
    rates = {}
    for label, measured in samples.items():
        frames = measured[0][0]
        per_round = sorted(n / seconds for n, seconds in measured)
        rates[label] = statistics.median(per_round)
        spread = f"  ({per_round[0]:.0f}-{per_round[-1]:.0f})" if repeat > 1 else ""
        print(f"  {label:28s} {frames:6d} frames {frames / rates[label]:7.2f} s "
              f"{rates[label]:8.1f} frames/s{spread}")
    e2e = rates["end-to-end stage"]
    print(f"  end-to-end / decode-only = {e2e / rates['decode-only']:.1%}  (goal >= 25%)")
    print(f"  end-to-end / naive       = {e2e / rates['naive (HOG every frame)']:.1f}x  "
          f"(goal >= 8x)")
    return e2e


def peak_rss_mb(videos: list[Path], work: Path, max_frames: int) -> float:
    """Return the peak RSS (MB) of a fresh process running the stage on ``videos``.

    Read from ``VmHWM`` (this process image's own peak): Linux carries ``ru_maxrss`` over
    ``exec`` from the forked parent, so it reported this benchmark's own size (~380 MB).
    """
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.config import FacesParams\n"
        "from pipeline.faces.stage import run_faces\n"
        "from tests.factories import make_catalogue\n"
        "videos = [Path(p) for p in sys.argv[3:]]\n"
        "cat = make_catalogue(Path(sys.argv[1]), [{'clip_id': f'c{i}', 'video_path': str(v)}"
        " for i, v in enumerate(videos)])\n"
        "run_faces(cat, Path(sys.argv[1]) / 'out', FacesParams(workers=1, sheet_samples=0,"
        " max_frames=int(sys.argv[2])))\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(int(status['VmHWM'].split()[0]) / 1024)\n"
    )
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", code, str(work), str(max_frames),
                          *map(str, videos)], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    return float(out.split()[-1])


def memory(videos: list[Path], work: Path) -> None:
    long_clip = work / "long20x.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "19", "-i", str(videos[0]),
                    "-an", "-c:v", "libx264", "-preset", "ultrafast", str(long_clip)], check=True)
    short = peak_rss_mb(videos[:1], work / "m_short", 10_000)
    long = peak_rss_mb([long_clip], work / "m_long", 10_000)
    many = peak_rss_mb(videos, work / "m_many", 10_000)
    print(f"  peak RSS: 1 clip {short:.0f} MB | the clip looped 20 times {long:.0f} MB | "
          f"{len(videos)} clips {many:.0f} MB")


def demo_videos(work: Path, n_speakers: int) -> list[Path] | None:
    from pipeline.download.demo.corpus import write_corpus

    write_corpus(work / "demo", DemoCorpusParams(n_speakers=n_speakers, sentences=("IEO",)),
                 workers=1)
    return sorted((work / "demo" / "VideoFlash").glob("*.flv"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=REPO.parent / "shared" / "datasets"
                        / "grid-samples")
    parser.add_argument("--demo-speakers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds per corpus; rates are their medians")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (rates are per "
          "CPU-second of this process)")
    with tempfile.TemporaryDirectory(prefix="bench_faces_") as tmp:
        work = Path(tmp)
        rate_480 = None
        demo = demo_videos(work, args.demo_speakers)
        if demo:
            print(f"demo corpus: {len(demo)} clips at 480x360")
            rate_480 = compare("demo", demo, work, args.repeat)
        grid = sorted(args.grid.glob("*.mpg"))
        if grid:
            print(f"grid-samples: {len(grid)} clips at 360x288")
            rate_grid = compare("grid", grid, work, args.repeat)
            if rate_480 is None:  # scale by pixels: decode and HOG cost grow with frame area
                rate_480 = rate_grid * (360 * 288) / (480 * 360)
                print("  (480x360 rate estimated from GRID by frame area)")
        else:
            print(f"grid-samples: skipped, no *.mpg in {args.grid} (absent?)")
        if rate_480 is not None:
            minutes = CREMA_D_FRAMES / (rate_480 * CORES) / 60
            print(f"CREMA-D estimate: {CREMA_D_FRAMES:,} frames / ({rate_480:.0f} frames/s x "
                  f"{CORES} cores) = {minutes:.1f} min (goal <= 12 min)")
        if grid or demo:
            print(f"memory ({'grid-samples' if grid else 'demo corpus'} clips):")
            memory(grid or demo, work)


if __name__ == "__main__":
    main()
