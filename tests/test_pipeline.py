"""The whole loop on the synthetic suite: run, result files, leaderboard, regression check, CLI."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_outcomes_reproduce_metrics, small_config

import heads
from bench.cli import main
from bench.core.records import SCHEMA_VERSION
from bench.report import leaderboard, regression, results
from bench.run.config import ConfigError, resolve
from bench.run.train import TrainingDiverged, train_head

REPO = Path(__file__).resolve().parent.parent


def run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def metrics_of(out: Path) -> dict:
    return {r.head.name: r.metrics for r in results.load_all(out)}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    cfg = small_config(tmp)
    assert run("--config", cfg, "--out", tmp / "a") == 0
    return tmp, cfg


def test_same_seed_gives_identical_metrics(small_run):
    tmp, cfg = small_run
    assert run("--config", cfg, "--out", tmp / "b") == 0
    a, b = metrics_of(tmp / "a"), metrics_of(tmp / "b")
    assert set(a) == {"oracle", *heads.list_heads()}
    assert a == b  # bit-identical on the same CPU


def test_a_different_seed_changes_trained_heads_only(small_run, tmp_path):
    tmp, cfg = small_run
    assert run("--config", cfg, "--out", tmp_path, "--seed", 1, "--heads", "cosine,clip_frozen") == 0
    a, c = metrics_of(tmp / "a"), metrics_of(tmp_path)
    assert a["cosine"] != c["cosine"]
    assert a["clip_frozen"] == c["clip_frozen"] and a["oracle"] == c["oracle"]  # same world and test set


def test_result_file_is_self_describing_and_round_trips(small_run):
    tmp, _ = small_run
    path = results.run_path(tmp / "a", "synthetic", "kme_rbf")
    record = results.read(path)
    assert record.schema_version == SCHEMA_VERSION and record.status == "ok"
    for key in (
        "package_version",
        "git_commit",
        "git_dirty",
        "created_utc",
        "config",
        "seed",
        "metrics",
        "timing",
        "memory",
        "device",
        "libraries",
    ):
        assert key in json.loads(path.read_text()), key
    assert dataclasses.asdict(record.head) == {
        "name": "kme_rbf",
        "version": 2,
        "kind": "head",
        "trainable": True,
        "description": heads.get_head("kme_rbf").description,
        "options": {
            "sigma": 0.07**0.5,
            "max_inverse_sigma2": 100.0,
            "learn_sigma": True,
            "points_used": None,
            "memory_budget_mb": 256.0,
            "kernel": "auto",
            "out_dim": 4,
        },
    }  # the synthetic suite's head_defaults
    assert record.config.resolved["head_options"] == record.head.options  # defaults included
    identity = record.identity
    assert {"heads/kme_rbf.py", "heads/pointsets.py", "suites/synthetic.py", "bench/run/train.py"} <= set(
        identity["code"]["files"]
    )
    assert "heads/cosine.py" not in identity["code"]["files"]  # another head's code is not this cell's
    assert identity["libraries"]["torch"] == torch.__version__ and identity["device_type"] == "cpu"
    assert record.suite.name == "synthetic" and record.suite.test_set["test_pairs"] == 150
    assert record.config.resolved["train"]["steps"] == 20 and len(record.config.hash) == 16
    assert record.timing["train_seconds"] > 0 and record.memory["peak_rss_mb"] > 0
    assert {"torch", "open_clip_torch", "numpy"} <= set(record.libraries)
    assert all(math.isfinite(v) for v in record.metrics.values())
    results.write(tmp / "copy", record)
    assert results.read(results.run_path(tmp / "copy", "synthetic", "kme_rbf")) == record
    # trained weights are saved, loadable and give the same head
    from safetensors.torch import load_file

    state = load_file(str(results.weights_path(tmp / "a", "synthetic", "kme_rbf")))
    head = heads.get_head("kme_rbf")(8, 8, **record.head.options)  # posterior points: one per topic
    initial = head.image_encoder.map.weight.clone()
    head.load_state_dict(state)
    assert not torch.equal(head.image_encoder.map.weight, initial)  # it was trained


def test_outcomes_reproduce_every_metric_and_give_intervals_and_ties(small_run, capsys):
    tmp, cfg = small_run
    rows = 1 + len(heads.list_heads())  # the oracle and every head
    assert assert_outcomes_reproduce_metrics(tmp / "a") == rows * 10  # x the 10 metrics with a per-item form
    board = (tmp / "a" / "leaderboard.md").read_text()
    assert "± " in board and "Δ main vs cosine" in board and "not significantly" in board
    header = (tmp / "a" / "leaderboard.csv").read_text().splitlines()[0]
    assert "ci95_low:infonce_excess" in header and "ci95_low:pmi_pearson" not in header
    rff = results.read(results.run_path(tmp / "a", "synthetic", "kme_rff")).diagnostics
    assert rff["log_error_median"] > 0 and rff["inverse_sigma2"] > 0
    assert results.read(results.run_path(tmp / "a", "synthetic", "cosine")).diagnostics is None
    assert "diagnostics" not in json.loads(results.run_path(tmp / "a", "synthetic", "cosine").read_text())


def test_compare_prints_paired_differences_with_holm_and_refuses_bad_input(small_run, capsys):
    tmp, cfg = small_run
    assert (
        run(
            "compare",
            "--suite",
            "synthetic",
            "--heads",
            "kme_rbf,cosine,kme_rff",
            "--out",
            tmp / "a",
            "--resamples",
            2000,
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("infonce_excess")]
    assert len(rows) == 2 and "Holm" in out and all(("tied" in r) or ("better" in r) for r in rows)
    for bad, phrase in (
        (["--heads", "kme_rbf"], "at least two"),
        (["--heads", "kme_rbf,nope"], "no result for nope"),
        (["--suite", "retrieval", "--heads", "a,b"], "no results of suite"),
    ):
        args = ["--suite", "synthetic", "--heads", "kme_rbf,cosine", "--out", tmp / "a", *bad]
        assert run("compare", *args) == 2
        assert phrase in capsys.readouterr().err


def test_an_outcome_file_that_is_not_the_results_own_is_never_used(small_run, tmp_path, capsys):
    tmp, cfg = small_run
    out = tmp_path / "o"
    shutil.copytree(tmp / "a", out)
    npz = results.outcomes_path(out, "synthetic", "cosine")
    shutil.copy(results.outcomes_path(out, "synthetic", "kme_rbf"), npz)  # another head's outcomes in its place
    with pytest.raises(results.ResultFileError, match="checksum mismatch"):
        results.read_outcomes(out, results.read(results.run_path(out, "synthetic", "cosine")))
    assert run("--config", cfg, "--out", out, "--heads", "cosine") == 0
    assert "cosine: reused" not in capsys.readouterr().out  # recomputed, with its own outcomes
    results.read_outcomes(out, results.read(results.run_path(out, "synthetic", "cosine")))


def test_rerun_reuses_finished_cells_and_force_recomputes(small_run, capsys):
    tmp, cfg = small_run
    out = tmp / "reuse"
    shutil.copytree(tmp / "a", out)
    before = results.read(results.run_path(out, "synthetic", "cosine")).created_utc
    assert run("--config", cfg, "--out", out, "--heads", "cosine") == 0
    assert "cosine: reused" in capsys.readouterr().out
    assert results.read(results.run_path(out, "synthetic", "cosine")).created_utc == before
    assert run("--config", cfg, "--out", out, "--heads", "cosine", "--force") == 0
    assert "reused" not in capsys.readouterr().out


def fixture_record(
    head, suite_version=1, protocol="p1", value=0.5, status="ok", kind="head", created="2026-01-01T00:00:00+00:00"
):
    return {
        "schema_version": SCHEMA_VERSION,
        "package_version": "0",
        "git_commit": "abc",
        "git_dirty": False,
        "created_utc": created,
        "status": status,
        "error": None if status == "ok" else "loss is nan at step 3",
        "suite": {
            "name": "toy",
            "version": suite_version,
            "main_metric": "acc",
            "metric_directions": [["acc", "higher"], ["loss", "lower"]],
            "headline_metrics": ["acc"],
            "test_set": {},
        },
        "head": {"name": head, "version": 1, "kind": kind, "trainable": True, "description": "", "options": {}},
        "config": {"resolved": {}, "hash": f"h-{head}", "protocol_hash": protocol},
        "seed": 0,
        "metrics": {} if status != "ok" else {"acc": value, "loss": 1 - value},
        "timing": {},
        "memory": {},
        "device": "cpu",
        "libraries": {},
    }


def test_leaderboard_from_fixture_files_marks_best_and_never_mixes_versions(tmp_path):
    recs = [
        fixture_record("good", value=0.9),
        fixture_record("bad", value=0.4),
        fixture_record("ceiling", value=1.0, kind="reference"),
        fixture_record("broken", status="failed"),
        fixture_record("old", suite_version=0, value=0.99, created="2025-01-01T00:00:00+00:00"),
        fixture_record("other_protocol", protocol="p0", value=0.95, created="2025-06-01T00:00:00+00:00"),
    ]
    for r in recs:
        results.write(tmp_path, r)
    legacy = fixture_record("legacy_schema") | {"schema_version": SCHEMA_VERSION + 99}
    (tmp_path / "runs" / "toy" / "legacy_schema.json").write_text(json.dumps(legacy))
    warnings = []
    md = leaderboard.build(tmp_path, warn=warnings.append)
    table = md.split("## toy")[1]
    assert "**0.9000**" in table and "**0.6000**" not in table and "**0.1000**" in table  # acc up, loss down
    assert "| ceiling" in table and "**1.0000**" not in table  # reference rows are not contestants
    assert "failed" in table and "loss is nan" in md
    for excluded in ("| old", "| other_protocol", "legacy_schema |"):
        assert excluded not in table
    assert "left out old, other_protocol" in md
    assert any("schema_version" in w for w in warnings)
    csv = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("suite,") and len(csv) == 1 + 4
    assert (tmp_path / "leaderboard-toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob("*.tmp"))


def test_leaderboard_follows_the_recorded_layout_in_natural_metric_order(tmp_path):
    """Retrieval in the shape papers use, a summary of the main metric per dataset, short labels with a
    legend, columns of datasets not in the run dropped, and the CSV in the suite's order (@1, @5, @10)."""
    metrics = ["a/recall@1", "a/recall@5", "a/recall@10", "a/rsum", "b/rsum"]
    layout = {
        "summary": ["a/rsum", "b/rsum"],
        "tables": [
            {
                "title": "dataset a",
                "columns": [["R@1", "a/recall@1"], ["R@5", "a/recall@5"], ["R@10", "a/recall@10"], ["RSUM", "a/rsum"]],
                "legend": "R@k: recall at k.",
            },
            {"title": "dataset c", "columns": [["RSUM", "c/rsum"]], "legend": "never shown"},
        ],
    }
    for head, v in (("h1", 0.2), ("h2", 0.3)):
        r = fixture_record(head, value=v)
        r["suite"] |= {"main_metric": "a/rsum", "metric_directions": [[m, "higher"] for m in metrics], "report": layout}
        r["metrics"] = {m: v + i for i, m in enumerate(metrics) if m != "b/rsum"}
        results.write(tmp_path, r)
    md = leaderboard.build(tmp_path)
    summary = md.split("## Summary")[1].split("## toy")[0]
    assert "| a " in summary.replace("↑", " ") and "b/rsum" not in summary and "| b " not in summary  # b: no values
    body = md.split("## toy")[1]
    assert "### dataset a" in body and "R@10 ↑" in body and "R@k: recall at k." in body
    assert "dataset c" not in body and "never shown" not in body
    header = (tmp_path / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("metric:")] == [f"metric:{m}" for m in metrics if m != "b/rsum"]
    assert all(len(line) <= 100 for line in body.split("Protocol")[0].splitlines())


@pytest.mark.slow  # two full default runs (~1 min); the fast small-config test below covers the same logic
def test_regression_check_passes_on_committed_baseline_and_fails_when_raised(tmp_path, capsys):
    committed = REPO / "results" / "baselines" / "synthetic.json"
    out = tmp_path / "out"
    assert run("--out", out, "--check", committed) == 0
    assert "regression check passed" in capsys.readouterr().out

    raised = json.loads(committed.read_text())
    raised["scores"]["kme_rbf"]["pmi_pearson"] += 0.1  # higher is better: now a drop
    raised["scores"]["cosine"]["infonce_excess"] -= 0.2  # lower is better: now a rise
    raised_path = tmp_path / "raised.json"
    raised_path.write_text(json.dumps(raised))
    assert run("--out", out, "--check", raised_path, "--check-rule", "exact") == 1
    text = capsys.readouterr().out
    assert "REGRESSION (exact rule): 2 metric(s)" in text and "pmi_pearson" in text and "infonce_excess" in text


def test_interval_rule_fails_a_broken_head_passes_an_identical_one_and_refuses_altered_outcomes(
    tmp_path, capsys, monkeypatch
):
    from heads.cosine import CosineHead

    # Trained long enough for cosine to beat chance (the shared small config's 20 steps do not).
    cfg = small_config(tmp_path, train={"steps": 300, "batch_size": 64, "warmup_steps": 10})
    base = tmp_path / "base.json"
    assert run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine,kme_rbf", "--update-baseline", base) == 0
    entries = json.loads(base.read_text())["outcomes"]
    assert set(entries) == {"cosine", "kme_rbf", "oracle"} and (tmp_path / entries["cosine"]["file"]).is_file()
    assert run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine,kme_rbf", "--check", base) == 0
    original = CosineHead.score
    monkeypatch.setattr(CosineHead, "score", lambda self, a, b: 0 * original(self, a, b))  # scores nothing
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine", "--check", base) == 1
    text = capsys.readouterr().out
    assert "REGRESSION (interval rule)" in text and "infonce_excess" in text and "95% interval of change" in text
    monkeypatch.setattr(CosineHead, "score", original)
    npz = tmp_path / entries["kme_rbf"]["file"]
    npz.write_bytes(npz.read_bytes()[:-10])
    assert run("--config", cfg, "--out", tmp_path / "o", "--heads", "kme_rbf", "--check", base) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_update_baseline_then_check_with_a_small_config(small_run, tmp_path, capsys):
    tmp, cfg = small_run
    base = tmp_path / "base.json"
    assert run("--config", cfg, "--out", tmp / "a", "--update-baseline", base) == 0
    saved = json.loads(base.read_text())
    assert saved["tolerances"]["pmi_rmse"] == regression.METRIC_TOLERANCES["pmi_rmse"]
    assert run("--config", cfg, "--out", tmp / "a", "--check", base) == 0
    raised = json.loads(base.read_text())
    raised["scores"]["kme_rbf"]["pmi_pearson"] += 0.1  # higher is better: now a drop
    raised["scores"]["cosine"]["infonce_excess"] -= 0.2  # lower is better: now a rise
    raised["scores"]["kme_rff"]["pmi_pearson"] -= 0.5  # an improvement beyond the tolerance is no regression
    (tmp_path / "raised.json").write_text(json.dumps(raised))
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp / "a", "--check", tmp_path / "raised.json", "--check-rule", "exact") == 1
    text = capsys.readouterr().out
    assert "REGRESSION (exact rule): 2 metric(s)" in text and "pmi_pearson" in text and "infonce_excess" in text
    # The interval rule judges metrics with per-query outcomes by them (unchanged here: no regression there);
    # pmi_pearson has none, so it falls back to the exact rule and still fails.
    assert run("--config", cfg, "--out", tmp / "a", "--check", tmp_path / "raised.json") == 1
    text = capsys.readouterr().out
    assert "REGRESSION (interval rule): 1 metric(s)" in text and "pmi_pearson" in text
    # A baseline made under another protocol is refused with a reason, not compared.
    assert run("--config", cfg, "--out", tmp_path / "o", "--seed", 3, "--heads", "cosine", "--check", base) == 2


HEAD_FILE = """
import torch
from heads import SimilarityHead, register_head

@register_head("user_dot")
class UserDot(SimilarityHead):
    version = 1
    description = "a user's head loaded with --head-module"

    def __init__(self, image_dim, text_dim, scale: float = 10.0):
        super().__init__(image_dim, text_dim)
        self.options = {"scale": scale}
        self.map = torch.nn.Linear(image_dim, text_dim, bias=False)

    def encode_image(self, points, mask=None):
        return self.map(points[:, -1])

    def encode_text(self, points, mask=None):
        return points[:, -1]

    def score(self, a, b):
        unit = torch.nn.functional.normalize
        return unit(a, dim=-1) @ unit(b, dim=-1).T * self.options["scale"]
"""


def test_head_from_head_module_appears_in_the_leaderboard(small_run, tmp_path):
    _, cfg = small_run
    path = tmp_path / "my_head.py"
    path.write_text(HEAD_FILE)
    try:
        assert run("--config", cfg, "--out", tmp_path / "o", "--head-module", path, "--heads", "user_dot,cosine") == 0
        assert "| user_dot" in (tmp_path / "o" / "leaderboard.md").read_text()
    finally:
        heads.HEADS.unregister("user_dot")


def test_a_head_returning_nan_fails_alone(small_run, tmp_path, capsys):
    _, cfg = small_run

    @heads.register_head("nan_head")
    class NanHead(heads.get_head("clip_frozen")):
        description = "returns NaN"

        def score(self, a, b):
            return super().score(a, b) * float("nan")

    try:
        assert run("--config", cfg, "--out", tmp_path, "--heads", "nan_head,cosine") == 1
        assert results.read(results.run_path(tmp_path, "synthetic", "nan_head")).status == "failed"
        assert results.read(results.run_path(tmp_path, "synthetic", "cosine")).status == "ok"
        assert "failed" in (tmp_path / "leaderboard.md").read_text()
        assert "NaN" in capsys.readouterr().out
    finally:
        heads.HEADS.unregister("nan_head")


def test_nan_loss_names_the_head_and_step():
    from suites import PointSets

    head = heads.get_head("cosine")(4, 4)
    data = PointSets(torch.full((8, 2, 4), float("nan")), torch.randn(8, 2, 4))
    cfg = resolve({"train": {"steps": 3, "batch_size": 4}})["train"]
    with pytest.raises(TrainingDiverged, match="'cosine'.*step 0"):
        train_head(head, data, cfg, 0, torch.device("cpu"), progress=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--heads", "kme_rfb"], "'kme_rbf'"),
        (["--suite", "synthetc"], "Did you mean: 'synthetic'"),
        (["--head-module", "no/such/file.py"], "no such file"),
    ],
)
def test_bad_names_fail_fast_with_suggestions(args, message, tmp_path, capsys):
    assert run(*args, "--out", tmp_path) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ({"train": {"stpes": 3}}, "Did you mean: 'steps'"),
        ({"heads": {"kme_rbf": {"sigmaa": 0.3}}}, "Did you mean: 'sigma'"),
        ({"suites": {"synthetic": {"topic": 3}}}, "Did you mean: 'topics'"),
        ({"train": {"steps": "many"}}, "must be of type int"),
        ({"heads": {"kme_rff": {"features": "gaussian"}}}, "'positive' or 'fourier'"),
    ],
)
def test_bad_config_fails_before_any_work(content, message, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(content))
    assert run("--config", cfg, "--out", tmp_path / "o") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_head_module_that_raises_is_named():
    bad = Path(__file__).parent / "_broken_head_module.py"
    bad.write_text("raise RuntimeError('boom')\n")
    try:
        from bench.cli import UsageError, import_head_module

        with pytest.raises(UsageError, match="_broken_head_module.py.*RuntimeError: boom"):
            import_head_module(str(bad))
    finally:
        bad.unlink()


def test_listing(capsys):
    assert run("--list-heads", "--list-suites") == 0
    out = capsys.readouterr().out
    assert "kme_rff" in out and "synthetic" in out and "infonce_excess" in out


def test_config_rejects_unknown_top_level_key():
    with pytest.raises(ConfigError, match="Did you mean: 'train'"):
        resolve({"trian": {}})


def test_the_readme_example_head_runs_through_head_module(small_run, tmp_path):
    _, cfg = small_run
    try:
        assert (
            run(
                "--config",
                cfg,
                "--out",
                tmp_path,
                "--head-module",
                REPO / "examples" / "my_head.py",
                "--heads",
                "my_bilinear",
            )
            == 0
        )
        assert results.read(results.run_path(tmp_path, "synthetic", "my_bilinear")).status == "ok"
    finally:
        heads.HEADS.unregister("my_bilinear")


def test_suite_all_runs_what_has_data_and_skips_the_rest(small_run, tmp_path, capsys):
    _, cfg = small_run
    empty = tmp_path / "data"
    empty.mkdir()
    assert (
        run("--suite", "all", "--config", cfg, "--data-root", empty, "--out", tmp_path / "o", "--heads", "cosine") == 0
    )
    err = capsys.readouterr().err
    assert "[retrieval] skipped" in err and "[classification] skipped" in err
    for line in err.splitlines():  # whole sentences: no message is cut before its end
        if "skipped" in line:
            assert line.rstrip().endswith("."), line
    assert results.read(results.run_path(tmp_path / "o", "synthetic", "cosine")).status == "ok"
    assert list(empty.iterdir()) == []
    assert run("--suite", "all", "--check", "x.json", "--out", tmp_path / "o") == 2


def test_nothing_to_compute_touches_no_data(small_run, capsys, monkeypatch):
    """When every cell is reused the suite's data is not built (for real suites: no backbone, no cache
    read), and the reference rows of the earlier run come along for the leaderboard and the check."""
    from suites.synthetic import SyntheticSuite

    tmp, cfg = small_run
    out = tmp / "nothing"
    shutil.copytree(tmp / "a", out)
    oracle = results.read(results.run_path(out, "synthetic", "oracle"))
    monkeypatch.setattr(SyntheticSuite, "build", lambda self, seed: pytest.fail("data was built"))
    assert run("--config", cfg, "--out", out, "--heads", "cosine,kme_rbf") == 0
    printed = capsys.readouterr().out
    assert "nothing to compute" in printed and "| oracle" in printed
    assert results.read(results.run_path(out, "synthetic", "oracle")) == oracle
    # A missing reference row means the data must be built again to make it.
    results.run_path(out, "synthetic", "oracle").unlink()
    monkeypatch.undo()
    assert run("--config", cfg, "--out", out, "--heads", "cosine") == 0
    assert "nothing to compute" not in capsys.readouterr().out and results.run_path(out, "synthetic", "oracle").exists()


def test_list_heads_prints_every_option_with_its_default(capsys):
    import inspect

    assert run("--list-heads") == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    for name in heads.list_heads():
        block = out.split(f"\n{name} (v")[1].split("\n\n")[0]
        params = [
            p
            for p in inspect.signature(heads.get_head(name).__init__).parameters
            if p not in ("self", "image_dim", "text_dim")
        ]
        assert all(f"{p}=" in block for p in params), (name, block)
    assert "num_features=1024" in out and "kernel=auto" in out


def test_repeats_vary_seed_world_and_features_and_are_cells_of_their_own(small_run, tmp_path, capsys):
    tmp, cfg = small_run
    out = tmp_path / "rep"
    assert run("--config", cfg, "--out", out, "--repeats", 2, "--heads", "cosine,kme_rff") == 0
    first = {h: results.read(results.run_path(out, "synthetic", h)) for h in ("cosine", "kme_rff", "oracle")}
    second = {h: results.read(results.run_path(out, "synthetic", h, 1)) for h in ("cosine", "kme_rff", "oracle")}
    assert first["cosine"].metrics == metrics_of(tmp / "a")["cosine"]  # repeat 0 is the run without repeats
    assert (first["cosine"].seed, second["cosine"].seed) == (0, 1) and second["cosine"].repeat == 1
    assert second["kme_rff"].head.options["seed"] == first["kme_rff"].head.options["seed"] + 1
    assert first["oracle"].metrics != second["oracle"].metrics  # a new world, so a new ceiling
    assert first["cosine"].config.protocol_hash == second["cosine"].config.protocol_hash
    board = (out / "leaderboard.md").read_text()
    assert "| n " in board and "sd over repeats" in board
    cosine_row = next(line for line in board.splitlines() if line.startswith("| cosine"))
    mean = (first["cosine"].metrics["infonce_excess"] + second["cosine"].metrics["infonce_excess"]) / 2
    assert f"{mean:.4f}" in cosine_row and "| 2 " in cosine_row
    capsys.readouterr()
    assert run("--config", cfg, "--out", out, "--repeats", 2, "--heads", "cosine,kme_rff") == 0
    assert capsys.readouterr().out.count(": reused") == 4  # two heads x two repeats, each its own cell
    assert run("--config", cfg, "--out", out, "--repeats", 2, "--check", REPO / "results/baselines/synthetic.json") == 2
    assert "--repeats 1" in capsys.readouterr().err


def test_a_rebuilt_board_reads_stored_intervals_keyed_by_outcomes_and_code(small_run, monkeypatch):
    """The board's bootstrap is stored under OUT/.verdicts by the outcome files' checksums, the resamples and
    the statistics' code: a rebuild computes nothing and gives the same board; other code is a new key."""
    import shutil as sh

    from bench.eval import uncertainty
    from bench.report import verdicts

    tmp, _ = small_run
    out = tmp / "memo"
    sh.copytree(tmp / "a", out)
    first = leaderboard.build(out, resamples=500)
    assert list((out / ".verdicts").glob("*.json"))

    def refuse(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(uncertainty, "bootstrap", refuse)
    monkeypatch.setattr(uncertainty, "paired", refuse)
    assert leaderboard.build(out, resamples=500) == first
    with pytest.raises(AssertionError, match="recomputed"):
        leaderboard.build(out, resamples=600)  # other resamples: another key
    monkeypatch.setattr(verdicts.Memo, "code", staticmethod(lambda: "other code"))
    with pytest.raises(AssertionError, match="recomputed"):
        leaderboard.build(out, resamples=500)
