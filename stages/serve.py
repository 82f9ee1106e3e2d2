"""Serve the web app: speak or drop a file, see the face and the nearest enrolled people.

Usage: ``python -m stages.serve [--port 8000] [--host 127.0.0.1] [--params params.yaml]
[--gallery FILE] [--model NAME=FACE.pt,VOICE.pt ...] [--emotion-model FILE]``. By default
the page offers every voice model that ``dvc.yaml``'s stages write (its ``.pt`` outputs) on
the face model it was trained on, the emotion shown is read from the voice by the
train_emotion stage's classifier (when trained), the dataset whose speakers start the
gallery is the ``dataset`` stage's output, and the gallery is ``gallery.sqlite`` beside the
models. Not a DVC stage: it only reads outputs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import uvicorn
from dvc.repo import Repo

from pipeline.config import load_params
from pipeline.runtime import setup_logging
from pipeline.serve.app import ServeSettings, create_app
from pipeline.serve.engine import (
    GenerationError,
    ModelFileError,
    ModelFiles,
    discover_model_files,
)
from stages.generate import stage_emotion_path

log = logging.getLogger("stages.serve")
GALLERY_FILE = "gallery.sqlite"
DATASET_STAGE = "dataset"
"""The stage whose output's speakers start the gallery."""


def stage_paths(dvc_yaml: str | Path) -> tuple[list[Path], Path]:
    """Return ``(every .pt output of dvc.yaml's stages, the dataset stage's output)``.

    DVC itself reads the file, so templated stages (``foreach``) come out resolved. Paths
    are joined to the directory of ``dvc.yaml``, where DVC runs the stages.
    """
    base = Path(dvc_yaml).parent
    with Repo(str(base.resolve())) as repo:
        stages = [s for s in repo.index.stages if Path(s.path) == Path(dvc_yaml).resolve()]
        models = [base / out.def_path for stage in stages for out in stage.outs
                  if out.def_path.endswith(".pt")]
        datasets = [base / out.def_path for stage in stages if stage.name == DATASET_STAGE
                    for out in stage.outs]
    if len(datasets) != 1:
        raise FileNotFoundError(f"{dvc_yaml}: expected one output of the {DATASET_STAGE!r} "
                                f"stage, found {len(datasets)}")
    return models, datasets[0]


def model_entry(text: str) -> ModelFiles:
    """Return the :class:`ModelFiles` of a ``NAME=FACE.pt,VOICE.pt`` argument."""
    name, _, files = text.partition("=")
    face, _, voice = files.partition(",")
    if not (name and face and voice):
        raise argparse.ArgumentTypeError(f"expected NAME=FACE.pt,VOICE.pt, got {text!r}")
    return ModelFiles(name, Path(face), Path(voice))


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--params", default="params.yaml", help="params.yaml (audio, faces)")
    parser.add_argument("--dvc-yaml", default="dvc.yaml", help="where the default paths are read")
    parser.add_argument("--model", action="append", type=model_entry, default=[],
                        help="NAME=FACE.pt,VOICE.pt (repeat to offer several; default: the "
                             "model files dvc.yaml's stages write, paired)")
    parser.add_argument("--dataset", help="dataset whose speakers start the gallery "
                        "(default: dvc.yaml's; '' for none)")
    parser.add_argument("--emotion-model", help="emotion classifier model.pt (default: "
                        "dvc.yaml's train_emotion --out when trained; '' for none)")
    parser.add_argument("--gallery", help=f"SQLite gallery (default: {GALLERY_FILE} beside "
                        "the models)")
    parser.add_argument("--clips-per-speaker", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="inference threads")
    parser.add_argument("--queue", type=int, default=16, help="requests waiting or running "
                        "before 503")
    parser.add_argument("--max-upload-mb", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (the workers run in parallel)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Return the app's settings: the given paths, else dvc.yaml's; params from params.yaml."""
    outputs, dataset = stage_paths(args.dvc_yaml)
    models = tuple(args.model) or tuple(discover_model_files(outputs))
    if not models:
        listed = ", ".join(map(str, outputs))
        raise FileNotFoundError(f"no trained voice and face models among {listed} "
                                "(make demo trains them)")
    for entry in models:
        for path in (entry.face, entry.voice):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: model file not found (make demo trains it)")
    chosen_dataset = dataset if args.dataset is None else Path(args.dataset) if args.dataset \
        else None
    gallery = Path(args.gallery) if args.gallery else models[0].voice.parent.parent / GALLERY_FILE
    emotion_model = _emotion_model(args.emotion_model, args.dvc_yaml)
    return ServeSettings(
        models=models, gallery=gallery, dataset=chosen_dataset,
        audio=load_params(args.params, "audio"), faces=load_params(args.params, "faces"),
        emotion_model=emotion_model, max_upload_mb=args.max_upload_mb, workers=args.workers,
        queue=args.queue,
        clips_per_speaker=args.clips_per_speaker)


def _emotion_model(given: str | None, dvc_yaml: str) -> Path | None:
    """Return the emotion classifier: the given file, else train_emotion's when it exists."""
    if given is not None:
        if given and not Path(given).is_file():
            raise FileNotFoundError(f"{given}: emotion model file not found")
        return Path(given) if given else None
    default = Path(dvc_yaml).parent / stage_emotion_path(dvc_yaml)
    if not default.is_file():
        log.info("no emotion classifier at %s: faces show the default emotion", default)
        return None
    return default


def main(argv: list[str] | None = None) -> int:
    """Run the app until interrupted; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    try:
        app = create_app(settings_from_args(args))
    except (FileNotFoundError, ModelFileError, GenerationError) as error:
        parser.error(str(error))
    log.info("serving on http://%s:%d", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose
                else "warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
