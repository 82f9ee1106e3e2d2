"""The FastAPI application: a static page and a small JSON API over the trained models.

Routes (errors are JSON ``{"reason", "detail"}`` with a 4xx status, never a stack trace):

- ``GET /``: the page (every asset is served from ``static/``, nothing from elsewhere);
- ``GET /api/info``: the models to pick from, their emotions, the limits;
- ``POST /api/generate`` (``audio`` file, optional ``model``, ``emotion``): the face, the
  face with each emotion, the people whose real faces are nearest to it and the people
  whose voices are nearest to the voice;
- ``POST /api/identify`` (``face`` photo or video, optional ``model``): the people whose
  real faces are nearest to that face;
- ``GET /api/people``, ``POST /api/people`` (``name``, ``face``, optional ``voice``),
  ``DELETE /api/people/{id}``, ``GET /api/people/{id}/face.png``: the gallery.

Uploads are copied to a scratch file of the app's own naming (a user's file name is only
ever shown, never a path) and go through the stages' own code: audio through
:func:`~pipeline.audio.prepare.prepare_audio`, faces through :mod:`pipeline.serve.enrol`.
Blocking work runs on the :class:`~pipeline.serve.limits.InferenceQueue`.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from pipeline.audio.prepare import PreparedAudio, prepare_audio
from pipeline.config import AudioParams, FacesParams
from pipeline.images import to_uint8
from pipeline.runtime import QuarantineError
from pipeline.serve.engine import (
    GenerationError,
    ModelFiles,
    ServedModel,
    load_served_models,
)
from pipeline.serve.enrol import enrolment_face
from pipeline.serve.gallery import (
    DuplicateNameError,
    Face,
    Gallery,
    Person,
    UnknownPersonError,
    Voice,
    clean_name,
)
from pipeline.serve.limits import BodyLimit, InferenceQueue, QueueFullError
from pipeline.serve.ranking import Match, PeopleIndex

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
UPLOAD_CHUNK = 2**20


@dataclass(frozen=True)
class ServeSettings:
    """Everything the app is built from; the CLI fills it from dvc.yaml and params.yaml."""

    models: tuple[ModelFiles, ...]
    """The model pairs to offer (the first is the default)."""
    gallery: Path
    """SQLite file of the enrolled people (created when absent)."""
    dataset: Path | None
    """The dataset stage's output, whose speakers start the gallery (None: no seeding)."""
    audio: AudioParams
    """The ``audio`` section the models were trained with: every voice goes through it."""
    faces: FacesParams
    """The ``faces`` section: every enrolment face is cropped with it."""
    max_upload_mb: float = 20.0
    """Largest request body; larger ones get 413."""
    workers: int = 2
    """Threads running inference."""
    queue: int = 16
    """Requests that may wait or run at once; one more gets 503."""
    emotion_model: Path | None = None
    """The train_emotion stage's classifier: the emotion shown is read from the voice."""
    clips_per_speaker: int = 8
    """Clips (face and voice) each dataset speaker brings to the gallery."""
    face_px: int = 256
    """Side of the shown face (upscaled for viewing); the emotion faces are half that."""
    nearest: int = 5
    """People listed as nearest."""


class InputError(Exception):
    """A request the app refuses: the HTTP status, a stable reason and a message for people."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


class Service:
    """The loaded models, the gallery and its per-model index, and the inference queue."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.models: dict[str, ServedModel] = load_served_models(settings.models, settings.audio,
                                                                 settings.emotion_model)
        self.gallery = Gallery(settings.gallery)
        if settings.dataset is not None:
            self.gallery.sync_dataset(settings.dataset, settings.clips_per_speaker)
        people = list(self.gallery.all_samples())
        self.indexes = {name: PeopleIndex(model, settings.audio.n_samples,
                                               settings.audio.sample_rate)
                        for name, model in self.models.items()}
        for index in self.indexes.values():
            index.add(people)
        log.info("gallery %s: %d people", settings.gallery, len(people))
        self.queue = InferenceQueue(settings.workers, settings.queue)

    def model(self, name: str | None) -> ServedModel:
        """Return the model called ``name`` (None: the default); 422 for an unknown name."""
        if name is None or name == "":
            return next(iter(self.models.values()))
        if name not in self.models:
            raise InputError(422, "unknown_model",
                             f"no model {name!r}; choose one of {', '.join(self.models)}")
        return self.models[name]

    def generate(self, path: Path, label: str, model: ServedModel, emotion: str | None
                 ) -> dict[str, Any]:
        """Return the JSON answer of ``POST /api/generate`` for the audio at ``path``."""
        prepared = self.prepare_voice(path, label)
        embedding = model.embed(path, self.settings.audio) if model.uses_embedding else None
        try:
            result = model.generate(prepared.waveform(), emotion, embedding)
        except GenerationError as error:
            raise InputError(422, "bad_emotion", str(error)) from None
        index = self.indexes[model.name]
        size = self.settings.face_px
        return {
            "model": model.name,
            "face": {"emotion": result.emotions[result.shown] if result.emotions else None,
                     "png": png_data_url(result.faces[result.shown], size), "size": size},
            "emotions": [{"emotion": name, "png": png_data_url(face, size // 2)}
                         for name, face in zip(result.emotions, result.faces, strict=True)],
            "voice_emotion": None if result.voice_emotion is None else {
                "emotion": result.voice_emotion[0], "probability": result.voice_emotion[1]},
            "nearest_faces": [match_json(m) for m in
                              index.nearest_faces(result.latent, self.settings.nearest)],
            "nearest_voices": [match_json(m) for m in
                               index.nearest_voices(result.voice, self.settings.nearest)],
            "audio": {"duration_s": round(prepared.original_duration_s, 3),
                      "speech_s": round(prepared.speech_duration_s, 3),
                      "silences_removed": prepared.silences_removed},
        }

    def identify(self, path: Path, label: str, workdir: Path, model: ServedModel
                 ) -> dict[str, Any]:
        """Return the people whose real faces are nearest to the face in a photo or video."""
        crop = self.crop_face(path, label, workdir)
        latent = model.face_latents(crop[None], [None])[0]
        matches = self.indexes[model.name].nearest_faces(latent, self.settings.nearest)
        return {"model": model.name, "nearest_faces": [match_json(m) for m in matches]}

    def enrol(self, name: str, face: tuple[Path, str], voice: tuple[Path, str] | None,
              workdir: Path) -> Person:
        """Return the person enrolled with a face crop and, optionally, a voice clip."""
        try:
            clean_name(name)  # before any decoding
        except ValueError as error:
            raise InputError(422, "bad_name", str(error)) from None
        crop = self.crop_face(*face, workdir)
        voices = []
        if voice is not None:
            prepared = self.prepare_voice(*voice)
            voices.append(Voice(prepared.pcm, prepared.sample_rate))
        try:
            person = self.gallery.add(name, [Face(crop)], voices)
        except DuplicateNameError as error:
            raise InputError(409, "duplicate_name", str(error)) from None
        samples = self.gallery.samples(person.id)
        for index in self.indexes.values():
            index.add([samples])
        log.info("enrolled %s (id %d)", person.name, person.id)
        return person

    def remove(self, person_id: int) -> Person:
        """Return the removed person; 404 when unknown."""
        try:
            person = self.gallery.remove(person_id)
        except UnknownPersonError as error:
            raise InputError(404, "unknown_person", str(error.args[0])) from None
        for index in self.indexes.values():
            index.remove(person_id)
        return person

    def prepare_voice(self, path: Path, label: str) -> PreparedAudio:
        """Return the audio stage's clip of an upload; 422 naming the file and the reason."""
        try:
            prepared = prepare_audio(path, self.settings.audio)
        except QuarantineError as error:
            raise refusal(error, path, label) from None
        if prepared.truncated:
            raise InputError(422, "too_long", f"{label}: longer than the limit of "
                             f"{self.settings.audio.max_input_s:g} s (audio.max_input_s)")
        return prepared

    def crop_face(self, path: Path, label: str, workdir: Path) -> np.ndarray:
        """Return the faces stage's crop of an upload; 422 naming the file and the reason."""
        try:
            return enrolment_face(path, self.settings.faces, workdir)
        except QuarantineError as error:
            raise refusal(error, path, label) from None


_PLAIN = {
    "decode_error": "not a media file that can be read",
    "no_audio": "the file has no sound",
    "all_silent": "the recording is silent",
    "too_little_speech": "too little speech once the silences are removed",
    "no_video": "not a photo or a video",
    "no_frames": "the video has no picture",
    "no_face": "no face found",
    "face_too_small": "the face is too small",
    "multiple_faces": "more than one face",
}
"""What each reason of :class:`~pipeline.runtime.QuarantineError` means, for people."""


def refusal(error: QuarantineError, path: Path, label: str) -> InputError:
    """Return the 422 of a refused upload, naming the user's file, the reason and the details.

    Messages from FFmpeg quote the path; the scratch path means nothing to the user.
    """
    plain = _PLAIN.get(error.reason, error.reason.replace("_", " "))
    detail = error.detail.replace(str(path), label)
    return InputError(422, error.reason, f"{label}: {plain} ({detail})")


def png_data_url(face: np.ndarray, size: int) -> str:
    """Return a ``data:`` URL of a face ``(S, S)`` in [0, 1] as a PNG ``size`` pixels square."""
    image = Image.fromarray(to_uint8(face))
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # ~4x faster than 6, 10-20% larger
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def person_json(person: Person) -> dict[str, Any]:
    """Return a person as the API shows them."""
    return {"id": person.id, "name": person.name, "origin": person.origin,
            "faces": person.n_faces, "voices": person.n_voices}


def match_json(match: Match) -> dict[str, Any]:
    """Return a nearest person with their similarity."""
    return {**person_json(match.person), "similarity": round(match.similarity, 4)}


def upload_label(upload: UploadFile, field: str) -> str:
    """Return how messages name an upload: its file name (never used as a path) or the field."""
    name = Path(upload.filename or "").name[:80]
    return name or field


async def save_upload(upload: UploadFile, workdir: Path, field: str) -> tuple[Path, str]:
    """Return ``(scratch path, label)`` of an upload copied under ``workdir``; 422 when empty."""
    path = workdir / field  # the app's own name: the user's file name is never a path
    size = 0
    with open(path, "wb") as out:
        while chunk := await upload.read(UPLOAD_CHUNK):
            out.write(chunk)
            size += len(chunk)
    label = upload_label(upload, field)
    if size == 0:
        raise InputError(422, "empty_file", f"{label}: the file is empty")
    return path, label


def create_app(settings: ServeSettings) -> FastAPI:
    """Return the app over ``settings``' models and gallery (loaded now, once)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.queue.close()

    app = FastAPI(title="voice2face", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 2**20))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _routes(app, service)
    return app


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "models": [{"name": m.name, "emotions": list(m.emotions),
                        "default_emotion": m.default_emotion, "image_size": m.image_size,
                        "reads_emotion": m.reads_emotion} for m in service.models.values()],
            "max_upload_mb": service.settings.max_upload_mb,
            "max_seconds": service.settings.audio.max_input_s,
        }

    @app.post("/api/generate")
    async def generate(audio: Annotated[UploadFile, File()],
                       model: Annotated[str | None, Form()] = None,
                       emotion: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        chosen = service.model(model)
        with tempfile.TemporaryDirectory(prefix="serve-") as workdir:
            path, label = await save_upload(audio, Path(workdir), "audio")
            return await service.queue.run(service.generate, path, label, chosen,
                                           emotion or None)

    @app.post("/api/identify")
    async def identify(face: Annotated[UploadFile, File()],
                       model: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        chosen = service.model(model)
        with tempfile.TemporaryDirectory(prefix="serve-") as workdir:
            path, label = await save_upload(face, Path(workdir), "face")
            return await service.queue.run(service.identify, path, label, Path(workdir),
                                           chosen)

    @app.get("/api/people")
    async def people() -> list[dict[str, Any]]:
        return [person_json(p) for p in await _threaded(service.gallery.people)]

    @app.post("/api/people", status_code=201)
    async def enrol(name: Annotated[str, Form()], face: Annotated[UploadFile, File()],
                    voice: Annotated[UploadFile | None, File()] = None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="serve-") as workdir:
            scratch = Path(workdir)
            face_file = await save_upload(face, scratch, "face")
            voice_file = None
            if voice is not None and (voice.filename or voice.size):
                voice_file = await save_upload(voice, scratch, "voice")
            crops = scratch / "crops"
            crops.mkdir()
            person = await service.queue.run(service.enrol, name, face_file, voice_file, crops)
        return person_json(person)

    @app.delete("/api/people/{person_id}")
    async def remove(person_id: int) -> dict[str, Any]:
        return person_json(await _threaded(service.remove, person_id))

    @app.get("/api/people/{person_id}/face.png")
    async def face_png(person_id: int) -> Response:
        try:
            face = await _threaded(service.gallery.face, person_id)
        except UnknownPersonError as error:
            raise InputError(404, "unknown_person", str(error.args[0])) from None
        buffer = io.BytesIO()
        Image.fromarray(face.pixels).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})


async def _threaded(function: Callable[..., Any], *args: Any) -> Any:
    """Return ``function(*args)`` run on Starlette's thread pool (quick database work)."""
    return await run_in_threadpool(function, *args)


async def _input_error(_: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, InputError):
        raise error
    return JSONResponse({"reason": error.reason, "detail": error.detail},
                        status_code=error.status)


async def _queue_full(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"reason": "busy", "detail": str(error)}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


async def _bad_request(_: Request, error: Exception) -> JSONResponse:
    missing = [str(e["loc"][-1]) for e in getattr(error, "errors", list)()]
    detail = f"missing or invalid: {', '.join(missing)}" if missing else "malformed request"
    return JSONResponse({"reason": "bad_request", "detail": detail}, status_code=422)
