"""Shared helpers for the pipeline tests."""

from pathlib import Path

import yaml

SMALL = {
    "seed": 0,
    "train": {"steps": 20, "batch_size": 64, "warmup_steps": 5},
    "suites": {"synthetic": {"train_pairs": 1000, "test_pairs": 150, "validation_pairs": 150, "prompts_per_class": 3}},
    "heads": {"kme_rff": {"num_features": 256}},
}


def small_config(tmp_path: Path, **overrides) -> Path:
    cfg = {**SMALL, **overrides}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rebuild(suite_name: str, cfg_path: Path, backbone: Path, data_root: Path, out: Path, head_name: str):
    """The suite's test data (from the feature cache) and the trained head loaded from its saved
    weights, built outside the runner: for checking reported metrics by an independent route."""
    from safetensors.torch import load_file

    import heads
    import suites
    from bench.report import results
    from bench.run import config

    record = results.read(results.run_path(out, suite_name, head_name))
    user = yaml.safe_load(Path(cfg_path).read_text())
    user.setdefault("suites", {}).setdefault(suite_name, {}).update(backbone=str(backbone), data_root=str(data_root))
    cfg = config.resolve(user)
    suite_cls = suites.get_suite(suite_name)
    params = config.merge_checked(suite_cls.default_params(), cfg["suites"][suite_name], suite_name)
    data = suite_cls(params).build(cfg["seed"])
    head = heads.get_head(head_name)(data.image_dim, data.text_dim, **record.head.options)
    weights = results.weights_path(out, suite_name, head_name)
    if weights.exists():
        head.load_state_dict(load_file(str(weights)))
    head.eval()
    return record, data, head


def assert_outcomes_reproduce_metrics(out: Path, expect_specs: bool = True) -> int:
    """Every metric a result's per-query outcomes define equals the metric it reports: the intervals
    are about the numbers on the board, not about something computed alongside. Returns how many."""
    import pytest

    from bench.eval import uncertainty
    from bench.report import results

    checked = 0
    for r in results.load_all(out):
        if r.status != "ok":
            continue
        arrays = results.read_outcomes(out, r)
        assert arrays is not None or not expect_specs, f"{r.head.name} has no outcomes"
        if arrays is None:
            continue
        for metric, est in uncertainty.estimators(arrays, r.outcomes.spec).items():
            assert est.point() == pytest.approx(r.metrics[metric], abs=1e-9), (r.head.name, metric)
            checked += 1
    return checked
