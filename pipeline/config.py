"""Typed, validated parameters: one frozen pydantic dataclass per ``params.yaml`` section.

``load_params(path, "faces")`` returns a :class:`FacesParams`. Missing keys, unknown keys and
values of the wrong type or out of range raise ``ValueError`` naming the full key
(``faces.crop_size``) and what is allowed, so a typo in ``params.yaml`` fails before a stage
does any work. Nested sections (``download.demo``) are nested dataclasses.

pydantic does the checking: ranges are ``Field`` constraints, choices are ``Literal``s, a
field's docstring is its description. The dataclasses stay stdlib dataclasses underneath
(``dataclasses.replace`` and ``fields`` work; ``replace`` validates again).

Every field keeps a default equal to its value in ``params.yaml`` (``tests/test_config.py``
checks both ways), so that library code and tests can build params in code; ``load_params``
still requires every key in the file, because DVC tracks only what the file holds.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic_core
import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

EmotionCode = Literal["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
SentenceCode = Literal[
    "IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"
]
CREMA_D_EMOTIONS: tuple[str, ...] = typing.get_args(EmotionCode)
CREMA_D_SENTENCES: tuple[str, ...] = typing.get_args(SentenceCode)
CREMA_D_LEVELS = ("LO", "MD", "HI", "XX")

# Strict: an int field takes no bool, float or string; a float field takes an int (validated
# as JSON, see parse_params). No NaN or infinity anywhere.
CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=True,
                    use_attribute_docstrings=True)


def _distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"lists a value twice: {list(values)}")
    return values


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # NumPy's legacy seeding takes 32 bits
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Workers = Annotated[int, Field(ge=0, le=256)]
ShardMb = Annotated[int, Field(ge=1, le=4096)]
Emotions = Annotated[tuple[EmotionCode, ...], AfterValidator(_distinct)]
Device = Literal["auto", "cpu", "cuda"]
Url = Annotated[str, Field(pattern=r"^(https://|file://|http://127\.|http://localhost[:/])")]


@dataclass(frozen=True, config=CONFIG)
class DemoCorpusParams:
    """The embedded synthetic CREMA-D-like corpus (``download.demo``)."""

    seed: Seed = 1234
    """Seed for every random choice of the generator."""
    n_speakers: Annotated[int, Field(ge=2, le=1000)] = 40
    """Number of synthetic actors (half male, half female), ActorIDs from 1001."""
    emotions: Annotated[Emotions, Field(min_length=1)] = ("ANG", "HAP", "NEU", "SAD")
    """CREMA-D emotion codes to render, one clip per speaker x emotion x sentence."""
    sentences: Annotated[
        tuple[SentenceCode, ...], Field(min_length=1), AfterValidator(_distinct)
    ] = ("IEO", "TIE")
    """CREMA-D sentence codes spoken in the clips."""
    fps: Annotated[int, Field(ge=1, le=120)] = 30
    """Video frame rate."""
    width: Annotated[int, Field(ge=64, le=4096)] = 480
    """Video width in pixels (CREMA-D: 480)."""
    height: Annotated[int, Field(ge=64, le=4096)] = 360
    """Video height in pixels (CREMA-D: 360)."""
    audio_rate: Literal[11025, 22050, 44100] = 22050
    """Sample rate of the clips' audio tracks in Hz (FLV stores PCM at 11025/22050/44100)."""
    long_pause_fraction: Fraction = 0.25
    """Share of clips that get a silence longer than 1 s inside the speech."""

    @field_validator("n_speakers")
    @classmethod
    def _paired(cls, n_speakers: int) -> int:
        if n_speakers % 2:
            raise ValueError("must be even (M/F pairs)")
        return n_speakers


@dataclass(frozen=True, config=CONFIG)
class CremaDParams:
    """Where and what to fetch of the real CREMA-D (``download.crema_d``)."""

    raw_base_url: Url = "https://raw.githubusercontent.com/CheyneyComputerScience/CREMA-D/master"
    """Base URL of the repository's plain files (CSVs, LFS pointers)."""
    media_base_url: Url = (
        "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master"
    )
    """Base URL that serves the LFS media bytes."""
    local_dir: str = ""
    """A local clone (with LFS media pulled) to read instead of HTTP; empty = use HTTP."""
    media: Literal["both", "video", "audio"] = "both"
    """Which media files to fetch per clip."""
    actors: tuple[Annotated[str, Field(pattern=r"^\d{4}$")], ...] = ()
    """Restrict to these ActorIDs, e.g. ``'1001'`` (empty = all)."""
    emotions: Emotions = ()
    """Restrict to these emotion codes (empty = all)."""
    max_clips: Annotated[int, Field(ge=0)] = 0
    """Keep at most this many clips after the other filters (0 = no limit)."""
    known_bad: Literal["exclude", "flag"] = "exclude"
    """Known-bad clips: drop them (recorded in the report) or keep them with a flag."""


@dataclass(frozen=True, config=CONFIG)
class FolderParams:
    """A user's own folder of videos plus a labels CSV (``download.folder``)."""

    videos_dir: str = ""
    """Directory holding the videos (and audio files, if any)."""
    labels_csv: str = ""
    """CSV with columns file, speaker and optional emotion, level, sex, age, audio."""


@dataclass(frozen=True, config=CONFIG)
class VoxCeleb2Params:
    """VoxCeleb2 as it lies on disk (``download.voxceleb2``; 000's dataset)."""

    root: str = ""
    """Directory of ``<id>/<video_id>/<utt>.mp4`` (VoxCeleb2's ``dev/mp4`` or ``test/mp4``)."""
    meta_csv: str = ""
    """VoxCeleb2's ``vox2_meta.csv`` (``VoxCeleb2 ID``, ``Gender`` m/f): the speakers' sex."""
    speakers: tuple[Annotated[str, Field(pattern=r"^id\d{5}$")], ...] = ()
    """Restrict to these VoxCeleb ids, e.g. ``'id00012'`` (empty = all)."""
    max_clips_per_speaker: Annotated[int, Field(ge=0)] = 0
    """Keep at most this many utterances per speaker, taken in turn from each of their
    videos (0 = all)."""


@dataclass(frozen=True, config=CONFIG)
class DownloadParams:
    """The ``download`` stage: which dataset, and how to fetch it."""

    dataset: Literal["demo", "crema-d", "folder", "voxceleb2"] = "demo"
    """Dataset to catalogue: the embedded corpus, real CREMA-D, a local folder, or VoxCeleb2."""
    workers: Annotated[int, Field(ge=1, le=64)] = 8
    """Parallel downloads."""
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    """Retries per file on timeouts, 5xx and dropped connections."""
    timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    """Socket timeout per request in seconds."""
    backoff_s: Annotated[float, Field(ge=0.0, le=60.0)] = 1.0
    """First retry waits this long; each further retry of a file doubles it (max 60 s)."""
    demo: DemoCorpusParams = dataclasses.field(default_factory=DemoCorpusParams)
    """Settings of the embedded corpus."""
    crema_d: CremaDParams = dataclasses.field(default_factory=CremaDParams)
    """Settings for real CREMA-D."""
    folder: FolderParams = dataclasses.field(default_factory=FolderParams)
    """Settings for a local folder dataset."""
    voxceleb2: VoxCeleb2Params = dataclasses.field(default_factory=VoxCeleb2Params)
    """Settings for VoxCeleb2 on disk."""

    @field_validator("folder")
    @classmethod
    def _folder_given(cls, folder: FolderParams, info: ValidationInfo) -> FolderParams:
        empty = [k for k in ("videos_dir", "labels_csv") if not getattr(folder, k)]
        if info.data.get("dataset") == "folder" and empty:
            raise ValueError(f"{' and '.join(empty)} required when dataset is folder")
        return folder

    @field_validator("voxceleb2")
    @classmethod
    def _voxceleb2_given(cls, vox: VoxCeleb2Params, info: ValidationInfo) -> VoxCeleb2Params:
        empty = [k for k in ("root", "meta_csv") if not getattr(vox, k)]
        if info.data.get("dataset") == "voxceleb2" and empty:
            raise ValueError(f"{' and '.join(empty)} required when dataset is voxceleb2")
        return vox


@dataclass(frozen=True, config=CONFIG)
class FacesParams:
    """The ``faces`` stage: frame selection and face crops."""

    crop_size: Annotated[int, Field(ge=16, le=512)] = 64
    """Side of the square grayscale crop (003: 64; 000: 150)."""
    mode: Literal["peak_emotion", "frontal", "combined"] = "peak_emotion"
    """Frame selection: 003's peak emotion, 000's most frontal frame, or a weighted mix."""
    expression_weight: Fraction = 0.5
    """In ``combined`` mode, weight of expression vs frontality (0 = frontal only)."""
    max_yaw_deg: Annotated[float, Field(ge=0.0, le=90.0)] = 20.0
    """Frames turned further than this are not frontal enough for ``peak_emotion``."""
    detect_every: Annotated[int, Field(ge=1, le=1000)] = 40
    """Run the HOG detector on every N-th frame (and on landmark frames while no face is
    tracked); the box is tracked from the landmarks in between. It also bounds how long a
    track can stay on a face that moved away faster than the landmarks follow."""
    landmark_every: Annotated[int, Field(ge=1, le=30)] = 5
    """Coarse to fine: predict landmarks on every N-th frame, then on every frame from the
    best coarse candidate to its coarse neighbour on the side of the estimated peak, plus
    2 frames on the other side (+-N where there is no estimate; 1 = every frame)."""
    detect_scale: Annotated[float, Field(ge=0.1, le=2.0)] = 0.5
    """Downscale factor of the frames the detector sees."""
    max_detect_scale: Annotated[float, Field(ge=0.1, le=4.0)] = 2.0
    """Until a face is found, also try doubling scales up to this (finds small faces)."""
    min_face_px: Annotated[int, Field(ge=1, le=4096)] = 40
    """Faces narrower than this (in source pixels) are quarantined as too small."""
    multiple_faces: Literal["largest", "quarantine"] = "largest"
    """When several faces are found: keep the largest (recorded), or reject the clip."""
    reference: Literal["auto", "clip_least_expressive", "global_mean"] = "auto"
    """Neutral shape for expression scores: ``auto`` = the speaker's NEU clips when the
    dataset has them, else the clip's least-expressive frames; or force one of the others."""
    margin: Fraction = 0.05
    """Border around the face contour's box in the crop, as a share of the box side."""
    max_frames: Annotated[int, Field(ge=1, le=1_000_000)] = 900
    """Cap of frames read per clip (30 s at 30 fps), so a long clip cannot blow up time."""
    workers: Workers = 0
    """Parallel worker processes (0 = number of cores)."""
    sheet_samples: Annotated[int, Field(ge=0, le=10_000)] = 48
    """Faces shown on the contact sheet."""
    sequence_frames: Annotated[int, Field(ge=1, le=1000)] = 1
    """K > 1: also crop K equally spaced frames per clip (002 section 5.1's training images),
    aligned and masked as the chosen frame, into ``sequence-*.parquet``; 1: only the chosen
    frame (no sequence shards)."""
    shard_mb: ShardMb = 128
    """Target size of an output Parquet shard in MB."""

    @field_validator("max_detect_scale")
    @classmethod
    def _not_below_detect_scale(cls, scale: float, info: ValidationInfo) -> float:
        return _at_least(scale, info, "detect_scale")


@dataclass(frozen=True, config=CONFIG)
class ClusterParams:
    """Where the per-clip stages (faces, audio) run (``cluster``); their outputs are the same."""

    executor: Literal["local", "ray"] = "local"
    """``local``: a process pool on this machine (``<stage>.workers``); ``ray``: chunks of
    clips as tasks on a Ray cluster whose nodes all see the workspace at the same path."""
    address: str = ""
    """Ray: the cluster to join (``head-host:6379``); empty = start Ray on this machine."""
    chunk_clips: Annotated[int, Field(ge=1, le=100_000)] = 32
    """Ray: clips per task; each task writes its own part, which the driver merges in order."""
    max_retries: Annotated[int, Field(ge=0, le=100)] = 3
    """Ray: re-runs of a chunk whose worker process or node died, before the stage fails."""


@dataclass(frozen=True, config=CONFIG)
class AudioParams:
    """The ``audio`` stage (003 section 4.1.2)."""

    sample_rate: Annotated[int, Field(ge=4000, le=96000)] = 8000
    """Target sample rate in Hz (003: 8 kHz)."""
    min_silence_s: Annotated[float, Field(ge=0.05, le=60.0)] = 1.0
    """Silent intervals at least this long are removed (003: 1 s)."""
    silence_threshold_db: Annotated[float, Field(ge=-120.0, le=0.0)] = -35.0
    """A frame is silent when its RMS is this many dB below the clip's loudest frames."""
    silence_floor_db: Annotated[float, Field(ge=-200.0, le=0.0)] = -60.0
    """Clips whose loudest 10 ms frame is below this level (dBFS) are quarantined all silent."""
    length_s: Annotated[float, Field(ge=0.1, le=60.0)] = 3.67
    """Fixed output length; speech is tiled (repeated) or cut to it (003: 3.67 s)."""
    crop: Literal["start", "centre"] = "start"
    """Where to cut speech longer than ``length_s``."""
    min_speech_s: Annotated[float, Field(ge=0.0, le=60.0)] = 0.5
    """Clips with less speech than this are quarantined."""
    max_input_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    """Decode at most this much of any input (CREMA-D has a one-minute clip)."""
    workers: Workers = 0
    """Parallel worker processes (0 = number of cores)."""
    shard_mb: ShardMb = 128
    """Target size of the audio Parquet shards in MB."""

    @field_validator("max_input_s")
    @classmethod
    def _not_below_length(cls, seconds: float, info: ValidationInfo) -> float:
        return _at_least(seconds, info, "length_s")

    @property
    def n_samples(self) -> int:
        """Samples per output clip: ``round(length_s * sample_rate)``."""
        return round(self.length_s * self.sample_rate)


@dataclass(frozen=True, config=CONFIG)
class EmbedParams:
    """The ``embed`` stage: one pretrained speaker embedding per clip (004)."""

    encoder: Literal["resemblyzer"] = "resemblyzer"
    """Pretrained speaker encoder: resemblyzer's GE2E d-vector (256-d, 16 kHz, weights in its
    wheel). Silences are removed with the ``audio`` section's rule."""
    threads: Workers = 1
    """torch CPU threads (0 = all cores); 1 gives the same bytes on every machine and costs
    little (about 40 ms of CPU per clip)."""


@dataclass(frozen=True, config=CONFIG)
class DatasetParams:
    """The ``dataset`` stage: join, filter, split and shard."""

    emotions: Annotated[Emotions, Field(min_length=1)] = ("ANG", "HAP", "NEU", "SAD")
    """Emotion classes kept, in label order (003 uses these four)."""
    split_mode: Literal["speaker", "clip"] = "speaker"
    """``speaker``: speaker-disjoint, stratified by sex; ``clip``: the paper's random split."""
    val_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.15
    """Share of speakers (or clips) in the validation split."""
    test_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.2
    """Share of speakers (or clips) in the test split."""
    seed: Seed = 0
    """Seed of the split."""
    shard_mb: ShardMb = 128
    """Target Parquet shard size in MB."""
    row_group_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    """Rows per Parquet row group (a few training batches per read)."""

    @field_validator("test_fraction")
    @classmethod
    def _leaves_training_data(cls, fraction: float, info: ValidationInfo) -> float:
        if fraction + info.data.get("val_fraction", 0.0) >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (a train split)")
        return fraction


@dataclass(frozen=True, config=CONFIG)
class TrainVaeParams:
    """The ``train_vae`` stage (003 sections 3.2, 3.4, 4.2)."""

    seed: Seed = 0
    """Seed of initialisation, shuffling and sampling."""
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Training epochs (003 preset: 300)."""
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 16
    """Batch size (003: 32)."""
    lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate (003: 1e-3)."""
    feature_dim: Annotated[int, Field(ge=1, le=65_536)] = 256
    """Width of the encoder's conv features that mu / log-variance are computed from."""
    latent_dim: Annotated[int, Field(ge=1, le=65_536)] = 256
    """Size of z."""
    beta: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.25
    """Weight of the KL term (beta-VAE)."""
    conditional: bool | Literal["auto"] = "auto"
    """Append the emotion code to the features before mu / log-variance (003 section 3.4);
    ``auto``: when the dataset has emotion labels (else unconditional, 000's setting)."""
    decoder_code: bool = True
    """Also feed the code to the decoder with z (CVAE, Sohn et al. 2015); needs conditional."""
    code_bits_per_class: Annotated[int, Field(ge=1, le=64)] = 2
    """Bits per emotion class in the code (003: 2 bits x 4 classes = 8)."""
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Save a resumable checkpoint every N epochs."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    channels: Annotated[
        tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1)
    ] = (16, 32, 64, 128)
    """Output channels of the encoder's stride-2 convs (the decoder mirrors them)."""
    in_memory: bool = True
    """Read the splits into memory (small corpora); false streams the Parquet shards."""
    num_workers: Workers = 0
    """DataLoader worker processes (0 = load in the training process)."""
    threads: Workers = 0
    """torch intra-op CPU threads (0 = torch's default, all cores; 1 is robust when shared)."""
    processes: Annotated[int, Field(ge=1, le=1024)] = 1
    """Training processes on this machine: > 1 runs the stage under torchrun with
    DistributedDataParallel (gloo on the CPU, one GPU each with NCCL), splitting every batch."""
    grid_faces: Annotated[int, Field(ge=1, le=64)] = 8
    """Validation faces shown in the reconstruction and label-swap grids."""
    model: str = "vae"
    """Face model to train, by its name in ``pipeline.models.registry.FACE_MODELS``."""

    @field_validator("conditional", mode="before")
    @classmethod
    def _true_false_or_auto(cls, value: Any) -> Any:
        # One message instead of pydantic's one per member of the union.
        if value is True or value is False or value == "auto":
            return value
        raise ValueError("must be true, false or auto")


@dataclass(frozen=True, config=CONFIG)
class EmbeddingMlpParams:
    """The ``embedding_mlp`` voice model (``train_voice.embedding_mlp``; 004)."""

    hidden: Annotated[
        tuple[Annotated[int, Field(ge=1, le=65_536)], ...], Field(min_length=1)
    ] = (512,)
    """Widths of the hidden layers (ReLU, dropout after each)."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    """Dropout after each hidden layer while training."""
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 150
    """Training epochs (the shared fit loop; seed, target and standardisation are the
    section's)."""
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    """Batch size."""
    lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate."""
    threads: Workers = 1
    """torch CPU threads for this model (0 = all cores); 1: a model this small only pays
    for more in synchronisation (demo: 10 s of CPU with 1, 86 s with 2 on a busy machine)."""


@dataclass(frozen=True, config=CONFIG)
class RidgeParams:
    """The ``ridge`` voice model (``train_voice.ridge``)."""

    alpha: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0
    """L2 weight of scikit-learn's Ridge (on the L2-normalised embedding)."""


@dataclass(frozen=True, config=CONFIG)
class TrainVoiceParams:
    """The ``train_voice`` stage (003 section 3.3, Table 1, section 4.3)."""

    seed: Seed = 0
    """Seed of initialisation and shuffling."""
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 40
    """Training epochs (003 preset: 600)."""
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    """Batch size (003: 32)."""
    lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate (003: 1e-4)."""
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000)] = 5
    """Save a resumable checkpoint every N epochs."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    pooling: Literal["temporal", "style_tokens"] = "temporal"
    """Attention keys / values: the GRU's outputs, or GST's style tokens (DeepTalk)."""
    target: Literal["clip", "speaker_mean"] = "speaker_mean"
    """Regression target: each clip's own face features (003), or the mean over the speaker's
    clips (identity only: the expression of one frame is noise the voice cannot predict)."""
    standardize_targets: bool = True
    """Standardise the VAE features per dimension on train (folded back into the saved model)."""
    time_shift: bool = True
    """Rotate each training clip by a random circular shift per draw (augmentation)."""
    select_best: bool = False
    """Keep the weights of the epoch with the lowest validation loss, not the last epoch's."""
    collapse_warning: Fraction = 0.1
    """Warn when generated latents vary across val speakers less than this share of true ones."""
    num_workers: Workers = 0
    """DataLoader worker processes (0 = load in the training process)."""
    threads: Workers = 0
    """torch intra-op CPU threads (0 = torch's default, all cores; 1 is robust when shared)."""
    processes: Annotated[int, Field(ge=1, le=1024)] = 1
    """Training processes on this machine: > 1 runs the stage under torchrun with
    DistributedDataParallel (gloo on the CPU, one GPU each with NCCL), splitting every batch."""
    grid_clips: Annotated[int, Field(ge=1, le=64)] = 8
    """Validation clips (one per speaker) in the true | VAE | voice grid."""
    models: Annotated[
        tuple[str, ...], Field(min_length=1), AfterValidator(_distinct)
    ] = ("deeptalk", "embedding_mlp", "ridge")
    """Voice models trained (one ``train_voice@NAME`` stage each) and evaluated, by their names
    in ``pipeline.models.registry.VOICE_MODELS``; the first is the report's ``model`` row and
    ``generate``'s default. The keys above are the DeepTalk-style encoder's."""
    embedding_mlp: EmbeddingMlpParams = dataclasses.field(default_factory=EmbeddingMlpParams)
    """Settings of ``embedding_mlp`` (004: pretrained speaker embedding -> MLP)."""
    ridge: RidgeParams = dataclasses.field(default_factory=RidgeParams)
    """Settings of ``ridge`` (a closed-form linear map from the same embedding)."""


@dataclass(frozen=True, config=CONFIG)
class TrainEmotionParams:
    """The ``train_emotion`` stage: the emotion read from the voice (003 section 3.4's goal)."""

    inverse_l2: Annotated[float, Field(gt=0.0, le=1e6)] = 1.0
    """scikit-learn's ``C`` of the logistic regression: the inverse of its L2 weight."""


@dataclass(frozen=True, config=CONFIG)
class TrainVoiceDisentangledParams:
    """``train_voice_disentangled``: what differs from ``train_voice`` for 002's face model.

    That stage trains with every ``train_voice`` setting except these (its own share of the
    demo's time budget); ``stages.train_voice --overrides train_voice_disentangled``.
    """

    epochs: Annotated[int, Field(ge=1, le=100_000)] = 10
    """Training epochs (demo budget of the second system; train_voice.epochs: 40)."""


@dataclass(frozen=True, config=CONFIG)
class TrainDisentangledParams:
    """The ``train_disentangled`` stage: paper 002's identity / expression face model.

    The paper preset (002 section 5.1, 64 px): ``channels [32, 64, 128, 256]``, ``lr
    0.0005``, ``lr_decay 0.95``, ``identity_epochs`` and ``expression_epochs`` 100 (50 each
    when ``rounds`` > 1), ``adversarial_weight 1``, ``switch_weight 10``, ``kl_weight 1``
    (how its alpha_1 = 1e5, alpha_2 = 0.01 map to that: :mod:`pipeline.training.disentangle`).
    """

    seed: Seed = 0
    """Seed of initialisation, shuffling, pair draws and sampling."""
    rounds: Annotated[int, Field(ge=1, le=1000)] = 2
    """Identity stage then expression stage, repeated this many times (002 section 4.1.3)."""
    identity_epochs: Annotated[int, Field(ge=1, le=100_000)] = 3
    """Epochs of each identity stage (002 eq. 1; preset 100, or 50 when iterating)."""
    expression_epochs: Annotated[int, Field(ge=1, le=100_000)] = 4
    """Epochs of each expression stage (002 eq. 5; preset 100, or 50 when iterating)."""
    batch_size: Annotated[int, Field(ge=2, le=65_536)] = 8
    """Faces per step (at least 2: the switch loss pairs faces of different speakers)."""
    lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 2e-3
    """Adam learning rate at the start of each stage (002: 5e-4, betas 0.9 / 0.999)."""
    lr_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    """Learning rate factor per epoch within a stage (002: 0.95)."""
    latent_dim: Annotated[int, Field(ge=1, le=4096)] = 64
    """Size of each of z_i and z_e (002: 64)."""
    channels: Annotated[
        tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1)
    ] = (8, 16, 32, 64)
    """Widths of the encoders' conv pairs (002 Table 1: 32, 64, 128, 256)."""
    kl_weight: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.25
    """Weight of each KL term against the reconstruction (per-image pixel sum of squares)."""
    adversarial_weight: Annotated[float, Field(ge=0.0, le=1000.0)] = 1.0
    """Weight beta of the adversarial loss in the expression stage (002 eq. 5: 1)."""
    switch_weight: Annotated[float, Field(ge=0.0, le=1000.0)] = 10.0
    """Weight gamma of the switch loss in the expression stage (002 eq. 5: 10)."""
    baseline_epochs: Annotated[int, Field(ge=1, le=100_000)] = 8
    """Epochs of the Table 3 comparison VAEs (unconditional, speaker C-VAE)."""
    checkpoint_every: Annotated[int, Field(ge=1, le=100_000)] = 5
    """Save a resumable checkpoint every N epochs."""
    device: Device = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    num_workers: Workers = 0
    """DataLoader worker processes (0 = load in the training process)."""
    threads: Workers = 0
    """torch intra-op CPU threads (0 = torch's default, all cores; 1 is robust when shared)."""
    model: str = "disentangled"
    """Face model this stage trains, by its name in ``pipeline.models.registry.FACE_MODELS``."""


@dataclass(frozen=True, config=CONFIG)
class EvaluateParams:
    """The ``evaluate`` stage."""

    seed: Seed = 0
    """Seed of impostor draws, the random-speaker baseline and clustering runs."""
    clustering_runs: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Seeded k-means++ runs averaged for expression clustering (002 section 5.2.1)."""
    face_embedding: bool = True
    """Also rank in dlib's 128-d face-recognition space (on upscaled crops)."""
    similarity: Literal["cosine", "neg_l2"] = "cosine"
    """Similarity for identity retrieval and 1:2 matching: cosine or negative L2 distance."""
    recall_ks: Annotated[
        tuple[Annotated[int, Field(ge=1, le=1_000_000)], ...], Field(min_length=1)
    ] = (1, 5)
    """Cut-offs k of the retrieval recall R@k (chance: k / number of test speakers)."""
    ties: Literal["expected", "pessimistic"] = "expected"
    """Tied similarities: expected rank under a random order, or counted against the truth."""
    grid_clips: Annotated[int, Field(ge=1, le=64)] = 8
    """Generated faces shown per test speaker in the speaker grid (after their real face)."""
    emotion_grid_clips: Annotated[int, Field(ge=1, le=64)] = 6
    """Test clips (one per speaker) shown in the emotion grid, each with every emotion code."""


@dataclass(frozen=True, config=CONFIG)
class LipsParams:
    """The ``lips`` stage: per-frame mouth crops and mel-cepstra of one speaker (001 4.1).

    Face detection and tracking use the ``faces`` section's detector settings, with
    landmarks on every frame.
    """

    speaker: Annotated[str, Field(min_length=1)] = "auto"
    """Whose clips: a speaker id, ``auto`` (the speaker with the most clips, lowest id on
    ties) or ``all`` (every clip, pooled: not 001's speaker-dependent setting)."""
    test_fraction: Annotated[float, Field(ge=0.0, le=0.9)] = 0.25
    """Share of the utterances (clips) held out for testing (at least one)."""
    seed: Seed = 0
    """Seed of the utterance split."""
    crop_px: Annotated[int, Field(ge=8, le=512)] = 55
    """Side of the square grayscale mouth crop (001: 55)."""
    mouth_span: Annotated[float, Field(ge=0.2, le=5.0)] = 1.0
    """Side of the crop in inter-ocular distances (eye centre to eye centre)."""
    geometry_smoothing: Annotated[int, Field(ge=1, le=61)] = 5
    """Frames the crop's centre, side and angle are averaged over (1 = per frame)."""
    min_landmark_yield: Fraction = 0.8
    """Clips with landmarks on fewer than this share of their frames are quarantined."""
    dct_block: Annotated[int, Field(ge=0, le=512)] = 24
    """Keep the top-left N x N (lowest-frequency) DCT coefficients (0 = all)."""

    @field_validator("dct_block")
    @classmethod
    def _block_in_crop(cls, block: int, info: ValidationInfo) -> int:
        crop = info.data.get("crop_px")
        if crop is not None and block > crop:
            raise ValueError(f"must be at most lips.crop_px ({crop}), got {block}")
        return block

    pca_variance: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    """Keep the fewest principal components explaining this share of the block's variance."""
    sample_rate: Annotated[int, Field(ge=4000, le=96000)] = 12000
    """Speech sample rate in Hz (001: 48 kHz downsampled to 12 kHz)."""
    mcep_order: Annotated[int, Field(ge=1, le=255)] = 31
    """Mel-cepstrum order M: M + 1 coefficients (001: 32 dimensions)."""
    mcep_alpha: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.37
    """All-pass constant of the mel warping (0.37 fits the mel scale at 12 kHz; SPTK's
    manual: 0.31 at 8 kHz, 0.35 at 10 kHz, 0.42 at 16 kHz)."""
    window_s: Annotated[float, Field(ge=0.005, le=0.5)] = 0.05
    """Analysis window (Blackman) centred on each video frame's middle, in seconds."""
    dither_db: Annotated[float, Field(ge=-200.0, le=0.0)] = -60.0
    """RMS of the white noise (dBFS, seeded per clip) added before analysis: digital
    silence would make all silent frames' mel-cepstra one point (a degenerate density)."""
    floor_db: Annotated[float, Field(ge=-200.0, le=0.0)] = -100.0
    """Floor of the normalised power spectrum in dB (a guard: the dither stays above it)."""
    max_length_mismatch_s: Annotated[float, Field(ge=0.0, le=60.0)] = 0.2
    """Clips whose audio and video durations differ by more than this are quarantined."""
    workers: Workers = 0
    """Parallel worker processes (0 = number of cores)."""
    shard_mb: ShardMb = 128
    """Target size of an output Parquet shard in MB."""


@dataclass(frozen=True, config=CONFIG)
class TrainGgdrmParams:
    """The ``train_ggdrm`` stage: the GGDRM of 001 section 3, its baselines and evaluation."""

    seed: Seed = 0
    """Seed of initialisation, data order and sampling."""
    hidden: Annotated[
        tuple[Annotated[int, Field(ge=1, le=65_536)], ...], Field(min_length=1)
    ] = (400,)
    """Binary hidden layers between the image and the speech layer, image side first
    (001: 2 x 100)."""
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 32
    """Frames per update (pre-training, fine-tuning and the DNNs)."""
    pretrain_epochs: Annotated[int, Field(ge=0, le=100_000)] = 20
    """Epochs of CD-1 pre-training per layer pair (one hidden layer: of the whole model)."""
    pretrain_lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate of pre-training."""
    finetune_epochs: Annotated[int, Field(ge=0, le=100_000)] = 200
    """Epochs of maximum-likelihood fine-tuning of the whole model (PCD)."""
    finetune_lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate of fine-tuning (decayed linearly to 0 over the epochs)."""
    chains: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Persistent Gibbs chains of fine-tuning's negative phase."""
    gibbs_steps: Annotated[int, Field(ge=1, le=1000)] = 1
    """Gibbs sweeps of the persistent chains per update."""
    mean_field_steps: Annotated[int, Field(ge=1, le=1000)] = 10
    """Mean-field sweeps for the hidden posterior in training."""
    inference_steps: Annotated[int, Field(ge=1, le=1000)] = 30
    """Mean-field sweeps when one visible layer is clamped to predict the other."""
    dnn_epochs: Annotated[int, Field(ge=0, le=100_000)] = 100
    """Epochs of each feed-forward baseline (random initialisation, backprop)."""
    dnn_lr: Annotated[float, Field(ge=1e-8, le=1.0)] = 1e-3
    """Adam learning rate of the feed-forward baselines."""
    ridge_alpha: Annotated[float, Field(ge=0.0, le=1e6)] = 1.0
    """L2 penalty of the linear (ridge) baseline, on standardised features."""
    figure_frames: Annotated[int, Field(ge=1, le=64)] = 8
    """Consecutive test frames shown in the lips figure (001 Fig. 1)."""
    device: Device = "cpu"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    threads: Workers = 1
    """torch CPU threads (0 = all cores; tiny matrices: more threads only synchronise)."""


@dataclass(frozen=True, config=CONFIG)
class EvaluateExpressionParams:
    """The ``evaluate_expression`` stage: 002 section 5.2 on the disentangled face model."""

    seed: Seed = 0
    """Seed of the clustering runs and the probes' folds."""
    clusters: Annotated[int, Field(ge=1, le=1000)] = 9
    """k of k-means++ (002 section 5.2.1: 9)."""
    clustering_runs: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Seeded k-means++ runs per row, averaged (002: 100)."""
    probe_folds: Annotated[int, Field(ge=2, le=100)] = 4
    """Folds of the cross-validated speaker probe on the training speakers' faces."""
    swap_faces: Annotated[int, Field(ge=1, le=64)] = 6
    """Test speakers (columns) and expressions (rows) in the expression-swap figure."""
    interpolation_steps: Annotated[int, Field(ge=2, le=64)] = 7
    """Faces from the source to the target expression in the interpolation figure."""


SECTIONS: dict[str, type] = {
    "download": DownloadParams,
    "faces": FacesParams,
    "cluster": ClusterParams,
    "audio": AudioParams,
    "embed": EmbedParams,
    "dataset": DatasetParams,
    "train_vae": TrainVaeParams,
    "train_voice": TrainVoiceParams,
    "train_emotion": TrainEmotionParams,
    "evaluate": EvaluateParams,
    "lips": LipsParams,
    "train_ggdrm": TrainGgdrmParams,
    "train_disentangled": TrainDisentangledParams,
    "train_voice_disentangled": TrainVoiceDisentangledParams,
    "evaluate_expression": EvaluateExpressionParams,
}


def _at_least(value: float, info: ValidationInfo, other: str) -> float:
    """Return ``value``; raise when it is below the (already validated) field ``other``."""
    low = info.data.get(other)
    if low is not None and value < low:
        raise ValueError(f"must be >= {other} ({low})")
    return value


def load_params(path: str | Path, section: str) -> Any:
    """Return the validated dataclass for ``section`` of the YAML file at ``path``."""
    if section not in SECTIONS:
        raise ValueError(f"unknown params section {section!r}; known: {sorted(SECTIONS)}")
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f) or {}
    if section not in document:
        raise ValueError(f"{section}: section missing from {path}")
    return parse_params(section, document[section], source=str(path))


def parse_params(section: str, values: Any, source: str = "the params") -> Any:
    """Return the validated dataclass of ``section`` from its plain data (as in the YAML).

    Every key must be present (the dataclass defaults do not fill in: DVC sees only the
    file). Raises ``ValueError`` listing each bad key with its full name.
    """
    cls = SECTIONS[section]
    missing = list(_missing_keys(cls, values, section))
    if missing:
        raise ValueError("\n".join(f"{key}: missing from {source}" for key in missing))
    try:
        # As JSON: a YAML mapping is a JSON object, a list a JSON array (for tuples), and
        # pydantic's strict JSON rules are ours (no bool or float for an int).
        return _adapter(cls).validate_json(pydantic_core.to_json(values))
    except ValidationError as error:
        errors = error.errors(include_url=False)
        lines = [_describe(e, cls, section) for e in errors if not _has_inner(e, errors)]
        raise ValueError("\n".join(lines)) from None


def to_dict(params: Any) -> dict[str, Any]:
    """Return a params dataclass as plain YAML/JSON data (tuples become lists)."""
    return _adapter(type(params)).dump_python(params, mode="json")


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


def _missing_keys(cls: type, values: Any, key: str) -> Iterator[str]:
    """Yield the full name of each field of ``cls`` (nested ones too) absent from ``values``."""
    if not isinstance(values, dict):
        return  # pydantic reports the wrong type
    for name, info in cls.__pydantic_fields__.items():
        if name not in values:
            yield f"{key}.{name}"
        elif dataclasses.is_dataclass(info.annotation):
            yield from _missing_keys(info.annotation, values[name], f"{key}.{name}")


def _has_inner(error: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """Whether another error lies inside ``error``'s key (a list's bad item: report just it)."""
    loc = error["loc"]
    return any(len(e["loc"]) > len(loc) and e["loc"][: len(loc)] == loc for e in errors)


def _describe(error: ErrorDetails, cls: type, section: str) -> str:
    """Return one pydantic error as ``full.key: reason, got value (allowed: ...)``."""
    loc = error["loc"]
    key = section + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    fields = _fields_of(cls, loc[:-1]) if loc else {}
    if error["type"] == "unexpected_keyword_argument":
        return f"{key}: unknown key; known: {sorted(fields)}"
    reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    info = fields.get(loc[-1]) if loc else None
    return f"{key}: {reason}, got {error['input']!r}{_bounds(info.metadata if info else [])}"


def _fields_of(cls: Any, loc: tuple[int | str, ...]) -> dict[str, Any]:
    """Return the pydantic fields of the (nested) dataclass at ``loc`` ({} off the classes)."""
    for part in loc:
        info = getattr(cls, "__pydantic_fields__", {}).get(part)
        if info is None:
            return {}
        cls = info.annotation
    return getattr(cls, "__pydantic_fields__", {})


def _bounds(metadata: list[Any]) -> str:
    """Return `` (allowed: >= 16 and <= 512)`` from a field's constraints, or ``''``."""
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    limits = [f"{op} {getattr(m, name)}" for m in metadata for name, op in ops.items()
              if hasattr(m, name)]
    return f" (allowed: {' and '.join(limits)})" if limits else ""
