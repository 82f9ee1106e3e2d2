import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.serve.engine import ModelFiles, load_served_models
from pipeline.serve.gallery import Face, Gallery, Voice
from pipeline.serve.ranking import PeopleIndex


@pytest.fixture
def model(tiny_models):
    files = ModelFiles("tiny", tiny_models["vae"], tiny_models["out"] / "model.pt")
    return load_served_models([files], load_params(tiny_models["params"], "audio"))["tiny"]


def factory_gallery(path, rng, n_people=6, crop=24, clip=29_360):
    """People with random faces (crops larger than the tiny VAE's 16 px) and random voices."""
    gallery = Gallery(path)
    for i in range(n_people):
        faces = [Face(rng.integers(0, 256, (crop, crop), dtype=np.uint8), "HAP")]
        voices = [Voice((rng.normal(0, 3000, clip)).astype(np.int16), 8000)] if i % 2 else []
        gallery.add(f"person {i}", faces, voices)
    return gallery


def test_a_known_face_and_a_known_voice_rank_themselves_first(model, tmp_path):
    gallery = factory_gallery(tmp_path / "g.sqlite", np.random.default_rng(0))
    index = PeopleIndex(model, voice_samples=29_360, sample_rate=8000)
    index.add(gallery.all_samples())
    assert len(index) == 6
    for samples in gallery.all_samples():
        latent = model.face_latents(np.stack([f.pixels for f in samples.faces]), ["HAP"])[0]
        matches = index.nearest_faces(latent, k=3)
        assert matches[0].person == samples.person, samples.person.name
        assert matches[0].similarity == pytest.approx(1.0, abs=1e-6)
        assert [m.similarity for m in matches] == sorted((m.similarity for m in matches),
                                                         reverse=True)
        if samples.voices:
            vector = model.voice_vectors(np.stack([v.pcm for v in samples.voices]), 8000)[0]
            assert index.nearest_voices(vector, k=1)[0].person == samples.person
    # only people with a voice are compared by voice
    assert len(index.nearest_voices(np.ones(16, np.float32), k=10)) == 3


def test_removed_people_are_not_matched_and_odd_clips_are_left_out(model, tmp_path, caplog):
    gallery = factory_gallery(tmp_path / "g.sqlite", np.random.default_rng(1), n_people=2)
    index = PeopleIndex(model, voice_samples=1000, sample_rate=8000)  # no clip this long
    index.add(gallery.all_samples())
    assert "voice clips not of 1000 samples at 8000 Hz left out" in caplog.text
    assert index.nearest_voices(np.ones(16, np.float32), k=5) == []
    first = gallery.people()[0]
    index.remove(first.id)
    assert [m.person.id for m in index.nearest_faces(np.ones(8, np.float32), k=5)] == [
        p.id for p in gallery.people()[1:]]
