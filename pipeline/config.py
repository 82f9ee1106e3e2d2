"""Typed, validated parameters: one frozen dataclass per ``params.yaml`` section.

``load_params(path, "faces")`` returns a :class:`FacesParams`. Unknown keys, missing keys and
values of the wrong type or out of range raise ``ValueError`` naming the full key
(``faces.crop_size``), so a typo in ``params.yaml`` fails before a stage does any work.
Nested sections (``download.demo``) are nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")

CREMA_D_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMA_D_LEVELS = ("LO", "MD", "HI", "XX")


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


def _check_range(value: float, key: str, low: float, high: float) -> None:
    _check(low <= value <= high, key, f"must be in [{low}, {high}], got {value!r}")


def _check_subset(values: Iterable[str], key: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    bad = [v for v in values if v not in allowed]
    _check(not bad, key, f"unknown value(s) {bad}; allowed: {list(allowed)}")


@dataclass(frozen=True)
class DemoCorpusParams:
    """The embedded synthetic CREMA-D-like corpus (``download.demo``)."""

    seed: int = 1234
    """Seed for every random choice of the generator."""
    n_speakers: int = 24
    """Number of synthetic actors (half male, half female), ActorIDs from 1001."""
    emotions: tuple[str, ...] = ("ANG", "HAP", "NEU", "SAD")
    """CREMA-D emotion codes to render, one clip per speaker x emotion x sentence."""
    sentences: tuple[str, ...] = ("IEO", "TIE")
    """CREMA-D sentence codes spoken in the clips."""
    fps: int = 30
    """Video frame rate."""
    width: int = 480
    """Video width in pixels (CREMA-D: 480)."""
    height: int = 360
    """Video height in pixels (CREMA-D: 360)."""
    audio_rate: int = 22050
    """Sample rate of the clips' audio tracks in Hz (FLV stores PCM at 11025/22050/44100)."""
    long_pause_fraction: float = 0.25
    """Share of clips that get a silence longer than 1 s inside the speech."""

    def __post_init__(self) -> None:
        _check_range(self.n_speakers, "download.demo.n_speakers", 2, 1000)
        _check(self.n_speakers % 2 == 0, "download.demo.n_speakers", "must be even (M/F pairs)")
        _check(len(self.emotions) > 0, "download.demo.emotions", "must not be empty")
        _check_subset(self.emotions, "download.demo.emotions", CREMA_D_EMOTIONS)
        _check(len(self.sentences) > 0, "download.demo.sentences", "must not be empty")
        _check_range(self.fps, "download.demo.fps", 1, 120)
        _check_range(self.width, "download.demo.width", 64, 4096)
        _check_range(self.height, "download.demo.height", 64, 4096)
        _check(
            self.audio_rate in (11025, 22050, 44100), "download.demo.audio_rate",
            f"must be 11025, 22050 or 44100 (FLV's PCM rates), got {self.audio_rate!r}",
        )
        _check_range(self.long_pause_fraction, "download.demo.long_pause_fraction", 0.0, 1.0)


@dataclass(frozen=True)
class CremaDParams:
    """Where and what to fetch of the real CREMA-D (``download.crema_d``)."""

    raw_base_url: str = "https://raw.githubusercontent.com/CheyneyComputerScience/CREMA-D/master"
    """Base URL of the repository's plain files (CSVs, LFS pointers)."""
    media_base_url: str = (
        "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"
    )
    """Base URL that serves the LFS media bytes."""
    local_dir: str = ""
    """A local clone (with LFS media pulled) to read instead of HTTP; empty = use HTTP."""
    media: Literal["both", "video", "audio"] = "both"
    """Which media files to fetch per clip."""
    actors: tuple[str, ...] = ()
    """Restrict to these ActorIDs (empty = all)."""
    emotions: tuple[str, ...] = ()
    """Restrict to these emotion codes (empty = all)."""
    max_clips: int = 0
    """Keep at most this many clips after the other filters (0 = no limit)."""
    known_bad: Literal["exclude", "flag"] = "exclude"
    """Known-bad clips: drop them (recorded in the report) or keep them with a flag."""

    def __post_init__(self) -> None:
        _check_subset(self.emotions, "download.crema_d.emotions", CREMA_D_EMOTIONS)
        _check(self.max_clips >= 0, "download.crema_d.max_clips", "must be >= 0")
        for key in ("raw_base_url", "media_base_url"):
            url = getattr(self, key)
            _check(
                url.startswith(("https://", "http://127.", "http://localhost", "file://")),
                f"download.crema_d.{key}",
                f"must be https://, file:// or http:// to loopback, got {url!r}",
            )


@dataclass(frozen=True)
class FolderParams:
    """A user's own folder of videos plus a labels CSV (``download.folder``)."""

    videos_dir: str = ""
    """Directory holding the videos (and audio files, if any)."""
    labels_csv: str = ""
    """CSV with columns file, speaker and optional emotion, level, sex, age, audio."""


@dataclass(frozen=True)
class DownloadParams:
    """The ``download`` stage: which dataset, and how to fetch it."""

    dataset: Literal["demo", "crema-d", "folder"] = "demo"
    """Dataset to catalogue: the embedded corpus, real CREMA-D, or a local folder."""
    workers: int = 8
    """Parallel downloads."""
    retries: int = 4
    """Retries per file on timeouts, 5xx and dropped connections."""
    timeout_s: float = 30.0
    """Socket timeout per request in seconds."""
    backoff_s: float = 1.0
    """First retry waits this long; each further retry of a file doubles it (max 60 s)."""
    demo: DemoCorpusParams = field(default_factory=DemoCorpusParams)
    """Settings of the embedded corpus."""
    crema_d: CremaDParams = field(default_factory=CremaDParams)
    """Settings for real CREMA-D."""
    folder: FolderParams = field(default_factory=FolderParams)
    """Settings for a local folder dataset."""

    def __post_init__(self) -> None:
        _check_range(self.workers, "download.workers", 1, 64)
        _check_range(self.retries, "download.retries", 0, 20)
        _check(self.timeout_s > 0, "download.timeout_s", "must be > 0")
        _check_range(self.backoff_s, "download.backoff_s", 0.0, 60.0)
        if self.dataset == "folder":
            _check(bool(self.folder.videos_dir), "download.folder.videos_dir", "required")
            _check(bool(self.folder.labels_csv), "download.folder.labels_csv", "required")


@dataclass(frozen=True)
class FacesParams:
    """The ``faces`` stage: frame selection and face crops."""

    crop_size: int = 64
    """Side of the square grayscale crop (003: 64; 000: 150)."""
    mode: Literal["peak_emotion", "frontal", "combined"] = "peak_emotion"
    """Frame selection: 003's peak emotion, 000's most frontal frame, or a weighted mix."""
    expression_weight: float = 0.5
    """In ``combined`` mode, weight of expression vs frontality (0 = frontal only)."""
    max_yaw_deg: float = 20.0
    """Frames turned further than this are not frontal enough for ``peak_emotion``."""
    detect_every: int = 40
    """Run the HOG detector on every N-th frame (and on landmark frames while no face is
    tracked); the box is tracked from the landmarks in between. It also bounds how long a
    track can stay on a face that moved away faster than the landmarks follow."""
    landmark_every: int = 5
    """Coarse to fine: predict landmarks on every N-th frame, then on every frame from the
    best coarse candidate to its coarse neighbour on the side of the estimated peak, plus
    2 frames on the other side (+-N where there is no estimate; 1 = every frame)."""
    detect_scale: float = 0.5
    """Downscale factor of the frames the detector sees."""
    max_detect_scale: float = 2.0
    """Until a face is found, also try doubling scales up to this (finds small faces)."""
    min_face_px: int = 40
    """Faces narrower than this (in source pixels) are quarantined as too small."""
    multiple_faces: Literal["largest", "quarantine"] = "largest"
    """When several faces are found: keep the largest (recorded), or reject the clip."""
    reference: Literal["auto", "clip_least_expressive", "global_mean"] = "auto"
    """Neutral shape for expression scores: ``auto`` = the speaker's NEU clips when the
    dataset has them, else the clip's least-expressive frames; or force one of the others."""
    margin: float = 0.05
    """Border around the face contour's box in the crop, as a share of the box side."""
    max_frames: int = 900
    """Cap of frames read per clip (30 s at 30 fps), so a long clip cannot blow up time."""
    workers: int = 0
    """Parallel worker processes (0 = number of cores)."""
    sheet_samples: int = 48
    """Faces shown on the contact sheet."""
    shard_mb: int = 128
    """Target size of an output Parquet shard in MB."""

    def __post_init__(self) -> None:
        _check_range(self.crop_size, "faces.crop_size", 16, 512)
        _check_range(self.expression_weight, "faces.expression_weight", 0.0, 1.0)
        _check_range(self.max_yaw_deg, "faces.max_yaw_deg", 0.0, 90.0)
        _check_range(self.detect_every, "faces.detect_every", 1, 1000)
        _check_range(self.landmark_every, "faces.landmark_every", 1, 30)
        _check_range(self.detect_scale, "faces.detect_scale", 0.1, 2.0)
        _check_range(self.max_detect_scale, "faces.max_detect_scale", self.detect_scale, 4.0)
        _check_range(self.margin, "faces.margin", 0.0, 1.0)
        _check_range(self.shard_mb, "faces.shard_mb", 1, 4096)
        _check_range(self.min_face_px, "faces.min_face_px", 1, 4096)
        _check_range(self.max_frames, "faces.max_frames", 1, 1_000_000)
        _check_range(self.workers, "faces.workers", 0, 256)
        _check_range(self.sheet_samples, "faces.sheet_samples", 0, 10_000)


@dataclass(frozen=True)
class AudioParams:
    """The ``audio`` stage (003 section 4.1.2)."""

    sample_rate: int = 8000
    """Target sample rate in Hz (003: 8 kHz)."""
    min_silence_s: float = 1.0
    """Silent intervals at least this long are removed (003: 1 s)."""
    silence_threshold_db: float = -35.0
    """A frame is silent when its RMS is this many dB below the clip's loudest frames."""
    silence_floor_db: float = -60.0
    """Clips whose loudest 10 ms frame is below this level (dBFS) are quarantined all silent."""
    length_s: float = 3.67
    """Fixed output length; speech is tiled (repeated) or cut to it (003: 3.67 s)."""
    crop: Literal["start", "centre"] = "start"
    """Where to cut speech longer than ``length_s``."""
    min_speech_s: float = 0.5
    """Clips with less speech than this are quarantined."""
    max_input_s: float = 30.0
    """Decode at most this much of any input (CREMA-D has a one-minute clip)."""
    workers: int = 0
    """Parallel worker processes (0 = number of cores)."""
    shard_mb: int = 128
    """Target size of the audio Parquet shards in MB."""

    def __post_init__(self) -> None:
        _check_range(self.sample_rate, "audio.sample_rate", 4000, 96000)
        _check_range(self.silence_floor_db, "audio.silence_floor_db", -200.0, 0.0)
        _check_range(self.shard_mb, "audio.shard_mb", 1, 4096)
        _check_range(self.min_silence_s, "audio.min_silence_s", 0.05, 60.0)
        _check_range(self.silence_threshold_db, "audio.silence_threshold_db", -120.0, 0.0)
        _check_range(self.length_s, "audio.length_s", 0.1, 60.0)
        _check_range(self.min_speech_s, "audio.min_speech_s", 0.0, 60.0)
        _check(self.max_input_s >= self.length_s, "audio.max_input_s", "must be >= length_s")
        _check_range(self.workers, "audio.workers", 0, 256)

    @property
    def n_samples(self) -> int:
        """Samples per output clip: ``round(length_s * sample_rate)``."""
        return round(self.length_s * self.sample_rate)


@dataclass(frozen=True)
class DatasetParams:
    """The ``dataset`` stage: join, filter, split and shard."""

    emotions: tuple[str, ...] = ("ANG", "HAP", "NEU", "SAD")
    """Emotion classes kept, in label order (003 uses these four)."""
    split_mode: Literal["speaker", "clip"] = "speaker"
    """``speaker``: speaker-disjoint, stratified by sex; ``clip``: the paper's random split."""
    val_fraction: float = 0.15
    """Share of speakers (or clips) in the validation split."""
    test_fraction: float = 0.15
    """Share of speakers (or clips) in the test split."""
    seed: int = 0
    """Seed of the split."""
    shard_mb: int = 128
    """Target Parquet shard size in MB."""
    row_group_rows: int = 256
    """Rows per Parquet row group (a few training batches per read)."""

    def __post_init__(self) -> None:
        _check(len(self.emotions) > 0, "dataset.emotions", "must not be empty")
        _check_subset(self.emotions, "dataset.emotions", CREMA_D_EMOTIONS)
        _check_range(self.val_fraction, "dataset.val_fraction", 0.0, 0.5)
        _check_range(self.test_fraction, "dataset.test_fraction", 0.0, 0.5)
        _check_range(self.shard_mb, "dataset.shard_mb", 1, 4096)
        _check_range(self.row_group_rows, "dataset.row_group_rows", 1, 1_000_000)


@dataclass(frozen=True)
class TrainVaeParams:
    """The ``train_vae`` stage (003 sections 3.2, 3.4, 4.2)."""

    seed: int = 0
    """Seed of initialisation, shuffling and sampling."""
    epochs: int = 40
    """Training epochs (003 preset: 300)."""
    batch_size: int = 32
    """Batch size (003: 32)."""
    lr: float = 1e-3
    """Adam learning rate (003: 1e-3)."""
    feature_dim: int = 256
    """Width of the encoder's conv features that mu / log-variance are computed from."""
    latent_dim: int = 256
    """Size of z."""
    beta: float = 1.0
    """Weight of the KL term (beta-VAE)."""
    conditional: bool = True
    """Append the emotion code to the features before mu / log-variance (003 section 3.4)."""
    decoder_code: bool = True
    """Also feed the code to the decoder with z (CVAE, Sohn et al. 2015); needs conditional."""
    code_bits_per_class: int = 2
    """Bits per emotion class in the code (003: 2 bits x 4 classes = 8)."""
    checkpoint_every: int = 5
    """Save a resumable checkpoint every N epochs."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    channels: tuple[int, ...] = (32, 64, 128, 256)
    """Output channels of the encoder's stride-2 convs (the decoder mirrors them)."""
    in_memory: bool = True
    """Read the splits into memory (small corpora); false streams the Parquet shards."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    threads: int = 1
    """torch intra-op CPU threads (0 = torch's default, all cores; 1 is robust when shared)."""
    grid_faces: int = 8
    """Validation faces shown in the reconstruction and label-swap grids."""

    def __post_init__(self) -> None:
        _check_range(self.epochs, "train_vae.epochs", 1, 100_000)
        _check(len(self.channels) > 0, "train_vae.channels", "must not be empty")
        for i, width in enumerate(self.channels):
            _check_range(width, f"train_vae.channels[{i}]", 1, 4096)
        _check_range(self.num_workers, "train_vae.num_workers", 0, 256)
        _check_range(self.threads, "train_vae.threads", 0, 256)
        _check_range(self.grid_faces, "train_vae.grid_faces", 1, 64)
        _check_range(self.batch_size, "train_vae.batch_size", 1, 65_536)
        _check_range(self.lr, "train_vae.lr", 1e-8, 1.0)
        _check_range(self.feature_dim, "train_vae.feature_dim", 1, 65_536)
        _check_range(self.latent_dim, "train_vae.latent_dim", 1, 65_536)
        _check_range(self.beta, "train_vae.beta", 0.0, 1000.0)
        _check_range(self.code_bits_per_class, "train_vae.code_bits_per_class", 1, 64)
        _check_range(self.checkpoint_every, "train_vae.checkpoint_every", 1, 100_000)
        _check(self.device in ("auto", "cpu", "cuda"), "train_vae.device", "auto, cpu or cuda")


@dataclass(frozen=True)
class TrainVoiceParams:
    """The ``train_voice`` stage (003 section 3.3, Table 1, section 4.3)."""

    seed: int = 0
    """Seed of initialisation and shuffling."""
    epochs: int = 60
    """Training epochs (003 preset: 600)."""
    batch_size: int = 32
    """Batch size (003: 32)."""
    lr: float = 1e-4
    """Adam learning rate (003: 1e-4)."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every N epochs."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    pooling: Literal["temporal", "style_tokens"] = "temporal"
    """Attention keys / values: the GRU's outputs, or GST's style tokens (DeepTalk)."""
    target: Literal["clip", "speaker_mean"] = "clip"
    """Regression target: each clip's own face features (003), or the mean over the speaker's
    clips (identity only: the expression of one frame is noise the voice cannot predict)."""
    standardize_targets: bool = True
    """Standardise the VAE features per dimension on train (folded back into the saved model)."""
    time_shift: bool = True
    """Rotate each training clip by a random circular shift per draw (augmentation)."""
    select_best: bool = True
    """Keep the weights of the epoch with the lowest validation loss, not the last epoch's."""
    collapse_warning: float = 0.1
    """Warn when generated latents vary across val speakers less than this share of true ones."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    threads: int = 1
    """torch intra-op CPU threads (0 = torch's default, all cores; 1 is robust when shared)."""
    grid_clips: int = 8
    """Validation clips (one per speaker) in the true | VAE | voice grid."""

    def __post_init__(self) -> None:
        _check_range(self.epochs, "train_voice.epochs", 1, 100_000)
        _check_range(self.batch_size, "train_voice.batch_size", 1, 65_536)
        _check_range(self.lr, "train_voice.lr", 1e-8, 1.0)
        _check_range(self.checkpoint_every, "train_voice.checkpoint_every", 1, 100_000)
        _check(self.device in ("auto", "cpu", "cuda"), "train_voice.device", "auto, cpu or cuda")
        _check(self.pooling in ("temporal", "style_tokens"), "train_voice.pooling",
               f"must be temporal or style_tokens, got {self.pooling!r}")
        _check(self.target in ("clip", "speaker_mean"), "train_voice.target",
               f"must be clip or speaker_mean, got {self.target!r}")
        _check_range(self.collapse_warning, "train_voice.collapse_warning", 0.0, 1.0)
        _check_range(self.num_workers, "train_voice.num_workers", 0, 256)
        _check_range(self.threads, "train_voice.threads", 0, 256)
        _check_range(self.grid_clips, "train_voice.grid_clips", 1, 64)


@dataclass(frozen=True)
class EvaluateParams:
    """The ``evaluate`` stage."""

    seed: int = 0
    """Seed of impostor draws, the random-speaker baseline and clustering runs."""
    clustering_runs: int = 100
    """Seeded k-means++ runs averaged for expression clustering (002 section 5.2.1)."""
    face_embedding: bool = True
    """Also rank in dlib's 128-d face-recognition space (on upscaled crops)."""
    similarity: Literal["cosine", "neg_l2"] = "cosine"
    """Similarity for identity retrieval and 1:2 matching: cosine or negative L2 distance."""
    recall_ks: tuple[int, ...] = (1, 5)
    """Cut-offs k of the retrieval recall R@k (chance: k / number of test speakers)."""
    ties: Literal["expected", "pessimistic"] = "expected"
    """Tied similarities: expected rank under a random order, or counted against the truth."""
    grid_clips: int = 8
    """Generated faces shown per test speaker in the speaker grid (after their real face)."""
    emotion_grid_clips: int = 6
    """Test clips (one per speaker) shown in the emotion grid, each with every emotion code."""

    def __post_init__(self) -> None:
        _check_range(self.clustering_runs, "evaluate.clustering_runs", 1, 10_000)
        _check_range(self.grid_clips, "evaluate.grid_clips", 1, 64)
        _check_range(self.emotion_grid_clips, "evaluate.emotion_grid_clips", 1, 64)
        _check(len(self.recall_ks) > 0, "evaluate.recall_ks", "must not be empty")
        for k in self.recall_ks:
            _check_range(k, "evaluate.recall_ks", 1, 1_000_000)


@dataclass(frozen=True)
class LipsParams:
    """The ``lips`` stage: per-frame mouth crops and mel-cepstra of one speaker (001 4.1).

    Face detection and tracking use the ``faces`` section's detector settings, with
    landmarks on every frame.
    """

    speaker: str = "auto"
    """Whose clips: a speaker id, ``auto`` (the speaker with the most clips, lowest id on
    ties) or ``all`` (every clip, pooled: not 001's speaker-dependent setting)."""
    test_fraction: float = 0.25
    """Share of the utterances (clips) held out for testing (at least one)."""
    seed: int = 0
    """Seed of the utterance split."""
    crop_px: int = 55
    """Side of the square grayscale mouth crop (001: 55)."""
    mouth_span: float = 1.0
    """Side of the crop in inter-ocular distances (eye centre to eye centre)."""
    geometry_smoothing: int = 5
    """Frames the crop's centre, side and angle are averaged over (1 = per frame)."""
    min_landmark_yield: float = 0.8
    """Clips with landmarks on fewer than this share of their frames are quarantined."""
    dct_block: int = 24
    """Keep the top-left N x N (lowest-frequency) DCT coefficients (0 = all)."""
    pca_variance: float = 0.95
    """Keep the fewest principal components explaining this share of the block's variance."""
    sample_rate: int = 12000
    """Speech sample rate in Hz (001: 48 kHz downsampled to 12 kHz)."""
    mcep_order: int = 31
    """Mel-cepstrum order M: M + 1 coefficients (001: 32 dimensions)."""
    mcep_alpha: float = 0.37
    """All-pass constant of the mel warping (0.37 fits the mel scale at 12 kHz; SPTK's
    manual: 0.31 at 8 kHz, 0.35 at 10 kHz, 0.42 at 16 kHz)."""
    window_s: float = 0.05
    """Analysis window (Blackman) centred on each video frame's middle, in seconds."""
    dither_db: float = -60.0
    """RMS of the white noise (dBFS, seeded per clip) added before analysis: digital
    silence would make all silent frames' mel-cepstra one point (a degenerate density)."""
    floor_db: float = -100.0
    """Floor of the normalised power spectrum in dB (a guard: the dither stays above it)."""
    max_length_mismatch_s: float = 0.2
    """Clips whose audio and video durations differ by more than this are quarantined."""
    workers: int = 0
    """Parallel worker processes (0 = number of cores)."""
    shard_mb: int = 128
    """Target size of an output Parquet shard in MB."""

    def __post_init__(self) -> None:
        _check(bool(self.speaker), "lips.speaker", "must be a speaker id, auto or all")
        _check_range(self.test_fraction, "lips.test_fraction", 0.0, 0.9)
        _check_range(self.crop_px, "lips.crop_px", 8, 512)
        _check_range(self.mouth_span, "lips.mouth_span", 0.2, 5.0)
        _check_range(self.geometry_smoothing, "lips.geometry_smoothing", 1, 61)
        _check_range(self.min_landmark_yield, "lips.min_landmark_yield", 0.0, 1.0)
        _check_range(self.dct_block, "lips.dct_block", 0, self.crop_px)
        _check(0.0 < self.pca_variance < 1.0, "lips.pca_variance",
               f"must be in (0, 1), got {self.pca_variance!r}")
        _check_range(self.sample_rate, "lips.sample_rate", 4000, 96000)
        _check_range(self.mcep_order, "lips.mcep_order", 1, 255)
        _check(0.0 <= self.mcep_alpha < 1.0, "lips.mcep_alpha",
               f"must be in [0, 1), got {self.mcep_alpha!r}")
        _check_range(self.window_s, "lips.window_s", 0.005, 0.5)
        _check_range(self.dither_db, "lips.dither_db", -200.0, 0.0)
        _check_range(self.floor_db, "lips.floor_db", -200.0, 0.0)
        _check_range(self.max_length_mismatch_s, "lips.max_length_mismatch_s", 0.0, 60.0)
        _check_range(self.workers, "lips.workers", 0, 256)
        _check_range(self.shard_mb, "lips.shard_mb", 1, 4096)


@dataclass(frozen=True)
class TrainGgdrmParams:
    """The ``train_ggdrm`` stage: the GGDRM of 001 section 3, its baselines and evaluation."""

    seed: int = 0
    """Seed of initialisation, data order and sampling."""
    hidden: tuple[int, ...] = (400,)
    """Binary hidden layers between the image and the speech layer, image side first
    (001: 2 x 100)."""
    batch_size: int = 32
    """Frames per update (pre-training, fine-tuning and the DNNs)."""
    pretrain_epochs: int = 20
    """Epochs of CD-1 pre-training per layer pair (one hidden layer: of the whole model)."""
    pretrain_lr: float = 1e-3
    """Adam learning rate of pre-training."""
    finetune_epochs: int = 200
    """Epochs of maximum-likelihood fine-tuning of the whole model (PCD)."""
    finetune_lr: float = 1e-3
    """Adam learning rate of fine-tuning (decayed linearly to 0 over the epochs)."""
    chains: int = 100
    """Persistent Gibbs chains of fine-tuning's negative phase."""
    gibbs_steps: int = 1
    """Gibbs sweeps of the persistent chains per update."""
    mean_field_steps: int = 10
    """Mean-field sweeps for the hidden posterior in training."""
    inference_steps: int = 30
    """Mean-field sweeps when one visible layer is clamped to predict the other."""
    dnn_epochs: int = 100
    """Epochs of each feed-forward baseline (random initialisation, backprop)."""
    dnn_lr: float = 1e-3
    """Adam learning rate of the feed-forward baselines."""
    ridge_alpha: float = 1.0
    """L2 penalty of the linear (ridge) baseline, on standardised features."""
    figure_frames: int = 8
    """Consecutive test frames shown in the lips figure (001 Fig. 1)."""
    device: str = "cpu"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    threads: int = 1
    """torch CPU threads (0 = all cores; tiny matrices: more threads only synchronise)."""

    def __post_init__(self) -> None:
        _check(len(self.hidden) > 0, "train_ggdrm.hidden", "must not be empty")
        for i, width in enumerate(self.hidden):
            _check_range(width, f"train_ggdrm.hidden[{i}]", 1, 65_536)
        _check_range(self.batch_size, "train_ggdrm.batch_size", 1, 65_536)
        for key in ("pretrain_epochs", "finetune_epochs", "dnn_epochs"):
            _check_range(getattr(self, key), f"train_ggdrm.{key}", 0, 100_000)
        for key in ("pretrain_lr", "finetune_lr", "dnn_lr"):
            _check_range(getattr(self, key), f"train_ggdrm.{key}", 1e-8, 1.0)
        _check_range(self.chains, "train_ggdrm.chains", 1, 100_000)
        _check_range(self.gibbs_steps, "train_ggdrm.gibbs_steps", 1, 1000)
        _check_range(self.mean_field_steps, "train_ggdrm.mean_field_steps", 1, 1000)
        _check_range(self.inference_steps, "train_ggdrm.inference_steps", 1, 1000)
        _check_range(self.ridge_alpha, "train_ggdrm.ridge_alpha", 0.0, 1e6)
        _check_range(self.figure_frames, "train_ggdrm.figure_frames", 1, 64)
        _check(self.device in ("auto", "cpu", "cuda"), "train_ggdrm.device", "auto, cpu or cuda")
        _check_range(self.threads, "train_ggdrm.threads", 0, 256)


SECTIONS: dict[str, type] = {
    "download": DownloadParams,
    "faces": FacesParams,
    "audio": AudioParams,
    "dataset": DatasetParams,
    "train_vae": TrainVaeParams,
    "train_voice": TrainVoiceParams,
    "evaluate": EvaluateParams,
    "lips": LipsParams,
    "train_ggdrm": TrainGgdrmParams,
}


def load_params(path: str | Path, section: str) -> Any:
    """Return the validated dataclass for ``section`` of the YAML file at ``path``."""
    if section not in SECTIONS:
        raise ValueError(f"unknown params section {section!r}; known: {sorted(SECTIONS)}")
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f) or {}
    if section not in document:
        raise ValueError(f"{section}: section missing from {path}")
    return from_dict(SECTIONS[section], document[section], section)


def from_dict(cls: type[T], values: Any, key: str) -> T:
    """Return ``cls`` built from a mapping, checking names and types of every field."""
    if not isinstance(values, dict):
        raise ValueError(f"{key}: expected a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{key}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Return ``value`` checked against (and lightly converted to) the type ``hint``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(hint)
        _check(value in allowed, key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        _check(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: {value!r} does not match {hint}")
    if hint is type(None):
        _check(value is None, key, f"expected null, got {value!r}")
        return None
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _check(ok, key, f"expected a number, got {value!r}")
        return float(value)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"expected an integer, got {value!r}")
        return value
    if hint in (bool, str):
        _check(isinstance(value, hint), key, f"expected {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported parameter type {hint!r}")


def to_dict(params: Any) -> dict[str, Any]:
    """Return a dataclass as plain YAML/JSON-friendly data (tuples become lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(params))
