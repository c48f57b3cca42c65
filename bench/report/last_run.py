"""Which cells the latest run of a suite wrote or reused: the board follows that run, not timestamps.

A reused cell keeps the ``created_utc`` of the run that computed it, so "the newest record" is not
"the latest run": after ``--heads clip_frozen`` the board would follow whatever was computed last.
Each run therefore writes ``runs/SUITE/_last_run.json`` (atomically, after its cells): the suite
version, the protocol hash and the heads it ran. ``leaderboard.select`` shows that protocol.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.core import atomic
from bench.core.records import ResultRecord

_warn = logging.getLogger("simbench").warning
NAME = "_last_run.json"  # results.load_all skips names starting with "_"


@dataclass
class LastRun:
    suite: str
    suite_version: int
    protocol_hash: str
    heads: list = field(default_factory=list)


def path(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / "runs" / suite / NAME


def write(out_dir: Path, records: list[ResultRecord]) -> None:
    """One index per suite of ``records`` (what a run wrote or reused); a validation-only run writes none."""
    by_suite: dict[str, list[ResultRecord]] = {}
    for r in records:
        by_suite.setdefault(r.suite.name, []).append(r)
    for suite, rs in by_suite.items():
        protocols = {(r.suite.version, r.config.protocol_hash) for r in rs}
        if len(protocols) != 1:  # one run, one protocol: anything else is a bug in the caller
            raise ValueError(f"{suite}: one run with {len(protocols)} protocols")
        ((version, protocol),) = protocols
        heads = sorted({r.head.name for r in rs})
        atomic.write_json(path(out_dir, suite), asdict(LastRun(suite, version, protocol, heads)))


def read_all(out_dir: Path, warn=_warn) -> dict[str, LastRun]:
    found = {}
    for p in sorted((Path(out_dir) / "runs").glob(f"*/{NAME}")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            run = LastRun(**data)
            if not (isinstance(run.suite_version, int) and isinstance(run.protocol_hash, str)):
                raise TypeError("wrong field types")
            if not all(isinstance(h, str) for h in run.heads):
                raise TypeError("heads are not names")
        except (OSError, ValueError, TypeError) as exc:
            warn(f"warning: {p} cannot be read ({exc}); the board follows the newest records instead.")
            continue
        found[run.suite] = run
    return found
