import ast
import dataclasses
import inspect
import itertools
import re
import textwrap

import pytest
import yaml

from pipeline.config import (
    SECTIONS,
    AudioParams,
    DownloadParams,
    FacesParams,
    from_dict,
    load_params,
    to_dict,
)


def test_every_section_of_the_real_params_loads(repo_root):
    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert set(document) == set(SECTIONS), "params.yaml and config.SECTIONS disagree"
    for section, cls in SECTIONS.items():
        params = load_params(repo_root / "params.yaml", section)
        assert isinstance(params, cls)
        assert to_dict(params) == document[section], f"{section} does not round-trip"


def _lookup(document, dotted):
    node = document
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params key {dotted!r} missing"
        node = node[part]
    return node


def test_every_params_key_in_dvc_yaml_exists(repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    listed = 0
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            keys = entry if isinstance(entry, str) else next(iter(entry.values()))
            for key in [keys] if isinstance(keys, str) else keys:
                _lookup(params, key)
                listed += 1
        assert re.search(r"--params params\.yaml", stage["cmd"]) or not stage.get("params"), (
            f"stage {name} reads params but is not given params.yaml"
        )
    assert listed >= len(stages)


def _documented_fields(cls):
    """Names of the fields that a string literal directly follows in the class body."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        node.target.id
        for node, after in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }


def test_every_field_is_documented():
    def check(cls):
        documented = _documented_fields(cls)
        for f in dataclasses.fields(cls):
            assert f.name in documented, f"{cls.__name__}.{f.name} has no docstring"
            if f.default_factory is not dataclasses.MISSING:
                check(f.default_factory)

    for cls in SECTIONS.values():
        check(cls)


@pytest.mark.parametrize(
    ("cls", "values", "key"),
    [
        (FacesParams, {"crop_size": 4}, "faces.crop_size"),
        (FacesParams, {"mode": "sideways"}, "faces.mode"),
        (FacesParams, {"crop_size": "64"}, "faces.crop_size"),
        (FacesParams, {"sizee": 64}, "sizee"),
        (AudioParams, {"sample_rate": 8000.5}, "audio.sample_rate"),
        (AudioParams, {"length_s": 10.0, "max_input_s": 5.0}, "audio.max_input_s"),
        (DownloadParams, {"demo": {"n_speakers": 3}}, "download.demo.n_speakers"),
        (DownloadParams, {"demo": {"emotions": ["JOY"]}}, "download.demo.emotions"),
        (DownloadParams, {"dataset": "folder"}, "download.folder.videos_dir"),
        (DownloadParams, {"crema_d": {"media_base_url": "ftp://x"}}, "media_base_url"),
    ],
)
def test_bad_values_name_the_key(cls, values, key):
    section = {FacesParams: "faces", AudioParams: "audio", DownloadParams: "download"}[cls]
    with pytest.raises(ValueError, match=re.escape(key)):
        from_dict(cls, values, section)


def test_params_are_frozen():
    params = FacesParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.crop_size = 128  # type: ignore[misc]


def test_missing_section_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("faces: {crop_size: 64}\n")
    assert load_params(path, "faces").crop_size == 64
    with pytest.raises(ValueError, match="audio: section missing"):
        load_params(path, "audio")


def test_audio_sample_count_matches_the_paper():
    assert AudioParams().n_samples == 29_360  # 003: 3.67 s at 8 kHz


def test_no_param_is_named_like_dvc_file_metadata(repo_root):
    """DVC's run-cache hash drops every key named size or nfiles (treeverse/dvc#10296)."""

    def keys(node, prefix=""):
        for key, value in node.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")

    document = yaml.safe_load((repo_root / "params.yaml").read_text())
    clashes = [k for k in keys(document) if k.rsplit(".", 1)[-1] in ("size", "nfiles")]
    assert not clashes, f"rename {clashes}: edits would restore stale outputs from the run-cache"
