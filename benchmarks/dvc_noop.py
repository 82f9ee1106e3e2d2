"""No-op `dvc repro` / `dvc status` time after a full run (issue 10 target: <= 3 s).

Usage: ``python benchmarks/dvc_noop.py [PROJECT_DIR]`` on a project where `dvc repro` has
completed (e.g. after `make demo`). Prints the median of 3 runs of each command; a project
that is not reproduced (a fresh clone: no pipeline outputs yet) is skipped with a line that
says so.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cwd: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    done = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    project = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    if not (project / "dvc.yaml").is_file():
        print(f"dvc_noop skipped: {project} has no dvc.yaml")
        return
    _, status = timed(project, "status", "--json")
    # `sources` (always_changed) is listed on every call: it alone does not mean work to do
    changed = [stage for stage, changes in json.loads(status).items()
               if changes != ["always changed"]]
    if changed:
        print(f"dvc_noop skipped: {project} is not reproduced (dvc status: stages "
              f"{', '.join(changed)} changed; run `make demo` or `dvc repro` first)")
        return
    for command in (("status",), ("repro",)):
        runs = [timed(project, *command)[0] for _ in range(3)]
        print(f"dvc {' '.join(command):7s} no-op: median {statistics.median(runs):.2f} s "
              f"(runs: {', '.join(f'{r:.2f}' for r in runs)}; target <= 3 s)")


if __name__ == "__main__":
    main()
