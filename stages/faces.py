"""The ``faces`` stage: per clip, the frontal / peak-emotion frame's face crop (dlib).

Usage: ``python -m stages.faces --params params.yaml --catalogue CATALOGUE --out DIR``.
Exits 1, after writing its report and quarantine table, when no clip yields a face.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.config import FacesParams, load_params
from pipeline.faces.stage import run_faces
from pipeline.runtime import EmptyOutputError, setup_logging

log = logging.getLogger("stages.faces")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--catalogue", required=True, help="catalogue.parquet of the download")
    parser.add_argument("--out", required=True, help="output directory of face shards")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: FacesParams = load_params(args.params, "faces")
    # No randomness here: the output depends only on the inputs and params.
    try:
        report = run_faces(args.catalogue, args.out, params)
    except EmptyOutputError as error:  # the report and quarantine table are written
        log.error("%s", error)
        return 1
    log.info("wrote %s: %s", args.out, dict(report.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
