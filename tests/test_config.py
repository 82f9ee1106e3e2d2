import copy
import dataclasses
import re

import pytest
import yaml

from pipeline.config import (
    CREMA_D_SENTENCES,
    SECTIONS,
    AudioParams,
    DownloadParams,
    FacesParams,
    TrainVaeParams,
    load_params,
    parse_params,
    to_dict,
)
from pipeline.download.demo.corpus import SENTENCES
from tests.conftest import REPO

DOCUMENT = yaml.safe_load((REPO / "params.yaml").read_text())


def _keys(node, prefix=""):
    """Every dotted key of a mapping, sections and nested mappings included."""
    for key, value in node.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")


def _leaves(node, prefix=""):
    """``{dotted key: value}`` of every key that holds a value, not a mapping."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _with(section, dotted, value=None, delete=False):
    """A deep copy of params.yaml's ``section`` with one (dotted) key set or deleted."""
    values = copy.deepcopy(DOCUMENT[section])
    *parents, last = dotted.split(".")
    node = values
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return values


ALL_KEYS = list(_keys(DOCUMENT))
SEED_KEYS = [k for k in ALL_KEYS if k.rsplit(".", 1)[-1] == "seed"]


def test_every_section_of_the_real_params_loads(repo_root):
    assert set(DOCUMENT) == set(SECTIONS), "params.yaml and config.SECTIONS disagree"
    for section, cls in SECTIONS.items():
        params = load_params(repo_root / "params.yaml", section)
        assert isinstance(params, cls)
        assert to_dict(params) == DOCUMENT[section], f"{section} does not round-trip"


def _lookup(document, dotted):
    node = document
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params key {dotted!r} missing"
        node = node[part]
    return node


def test_every_params_key_in_dvc_yaml_exists(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    listed = 0
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage: its template
        for entry in stage.get("params", []):
            keys = entry if isinstance(entry, str) else next(iter(entry.values()))
            for key in [keys] if isinstance(keys, str) else keys:
                _lookup(DOCUMENT, key)
                listed += 1
        assert re.search(r"--params params\.yaml", stage["cmd"]) or not stage.get("params"), (
            f"stage {name} reads params but is not given params.yaml"
        )
    assert listed >= len(stages)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_a_key_missing_from_params_yaml_is_an_error_naming_it(tmp_path, key):
    """No key silently takes a code default: DVC would not see the setting (issue 15, 3)."""
    assert len(ALL_KEYS) > 100
    section, _, rest = key.partition(".")
    document = copy.deepcopy(DOCUMENT)
    if rest:
        document[section] = _with(section, rest, delete=True)
    else:
        del document[section]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError, match=rf"(^|\n){re.escape(key)}: (section )?missing from"):
        load_params(path, section)


@pytest.mark.parametrize("section", list(SECTIONS))
def test_code_defaults_equal_params_yaml(section):
    """Params built in code (tests, benchmarks) are the ones params.yaml gives the pipeline."""
    code, file = _leaves(to_dict(SECTIONS[section]())), _leaves(DOCUMENT[section])
    assert code.keys() == file.keys()
    differ = {k: (code[k], file[k]) for k in code if code[k] != file[k]}
    assert not differ, f"{section}: code default != params.yaml (code, file): {differ}"


def test_every_field_is_documented():
    def check(cls):
        for name, info in cls.__pydantic_fields__.items():
            assert info.description, f"{cls.__name__}.{name} has no docstring"
            if dataclasses.is_dataclass(info.annotation):
                check(info.annotation)

    for cls in SECTIONS.values():
        check(cls)


def test_every_number_has_a_range():
    """Each int / float field declares at least its lower bound (issue 15, 9: seeds too)."""
    def check(cls):
        for name, info in cls.__pydantic_fields__.items():
            if dataclasses.is_dataclass(info.annotation):
                check(info.annotation)
            elif info.annotation in (int, float):
                bounds = [m for m in info.metadata if hasattr(m, "ge") or hasattr(m, "gt")]
                assert bounds, f"{cls.__name__}.{name} has no lower bound"

    for cls in SECTIONS.values():
        check(cls)


BAD_VALUES = [
    # (dotted key, bad value, how the error starts: the full key, then the reason)
    ("faces.crop_size", 4, "faces.crop_size: Input should be greater than or equal to 16, "
     "got 4 (allowed: >= 16 and <= 512)"),
    ("faces.crop_size", 513, "faces.crop_size: Input should be less than or equal to 512, "
     "got 513 (allowed: >= 16 and <= 512)"),
    ("faces.crop_size", "64", "faces.crop_size: Input should be a valid integer, got '64'"),
    ("faces.crop_size", 64.0, "faces.crop_size: Input should be a valid integer, got 64.0"),
    ("faces.crop_size", True, "faces.crop_size: Input should be a valid integer, got True"),
    ("faces.expression_weight", True, "faces.expression_weight: Input should be a valid number"),
    ("faces.expression_weight", "0.5", "faces.expression_weight: Input should be a valid number"),
    ("faces.mode", "sideways",
     "faces.mode: Input should be 'peak_emotion', 'frontal' or 'combined', got 'sideways'"),
    ("faces.max_detect_scale", 0.25,
     "faces.max_detect_scale: must be >= detect_scale (0.5), got 0.25"),
    ("faces.margin", float("nan"), "faces.margin: Input should be a finite number, got nan"),
    ("faces.multiple_faces", None, "faces.multiple_faces: Input should be 'largest'"),
    ("audio.sample_rate", 8000.5, "audio.sample_rate: Input should be a valid integer"),
    ("audio.max_input_s", 3.0, "audio.max_input_s: must be >= length_s (3.67), got 3.0"),
    ("audio.workers", -1, "audio.workers: Input should be greater than or equal to 0, got -1"),
    ("dataset.emotions", ["ANG", "JOY"], "dataset.emotions[1]: Input should be 'ANG', 'DIS', "
     "'FEA', 'HAP', 'NEU' or 'SAD', got 'JOY'"),
    ("dataset.emotions", ["ANG", "ANG"], "dataset.emotions: lists a value twice"),
    ("dataset.emotions", [], "dataset.emotions: Value should have at least 1 item"),
    ("dataset.emotions", "ANG", "dataset.emotions: Input should be a valid array, got 'ANG'"),
    ("dataset.test_fraction", 0.6, "dataset.test_fraction: Input should be less than or equal"),
    ("train_vae.lr", 0.0, "train_vae.lr: Input should be greater than or equal to 0.00000001, "
     "got 0.0 (allowed: >= 1e-08 and <= 1.0)"),
    ("train_vae.beta", -0.5,
     "train_vae.beta: Input should be greater than or equal to 0, got -0.5"),
    ("train_vae.device", "gpu",
     "train_vae.device: Input should be 'auto', 'cpu' or 'cuda', got 'gpu'"),
    ("train_vae.conditional", "yes",
     "train_vae.conditional: must be true, false or auto, got 'yes'"),
    ("train_vae.conditional", 1, "train_vae.conditional: must be true, false or auto, got 1"),
    ("train_vae.channels", [16, 0], "train_vae.channels[1]: Input should be greater than or "
     "equal to 1, got 0"),
    ("train_voice.epochs", 0, "train_voice.epochs: Input should be greater than or equal to 1"),
    ("train_voice.collapse_warning", 1.5, "train_voice.collapse_warning: Input should be less"),
    ("evaluate.recall_ks", [1, 0], "evaluate.recall_ks[1]: Input should be greater than or "
     "equal to 1, got 0"),
    ("evaluate.similarity", "dot", "evaluate.similarity: Input should be 'cosine' or 'neg_l2'"),
    ("download.workers", 0, "download.workers: Input should be greater than or equal to 1"),
    ("download.timeout_s", 0.0, "download.timeout_s: Input should be greater than 0"),
    ("download.demo.n_speakers", 3, "download.demo.n_speakers: must be even (M/F pairs), got 3"),
    ("download.demo.n_speakers", 2000, "download.demo.n_speakers: Input should be less than"),
    ("download.demo.audio_rate", 16000,
     "download.demo.audio_rate: Input should be 11025, 22050 or 44100, got 16000"),
    ("download.demo.sentences", ["IEO", "XYZ"],
     "download.demo.sentences[1]: Input should be 'IEO', 'TIE', 'IOM'"),
    ("download.demo.long_pause_fraction", 1.5, "download.demo.long_pause_fraction: Input "
     "should be less than or equal to 1"),
    ("download.demo", "all", "download.demo: Input should be an object, got 'all'"),
    ("download.crema_d.media_base_url", "ftp://x",
     "download.crema_d.media_base_url: String should match pattern"),
    ("download.crema_d.actors", [1001],
     "download.crema_d.actors[0]: Input should be a valid string, got 1001"),
    ("download.crema_d.max_clips", -1, "download.crema_d.max_clips: Input should be greater"),
    ("download.dataset", "folder",
     "download.folder: videos_dir and labels_csv required when dataset is folder"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_values_name_the_key(key, value, expected):
    section, _, rest = key.partition(".")
    with pytest.raises(ValueError, match="^" + re.escape(expected)) as raised:
        parse_params(section, _with(section, rest, value))
    assert "\n" not in str(raised.value), f"one error, one line: {raised.value}"


@pytest.mark.parametrize("key", SEED_KEYS)
@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_a_bad_seed_fails_validation_naming_it(key, seed):
    """Not later in NumPy with no key (issue 15, 9)."""
    assert len(SEED_KEYS) >= 5  # the discovery finds them (more sections add more)
    section, _, rest = key.partition(".")
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}: .*got {re.escape(repr(seed))}"):
        parse_params(section, _with(section, rest, seed))
    assert parse_params(section, _with(section, rest, 2**32 - 1)) is not None


@pytest.mark.parametrize(
    ("key", "reported"),
    [("faces.sizee", "faces.sizee"), ("download.demo.colour", "download.demo.colour")],
)
def test_unknown_keys_are_errors_naming_them(key, reported):
    section, _, rest = key.partition(".")
    with pytest.raises(ValueError, match=rf"^{re.escape(reported)}: unknown key; known: \["):
        parse_params(section, _with(section, rest, 1))


def test_every_error_is_reported_at_once():
    values = _with("faces", "crop_size", 4)
    values["workers"] = -1
    with pytest.raises(ValueError) as raised:
        parse_params("faces", values)
    assert str(raised.value).splitlines()[0].startswith("faces.crop_size: ")
    assert str(raised.value).splitlines()[1].startswith("faces.workers: ")


def test_types_are_kept_strictly_but_an_int_is_a_float():
    params = parse_params("faces", _with("faces", "max_yaw_deg", 20))
    assert params.max_yaw_deg == 20.0 and isinstance(params.max_yaw_deg, float)
    assert isinstance(params.crop_size, int)
    assert parse_params("train_vae", DOCUMENT["train_vae"]).channels == (16, 32, 64, 128)


def test_params_are_frozen_and_replace_validates():
    params = FacesParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.crop_size = 128  # type: ignore[misc]
    assert dataclasses.replace(params, crop_size=128).crop_size == 128
    with pytest.raises(ValueError, match="crop_size"):
        dataclasses.replace(params, crop_size=4)
    with pytest.raises(ValueError, match="channels"):
        TrainVaeParams(channels=())
    with pytest.raises(ValueError, match="videos_dir and labels_csv required"):
        DownloadParams(dataset="folder")


def test_missing_section_is_a_clear_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"faces": DOCUMENT["faces"]}))
    assert load_params(path, "faces").crop_size == 64
    with pytest.raises(ValueError, match="audio: section missing"):
        load_params(path, "audio")
    with pytest.raises(ValueError, match="unknown params section 'video'"):
        load_params(path, "video")


def test_to_dict_is_plain_data():
    data = to_dict(DownloadParams())
    assert data["demo"]["emotions"] == ["ANG", "HAP", "NEU", "SAD"]
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert parse_params("download", data) == DownloadParams()


def test_sentence_codes_are_the_demo_corpus_ones():
    assert set(CREMA_D_SENTENCES) == set(SENTENCES)


def test_audio_sample_count_matches_the_paper():
    assert AudioParams().n_samples == 29_360  # 003: 3.67 s at 8 kHz


def test_no_param_is_named_like_dvc_file_metadata():
    """DVC's run-cache hash drops every key named size or nfiles (treeverse/dvc#10296)."""
    clashes = [k for k in ALL_KEYS if k.rsplit(".", 1)[-1] in ("size", "nfiles")]
    assert not clashes, f"rename {clashes}: edits would restore stale outputs from the run-cache"
