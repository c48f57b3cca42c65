"""Equal-budget tuning: per head, N trials of one search space, judged on validation data only.

Fairness is built in, not promised:
* every head gets the same N trials, the same sampler and the same sampler seed; with the default
  quasi-random design (Optuna's ``QMCSampler``) the shared settings (learning rate, weight decay,
  warm-up) are one design of N points, enqueued in every head's study, so every head is tried at the
  very same points, and only a head's own options (its ``tunable`` metadata) are sampled per head;
* a trial is an ordinary keyed, resumable cell planned with ``validation_only``: its test set is a
  ``SealedTest`` and never read, and its record holds validation values only;
* Optuna owns sampling and storage (a journal file under OUT by default, or any SQLAlchemy URL),
  so workers on one or many machines share a study. A worker killed mid-trial leaves a RUNNING
  trial; the next worker on that host sees its process is gone, marks it failed and enqueues its
  settings again, so a lost trial is retried and never counted.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import socket
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.core import processes
from bench.core.errors import ConfigError
from bench.core.registry import suggest
from bench.run import config

log = logging.getLogger("simbench")

# The shared space: what every head is tuned over. A head adds its own options (``tunable``).
DEFAULT_SPACE: dict[str, dict] = {
    "train.lr": {"low": 3e-4, "high": 0.1, "log": True},
    "train.weight_decay": {"low": 0.0, "high": 0.3},
    "train.warmup_steps": {"low": 0, "high": 200},
}
# Added to the default space when train.encoder trains blocks: they start trained, so far below the head's lr.
ENCODER_SPACE = {"train.encoder_lr": {"low": 1e-6, "high": 1e-4, "log": True}}
SAMPLERS = ("qmc", "tpe")
TUNABLE_TRAIN = (
    "lr",
    "weight_decay",
    "warmup_steps",
    "grad_clip",
    "batch_size",
    "steps",
    "patience",
    "encoder_lr",  # only when train.encoder trains blocks (bench/features/adapt.py)
)


@dataclass(frozen=True)
class Param:
    """One searched setting: ``train.KEY`` (shared by every head) or ``head.OPTION`` (a head's own)."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @property
    def shared(self) -> bool:
        return self.name.startswith("train.")

    def suggest(self, trial):
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def distribution(self):
        import optuna

        if self.integer:
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)


def _param(name: str, spec, default, where: str) -> Param:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {name} must be a mapping like {{low: 0.001, high: 0.1, log: true}}, got {spec!r}.")
    unknown = set(spec) - {"low", "high", "log"}
    if unknown:
        raise ConfigError(f"{where}: {name} has unknown key(s) {sorted(unknown)}; a range has low, high and log.")
    low, high, log_scale = spec.get("low"), spec.get("high"), spec.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers:
        raise ConfigError(f"{where}: {name} needs numeric low and high, got low={low!r}, high={high!r}.")
    if not low < high:
        raise ConfigError(
            f"{where}: {name} has an empty or inverted range (low {low} must be below high {high}); swap or widen it."
        )
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}: {name}.log must be true or false, got {log_scale!r}.")
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: {name} is log-scaled, so low must be > 0 (got {low}).")
    integer = isinstance(default, int) and not isinstance(default, bool)
    if integer and (int(low) != low or int(high) != high):
        raise ConfigError(f"{where}: {name} is an integer option; give integer low and high, got {low}, {high}.")
    return Param(name, low, high, bool(log_scale), integer)


def read_space(path: Path | None) -> tuple[dict, str]:
    """The space's raw mapping and where it came from (the default, or a YAML file)."""
    if path is None:
        return DEFAULT_SPACE, "the default space"
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--space {path}: cannot read it ({exc.strerror}); give a YAML file.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--space {path}: not valid YAML ({exc}).") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"--space {path}: must map settings to ranges, e.g. 'train.lr: {{low: 0.001, high: 0.1, log: true}}'."
        )
    return raw, str(path)


def head_space(head_cls, raw: dict | None, where: str, encoder: bool = False) -> list[Param]:
    """The head's search space: the shared ``train.*`` settings of ``raw`` (the default space when None,
    with ``train.encoder_lr`` when ``encoder`` blocks train) plus its own options, from ``raw``'s
    ``head.*`` entries or, without a file, its ``tunable`` metadata."""
    options = config.constructor_options(head_cls)
    entries = dict(DEFAULT_SPACE if raw is None else raw)
    if raw is None:
        entries.update({f"head.{k}": v for k, v in head_cls.tunable.items()})
        entries.update(ENCODER_SPACE if encoder else {})
    out = []
    for name, spec in sorted(entries.items()):
        section, _, key = str(name).partition(".")
        if section == "train":
            if key not in TUNABLE_TRAIN:
                raise ConfigError(
                    f"{where}: unknown tunable option {name!r}.{suggest(key, TUNABLE_TRAIN)} "
                    f"Training settings that can be tuned: {', '.join('train.' + k for k in TUNABLE_TRAIN)}."
                )
            default = {**config.TRAIN_DEFAULTS, **config.ENCODER_DEFAULTS}[key]
            out.append(_param(name, spec, default, where))
        elif section == "head":
            if key not in options:
                continue  # another head's option (checked by check_space against every head)
            out.append(_param(name, spec, options[key], where))
        else:
            raise ConfigError(
                f"{where}: unknown tunable option {name!r}; names are train.SETTING or head.OPTION "
                "(e.g. train.lr, head.prototypes)."
            )
    return out


def check_space(head_classes: dict, raw: dict | None, where: str, encoder: bool = False) -> dict[str, list[Param]]:
    """Every head's space, checked before any work: a ``head.*`` option no tuned head has is an error."""
    spaces = {name: head_space(cls, raw, where, encoder) for name, cls in head_classes.items()}
    for name in raw or {}:
        section, _, key = str(name).partition(".")
        if section == "head" and not any(key in config.constructor_options(c) for c in head_classes.values()):
            known = sorted({o for c in head_classes.values() for o in config.constructor_options(c)})
            raise ConfigError(
                f"{where}: unknown tunable option {name!r}: none of the heads {', '.join(head_classes)} has an "
                f"option {key!r}.{suggest(key, known)}"
            )
    return spaces


def apply(cfg: dict, head: str, params: dict) -> dict:
    """``cfg`` with one trial's settings: ``train.X`` into train, ``head.X`` into that head's options."""
    out = copy.deepcopy(cfg)
    for name, value in params.items():
        section, _, key = name.partition(".")
        if section == "train":
            out["train"][key] = value
        else:
            out["heads"].setdefault(head, {})
            out["heads"][head] = {**(out["heads"][head] or {}), key: value}
    return out


# --- studies -----------------------------------------------------------------------------------------


def open_storage(url: str | None, out_dir: Path):
    """Optuna storage: a journal file under OUT by default; a ``journal:PATH``; or any SQLAlchemy URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.startswith("journal:"):
        path = Path(url[len("journal:") :]) if url else Path(out_dir) / "tuning" / "optuna.journal"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ConfigError(f"--storage: cannot open the journal file {path} ({exc.strerror}).") from None
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # noqa: BLE001 (SQLAlchemy and drivers raise many kinds; all mean "cannot open")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--storage {url!r} cannot be opened ({first}); give a SQLAlchemy URL such as "
            "sqlite:///tune.db or postgresql://user@host/db, or journal:PATH."
        ) from None


def study_name(suite: str, head: str) -> str:
    return f"{suite}/{head}"


def sampler(kind: str, seed: int):
    import warnings

    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    with warnings.catch_warnings():  # "experimental since v3.0": stable enough, and pinned by our tests
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)


def design(params: list[Param], n: int, seed: int) -> list[dict]:
    """N points of the shared settings from Optuna's scrambled Sobol sampler: the same list for every head."""
    import optuna

    shared = [p for p in params if p.shared]
    if not shared:
        return [{} for _ in range(n)]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler("qmc", seed))
    points = []
    for _ in range(n):
        trial = study.ask({p.name: p.distribution() for p in shared})
        points.append(dict(trial.params))
        study.tell(trial, 0.0)
    return points


def open_study(
    storage,
    suite: str,
    head: str,
    identity: dict,
    higher_is_better: bool,
    kind: str,
    seed: int,
    n: int,
    shared_design: list[dict] | None,
):
    """Create or load the head's study; a study made under another protocol or space is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(suite, head)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=sampler(kind, seed),
        direction="maximize" if higher_is_better else "minimize",
        load_if_exists=True,
    )
    made = study.user_attrs.get("identity")
    if made is None:
        study.set_user_attr("identity", identity)
    elif made != identity:
        differ = sorted(k for k in set(made) | set(identity) if made.get(k) != identity.get(k))
        raise ConfigError(
            f"study {name!r} in this storage was made under another protocol or search space (differs in: "
            f"{', '.join(differ)}); use another --out or --storage, or delete that study to start again."
        )
    if shared_design:  # one design for every head: the same points in the same order; a larger N extends it
        size = study.user_attrs.get("design_size", 0)
        for point in shared_design[size:]:
            study.enqueue_trial(point, user_attrs={"design": True})
        study.set_user_attr("design_size", max(size, len(shared_design)))
    return study


def reclaim_lost(study) -> int:
    """RUNNING trials of this host whose worker process is gone (killed): failed, and their settings
    enqueued again. Returns how many. Trials of other hosts are left to their own hosts' workers."""
    import optuna

    host, lost = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if (
            t.user_attrs.get("host") == host
            and isinstance(t.user_attrs.get("pid"), int)
            and not processes.pid_alive(t.user_attrs["pid"])
        ):
            study._storage.set_trial_user_attr(t._trial_id, "lost", f"worker pid {t.user_attrs['pid']} died")
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "design": bool(t.user_attrs.get("design"))})
            lost += 1
    return lost


def counted(t) -> bool:
    """A trial that is a result: completed, or a cell that failed on its own (a diverged head)."""
    import optuna

    return t.state == optuna.trial.TrialState.COMPLETE or (
        t.state == optuna.trial.TrialState.FAIL and bool(t.user_attrs.get("cell_failed"))
    )


def _taken(study, before: int | None = None) -> int:
    import optuna

    running = optuna.trial.TrialState.RUNNING
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if (counted(t) or t.state == running) and (before is None or t.number < before)
    )


def work(study, params: list[Param], n: int, objective) -> int:
    """Run trials of ``study`` until N are counted or running; returns how many this worker ran.
    ``objective(params) -> (value | None, failed_reason | None)``. Ctrl-C fails the trial and enqueues
    its settings again, so a rerun resumes with the same points."""
    import optuna

    ran = 0
    while True:
        reclaim_lost(study)
        if _taken(study) >= n:
            return ran
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if _taken(study, before=trial.number) >= n:  # another worker took the last slot meanwhile
            trial.set_user_attr("surplus", True)
            if trial.user_attrs.get("design"):
                study.enqueue_trial(trial.params, user_attrs={"design": True})
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return ran
        values = {p.name: p.suggest(trial) for p in params}
        try:
            value, failed = objective(values)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            study.enqueue_trial(trial.params, user_attrs={"design": bool(trial.user_attrs.get("design"))})
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        ran += 1
        if failed is not None:
            trial.set_user_attr("cell_failed", failed)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)


@dataclass
class HeadTuning:
    """What one head's study found: its chosen settings and how much the trials' values spread."""

    head: str
    n: int
    best_params: dict
    best: float
    median: float
    worst: float
    failed: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarise(study, head: str, higher_is_better: bool) -> HeadTuning | None:
    import optuna

    trials = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    values = sorted((t.value for t in done), reverse=higher_is_better)  # best first
    best = min(done, key=lambda t: (-t.value if higher_is_better else t.value, t.number))
    return HeadTuning(
        head, len(trials), dict(best.params), values[0], statistics.median(values), values[-1], len(trials) - len(done)
    )
