"""One plan for a run: ``plan(request)`` resolves and checks everything before any work, and
``execute(plan)`` runs it. The command line (run, sweep) and the Python API (bench/api.py) share them.

A ``Request`` is what a user asks for; a ``Plan`` is what will run: the merged config, the device,
the output folder and every suite at every repeat with its cells and their options, all checked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

import heads as head_registry
import suites as suite_registry
from bench.core import atomic, distributed
from bench.core.errors import ConfigError, DataError
from bench.report import last_run, provenance
from bench.run import config, runner

log = logging.getLogger("simbench")


@dataclass
class Request:
    suite: str = "synthetic"  # a suite, or "all": every suite whose data is ready
    heads: list[str] | None = None  # None: every registered head
    config: dict = field(default_factory=dict)  # the --config file's content (layer 4, bench/run/config.py)
    flags: dict = field(default_factory=dict)  # seed, repeats, backbone, data_root, skip_corrupt (layer 5)
    out: Path = Path("outputs")
    device: str = "auto"
    force: bool = False  # recompute cells whose results exist
    progress: bool = True


@dataclass
class Plan:
    request: Request
    cfg: dict  # the resolved config every suite plan was made from
    device: torch.device
    out: Path
    head_names: list[str]
    suites: list[runner.SuitePlan]  # every suite at every repeat, in the order they run

    @property
    def everything(self) -> bool:
        return self.request.suite == "all"

    @property
    def suite_names(self) -> list[str]:
        return list(dict.fromkeys(sp.name for sp in self.suites))


@dataclass
class Skipped:
    """A suite left out of a ``--suite all`` run because its data is not ready (or is corrupt)."""

    suite: str
    reason: str
    data_not_ready: bool  # False: images that cannot be decoded (the reason lists them)


def check_out_dir(out: Path) -> None:
    """The output folder must be one this process can write: checked before any work, without creating it."""
    problem = atomic.folder_problem(out)
    if problem:
        fix = (
            "pass another folder"
            if "cannot be created" in problem
            else "pass a folder (it is created if missing)"
            if "not a folder" in problem
            else "pass a folder you can write to"
        )
        raise ConfigError(f"--out {str(out)!r} {problem}; {fix}.")


def head_names(request: Request) -> list[str]:
    names = head_registry.list_heads() if request.heads is None else list(request.heads)
    if not names:
        raise ConfigError("--heads is empty; name at least one head (see --list-heads).")
    if len(set(names)) != len(names):
        raise ConfigError(f"--heads {','.join(names)!r} names a head twice; list each once.")
    return names


def plan(request: Request, device: torch.device | None = None) -> Plan:
    """Everything a user can get wrong, checked before any work: names, config, options, device, paths.
    ``device``: one already resolved (a sweep resolves it once for all its points)."""
    provenance.code_version()  # the commit now: inside snapshot.frozen() a commit made during the build is not named
    names = suite_registry.list_suites() if request.suite == "all" else [request.suite]
    for name in names:
        suite_registry.get_suite(name)
    seed = request.flags.get("seed")
    if seed is not None and not 0 <= seed <= config.MAX_SEED:
        raise ConfigError(f"--seed {seed} is out of range; use an integer from 0 to {config.MAX_SEED}.")
    defaults = {name: suite_registry.get_suite(name).default_params() for name in names}
    cfg = config.resolve(config.with_flags(request.config, request.flags, defaults, request.suite))
    heads = head_names(request)
    if device is None:
        device = distributed.init(request.device) or provenance.resolve_device(request.device)
    suites = [runner.plan(name, heads, cfg, device, r) for name in names for r in range(cfg["repeats"])]
    check_out_dir(Path(request.out))
    return Plan(request, cfg, device, Path(request.out), heads, suites)


def execute(plan: Plan) -> tuple[list[runner.RunSummary], list[Skipped]]:
    """Run every planned suite and repeat. Under ``--suite all`` a suite whose data is not ready is skipped
    (with its reason); otherwise a data problem is bad input, raised as ``UserError``."""
    from suites.backbone_suite import CorruptImages

    summaries, skipped, given_up, done = [], [], set(), []
    for sp in plan.suites:
        if sp.name in given_up:
            continue
        try:
            summaries.append(runner.run_planned(sp, plan.out, plan.request.force, plan.request.progress, log.info))
            done += [] if sp.validation_only else summaries[-1].records  # what the board follows
        except CorruptImages as exc:  # the list of files is the message: never shortened
            if not plan.everything:
                raise
            given_up.add(sp.name)
            skipped.append(Skipped(sp.name, str(exc), data_not_ready=False))
        except DataError as exc:
            if not plan.everything:
                raise DataError(f"{exc}\n(run `run_bench.py --check-data` to see what is ready)") from None
            given_up.add(sp.name)
            skipped.append(Skipped(sp.name, str(exc).split(" Expected layout")[0], data_not_ready=True))
    if distributed.is_main() and done:
        last_run.write(plan.out, done)
    return summaries, skipped


__all__ = ["Plan", "Request", "Skipped", "check_out_dir", "execute", "plan"]
