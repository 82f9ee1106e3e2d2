"""Benchmark of the train_voice stage: voice-encoder throughput in clips per second.

Part 1 (this script today): the 003 Table 1 encoder on random 3.67 s / 8 kHz clips, batch 32:

- train step: forward + backward + Adam step with MSE to random 256-d targets (003 section 4.3),
  model in train mode - the cost of one training batch without data loading;
- inference: forward only, eval mode, no autograd - the cost of ``generate`` / validation.

Part 2: the stage's training loop - :func:`pipeline.training.fit.fit` over
:class:`pipeline.training.fit.voice.VoiceTargets` with the stage's objective (DataLoader, per-epoch
validation excluded, deterministic algorithms on) - in clips/s, and its ratio to the bare
train step measured in the same process (the loop's overhead).

It runs on the CPU, and on CUDA too when a GPU is present. The machine's load average is
printed next to the figures: on a shared machine they are lower bounds.

    .venv/bin/python benchmarks/train_voice.py [--batch 32] [--steps 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
from pipeline.training.fit import FitSettings, fit
from pipeline.training.voice import VoiceObjective, VoiceTargets

CLIP_SAMPLES = 29_360  # 3.67 s at 8 kHz: what the audio stage writes


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clips_per_second(step, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """Return ``batch * steps / seconds`` of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def measure(device: torch.device, batch: int, steps: int, warmup: int) -> dict[str, float]:
    """Return train-step and inference clips/s of a fresh encoder on ``device``."""
    torch.manual_seed(0)
    config = VoiceEncoderConfig()
    model = VoiceEncoder(config).to(device)
    waves = torch.randn(batch, CLIP_SAMPLES, device=device)
    targets = torch.randn(batch, config.out_dim, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)  # 003 section 4.3

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(waves), targets).backward()
        optimiser.step()

    def inference() -> None:
        with torch.inference_mode():
            model(waves)

    model.train()
    train = clips_per_second(train_step, batch, steps, warmup, device)
    model.eval()
    infer = clips_per_second(inference, batch, steps, warmup, device)
    return {"train": train, "inference": infer, "stage": stage_clips_per_second(
        device, batch, steps)}


def stage_clips_per_second(device: torch.device, batch: int, steps: int) -> float:
    """Return the train clips/s of the stage's loop: ``fit`` for one epoch of ``steps`` batches.

    A first, untimed one-batch epoch warms up; the figure is the loop's own ``time/images_per_s``
    (training only, validation excluded) of the second ``fit``.
    """
    torch.manual_seed(0)
    config = VoiceEncoderConfig()
    data = VoiceTargets(torch.randn(batch * steps, CLIP_SAMPLES),
                        torch.randn(batch * steps, config.out_dim))
    objective = VoiceObjective(torch.ones(config.out_dim))
    settings = FitSettings(epochs=1, batch_size=batch, lr=1e-4, device=device.type)
    fit(VoiceEncoder(config), objective, VoiceTargets(data.audio[:batch], data.target[:batch]),
        None, settings, params={})
    state = fit(VoiceEncoder(config), objective, data, None, settings, params={})
    return state.history[-1]["time/images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per batch (003: 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    n_params = sum(p.numel() for p in VoiceEncoder().parameters())
    print(f"voice encoder (003 Table 1): {n_params:,} parameters; batch {args.batch}, "
          f"clips of {CLIP_SAMPLES} samples; torch {torch.__version__}")
    for device in devices:
        load_before = os.getloadavg()[0]
        figures = measure(device, args.batch, args.steps, args.warmup)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
            f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
        )
        print(f"{name}: train step (fwd+bwd+Adam) {figures['train']:.1f} clips/s, "
              f"inference {figures['inference']:.1f} clips/s; stage loop (fit) "
              f"{figures['stage']:.1f} clips/s = {figures['stage'] / figures['train']:.2f}x "
              f"the bare step [1-min load average {load_before:.2f} -> "
              f"{os.getloadavg()[0]:.2f}]")
        if device.type == "cpu":
            epoch_s = 7442 * 0.8 / figures["train"]
            print(f"  -> one 003 epoch (80 % of CREMA-D's 7,442 clips) ~{epoch_s / 60:.1f} min "
                  f"of encoder compute; 003's 600 epochs ~{600 * epoch_s / 3600:.0f} h")


if __name__ == "__main__":
    main()
