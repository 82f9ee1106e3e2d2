"""Model files: config, weights and provenance, written atomically, loaded weights-only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.runtime import atomic_path


def save_model_file(
    path: str | Path, kind: str, model: nn.Module, provenance: Mapping[str, Any]
) -> Path:
    """Return ``path`` after writing ``model``'s config, weights and provenance atomically.

    ``model.config.to_dict()`` and ``provenance`` (resolved params, step, code version ...)
    must be plain data (dicts, lists, str, numbers, bools, None), so that the file loads with
    ``torch.load(weights_only=True)``.
    """
    check_plain(provenance, "provenance")
    payload = {
        "kind": kind,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": dict(provenance),
    }
    return save_payload(path, payload)


def save_payload(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Return ``path`` after ``torch.save``-ing ``payload`` there atomically.

    The bytes depend only on ``payload``: given a file name, ``torch.save`` names the zip's
    top folder after it (here the random temporary name, so two saves of the same weights
    differed and DVC re-ran every stage downstream); given an open file, it writes "archive".
    """
    with atomic_path(path) as tmp, tmp.open("wb") as stream:
        torch.save(payload, stream)
    return Path(path)


def load_model_payload(
    path: str | Path, kind: str, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Return the raw payload (kind, config, state_dict, provenance) of a ``kind`` model file."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {kind} model file (kind={found!r})")
    return payload


def check_plain(value: Any, key: str) -> None:
    """Raise ``TypeError`` naming ``key`` if ``value`` is not plain data."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{key}: keys must be str, got {k!r}")
            check_plain(v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_plain(v, f"{key}[{i}]")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise TypeError(f"{key}: {type(value).__name__} is not plain data (str, number, list...)")
