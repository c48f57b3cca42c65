"""On-disk cache of backbone point sets: safetensors shards plus a manifest checked on load.

The cache key is a hash of everything that changes the features (backbone identity: model, weights
tag or checkpoint hash, open_clip version, preprocessing, L; dataset, split, a fingerprint of the
data, and the side). A folder is only ever published whole: shards are written into a temporary
folder, each shard's sha256 goes into the manifest, and the folder is renamed into place last.
On load, a missing, truncated or altered shard (or a manifest whose key differs) means the entry is
stale: it is rebuilt, never silently reused. A building folder is named after its host and process,
so a later build can remove the ones a killed process (kill -9) left behind without touching a live
writer's (another torchrun rank's).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from bench.core import atomic, distributed, hashing, processes
from bench.features.token_sets import OFFSETS_FILE, TOKENS_FILE, TokenSets, TokenWriter

log = logging.getLogger(__name__)
CACHE_SCHEMA = 1
STALE_PARTIAL_SECONDS = 24 * 3600  # a building folder from another host is presumed dead after this


def cache_key(fields: dict) -> str:
    return hashing.json_sha256(fields, 20)


class CacheEntry(NamedTuple):
    points: torch.Tensor
    cached: bool  # read from disk: no forward pass was needed
    extra: dict  # what the builder recorded beside the points (JSON, as stored in the manifest)


class FeatureCache:
    def __init__(self, root: str | os.PathLike, shard_rows: int = 50_000):
        self.root = Path(root)
        self.shard_rows = int(shard_rows)

    def path(self, fields: dict) -> Path:
        return self.root / cache_key(fields)

    def problem(self, fields: dict) -> str | None:
        """Why the entry for ``fields`` cannot be used (None when it can)."""
        folder = self.path(fields)
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            return "no manifest" if folder.exists() else "not cached"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "manifest is not valid JSON"
        if (
            not isinstance(manifest, dict)
            or not isinstance(manifest.get("shards", []), list)
            or not isinstance(manifest.get("extra", {}), dict)
        ):
            return "manifest is not a cache manifest"
        if manifest.get("schema") != CACHE_SCHEMA or manifest.get("fields") != json.loads(
            json.dumps(fields, default=str)
        ):
            return "manifest was written for other settings"
        for shard in manifest.get("shards", []):
            if not isinstance(shard, dict) or not {"file", "bytes", "sha256"} <= set(shard):
                return "manifest lists a malformed shard"
            f = folder / str(shard["file"])
            if not f.is_file():
                return f"shard {shard['file']} is missing"
            if f.stat().st_size != shard["bytes"] or hashing.file_sha256(f) != shard["sha256"]:
                return f"shard {shard['file']} is truncated or altered (checksum mismatch)"
        return None

    def manifest(self, fields: dict) -> dict:
        return json.loads((self.path(fields) / "manifest.json").read_text())

    def load(self, fields: dict) -> torch.Tensor:
        from safetensors.torch import load_file

        folder = self.path(fields)
        manifest = self.manifest(fields)
        parts = [load_file(str(folder / s["file"]))["points"] for s in manifest["shards"]]
        return torch.cat(parts) if parts else torch.empty(0)

    def get_or_build(self, fields: dict, build: Callable[[], tuple[torch.Tensor, dict]]) -> CacheEntry:
        """The entry for ``fields``, or ``build()``'s (points, extra) published as that entry.

        Under torchrun every rank calls this: all take the same branch (a rank that alone saw a valid
        entry would skip the gathers inside ``build`` and hang the others), and rank 0 alone publishes.
        """
        why = self.problem(fields)
        if distributed.all_true(why is None):
            return CacheEntry(self.load(fields), True, self.manifest(fields).get("extra", {}))
        if why not in (None, "not cached"):
            log.warning("feature cache %s is stale (%s); rebuilding it.", self.path(fields), why)
        points, extra = build()
        points = points.detach().float().cpu()
        if distributed.is_main():
            self.store(fields, points, extra)
        distributed.barrier()
        return CacheEntry(points, False, json.loads(json.dumps(extra or {}, default=str)))

    def get_or_build_tokens(
        self, fields: dict, n: int, stream: Callable[[TokenWriter, int, int], dict]
    ) -> tuple[TokenSets, bool, dict]:
        """Token sets for ``fields``, or those ``stream(writer, start, stop)`` writes for items [start, stop)
        batch by batch (it returns the extra: JSON, e.g. undecodable items by global index).

        Written straight to disk, so a dataset's tokens never sit in RAM at once; read back memory-mapped.
        Under torchrun each rank writes its contiguous share into a part folder beside the cache entry;
        rank 0 joins the parts in rank order and publishes; then every rank maps the same files.
        """
        why = self.problem(fields)
        cached = distributed.all_true(why is None)
        if not cached:
            if why not in (None, "not cached"):
                log.warning("feature cache %s is stale (%s); rebuilding it.", self.path(fields), why)
            if distributed.world_size() == 1:
                self._publish_built(fields, lambda tmp: self._write_tokens(tmp, lambda w: stream(w, 0, n)))
            else:
                self._build_tokens_sharded(fields, n, stream)
            distributed.barrier()
        manifest = self.manifest(fields)
        sets = TokenSets(self.path(fields), manifest["dim"], manifest["total_tokens"])
        return sets, cached, manifest.get("extra", {})

    def _build_tokens_sharded(self, fields: dict, n: int, stream) -> None:
        world, rank = distributed.world_size(), distributed.rank()
        per = -(-n // world)
        # named like a building folder of rank 0's process, so a later build removes it if that process died
        name = distributed.gather_objects(
            f".{self.path(fields).name}.{_host()}.{os.getpid()}.parts.partial" if distributed.is_main() else None
        )[0]
        parts = self.root / name
        if distributed.is_main():
            self.root.mkdir(parents=True, exist_ok=True)
            parts.mkdir()
        distributed.barrier()
        mine = parts / f"rank{rank:05d}"
        mine.mkdir()
        layout = self._write_tokens(mine, lambda w: stream(w, min(n, rank * per), min(n, (rank + 1) * per)))
        layouts = distributed.gather_objects(layout)
        if distributed.is_main():
            try:
                self._publish_built(fields, lambda tmp: self._join_parts(tmp, parts, layouts))
            finally:
                shutil.rmtree(parts, ignore_errors=True)

    @staticmethod
    def _join_parts(tmp: Path, parts: Path, layouts: list[dict]) -> dict:
        """One entry from the ranks' parts, in rank order: tokens appended, offsets shifted, extras merged."""
        import numpy as np

        offsets, extra, total = [np.zeros(1, dtype=np.int64)], {}, 0
        with open(tmp / TOKENS_FILE, "wb") as out:
            for r, layout in enumerate(layouts):
                folder = parts / f"rank{r:05d}"
                with open(folder / TOKENS_FILE, "rb") as part:
                    shutil.copyfileobj(part, out, 16 * 2**20)
                offsets.append(np.load(folder / OFFSETS_FILE)[1:] + total)
                total += layout["total_tokens"]
                for key, value in layout["extra"].items():
                    extra[key] = {**extra.get(key, {}), **value} if isinstance(value, dict) else value
        offsets = np.concatenate(offsets)
        np.save(tmp / OFFSETS_FILE, offsets)
        dims = [layout["dim"] for layout in layouts if layout["dim"]]
        return {
            "kind": "tokens",
            "dtype": "float16",
            "rows": len(offsets) - 1,
            "dim": dims[0] if dims else 0,
            "total_tokens": int(total),
            "max_tokens": int(np.diff(offsets).max()) if len(offsets) > 1 else 0,
            "files": [TOKENS_FILE, OFFSETS_FILE],
            "extra": extra,
        }

    @staticmethod
    def _write_tokens(tmp: Path, stream) -> dict:
        writer = TokenWriter(tmp)
        try:
            extra = stream(writer) or {}
        finally:
            layout = writer.finish()
        return {"kind": "tokens", "dtype": "float16", **layout, "files": [TOKENS_FILE, OFFSETS_FILE], "extra": extra}

    def _publish_built(self, fields: dict, write: Callable[[Path], dict]) -> None:
        """``write(tmp)`` fills a building folder and returns the manifest's content; the manifest gets the
        files' sizes and checksums, and the folder is renamed into place whole (or removed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep_partials()
        final = self.path(fields)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_host()}.{os.getpid()}.", suffix=".partial", dir=self.root))
        os.chmod(tmp, atomic.umask_mode(directory=True))
        try:
            content = write(tmp)
            files = content.pop("files")
            files = [f if isinstance(f, dict) else {"file": f} for f in files]  # a file may carry more (its rows)
            shards = [
                {**f, "bytes": (tmp / f["file"]).stat().st_size, "sha256": hashing.file_sha256(tmp / f["file"])}
                for f in files
            ]
            manifest = {"schema": CACHE_SCHEMA, "fields": fields, **content, "shards": shards}
            atomic.write_json(tmp / "manifest.json", json.loads(json.dumps(manifest, default=str)))
            self._publish(tmp, final, fields)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def store(self, fields: dict, points: torch.Tensor, extra: dict | None = None) -> None:
        """Publish ``points`` for ``fields`` whole, or not at all. ``extra`` (JSON) goes into the manifest."""
        from safetensors.torch import save_file

        points = points.detach().float().cpu()

        def write(tmp: Path) -> dict:
            files = []
            for i, start in enumerate(range(0, len(points), self.shard_rows)):
                part = points[start : start + self.shard_rows].contiguous()
                files.append({"file": f"shard-{i:05d}.safetensors", "rows": len(part)})
                save_file({"points": part}, str(tmp / files[-1]["file"]))
            return {"rows": len(points), "shape": list(points.shape), "files": files, "extra": extra or {}}

        self._publish_built(fields, write)

    def sweep_partials(self) -> list[Path]:
        """Remove building folders whose writer is gone: a dead process on this host, or older than a day."""
        removed, host = [], _host()
        for folder in self.root.glob(".*.partial"):
            parts = folder.name.split(".")
            try:
                same_host, pid = parts[2] == host, int(parts[3])
            except (IndexError, ValueError):
                same_host, pid = False, -1
            try:
                dead = (
                    same_host and not processes.pid_alive(pid)
                ) or time.time() - folder.stat().st_mtime > STALE_PARTIAL_SECONDS
            except FileNotFoundError:
                continue
            if dead:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed %s (left by an interrupted feature extraction)", folder)
                removed.append(folder)
        return removed

    def _publish(self, tmp: Path, final: Path, fields: dict) -> None:
        """Rename the finished folder into place; if another process (a torchrun rank) published a
        valid entry first, keep that one and drop ours."""
        if final.exists() and self.problem(fields) is not None:
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if self.problem(fields) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)


def _host() -> str:
    return processes.host_name()

    return True
