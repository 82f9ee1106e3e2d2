"""The tables that stages hand to each other: one Arrow schema per artefact.

Every column is documented in its field metadata (``doc``), so a shard describes itself.
These are the contracts between stages; writers validate against them with
:func:`conform`, readers can rely on them.

Layout on disk (paths come from ``dvc.yaml``):

- ``download`` -> ``<out>/catalogue.parquet`` (:data:`CATALOGUE`), media under ``<out>/media/``;
  catalogue paths are relative to the catalogue's directory.
- ``faces`` -> ``<out>/faces-NNNNN.parquet`` shards (:data:`FACES`), and with
  ``faces.sequence_frames`` > 1 ``<out>/sequence-NNNNN.parquet`` (:data:`SEQUENCE`).
- ``audio`` -> ``<out>/audio-NNNNN.parquet`` shards (:data:`AUDIO`).
- ``dataset`` -> ``<out>/{train,val,test}/part-NNNNN.parquet`` (:data:`DATASET`) and
  ``<out>/meta.json`` (:data:`DATASET_META_KEYS`); with sequence crops also
  ``<out>/{train,val,test}/frames-NNNNN.parquet`` (:data:`DATASET_FRAMES`).
- ``embed`` -> ``<out>/embeddings.parquet`` (:data:`SPEAKER_EMBEDDINGS`).
- ``lips`` -> ``<out>/lips-NNNNN.parquet`` (:data:`LIPS`), ``image_coder.parquet``,
  ``meta.json``.
"""

from __future__ import annotations

import pyarrow as pa


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


_IDENTITY = [
    _field("clip_id", pa.string(), "Clip identity, unique in the dataset (CREMA-D: file stem)."),
]

_LABELS = [
    _field("speaker_id", pa.string(), "Speaker identity (CREMA-D: ActorID)."),
    _field("sentence", pa.string(), "Sentence code (CREMA-D: IEO, TIE ...).", nullable=True),
    _field("emotion", pa.string(), "Emotion code ANG/DIS/FEA/HAP/NEU/SAD.", nullable=True),
    _field("level", pa.string(), "Emotion level LO/MD/HI/XX.", nullable=True),
    _field("sex", pa.string(), "Speaker sex: Male or Female.", nullable=True),
    _field("age", pa.int32(), "Speaker age in years.", nullable=True),
    _field("race", pa.string(), "Speaker race (CREMA-D demographics).", nullable=True),
    _field("ethnicity", pa.string(), "Speaker ethnicity (CREMA-D demographics).", nullable=True),
]

CATALOGUE = pa.schema(
    [
        *_IDENTITY,
        *_LABELS,
        _field("dataset", pa.string(), "Dataset the clip comes from: demo, crema-d, folder."),
        _field("video_path", pa.string(), "Video file, relative to the catalogue's directory.",
               nullable=True),
        _field("video_size", pa.int64(), "Video size in bytes.", nullable=True),
        _field("video_sha256", pa.string(), "Video SHA-256 (hex).", nullable=True),
        _field("audio_path", pa.string(),
               "Separate audio file (CREMA-D WAV), relative to the catalogue's directory.",
               nullable=True),
        _field("audio_size", pa.int64(), "Audio size in bytes.", nullable=True),
        _field("audio_sha256", pa.string(), "Audio SHA-256 (hex).", nullable=True),
        _field("flag", pa.string(), "Known problem with the clip (kept with a flag).",
               nullable=True),
    ]
)

FACES = pa.schema(
    [
        *_IDENTITY,
        _field("frame_index", pa.int32(), "Index of the chosen frame in the decoded video."),
        _field("n_frames", pa.int32(), "Frames decoded from the clip."),
        _field("face", pa.binary(), "Face crop, uint8 grayscale, row-major size x size bytes."),
        _field("size", pa.int32(), "Side of the square crop in pixels."),
        _field("landmarks", pa.list_(pa.float32(), 136),
               "68 dlib landmarks of the chosen frame, x0 y0 x1 y1 ... in source pixels."),
        _field("bbox", pa.list_(pa.int32(), 4), "Face box left, top, right, bottom (pixels)."),
        _field("yaw", pa.float32(), "Estimated head yaw of the chosen frame (degrees)."),
        _field("pitch", pa.float32(), "Estimated head pitch of the chosen frame (degrees)."),
        _field("roll", pa.float32(), "Estimated head roll of the chosen frame (degrees)."),
        _field("frontality", pa.float32(), "Frontality score of the chosen frame (1 = frontal)."),
        _field("expression", pa.float32(),
               "Expression intensity: aligned-landmark distance to the neutral reference."),
        _field("reference", pa.string(),
               "Neutral reference used: speaker_neutral, clip_least_expressive or global_mean."),
        _field("n_faces", pa.int32(), "Most faces the detector found in one frame."),
    ]
)

SEQUENCE = pa.schema(
    [
        *_IDENTITY,
        _field("frame_index", pa.int32(), "Index of the frame in the decoded video."),
        _field("face", pa.binary(), "Face crop, uint8 grayscale, row-major size x size bytes "
               "(aligned and masked as the chosen frame's)."),
        _field("size", pa.int32(), "Side of the square crop in pixels."),
    ]
)
"""The faces stage's crops of equally spaced frames (``faces.sequence_frames`` > 1)."""

AUDIO = pa.schema(
    [
        *_IDENTITY,
        _field("pcm", pa.binary(), "Mono int16 little-endian PCM at sample_rate, fixed length."),
        _field("sample_rate", pa.int32(), "Sample rate of pcm in Hz."),
        _field("n_samples", pa.int32(), "Samples in pcm (length_s x sample_rate)."),
        _field("original_duration_s", pa.float32(), "Duration of the decoded input (s)."),
        _field("speech_duration_s", pa.float32(), "Duration left after removing silences (s)."),
        _field("silences_removed", pa.int32(), "Number of silent intervals removed."),
    ]
)

DATASET = pa.schema(
    [
        *_IDENTITY,
        *_LABELS,
        _field("emotion_index", pa.int32(),
               "Position of emotion in meta.json's emotions list (the model's label); null "
               "when the data has no emotion labels.", nullable=True),
        _field("split", pa.string(), "train, val or test."),
        _field("face", pa.binary(), "Face crop, uint8 grayscale, row-major face_size^2 bytes."),
        _field("face_size", pa.int32(), "Side of the square face crop in pixels."),
        _field("frame_index", pa.int32(), "Frame of the source video the face comes from."),
        _field("audio", pa.binary(), "Mono int16 little-endian PCM, fixed length."),
        _field("sample_rate", pa.int32(), "Sample rate of audio in Hz."),
        _field("source", pa.string(), "Source video (or audio) path, as in the catalogue."),
    ]
)

SPEAKER_EMBEDDINGS = pa.schema(
    [
        *_IDENTITY,
        _field("speaker_id", pa.string(), "Speaker identity (CREMA-D: ActorID)."),
        # The item named as Parquet names it, so that the schema read back is this one.
        _field("embedding", pa.list_(pa.field("element", pa.float32()), 256),
               "Pretrained speaker embedding of the clip's speech (L2 norm 1)."),
        _field("encoder", pa.string(), "Pretrained encoder that computed it (resemblyzer)."),
        _field("sample_rate", pa.int32(), "Rate the encoder read the audio at (Hz)."),
        _field("speech_duration_s", pa.float32(), "Speech embedded, after removing silences (s)."),
        _field("source", pa.string(), "Audio (or video) file, relative to the catalogue."),
    ]
)


DATASET_FRAMES = pa.schema(
    [
        *_IDENTITY,
        _field("speaker_id", pa.string(), "Speaker identity (CREMA-D: ActorID)."),
        _field("emotion", pa.string(), "The clip's emotion code (of the whole clip, not of "
               "this frame).", nullable=True),
        _field("emotion_index", pa.int32(), "Position of emotion in meta.json's emotions; "
               "null without emotion labels.", nullable=True),
        _field("split", pa.string(), "train, val or test (the clip's)."),
        _field("frame_index", pa.int32(), "Frame of the source video."),
        _field("face", pa.binary(), "Face crop, uint8 grayscale, row-major face_size^2 bytes."),
        _field("face_size", pa.int32(), "Side of the square face crop in pixels."),
    ]
)
"""Equally spaced frames of the dataset's clips (``faces.sequence_frames`` > 1), in
``<split>/frames-NNNNN.parquet`` beside the clips' ``part-*`` shards."""

DATASET_META_KEYS = (
    "emotions",        # list[str]: label order; emotion_index indexes it; [] = no emotion labels
    "face_size",       # int
    "sample_rate",     # int
    "audio_samples",   # int
    "splits",          # {"train": {"clips": n, "speakers": [...]}, "val": ..., "test": ...}
    "split_mode",      # "speaker" | "clip"
)


def describe(schema: pa.Schema) -> str:
    """Return a Markdown table of the schema's columns, types and docs."""
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    for f in schema:
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        lines.append(f"| `{f.name}` | {f.type}{'?' if f.nullable else ''} | {doc} |")
    return "\n".join(lines)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, order, types and docs.

    Raises ``ValueError`` naming the missing columns, or a column whose values do not cast.
    """
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing} of the schema")
    columns = []
    for f in schema:
        try:
            columns.append(table.column(f.name).cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(f"column {f.name!r} does not cast to {f.type}: {error}") from error
    return pa.Table.from_arrays(columns, schema=schema)


LIPS = pa.schema(
    [
        *_IDENTITY,
        _field("speaker_id", pa.string(), "Speaker identity."),
        _field("split", pa.string(), "train or test: utterances (clips) of the speaker."),
        _field("frame_index", pa.int32(), "Index of the frame in the decoded video."),
        _field("time_s", pa.float32(), "Middle of the frame: (frame_index + 0.5) / fps."),
        _field("mouth", pa.binary(), "Mouth crop, uint8 grayscale, row-major crop_px^2 bytes."),
        _field("image_features", pa.list_(pa.float32()),
               "PCA coefficients of the crop's low-frequency DCT block (image_coder.parquet); "
               "meta.json n_features long."),
        _field("mcep", pa.list_(pa.float32()),
               "Mel-cepstrum c(0..M) (ln amplitude) of the speech window centred on the frame."),
    ]
)
"""``lips`` -> ``<out>/lips-NNNNN.parquet``: one row per video frame that has landmarks,
sorted by clip id and frame index."""
