import pytest
import torch

from pipeline.models.emotion_code import code_order, code_string, code_width, emotion_codes

# 003 section 3.4, copied from the paper's text.
PAPER_CODES = {"ANG": "00000011", "SAD": "00001100", "HAP": "00110000", "NEU": "11000000"}


def test_default_label_order_reproduces_the_papers_four_codes():
    emotions = ["ANG", "HAP", "NEU", "SAD"]  # dataset.emotions default (meta.json order)
    table = emotion_codes(emotions, bits_per_class=2)
    assert table.shape == (4, 8)
    for label, emotion in enumerate(emotions):
        assert code_string(table[label]) == PAPER_CODES[emotion]


def test_paper_codes_do_not_depend_on_the_configured_order():
    for emotions in (["SAD", "NEU", "HAP", "ANG"], ["NEU", "ANG", "SAD", "HAP"]):
        table = emotion_codes(emotions, 2)
        assert {e: code_string(table[i]) for i, e in enumerate(emotions)} == PAPER_CODES


def test_extra_emotions_take_higher_slots_and_keep_paper_codes_in_low_bits():
    emotions = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    table = emotion_codes(emotions, 2)
    strings = {e: code_string(table[i]) for i, e in enumerate(emotions)}
    assert len(strings["ANG"]) == 12
    for emotion, paper in PAPER_CODES.items():
        assert strings[emotion] == "0000" + paper
    assert strings["DIS"] == "001100000000"
    assert strings["FEA"] == "110000000000"
    assert code_order(emotions) == ("ANG", "SAD", "HAP", "NEU", "DIS", "FEA")


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_codes_are_one_hot_blocks_of_the_configured_width(bits):
    emotions = ["ANG", "HAP", "NEU", "SAD"]
    table = emotion_codes(emotions, bits)
    assert table.shape == (4, code_width(4, bits))
    assert torch.equal(table.sum(dim=1), torch.full((4,), float(bits)))
    assert torch.equal(table.sum(dim=0), torch.ones(4 * bits))  # disjoint, covering blocks


def test_bad_lists_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        emotion_codes(["ANG", "ANG"], 2)
    with pytest.raises(ValueError):
        code_width(-1, 2)
    with pytest.raises(ValueError):
        code_width(4, 0)


def test_no_emotion_labels_give_a_code_of_width_zero():
    assert code_width(0, 2) == 0
    assert emotion_codes([], 2).shape == (0, 0)
