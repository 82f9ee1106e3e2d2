import numpy as np
import pytest

from pipeline.evaluation.voice_alone import emotion_recognition, enrolled_identification

EMOTIONS = ("ANG", "HAP", "NEU", "SAD")


def test_emotion_recognition_counts_recall_and_chance():
    true = ["ANG", "ANG", "HAP", "NEU", None, "SAD", "ANG"]
    read = ["ANG", "HAP", "HAP", "SAD", "NEU", "SAD", "ANG"]
    result = emotion_recognition(true, read, EMOTIONS)
    assert result.clips == 6 and result.accuracy == pytest.approx(4 / 6)
    assert result.chance == pytest.approx(3 / 6)  # ANG, the majority label
    assert result.recall == pytest.approx({"ANG": 2 / 3, "HAP": 1.0, "NEU": 0.0, "SAD": 1.0})
    assert result.confusion[0].tolist() == [2, 1, 0, 0] and result.confusion.sum() == 6
    with pytest.raises(ValueError, match=r"\['XYZ'\] are not among"):
        emotion_recognition(["ANG"], ["XYZ"], EMOTIONS)


def test_identification_leaves_the_query_out_of_its_own_speakers_enrolment():
    rng = np.random.default_rng(0)
    # Each speaker's clips are unrelated noise: only the clip itself can find its speaker.
    enrolled = rng.standard_normal((30, 16))
    speakers = [f"s{i // 3}" for i in range(30)]
    queries = enrolled[::3]
    itself = enrolled_identification(queries, speakers[::3], enrolled, speakers)
    assert itself.recall[1] >= 0.9 and itself.n_gallery == 10  # (chance 0.1)
    left_out = enrolled_identification(queries, speakers[::3], enrolled, speakers,
                                       ks=(1, 5), left_out=range(0, 30, 3))
    assert left_out.recall[1] < 0.5 and left_out.chance_recall == {1: 0.1, 5: 0.5}
    # with a speaker signal, the other clips of the speaker find the query's speaker
    voices = np.repeat(rng.standard_normal((10, 16)), 3, axis=0) + 0.1 * enrolled
    found = enrolled_identification(voices[::3], speakers[::3], voices, speakers,
                                    left_out=range(0, 30, 3))
    assert found.recall[1] == 1.0
