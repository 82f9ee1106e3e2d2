"""The ``download`` stage: catalogue (and fetch, verified) the dataset chosen in params.yaml.

Usage: ``python -m stages.download --params params.yaml --out DIR --cache DIR``.
Exits 1 after writing everything it could when any required file is missing, or when no
clip is kept (the report and quarantine table say why).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.config import DownloadParams, load_params
from pipeline.download.catalogue import prepare_dataset
from pipeline.runtime import EmptyOutputError, setup_logging

log = logging.getLogger("stages.download")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--out", required=True, help="output: catalogue.parquet, media/, report")
    parser.add_argument("--cache", required=True,
                        help="download cache (kept across runs; partial and verified files)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: DownloadParams = load_params(args.params, "download")
    # No randomness here (the demo corpus seeds itself from download.demo.seed).
    try:
        report = prepare_dataset(params, Path(args.out), Path(args.cache),
                                 progress=not args.no_progress)
    except EmptyOutputError as error:  # the report and quarantine table are written
        log.error("%s", error)
        return 1
    missing = report.info["missing_required"]
    summary = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items()))
    if missing:
        log.error("%d required file(s) missing (%s); see %s/report.json and "
                  "quarantine.parquet. Re-run to retry: verified files are kept.",
                  missing, summary, args.out)
        return 1
    log.info("wrote %s: %s", args.out, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
