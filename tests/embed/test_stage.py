import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import AudioParams, EmbedParams, to_dict
from pipeline.embed.stage import embed_catalogue
from pipeline.embed.table import EMBEDDINGS_PARQUET, clip_embeddings, read_embeddings
from pipeline.schemas import SPEAKER_EMBEDDINGS
from tests.conftest import REPO
from tests.factories import make_catalogue, speech_with_pauses, write_wav


def _catalogue(tmp_path, rng):
    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i, rate in enumerate([22050, 8000]):
        wave, _ = speech_with_pauses(rng, [("speech", 1.0), ("pause", 1.5), ("speech", 0.8)],
                                     rate)
        write_wav(media / f"c{i}.wav", wave, rate)
        rows.append({"clip_id": f"clip{1 - i}", "speaker_id": f"10{i}", "audio_path":
                     f"media/c{i}.wav", "video_path": "media/nothing.flv"})
    write_wav(media / "silent.wav", np.zeros(8000, np.float32), 8000)
    rows += [
        {"clip_id": "z_silent", "speaker_id": "1002", "audio_path": "media/silent.wav"},
        {"clip_id": "z_missing", "speaker_id": "1002", "video_path": "media/absent.flv"},
        {"clip_id": "z_none", "speaker_id": "1002"},
    ]
    return make_catalogue(tmp_path, rows), len(rows)


@pytest.mark.slow
def test_stage_cli_embeds_every_clip_or_quarantines_it(tmp_path, deterministic_rng):
    catalogue, n_rows = _catalogue(tmp_path, deterministic_rng)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"embed": to_dict(EmbedParams()),
                                      "audio": to_dict(AudioParams())}))
    out = tmp_path / "embed"
    subprocess.run([sys.executable, "-m", "stages.embed", "--params", str(params),
                    "--catalogue", str(catalogue), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True)

    table = pq.read_table(out / EMBEDDINGS_PARQUET)
    assert table.schema.equals(SPEAKER_EMBEDDINGS, check_metadata=True)
    assert table.column("clip_id").to_pylist() == ["clip0", "clip1"]
    assert table.column("source").to_pylist() == ["media/c1.wav", "media/c0.wav"]
    speech = table.column("speech_duration_s").to_numpy()
    np.testing.assert_allclose(speech, 1.8, atol=0.05)  # the 1.5 s pause is gone
    ids, vectors = read_embeddings(out)
    assert ids == ["clip0", "clip1"] and vectors.shape == (2, 256)
    assert clip_embeddings(out, ["clip1", "clip0"]).numpy().tolist() == vectors[::-1].tolist()
    with pytest.raises(ValueError, match=r"no speaker embedding for 1 clip\(s\) \['z_silent'\]"):
        clip_embeddings(out, ["clip0", "z_silent"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert {(r["item"], r["reason"]) for r in quarantine} == {
        ("z_silent", "all_silent"), ("z_missing", "decode_error"), ("z_none", "no_audio")}
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["written"] + report["rejected"] == n_rows

    # Same inputs, another process (and thread count): the same bytes.
    embed_catalogue(catalogue, tmp_path / "again", EmbedParams(threads=2), AudioParams())
    for name in (EMBEDDINGS_PARQUET, "quarantine.parquet", "report.json"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_nothing_embedded_is_an_error(tmp_path):
    catalogue = make_catalogue(tmp_path, [{"clip_id": "a"}, {"clip_id": "b"}])
    with pytest.raises(ValueError, match="none of its 2 clips could be embedded"):
        embed_catalogue(catalogue, tmp_path / "out", EmbedParams(), AudioParams())
    assert not (tmp_path / "out").exists()
