"""The emotion label code appended to the VAE's conv features (003 section 3.4).

003 gives each of its four classes two bits of an 8-bit code, written most-significant-first::

    Angry   00000011     Sad     00001100
    Happy   00110000     Neutral 11000000

i.e. class ``k`` in the paper's order (ANG, SAD, HAP, NEU) sets bits ``b*k`` .. ``b*k + b-1``
counted from the right, with ``b = bits_per_class``. 003 found 2 bits (one per class pair)
too weak, so the width per class is a parameter.

Generalisation to any configured emotion list: a class's *slot* ``k`` is its rank in the code
order, which is the paper's four classes first (those of them that are configured, in the
paper's order), then every other configured emotion in its configured order. So the paper's
classes keep the paper's codes whatever order the dataset lists them in::

    labels (meta.json order)  ANG  HAP  NEU  SAD     <- default dataset.emotions
    slot k                     0    2    3    1
    code (2 bits per class)   00000011 00110000 11000000 00001100

and e.g. ``[ANG, DIS, FEA, HAP, NEU, SAD]`` gives ANG, SAD, HAP, NEU slots 0-3 (unchanged
codes in the low 8 bits) and DIS, FEA slots 4-5 of a 12-bit code.

Codes are float vectors of 0/1 stored in the written order: element 0 is the leftmost
(most significant) character of the bit string.

A dataset without emotion labels has no classes and a code of width 0: its VAE is
unconditional (000's setting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAPER_ORDER: tuple[str, ...] = ("ANG", "SAD", "HAP", "NEU")
"""003's class order: slot 0 is the least significant bit pair."""


def code_order(emotions: Sequence[str]) -> tuple[str, ...]:
    """Return ``emotions`` sorted into code slots: the paper's classes first, then the rest."""
    if len(set(emotions)) != len(emotions):
        raise ValueError(f"emotion list has duplicates: {list(emotions)}")
    paper = [e for e in PAPER_ORDER if e in emotions]
    return (*paper, *(e for e in emotions if e not in PAPER_ORDER))


def code_width(n_classes: int, bits_per_class: int) -> int:
    """Return the code length in bits: ``n_classes * bits_per_class`` (0: no emotion labels)."""
    if n_classes < 0 or bits_per_class < 1:
        raise ValueError(f"need >= 0 classes and >= 1 bit, got {n_classes}, {bits_per_class}")
    return n_classes * bits_per_class


def emotion_codes(emotions: Sequence[str], bits_per_class: int = 2) -> torch.Tensor:
    """Return the code table ``(len(emotions), width)``: row ``i`` codes label ``emotions[i]``.

    Index it with a batch of ``emotion_index`` labels to get the codes ``(B, width)``. No
    emotions give an empty ``(0, 0)`` table.
    """
    slots = code_order(emotions)
    width = code_width(len(emotions), bits_per_class)
    table = torch.zeros(len(emotions), width)
    for label, emotion in enumerate(emotions):
        low = slots.index(emotion) * bits_per_class  # bit position counted from the right
        # bits low .. low+b-1 from the right are elements width-1-low .. width-b-low
        table[label, width - low - bits_per_class : width - low] = 1.0
    return table


def code_string(code: torch.Tensor) -> str:
    """Return one code vector as the paper writes it, e.g. ``"00000011"`` for Angry."""
    return "".join("1" if bit > 0.5 else "0" for bit in code.tolist())
