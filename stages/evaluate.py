"""The ``evaluate`` stage: score voice -> face on held-out speakers against baselines.

Usage: ``python -m stages.evaluate --params params.yaml --dataset DIR --vae MODEL.pt
--voice MODEL.pt --out DIR``. Writes metrics.json, per_clip.parquet, dvc plot data, PNG grids
and report.md into ``--out`` (see :mod:`pipeline.evaluation.stage`).
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import EvaluateParams, load_params
from pipeline.evaluation.stage import MODEL, REPORT_MD, evaluate_models
from pipeline.runtime import seed_everything, setup_logging

log = logging.getLogger("stages.evaluate")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--vae", required=True, help="face model file (train_vae)")
    parser.add_argument("--voice", required=True, help="voice model file (train_voice)")
    parser.add_argument("--out", required=True, help="output directory (report, metrics, grids)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: EvaluateParams = load_params(args.params, "evaluate")
    seed_everything(params.seed)
    metrics = evaluate_models(args.dataset, args.vae, args.voice, params, args.out)
    model = metrics[MODEL]
    log.info("model: latent R@1 %s (chance %s), sex agreement %s; report: %s/%s",
             model["latent.r@1"], metrics["chance"]["latent.r@1"],
             model.get("attr.sex_agreement"), args.out, REPORT_MD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
