"""The ``train_expression_baselines`` stage: the comparison models of paper 002's Table 3.

Usage: ``python -m stages.train_expression_baselines --params params.yaml --dataset DIR
--out DIR --checkpoints DIR``. Writes ``conventional.pt``, ``adversarial.pt``, ``vae.pt``
and ``cvae.pt`` into ``--out`` (see :mod:`pipeline.training.expression_baselines`).
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.config import TrainDisentangledParams, load_params
from pipeline.runtime import seed_everything, setup_logging
from pipeline.training.expression_baselines import train_expression_baselines

log = logging.getLogger("stages.train_expression_baselines")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--out", required=True, help="output: one model file per Table 3 row")
    parser.add_argument("--checkpoints", required=True, help="resumable checkpoint directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: TrainDisentangledParams = load_params(args.params, "train_disentangled")
    if params.threads:
        torch.set_num_threads(params.threads)
    seed_everything(params.seed)
    written = train_expression_baselines(params, args.dataset, args.out, args.checkpoints)
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
