"""The ``embed`` stage: one pretrained speaker embedding (004) per catalogue clip.

Usage: ``python -m stages.embed --params params.yaml --catalogue CATALOGUE --out DIR``.
"""

from __future__ import annotations

import argparse
import logging

import torch

from pipeline.config import AudioParams, EmbedParams, load_params
from pipeline.embed.stage import embed_catalogue
from pipeline.runtime import setup_logging

log = logging.getLogger("stages.embed")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params.yaml to read")
    parser.add_argument("--catalogue", required=True, help="catalogue.parquet of the download")
    parser.add_argument("--out", required=True, help="output directory (embeddings.parquet)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    setup_logging(args.verbose)
    params: EmbedParams = load_params(args.params, "embed")
    audio: AudioParams = load_params(args.params, "audio")
    if params.threads:
        torch.set_num_threads(params.threads)
    # No randomness: a pretrained network in eval mode.
    report = embed_catalogue(args.catalogue, args.out, params, audio)
    log.info("wrote %s: %s", args.out, dict(report.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
