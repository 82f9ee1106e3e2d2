import socket
import subprocess
import sys
import time

import pytest
import requests
import torch
import yaml

from pipeline.serve.engine import ModelFiles, discover_model_files
from stages.serve import GALLERY_FILE, build_parser, main, settings_from_args, stage_paths
from tests.conftest import REPO


def test_default_paths_are_the_dvc_yaml_outputs(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    models, dataset = stage_paths(repo_root / "dvc.yaml")
    vae, voice = (p for p in models if p.parent.name in ("vae", "voice"))
    assert str(vae) in stages["train_vae"]["outs"] and str(vae) in stages["train_voice"]["deps"]
    assert str(voice) in stages["train_voice"]["outs"]
    assert str(dataset) in stages["dataset"]["outs"]
    assert all(str(p).endswith(".pt") for p in models)


def test_discovered_models_pair_each_voice_with_the_face_it_was_trained_on(tiny_models,
                                                                          tmp_path):
    voice = tiny_models["out"] / "model.pt"
    other_face = tmp_path / "other" / "model.pt"  # a face model the voice was not trained on
    other_face.parent.mkdir()
    payload = torch.load(tiny_models["vae"], weights_only=True)
    payload["provenance"]["note"] = "retrained"  # same weights, another SHA-256
    torch.save(payload, other_face)
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("no")
    pairs = discover_model_files([tiny_models["vae"], other_face, voice, not_a_model,
                                  tmp_path / "missing.pt"])
    assert pairs == [ModelFiles("deeptalk + vae", tiny_models["vae"], voice)]


def test_settings_read_the_given_models_params_and_gallery(tiny_models, tmp_path):
    voice = tiny_models["out"] / "model.pt"
    args = build_parser().parse_args(
        ["--model", f"a={tiny_models['vae']},{voice}", "--model", f"b={tiny_models['vae']},{voice}",
         "--params", str(tiny_models["params"]), "--dataset", "", "--workers", "3",
         "--dvc-yaml", str(REPO / "dvc.yaml")])
    settings = settings_from_args(args)
    assert [m.name for m in settings.models] == ["a", "b"] and settings.dataset is None
    assert settings.gallery == voice.parent.parent / GALLERY_FILE and settings.workers == 3
    assert settings.audio.n_samples == 29_360


@pytest.mark.parametrize("argv, message", [
    (["--model", "x=no.pt,no.pt"], "no.pt: model file not found"),
    (["--model", "just-a-name"], "expected NAME=FACE.pt,VOICE.pt"),
    (["--model", f"x={REPO / 'dvc.yaml'},{REPO / 'dvc.yaml'}"], "dvc.yaml: not a model file"),
    (["--dvc-yaml", str(REPO / "tests/serve/no_models.yaml")], "no trained voice and face"),
])
def test_bad_model_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        main(["--dvc-yaml", str(REPO / "dvc.yaml"), *argv])
    assert error.value.code == 2 and message in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_cli_serves_the_page_on_loopback(tiny_models, tmp_path):
    port = free_port()
    voice = tiny_models["out"] / "model.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.serve", "--port", str(port),
         "--model", f"tiny={tiny_models['vae']},{voice}", "--params", str(tiny_models["params"]),
         "--dataset", str(tiny_models["dataset"]), "--gallery", str(tmp_path / "g.sqlite")],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = requests.get(f"http://127.0.0.1:{port}/api/info", timeout=5).json()
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.stderr.read()) from None
                time.sleep(0.1)
        assert [m["name"] for m in info["models"]] == ["tiny"]
        assert "voice2face" in requests.get(f"http://127.0.0.1:{port}/", timeout=5).text
        assert (tmp_path / "g.sqlite").is_file()
    finally:
        process.terminate()
        process.wait(timeout=20)
        process.stderr.close()
