"""The ``train_vae`` stage: train the (emotion-conditioned) face VAE on the dataset shards.

Usage: ``python -m stages.train_vae --params params.yaml --dataset DIR --out DIR
--checkpoints DIR --live DIR``. A run killed mid-training resumes from ``--checkpoints``
when its params and data are unchanged. ``train_vae.processes`` > 1 runs it under torchrun
with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from pipeline.config import TrainVaeParams, load_params
from pipeline.runtime import seed_everything, setup_logging
from pipeline.training.distributed import launch, process_group
from pipeline.training.vae import train_vae

log = logging.getLogger("stages.train_vae")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--out", required=True, help="output: model.pt and the PNG grids")
    parser.add_argument("--checkpoints", required=True, help="resumable checkpoint directory")
    parser.add_argument("--live", required=True, help="dvclive directory (plots, metrics.json)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: TrainVaeParams = load_params(args.params, "train_vae")
    code = launch(params.processes, "stages.train_vae", sys.argv[1:] if argv is None else argv)
    if code is not None:  # ran under torchrun in params.processes processes
        return code
    if params.threads:
        torch.set_num_threads(params.threads)
    seed_everything(params.seed)
    with process_group():
        metrics = train_vae(params, args.dataset, args.out, args.checkpoints, args.live)
    if not metrics:  # not rank 0: the outputs are rank 0's
        return 0
    log.info("val MSE %.5f (mean-face baseline %.5f), PSNR %.2f dB",
             metrics["val_mse"], metrics["mean_face_mse"], metrics["val_psnr_db"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
