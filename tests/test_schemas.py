import pyarrow as pa
import pytest

from pipeline.schemas import AUDIO, CATALOGUE, DATASET, FACES, conform, describe


@pytest.mark.parametrize("schema", [CATALOGUE, FACES, AUDIO, DATASET])
def test_every_column_is_documented(schema):
    for field in schema:
        assert (field.metadata or {}).get(b"doc"), f"{field.name} has no doc"
    assert describe(schema).count("\n") == len(schema) + 1


def test_conform_orders_casts_and_names_missing_columns():
    table = pa.table({"n_samples": [3], "clip_id": ["a"], "pcm": [b"\x00\x00"] ,
                      "sample_rate": [8000], "original_duration_s": [1.0],
                      "speech_duration_s": [0.5], "silences_removed": [1], "extra": [0]})
    out = conform(table, AUDIO)
    assert out.schema.equals(AUDIO, check_metadata=True)
    assert out.column("n_samples").type == pa.int32()
    with pytest.raises(ValueError, match=r"\['pcm'\]"):
        conform(table.drop(["pcm"]), AUDIO)
    with pytest.raises(ValueError, match="sample_rate"):
        conform(table.set_column(3, "sample_rate", pa.array(["x"])), AUDIO)
