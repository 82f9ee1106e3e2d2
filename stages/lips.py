"""The ``lips`` stage: per video frame of one speaker, the mouth crop and the mel-cepstrum.

Usage: ``python -m stages.lips --params params.yaml --catalogue CATALOGUE --out DIR``.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import FacesParams, LipsParams, load_params
from pipeline.lips.stage import run_lips
from pipeline.runtime import EmptyOutputError, setup_logging

log = logging.getLogger("stages.lips")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--catalogue", required=True, help="catalogue.parquet of the download")
    parser.add_argument("--out", required=True, help="output directory of the lips shards")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: LipsParams = load_params(args.params, "lips")
    faces: FacesParams = load_params(args.params, "faces")  # the tracker's detector settings
    # The utterance split is seeded by lips.seed; nothing else is random.
    try:
        report = run_lips(args.catalogue, args.out, params, faces)
    except EmptyOutputError as error:  # the report and quarantine table are written
        log.error("%s", error)
        return 1
    log.info("wrote %s: %s", args.out, dict(report.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
