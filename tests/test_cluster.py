"""Per-clip stages on a real Ray cluster on 127.0.0.1: a head and a second worker node.

The cluster is started by the module's fixture (``ray start``, 1 CPU and a 100 MiB object
store per node, ports chosen free) and every process it started is killed afterwards, by
process group, also when a test fails. The faces and audio stages on it write the same bytes
as the local pool; a worker killed mid-run costs its chunk's re-run only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from pipeline.audio.stage import process_catalogue
from pipeline.cluster import map_clips
from pipeline.config import (
    AudioParams,
    ClusterParams,
    DemoCorpusParams,
    DownloadParams,
    FacesParams,
)
from pipeline.download.catalogue import CATALOGUE_FILE, prepare_dataset
from pipeline.faces.stage import run_faces
from pipeline.runtime import QuarantineError

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE_BYTES = 100 * 2**20  # the minimum Ray takes; a 2-core, 24 GiB machine
NODE_START_S = 90
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
"""For the nodes and the driver: no usage reports; no token (a local ray.init writes one to
~/.ray/auth_token, which a later head would then require of every node)."""
FACES, AUDIO = FacesParams(workers=2), AudioParams(workers=2)


@dataclass
class LocalCluster:
    """A Ray cluster this test module started: its address and its process groups."""

    address: str
    temp_dir: Path
    groups: list[int] = field(default_factory=list)

    def busy_workers(self) -> list[int]:
        """Return this cluster's worker processes running a chunk (``ray::run_chunk``)."""
        raylets = {pid for pid in _pids() if _pgid(pid) in self.groups
                   and b"raylet/raylet" in _cmdline(pid)}
        return [pid for pid in _pids() if _ppid(pid) in raylets
                and _cmdline(pid).startswith(b"ray::run_chunk")]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return ["?", "0", "0"]


def _ppid(pid: int) -> int:
    return int(_stat(pid)[1])


def _pgid(pid: int) -> int:
    return int(_stat(pid)[2])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _start_node(cluster: LocalCluster, head_port: int | None = None) -> int:
    """Start one node (the head when ``head_port`` is None); return the head's port."""
    ports = _free_ports(8)
    args = [str(RAY), "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
            "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--dashboard-agent-listen-port", str(ports[2]),
            "--dashboard-agent-grpc-port", str(ports[3]),
            "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5])]
    if head_port is None:
        head_port = ports[6]
        args += ["--head", "--port", str(head_port), "--include-dashboard", "false",
                 "--dashboard-port", str(ports[7]), "--temp-dir", str(cluster.temp_dir)]
    else:
        args += ["--address", f"127.0.0.1:{head_port}"]
    env = {**os.environ, **RAY_ENV}
    process = subprocess.Popen(args, env=env, start_new_session=True, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cluster.groups.append(process.pid)  # the node's daemons keep this process group
    try:
        output, _ = process.communicate(timeout=NODE_START_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode:
        raise RuntimeError(f"ray start failed ({process.returncode}):\n{output[-3000:]}")
    return head_port


def stop_cluster(cluster: LocalCluster) -> None:
    """Kill every process of the cluster's process groups (TERM, then KILL)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for group in cluster.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        deadline = time.monotonic() + wait_s
        while _alive(cluster.groups) and time.monotonic() < deadline:
            time.sleep(0.1)


def _alive(groups: list[int]) -> bool:
    """Whether a process of ``groups`` is still running (zombies do not count)."""
    return any(_pgid(pid) in groups and _stat(pid)[0] != "Z" for pid in _pids())


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    # A short temp dir: Ray's unix socket paths must stay under 108 characters.
    local = LocalCluster("", Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")))
    patch = pytest.MonkeyPatch()
    for name, value in RAY_ENV.items():
        patch.setenv(name, value)  # the driver (this process) too
    try:
        head_port = _start_node(local)
        _start_node(local, head_port)
        local.address = f"127.0.0.1:{head_port}"
        yield local
    finally:
        stop_cluster(local)
        patch.undo()
        subprocess.run(["rm", "-rf", str(local.temp_dir)], check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Return the catalogue of 8 demo clips (4 speakers, NEU and HAP)."""
    root = tmp_path_factory.mktemp("cluster_demo")
    params = DemoCorpusParams(n_speakers=4, emotions=("HAP", "NEU"), sentences=("IEO",))
    prepare_dataset(DownloadParams(dataset="demo", demo=params), root / "download",
                    root / "cache", progress=False)
    return root / "download" / CATALOGUE_FILE


@pytest.fixture(scope="module")
def local_runs(demo, tmp_path_factory) -> dict[str, Path]:
    """Return the faces and audio outputs of the local pool (2 workers) on the demo clips."""
    root = tmp_path_factory.mktemp("local")
    run_faces(demo, root / "faces", FACES)
    process_catalogue(demo, root / "audio", AUDIO)
    return {"faces": root / "faces", "audio": root / "audio"}


def digests(directory: Path) -> dict[str, str]:
    """Return ``{relative path: sha256}`` of every file under ``directory``."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def on_ray(cluster: LocalCluster, chunk_clips: int) -> ClusterParams:
    return ClusterParams(executor="ray", address=cluster.address, chunk_clips=chunk_clips)


class WorkerKiller(threading.Thread):
    """SIGKILL a worker running a chunk, ``after_s`` seconds after ``ready()`` first holds."""

    def __init__(self, cluster: LocalCluster, ready, after_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.ready, self.after_s = cluster, ready, after_s
        self.killed: int | None = None
        self.niceness: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.ready():
            if self.stop.wait(0.05):
                return
        if self.stop.wait(self.after_s):
            return
        while not self.stop.wait(0.05):
            busy = self.cluster.busy_workers()
            if busy:
                self.killed = busy[0]
                self.niceness = int(_stat(self.killed)[16])
                os.kill(self.killed, signal.SIGKILL)
                logging.getLogger(__name__).warning("killed Ray worker %d", self.killed)
                return


def record_and_wait(item: int, log_dir: str, wait_s: float) -> int:
    """Record a start of ``item`` (a file per start), wait, return ``2 * item``; 5 quarantines."""
    Path(log_dir, f"{item}-{os.getpid()}-{time.monotonic_ns()}").touch()
    if item == 5:
        raise QuarantineError("odd_item", "five is quarantined", f"item{item}")
    time.sleep(wait_s)
    return 2 * item


def failing(item: int) -> int:
    """Raise a bug's exception for item 2."""
    if item == 2:
        raise ValueError(f"item {item} is a bug")
    return item


def test_faces_and_audio_on_the_cluster_are_the_local_bytes(cluster, demo, local_runs,
                                                            tmp_path):
    report = run_faces(demo, tmp_path / "faces_ray", FACES, on_ray(cluster, 3))
    process_catalogue(demo, tmp_path / "audio_ray", AUDIO, on_ray(cluster, 3))

    assert report.counts["selected"] == 8
    for stage in ("faces", "audio"):
        local = digests(local_runs[stage])
        assert f"{stage}-00000.parquet" in local  # nothing else (no parts) beside the outputs
        assert digests(tmp_path / f"{stage}_ray") == local


def test_a_killed_worker_costs_only_its_chunk(cluster, tmp_path):
    log_dir = tmp_path / "starts"
    log_dir.mkdir()
    function = partial(record_and_wait, log_dir=str(log_dir), wait_s=1.0)
    killer = WorkerKiller(cluster, lambda: any(log_dir.iterdir()), after_s=0.5)
    killer.start()
    try:
        results = list(map_clips(function, list(range(8)), on_ray(cluster, 2), tmp_path,
                                 workers=1, desc="test"))
    finally:
        killer.stop.set()
        killer.join()

    assert killer.killed is not None
    assert killer.niceness == 0  # the driver's priority, not Ray's default 15
    assert [item for item, _ in results] == list(range(8))
    assert [r for i, r in results if i != 5] == [2 * i for i in range(8) if i != 5]
    quarantined = results[5][1]
    assert isinstance(quarantined, QuarantineError) and quarantined.reason == "odd_item"
    starts = Counter(int(p.name.split("-")[0]) for p in log_dir.iterdir())
    rerun = {item for item, n in starts.items() if n > 1}
    assert rerun and {item // 2 for item in rerun} == {min(rerun) // 2}  # one chunk only
    assert all(starts[item] == 1 for item in range(8) if item // 2 != min(rerun) // 2)
    assert not list(tmp_path.glob(".test-parts.*"))


def test_faces_completes_identically_when_a_worker_is_killed_mid_run(cluster, demo, local_runs,
                                                                     tmp_path):
    out = tmp_path / "ray"
    killer = WorkerKiller(cluster, lambda: any(tmp_path.glob(".ray.*/.landmarks-parts.*")),
                          after_s=1.0)
    killer.start()
    try:
        run_faces(demo, out, FACES, on_ray(cluster, 2))
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None
    assert digests(out) == digests(local_runs["faces"])


def test_a_bug_in_a_task_propagates_from_the_driver(cluster, tmp_path):
    with pytest.raises(ValueError, match="item 2 is a bug"):
        list(map_clips(failing, list(range(4)), on_ray(cluster, 2), tmp_path, workers=1,
                       desc="bug"))
