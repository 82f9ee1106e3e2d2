"""The ``sources`` stage: fingerprint the local files the download stage reads (always run).

Usage: ``python -m stages.sources --params params.yaml --out FILE``.
``download`` depends on FILE, so DVC re-runs it exactly when a folder dataset's labels or
videos (or a local CREMA-D clone) changed; see :mod:`pipeline.download.sources`.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import DownloadParams, load_params
from pipeline.download.sources import fingerprint_sources
from pipeline.runtime import atomic_write_json, setup_logging

log = logging.getLogger("stages.sources")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--out", required=True, help="output: the fingerprint (JSON)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: DownloadParams = load_params(args.params, "download")
    fingerprint = fingerprint_sources(params)
    atomic_write_json(args.out, fingerprint)
    files = sum(len(listing) for listing in fingerprint["sources"].values())
    log.info("wrote %s: %s dataset, %d local file(s)", args.out, params.dataset, files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
