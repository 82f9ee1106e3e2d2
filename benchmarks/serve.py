"""The web app's latency and memory (goals: p50 <= 150 ms for one 3.67 s clip; no leak).

Starts ``python -m stages.serve`` on 127.0.0.1 (2 inference workers, torch threads 1), then:

1. one client, sequential requests of a 3.67 s WAV after warm-up: p50 and p95 of the whole
   round trip (upload, decoding, every model's forward pass, PNG encoding, JSON), against
   the bare ``generate_face`` call in this process (same models, same file, threads 1);
2. 8 concurrent clients x 25 requests: errors (goal 0), p50 / p95, requests per second, and
   the server's resident memory after 200 requests against after 20 (goal: within 10%).

Models: the pipeline's (``models/``, ``data/dataset`` from ``make demo``) when present, else
untrained models of the same architecture built from ``params.yaml`` (the same work per
request) and a synthetic gallery of 40 people x 8 clips. Only loopback traffic.

    python benchmarks/serve.py [--requests 40] [--untrained]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import soundfile
import torch

from pipeline.config import load_params
from pipeline.models.emotion_code import code_string, emotion_codes
from pipeline.models.vae import FaceVAE, save_model
from pipeline.models.voice_encoder import build_voice_encoder, save_voice_encoder
from pipeline.models.voice_to_face import generate_face, load_voice_to_face
from pipeline.serve.gallery import Face, Gallery, Voice
from pipeline.training.vae import vae_config

ROOT = Path(__file__).resolve().parents[1]
CLIENTS, PER_CLIENT, EARLY = 8, 25, 20
EMOTIONS = ("ANG", "HAP", "NEU", "SAD")


def speech(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced harmonics with a 4 Hz syllable envelope, about -14 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(rng.uniform(100, 220) * (1 + 0.05 * np.sin(6 * t))) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.65 + 0.35 * np.sin(25 * t))
    return (0.2 * voiced / np.abs(voiced).max()).astype(np.float32)


def untrained_models(work: Path) -> tuple[Path, Path]:
    """Return (face, voice) model files of params.yaml's architecture, untrained."""
    audio = load_params(ROOT / "params.yaml", "audio")
    train_vae = load_params(ROOT / "params.yaml", "train_vae")
    size = load_params(ROOT / "params.yaml", "faces").crop_size
    vae = FaceVAE(vae_config(train_vae, size, len(EMOTIONS))).eval()
    codes = emotion_codes(EMOTIONS, train_vae.code_bits_per_class)
    face = save_model(work / "vae" / "model.pt", vae, {
        "emotions": list(EMOTIONS), "codes": [code_string(c) for c in codes],
        "params": {"model": "vae"}})
    encoder = build_voice_encoder(load_params(ROOT / "params.yaml", "train_voice"),
                                  vae.config.feature_dim).eval()
    voice = save_voice_encoder(work / "voice" / "model.pt", encoder, {
        "emotions": list(EMOTIONS), "sample_rate": audio.sample_rate,
        "audio_samples": audio.n_samples, "params": {"model": "deeptalk"}})
    return face, voice


def synthetic_gallery(path: Path, size: int, samples: int) -> None:
    rng = np.random.default_rng(0)
    gallery = Gallery(path)
    for person in range(40):
        faces = [Face(rng.integers(0, 256, (size, size), dtype=np.uint8)) for _ in range(8)]
        voices = [Voice((rng.normal(0, 3000, samples)).astype(np.int16), 8000) for _ in range(8)]
        gallery.add(f"person {person}", faces, voices)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(face: Path, voice: Path, dataset: Path | None, gallery: Path,
                 port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "stages.serve", "--port", str(port),
               "--model", f"bench={face},{voice}", "--gallery", str(gallery),
               "--dataset", str(dataset or ""), "--workers", "2", "--queue", "16"]
    server = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/info", timeout=2)
            return server
        except requests.ConnectionError:
            if server.poll() is not None:
                raise RuntimeError("the server stopped") from None
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the server did not start within 300 s")


def post(session: requests.Session, url: str, clip: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    response = session.post(url, files={"audio": ("clip.wav", clip)}, timeout=60)
    response.content  # noqa: B018 - the whole answer is part of the round trip
    return time.perf_counter() - start, response.status_code


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(seconds, q)) * 1000


def sequential(url: str, clip: bytes, n: int) -> list[float]:
    times = []
    session = requests.Session()  # kept-alive connection, as a browser's
    for _ in range(n):
        elapsed, status = post(session, url, clip)
        if status != 200:
            raise RuntimeError(f"status {status}")
        times.append(elapsed)
    return times


def bare_generate(face: Path, voice: Path, wav: Path, n: int) -> list[float]:
    model = load_voice_to_face(face, voice)
    audio = load_params(ROOT / "params.yaml", "audio")
    for _ in range(3):
        generate_face(wav, model, None, audio)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        generate_face(wav, model, None, audio)
        times.append(time.perf_counter() - start)
    return times


def concurrent(url: str, clip: bytes, pid: int) -> dict:
    lock = threading.Lock()
    done, times, errors, rss = [0], [], [], {}

    def client() -> None:
        session = requests.Session()
        for _ in range(PER_CLIENT):
            elapsed, status = post(session, url, clip)
            with lock:
                done[0] += 1
                times.append(elapsed)
                if status != 200:
                    errors.append(status)
                if done[0] == EARLY:
                    rss["early"] = rss_mb(pid)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"times": times, "errors": errors, "wall": wall, "rss_early": rss["early"],
            "rss_late": rss_mb(pid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="sequential requests")
    parser.add_argument("--untrained", action="store_true", help="ignore models/ and data/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        face, voice = ROOT / "models/vae/model.pt", ROOT / "models/voice/model.pt"
        dataset: Path | None = ROOT / "data/dataset"
        trained = face.is_file() and voice.is_file() and dataset.is_dir() and not args.untrained
        if not trained:
            face, voice = untrained_models(work)
            dataset = None
            audio = load_params(ROOT / "params.yaml", "audio")
            synthetic_gallery(work / "gallery.sqlite",
                              load_params(ROOT / "params.yaml", "faces").crop_size,
                              audio.n_samples)
        wav = work / "clip.wav"
        soundfile.write(wav, speech(3.67, 16000), 16000)
        clip = wav.read_bytes()
        print(f"serve: {'trained' if trained else 'untrained, params.yaml-sized'} models, "
              f"{len(clip) / 1e3:.0f} kB WAV of 3.67 s; goal p50 <= 150 ms")
        port = free_port()
        server = start_server(face, voice, dataset, work / "gallery.sqlite", port)
        try:
            url = f"http://127.0.0.1:{port}/api/generate"
            sequential(url, clip, 5)  # warm-up
            one = sequential(url, clip, args.requests)
            bare = bare_generate(face, voice, wav, args.requests)
            p50, bare_p50 = percentile_ms(one, 50), percentile_ms(bare, 50)
            print(f"one client: p50 {p50:.1f} ms, p95 {percentile_ms(one, 95):.1f} ms over "
                  f"{len(one)} requests | bare generate_face p50 {bare_p50:.1f} ms "
                  f"(HTTP app / bare = {p50 / bare_p50:.2f}x) | "
                  f"{'OK' if p50 <= 150 else 'MISS'}")
            burst = concurrent(url, clip, server.pid)
            growth = burst["rss_late"] / burst["rss_early"] - 1
            times = burst["times"]
            print(f"{CLIENTS} clients x {PER_CLIENT}: {len(burst['errors'])} errors, "
                  f"p50 {percentile_ms(times, 50):.0f} ms, p95 {percentile_ms(times, 95):.0f} ms, "
                  f"{len(times) / burst['wall']:.1f} requests/s | RSS after {EARLY} "
                  f"{burst['rss_early']:.0f} MB, after {len(times)} {burst['rss_late']:.0f} MB "
                  f"({growth:+.1%}) | {'OK' if not burst['errors'] and growth <= 0.10 else 'MISS'}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
