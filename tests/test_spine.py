"""The spine from the command line to the records: one plan, one place that merges configuration,
the Python API, and the subcommands' help."""

from __future__ import annotations

import copy

import pytest
from helpers import SMALL

from bench import api
from bench.cli import main
from bench.core.errors import ConfigError, UserError
from bench.report import results
from bench.run import config, runner
from bench.run.plan import Request, plan


def test_precedence_defaults_suite_yaml_head_defaults_config_file_flags(tmp_path):
    """Each layer overrides the one below it (bench/run/config.py's docstring states the order)."""
    p = plan(Request("synthetic", ["cosine", "kme_rbf"], {}, {}, tmp_path / "o"))
    cosine = next(c for c in p.suites[0].cells if c.head == "cosine")
    assert p.cfg["train"]["lr"] == config.TRAIN_DEFAULTS["lr"]  # 1: defaults
    assert p.suites[0].params["topics"] == 8  # 2: suites/synthetic.yaml
    assert cosine.options["out_dim"] == 4  # 3: the suite's head_defaults over the constructor's None

    file = {"seed": 3, "train": {"lr": 0.01}, "suites": {"synthetic": {"topics": 6}}, "heads": {"*": {"out_dim": 5}}}
    p = plan(Request("synthetic", ["cosine"], copy.deepcopy(file), {}, tmp_path / "o"))
    assert (p.cfg["seed"], p.cfg["train"]["lr"], p.suites[0].params["topics"]) == (3, 0.01, 6)  # 4: --config
    assert p.suites[0].cells[0].options["out_dim"] == 5

    p = plan(Request("synthetic", ["cosine"], copy.deepcopy(file), {"seed": 9, "repeats": 2}, tmp_path / "o"))
    assert p.cfg["seed"] == 9 and [sp.repeat for sp in p.suites] == [0, 1]  # 5: flags win
    assert p.suites[1].seed == 10 and p.suites[0].params["topics"] == 6


def test_with_flags_is_the_only_merge_of_flags_and_refuses_what_no_suite_takes():
    params = {"retrieval": {"backbone": None, "data_root": None}}
    merged = config.with_flags({"suites": {"retrieval": {"layers": 2}}}, {"backbone": "X"}, params, "retrieval")
    assert merged["suites"]["retrieval"] == {"layers": 2, "backbone": "X"}
    with pytest.raises(ConfigError, match="--backbone does not apply to suite 'synthetic'"):
        config.with_flags({}, {"backbone": "X"}, {"synthetic": {"topics": 8}}, "synthetic")
    with pytest.raises(ConfigError, match="unknown flag"):
        config.with_flags({}, {"sede": 1}, {}, "synthetic")


def test_planned_once_then_executed_without_planning_again(tmp_path, monkeypatch):
    calls = []
    original = runner.plan
    monkeypatch.setattr(runner, "plan", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    result = api.run(suite="synthetic", heads=["cosine"], config=SMALL, out=tmp_path / "o", repeats=2, resamples=0)
    assert calls == ["synthetic", "synthetic"]  # one plan per repeat, none again while running
    assert [r.head.name for r in result.records].count("cosine") == 2 and not result.failed
    assert "cosine" in result.leaderboard and (tmp_path / "o" / "leaderboard.md").is_file()


def test_the_api_refuses_bad_input_before_any_work(tmp_path):
    with pytest.raises(UserError, match="Did you mean: 'cosine'"):
        api.run(heads=["cosin"], config=SMALL, out=tmp_path / "o")
    with pytest.raises(UserError, match="unknown flag"):
        api.run(heads=["cosine"], config=SMALL, out=tmp_path / "o", sede=1)
    assert not (tmp_path / "o").exists()


def test_the_api_and_the_command_line_give_the_same_records(tmp_path):
    a = api.run(heads=["cosine"], config=SMALL, out=tmp_path / "a", resamples=0)
    cfg = tmp_path / "small.yaml"
    cfg.write_text(__import__("yaml").safe_dump(SMALL))
    assert (
        main(["--heads", "cosine", "--config", cfg, "--out", tmp_path / "b", "--no-progress", "--resamples", "0"]) == 0
    )
    b = {r.head.name: r for r in results.load_all(tmp_path / "b")}
    assert {r.head.name: r.metrics for r in a.records} == {n: r.metrics for n, r in b.items()}
    assert {r.head.name: r.config.key for r in a.records} == {n: r.config.key for n, r in b.items()}


def test_help_names_every_subcommand_with_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for command in ("run", "compare", "sweep", "data", "list"):
        assert f"    {command}" in text
    assert "examples:" in text and "run_bench.py compare --suite" in text


def test_list_subcommand_equals_the_flag(capsys):
    assert main(["list", "heads"]) == 0
    via_command = capsys.readouterr().out
    assert main(["--list-heads"]) == 0
    assert capsys.readouterr().out == via_command and "kme_rbf (v" in via_command


def test_quiet_keeps_the_board_and_drops_progress_lines(tmp_path, capsys):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(__import__("yaml").safe_dump(SMALL))
    args = ["--heads", "cosine", "--config", cfg, "--out", tmp_path / "o", "--no-progress", "--resamples", "0"]
    assert main([*args, "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "# simbench leaderboard" in quiet and "[synthetic]" not in quiet
    assert main(args) == 0
    assert "[synthetic] cosine: reused" in capsys.readouterr().out


def test_the_demo_runs_the_real_data_path_end_to_end_and_reuses_its_cells(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", out, "--no-progress", "--heads", "clip_frozen,cosine"]) == 0
    recs = {r.head.name: r for r in results.load_all(out / "run")}
    assert set(recs) == {"clip_frozen", "cosine"} and all(r.status == "ok" for r in recs.values())
    cos = recs["cosine"]
    assert cos.suite.name == "retrieval" and cos.timing["train_steps"] == cos.convergence["steps_run"] <= 60
    assert cos.curve and cos.convergence["metric"] == "validation/recall_sum"
    assert recs["cosine"].suite.test_set["datasets"]["mscoco_captions"]["images"] == 12
    assert (out / "data" / "cache").is_dir() and (out / "run" / "leaderboard.md").is_file()
    capsys.readouterr()
    assert main(["demo", "--out", out, "--no-progress", "--heads", "clip_frozen,cosine"]) == 0
    assert "every cell reused" in capsys.readouterr().out
