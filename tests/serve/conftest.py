"""Fixtures of the app's tests: tiny trained models, a factory gallery, a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn

from pipeline.audio.prepare import decode_audio
from pipeline.config import load_params
from pipeline.serve.app import ServeSettings, create_app
from pipeline.serve.engine import ModelFiles
from tests.conftest import REPO
from tests.factories import write_wav
from tests.training.test_voice import train_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """A tiny VAE and voice encoder trained by their stages on a synthetic dataset."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny_models(tmp_path_factory.mktemp("serve-tiny"), REPO,
                            {"epochs": 1, "batch_size": 8, "device": "cpu"})
    torch.set_num_threads(threads)


def tiny_settings(tiny_models: dict, folder: Path) -> ServeSettings:
    """Return settings over the tiny models: a new gallery started with the factory dataset."""
    params = tiny_models["params"]
    return ServeSettings(
        models=(ModelFiles("tiny", tiny_models["vae"], tiny_models["out"] / "model.pt"),),
        gallery=folder / "gallery.sqlite", dataset=tiny_models["dataset"],
        audio=load_params(params, "audio"), faces=load_params(params, "faces"),
        workers=1, queue=4, clips_per_speaker=2)


@pytest.fixture
def settings(tiny_models, tmp_path) -> ServeSettings:
    return tiny_settings(tiny_models, tmp_path)


class RunningServer:
    """A uvicorn server on 127.0.0.1 in a thread; ``url`` is its base address."""

    def __init__(self, settings: ServeSettings) -> None:
        self.app = create_app(settings)
        self.service = self.app.state.service
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def serve(settings) -> Iterator:
    """Return a function starting a :class:`RunningServer` (stopped after the test)."""
    servers = []

    def start(**changes) -> RunningServer:
        server = RunningServer(replace(settings, **changes)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory) -> Iterator[RunningServer]:
    """One server for a module's tests that leave its gallery as they found it."""
    with RunningServer(tiny_settings(tiny_models, tmp_path_factory.mktemp("gallery"))) as running:
        yield running


@pytest.fixture(scope="session")
def grid_wav(tmp_path_factory) -> Path:
    """The voice of a real GRID clip as a 16 kHz WAV (what a user would drop or record)."""
    from tests.conftest import shared_dataset

    clip = sorted(shared_dataset("grid-samples").glob("*.mpg"))[0]
    wave, _, _ = decode_audio(clip, 16000, 30.0)
    return write_wav(tmp_path_factory.mktemp("grid") / "grid.wav", wave.astype(np.float32),
                     16000)


@pytest.fixture(scope="session")
def grid_photo(tmp_path_factory) -> Path:
    """A JPEG photo of a GRID speaker (one frame of the clip)."""
    from PIL import Image

    from pipeline.faces.video import read_gray_frame
    from tests.conftest import shared_dataset

    clip = sorted(shared_dataset("grid-samples").glob("*.mpg"))[0]
    path = tmp_path_factory.mktemp("photo") / "speaker.jpg"
    Image.fromarray(np.asarray(read_gray_frame(clip, 20))).save(path, quality=90)
    return path
