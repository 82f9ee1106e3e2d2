"""Model files: config, weights and provenance, written atomically, loaded weights-only."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.runtime import atomic_path


class ModelFileError(ValueError):
    """A file that cannot be loaded as the model file asked for; the message says which and why."""


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
    path: str | Path, kind: str | Collection[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Return the payload (kind, config, state_dict, provenance) of a model file of ``kind``.

    ``kind``: the kind, or the kinds, the caller can use. The file is read with
    ``torch.load(weights_only=True)`` only.

    Raises:
        ModelFileError: naming the file and why: it is not a PyTorch archive, it holds pickled
            objects beyond tensors and plain data (refused: unpickling them could run code),
            it is not a model file (no ``kind``), or it is a model of another kind.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not _is_torch_archive(path):
        raise ModelFileError(f"{path}: not a model file (not a PyTorch archive written by "
                             "torch.save)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # from None: torch's own message advises loading with weights_only=False
        raise ModelFileError(f"{path}: refused: {_unsafe_content(error)}") from None
    found = payload.get("kind") if isinstance(payload, dict) else None
    if not isinstance(found, str):
        raise ModelFileError(f"{path}: not a model file (a PyTorch archive holding a "
                             f"{type(payload).__name__} without a model kind)")
    if found not in kinds:
        raise ModelFileError(f"{path}: not a {' or '.join(kinds)} model file (its kind is "
                             f"{found!r})")
    return payload


def _is_torch_archive(path: str | Path) -> bool:
    """Return whether ``path`` is a zip archive laid out as ``torch.save`` writes it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    return any(name.endswith("/data.pkl") for name in names)


def _unsafe_content(error: pickle.UnpicklingError) -> str:
    """Return why ``torch.load(weights_only=True)`` refused a file, in our words."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    what = f"a pickled {found.group(1)}" if found else "pickled data"
    return (f"it holds {what}, not only tensors and plain data; model files hold nothing "
            "else, so that loading one cannot run code")


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
