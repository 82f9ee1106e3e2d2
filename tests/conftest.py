"""Shared fixtures: real data locations, seeded RNGs, repository paths."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Return ``../shared/datasets/<name>``, skipping the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it sits beside the checkout in CI)")
    return path


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def deterministic_rng() -> np.random.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a NumPy generator."""
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return np.random.default_rng(0)


@pytest.fixture
def one_torch_thread():
    """Run with one torch intra-op thread: tiny models only pay synchronisation for more."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def crema_d_dir() -> Path:
    return shared_dataset("crema-d")


@pytest.fixture
def grid_dir() -> Path:
    return shared_dataset("grid-samples")


@pytest.fixture
def mead_dir() -> Path:
    return shared_dataset("mead-emotion-clips")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each module's tests in one pytest-xdist worker (``make test``: ``--dist
    loadgroup``), so its module- and session-scoped fixtures (a tiny DVC project, a Ray
    cluster, trained models) are built once; a module may split itself into named groups."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
