"""The faces stage on a Ray cluster against the local pool, and what VoxCeleb2 dev would take.

In one run, on this machine:

1. A faces corpus of ``--clips`` (default 512) demo clips: ``--speakers`` x 4 emotions x 2
   sentences are generated once and catalogued ``--reuse`` times under new clip ids (the
   per-clip work - decoding, detection, landmarks - is the same; generating 512 distinct
   clips would take ~10 min of this machine).
2. The faces stage on it with the local pool (``faces.workers`` = the cores) and on a Ray
   instance started here with as many CPUs (``cluster.executor: ray``, ``--chunk`` clips per
   task), alternating ``--repeat`` times; the outputs must be the same bytes. Ray's overhead
   (target <= 10 %) is measured in core-seconds - the CPU time of the driver and of every
   process of the pool or of Ray (raylet, GCS, agents, workers) - against the pool's: on a
   machine others load too, wall time also measures them (both are printed). The driver's
   CPU time per frame bounds the clips/s one driver can merge.
3. Ray's per-task scheduling cost: ``--tasks`` empty tasks, and ``map_clips`` chunks of one
   no-op item (submit, run, part written and read back), in ms per task.
4. DVC's cost per file: a directory output of ``--dvc-files`` (10,000) files of
   ``--shard-kb`` each is `dvc add`-ed, `dvc status`-ed and `dvc push`-ed to a local remote,
   timed, less the same for one file: the cost per 1,000 shards beyond DVC's start-up (the
   bytes cost the remote's bandwidth on top).
5. A projection of VoxCeleb2 dev (1,092,009 utterances of 5,994 speakers, ~2,360 h, so a mean
   of 7.8 s = 195 frames at 25 fps; Chung et al. 2018, and 000 section 3.1) onto 64, 256 and
   1,024 cores: faces-stage hours from the measured frames per core-second and the Ray
   efficiency, the number of files each stage's output holds (DVC tracks each) and the
   `dvc status` / `dvc push` time those counts cost at the measured rate per 1,000 files.

Wall-clock figures on a shared machine include the neighbours' load (printed); local and Ray
runs alternate so that both see it alike.

    .venv/bin/python benchmarks/scale.py [--clips 512] [--speakers 8] [--chunk 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

from pipeline.cluster import RUNTIME_ENV, map_clips  # noqa: E402
from pipeline.config import (  # noqa: E402
    ClusterParams,
    DemoCorpusParams,
    DownloadParams,
    FacesParams,
)
from pipeline.download.catalogue import CATALOGUE_FILE, prepare_dataset  # noqa: E402
from pipeline.faces.stage import run_faces  # noqa: E402
from pipeline.runtime import default_workers  # noqa: E402

# VoxCeleb2 dev (Chung, Nagrani, Zisserman, Interspeech 2018, Table 1): utterances, videos,
# speakers; 2,442 h over dev + test (1,128,246 utterances) gives the mean duration.
VOX2_DEV_CLIPS, VOX2_DEV_VIDEOS, VOX2_DEV_SPEAKERS = 1_092_009, 145_569, 5_994
VOX2_MEAN_S = 2442 * 3600 / 1_128_246
VOX2_FPS = 25
FACE_ROW_BYTES = 150 * 150 + 8 * 200 + 600  # 000's 150 px crop + frame scores + the row's rest
AUDIO_ROW_BYTES = 2 * 29_360 + 100  # 3.67 s at 8 kHz, int16
SHARD_MB = 128


def seconds(function, *args, **kwargs) -> tuple[float, float, object]:
    """Return ``(wall s, this process's CPU s, result)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def tree_cpu_seconds() -> float:
    """Return the CPU seconds used by this process, its reaped children and its live descendants.

    A local pool's workers are reaped children; Ray's raylet, GCS, agents and workers are
    live descendants of a driver that started Ray. On a loaded machine wall time measures the
    neighbours too; core-seconds are what the work cost.
    """
    tick = os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile: its parent's cutime has it once reaped
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def make_corpus(root: Path, speakers: int, reuse: int) -> Path:
    """Return a catalogue listing every demo clip ``reuse`` times under distinct clip ids."""
    demo = DemoCorpusParams(n_speakers=speakers, emotions=("ANG", "HAP", "NEU", "SAD"),
                            sentences=("IEO", "TIE"))
    prepare_dataset(DownloadParams(dataset="demo", demo=demo), root / "download",
                    root / "cache", progress=False)
    table = pq.read_table(root / "download" / CATALOGUE_FILE)
    rows = table.to_pylist()
    copies = [{**row, "clip_id": f"{row['clip_id']}_r{k}", "speaker_id": row["speaker_id"]}
              for k in range(reuse) for row in rows]
    catalogue = root / "download" / "reused.parquet"
    pq.write_table(type(table).from_pylist(copies, schema=table.schema), catalogue)
    return catalogue


def digest(directory: Path) -> str:
    """Return one SHA-256 over every file's name and bytes under ``directory``."""
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(directory).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def start_ray(cores: int) -> None:
    """Start Ray on this machine with ``cores`` CPUs and the stages' worker environment."""
    import ray

    ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, runtime_env=RUNTIME_ENV)


def compare_executors(catalogue: Path, root: Path, cores: int, chunk: int,
                      repeat: int) -> dict[str, float]:
    """Return the best local and Ray faces times (wall) and the Ray driver's CPU per clip."""
    import ray

    start_ray(cores)
    params = FacesParams(workers=cores)
    cluster = ClusterParams(executor="ray", chunk_clips=chunk)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    cores_s: dict[str, list[float]] = {"local": [], "ray": []}
    driver_cpu, digests, frames = [], set(), 0
    try:
        ray.get([ray.remote(lambda: None).remote() for _ in range(cores)])  # workers up
        for k in range(repeat):
            for name, executor in (("local", ClusterParams()), ("ray", cluster)):
                out = root / f"faces_{name}_{k}"
                before = tree_cpu_seconds()
                wall, cpu, report = seconds(run_faces, catalogue, out, params, executor)
                cores_s[name].append(tree_cpu_seconds() - before)
                times[name].append(wall)
                if name == "ray":
                    driver_cpu.append(cpu)
                digests.add(digest(out))
                frames = report.counts["frames"]
                print(f"  faces {name:5s} run {k + 1}: {wall:6.1f} s wall, "
                      f"{cores_s[name][-1]:6.1f} core-s (driver {cpu:4.1f}) "
                      f"[load {os.getloadavg()[0]:.1f}]", flush=True)
                shutil.rmtree(out)
    finally:
        ray.shutdown()
    if len(digests) != 1:
        raise SystemExit(f"local and Ray outputs differ: {len(digests)} distinct digests")
    return {"local": min(times["local"]), "ray": min(times["ray"]), "frames": frames,
            "local_core_s": min(cores_s["local"]), "ray_core_s": min(cores_s["ray"]),
            "driver_cpu": min(driver_cpu)}


def noop(item: int) -> int:
    return item


def scheduling_cost(root: Path, cores: int, tasks: int) -> dict[str, float]:
    """Return ms per empty Ray task and per one-item ``map_clips`` chunk (part file included)."""
    import ray

    start_ray(cores)
    try:
        empty = ray.remote(noop)
        ray.get([empty.remote(i) for i in range(cores * 4)])  # workers up
        wall, _, _ = seconds(lambda: ray.get([empty.remote(i) for i in range(tasks)]))
        chunked = ClusterParams(executor="ray", chunk_clips=1)
        list(map_clips(noop, list(range(cores * 4)), chunked, root, cores, "warm-up"))
        wall_parts, _, _ = seconds(lambda: list(map_clips(noop, list(range(tasks)), chunked,
                                                          root, cores, "no-op chunks")))
    finally:
        ray.shutdown()
    return {"task_ms": 1000 * wall / tasks, "chunk_ms": 1000 * wall_parts / tasks}


def dvc_times(root: Path, n_files: int, shard_kb: int) -> dict[str, float]:
    """Return `dvc add` / `dvc status` / `dvc push` seconds for an ``n_files`` directory output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}

    def run(*args: str) -> float:
        start = time.perf_counter()
        subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
        return time.perf_counter() - start

    root.mkdir(parents=True)
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "remote", "add", "-d", "store", str(root / "remote"))
    shards = root / "shards"
    shards.mkdir()
    for k in range(n_files):
        (shards / f"faces-{k:06d}.parquet").write_bytes(os.urandom(shard_kb * 1024))
    figures = {"add": run("dvc", "add", "shards")}
    run("dvc", "status")  # the first call builds DVC's state database
    figures["status"] = min(run("dvc", "status") for _ in range(3))
    figures["push"] = run("dvc", "push")
    return figures


def dvc_per_thousand(root: Path, n_files: int, shard_kb: int) -> dict[str, float]:
    """Return DVC's seconds per 1,000 files: ``n_files`` files' times less a 1-file output's."""
    one = dvc_times(root / "one", 1, shard_kb)
    many = dvc_times(root / "many", n_files, shard_kb)
    print(f"DVC, {n_files:,} files of {shard_kb} KB: dvc add {many['add']:.1f} s, dvc status "
          f"{many['status']:.2f} s, dvc push (local remote) {many['push']:.1f} s; one file: "
          f"{one['add']:.1f} / {one['status']:.2f} / {one['push']:.1f} s")
    return {k: max(many[k] - one[k], 0.0) * 1000 / n_files for k in many}


def projection(per_frame_core_s: float, efficiency: float, driver_s_per_frame: float,
               chunk_s: float, dvc_s: dict[str, float]) -> None:
    """Print the VoxCeleb2 dev table for 64, 256 and 1,024 cores.

    The driver merges every chunk's results in one process (frame scores: a row per frame),
    so its CPU per frame, plus its cost per chunk of ``cluster.chunk_clips`` (params.yaml's
    value), caps the clips/s whatever the cluster's size.
    """
    frames = VOX2_DEV_CLIPS * VOX2_MEAN_S * VOX2_FPS
    chunk_clips = ClusterParams().chunk_clips
    driver_s_per_clip = driver_s_per_frame * VOX2_MEAN_S * VOX2_FPS + chunk_s / chunk_clips
    core_h = frames * per_frame_core_s / 3600
    files = {
        "download media (one .mp4 per clip)": VOX2_DEV_CLIPS,
        "faces shards (150 px + frame scores)": -(-VOX2_DEV_CLIPS * FACE_ROW_BYTES
                                                  // (SHARD_MB * 2**20)),
        "audio shards (3.67 s, 8 kHz)": -(-VOX2_DEV_CLIPS * AUDIO_ROW_BYTES
                                          // (SHARD_MB * 2**20)),
    }
    files["dataset shards (faces + audio)"] = (files["faces shards (150 px + frame scores)"]
                                               + files["audio shards (3.67 s, 8 kHz)"])
    print(f"\nVoxCeleb2 dev: {VOX2_DEV_CLIPS:,} clips ({VOX2_DEV_VIDEOS:,} videos, "
          f"{VOX2_DEV_SPEAKERS:,} speakers), mean {VOX2_MEAN_S:.1f} s = "
          f"{frames / 1e6:.0f} M frames at {VOX2_FPS} fps; faces at {1 / per_frame_core_s:.0f} "
          f"frames per core-second = {core_h:,.0f} core-hours")
    print(f"  one driver merges at most {1 / driver_s_per_clip:,.0f} clips/s "
          f"({1000 * driver_s_per_clip:.2f} ms of its CPU per clip, chunks of {chunk_clips})")
    print("| cores | faces stage (h) | clips/s | driver CPU load | "
          "files DVC tracks (all outputs) | `dvc status` | `dvc push` (per-file cost) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    total_files = sum(files.values())
    for cores in (64, 256, 1024):
        rate = min(VOX2_DEV_CLIPS / (core_h * 3600 / (cores * efficiency)),
                   1 / driver_s_per_clip)
        hours = VOX2_DEV_CLIPS / rate / 3600
        print(f"| {cores:,} | {hours:.1f} | {rate:,.0f} | {rate * driver_s_per_clip:.0%} | "
              f"{total_files:,} | {total_files / 1000 * dvc_s['status']:,.0f} s | "
              f"{total_files / 1000 * dvc_s['push'] / 3600:,.1f} h |")
    for name, n in files.items():
        print(f"  {name}: {n:,} files")
    print("  (`dvc status` / `dvc push` from the measured marginal cost per 1,000 files; the "
          "download's media dominate: a shared directory outside DVC, catalogued by checksum, "
          "would leave "
          f"{total_files - VOX2_DEV_CLIPS:,} files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512, help="faces corpus size (>= 500)")
    parser.add_argument("--speakers", type=int, default=8, help="demo speakers generated")
    parser.add_argument("--chunk", type=int, default=4, help="clips per Ray task")
    parser.add_argument("--repeat", type=int, default=2, help="local/Ray runs, alternated")
    parser.add_argument("--tasks", type=int, default=400, help="tasks for the scheduling cost")
    parser.add_argument("--dvc-files", type=int, default=10_000, help="files of the DVC test")
    parser.add_argument("--shard-kb", type=int, default=16, help="size of the DVC test files")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else ray.init writes ~/.ray/auth_token
    cores = default_workers(0)
    generated = args.speakers * 8
    reuse = -(-args.clips // generated)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        catalogue = make_corpus(root, args.speakers, reuse)
        print(f"corpus: {generated} demo clips generated in {time.perf_counter() - start:.0f} s, "
              f"catalogued {reuse} times = {generated * reuse} clips; {cores} cores; "
              f"Ray chunks of {args.chunk} clips")
        faces = compare_executors(catalogue, root, cores, args.chunk, args.repeat)
        overhead = faces["ray_core_s"] / faces["local_core_s"] - 1
        clips = generated * reuse
        print(f"faces, {clips} clips, {faces['frames']:,} frames, best of {args.repeat}: "
              f"local pool {faces['local']:.1f} s wall / {faces['local_core_s']:.1f} core-s, "
              f"Ray {faces['ray']:.1f} s / {faces['ray_core_s']:.1f} core-s (all of Ray's "
              f"processes): overhead {overhead:+.1%} in core-seconds (target <= 10 %), "
              f"{faces['ray'] / faces['local'] - 1:+.1%} in wall time; outputs identical; "
              f"Ray driver CPU {1000 * faces['driver_cpu'] / clips:.1f} ms per clip")
        cost = scheduling_cost(root / "noop", cores, args.tasks)
        print(f"scheduling: {cost['task_ms']:.2f} ms per empty Ray task, {cost['chunk_ms']:.2f} "
              f"ms per map_clips chunk (task + part file written and read back); "
              f"{args.chunk}-clip chunks of ~{faces['ray_core_s'] / clips * args.chunk:.1f} "
              f"core-s each")
        dvc_s = dvc_per_thousand(root / "dvc", args.dvc_files, args.shard_kb)
        print(f"  per 1,000 files more: dvc add {dvc_s['add']:.1f} s, status "
              f"{dvc_s['status']:.2f} s, push {dvc_s['push']:.1f} s")
        per_frame = faces["local_core_s"] / faces["frames"]
        chunks = 2 * -(-clips // args.chunk)  # both passes
        merge_s = max(faces["driver_cpu"] - chunks * cost["chunk_ms"] / 1000, 0.0)
        projection(per_frame, 1 / (1 + max(overhead, 0.0)), merge_s / faces["frames"],
                   cost["chunk_ms"] / 1000, dvc_s)
        print(json.dumps({"faces": faces, "scheduling": cost, "dvc": dvc_s}, default=float))


if __name__ == "__main__":
    main()
