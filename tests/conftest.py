"""Shared fixtures: real data locations, seeded RNGs, repository paths, the workflow reference."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


LONGEST_FIRST = ("tests/test_workflow_repro.py", "tests/test_workflow.py",
                 "tests/test_no_emotions.py", "tests/test_preset_000.py",
                 "tests/training/test_distributed.py")
"""The modules that take minutes (full `dvc repro` runs, DDP), longest first."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the longest modules first: pytest-xdist (``make test``: ``--dist loadfile``)
    hands modules to its workers in this order, so the short ones fill in around them."""

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's tests keep their order


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny project after a full `dvc repro`, committed like a user would (workflow tests).

    Module-scoped: each workflow module builds its own, so they can run in parallel workers.
    """
    from tests.workflow import ALL_STAGES, TINY_PARAMS, git, make_project, repro_timed, stages_run

    project = make_project(tmp_path_factory.mktemp("reference") / "project", TINY_PARAMS)
    run = repro_timed(project)
    assert stages_run(run.output) == ALL_STAGES
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "tiny run")
    return project, run


@pytest.fixture
def project(reference, tmp_path):
    """A private copy of the reference project (git history, DVC cache and outputs)."""
    return Path(shutil.copytree(reference[0], tmp_path / "project", symlinks=True))
