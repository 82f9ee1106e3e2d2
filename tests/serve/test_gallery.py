import sqlite3

import numpy as np
import pytest

from pipeline.serve.gallery import (
    DuplicateNameError,
    Face,
    Gallery,
    UnknownPersonError,
    Voice,
    clean_name,
    read_dataset_speakers,
)
from tests.factories import make_dataset_dir


def face(value: int, size: int = 8) -> Face:
    return Face(np.full((size, size), value, np.uint8))


def voice(value: int) -> Voice:
    return Voice(np.full(40, value, np.int16), 8000)


def test_people_survive_reopening_and_keep_their_samples(tmp_path):
    path = tmp_path / "models" / "gallery.sqlite"
    alice = Gallery(path).add("  Alice ", [face(10, 4), face(20, 4)], [voice(3)])
    assert (alice.name, alice.origin, alice.n_faces, alice.n_voices) == ("Alice", "enrolled", 2, 1)

    reopened = Gallery(path)  # a restart
    assert [p.name for p in reopened.people()] == ["Alice"]
    samples = reopened.samples(alice.id)
    assert [f.pixels.tolist() for f in samples.faces] == [face(10, 4).pixels.tolist(),
                                                          face(20, 4).pixels.tolist()]
    assert samples.voices[0].pcm.tolist() == [3] * 40 and samples.voices[0].sample_rate == 8000
    assert reopened.face(alice.id).pixels.tolist() == face(10, 4).pixels.tolist()


def test_a_name_is_enrolled_once_whatever_its_case(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite")
    first = gallery.add("Bob", [face(1)])
    with pytest.raises(DuplicateNameError, match="'bob' is enrolled already"):
        gallery.add("bob", [face(2)], [voice(1)])
    assert [(p.id, p.n_faces, p.n_voices) for p in gallery.people()] == [(first.id, 1, 0)]
    assert gallery.samples(first.id).faces[0].pixels[0, 0] == 1  # not overwritten


def test_removing_a_person_removes_their_samples(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite")
    carol = gallery.add("Carol", [face(1), face(2)], [voice(1)])
    dave = gallery.add("Dave", [face(3)])
    assert gallery.remove(carol.id).name == "Carol"
    assert [p.name for p in gallery.people()] == ["Dave"]
    with sqlite3.connect(gallery.path) as db:
        assert db.execute("SELECT COUNT(*) FROM face").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM voice").fetchone()[0] == 0
    with pytest.raises(UnknownPersonError):
        gallery.remove(carol.id)
    with pytest.raises(UnknownPersonError):
        gallery.samples(carol.id)
    with pytest.raises(UnknownPersonError):
        gallery.face(carol.id)
    assert gallery.person(dave.id).name == "Dave"


@pytest.mark.parametrize("name, message", [
    ("   ", "empty"), ("x" * 65, "at most 64"), ("a\nb", "control"),
])
def test_bad_names_are_refused(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        clean_name(name)
    with pytest.raises(ValueError, match=message):
        Gallery(tmp_path / "g.sqlite").add(name, [face(1)])


def test_a_person_needs_a_face(tmp_path):
    with pytest.raises(ValueError, match="at least one face"):
        Gallery(tmp_path / "g.sqlite").add("Eve", [], [voice(1)])


def test_dataset_speakers_start_the_gallery_once_and_are_replaced_when_it_changes(tmp_path):
    # speakers s0..s4 (3 clips each): s0-s2 train, s3 val, s4 test
    dataset = make_dataset_dir(tmp_path / "d1", {"train": 9, "val": 3, "test": 3})
    gallery = Gallery(tmp_path / "g.sqlite")
    assert gallery.sync_dataset(dataset, clips_per_speaker=2) == 5
    people = {p.name: p for p in gallery.people()}
    assert sorted(people) == ["s0", "s1", "s2", "s3", "s4"]
    assert people["s3"].origin == "dataset:val" and people["s4"].origin == "dataset:test"
    assert (people["s0"].n_faces, people["s0"].n_voices) == (2, 2)
    # clips c0000 and c0002 (the first and last of s0's three): face value = row number
    s0 = gallery.samples(people["s0"].id)
    assert [f.pixels[0, 0] for f in s0.faces] == [0, 2]
    assert [f.emotion for f in s0.faces] == ["ANG", "NEU"]
    assert [v.pcm[0] for v in s0.voices] == [0, 2]

    enrolled = gallery.add("Frank", [face(9)])
    assert gallery.sync_dataset(dataset, clips_per_speaker=2) == 0  # unchanged: nothing done
    assert len(gallery.people()) == 6

    other = make_dataset_dir(tmp_path / "d2", {"train": 3, "val": 3, "test": 3})
    assert gallery.sync_dataset(other, clips_per_speaker=1) == 3
    assert sorted(p.name for p in gallery.people()) == ["Frank", "s0", "s1", "s2"]
    assert gallery.person(enrolled.id).origin == "enrolled"


def test_an_enrolled_name_that_a_new_dataset_uses_stops_the_sync_unchanged(tmp_path):
    gallery = Gallery(tmp_path / "g.sqlite")
    gallery.sync_dataset(make_dataset_dir(tmp_path / "d1", {"train": 3}), 1)
    gallery.add("S1", [face(1)])
    with pytest.raises(DuplicateNameError, match="'s1'"):
        gallery.sync_dataset(make_dataset_dir(tmp_path / "d2", {"train": 6}), 1)
    assert sorted(p.name for p in gallery.people()) == ["S1", "s0"]


def test_a_speaker_in_several_splits_is_one_person(tmp_path):
    dataset = make_dataset_dir(tmp_path / "d", {"train": 2, "val": 2})  # s0: c0-c2, s1: c3
    speakers = read_dataset_speakers(dataset, 8)
    assert sorted(speakers) == [("s0", "train,val"), ("s1", "val")]
    assert len(speakers[("s0", "train,val")][0]) == 3
