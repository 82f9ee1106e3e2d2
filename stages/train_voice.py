"""The ``train_voice`` stage: train a voice model to predict the frozen VAE's face features.

Usage: ``python -m stages.train_voice --params params.yaml [--overrides SECTION] --dataset DIR
--vae MODEL.pt --out DIR --checkpoints DIR --live DIR [--model NAME] [--embeddings DIR]``;
``--overrides`` names a params section whose keys replace ``train_voice``'s (the voice stage
of another face model). A run killed mid-training resumes from ``--checkpoints`` when its
params, data and VAE are unchanged. ``train_voice.processes`` > 1 runs a model trained by
the shared loop under torchrun with DistributedDataParallel (a closed-form model such as
``ridge`` always runs in one process).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import torch

from pipeline.config import TrainVoiceParams, load_params, to_dict
from pipeline.models.registry import voice_model_entry
from pipeline.runtime import seed_everything, setup_logging
from pipeline.training.distributed import launch, process_group
from pipeline.training.voice import model_threads, train_voice

log = logging.getLogger("stages.train_voice")


def build_parser() -> argparse.ArgumentParser:
    """Return the stage's argument parser (``generate`` reads dvc.yaml's command with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--overrides", choices=("train_voice_disentangled",),
                        help="a params section whose keys replace train_voice's (another "
                        "face model's voice stage)")
    parser.add_argument("--dataset", required=True, help="output directory of the dataset stage")
    parser.add_argument("--vae", required=True, help="the train_vae stage's model.pt (frozen)")
    parser.add_argument("--out", required=True, help="output: model.pt and the PNG grid")
    parser.add_argument("--checkpoints", required=True, help="resumable checkpoint directory")
    parser.add_argument("--live", required=True, help="dvclive directory (plots, metrics.json)")
    parser.add_argument("--model", help="voice model to train, a name in the registry "
                        "(default: the first of train_voice.models)")
    parser.add_argument("--embeddings", help="the embed stage's output (for the voice models "
                        "that read the pretrained speaker embedding)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    params: TrainVoiceParams = load_params(args.params, "train_voice")
    if args.overrides:
        params = replace(params, **to_dict(load_params(args.params, args.overrides)))
    name = args.model or params.models[0]
    processes = params.processes if voice_model_entry(name).solve is None else 1
    code = launch(processes, "stages.train_voice", sys.argv[1:] if argv is None else argv)
    if code is not None:  # ran under torchrun in `processes` processes
        return code
    threads = model_threads(params, name)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(params.seed)
    with process_group():
        metrics = train_voice(params, args.dataset, args.vae, args.out, args.checkpoints,
                              args.live, name, args.embeddings)
    if not metrics:  # not rank 0: the outputs are rank 0's
        return 0
    log.info("val MSE %.4f; R@1 among %d val speakers %.3f (chance %.3f); collapse ratio %.3f",
             metrics["val_mse"], metrics["val_speakers"], metrics["r1"], metrics["r1_chance"],
             metrics["collapse_ratio"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
