"""The ``evaluate_expression`` stage: paper 002 section 5.2, and both face models side by side.

Usage: ``python -m stages.evaluate_expression --params params.yaml --dataset DIR --model DIR
--baselines DIR --voice-to-face NAME=METRICS.json [NAME=METRICS.json ...] --out DIR``.
Writes metrics.json, report.md, swap.png and interpolation.png into ``--out`` (see
:mod:`pipeline.evaluation.expression_stage`).
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import EvaluateExpressionParams, load_params
from pipeline.evaluation.expression_stage import REPORT_MD, evaluate_expression
from pipeline.runtime import seed_everything, setup_logging

log = logging.getLogger("stages.evaluate_expression")


def named_file(text: str) -> tuple[str, str]:
    """Return ``(name, path)`` of a ``NAME=PATH`` argument."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--model", required=True, help="train_disentangled's output directory")
    parser.add_argument("--baselines", required=True,
                        help="train_expression_baselines' output directory")
    parser.add_argument("--voice-to-face", type=named_file, nargs="+", required=True,
                        help="FACE_MODEL=metrics.json of the evaluate stage, per face model")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: EvaluateExpressionParams = load_params(args.params, "evaluate_expression")
    seed_everything(params.seed)
    metrics = evaluate_expression(args.dataset, args.model, args.baselines,
                                  dict(args.voice_to_face), params, args.out)
    log.info("checks: %s; report: %s/%s", metrics["targets"], args.out, REPORT_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
