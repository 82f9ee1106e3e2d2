"""Face and voice models by name: the interface of each kind, and one registry per kind.

``evaluate``, ``generate`` and ``train_voice`` use a face model and a voice model only through
:class:`FaceModel` and :class:`VoiceModel`, shaped by what they need today:

- a **face model** turns a face into its *voice target* (what a voice model is trained to
  predict), turns a voice target and an emotion into a *latent*, and decodes a latent and an
  emotion into a face. The emotion is a batch of labels indexing :attr:`FaceModel.emotions`,
  or None for a face model that takes no emotion (``emotions == ()``).
- a **voice model** turns waveforms, or the clips' pretrained speaker embeddings (004, the
  ``embed`` stage), into voice targets.

Model files record their kind (:func:`pipeline.models.files.save_model_file`);
:func:`load_face_model` / :func:`load_voice_model` dispatch on it. ``params.yaml`` chooses a
model to train by its name here (``train_vae.model``, ``train_voice.models``). Adding a model
is one entry below and its own module; the stages that use models do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import nn

from pipeline.config import TrainVoiceParams
from pipeline.models import disentangled, embedding_voice, vae, voice_encoder
from pipeline.models.files import load_model_payload

M = TypeVar("M")


class FaceModel(Protocol):
    """What the stages use of a trained face model (frozen; inference only)."""

    @property
    def image_size(self) -> int:
        """Side S of the square grayscale faces it takes and makes."""
        ...

    @property
    def emotions(self) -> tuple[str, ...]:
        """Emotion names its labels index, in label order; empty when it takes no emotion."""
        ...

    @property
    def target_dim(self) -> int:
        """Width of its voice target."""
        ...

    def voice_target(self, faces: torch.Tensor) -> torch.Tensor:
        """Return the voice targets ``(B, target_dim)`` of faces ``(B, 1, S, S)`` in [0, 1]."""
        ...

    def latents(self, targets: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return latents ``(B, D)`` of voice targets ``(B, target_dim)`` with labels ``(B,)``."""
        ...

    def decode(self, latents: torch.Tensor, emotion: torch.Tensor | None) -> torch.Tensor:
        """Return faces ``(B, 1, S, S)`` in [0, 1] of latents ``(B, D)`` with labels ``(B,)``."""
        ...


class VoiceModel(Protocol):
    """What the stages use of a trained voice model."""

    @property
    def target_dim(self) -> int:
        """Width of the voice target it predicts (the face model's)."""
        ...

    @property
    def uses_embedding(self) -> bool:
        """Whether it reads the clip's pretrained speaker embedding (the ``embed`` stage's)."""
        ...

    def voice_target(
        self, waves: torch.Tensor | None, embeddings: torch.Tensor | None
    ) -> torch.Tensor:
        """Return predicted voice targets ``(B, target_dim)``.

        From waveforms ``(B, N)`` and / or speaker embeddings ``(B, 256)``: each model reads
        what it needs (None: not given).
        """
        ...


@dataclass(frozen=True)
class FaceModelEntry:
    """A registered face model: the kind its files record and how to load one."""

    kind: str
    """The ``kind`` its model files record."""
    load: Callable[[Mapping[str, Any], Path, str | torch.device], FaceModel]
    """``(payload, path, map_location) -> FaceModel``."""


@dataclass(frozen=True)
class VoiceModelEntry:
    """A registered voice model: its files' kind, how to load one and how to build one."""

    kind: str
    """The ``kind`` its model files record."""
    load: Callable[[Mapping[str, Any], Path, str | torch.device], VoiceModel]
    """``(payload, path, map_location) -> VoiceModel``."""
    build: Callable[[TrainVoiceParams, int], nn.Module]
    """``(params, target_dim) -> `` an untrained model (a :class:`VoiceModel` module)."""
    fit_params: Callable[[TrainVoiceParams], Any] = lambda params: params
    """The params whose epochs, batch size and lr the shared ``fit`` loop trains it with."""
    solve: Callable[[nn.Module, torch.Tensor, torch.Tensor, TrainVoiceParams], nn.Module] | None = (
        None)
    """``(model, embeddings, targets, params) -> model`` solved in closed form instead of
    ``fit`` (None: trained by ``fit``)."""


FACE_MODELS: dict[str, FaceModelEntry] = {
    "vae": FaceModelEntry(vae.MODEL_KIND, vae.face_model_from_payload),  # 003
    "disentangled": FaceModelEntry(  # 002: identity z_i + expression z_e
        disentangled.MODEL_KIND, disentangled.face_model_from_payload),
}
VOICE_MODELS: dict[str, VoiceModelEntry] = {
    "deeptalk": VoiceModelEntry(  # 003 Table 1
        voice_encoder.MODEL_KIND, voice_encoder.voice_encoder_from_payload,
        voice_encoder.build_voice_encoder,
    ),
    "embedding_mlp": VoiceModelEntry(  # 004: speaker embedding -> MLP
        embedding_voice.MLP_KIND, embedding_voice.regressor_from_payload,
        embedding_voice.build_embedding_mlp, fit_params=lambda params: params.embedding_mlp,
    ),
    "ridge": VoiceModelEntry(  # the simplest map from the same embedding
        embedding_voice.RIDGE_KIND, embedding_voice.regressor_from_payload,
        embedding_voice.build_ridge,
        solve=lambda model, x, y, params: embedding_voice.solve_ridge(model, x, y,
                                                                      params.ridge.alpha),
    ),
}


def face_model_entry(name: str, key: str = "train_vae.model") -> FaceModelEntry:
    """Return the face model registered as ``name``; ``ValueError`` naming ``key`` if none."""
    return _entry(FACE_MODELS, name, key, "face")


def voice_model_entry(name: str, key: str = "train_voice.models") -> VoiceModelEntry:
    """Return the voice model registered as ``name``; ``ValueError`` naming ``key`` if none."""
    return _entry(VOICE_MODELS, name, key, "voice")


def _entry(registry: Mapping[str, M], name: str, key: str, family: str) -> M:
    if name not in registry:
        raise ValueError(f"{key}: unknown {family} model {name!r}; registered: "
                         f"{', '.join(registry)}")
    return registry[name]


@dataclass(frozen=True)
class LoadedModel(Generic[M]):
    """A model read from its file, with the file's provenance."""

    path: Path
    """The model file."""
    model: M
    """The model (eval mode)."""
    provenance: Mapping[str, Any]
    """What the training stage recorded (params, epoch, git revision, ...)."""


def load_face_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> LoadedModel[FaceModel]:
    """Return the face model in a model file of any registered face kind.

    Raises:
        ModelFileError: naming the file and why it is not a face model file.
    """
    return _load(path, map_location, FACE_MODELS)


def load_voice_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> LoadedModel[VoiceModel]:
    """Return the voice model in a model file of any registered voice kind.

    Raises:
        ModelFileError: naming the file and why it is not a voice model file.
    """
    return _load(path, map_location, VOICE_MODELS)


def _load(
    path: str | Path,
    map_location: str | torch.device,
    registry: Mapping[str, FaceModelEntry] | Mapping[str, VoiceModelEntry],
) -> LoadedModel[Any]:
    by_kind = {entry.kind: entry for entry in registry.values()}
    payload = load_model_payload(path, by_kind, map_location)
    model = by_kind[payload["kind"]].load(payload, Path(path), map_location)
    return LoadedModel(Path(path), model, dict(payload.get("provenance", {})))


def check_fits_dataset(face: FaceModel, meta: Mapping[str, Any], path: str | Path) -> None:
    """Raise ``ValueError`` naming ``path`` when ``face`` does not fit a dataset's ``meta.json``.

    Its emotion labels must be the dataset's (same names, same order) when it takes any, and
    its faces the dataset's size.
    """
    if face.emotions and list(face.emotions) != list(meta["emotions"]):
        raise ValueError(f"{path} was trained with emotions {list(face.emotions)}, the dataset "
                         f"has {list(meta['emotions'])}")
    if int(meta["face_size"]) != face.image_size:
        raise ValueError(f"{path} takes {face.image_size}px faces, the dataset has "
                         f"{meta['face_size']}px")
