"""The API over real HTTP on 127.0.0.1 (uvicorn in a thread), with tiny trained models."""

import base64
import io
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from pipeline.serve.engine import ModelFiles
from tests.factories import speech_like, write_wav


def post_voice(server, path, name="voice.wav", **form):
    with open(path, "rb") as data:
        return requests.post(f"{server.url}/api/generate", files={"audio": (name, data)},
                             data=form, timeout=60)


def enrol(server, name, face, voice=None):
    files = {"face": ("face.jpg", face.read_bytes())}
    if voice is not None:
        files["voice"] = ("voice.wav", voice.read_bytes())
    return requests.post(f"{server.url}/api/people", data={"name": name}, files=files,
                         timeout=60)


def png(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_generate_returns_the_face_each_emotion_and_the_nearest_people(server, grid_wav):
    response = post_voice(server, grid_wav)
    assert response.status_code == 200, response.text
    body = response.json()
    face = png(body["face"]["png"])
    assert face.size == (256, 256) and face.mode == "L" and body["face"]["emotion"] == "NEU"
    assert [e["emotion"] for e in body["emotions"]] == ["ANG", "HAP", "NEU", "SAD"]
    assert all(png(e["png"]).size == (128, 128) for e in body["emotions"])
    # the factory dataset's 10 speakers start the gallery; the 5 nearest, most similar first
    nearest = body["nearest_faces"]
    assert len(nearest) == 5 and {p["origin"].split(":")[0] for p in nearest} == {"dataset"}
    assert [p["similarity"] for p in nearest] == sorted((p["similarity"] for p in nearest),
                                                        reverse=True)
    assert len(body["nearest_voices"]) == 5 and body["voice_emotion"] is None
    assert body["audio"]["duration_s"] == pytest.approx(3.0, abs=0.05)

    again = post_voice(server, grid_wav, emotion="hap").json()  # names in any case
    assert again["face"]["emotion"] == "HAP" and again["face"]["png"] != body["face"]["png"]
    assert again["emotions"] == body["emotions"]  # the same voice gives the same faces


def test_enrol_identify_remove_and_the_gallery_survives_a_restart(serve, grid_photo, grid_wav,
                                                                  other_photos):
    server = serve()
    created = enrol(server, "Grid Speaker", grid_photo, grid_wav)
    assert created.status_code == 201, created.text
    person = created.json()
    assert (person["name"], person["faces"], person["voices"]) == ("Grid Speaker", 1, 1)
    for i, photo in enumerate(other_photos):
        assert enrol(server, f"Other {i}", photo).status_code == 201

    duplicate = enrol(server, "grid speaker", grid_photo)
    assert duplicate.status_code == 409 and "enrolled already" in duplicate.json()["detail"]

    # 004: "the closest among these is ..." -- a known face ranks itself first
    with open(grid_photo, "rb") as data:
        found = requests.post(f"{server.url}/api/identify", files={"face": ("me.jpg", data)},
                              timeout=60).json()["nearest_faces"]
    assert found[0]["id"] == person["id"] and found[0]["similarity"] == pytest.approx(1.0)
    # and the enrolled voice is the nearest to itself
    generated = post_voice(server, grid_wav).json()
    assert generated["nearest_voices"][0]["id"] == person["id"]
    assert generated["nearest_voices"][0]["similarity"] == pytest.approx(1.0)

    image = requests.get(f"{server.url}/api/people/{person['id']}/face.png", timeout=10)
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (64, 64)  # faces.crop_size

    restarted = serve()  # a new app on the same SQLite file
    names = [p["name"] for p in requests.get(f"{restarted.url}/api/people", timeout=10).json()]
    assert names[:4] == ["Grid Speaker", "Other 0", "Other 1", "Other 2"] and len(names) == 14
    removed = requests.delete(f"{restarted.url}/api/people/{person['id']}", timeout=10)
    assert removed.status_code == 200 and removed.json()["name"] == "Grid Speaker"
    assert requests.delete(f"{restarted.url}/api/people/{person['id']}",
                           timeout=10).status_code == 404
    assert requests.get(f"{restarted.url}/api/people/{person['id']}/face.png",
                        timeout=10).status_code == 404
    after = post_voice(restarted, grid_wav).json()
    assert person["id"] not in [p["id"] for p in after["nearest_faces"] + after["nearest_voices"]]


@pytest.fixture(scope="module")
def other_photos(tmp_path_factory):
    from pipeline.faces.video import read_gray_frame
    from tests.conftest import shared_dataset

    grid = shared_dataset("grid-samples")
    folder = tmp_path_factory.mktemp("others")
    photos = []
    for clip in ("brbk7n.mpg", "lbax4n.mpg", "lbbc2a.mpg"):
        photos.append(folder / f"{clip}.jpg")
        Image.fromarray(np.asarray(read_gray_frame(grid / clip, 10))).save(photos[-1])
    return photos


def bad_upload(tmp_path, kind):
    path = tmp_path / "upload.bin"
    if kind == "text":
        path.write_text("this is not audio\n" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "silent":
        write_wav(path.with_suffix(".wav"), np.zeros(16000, np.float32), 8000).rename(path)
    elif kind == "no_sound":  # a MEAD clip: video only
        from tests.conftest import shared_dataset

        clip = sorted(shared_dataset("mead-emotion-clips").glob("*.mp4"))[0]
        path.write_bytes(clip.read_bytes())
    elif kind == "too_long":  # over audio.max_input_s (30 s)
        wave = speech_like(np.random.default_rng(0), 31.0, 8000)
        write_wav(path.with_suffix(".wav"), wave, 8000).rename(path)
    return path


@pytest.mark.parametrize("kind, reason, words", [
    ("text", "decode_error", "not a media file that can be read (cannot open: "),
    ("empty", "empty_file", "the file is empty"),
    ("silent", "all_silent", "the recording is silent"),
    ("no_sound", "no_audio", "the file has no sound"),
    ("too_long", "too_long", "longer than the limit of 30 s"),
])
def test_bad_voices_get_422_with_the_reason_naming_the_file(server, tmp_path, kind, reason,
                                                            words):
    response = post_voice(server, bad_upload(tmp_path, kind), name="../../etc/my notes.txt")
    assert response.status_code == 422
    body = response.json()
    assert body["reason"] == reason and words in body["detail"]
    assert body["detail"].startswith("my notes.txt: ")  # the user's name, not a path
    assert "/tmp" not in body["detail"] and "Traceback" not in response.text


def test_bad_enrolments_get_4xx_with_the_reason(server, tmp_path, grid_wav, grid_photo):
    blank = tmp_path / "blank.jpg"
    Image.fromarray(np.full((240, 320), 90, np.uint8)).save(blank)
    cases = [("Nobody", blank, None, "no_face"), ("Voice", grid_wav, None, "no_video"),
             ("Text", bad_upload(tmp_path, "text"), None, "decode_error|no_video"),
             ("Mute", grid_photo, bad_upload(tmp_path, "silent"), "all_silent"),
             ("   ", grid_photo, None, "bad_name")]
    for name, face, voice, reason in cases:
        response = enrol(server, name, face, voice)
        assert response.status_code == 422, name
        assert response.json()["reason"] in reason.split("|"), name  # FFmpeg probes text oddly
    missing = requests.post(f"{server.url}/api/people", data={"name": "No face"}, timeout=10)
    assert missing.status_code == 422 and "face" in missing.json()["detail"]
    names = [p["name"] for p in requests.get(f"{server.url}/api/people", timeout=10).json()]
    assert len(names) == 10  # nothing was enrolled


def test_unknown_emotion_and_model_are_422_listing_the_choices(server, grid_wav):
    emotion = post_voice(server, grid_wav, emotion="XYZ")
    assert emotion.status_code == 422 and "ANG, HAP, NEU, SAD" in emotion.json()["detail"]
    model = post_voice(server, grid_wav, model="nope")
    assert model.status_code == 422 and "tiny" in model.json()["detail"]


def test_the_page_picks_among_several_models(serve, settings, grid_wav):
    second = ModelFiles("tiny-2", settings.models[0].face, settings.models[0].voice)
    server = serve(models=(*settings.models, second))
    info = requests.get(f"{server.url}/api/info", timeout=10).json()
    assert [m["name"] for m in info["models"]] == ["tiny", "tiny-2"]
    assert post_voice(server, grid_wav, model="tiny-2").json()["model"] == "tiny-2"
    page = requests.get(server.url, timeout=10).text
    assert 'id="model"' in page and "/static/app.js" in page
    for asset in ("app.js", "style.css"):
        assert requests.get(f"{server.url}/static/{asset}", timeout=10).status_code == 200
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_uploads_over_the_size_limit_get_413(serve, tmp_path):
    server = serve(max_upload_mb=0.5)
    big = b"\0" * 600_000
    declared = requests.post(f"{server.url}/api/generate",
                             files={"audio": ("big.wav", big)}, timeout=30)
    assert declared.status_code == 413 and declared.json()["reason"] == "too_large"

    def chunks():  # no Content-Length: counted while it streams
        head = (b"--b\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n"
                b"Content-Type: audio/wav\r\n\r\n")
        yield head
        for _ in range(10):
            yield b"\0" * 100_000
        yield b"\r\n--b--\r\n"

    streamed = requests.post(f"{server.url}/api/generate", data=chunks(), timeout=30,
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and "0.5 MB" in streamed.json()["detail"]


def test_a_full_queue_answers_503_with_retry_after(serve, grid_wav, tmp_path):
    server = serve(workers=1, queue=1)
    video = tmp_path / "clip.mpg"  # an enrolment from a video keeps the one worker ~1 s
    from tests.conftest import shared_dataset
    video.write_bytes((shared_dataset("grid-samples") / "lwbsza.mpg").read_bytes())
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(response=enrol(server, "Slow", video)))
    thread.start()
    deadline = time.monotonic() + 10
    while server.service.queue.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    refused = post_voice(server, grid_wav)
    thread.join()
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.json()["reason"] == "busy"
    assert slow["response"].status_code == 201
    assert post_voice(server, grid_wav).status_code == 200  # served again once it drained
