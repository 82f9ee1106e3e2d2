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


@pytest.mark.parametrize(("name", "kind"), [
    ("landmarks_68", dlib.shape_predictor), ("landmarks_5", dlib.shape_predictor),
    ("face_recognition", dlib.face_recognition_model_v1),
])
def test_each_model_loads_once_per_process(name, kind):
    model = dlib_models.load_model(name)
    assert isinstance(model, kind)
    assert dlib_models.load_model(name) is model
    assert dlib_models.face_detector() is dlib_models.face_detector()


def test_landmark_groups_name_the_subjects_sides():
    from skimage import data

    image = data.astronaut()  # a frontal portrait
    face = dlib_models.face_detector()(image, 0)[0]
    shape = dlib_models.load_model("landmarks_68")(image, face)
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=float)
    # The subject's right eye and brow are on the image's left.
    assert points[dlib_models.RIGHT_EYE, 0].max() < points[dlib_models.LEFT_EYE, 0].min()
    assert points[dlib_models.RIGHT_BROW, 0].mean() < points[dlib_models.LEFT_BROW, 0].mean()
    groups = [dlib_models.JAW, dlib_models.BROWS, dlib_models.NOSE_BRIDGE,
              dlib_models.NOSE_BASE, dlib_models.RIGHT_EYE, dlib_models.LEFT_EYE,
              dlib_models.MOUTH]
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(68))
