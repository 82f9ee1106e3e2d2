"""What users choose DVC for, proved with the real `dvc` on a tiny copy of the project.

One module-scoped reference run (`dvc repro` of the whole pipeline with tiny params, then a
commit; the ``reference`` fixture of tests/conftest.py); each test works on its own copy or
clone of it. The full reproductions from scratch are in tests/test_workflow_repro.py, which
``make test`` runs in another worker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.workflow import (
    ALL_STAGES,
    TINY_PARAMS,
    changed_stages,
    dvc,
    dvc_json,
    git,
    lock_outs,
    make_project,
    set_params,
    stages_run,
)

pytestmark = pytest.mark.slow

DOWNSTREAM_OF_DATASET = {"dataset", "train_vae", "train_voice", "train_emotion", "evaluate"} | {
    "train_disentangled", "train_expression_baselines", "train_voice_disentangled",
    "evaluate_disentangled", "evaluate_expression"}
AFTER_FACE_MODELS = {"train_disentangled", "train_expression_baselines",
                     "train_voice_disentangled", "evaluate_disentangled", "evaluate_expression"}
"""The 002 face model's stages: each imports pipeline/models and pipeline/training."""
DATA_STAGES = ("download", "faces", "audio", "dataset")
# `sources` (always_changed) runs on every `dvc repro` that reaches it; what it writes is
# unchanged unless the local files download reads did change.
ALWAYS = {"sources"}


@pytest.mark.parametrize(
    ("key", "value", "changed", "reruns"),
    [
        # evaluate_expression shows both face models' voice -> face rows side by side
        ("train_vae.lr", 0.002, {"train_vae"},
         {"train_vae", "train_voice", "evaluate", "evaluate_expression"}),
        ("audio.sample_rate", 16000, {"audio"}, {"audio"} | DOWNSTREAM_OF_DATASET),
        # (not crop_size: 002's model is defined at 64 or 128 px only)
        ("faces.margin", 0.1, {"faces"}, {"faces"} | DOWNSTREAM_OF_DATASET),
        ("evaluate.clustering_runs", 5, {"evaluate", "evaluate_disentangled"},
         {"evaluate", "evaluate_disentangled", "evaluate_expression"}),
    ],
)
def test_a_param_edit_reruns_exactly_the_stages_that_read_it(project, key, value, changed,
                                                              reruns):
    set_params(project, {key: value})
    assert changed_stages(project) == changed
    if "dataset" in reruns:
        # Up to the dataset (what runs every later stage is its new output): the rest is
        # then exactly the stale set, which a full repro would run (test_noop... runs all).
        assert stages_run(dvc(project, "repro", "dataset")) == ALWAYS | changed | {"dataset"}
        assert changed_stages(project) == reruns - changed - {"dataset"}
        return
    assert stages_run(dvc(project, "repro")) == ALWAYS | reruns
    assert changed_stages(project) == set()


# One module per stage, and shared ones: each makes stale exactly the stages whose deps cover
# it (deps name whole packages, so download covers sources.py too).
STALE_AFTER_EDITING = {
    "pipeline/config.py": ALL_STAGES,
    "pipeline/models/files.py": {"train_vae", "train_voice", "train_emotion", "evaluate",
                                 "train_ggdrm"} | AFTER_FACE_MODELS,
    "pipeline/download/sources.py": {"sources", "download"},
    "pipeline/download/folder.py": {"download"},
    "pipeline/faces/video.py": {"faces", "lips"},
    "pipeline/audio/stage.py": {"audio", "embed", "lips"},
    "pipeline/audio/prepare.py": {"audio", "embed", "lips", "train_voice", "evaluate",
                                  "train_voice_disentangled", "evaluate_disentangled"},
    "pipeline/dataset/stage.py": {"dataset"},
    "pipeline/training/vae.py": {"train_vae", "train_voice", "train_emotion",
                                 "train_disentangled", "train_expression_baselines",
                                 "train_voice_disentangled", "evaluate_expression"},
    "pipeline/training/voice.py": {"train_voice", "train_voice_disentangled"},
    "pipeline/evaluation/report.py": {"train_voice", "evaluate", "train_voice_disentangled",
                                      "evaluate_disentangled", "evaluate_expression"},
}


def test_editing_a_module_makes_exactly_the_stages_that_import_it_stale(project):
    seen = {}
    for module in STALE_AFTER_EDITING:
        path = project / module
        original = path.read_bytes()
        path.write_bytes(original + b"# edited\n")
        seen[module] = changed_stages(project)
        path.write_bytes(original)
    assert seen == STALE_AFTER_EDITING
    assert changed_stages(project) == set()


def test_forced_vae_retraining_gives_the_same_bytes_and_nothing_downstream_reruns(
        project, reference):
    model = "models/vae/model.pt"
    before = lock_outs(reference[0])["train_vae"][model]
    # as after `make demo`: the finished run's checkpoint is there (nothing left to train)
    assert stages_run(dvc(project, "repro", "-f", "-s", "train_vae")) == {"train_vae"}
    assert lock_outs(project)["train_vae"][model] == before
    assert changed_stages(project) == set()
    # as in a clone: no checkpoint, every epoch trained again, on the stage's threads setting
    shutil.rmtree(project / "models/vae/checkpoints")
    assert stages_run(dvc(project, "repro", "-f", "-s", "train_vae")) == {"train_vae"}
    assert (project / "models/vae/checkpoints/last.pt").is_file()
    assert lock_outs(project)["train_vae"][model] == before
    assert changed_stages(project) == set()


def test_a_fetch_setting_edit_leaves_faces_up_to_date(project):
    set_params(project, {"download.workers": 4})
    assert changed_stages(project) == {"download"}
    assert stages_run(dvc(project, "repro", "-s", "download")) == {"download"}
    assert changed_stages(project) == set()


def test_a_folder_dataset_sees_a_new_labels_row_and_video(tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (recordings / name).write_bytes(name.encode() * 100)
    labels = recordings / "labels.csv"
    labels.write_text("file,speaker,emotion,sex\na.mp4,alice,happy,f\nb.mp4,bob,sad,m\n")
    project = make_project(tmp_path / "project", {
        "download.dataset": "folder", "download.folder.videos_dir": str(recordings),
        "download.folder.labels_csv": str(labels)})
    assert stages_run(dvc(project, "repro", "download")) == {"sources", "download"}
    assert _catalogued(project) == {"a", "b"}

    with labels.open("a") as stream:
        stream.write("c.mp4,carol,neutral,f\n")
    assert stages_run(dvc(project, "repro", "download")) == {"sources", "download"}
    assert _catalogued(project) == {"a", "b", "c"}
    (recordings / "d.mp4").write_bytes(b"d" * 100)
    with labels.open("a") as stream:
        stream.write("d.mp4,dave,angry,m\n")
    assert stages_run(dvc(project, "repro", "download")) == {"sources", "download"}
    assert _catalogued(project) == {"a", "b", "c", "d"}

    output = dvc(project, "repro", "download")
    assert stages_run(output) == {"sources"}
    assert "Stage 'download' didn't change" in output


def _catalogued(project: Path) -> set[str]:
    return set(pd.read_parquet(project / "data/download/catalogue.parquet")["clip_id"])


def test_experiments_show_and_diff_metrics(project):
    # --temp: each experiment starts from the committed baseline, not the previous one's params.
    # each reproduces just the stage its param reaches first
    dvc(project, "exp", "run", "--temp", "-n", "vae-lr", "-S", "train_vae.lr=0.003", "train_vae")
    dvc(project, "exp", "run", "--temp", "-n", "voice-lr", "-S", "train_voice.lr=0.0005",
        "train_voice@deeptalk")
    shown = dvc(project, "exp", "show", "--no-pager", "--md")
    assert "vae-lr" in shown and "voice-lr" in shown
    assert "data/evaluate/metrics.json" in shown or "model.latent.r@1" in shown
    diff = dvc_json(project, "metrics", "diff", "vae-lr", "voice-lr")
    vae_metrics = diff.get("dvclive/train_vae/metrics.json", {})
    assert vae_metrics, f"train_vae metrics do not differ between the experiments: {diff}"


def test_run_cache_restores_a_reverted_param_without_running(project, reference):
    set_params(project, {"audio.min_silence_s": 0.8})
    assert stages_run(dvc(project, "repro", "-s", "audio")) == {"audio"}
    set_params(project, {"audio.min_silence_s": TINY_PARAMS.get("audio.min_silence_s", 1.0)})
    output = dvc(project, "repro", "-s", "audio")
    assert stages_run(output) == set(), output
    assert "audio" in output and "cached" in output, output
    assert lock_outs(project)["audio"] == lock_outs(reference[0])["audio"]
    assert changed_stages(project) == set()


def _assert_same_outputs(clone: Path, reference: Path) -> None:
    assert lock_outs(clone) == lock_outs(reference)
    for outs in lock_outs(reference).values():
        for path in outs:
            source, copy = reference / path, clone / path
            if source.is_file():
                assert copy.read_bytes() == source.read_bytes(), path
            else:
                names = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
                assert names == sorted(p.relative_to(copy) for p in copy.rglob("*")
                                       if p.is_file()), path


def test_default_remote_is_a_shared_directory(project, tmp_path):
    remotes = dvc(project, "remote", "list")
    assert remotes.split()[0] == "team", remotes
    dvc(project, "push")
    shared = (project.parent / "voice2face-dvc-storage").resolve()
    assert shared.is_dir() and any(shared.rglob("*")), "nothing pushed to the shared directory"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    _assert_same_outputs(clone, project)
    assert stages_run(dvc(clone, "repro")) == ALWAYS


def test_ssh_remote_push_fresh_clone_pull(project, tmp_path, ssh_server):
    url = f"ssh://{ssh_server.user}@127.0.0.1:{ssh_server.port}{tmp_path / 'ssh-remote'}"
    dvc(project, "remote", "add", "ssh", url)
    git(project, "commit", "-q", "-am", "ssh remote")
    dvc(project, "remote", "modify", "--local", "ssh", "keyfile", str(ssh_server.client_key))
    assert "pushed" in dvc(project, "push", "-r", "ssh")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "remote", "modify", "--local", "ssh", "keyfile", str(ssh_server.client_key))
    dvc(clone, "pull", "-r", "ssh")
    _assert_same_outputs(clone, project)
    assert changed_stages(clone) == set()
    assert stages_run(dvc(clone, "repro")) == ALWAYS


def test_another_repository_imports_and_updates_the_dataset(project, tmp_path):
    dvc(project, "push")  # a data registry serves its data from its remote
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    git(consumer, "init", "-q")
    dvc(consumer, "init", "-q")
    dvc(consumer, "import", str(project), "data/dataset", "-o", "dataset")
    assert (consumer / "dataset" / "meta.json").read_bytes() == (
        project / "data" / "dataset" / "meta.json").read_bytes()
    before = json.loads((consumer / "dataset" / "meta.json").read_text())["splits"]

    set_params(project, {"dataset.seed": 7})
    assert stages_run(dvc(project, "repro", "-s", "dataset")) == {"dataset"}
    git(project, "commit", "-q", "-am", "new split")
    dvc(project, "push")
    dvc(consumer, "update", "dataset.dvc")
    after = json.loads((consumer / "dataset" / "meta.json").read_text())["splits"]
    assert (consumer / "dataset" / "meta.json").read_bytes() == (
        project / "data" / "dataset" / "meta.json").read_bytes()
    assert after != before, "a new split seed should give another split"


@pytest.fixture
def ssh_server(tmp_path):
    """An OpenSSH server on 127.0.0.1 with throwaway host and client keys."""
    from tests.ssh_server import start_ssh_server

    with start_ssh_server(tmp_path / "sshd") as server:
        yield server


def test_tiny_params_are_valid(tmp_path):
    project = make_project(tmp_path / "p", TINY_PARAMS)
    from pipeline.config import SECTIONS, load_params

    for section in SECTIONS:
        load_params(project / "params.yaml", section)
    assert subprocess.run(["git", "status", "--porcelain"], cwd=project,
                          capture_output=True, text=True).stdout == ""
