import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import FacesParams
from pipeline.faces.stage import run_faces
from pipeline.faces.video import read_gray_frame
from pipeline.runtime import QuarantineError
from pipeline.serve.enrol import enrolment_face
from tests.conftest import shared_dataset
from tests.factories import make_catalogue, speech_like, write_wav

PARAMS = FacesParams(workers=1)


def test_a_video_gets_the_faces_stage_crop_of_a_neutral_clip(tmp_path):
    clip = shared_dataset("grid-samples") / "bbaf2n.mpg"
    catalogue = make_catalogue(tmp_path / "cat", [
        {"clip_id": "c", "speaker_id": "a", "emotion": "NEU", "video_path": str(clip)}])
    run_faces(catalogue, tmp_path / "faces", PARAMS)
    row = pq.read_table(tmp_path / "faces" / "faces-00000.parquet").to_pylist()[0]
    (tmp_path / "work").mkdir()
    crop = enrolment_face(clip, PARAMS, tmp_path / "work")
    assert crop.shape == (PARAMS.crop_size, PARAMS.crop_size) and crop.dtype == np.uint8
    assert crop.tobytes() == row["face"]


def test_a_photo_is_a_one_frame_clip_and_its_exif_orientation_is_applied(tmp_path):
    frame = np.asarray(read_gray_frame(shared_dataset("grid-samples") / "bbaf2n.mpg", 20))
    upright = tmp_path / "upright.png"
    Image.fromarray(frame).save(upright)
    crop = enrolment_face(upright, PARAMS, tmp_path)
    assert crop.shape == (64, 64)
    assert crop[0, 0] == 0 and crop[32, 32] > 0  # masked outside the face contour

    # a phone's portrait photo: pixels stored turned, EXIF orientation 6 says "rotate back"
    sideways = tmp_path / "sideways.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(frame).transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif)
    assert np.array_equal(enrolment_face(sideways, PARAMS, tmp_path), crop)


@pytest.mark.parametrize("kind, reason", [
    ("blank_photo", "no_face"), ("voice", "no_video"), ("text", "decode_error"),
    ("empty", "decode_error"),
])
def test_files_without_a_usable_face_are_refused_with_the_reason(tmp_path, kind, reason):
    path = tmp_path / "upload"
    if kind == "blank_photo":
        Image.fromarray(np.full((240, 320), 128, np.uint8)).save(path, format="JPEG")
    elif kind == "voice":
        write_wav(tmp_path / "v.wav", speech_like(np.random.default_rng(0), 1.0, 8000), 8000)
        (tmp_path / "v.wav").rename(path)
    elif kind == "text":
        path.write_text("not a photo\n" * 20)
    else:
        path.write_bytes(b"")
    with pytest.raises(QuarantineError) as error:
        enrolment_face(path, PARAMS, tmp_path)
    assert error.value.reason == reason
