"""Benchmark of the train_voice stage: voice-encoder throughput in clips per second.

The 003 Table 1 encoder on random 3.67 s / 8 kHz clips, batch 32:

- train step: forward + backward + Adam step with MSE to random 256-d targets (003 section 4.3),
  model in train mode - the cost of one training batch without data loading. Measured for
  the encoder as it is and for the same weights with the filterbank run as a plain NCHW
  ``nn.Sequential`` with out-of-place SELU (the implementation before the channels-last
  :class:`~pipeline.models.voice_encoder.Filterbank`), interleaved step by step so that both
  see the same machine load; the ratio is the speed-up (target: >= 2x).
- the FLOPs of one clip's train step (torch's flop counter: convolutions, matmuls, GRU,
  attention) and the FLOP rate that gives, as a share of a plain 2048 x 2048 float32 matmul's
  rate on the same threads - how far the step is from what the cores can do.
- inference: forward only, eval mode, no autograd - the cost of ``generate`` / validation.
- the stage's loop: :func:`pipeline.training.fit.fit` over :class:`VoiceTargets` with the
  stage's objective (DataLoader, deterministic algorithms on) in clips/s, its ratio to the
  bare step, and the share of its time spent waiting for the next batch (on a GPU: what the
  data pipeline costs).

Both wall-clock and CPU-time (``time.process_time``, all threads) rates are printed: on a
shared machine wall-clock figures are lower bounds and CPU time is the steadier comparison.
It runs on the CPU, and on CUDA too when a GPU is present.

    .venv/bin/python benchmarks/train_voice.py [--batch 32] [--steps 4] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pipeline

from pipeline.models.voice_encoder import VoiceEncoder, VoiceEncoderConfig
from pipeline.training.fit import FitSettings, fit
from pipeline.training.voice import VoiceObjective, VoiceTargets

CLIP_SAMPLES = 29_360  # 3.67 s at 8 kHz: what the audio stage writes
MATMUL_SIDE = 2048


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_filterbank_encoder(model: VoiceEncoder) -> VoiceEncoder:
    """Return a copy of ``model`` whose filterbank is the plain NCHW stack (SELU out of place)."""
    plain = copy.deepcopy(model)
    plain.filterbank = nn.Sequential(
        *(nn.SELU() if isinstance(m, nn.SELU) else m for m in plain.filterbank)
    )
    return plain


def train_step(model: VoiceEncoder, waves: torch.Tensor, targets: torch.Tensor) -> Callable:
    """Return a function running one Adam step of ``model`` (003 section 4.3: lr 1e-4, MSE)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(waves), targets).backward()
        optimiser.step()

    return step


def interleaved_rates(steps: dict[str, Callable], batch: int, n: int,
                      device: torch.device) -> dict[str, tuple[float, float]]:
    """Return ``{name: (wall clips/s, CPU-time clips/s)}``, best of ``n`` alternating calls."""
    best = {name: (float("inf"), float("inf")) for name in steps}
    for step in steps.values():  # warm-up, untimed
        step()
    for _ in range(n):
        for name, step in steps.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            synchronize(device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return {name: (batch / wall, batch / cpu) for name, (wall, cpu) in best.items()}


def step_flops(model: VoiceEncoder, device: torch.device) -> int:
    """Return the FLOPs of one clip's forward + backward (torch's flop counter)."""
    wave = torch.randn(2, CLIP_SAMPLES, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(wave).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // 2


def matmul_flops_per_s(device: torch.device, repeats: int = 5) -> float:
    """Return the best FLOP/s of a 2048 x 2048 float32 matmul on ``device``."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE**3 / best


def inference_rate(model: VoiceEncoder, waves: torch.Tensor, n: int,
                   device: torch.device) -> float:
    """Return forward-only clips/s in eval mode (best of ``n``)."""
    model.eval()
    with torch.inference_mode():
        rates = interleaved_rates({"infer": lambda: model(waves)}, waves.shape[0], n, device)
    model.train()
    return rates["infer"][0]


def stage_rate(device: torch.device, batch: int, steps: int) -> tuple[float, float]:
    """Return the stage loop's train clips/s and its data-wait share: ``fit``, one epoch.

    A first, untimed one-batch epoch warms up; the figures are the loop's own
    ``time/images_per_s`` and ``time/data_wait_share`` of the second ``fit``.
    """
    torch.manual_seed(0)
    config = VoiceEncoderConfig()
    data = VoiceTargets(torch.randn(batch * steps, CLIP_SAMPLES),
                        torch.randn(batch * steps, config.out_dim))
    objective = VoiceObjective(torch.ones(config.out_dim))
    settings = FitSettings(epochs=1, batch_size=batch, lr=1e-4, device=device.type)
    fit(VoiceEncoder(config), objective, VoiceTargets(data.audio[:batch], data.target[:batch]),
        None, settings, params={})
    record = fit(VoiceEncoder(config), objective, data, None, settings, params={}).history[-1]
    return record["time/images_per_s"], record["time/data_wait_share"]


def report(device: torch.device, batch: int, steps: int) -> None:
    """Print the figures of ``device``."""
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    model = VoiceEncoder().to(device)
    plain = plain_filterbank_encoder(model)
    waves = torch.randn(batch, CLIP_SAMPLES, device=device)
    targets = torch.randn(batch, model.config.out_dim, device=device)
    rates = interleaved_rates({"plain": train_step(plain, waves, targets),
                               "channels_last": train_step(model, waves, targets)},
                              batch, steps, device)
    flops = step_flops(model, device)
    matmul = matmul_flops_per_s(device)
    infer = inference_rate(model, waves, steps, device)
    stage, wait_share = stage_rate(device, batch, steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)")
    print(f"{name} [1-min load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}]")
    print(f"  one clip's train step: {flops / 1e9:.3f} GFLOP; {MATMUL_SIDE}^2 matmul "
          f"{matmul / 1e9:.1f} GFLOP/s")
    for label, (wall, cpu) in rates.items():
        print(f"  train step, {label:13s} filterbank: {wall:6.1f} clips/s wall "
              f"({cpu:6.1f} per CPU-second) = {wall * flops / 1e9:5.1f} GFLOP/s = "
              f"{wall * flops / matmul:5.1%} of the matmul's rate")
    speedup = [rates["channels_last"][i] / rates["plain"][i] for i in (0, 1)]
    print(f"  speed-up of the train step: {speedup[0]:.2f}x wall, {speedup[1]:.2f}x CPU time")
    print(f"  inference {infer:.1f} clips/s; stage loop (fit) {stage:.1f} clips/s = "
          f"{stage / rates['channels_last'][0]:.2f}x the bare step, {wait_share:.1%} of its "
          f"time waiting for data")
    if device.type == "cpu":
        epoch_s = 7442 * 0.8 / rates["channels_last"][0]
        print(f"  -> one 003 epoch (80 % of CREMA-D's 7,442 clips) ~{epoch_s / 60:.1f} min of "
              f"encoder compute; 003's 600 epochs ~{600 * epoch_s / 3600:.0f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per batch (003: 32)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in VoiceEncoder().parameters())
    print(f"voice encoder (003 Table 1): {n_params:,} parameters; batch {args.batch}, "
          f"clips of {CLIP_SAMPLES} samples; torch {torch.__version__}")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        report(device, args.batch, args.steps)


if __name__ == "__main__":
    main()
