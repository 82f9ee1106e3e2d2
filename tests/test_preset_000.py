"""Paper 000's preset (``presets/000.yaml``): valid, documented, and run end to end.

The end-to-end test lays 8 demo speakers out as a VoxCeleb2 tree (``<id>/<video>/<utt>.mp4``
plus ``vox2_meta.csv``) and runs README's ``dvc exp run -S ...`` line on it, with 1-epoch
trainings and tiny models, from download to evaluate.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import DemoCorpusParams, DownloadParams, parse_params
from pipeline.download.catalogue import prepare_dataset
from pipeline.loaders import read_meta
from pipeline.models.vae import load_vae
from tests.conftest import REPO
from tests.factories import write_voxceleb2_tree
from tests.workflow import ALL_STAGES, TINY_PARAMS, dvc, dvc_json, make_project, stages_run

OTHER_SYSTEMS = {"lips", "train_ggdrm", "train_disentangled", "train_expression_baselines",
                 "train_voice_disentangled", "evaluate_disentangled", "evaluate_expression"}
PRESET: dict[str, Any] = yaml.safe_load((REPO / "presets" / "000.yaml").read_text())
WHERE = ("download.voxceleb2.root", "download.voxceleb2.meta_csv")
QUICK = {"train_vae.epochs": 1, "train_voice.epochs": 1, "train_vae.feature_dim": 32,
         "train_vae.latent_dim": 16, "train_vae.channels": [8, 16, 32],
         "train_vae.threads": 1, "train_voice.threads": 1}


def apply(document: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a params document with dotted keys set (each must exist)."""
    document = json.loads(json.dumps(document))
    for key, value in overrides.items():
        *parents, last = key.split(".")
        node = document
        for part in parents:
            node = node[part]
        assert last in node, f"params.yaml has no key {key}"
        node[last] = value
    return document


def set_arguments(overrides: dict[str, Any]) -> list[str]:
    """Return ``dvc exp run`` ``-S key=value`` arguments (YAML spelling of each value)."""
    pairs = [(k, yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n").strip())
             for k, v in overrides.items()]
    return [a for key, value in pairs for a in ("-S", f"{key}={value}")]


def readme_words() -> list[str]:
    """Return the words of README's documented preset command."""
    block = re.search(r"<!-- preset-000 -->\n```bash\n(.*?)```",
                      (REPO / "README.md").read_text(), re.S).group(1)
    return shlex.split(block.replace("\\\n", " "))


def readme_target() -> str:
    """Return the stage README's preset command reproduces (its last word)."""
    return readme_words()[-1]


def readme_line() -> dict[str, Any]:
    """Return the ``-S`` settings of README's documented preset line, parsed as YAML values."""
    words = readme_words()
    return {k: yaml.safe_load(v) for k, v in
            (words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-S")}


def test_preset_names_existing_keys_and_every_section_still_validates():
    document = yaml.safe_load((REPO / "params.yaml").read_text())
    merged = apply(document, {**PRESET, WHERE[0]: "/data/mp4", WHERE[1]: "/data/meta.csv"})
    for section in ("download", "faces", "train_vae", "train_voice"):
        parse_params(section, merged[section])
    assert parse_params("faces", merged["faces"]).crop_size == 150


def test_readme_line_is_the_preset_file():
    documented = readme_line()
    assert set(WHERE) <= set(documented)
    assert {k: v for k, v in documented.items() if k not in WHERE} == PRESET


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    """A tiny project after README's line on a synthetic VoxCeleb2 tree (quick trainings)."""
    root = tmp_path_factory.mktemp("preset_000")
    demo = DemoCorpusParams(n_speakers=8, emotions=("NEU",), sentences=("IEO",))
    prepare_dataset(DownloadParams(dataset="demo", demo=demo), root / "demo", root / "cache",
                    progress=False)
    made = write_voxceleb2_tree(root / "vox2", root / "demo")
    project = make_project(root / "project", TINY_PARAMS)
    where = {WHERE[0]: str(root / "vox2" / "mp4"), WHERE[1]: str(root / "vox2" / "vox2_meta.csv")}
    output = dvc(project, "exp", "run", "-n", "vox2-000",
                 *set_arguments({**where, **PRESET, **QUICK}), readme_target())
    return project, made, output


@pytest.mark.slow
def test_preset_runs_from_download_to_evaluate_on_a_voxceleb2_tree(preset_run):
    project, made, output = preset_run
    # 000's system, download to evaluate; 002's model (64 or 128 px) and 001's lips are not it
    assert readme_target() == "evaluate"
    assert stages_run(output) == ALL_STAGES - OTHER_SYSTEMS
    catalogue = pq.read_table(project / "data" / "download" / "catalogue.parquet").to_pylist()
    assert sorted(c["clip_id"] for c in catalogue) == sorted(made)
    assert {c["speaker_id"] for c in catalogue} == {c.split("/")[0] for c in made}
    assert {c["dataset"] for c in catalogue} == {"voxceleb2"}
    faces = json.loads((project / "data" / "faces" / "report.json").read_text())
    assert faces["info"]["params"]["mode"] == "frontal" and faces["counts"]["selected"] == 8
    assert read_meta(project / "data" / "dataset")["face_size"] == 150
    vae = load_vae(project / "models" / "vae" / "model.pt").config
    assert vae.image_size == 150 and not vae.conditional and vae.code_dim == 0
    metrics = json.loads((project / "data" / "evaluate" / "metrics.json").read_text())
    assert metrics["model"]["latent.r@1"] is not None
    experiments = dvc_json(project, "exp", "show")
    names = [e.get("name") for b in experiments for e in b.get("experiments") or []]
    assert "vox2-000" in names
