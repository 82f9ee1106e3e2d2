"""The ``audio`` stage: every catalogue clip's voice, resampled, de-silenced, fixed length.

Usage: ``python -m stages.audio --params params.yaml --catalogue CATALOGUE --out DIR``.
Exits 1, after writing its report and quarantine table, when no clip's audio is kept.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.audio.stage import process_catalogue
from pipeline.config import AudioParams, load_params
from pipeline.runtime import EmptyOutputError, setup_logging

log = logging.getLogger("stages.audio")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--catalogue", required=True, help="catalogue.parquet of the download")
    parser.add_argument("--out", required=True, help="output directory of audio shards")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: AudioParams = load_params(args.params, "audio")
    # No randomness here: the output depends only on the inputs and params.
    try:
        report = process_catalogue(args.catalogue, args.out, params)
    except EmptyOutputError as error:  # the report and quarantine table are written
        log.error("%s", error)
        return 1
    log.info("wrote %s: %s", args.out, dict(report.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
