"""The demo dataset: the embedded synthetic corpus, generated (not downloaded) and catalogued.

:func:`pipeline.download.demo.corpus.write_corpus` writes CREMA-D-like files
(``VideoFlash/<ActorID>_<Sentence>_<EMO>_<Level>.flv`` with their audio track,
``VideoDemographics.csv``), so the catalogue is built by the same name and demographics
parsing as real CREMA-D.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.config import DemoCorpusParams
from pipeline.download.crema_d import (
    DEMOGRAPHICS_CSV,
    VIDEO_DIR,
    VIDEO_EXT,
    clips_from_names,
    join_demographics,
    read_demographics,
)
from pipeline.download.fetch import sha256_file
from pipeline.runtime import StageReport

log = logging.getLogger(__name__)


def catalogue_demo(params: DemoCorpusParams, media: Path, report: StageReport,
                   workers: int = 0) -> pd.DataFrame:
    """Return the catalogue rows of the demo corpus, generated into ``media``."""
    from pipeline.download.demo.corpus import write_corpus  # the generator imports heavy renderers

    write_corpus(media, params, workers=workers)
    return catalogue_generated(media, report)


def catalogue_generated(media: Path, report: StageReport) -> pd.DataFrame:
    """Return catalogue rows for CREMA-D-named videos under ``media`` (paths start media/)."""
    videos = sorted((media / VIDEO_DIR).glob(f"*{VIDEO_EXT}"))
    clips = clips_from_names([v.stem for v in videos], report)
    clips = join_demographics(clips, read_demographics(media / DEMOGRAPHICS_CSV), report)
    by_stem = {v.stem: v for v in videos}
    paths = [by_stem[c] for c in clips["clip_id"]]
    clips["video_path"] = [f"{media.name}/{p.relative_to(media).as_posix()}" for p in paths]
    clips["video_size"] = [p.stat().st_size for p in paths]
    clips["video_sha256"] = [sha256_file(p) for p in paths]
    clips["dataset"] = "demo"
    report.info["clips_listed"] = len(videos)
    return clips
