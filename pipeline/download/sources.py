"""A fingerprint of the files outside the repository that the download stage reads.

DVC sees only the deps that ``dvc.yaml`` names, but a folder dataset (``download.folder``) or a
local CREMA-D clone (``download.crema_d.local_dir``) lives wherever ``params.yaml`` points. The
``sources`` stage (``always_changed``: it runs on every ``dvc repro``) writes this fingerprint
and ``download`` depends on it, so an added video or labels row re-runs ``download``, and an
unchanged folder leaves it skipped.

Tables (the labels CSV, any ``.csv``) are fingerprinted by content: they are small, and a
checkout that rewrites one unchanged must not count. Every other file by size and mtime_ns: a
stat walk of all 7,442 CREMA-D clips' media takes well under a second, hashing their gigabytes
on every ``dvc repro`` would take minutes. A file touched but unchanged costs one download
re-run, which verifies content and so changes nothing downstream. Hidden entries are skipped
(a clone's ``.git`` holds the LFS objects, which download never reads).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import DownloadParams

TABLE_SUFFIXES = (".csv",)


def fingerprint_sources(params: DownloadParams) -> dict[str, Any]:
    """Return ``{"dataset", "sources": {param key: {relative path: fingerprint}}}``.

    The demo corpus is generated from params and CREMA-D over HTTP is verified against its
    LFS pointers, so both have no local sources: their fingerprint is a constant.
    """
    return {
        "dataset": params.dataset,
        "sources": {key: fingerprint_path(Path(path), key)
                    for key, path in external_sources(params).items()},
    }


def external_sources(params: DownloadParams) -> dict[str, str]:
    """Return ``{param key: path}`` of the local files or folders the chosen dataset reads."""
    if params.dataset == "folder":
        return {"download.folder.labels_csv": params.folder.labels_csv,
                "download.folder.videos_dir": params.folder.videos_dir}
    if params.dataset == "crema-d" and params.crema_d.local_dir:
        return {"download.crema_d.local_dir": params.crema_d.local_dir}
    return {}


def fingerprint_path(path: Path, key: str) -> dict[str, str]:
    """Return ``{relative path: fingerprint}`` of a file (always by content) or a folder."""
    if path.is_file():
        return {path.name: content_fingerprint(path)}
    if path.is_dir():
        return dict(sorted((relative, file_fingerprint(entry))
                           for relative, entry in walk_files(path)))
    raise FileNotFoundError(f"{key}: {path} is neither a file nor a directory")


def file_fingerprint(entry: os.DirEntry[str]) -> str:
    """Return a table's content hash, another file's size and mtime, or ``broken symlink``."""
    if os.path.splitext(entry.name)[1].lower() in TABLE_SUFFIXES:
        return content_fingerprint(Path(entry.path))
    try:
        info = entry.stat()
    except FileNotFoundError:
        return "broken symlink"
    return f"size {info.st_size} mtime_ns {info.st_mtime_ns}"


def content_fingerprint(path: Path) -> str:
    """Return ``sha256 <hex>`` of the file's bytes."""
    with path.open("rb") as stream:
        return f"sha256 {hashlib.file_digest(stream, 'sha256').hexdigest()}"


def walk_files(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Yield ``(posix path relative to root, directory entry)`` of every non-hidden file.

    Follows symbolic links (download reads through them), each real directory once, so a
    link back up the tree cannot loop.
    """
    seen: set[tuple[int, int]] = set()
    todo = [("", str(root))]
    while todo:
        prefix, directory = todo.pop()
        identity = os.stat(directory)
        if (identity.st_dev, identity.st_ino) in seen:
            continue
        seen.add((identity.st_dev, identity.st_ino))
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    todo.append((f"{prefix}{entry.name}/", entry.path))
                else:
                    yield f"{prefix}{entry.name}", entry
