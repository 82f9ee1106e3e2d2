"""The ``dataset`` stage: join catalogue, faces and audio; split; write training shards.

Usage: ``python -m stages.dataset --params params.yaml --catalogue CATALOGUE --faces DIR
--audio DIR --out DIR``.
Exits 1, after writing its output and report, when a split (train, val or test) is empty.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import DatasetParams, load_params
from pipeline.dataset.stage import build_dataset
from pipeline.runtime import EmptyOutputError, setup_logging

log = logging.getLogger("stages.dataset")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--catalogue", required=True, help="catalogue.parquet of the download")
    parser.add_argument("--faces", required=True, help="output directory of the faces stage")
    parser.add_argument("--audio", required=True, help="output directory of the audio stage")
    parser.add_argument("--out", required=True, help="output directory of the dataset")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: DatasetParams = load_params(args.params, "dataset")
    # The split is seeded by dataset.seed inside build_dataset (a local generator).
    try:
        report = build_dataset(args.catalogue, args.faces, args.audio, args.out, params)
    except EmptyOutputError as error:  # the report and quarantine table are written
        log.error("%s", error)
        return 1
    log.info("wrote %s: %s", args.out, dict(report.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
