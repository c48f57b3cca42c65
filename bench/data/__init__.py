"""Readers of datasets in their real on-disk formats (clip_benchmark layouts, webdataset shards)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.core import environment


def default_root(given: str | os.PathLike | None = None) -> Path:
    """The datasets folder: the one given (--data-root, a suite's data_root), else $SIMBENCH_DATA, else ./data."""
    return Path(given or environment.data_root() or "data")
