"""``run_bench.py tune``: plan (everything checked before any work), run each head's trials on validation
data, then run each head's best setting on test with repeats and build the tuned leaderboard.

Layout under OUT: ``tuning/optuna.journal`` (the studies, unless --storage), ``tuning/SUITE/trials/HEAD-HASH/``
(one keyed, resumable cell per trial setting), ``tuned/`` (the chosen settings on test, with repeats) and
``tuned/leaderboard-tuned-SUITE.md``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import heads as head_registry
from bench.core import environment
from bench.core.errors import ConfigError
from bench.run import config, runner, tuning
from bench.run import plan as plan_mod

log = logging.getLogger("simbench")


@dataclass
class TunePlan:
    base: plan_mod.Plan  # the run the trials vary: its config, device, heads and out folder
    suite: str
    trials: int
    repeats: int
    sampler: str
    spaces: dict[str, list[tuning.Param]]  # head -> its search space
    space_source: str
    storage_url: str | None
    workers: int
    validation: object  # the suite's ValidationSpec
    worker_processes: list = field(default_factory=list)  # the --join processes this run started

    @property
    def out(self) -> Path:
        return self.base.out

    def identity(self, head: str) -> dict:
        """What a study is made under: the untuned protocol, the head's options, the space and the sampler."""
        sp = runner.plan(self.suite, [head], self.base.cfg, self.base.device, validation_only=True)
        return {
            "protocol": config.config_hash(sp.protocol),
            "head_options": config.config_hash(sp.cells[0].options),
            "space": [p.__dict__ for p in self.spaces[head]],
            "sampler": self.sampler,
            "seed": self.base.cfg["seed"],
        }


def plan(
    request: plan_mod.Request,
    trials: int,
    repeats: int,
    sampler: str,
    space_path: Path | None,
    storage_url: str | None,
    workers: int,
) -> TunePlan:
    if request.suite == "all":
        raise ConfigError("tune takes one suite (--suite NAME); 'all' would tune every suite at once.")
    if trials < 1:
        raise ConfigError(f"--trials {trials}: give at least 1 trial per head (8 to 32 is usual).")
    if repeats < 1 or repeats > config.MAX_REPEATS:
        raise ConfigError(f"--repeats {repeats}: give 1 to {config.MAX_REPEATS} test runs of each chosen setting.")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1 worker process.")
    if sampler not in tuning.SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: one of {', '.join(tuning.SAMPLERS)}.")
    base = plan_mod.plan(request)
    suite_cls = base.suites[0].suite_cls
    if suite_cls.validation is None:
        raise ConfigError(f"suite {request.suite!r} has no validation data, so it cannot be tuned.")
    raw, source = tuning.read_space(space_path)
    classes = {h: head_registry.get_head(h) for h in base.head_names}
    encoder = not config.encoder_spec(base.cfg["train"]).frozen  # then the default space tunes encoder_lr too
    spaces = tuning.check_space(classes, None if space_path is None else raw, source, encoder)
    tp = TunePlan(
        base, request.suite, trials, repeats, sampler, spaces, source, storage_url, workers, suite_cls.validation
    )
    for head in base.head_names:  # every trial's settings are valid: the range ends, planned now
        for end in ("low", "high"):
            values = {p.name: (int(getattr(p, end)) if p.integer else getattr(p, end)) for p in spaces[head]}
            try:
                trial_cfg(tp, head, values)
            except ConfigError as exc:
                raise ConfigError(f"search space {source}, head {head}, at the range {end}s: {exc}") from None
    tuning.open_storage(storage_url, base.out)  # a storage that cannot be opened fails now
    return tp


def trial_cfg(tp: TunePlan, head: str, values: dict, repeats: int = 1) -> dict:
    cfg = tuning.apply(tp.base.cfg, head, values)
    cfg["repeats"] = repeats
    cfg = config.resolve(cfg)
    runner.plan(tp.suite, [head], cfg, tp.base.device, validation_only=True)  # checks the head's options
    return cfg


def trial_dir(tp: TunePlan, head: str, values: dict) -> Path:
    return tp.out / "tuning" / tp.suite / "trials" / f"{head}-{config.config_hash(values)[:12]}"


def run_trial(tp: TunePlan, head: str, values: dict) -> tuple[float | None, str | None]:
    """One trial: an ordinary keyed cell, planned validation-only (its test set sealed), resumable."""
    sp = runner.plan(tp.suite, [head], trial_cfg(tp, head, values), tp.base.device, validation_only=True)
    summary = runner.run_planned(sp, trial_dir(tp, head, values), progress=False, log=log.debug)
    record = summary.records[-1]
    if record.status != "ok":
        return None, record.error or record.status
    value = record.metrics.get(f"validation/{tp.validation.metric}")
    if value is None:
        return None, "the validation metric is undefined (NaN)"
    return value, None


def studies(tp: TunePlan, storage) -> dict:
    out = {}
    for head in tp.base.head_names:
        params = tp.spaces[head]
        shared = tuning.design(params, tp.trials, tp.base.cfg["seed"]) if tp.sampler == "qmc" else None
        out[head] = tuning.open_study(
            storage,
            tp.suite,
            head,
            tp.identity(head),
            tp.validation.higher_is_better,
            tp.sampler,
            tp.base.cfg["seed"],
            tp.trials,
            shared,
        )
    return out


def run_trials(tp: TunePlan, argv: list[str] | None = None) -> dict:
    """Every head's N trials: here (1 worker), or in K worker processes sharing the storage."""
    storage = tuning.open_storage(tp.storage_url, tp.out)
    found = studies(tp, storage)
    if tp.workers > 1:
        _spawn_workers(tp, argv or [])
    for head, study in found.items():
        log.info(f"[tune {tp.suite}] {head}: {tp.trials} trials over {', '.join(p.name for p in tp.spaces[head])}")
        tuning.work(study, tp.spaces[head], tp.trials, lambda values, h=head: run_trial(tp, h, values))
    return found


def _spawn_workers(tp: TunePlan, argv: list[str]) -> None:
    """K - 1 more processes run this same command with --join (this one is the K-th); one GPU each when
    there are GPUs. They return once every study has its N trials."""
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "run_bench.py"), *argv, "--join", "--workers", "1"]
    if tp.storage_url is None:
        cmd += ["--storage", f"journal:{tp.out / 'tuning' / 'optuna.journal'}"]
    tp.worker_processes = [
        subprocess.Popen(cmd, env=environment.worker_env(i, tp.base.device.type))  # noqa: S603 (our own command line)
        for i in range(1, tp.workers)
    ]


def wait_workers(tp: TunePlan) -> None:
    for proc in tp.worker_processes:
        if proc.wait() != 0:
            log.warning(
                f"[tune] a worker process (pid {proc.pid}) exited with {proc.returncode}; its trials are "
                "retried by the others or by the next run"
            )


def final_runs(tp: TunePlan, found: dict) -> tuple[list, dict]:
    """Each head's best validation setting on test, with repeats; returns (records, head -> HeadTuning)."""
    chosen, records = {}, []
    for head, study in found.items():
        summary = tuning.summarise(study, head, tp.validation.higher_is_better)
        if summary is None:
            log.warning(f"[tune {tp.suite}] {head}: no trial completed; it is left out of the tuned board")
            continue
        chosen[head] = summary
        cfg = trial_cfg(tp, head, summary.best_params, repeats=tp.repeats)
        for r in range(tp.repeats):
            sp = runner.plan(tp.suite, [head], cfg, tp.base.device, r)
            run = runner.run_planned(sp, tp.out / "tuned", tp.base.request.force, tp.base.request.progress, log.info)
            first = head == next(iter(found))  # the reference rows (the oracle) once, from the first head's runs
            records += [x for x in run.records if x.head.name == head or (x.head.is_reference and first)]
    return records, chosen


def execute(tp: TunePlan, argv: list[str] | None = None, join: bool = False):
    found = run_trials(tp, argv)
    wait_workers(tp)
    if join:
        return None
    missing = {
        h: s for h, s in found.items() if sum(tuning.counted(t) for t in s.get_trials(deepcopy=False)) < tp.trials
    }
    if missing:
        raise RuntimeError(
            f"studies {sorted(missing)} have fewer than {tp.trials} counted trials after every worker ended"
        )
    return final_runs(tp, found)
