"""The ``train_ggdrm`` stage: the GGDRM of paper 001 and its baselines, lips <-> speech.

Usage: ``python -m stages.train_ggdrm --params params.yaml --lips DIR --model FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.config import TrainGgdrmParams, load_params
from pipeline.ggdrm.stage import run_train_ggdrm
from pipeline.runtime import seed_everything, setup_logging

log = logging.getLogger("stages.train_ggdrm")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--lips", required=True, help="output directory of the lips stage")
    parser.add_argument("--model", required=True, help="output: the trained models (model.pt)")
    parser.add_argument("--out", required=True, help="output: metrics.json, report.md, figures")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: TrainGgdrmParams = load_params(args.params, "train_ggdrm")
    if params.threads:
        torch.set_num_threads(params.threads)
    seed_everything(params.seed)
    metrics = run_train_ggdrm(args.lips, args.model, args.out, params)
    lips, speech = metrics["speech_to_lips"], metrics["lips_to_speech"]
    for name in ("mean", "ridge", "dnn", "ggdrm_pretrained", "ggdrm"):
        log.info("%-17s lips pixel MSE %.5f  speech MCD %.2f dB", name,
                 lips[name]["pixel_mse"], speech[name]["mcd_db"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
