import fractions
import logging

import av
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipeline.config import AudioParams, load_params
from pipeline.images import to_uint8
from pipeline.models.voice_to_face import (
    UnknownEmotionError,
    generate_face,
    load_voice_to_face,
)
from pipeline.runtime import QuarantineError
from stages.generate import main, stage_emotion_path, stage_model_paths
from tests.conftest import REPO
from tests.factories import speech_like, write_media, write_wav
from tests.models.factories import save_vae, save_voice, tiny_vae
from tests.training.test_voice import train_tiny_models

MODEL_SIZE = 16
"""Face size of the tiny models: the dataset's, not params.yaml's ``faces.crop_size``."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny VAE and voice encoder trained by their stages on a synthetic dataset."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny_models(tmp_path_factory.mktemp("tiny"), REPO,
                            {"epochs": 1, "batch_size": 8, "device": "cpu"})
    torch.set_num_threads(threads)


def generate(models, audio, out, *extra):
    return main([str(audio), "--out", str(out), "--params", str(models["params"]),
                 "--vae", str(models["vae"]), "--voice", str(models["out"] / "model.pt"),
                 *extra])


def test_generate_from_a_real_grid_video_writes_a_png_of_the_models_face_size(
    models, grid_dir, tmp_path
):
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    # today's params say another crop size: the model's own size wins (an older model works)
    assert load_params(models["params"], "faces").crop_size != MODEL_SIZE
    assert generate(models, clip, tmp_path / "face.png") == 0
    image = Image.open(tmp_path / "face.png")
    assert image.size == (MODEL_SIZE, MODEL_SIZE) and image.mode == "L"

    assert generate(models, clip, tmp_path / "big.png", "--size", "100") == 0
    assert Image.open(tmp_path / "big.png").size == (100, 100)

    # the emotion code reaches the decoder: HAP and SAD render differently
    model = load_voice_to_face(models["vae"], models["out"] / "model.pt")
    audio = load_params(models["params"], "audio")
    happy = generate_face(clip, model, "HAP", audio)
    sad = generate_face(clip, model, "sad", audio)  # names are case-insensitive
    assert happy.shape == (MODEL_SIZE, MODEL_SIZE) and happy.min() >= 0.0 and happy.max() <= 1.0
    assert not np.allclose(happy, sad)
    # the default emotion is NEU
    neutral = generate_face(clip, model, None, audio)
    assert np.array_equal(neutral, generate_face(clip, model, "NEU", audio))
    # the PNG at the model's own size holds exactly the generated face
    assert generate(models, clip, tmp_path / "own.png", "--size", str(MODEL_SIZE)) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "own.png")), to_uint8(neutral))


def test_generate_reads_wav_and_mp3(models, tmp_path):
    wave = speech_like(np.random.default_rng(0), 2.0, 22050)
    assert generate(models, write_wav(tmp_path / "v.wav", wave, 22050), tmp_path / "a.png") == 0
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("this PyAV build has no MP3 encoder (libmp3lame)")
    mp3 = write_media(tmp_path / "v.mp3", wave, 22050, codec="libmp3lame")
    assert generate(models, mp3, tmp_path / "b.png") == 0
    assert Image.open(tmp_path / "b.png").size == Image.open(tmp_path / "a.png").size


@pytest.mark.parametrize("kind, reason", [
    ("zero_bytes", "decode_error"),
    ("text", "no_audio"),  # ffmpeg opens text (as a tty/text stream) that has no audio
    ("missing", "decode_error"),
    ("silent", "all_silent"),
])
def test_bad_audio_exits_2_naming_the_file_and_reason(models, tmp_path, caplog, kind, reason):
    path = tmp_path / f"{kind}.wav"
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("this is not audio\n" * 50)
    elif kind == "silent":
        write_wav(path, np.zeros(22050 * 2, np.float32), 22050)
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        assert generate(models, path, tmp_path / "face.png") == 2
    assert str(path) in caplog.text and reason in caplog.text
    assert not (tmp_path / "face.png").exists()
    with pytest.raises(QuarantineError) as error:
        model = load_voice_to_face(models["vae"], models["out"] / "model.pt")
        generate_face(path, model, None, load_params(models["params"], "audio"))
    assert error.value.reason == reason


def test_unknown_emotion_exits_2_listing_the_valid_names(models, grid_dir, tmp_path, caplog):
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        assert generate(models, clip, tmp_path / "face.png", "--emotion", "XYZ") == 2
    assert "'XYZ'" in caplog.text and "ANG, HAP, NEU, SAD" in caplog.text
    model = load_voice_to_face(models["vae"], models["out"] / "model.pt")
    with pytest.raises(UnknownEmotionError):
        generate_face(clip, model, "XYZ", AudioParams())


def test_audio_params_unlike_the_training_clips_are_refused(models, tmp_path, caplog):
    document = yaml.safe_load(models["params"].read_text())
    document["audio"]["length_s"] = 2.0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    wav = write_wav(tmp_path / "v.wav", speech_like(np.random.default_rng(1), 2.0, 8000), 8000)
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        code = main([str(wav), "--out", str(tmp_path / "f.png"), "--params", str(params),
                     "--vae", str(models["vae"]), "--voice", str(models["out"] / "model.pt")])
    assert code == 2 and "n_samples=29360" in caplog.text


def test_default_model_paths_are_the_train_voice_stage_paths_in_dvc_yaml(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    vae, voice = stage_model_paths(repo_root / "dvc.yaml", repo_root / "params.yaml")
    first = load_params(repo_root / "params.yaml", "train_voice").models[0]
    each = stages["train_voice"]["do"]  # a foreach over train_voice.models
    assert vae in stages["train_vae"]["outs"] and vae in each["deps"]
    assert voice in [out.replace("${item}", first) for out in each["outs"]]
    assert stage_emotion_path(repo_root / "dvc.yaml") in stages["train_emotion"]["outs"]


def test_face_model_names_the_voice_stage_of_each_registered_face_model(repo_root):
    from pipeline.models.registry import FACE_MODELS
    from stages.generate import VOICE_STAGES

    assert set(VOICE_STAGES) == set(FACE_MODELS)
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    face, voice = stage_model_paths(repo_root / "dvc.yaml", repo_root / "params.yaml",
                                    VOICE_STAGES["disentangled"])
    assert face in stages["train_disentangled"]["outs"]
    assert voice in stages["train_voice_disentangled"]["outs"]


def test_face_model_picks_that_systems_model_files(tmp_path, capsys, monkeypatch):
    wav = write_wav(tmp_path / "v.wav", speech_like(np.random.default_rng(2), 1.0, 8000), 8000)
    monkeypatch.chdir(tmp_path)  # where nothing is trained: the default path is reported
    with pytest.raises(SystemExit) as error:
        main([str(wav), "--out", str(tmp_path / "f.png"), "--face-model", "disentangled",
              "--dvc-yaml", str(REPO / "dvc.yaml"),
              "--voice", str(tmp_path / "no_voice.pt")])
    assert error.value.code == 2
    assert "models/disentangled/model.pt: model file not found" in capsys.readouterr().err


def test_missing_model_file_is_a_usage_error(tmp_path, capsys):
    wav = write_wav(tmp_path / "v.wav", speech_like(np.random.default_rng(2), 1.0, 8000), 8000)
    with pytest.raises(SystemExit) as error:
        main([str(wav), "--out", str(tmp_path / "f.png"), "--vae", str(tmp_path / "no.pt"),
              "--voice", str(tmp_path / "no.pt")])
    assert error.value.code == 2 and "model file not found" in capsys.readouterr().err


def test_a_long_input_is_cut_to_max_input_s_with_a_warning(models, tmp_path, caplog):
    two_seconds = speech_like(np.random.default_rng(3), 2.0, 8000)
    ten_minutes = write_wav(tmp_path / "long.wav", np.tile(two_seconds, 300), 8000)
    with caplog.at_level(logging.WARNING):
        assert generate(models, ten_minutes, tmp_path / "f.png") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{ten_minutes}: longer than audio.max_input_s: only its first 30 s "
                        "are used"]
    caplog.clear()
    short = write_wav(tmp_path / "short.wav", two_seconds, 8000)
    with caplog.at_level(logging.WARNING):
        assert generate(models, short, tmp_path / "g.png") == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def model_files(tmp_path, deterministic_rng):
    """Untrained tiny face and voice model files (what generate loads before any audio)."""
    return save_vae(tmp_path / "vae.pt", tiny_vae()), save_voice(tmp_path / "voice.pt")


def _not_a_model(path):
    path.write_text("hello, not a model\n" * 10)  # torch.load alone: KeyError: 101


def _unsafe(path):
    torch.save({"kind": "FaceVAE", "extra": fractions.Fraction(1, 3)}, path)


@pytest.mark.parametrize("write, reason", [
    (_not_a_model, "not a model file (not a PyTorch archive written by torch.save)"),
    (_unsafe, "refused: it holds a pickled fractions.Fraction, not only tensors and plain "
              "data; model files hold nothing else, so that loading one cannot run code"),
])
def test_a_vae_that_is_not_a_model_file_exits_2_naming_it(
    model_files, tmp_path, caplog, capsys, write, reason
):
    bad = tmp_path / "bad.pt"
    write(bad)
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        code = main([str(tmp_path / "no-audio.wav"), "--out", str(tmp_path / "f.png"),
                     "--vae", str(bad), "--voice", str(model_files[1])])
    assert code == 2
    assert [r.getMessage() for r in caplog.records] == [f"{bad}: {reason}"]
    assert "weights_only" not in caplog.text + "".join(capsys.readouterr())
    assert not (tmp_path / "f.png").exists()


def test_model_files_swapped_exit_2_naming_the_kind(model_files, tmp_path, caplog):
    vae, voice = model_files
    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        code = main([str(tmp_path / "no-audio.wav"), "--out", str(tmp_path / "f.png"),
                     "--vae", str(voice), "--voice", str(vae)])
    assert code == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{voice}: not a FaceVAE or DisentangledFace model file (its kind is 'VoiceEncoder')"]


@pytest.mark.parametrize("size, message", [
    ("-5", "argument --size: must be 1..4096 pixels, got -5"),
    ("0", "argument --size: must be 1..4096 pixels, got 0"),
    ("4097", "argument --size: must be 1..4096 pixels, got 4097"),
    ("big", "argument --size: not a number of pixels: 'big'"),
])
def test_a_bad_size_is_a_usage_error_before_any_work(tmp_path, capsys, size, message):
    # nothing exists: had it read a model or the audio first, the error would be another
    with pytest.raises(SystemExit) as error:
        main([str(tmp_path / "no-audio.wav"), "--out", str(tmp_path / "f.png"),
              "--vae", str(tmp_path / "no.pt"), "--voice", str(tmp_path / "no.pt"),
              "--size", size])
    assert error.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")


def test_out_as_a_directory_is_a_usage_error_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main([str(tmp_path / "no-audio.wav"), "--out", str(tmp_path),
              "--vae", str(tmp_path / "no.pt"), "--voice", str(tmp_path / "no.pt")])
    assert error.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"error: --out {tmp_path}: is a directory; give the PNG file to write")


def test_the_emotion_defaults_to_the_one_read_from_the_voice(models, grid_dir, tmp_path, caplog):
    import re

    from pipeline.models.emotion_classifier import (
        feature_matrix,
        fit_emotion_classifier,
        save_emotion_classifier,
    )
    from tests.models.test_emotion_classifier import EMOTIONS, RATE, tone_clips

    waves, labels = tone_clips(np.random.default_rng(0), speakers=2)
    classifier = fit_emotion_classifier(feature_matrix(waves, RATE), labels, EMOTIONS, RATE, 1.0)
    reader = save_emotion_classifier(tmp_path / "emotion.pt", classifier, {})
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    model = load_voice_to_face(models["vae"], models["out"] / "model.pt")
    audio = load_params(models["params"], "audio")

    with caplog.at_level(logging.INFO, logger="stages.generate"):
        assert generate(models, clip, tmp_path / "read.png", "--emotion-model", str(reader)) == 0
    found = re.search(r"emotion read from the voice: (\w+) \(probability (\d\.\d\d)\)",
                      caplog.text)
    assert found and found.group(1) in EMOTIONS and 0.25 <= float(found.group(2)) <= 1.0
    read = np.asarray(Image.open(tmp_path / "read.png"))
    assert np.array_equal(read, to_uint8(generate_face(clip, model, found.group(1), audio)))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stages.generate"):
        assert generate(models, clip, tmp_path / "sad.png", "--emotion", "SAD",
                        "--emotion-model", str(reader)) == 0
    assert "read from the voice" not in caplog.text and "emotion: SAD (given)" in caplog.text
    sad = np.asarray(Image.open(tmp_path / "sad.png"))
    assert np.array_equal(sad, to_uint8(generate_face(clip, model, "SAD", audio)))

    with caplog.at_level(logging.ERROR, logger="stages.generate"):
        assert generate(models, clip, tmp_path / "x.png", "--emotion-model",
                        str(models["vae"])) == 2
    assert "not a EmotionClassifier model file" in caplog.text
