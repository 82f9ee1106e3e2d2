"""Helpers for the team-workflow tests: a tiny copy of the project driven by the real `dvc`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ALL_STAGES = frozenset(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
"""Every stage of the pipeline: a full `dvc repro` of a fresh project runs each of them."""
VENV_BIN = Path(sys.executable).parent

# Small enough that a full `dvc repro` takes about a minute on 2 cores, large enough that the
# speaker-disjoint split has both sexes in every split.
TINY_PARAMS: dict[str, Any] = {
    "download.demo.n_speakers": 8,
    "download.demo.emotions": ["HAP", "NEU", "SAD"],
    "download.demo.sentences": ["IEO"],
    "dataset.emotions": ["HAP", "NEU", "SAD"],
    "dataset.val_fraction": 0.25,
    "dataset.test_fraction": 0.25,
    "train_vae.epochs": 2,
    "train_vae.checkpoint_every": 1,
    "train_voice.epochs": 2,
    "train_voice.checkpoint_every": 1,
    "train_voice.embedding_mlp.epochs": 2,
    "evaluate.clustering_runs": 3,
    "evaluate.face_embedding": False,
    "train_ggdrm.pretrain_epochs": 2,
    "train_ggdrm.finetune_epochs": 2,
    "train_ggdrm.dnn_epochs": 2,
    "train_disentangled.rounds": 1,
    "train_disentangled.identity_epochs": 1,
    "train_disentangled.expression_epochs": 1,
    "train_disentangled.baseline_epochs": 1,
    "train_disentangled.checkpoint_every": 1,
    "train_voice_disentangled.epochs": 1,
    "evaluate_expression.clustering_runs": 3,
}

RUNNING = re.compile(r"Running stage '([\w@-]+)'")
"""A stage's name; a ``foreach`` stage's items are ``NAME@ITEM`` (``train_voice@deeptalk``)."""


def env() -> dict[str, str]:
    """Return the environment for `dvc` and `git`: the venv first on PATH, a git identity."""
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def run(cwd: Path, *args: str, check: bool = True, stdout_only: bool = False) -> str:
    """Run a command in ``cwd``; return its output (raise with it on failure)."""
    done = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{output[-4000:]}")
    return done.stdout if stdout_only else output


def dvc(cwd: Path, *args: str, check: bool = True) -> str:
    """Run ``dvc ARGS`` in ``cwd``; return its output."""
    return run(cwd, "dvc", *args, check=check)


def dvc_json(cwd: Path, *args: str) -> Any:
    """Run ``dvc ARGS --json`` in ``cwd``; return the parsed JSON (warnings go to stderr)."""
    return json.loads(run(cwd, "dvc", *args, "--json", stdout_only=True))


def git(cwd: Path, *args: str) -> str:
    """Run ``git ARGS`` in ``cwd``; return its output."""
    return run(cwd, "git", *args)


def stages_run(output: str) -> set[str]:
    """Return the stages whose command `dvc repro` ran, from its output.

    A ``foreach`` stage counts once, by its name (``train_voice`` for any of its items).
    """
    return {name.split("@")[0] for name in RUNNING.findall(output)}


def changed_stages(cwd: Path) -> set[str]:
    """Return the stages `dvc status` reports as changed.

    A stage with ``always_changed: true`` (``sources``) is listed as "always changed" on every
    call; it counts only when something else of it changed too.
    """
    status = dvc_json(cwd, "status")
    return {name.split(":")[-1].split("@")[0] for name, changes in status.items()
            if any(change != "always changed" for change in changes)}


def set_params(project: Path, values: dict[str, Any]) -> None:
    """Set dotted keys in ``project/params.yaml``."""
    path = project / "params.yaml"
    document = yaml.safe_load(path.read_text())
    for key, value in values.items():
        *parents, last = key.split(".")
        node = document
        for part in parents:
            node = node[part]
        assert last in node, f"params.yaml has no key {key}"
        node[last] = value
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def lock_outs(project: Path) -> dict[str, dict[str, str]]:
    """Return ``{stage: {out path: md5}}`` from ``dvc.lock``."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {stage: {o["path"]: o["md5"] for o in entry.get("outs", [])}
            for stage, entry in lock.items()}


def make_project(dst: Path, params: dict[str, Any]) -> Path:
    """Copy the project's source (as in the working tree) to ``dst`` as a fresh git repo."""
    files = run(REPO, "git", "ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not name.startswith(("data/", "models/", "dvclive/")):
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / name)
    (dst / "data").mkdir(exist_ok=True)
    shutil.copy2(REPO / "data" / ".gitignore", dst / "data" / ".gitignore")
    set_params(dst, params)
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "tiny project")
    return dst


@dataclass
class Reproduction:
    """A finished `dvc repro`: its output and when each stage started (seconds from start)."""

    output: str
    started: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0

    def durations(self) -> dict[str, float]:
        """Return each stage's wall time (until the next stage started, or the end)."""
        order = sorted(self.started.items(), key=lambda kv: kv[1])
        ends = [t for _, t in order[1:]] + [self.total_s]
        return {name: end - start for (name, start), end in zip(order, ends, strict=True)}


def repro_timed(cwd: Path, *targets: str) -> Reproduction:
    """Run `dvc repro [targets]` to completion, timing when each stage starts."""
    start = time.monotonic()
    process = subprocess.Popen(["dvc", "repro", *targets], cwd=cwd, env=env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    result = Reproduction(output="")
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if match := RUNNING.search(line):
            result.started[match.group(1)] = time.monotonic() - start
    code = process.wait()
    result.output, result.total_s = "".join(lines), time.monotonic() - start
    assert code == 0, f"dvc repro failed:\n{result.output[-4000:]}"
    return result


def kill_during(cwd: Path, stage: str, after_s: float, *targets: str) -> str:
    """Start `dvc repro [targets]`, SIGKILL its whole process group ``after_s`` into ``stage``."""
    process = subprocess.Popen(["dvc", "repro", *targets], cwd=cwd, env=env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if f"Running stage '{stage}'" in line:
            time.sleep(after_s)
            os.killpg(process.pid, 9)
            break
    process.wait()
    return "".join(lines)
