"""The ``train_emotion`` stage: the classifier that reads the emotion from the voice.

Usage: ``python -m stages.train_emotion --params params.yaml --dataset DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import TrainEmotionParams, load_params
from pipeline.runtime import setup_logging
from pipeline.training.emotion import train_emotion

log = logging.getLogger("stages.train_emotion")


def build_parser() -> argparse.ArgumentParser:
    """Return the stage's argument parser (``generate`` reads dvc.yaml's command with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--out", required=True, help="output: model.pt and metrics.json")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    params: TrainEmotionParams = load_params(args.params, "train_emotion")
    # No randomness: scikit-learn's lbfgs on fixed features is deterministic.
    metrics = train_emotion(params, args.dataset, args.out)
    log.info("wrote %s: %s", args.out, {k: round(v, 4) for k, v in metrics.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
