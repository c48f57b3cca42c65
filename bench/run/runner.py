"""Run one suite for a list of heads: build data, train each head, score it, write results.

Everything a cell depends on is validated before the first head trains, so a typo in the last
head's options does not cost the time of the first ones. A head that fails (NaN loss, a bad
score matrix) is recorded as failed and the others still run.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import heads as head_registry
import suites as suite_registry
from bench.core import atomic, distributed
from bench.core.records import SCHEMA_VERSION, CellConfig, HeadInfo, ResultRecord, SuiteInfo
from bench.eval import degenerate
from bench.eval.scoring import HeadContractError, ScoreError
from bench.report import provenance, results
from bench.run import config
from bench.run.code_identity import code_identity
from bench.run.train import TrainingDiverged, Validator, train_head
from suites.base import Evaluation, SealedTestError, as_evaluation

_info = logging.getLogger("simbench").info  # the CLI configures where it goes (bench/cli/common.py)


@dataclass
class Cell:
    head: str
    options: dict  # every constructor option, defaults included
    hash: str  # of the resolved config alone (what the user asked for)
    key: str = ""  # of everything the number depends on; set once the data identity is known
    identity: dict = field(default_factory=dict)
    repeat: int = 0  # which repeat (0: the first; others vary every random choice that is not test data)


@dataclass
class RunSummary:
    suite: str
    records: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def repeat_seed(cfg: dict, repeat: int) -> int:
    return cfg["seed"] + repeat


@dataclass
class SuitePlan:
    """One suite at one repeat, resolved and checked: what ``run_planned`` executes without planning again."""

    suite_cls: type
    params: dict  # the suite's parameters for this repeat (repeat_params already shifted)
    protocol: dict  # what every cell shares: suite, version, hashed parameters, train, seed
    cells: list[Cell]
    cfg: dict
    device: torch.device | None
    repeat: int = 0
    validation_only: bool = False  # a tuning trial: the test set is sealed, the record holds validation metrics

    @property
    def name(self) -> str:
        return self.suite_cls.name

    @property
    def seed(self) -> int:
        """The seed of this repeat's random choices (initialisation, data order); cfg["seed"] is the protocol's."""
        return repeat_seed(self.cfg, self.repeat)


@dataclass
class CellContext:
    """What every cell of one planned suite shares once its data is built."""

    plan: SuitePlan
    suite: object  # the suite instance
    data: object  # SuiteData
    protocol_hash: str
    build_seconds: float
    out_dir: Path
    progress: bool
    log: Callable


def plan(
    suite_name: str,
    head_names: list[str],
    cfg: dict,
    device: torch.device | None = None,
    repeat: int = 0,
    validation_only: bool = False,
) -> SuitePlan:
    """Resolve the suite, its parameters and every head's options; raises before any work.

    The protocol is that of the first repeat, shared by all: repeat r runs with seed + r, the suite's
    ``repeat_params`` + r (the synthetic world) and a head's ``seed`` option + r (random features),
    and its cells are keyed by r besides."""
    suite_cls = suite_registry.get_suite(suite_name)
    params = config.merge_checked(
        suite_cls.default_params(), cfg["suites"].get(suite_name) or {}, f"suites.{suite_name}"
    )
    suite_cls.check_params(params, cfg["train"])
    for name in cfg["suites"]:
        suite_registry.get_suite(name)  # unknown suite names in the config fail too
    for name in cfg["heads"]:
        if name != config.EVERY_HEAD:
            head_registry.get_head(name)
    chosen = {n: head_registry.get_head(n) for n in head_names}
    _check_encoder(suite_cls, params, chosen, cfg["train"])
    shared = config.shared_head_options(cfg["heads"], chosen, suite_cls.head_defaults)
    hashed = {k: v for k, v in params.items() if k not in suite_cls.non_protocol_params}
    protocol = {
        "suite": suite_name,
        "suite_version": suite_cls.version,
        "suite_params": hashed,
        "train": cfg["train"],
        "seed": cfg["seed"],
        **({"selection": "validation only"} if validation_only else {}),
    }
    if validation_only and suite_cls.validation is None:
        raise config.ConfigError(f"suite {suite_name!r} has no validation data, so it cannot be tuned.")
    params = {**params, **{k: params[k] + repeat for k in suite_cls.repeat_params}}
    cells = []
    for name in head_names:
        cls = head_registry.get_head(name)
        options = config.head_options(cls, {**shared[name], **(cfg["heads"].get(name) or {})}, f"heads.{name}")
        if repeat and isinstance(options.get("seed"), int) and not isinstance(options["seed"], bool):
            options = {**options, "seed": options["seed"] + repeat}
        try:  # values are checked by the constructor: build once on tiny dims, before any real work
            tiny = cls(4, 4, **options)
            if device is not None:
                tiny.check_device(device)
        except (ValueError, TypeError) as exc:
            text = str(exc)
            text = text[len(name) + 1 :].lstrip() if text.startswith(f"{name}:") else text
            raise config.ConfigError(f"heads.{name}: {text}") from None
        except Exception:  # noqa: BLE001 (a head broken in another way fails alone, when it runs, and the others still run)
            pass
        cell_cfg = {
            **protocol,
            "head": name,
            "head_version": cls.version,
            "head_options": options,
            **({"repeat": repeat} if repeat else {}),
        }
        cells.append(Cell(name, options, config.config_hash(cell_cfg), repeat=repeat))
    return SuitePlan(suite_cls, params, protocol, cells, cfg, device, repeat, validation_only)


def _check_encoder(suite_cls, params: dict, chosen: dict, train: dict) -> None:
    """train.encoder trains blocks of a backbone's towers with every head: the suite needs a backbone, every
    head must train, and N must fit the towers (read from the model config, before any work)."""
    from bench.features import adapt

    spec = config.encoder_spec(train)
    if spec.frozen:
        return
    if not getattr(suite_cls, "adapts_encoder", False):
        raise config.ConfigError(
            f"train.encoder = {spec}: suite {suite_cls.name!r} has no backbone whose blocks could train (its "
            "points are generated); use train.encoder: frozen with it."
        )
    idle = [n for n, cls in chosen.items() if not cls.trainable]
    if idle:
        raise config.ConfigError(
            f"train.encoder = {spec} trains the encoder with each head, but {', '.join(idle)} trains nothing, so "
            "its encoder would have nothing to learn from; leave it out of this run (--heads) or use "
            "train.encoder: frozen."
        )
    from bench.features.backbone import BackboneSpec

    adapt.check_blocks(spec, BackboneSpec.parse(str(params["backbone"])).model, f"suites.{suite_cls.name}.backbone")


def cell_identity(suite_cls, head_cls, data_identity: dict, device: torch.device) -> dict:
    """Everything besides the config that a number depends on: code, data, float-relevant libraries, device type."""
    code = code_identity(suite_cls) if head_cls is None else code_identity(head_cls, suite_cls)
    return {
        "code": code,
        "data": data_identity,
        "libraries": provenance.numeric_library_versions(),
        "device_type": device.type,
        # torch's CPU kernels differ by instruction set (AVX-512, AVX2, none) and round differently
        **({"cpu_capability": torch.backends.cpu.get_cpu_capability()} if device.type == "cpu" else {}),
    }


def cell_key(config_hash: str, identity: dict) -> str:
    return config.config_hash(
        {
            "config": config_hash,
            "code": identity["code"]["hash"],
            "data": identity["data"],
            "libraries": identity["libraries"],
            "device_type": identity["device_type"],
        }
    )


@dataclass
class Outcome:
    """How one cell ended: what a record says beyond its identity."""

    status: str  # ok | failed | skipped
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    timings: dict = field(default_factory=dict)


def _record(ctx: CellContext, cell: Cell, data, head_meta: dict, outcome: Outcome) -> ResultRecord:
    suite_cls, device = ctx.plan.suite_cls, ctx.plan.device
    metrics, undefined = _finite_metrics(outcome.metrics)
    main, directions = suite_cls.main_metric, [[m, "higher" if up else "lower"] for m, up in suite_cls.metrics.items()]
    if ctx.plan.validation_only:  # a trial's record says what it holds: validation values, never test ones
        v = suite_cls.validation
        main, directions = (
            f"validation/{v.metric}",
            [[f"validation/{v.metric}", "higher" if v.higher_is_better else "lower"]],
        )
    return ResultRecord(
        schema_version=SCHEMA_VERSION,
        **provenance.code_version(),
        created_utc=provenance.utc_now(),
        status=outcome.status,
        error=outcome.error,
        suite=SuiteInfo(
            name=suite_cls.name,
            version=suite_cls.version,
            main_metric=main,
            metric_directions=directions,
            headline_metrics=[] if ctx.plan.validation_only else list(suite_cls.headline_metrics),
            test_set=data.identity,
            report=report_layout(suite_cls),
        ),
        head=HeadInfo(**head_meta),
        config=CellConfig(
            resolved={**ctx.plan.protocol, "head_options": head_meta.get("options", {})},
            hash=cell.hash,
            protocol_hash=ctx.protocol_hash,
            key=cell.key,
        ),
        identity=cell.identity,
        seed=repeat_seed(ctx.plan.cfg, cell.repeat),
        repeat=cell.repeat,
        metrics=metrics,
        undefined_metrics=undefined,
        timing=outcome.timings,
        memory=provenance.peak_memory_mb(device),
        device=provenance.device_description(device),
        libraries=provenance.library_versions(),
    )


def _reusable(out_dir: Path, suite: str, cell: Cell, log=lambda *a, **k: None) -> dict | None:
    """The earlier record of this cell if its key (config, code, data, libraries, device type) matches."""
    path = results.run_path(out_dir, suite, cell.head, cell.repeat)
    if not path.exists():
        return None
    try:
        record = results.read(path)
        results.check_place(path, record)
    except results.ResultFileError as exc:
        log(f"[{suite}] {cell.head}: {exc} It is recomputed now.")
        return None
    if not record.ok or record.config.key != cell.key or record.repeat != cell.repeat:
        return None
    try:  # a reused result must bring its own per-query outcomes, or intervals would come from elsewhere
        results.read_outcomes(out_dir, record)
    except results.ResultFileError as exc:
        log(f"[{suite}] {cell.head}: {exc} It is recomputed now.")
        return None
    return record


def report_layout(suite_cls) -> dict:
    """How leaderboards lay out this suite's metrics, stored in each result so boards need only files."""
    return {
        "summary": list(suite_cls.summary_metrics or (suite_cls.main_metric,)),
        "tables": [
            {"title": t.title, "columns": [list(c) for c in t.columns], "legend": t.legend}
            for t in suite_cls.report_tables
        ],
    }


def _identify(suite, suite_cls, protocol: dict, cells: list[Cell], cfg: dict, device) -> tuple[str, dict]:
    """Key every cell by config, code, data, libraries and device type; returns (protocol hash, reference cells)."""
    data_identity = suite.data_identity(cfg["seed"])  # validates the data: cheap, no backbone or features
    for cell in cells:
        cell.identity = cell_identity(suite_cls, head_registry.get_head(cell.head), data_identity, device)
        cell.key = cell_key(cell.hash, cell.identity)
    ref_identity = cell_identity(suite_cls, None, data_identity, device)
    references = {}
    for name in suite_cls.reference_names:
        repeat = cells[0].repeat if cells else 0
        ref = Cell(
            name,
            {},
            config.config_hash({**protocol, "reference": name, **({"repeat": repeat} if repeat else {})}),
            identity=ref_identity,
            repeat=repeat,
        )
        ref.key = cell_key(ref.hash, ref_identity)
        references[name] = ref
    return config.config_hash({**protocol, "data": data_identity}), references


def _reusable_references(out_dir: Path, suite: str, references: dict[str, Cell]) -> list[ResultRecord] | None:
    """The reference rows of an earlier run with these exact keys, or None if any must be made again."""
    found = []
    for _name, ref in references.items():
        record = _reusable(out_dir, suite, ref)
        if record is None or not record.head.is_reference:
            return None
        found.append(record)
    return found


def _describe_failure(exc: BaseException) -> str:
    """One line: the exception and where it was raised (the head's own file, usually)."""
    if isinstance(exc, (TrainingDiverged, ScoreError, HeadContractError)):
        return str(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _finite_metrics(metrics: dict) -> tuple[dict, list[str]]:
    """Metrics with undefined values (NaN, inf: e.g. a correlation of constant scores) as None, and their names."""
    out, undefined = {}, []
    for name, value in metrics.items():
        value = float(value)
        if math.isfinite(value):
            out[name] = value
        else:
            out[name] = None
            undefined.append(name)
    return out, undefined


def run_suite(
    suite_name: str,
    head_names: list[str],
    cfg: dict,
    out_dir: Path,
    device: torch.device,
    force: bool = False,
    progress: bool = True,
    log=_info,
    repeat: int = 0,
) -> RunSummary:
    """Plan and run one suite at one repeat (for callers that have not planned; the CLI plans once)."""
    return run_planned(plan(suite_name, head_names, cfg, device, repeat), out_dir, force, progress, log)


def run_planned(sp: SuitePlan, out_dir: Path, force: bool = False, progress: bool = True, log=_info) -> RunSummary:
    """Cells are written as they finish (a rerun resumes); reference rows only after every cell, so a
    crash never leaves references of a new protocol beside results of the old one."""
    out_dir = Path(out_dir)
    is_main = distributed.is_main()
    if not is_main:
        log = lambda *a, **k: None  # noqa: E731 (one voice under torchrun)
    suite_cls, cfg, device = sp.suite_cls, sp.cfg, sp.device
    if sp.repeat:
        log(
            f"[{sp.name}] repeat {sp.repeat}: seed {sp.seed}"
            + "".join(f", {k} {sp.params[k]}" for k in suite_cls.repeat_params)
        )
    suite = suite_cls(sp.params)
    suite.device = device
    suite.seed = sp.seed
    suite.with_test = not sp.validation_only
    suite.encoder = config.encoder_spec(cfg["train"])
    protocol_hash, references = _identify(suite, suite_cls, sp.protocol, sp.cells, cfg, device)
    if sp.validation_only:
        references = {}  # reference rows are measured on test
    if is_main and out_dir.exists():
        for stale in atomic.sweep_stale(out_dir):
            log(f"removed {stale} (left by an interrupted write)")
    summary = RunSummary(sp.name)
    todo = _reuse_what_matches(sp.cells, out_dir, sp.name, force, summary, log)
    distributed.barrier()  # every rank has decided what to reuse before rank 0 writes anything
    if not todo:
        reused_refs = None if force else _reusable_references(out_dir, sp.name, references)
        if reused_refs is not None:  # nothing to compute: no data, backbone or cache is touched
            log(f"[{sp.name}] every cell reused; nothing to compute")
            summary.records.extend(reused_refs)
            return summary
    suite.readouts = {head_registry.get_head(c.head).readout for c in todo} or {"layers"}  # extract only what is read
    t0 = time.perf_counter()
    data = suite.build(cfg["seed"], with_test=not sp.validation_only)
    ctx = CellContext(sp, suite, data, protocol_hash, time.perf_counter() - t0, out_dir, progress, log)
    log(f"[{sp.name}] data ready in {ctx.build_seconds:.1f}s: {len(data.train)} training pairs, device {device}")
    _check_batch_fits(sp.name, todo, data, cfg)
    reference_records = [] if sp.validation_only else _reference_records(ctx, references)
    for cell in todo:
        record = _run_cell(ctx, cell)
        if record is None:  # not rank 0
            continue
        summary.records.append(record)
        if record.status == "failed":
            summary.failed.append(cell.head)
    if is_main:
        for record, evaluation in reference_records:
            results.write(out_dir, record, evaluation.outcomes, evaluation.spec)
    summary.records = [record for record, _ in reference_records] + summary.records
    return summary


def _reuse_what_matches(
    cells: list[Cell], out_dir: Path, suite_name: str, force: bool, summary: RunSummary, log
) -> list[Cell]:
    """Put the results whose key matches into ``summary``; return the cells left to compute."""
    todo = []
    for cell in cells:
        previous = None if force else _reusable(out_dir, suite_name, cell, log)
        if previous is None:
            todo.append(cell)
            continue
        log(
            f"[{suite_name}] {cell.head}: reused {results.run_path(out_dir, suite_name, cell.head, cell.repeat)} "
            f"(same key {cell.key}: config, code, data, libraries and device type); --force recomputes"
        )
        summary.records.append(previous)
        summary.reused.append(cell.head)
    return todo


def _check_batch_fits(suite_name: str, todo: list[Cell], data, cfg: dict) -> None:
    if (
        any(head_registry.get_head(c.head).trainable for c in todo)
        and cfg["train"]["steps"] > 0
        and len(data.train) < cfg["train"]["batch_size"]
    ):
        raise config.ConfigError(
            f"train.batch_size={cfg['train']['batch_size']} is larger than the {len(data.train)} training pairs "
            f"of suite {suite_name!r}; lower train.batch_size (at most {len(data.train)}) or use more training data."
        )


def _reference_records(ctx: CellContext, references: dict[str, Cell]) -> list[tuple[ResultRecord, Evaluation]]:
    """The suite's reference rows (e.g. the oracle), made now and written only after every cell."""
    suite_cls = ctx.plan.suite_cls
    made = ctx.suite.references(ctx.data)
    if set(made) != set(references):
        raise TypeError(
            f"suite {suite_cls.name!r}: references() returned {sorted(made)} but the class declares "
            f"reference_names = {sorted(references)}; declare every reference row in reference_names."
        )
    records = []
    for ref_name, made_ref in made.items():
        evaluation = as_evaluation(made_ref)
        meta = {
            "name": ref_name,
            "version": suite_cls.version,
            "kind": "reference",
            "trainable": False,
            "description": f"{suite_cls.name} reference row",
            "options": {},
        }
        outcome = Outcome("ok", evaluation.metrics, timings={"build_seconds": ctx.build_seconds})
        records.append((_record(ctx, references[ref_name], ctx.data, meta, outcome), evaluation))
    return records


def _validator(suite, data, device) -> Validator | None:
    spec = type(suite).validation
    if spec is None or data.validation is None:
        return None
    return Validator(
        spec.metric, spec.higher_is_better, spec.tolerance, lambda head: suite.validate(head, data, device)
    )


def _convergence(stats, validator: Validator | None) -> tuple[list | None, dict | None]:
    """The learning curve and what it says, for the result file (None without validation)."""
    if validator is None or not stats.curve:
        return None, None
    return stats.curve, {
        "metric": f"validation/{validator.metric}",
        "higher_is_better": validator.higher_is_better,
        "tolerance": validator.tolerance,
        "last_fraction": 0.2,
        "improvement_in_last_fraction": stats.val_improvement,
        "converged": stats.converged,
        "best_step": stats.best_step,
        "steps_run": stats.steps,
        "stopped_early": stats.stopped_early,
    }


def _run_cell(ctx: CellContext, cell: Cell) -> ResultRecord | None:
    """Train, save, evaluate and record one head; anything the head raises fails this head only."""
    suite, suite_cls, cfg, device = ctx.suite, ctx.plan.suite_cls, ctx.plan.cfg, ctx.plan.device
    out_dir, log, suite_name, is_main = ctx.out_dir, ctx.log, suite_cls.name, distributed.is_main()
    cls = head_registry.get_head(cell.head)
    data = ctx.data.for_readout(cls.readout)
    meta = {
        "name": cell.head,
        "version": cls.version,
        "kind": "head",
        "trainable": cls.trainable,
        "description": cls.description,
        "options": cell.options,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings, error, diagnostics, trained_loss = {"build_seconds": ctx.build_seconds}, None, {}, {}
    curve, convergence = None, None
    skipped = suite.skip_reason(cls)
    if skipped is not None:  # nothing to train or measure: recorded, listed with its reason, not a failure
        record = _record(ctx, cell, data, meta, Outcome("skipped", error=skipped, timings=timings))
        if is_main:
            results.write(out_dir, record, {}, {})
        distributed.barrier()
        log(f"[{suite_name}] {cell.head}: skipped: {skipped}")
        return record if is_main else None
    try:
        seed = repeat_seed(cfg, cell.repeat)
        torch.manual_seed(seed)  # same initialisation stream for every head
        head = cls(data.image_dim, data.text_dim, **cell.options).to(device)
        validator = _validator(suite, data, device)
        towers = None if data.encoder is None else data.encoder.bind(device)  # a fresh copy for each head
        stats = train_head(head, data.train, cfg["train"], seed, device, cell.head, ctx.progress, validator, towers)
        curve, convergence = _convergence(stats, validator)
        loss_state = {} if stats.loss is None else {f"loss.{k}": v for k, v in stats.loss.state_dict().items()}
        if towers is not None:  # the trained blocks are saved with the head (bench/features/adapt.py)
            loss_state.update({f"encoder.{k}": v for k, v in towers.state_dict().items()})
        trained_loss = stats.loss_parameters()
        timings.update(
            train_seconds=round(stats.seconds, 3),
            train_steps=stats.steps,
            train_pairs_per_second=stats.pairs_per_second and round(stats.pairs_per_second, 1),
            final_train_loss=stats.final_loss,
            **({"validation_seconds": round(stats.eval_seconds, 3)} if stats.curve else {}),
        )
        if not is_main:  # rank 0 alone evaluates and writes; the others wait for the next cell
            distributed.barrier()
            return None
        if head.trainable:
            atomic.save_tensors(
                results.weights_path(out_dir, suite_name, cell.head, cell.repeat),
                {**head.state_dict(), **loss_state},
                {"head": cell.head, "version": cls.version, "config_key": cell.key, "loss": cfg["train"]["loss"]},
            )
        t1 = time.perf_counter()
        if ctx.plan.validation_only:  # the value of the weights kept: the best point's, else measured now
            kept = [p["val"] for p in stats.curve if p["step"] == stats.best_step]
            if not kept:
                with torch.no_grad():
                    kept = [suite.validate(head.eval(), data, device)]
            evaluation = Evaluation({f"validation/{suite_cls.validation.metric}": kept[0]})
        else:
            evaluation = as_evaluation(suite.evaluate(head, data, device))
        timings["eval_seconds"] = round(time.perf_counter() - t1, 3)
        sample = None if ctx.plan.validation_only else suite.diagnostic_points(data)
        if sample is not None:
            with torch.no_grad():
                diagnostics = head.diagnostics(sample[0].to(device), sample[1].to(device))
    except SealedTestError:
        raise  # the runner or suite read a sealed test set: a bug to show, never a head's failure
    except Exception as exc:  # noqa: BLE001 (a head's code can raise anything; it fails that head, not the run)
        error = _describe_failure(exc)
        log(f"[{suite_name}] {cell.head}: FAILED: {error}")
        evaluation = Evaluation({})
    record = _record(ctx, cell, data, meta, Outcome("failed" if error else "ok", evaluation.metrics, error, timings))
    if diagnostics:
        record.diagnostics = {k: float(v) for k, v in diagnostics.items()}
    if not error and trained_loss:
        record.trained_loss = {"name": cfg["train"]["loss"], "parameters": trained_loss}
    if evaluation.details:
        record.evaluation_details = evaluation.details
    if not error and curve:
        record.curve, record.convergence = curve, convergence
    if not error:
        record.degenerate = degenerate.check(evaluation.outcomes, evaluation.spec)
        if record.degenerate:
            log(f"[{suite_name}] {cell.head}: DEGENERATE: {record.degenerate}")
    path = results.write(out_dir, record, evaluation.outcomes, evaluation.spec) if is_main else None
    distributed.barrier()
    if not error:
        value = record.metric(suite_cls.main_metric)
        shown = "n/a (not measured in this run)" if value is None else f"{value:.4f}"
        log(
            f"[{suite_name}] {cell.head}: {suite_cls.main_metric}={shown} "
            f"(train {timings['train_seconds']:.1f}s, eval {timings['eval_seconds']:.1f}s) -> {path}"
        )
        if record.undefined_metrics:
            log(
                f"[{suite_name}] {cell.head}: undefined (NaN/inf) metrics recorded as empty: "
                f"{', '.join(record.undefined_metrics)}"
            )
    return record
