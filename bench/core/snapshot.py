"""One view of the code for the whole of a long run.

A run or sweep keys every cell by the content of its source files and records the git commit. If
files are edited or a commit is made while it runs, later cells would be keyed by code they did not
run. Inside ``frozen()`` each file is read once (the first read is what every later key sees) and
``memo`` values (the commit) are computed once, so a run describes the code it started with.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

_files: dict[Path, bytes] | None = None
_values: dict[str, object] | None = None


@contextlib.contextmanager
def frozen():
    global _files, _values
    outer = _files, _values
    if _files is None:
        _files, _values = {}, {}
    try:
        yield
    finally:
        _files, _values = outer


def read_bytes(path: Path) -> bytes:
    if _files is None:
        return Path(path).read_bytes()
    key = Path(path).resolve()
    if key not in _files:
        _files[key] = key.read_bytes()
    return _files[key]


def memo(key: str, compute):
    if _values is None:
        return compute()
    if key not in _values:
        _values[key] = compute()
    return _values[key]
