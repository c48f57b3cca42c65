"""The Python API: what ``run_bench.py`` does, for notebooks and scripts, without argv.

    from bench import api
    result = api.run(suite="synthetic", heads=["cosine", "kme_rbf"], config={"train": {"steps": 200}})
    result.records          # one ResultRecord per cell (bench/core/records.py), references included
    print(result.leaderboard)

The same plan (bench/run/plan.py) and checks as the command line: bad input raises ``UserError`` with the
message the command line prints, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.core import distributed, snapshot
from bench.core.errors import UserError
from bench.core.records import ResultRecord
from bench.run import plan as planning
from bench.run.runner import RunSummary

__all__ = ["RunResult", "UserError", "run"]


@dataclass
class RunResult:
    summaries: list[RunSummary]
    skipped: list[planning.Skipped] = field(default_factory=list)
    leaderboard: str = ""  # the Markdown board rebuilt from every result under ``out``

    @property
    def records(self) -> list[ResultRecord]:
        return [r for s in self.summaries for r in s.records]

    @property
    def failed(self) -> list[str]:
        return [h for s in self.summaries for h in s.failed]


def run(
    suite: str = "synthetic",
    heads: list[str] | None = None,
    config: dict | None = None,
    out: str | Path = "outputs",
    device: str = "auto",
    force: bool = False,
    progress: bool = False,
    resamples: int = 10_000,
    **flags,
) -> RunResult:
    """Plan and run ``suite`` for ``heads`` (None: every registered head) with ``config`` (the --config
    file's content as a dict); ``flags``: seed, repeats, backbone, data_root, skip_corrupt, as on the
    command line. Cells already computed under the same key are reused unless ``force``."""
    from bench.report import leaderboard

    request = planning.Request(suite, heads, dict(config or {}), flags, Path(out), device, force, progress)
    with snapshot.frozen():
        plan = planning.plan(request)
        summaries, skipped = planning.execute(plan)
        board = leaderboard.build(plan.out, resamples=resamples) if distributed.is_main() else ""
    return RunResult(summaries, skipped, board)
