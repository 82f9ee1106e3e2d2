"""The ``evaluate`` stage: score voice -> face on held-out speakers against baselines.

Usage: ``python -m stages.evaluate --params params.yaml --dataset DIR --vae MODEL.pt
(--voice MODEL.pt | --voices DIR) [--embeddings DIR] [--emotion-model MODEL.pt]
--out DIR``. Writes metrics.json, per_clip.parquet, dvc plot data, PNG grids
and report.md into ``--out`` (see :mod:`pipeline.evaluation.stage`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import EvaluateParams, load_params
from pipeline.evaluation.stage import MODEL, REPORT_MD, evaluate_models
from pipeline.models.files import MODEL_FILE
from pipeline.runtime import seed_everything, setup_logging

log = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--vae", required=True, help="face model file (train_vae)")
    voices = parser.add_mutually_exclusive_group(required=True)
    voices.add_argument("--voice", help="one voice model file (train_voice)")
    voices.add_argument("--voices", help="directory of train_voice@NAME outputs: NAME/model.pt "
                        "for each of train_voice.models (the first is the `model` row)")
    parser.add_argument("--embeddings", help="the embed stage's output (speaker embeddings)")
    parser.add_argument("--emotion-model", help="the train_emotion stage's model.pt")
    parser.add_argument("--out", required=True, help="output directory (report, metrics, grids)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: EvaluateParams = load_params(args.params, "evaluate")
    seed_everything(params.seed)
    voice = args.voice
    if args.voices:
        names = load_params(args.params, "train_voice").models
        voice = {name if i else MODEL: Path(args.voices) / name / MODEL_FILE
                 for i, name in enumerate(names)}
        for name, path in zip(names, voice.values(), strict=True):
            if not path.is_file():
                parser.error(f"{path}: no model file for {name} of train_voice.models "
                             "(dvc repro train_voice)")
    metrics = evaluate_models(args.dataset, args.vae, voice, params, args.out, args.embeddings,
                              args.emotion_model)
    model = metrics[MODEL]
    log.info("model: latent R@1 %s (chance %s), sex agreement %s; report: %s/%s",
             model["latent.r@1"], metrics["chance"]["latent.r@1"],
             model.get("attr.sex_agreement"), args.out, REPORT_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
