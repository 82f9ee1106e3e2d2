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
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    models, dataset = stage_paths(repo_root / "dvc.yaml")
    outs = set()
    for stage in stages.values():
        if "foreach" in stage:  # foreach: ${section.key} of params.yaml
            section, key = stage["foreach"].strip("${}").split(".")
            outs |= {str(repo_root / out.replace("${item}", item))
                     for item in params[section][key] for out in stage["do"].get("outs", [])
                     if isinstance(out, str)}
        else:
            outs |= {str(repo_root / out) for out in stage.get("outs", [])
                     if isinstance(out, str)}
    assert {str(p) for p in models} == {out for out in outs if out.endswith(".pt")}
    assert repo_root / stages["train_vae"]["outs"][0] in models
    assert dataset == repo_root / stages["dataset"]["outs"][0]


def test_templated_stages_are_resolved_by_dvc(tmp_path, capsys):
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "dataset": {"cmd": "true", "outs": ["data/set"]},
        "train": {"foreach": ["a", "b"], "do": {"cmd": "true", "outs": ["m/${item}/model.pt",
                                                                       "m/${item}/grid.png"]}},
    }}))
    models, dataset = stage_paths(tmp_path / "dvc.yaml")
    assert sorted(models) == [tmp_path / "m/a/model.pt", tmp_path / "m/b/model.pt"]
    assert dataset == tmp_path / "data/set"
    with pytest.raises(SystemExit) as error:  # nothing trained there yet
        main(["--dvc-yaml", str(tmp_path / "dvc.yaml")])
    assert error.value.code == 2
    assert "no trained voice and face models among" in capsys.readouterr().err


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
