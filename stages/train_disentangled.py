"""The ``train_disentangled`` stage: train paper 002's identity / expression face model.

Usage: ``python -m stages.train_disentangled --params params.yaml --dataset DIR --out DIR
--checkpoints DIR --live DIR``. Writes ``model.pt`` and ``rounds/round_<r>.pt`` into
``--out``; a run killed mid-training resumes from ``--checkpoints`` when its params and data
are unchanged.
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.config import TrainDisentangledParams, load_params
from pipeline.runtime import seed_everything, setup_logging
from pipeline.training.disentangle import train_disentangled

log = logging.getLogger("stages.train_disentangled")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--out", required=True, help="output: model.pt and rounds/")
    parser.add_argument("--checkpoints", required=True, help="resumable checkpoint directory")
    parser.add_argument("--live", required=True, help="dvclive directory (plots, metrics.json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: TrainDisentangledParams = load_params(args.params, "train_disentangled")
    if params.threads:
        torch.set_num_threads(params.threads)
    seed_everything(params.seed)
    metrics = train_disentangled(params, args.dataset, args.out, args.checkpoints, args.live)
    log.info("val MSE %.5f with z_e (PSNR %.2f dB), %.5f with z_e = 0; mean face %.5f",
             metrics["expression_mse"], metrics["val_psnr_db"], metrics["identity_mse"],
             metrics["mean_face_mse"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
