"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.core import processes


def folder_problem(folder: str | os.PathLike, create: bool = False) -> str | None:
    """Why files cannot be written into ``folder`` (None when they can), found by a real write (then
    removed): os.access says yes to root even on a read-only mount. Without ``create`` nothing is
    made, and the nearest existing parent is probed, so a run refused later leaves nothing behind."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == folder and not folder.is_dir():
        return "is a file, not a folder"
    if not existing.is_dir():
        return f"cannot be created: {str(existing)!r} is a file"
    target = existing
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
            target = folder
        with tempfile.NamedTemporaryFile(dir=target, prefix=".simbench-write-check."):
            pass
    except OSError as exc:
        return f"is not writable ({str(target)!r}: {exc.strerror or exc})"
    return None


def umask_mode(directory: bool = False) -> int:
    """The mode a plain open() or mkdir() would give under the current umask (mkstemp and mkdtemp
    always give 0600/0700, which would hide shared results and caches from a group)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is flushed to disk and renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{processes.owner_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata={k: str(v) for k, v in (metadata or {}).items()},
        )


UNOWNED_AGE_S = 24 * 3600  # a temporary file without an owner tag (an older simbench's) is stale after a day


def sweep_stale(folder) -> list[Path]:
    """Remove temporary files whose writer is gone: a process of this host that has ended (kill -9). A live
    writer's file, or another host's (a shared folder), is never touched: a second run started while the
    first writes cannot delete the first's ``.NAME.HOST~PID.RANDOM.tmp`` before it is renamed."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        fields = tmp.name[: -len(".tmp")].split(".")
        owner = next((f for f in reversed(fields) if "~" in f), None)
        try:
            stale = processes.owner_gone(owner) if owner else time.time() - tmp.stat().st_mtime > UNOWNED_AGE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed
