"""DDP on the CPU: 2 processes (torchrun, gloo) against 1, same global batch and seed.

Trains the voice encoder (003 Table 1, BatchNorm synchronised over the processes) and the
VAE on a small synthetic dataset with the stages' own CLIs, as DVC runs them, and prints the
per-epoch train and val loss curves of:

- 1 process, 1 torch thread (the reference);
- 1 process, 2 torch threads: the same computation summed in another order - how far float
  rounding alone moves the curve, the tolerance the 2-process curve is judged by;
- 2 processes (``processes: 2``), 1 thread each.

The voice encoder draws no random numbers (no time shift), so its 2-process curve should
stay within the rounding spread. The VAE draws its reparameterisation noise per process, so
its curves agree in distribution only. Wall times are printed too (a loaded machine's).

    .venv/bin/python benchmarks/ddp.py [--epochs 6] [--clips 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.factories import make_dataset_dir  # noqa: E402

CLIP = 29_360
VAE = {"batch_size": 16, "feature_dim": 32, "latent_dim": 16, "channels": [8, 16, 32],
       "device": "cpu", "grid_faces": 2, "checkpoint_every": 1, "lr": 0.001}
VOICE = {"batch_size": 16, "checkpoint_every": 1, "device": "cpu", "grid_clips": 3,
         "time_shift": False, "select_best": False, "lr": 0.0003}


def write_params(path: Path, vae: dict, voice: dict) -> Path:
    document = yaml.safe_load((REPO / "params.yaml").read_text())
    document["train_vae"].update(vae)
    document["train_voice"].update(voice)
    path.write_text(yaml.safe_dump(document))
    return path


def run(module: str, argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, text=True,
                          capture_output=True)
    if done.returncode:
        raise SystemExit(f"{module} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def curve(live: Path, split: str) -> list[float]:
    rows = (live / "plots" / "metrics" / split / "loss.tsv").read_text().split("\n")[1:]
    return [float(row.split("\t")[1]) for row in rows if row]


def train(root: Path, stage: str, name: str, dataset: Path, vae_model: Path | None,
          settings: dict) -> dict:
    """Train ``stage`` with ``settings``; return its curves and wall time."""
    out = root / name
    vae, voice = ({**VAE, **settings}, VOICE) if stage == "vae" else (VAE, {**VOICE, **settings})
    params = write_params(root / f"{name}.yaml", vae, voice)
    argv = ["--params", str(params), "--dataset", str(dataset), "--out", str(out / "model"),
            "--checkpoints", str(out / "ckpt"), "--live", str(out / "live")]
    if stage == "voice":
        argv += ["--vae", str(vae_model)]
    seconds = run(f"stages.train_{stage}", argv)
    return {"train": curve(out / "live", "train"), "val": curve(out / "live", "val"),
            "seconds": seconds, "model": out / "model" / "model.pt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--clips", type=int, default=64, help="training clips")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddp-") as tmp:
        root = Path(tmp)
        dataset = make_dataset_dir(root / "dataset", {"train": args.clips, "val": 16,
                                                      "test": 3}, face_size=32,
                                   audio_samples=CLIP)
        runs = {"1 process, 1 thread": {"processes": 1, "threads": 1},
                "1 process, 2 threads": {"processes": 1, "threads": 2},
                "2 processes": {"processes": 2, "threads": 1}}
        vae_model = None
        for stage in ("vae", "voice"):
            print(f"\n{stage}: {args.clips} training clips, batch 16, {args.epochs} epochs, "
                  "seed 0")
            results = {}
            for k, (label, settings) in enumerate(runs.items()):
                results[label] = train(root, stage, f"{stage}{k}", dataset, vae_model,
                                       {**settings, "epochs": args.epochs})
            if stage == "vae":
                vae_model = results["1 process, 1 thread"]["model"]
            reference = results["1 process, 1 thread"]
            for label, result in results.items():
                print(f"  {label:22s} ({result['seconds']:5.1f} s)")
                for split in ("train", "val"):
                    worst = max(abs(a - b) / abs(b) for a, b in
                                zip(result[split], reference[split], strict=True))
                    print(f"    {split:5s} " + " ".join(f"{v:.6f}" for v in result[split])
                          + f"   max rel. diff to reference {worst:.1e}")


if __name__ == "__main__":
    main()
