"""Generate a face from a voice: any WAV / MP3 / video file -> PNG.

Usage: ``python -m stages.generate AUDIO --out face.png [--emotion HAP] [--params params.yaml]
[--face-model NAME | --vae MODEL.pt --voice MODEL.pt] [--emotion-model MODEL.pt] [--size N]``.
The audio goes through the audio stage's own code with the ``audio`` params section; the
models default to the paths the voice stage of ``dvc.yaml`` for the face model
``--face-model`` reads and writes (its ``--vae`` and ``--out``): ``vae`` (default, 003's VAE)
is stage ``train_voice``, for the first of ``train_voice.models``; ``disentangled`` (002's
model) is ``train_voice_disentangled``; ``--vae`` / ``--voice`` override them. The emotion
defaults to the one read from the voice by the ``train_emotion`` stage's classifier, logged
with its probability (``--emotion`` overrides it; without a classifier it is NEU, or the
face model's first emotion if it has no NEU); a face model trained without emotion labels
takes none, and ``--emotion`` is then refused; the PNG is as large as the faces the face
model was trained on (recorded in its file, whatever ``params.yaml`` says today) unless
``--size`` says otherwise.

Exit status 2, with a message naming the file or argument and the reason, for a ``--size``
outside 1..4096, an ``--out`` that is a directory, a missing model file or one that is not a
model file of its kind, an unreadable file, a file without speech, an unknown emotion name
(or any, for a model without emotions) or models that do not fit together. Arguments and
models are checked before any audio is read.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

import yaml
from PIL import Image

from pipeline.config import load_params
from pipeline.images import save_png, to_uint8
from pipeline.models.emotion_classifier import EmotionClassifier, load_emotion_classifier
from pipeline.models.files import ModelFileError
from pipeline.models.voice_to_face import GenerationError, generate_from_voice, load_voice_to_face
from pipeline.runtime import QuarantineError, setup_logging
from pipeline.training.emotion import MODEL_FILE as EMOTION_FILE
from pipeline.training.voice import MODEL_FILE
from stages import train_emotion, train_voice

log = logging.getLogger("stages.generate")

MAX_SIZE = 4096
"""Largest ``--size`` in pixels (a larger PNG only upscales a small face further)."""


VOICE_STAGES = {"vae": "train_voice", "disentangled": "train_voice_disentangled"}
"""Face model name (:data:`pipeline.models.registry.FACE_MODELS`) -> the dvc.yaml stage that
trains a voice model on it."""


def stage_model_paths(dvc_yaml: str | Path, params: str | Path,
                      stage: str = "train_voice") -> tuple[str, str]:
    """Return ``(face model, voice model)``: a voice stage's ``--vae`` and ``--out`` model.

    ``train_voice`` is a ``foreach`` over ``train_voice.models``: the voice model is the
    first of them (read from ``params``), as ``evaluate``'s ``model`` row is.
    """
    definition = yaml.safe_load(Path(dvc_yaml).read_text())["stages"][stage]
    cmd = definition["do"]["cmd"] if "foreach" in definition else definition["cmd"]
    if "${item}" in cmd:
        cmd = cmd.replace("${item}", load_params(params, "train_voice").models[0])
    args = _stage_args(cmd, "stages.train_voice", train_voice.build_parser())
    return args.vae, str(Path(args.out) / MODEL_FILE)


def stage_emotion_path(dvc_yaml: str | Path) -> str:
    """Return the emotion classifier the train_emotion stage writes (its ``--out``)."""
    cmd = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]["train_emotion"]["cmd"]
    args = _stage_args(cmd, "stages.train_emotion", train_emotion.build_parser())
    return str(Path(args.out) / EMOTION_FILE)


def _stage_args(cmd: str, module: str, parser: argparse.ArgumentParser) -> argparse.Namespace:
    words = shlex.split(cmd)
    return parser.parse_args(words[words.index(module) + 1:])


def png_size(text: str) -> int:
    """Return ``--size`` as an int in 1..:data:`MAX_SIZE` (argparse reports anything else)."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of pixels: {text!r}") from None
    if not 1 <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_SIZE} pixels, got {size}")
    return size


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", help="a WAV, MP3 or video file with speech")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--emotion", help="emotion code to render (default: the one read "
                        "from the voice; none for a face model trained without emotion labels)")
    parser.add_argument("--emotion-model", help="emotion classifier model.pt (default: dvc.yaml's "
                        "train_emotion --out; without it the default emotion is NEU)")
    parser.add_argument("--params", default="params.yaml", help="params.yaml (audio section)")
    parser.add_argument("--face-model", choices=sorted(VOICE_STAGES), default="vae",
                        help="whose model files to use by default: 003's VAE or 002's "
                        "disentangled model (default vae)")
    parser.add_argument("--vae", help="face model.pt (default: the --face-model voice stage's "
                        "--vae in dvc.yaml)")
    parser.add_argument("--voice", help="voice model.pt (default: the --face-model voice stage's "
                        "--out in dvc.yaml)")
    parser.add_argument("--dvc-yaml", default="dvc.yaml", help="where the default paths are read")
    parser.add_argument("--size", type=png_size,
                        help="PNG side in pixels (default: the face model's own face size)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    if Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a directory; give the PNG file to write")
    vae_path, voice_path = args.vae, args.voice
    if vae_path is None or voice_path is None:
        default_vae, default_voice = stage_model_paths(args.dvc_yaml, args.params,
                                                       VOICE_STAGES[args.face_model])
        vae_path, voice_path = vae_path or default_vae, voice_path or default_voice
    for path in (vae_path, voice_path, args.emotion_model):
        if path is not None and not Path(path).is_file():
            parser.error(f"{path}: model file not found (train it with dvc repro, or pass it)")
    try:
        model = load_voice_to_face(vae_path, voice_path)
        reader = None if args.emotion else _emotion_reader(args.emotion_model, args.dvc_yaml)
        generated = generate_from_voice(args.audio, model, args.emotion,
                                        load_params(args.params, "audio"), reader)
    except QuarantineError as error:
        log.error("%s: %s (%s)", args.audio, error.detail, error.reason)
        return 2
    except ModelFileError as error:
        log.error("%s", error)
        return 2
    except GenerationError as error:
        log.error("%s: %s", args.audio, error)
        return 2
    if generated.probability is not None:
        log.info("emotion read from the voice: %s (probability %.2f)", generated.emotion,
                 generated.probability)
    elif generated.emotion is not None:
        log.info("emotion: %s (%s)", generated.emotion, "given" if args.emotion else "default")
    size = model.face.image_size if args.size is None else args.size
    image = Image.fromarray(to_uint8(generated.face)).resize((size, size), Image.LANCZOS)
    save_png(image, args.out)
    log.info("wrote %s (%dx%d)", args.out, size, size)
    return 0



def _emotion_reader(path: str | None, dvc_yaml: str) -> EmotionClassifier | None:
    """Return the emotion classifier of ``--emotion-model`` or the train_emotion stage's.

    The stage's file may be absent (not trained yet): then the default emotion is used (and
    logged). A given or found file that is not a classifier raises ModelFileError.
    """
    if path is None:
        path = stage_emotion_path(dvc_yaml)
        if not Path(path).is_file():
            log.info("no emotion classifier at %s (dvc repro train_emotion): rendering the "
                     "default emotion", path)
            return None
    return load_emotion_classifier(path)


if __name__ == "__main__":
    raise SystemExit(main())
