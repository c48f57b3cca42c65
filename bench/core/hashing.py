"""Content hashes of files and of JSON-able settings: what the caches and cell keys are made of."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Full hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_sha256(value, length: int = 64, compact: bool = False) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys; other types by ``str``), cut to ``length``.
    ``compact`` drops the spaces after separators (the form cell keys have always been hashed in)."""
    blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":") if compact else None)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
