"""Run one suite for a list of heads: build data, train each head, score it, write results.

Everything a cell depends on is validated before the first head trains, so a typo in the last
head's options does not cost the time of the first ones. A head that fails (NaN loss, a bad
score matrix) is recorded as failed and the others still run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import heads as head_registry
import suites as suite_registry
from bench import SCHEMA_VERSION, atomic, config, distributed, provenance, results
from bench.scoring import ScoreError
from bench.train import TrainingDiverged, train_head


@dataclass
class Cell:
    head: str
    options: dict
    hash: str


@dataclass
class RunSummary:
    suite: str
    records: list = field(default_factory=list)
    reused: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def plan(suite_name: str, head_names: list[str], cfg: dict):
    """Resolve the suite, its parameters and every head's options; raises before any work."""
    suite_cls = suite_registry.get_suite(suite_name)
    params = config.merge_checked(suite_cls.default_params(), cfg["suites"].get(suite_name) or {}, f"suites.{suite_name}")
    for name in cfg["suites"]:
        suite_registry.get_suite(name)  # unknown suite names in the config fail too
    for name in cfg["heads"]:
        head_registry.get_head(name)
    hashed = {k: v for k, v in params.items() if k not in suite_cls.non_protocol_params}
    protocol = {"suite": suite_name, "suite_version": suite_cls.version, "suite_params": hashed,
                "train": cfg["train"], "seed": cfg["seed"]}
    cells = []
    for name in head_names:
        cls = head_registry.get_head(name)
        options = config.head_options(cls, cfg["heads"].get(name) or {}, f"heads.{name}")
        try:  # values are checked by the constructor: build once on tiny dims, before any real work
            cls(4, 4, **options)
        except (ValueError, TypeError) as exc:
            raise config.ConfigError(f"heads.{name}: {exc}") from None
        cell_cfg = {**protocol, "head": name, "head_version": cls.version, "head_options": options}
        cells.append(Cell(name, options, config.config_hash(cell_cfg)))
    return suite_cls, params, protocol, cells


def _record(suite_cls, data, protocol, cell_hash, head_meta: dict, metrics: dict, status: str, error: str | None,
            timings: dict, device, cfg: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        **provenance.code_version(),
        "created_utc": provenance.utc_now(),
        "status": status,
        "error": error,
        "suite": {"name": suite_cls.name, "version": suite_cls.version, "main_metric": suite_cls.main_metric,
                  "metric_directions": [[m, "higher" if up else "lower"] for m, up in suite_cls.metrics.items()],
                  "headline_metrics": list(suite_cls.headline_metrics), "test_set": data.identity},
        "head": head_meta,
        "config": {"resolved": {**protocol, "head_options": head_meta.get("options", {})},
                   "hash": cell_hash, "protocol_hash": config.config_hash(protocol)},
        "seed": cfg["seed"],
        "metrics": metrics,
        "timing": timings,
        "memory": provenance.peak_memory_mb(device),
        "device": provenance.device_description(device),
        "libraries": provenance.library_versions(),
    }


def _reusable(out_dir: Path, suite: str, cell: Cell) -> dict | None:
    path = results.run_path(out_dir, suite, cell.head)
    if not path.exists():
        return None
    try:
        record = results.read(path)
    except results.ResultFileError:
        return None
    ok = record.get("status") == "ok" and record.get("config", {}).get("hash") == cell.hash
    return record if ok and record["schema_version"] == SCHEMA_VERSION else None


def _reusable_references(out_dir: Path, suite: str, protocol_hash: str) -> list[dict] | None:
    """The reference rows of an earlier run of this exact protocol, or None if there may be others to make."""
    refs = []
    for path in sorted(results.suite_dir(out_dir, suite).glob("*.json")):
        try:
            record = results.read(path)
        except results.ResultFileError:
            return None
        if record.get("head", {}).get("kind") == "reference":
            if record.get("config", {}).get("protocol_hash") != protocol_hash or record["schema_version"] != SCHEMA_VERSION:
                return None
            refs.append(record)
    return refs


def run_suite(suite_name: str, head_names: list[str], cfg: dict, out_dir: Path, device: torch.device,
              force: bool = False, progress: bool = True, log=print) -> RunSummary:
    out_dir = Path(out_dir)
    is_main = distributed.is_main()
    if not is_main:
        log = lambda *a, **k: None  # noqa: E731 (one voice under torchrun)
    suite_cls, params, protocol, cells = plan(suite_name, head_names, cfg)
    if is_main and out_dir.exists():
        for stale in atomic.sweep_stale(out_dir):
            log(f"removed {stale} (left by an interrupted write)")
    suite = suite_cls(params)
    suite.device = device
    summary = RunSummary(suite_name)

    todo = []
    for cell in cells:
        previous = None if force else _reusable(out_dir, suite_name, cell)
        if previous is None:
            todo.append(cell)
            continue
        log(f"[{suite_name}] {cell.head}: reused {results.run_path(out_dir, suite_name, cell.head)} (same config hash {cell.hash}); --force recomputes")
        summary.records.append(previous)
        summary.reused.append(cell.head)

    distributed.barrier()  # every rank has decided what to reuse before rank 0 writes anything
    if not todo:
        references = _reusable_references(out_dir, suite_name, config.config_hash(protocol))
        makes_references = suite_cls.references is not suite_registry.Suite.references
        if references is not None and (references or not makes_references):  # nothing to compute: no data, backbone or cache is touched
            log(f"[{suite_name}] every cell reused; nothing to compute")
            summary.records.extend(references)
            return summary
    t0 = time.perf_counter()
    data = suite.build(cfg["seed"])
    build_seconds = time.perf_counter() - t0
    log(f"[{suite_name}] data ready in {build_seconds:.1f}s: {len(data.train)} training pairs, device {device}")

    for ref_name, ref_metrics in suite.references(data).items():
        ref_hash = config.config_hash({**protocol, "reference": ref_name})
        meta = {"name": ref_name, "version": suite_cls.version, "kind": "reference", "trainable": False,
                "description": f"{suite_name} reference row", "options": {}}
        record = _record(suite_cls, data, protocol, ref_hash, meta, ref_metrics, "ok", None,
                         {"build_seconds": build_seconds}, device, cfg)
        if is_main:
            results.write(out_dir, record)
        summary.records.append(record)

    for cell in todo:
        cls = head_registry.get_head(cell.head)
        meta = {"name": cell.head, "version": cls.version, "kind": "head", "trainable": cls.trainable,
                "description": cls.description, "options": cell.options}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timings, metrics, error = {"build_seconds": build_seconds}, {}, None
        try:
            torch.manual_seed(cfg["seed"])  # same initialisation stream for every head
            head = cls(data.image_dim, data.text_dim, **cell.options).to(device)
            stats = train_head(head, data.train, cfg["train"], cfg["seed"], device, cell.head, progress)
            timings.update(train_seconds=round(stats.seconds, 3), train_steps=stats.steps,
                           train_pairs_per_second=stats.pairs_per_second and round(stats.pairs_per_second, 1),
                           final_train_loss=stats.final_loss)
            if not is_main:  # rank 0 alone evaluates and writes; the others wait for the next cell
                distributed.barrier()
                continue
            if head.trainable:
                atomic.save_tensors(results.weights_path(out_dir, suite_name, cell.head), head.state_dict(),
                                    {"head": cell.head, "version": cls.version, "config_hash": cell.hash})
            t1 = time.perf_counter()
            metrics = suite.evaluate(head, data, device)
            timings["eval_seconds"] = round(time.perf_counter() - t1, 3)
        except (TrainingDiverged, ScoreError) as exc:
            error = str(exc)
            log(f"[{suite_name}] {cell.head}: FAILED: {error}")
        record = _record(suite_cls, data, protocol, cell.hash, meta, metrics, "failed" if error else "ok", error,
                         timings, device, cfg)
        path = results.write(out_dir, record) if is_main else None
        summary.records.append(record)
        distributed.barrier()
        if error:
            summary.failed.append(cell.head)
        else:
            value = metrics.get(suite_cls.main_metric)
            shown = "n/a (not measured in this run)" if value is None else f"{value:.4f}"
            log(f"[{suite_name}] {cell.head}: {suite_cls.main_metric}={shown} "
                f"(train {timings['train_seconds']:.1f}s, eval {timings['eval_seconds']:.1f}s) -> {path}")
    return summary
