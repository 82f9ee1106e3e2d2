"""Full reproductions with the real `dvc`: a no-op, two runs from scratch, killed stages.

The other workflow tests are in tests/test_workflow.py; this module builds its own reference
run (tests/conftest.py's module-scoped ``reference``), so ``make test`` runs the two modules
in parallel workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow import (
    ALL_STAGES,
    changed_stages,
    dvc,
    dvc_json,
    git,
    kill_during,
    lock_outs,
    repro_timed,
    stages_run,
)

pytestmark = pytest.mark.slow

DATA_STAGES = ("download", "faces", "audio", "dataset")
# `sources` (always_changed) runs on every `dvc repro` that reaches it.
ALWAYS = {"sources"}


def test_noop_repro_after_a_full_run(reference):
    project, _ = reference
    assert dvc_json(project, "status") == {"sources": ["always changed"]}
    output = dvc(project, "repro")
    assert stages_run(output) == ALWAYS
    assert "Stage 'download' didn't change" in output


def test_two_runs_from_an_empty_cache_give_identical_outputs(reference, tmp_path):
    project, _ = reference
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert stages_run(repro_timed(clone).output) == ALL_STAGES
    # Every output to the byte (training on CPU with deterministic algorithms, model files
    # without temporary names or git revisions); dvclive's files hold per-step timestamps.
    first, second = _lock_outs_but_dvclive(project), _lock_outs_but_dvclive(clone)
    for stage in first:
        assert second[stage] == first[stage], f"{stage} outputs differ between runs"


def _lock_outs_but_dvclive(project: Path) -> dict[str, dict[str, str]]:
    return {stage: {path: md5 for path, md5 in outs.items() if not path.startswith("dvclive/")}
            for stage, outs in lock_outs(project).items()}


def test_sigkill_in_each_long_stage_then_repro_completes(reference, tmp_path):
    project, run = reference
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    durations = run.durations()
    # 003's chain only (`dvc repro evaluate`): the other systems' stages are not killed here
    for stage in ("download", "faces", "train_vae", "train_voice@deeptalk"):
        kill_during(clone, stage, max(0.3, 0.5 * durations[stage]), "evaluate")
        assert stage.split("@")[0] in changed_stages(clone), f"{stage} finished before the kill"
    final = repro_timed(clone, "evaluate")
    assert "train_voice" in stages_run(final.output)
    assert dvc_json(clone, "status", "--with-deps", "evaluate") == {"sources": ["always changed"]}
    first, second = lock_outs(project), lock_outs(clone)
    for stage in DATA_STAGES:
        assert second[stage] == first[stage], f"{stage} trusted a half-written output"
