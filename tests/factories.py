"""Tiny inputs built in ``tmp_path``: catalogues (and the files they point to)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from pipeline.schemas import AUDIO, CATALOGUE, DATASET, FACES, conform


def make_catalogue(tmp_path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``tmp_path/catalogue.parquet`` (:data:`CATALOGUE`) from partial rows; return it.

    Each row needs ``clip_id``; ``speaker_id`` defaults to the clip id, ``dataset`` to
    ``folder``, every other column to null. An absolute ``video_path`` / ``audio_path`` is
    made relative to ``tmp_path``, as the catalogue contract requires.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list[Any]] = {name: [] for name in CATALOGUE.names}
    for row in rows:
        unknown = set(row) - set(CATALOGUE.names)
        if unknown:
            raise ValueError(f"unknown catalogue column(s) {sorted(unknown)}")
        full = {"speaker_id": row["clip_id"], "dataset": "folder", **row}
        for key in ("video_path", "audio_path"):
            if full.get(key) is not None and Path(full[key]).is_absolute():
                full[key] = os.path.relpath(full[key], tmp_path)
        for name in CATALOGUE.names:
            columns[name].append(full.get(name))
    table = conform(pa.table({f.name: pa.array(columns[f.name], f.type) for f in CATALOGUE}),
                    CATALOGUE)
    path = tmp_path / "catalogue.parquet"
    pq.write_table(table, path)
    return path


# --- audio (issue 6) -----------------------------------------------------------------------


def speech_like(rng: np.random.Generator, seconds: float, rate: int) -> np.ndarray:
    """Return a voiced, syllable-modulated signal (harmonics + breath noise) at about -14 dBFS.

    Its 10 ms envelope never drops more than ~12 dB below its peak, so no part of it is
    silent under any sane threshold.
    """
    n = round(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 2 * np.pi))
    wave = envelope * (voiced + 0.1 * rng.standard_normal(n))
    return (0.2 * wave / np.abs(wave).max()).astype(np.float32)


def speech_with_pauses(
    rng: np.random.Generator, layout: Sequence[tuple[str, float]], rate: int,
    noise_dbfs: float = -70.0,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Return ``(wave, pauses)`` for a layout like ``[("speech", 0.8), ("pause", 1.2), ...]``.

    Pauses hold faint noise at ``noise_dbfs``; ``pauses`` lists each ``(start_s, end_s)``.
    """
    parts, pauses, t = [], [], 0.0
    for kind, seconds in layout:
        if kind == "speech":
            parts.append(speech_like(rng, seconds, rate))
        else:
            n = round(seconds * rate)
            parts.append((10 ** (noise_dbfs / 20) * rng.standard_normal(n)).astype(np.float32))
            pauses.append((t, t + seconds))
        t += seconds
    return np.concatenate(parts), pauses


def write_wav(path: Path, wave: np.ndarray, rate: int, channels: int = 1) -> Path:
    """Write ``wave`` as 16-bit WAV (duplicated to ``channels``, the second one at 0.8x)."""
    data = wave if channels == 1 else np.stack(
        [wave * (1.0 if c == 0 else 0.8) for c in range(channels)], axis=1)
    soundfile.write(path, data, rate, subtype="PCM_16")
    return path


def write_media(
    path: Path, wave: np.ndarray | None, rate: int, codec: str = "mp2",
    video: bool = False, seconds: float = 1.0,
) -> Path:
    """Encode ``wave`` (mono float) with PyAV into ``path``; optional small video track.

    ``wave=None`` with ``video=True`` writes a video-only file (no audio track).
    """
    with av.open(str(path), "w") as container:
        vstream = astream = None
        if video:
            vstream = container.add_stream("mpeg4", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        if wave is not None:
            astream = container.add_stream(codec, rate=rate)
            astream.layout = "mono"
        if vstream is not None:
            n_frames = round((len(wave) / rate if wave is not None else seconds) * 25)
            for i in range(n_frames):
                image = np.full((48, 64, 3), (i * 9) % 255, dtype=np.uint8)
                container.mux(vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(vstream.encode(None))
        if astream is not None:
            _encode_audio(container, astream, wave, rate)
    return path


def _encode_audio(container: Any, stream: Any, wave: np.ndarray, rate: int) -> None:
    chunk = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    for i, start in enumerate(range(0, len(wave), chunk)):
        block = np.pad(wave[start:start + chunk], (0, max(0, start + chunk - len(wave))))
        if fmt in ("flt", "fltp"):
            data = block.astype(np.float32)[None, :]
        elif fmt in ("s32", "s32p"):
            data = np.round(np.clip(block, -1, 1) * (2**31 - 1)).astype(np.int32)[None, :]
        else:
            data = np.round(np.clip(block, -1, 1) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i * chunk, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_faces_shard(path: Path, faces: dict[str, np.ndarray]) -> Path:
    """Write a FACES shard for ``{clip_id: uint8 (S, S) crop}`` with plausible other fields."""
    rows = [
        {
            "clip_id": clip_id, "frame_index": 3, "n_frames": 60,
            "face": np.ascontiguousarray(face, dtype=np.uint8).tobytes(),
            "size": face.shape[0], "landmarks": [0.0] * 136, "bbox": [0, 0, 10, 10],
            "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "frontality": 1.0, "expression": 0.1,
            "reference": "global_mean", "n_faces": 1,
        }
        for clip_id, face in sorted(faces.items())
    ]
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=FACES), FACES), path)
    return path


def write_audio_shard(path: Path, pcm: dict[str, np.ndarray], sample_rate: int) -> Path:
    """Write an AUDIO shard for ``{clip_id: int16 PCM}``."""
    rows = [
        {
            "clip_id": clip_id, "pcm": samples.astype("<i2").tobytes(),
            "sample_rate": sample_rate, "n_samples": len(samples),
            "original_duration_s": len(samples) / sample_rate,
            "speech_duration_s": len(samples) / sample_rate, "silences_removed": 0,
        }
        for clip_id, samples in sorted(pcm.items())
    ]
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=AUDIO), AUDIO), path)
    return path


def write_quarantine(path: Path, rejections: dict[str, str]) -> Path:
    """Write a stage's ``quarantine.parquet`` for ``{item: reason}``."""
    items = sorted(rejections)
    table = pa.table({
        "item": items, "reason": [rejections[i] for i in items],
        "detail": ["synthetic"] * len(items), "source": [""] * len(items),
    })
    pq.write_table(table, path)
    return path


def make_dataset_dir(
    root: Path, clips_per_split: dict[str, int], face_size: int = 8, audio_samples: int = 40,
    row_group_rows: int = 4, emotions: Sequence[str] = ("ANG", "HAP", "NEU", "SAD"),
) -> Path:
    """Write a tiny ``dataset`` stage output (shards + meta.json) under ``root``; return it.

    Row ``k`` of the whole dataset has clip id ``c{k:04d}``, speaker ``s{k // 3}``, a face
    filled with ``k % 256`` and audio whose first sample is ``k`` (so tests can identify rows).
    """
    import json

    from pipeline.shards import ShardWriter

    k = 0
    splits = {}
    for split, n in clips_per_split.items():
        rows = []
        for _ in range(n):
            audio = np.zeros(audio_samples, dtype="<i2")
            audio[0] = k
            rows.append({
                "clip_id": f"c{k:04d}", "speaker_id": f"s{k // 3}", "sentence": "IEO",
                "emotion": emotions[k % len(emotions)], "level": "XX",
                "sex": ("Male", "Female")[k % 2], "age": 30, "race": None, "ethnicity": None,
                "emotion_index": k % len(emotions), "split": split,
                "face": np.full(face_size * face_size, k % 256, np.uint8).tobytes(),
                "face_size": face_size, "frame_index": 0, "audio": audio.tobytes(),
                "sample_rate": 8000, "source": f"media/c{k:04d}.flv",
            })
            k += 1
        with ShardWriter(root / split, "part", DATASET, 2**20, row_group_rows) as writer:
            writer.write(pa.Table.from_pylist(rows))
        speakers = sorted({r["speaker_id"] for r in rows})
        splits[split] = {"clips": n, "speakers": speakers}
    meta = {"emotions": list(emotions), "face_size": face_size, "sample_rate": 8000,
            "audio_samples": audio_samples, "splits": splits, "split_mode": "clip"}
    (root / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return root


def write_embeddings(embed_dir: Path, vectors: dict[str, np.ndarray], speaker_of=None) -> Path:
    """Write an embed stage output (``embeddings.parquet``) for ``{clip_id: (256,) vector}``."""
    from pipeline.embed.table import EMBEDDINGS_PARQUET
    from pipeline.schemas import SPEAKER_EMBEDDINGS

    embed_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"clip_id": clip, "speaker_id": (speaker_of or (lambda c: c))(clip),
             "embedding": (v / np.linalg.norm(v)).astype(np.float32).tolist(),
             "encoder": "resemblyzer", "sample_rate": 16000, "speech_duration_s": 1.0,
             "source": f"media/{clip}.wav"} for clip, v in sorted(vectors.items())]
    pq.write_table(conform(pa.Table.from_pylist(rows), SPEAKER_EMBEDDINGS),
                   embed_dir / EMBEDDINGS_PARQUET)
    return embed_dir


# --- VoxCeleb2 layout (issue 21) -------------------------------------------------------------

VOX2_META_HEADER = "\ufeffVoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
"""The header of VoxCeleb2's own ``vox2_meta.csv``: a byte-order mark, a space before commas."""


def vox_id(speaker: str) -> str:
    """Return the VoxCeleb-style id of a demo ActorID: ``1001`` -> ``id01001``."""
    return f"id{int(speaker):05d}"


def write_vox2_meta(path: Path, sexes: dict[str, str], sets: str = "dev") -> Path:
    """Write a ``vox2_meta.csv`` in VoxCeleb2's own format: ``{vox id: 'm' | 'f' | ...}``."""
    lines = [f"{speaker} ,n{speaker[2:]:0>6} ,{sex} ,{sets} \n"
             for speaker, sex in sorted(sexes.items())]
    path.write_text(VOX2_META_HEADER + "".join(lines), encoding="utf-8")
    return path


def write_voxceleb2_tree(root: Path, demo_dir: Path, clips_per_video: int = 1) -> dict[str, str]:
    """Lay the demo corpus catalogued in ``demo_dir`` out as VoxCeleb2: return {clip id: source}.

    Each demo clip becomes ``<root>/mp4/<id>/<video_id>/<utt>.mp4`` (H.264 + AAC, as
    VoxCeleb2 ships), a speaker's clips grouped ``clips_per_video`` to a video; the sexes go
    to ``<root>/vox2_meta.csv``. The returned clip ids are the ones the catalogue must give.
    """
    import subprocess

    clips = sorted(pq.read_table(demo_dir / "catalogue.parquet").to_pylist(),
                   key=lambda c: c["clip_id"])
    by_speaker: dict[str, list[dict[str, Any]]] = {}
    for clip in clips:
        by_speaker.setdefault(vox_id(clip["speaker_id"]), []).append(clip)
    made = {}
    for speaker, own in by_speaker.items():
        for k, clip in enumerate(own):
            video = f"v{speaker[2:]}x{k // clips_per_video:04d}"  # 11 characters, as YouTube's
            utterance = root / "mp4" / speaker / video / f"{k % clips_per_video + 1:05d}.mp4"
            utterance.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i",
                            str(demo_dir / clip["video_path"]), "-c:v", "libx264", "-preset",
                            "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-threads", "1",
                            str(utterance)], check=True, timeout=120)
            made[utterance.relative_to(root / "mp4").with_suffix("").as_posix()] = clip["clip_id"]
    write_vox2_meta(root / "vox2_meta.csv",
                    {s: own[0]["sex"][0].lower() for s, own in by_speaker.items()})
    return made
