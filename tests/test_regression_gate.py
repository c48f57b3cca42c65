"""The regression check's rules, pinned one by one (each was a one-line mutation no test noticed): the
interval rule respects each metric's direction, a failed head is a regression, an update keeps hand-set
tolerances, head options must match the baseline's, and the board's Δ is head minus reference."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import small_config

from bench.cli import main
from bench.report import regression, results
from heads.cosine import CosineHead

CFG = {"train": {"steps": 200, "batch_size": 64, "warmup_steps": 10}}


def run(*args) -> int:
    return main([*map(str, args), "--no-progress", "--quiet", "--resamples", "500"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A good cosine and a broken one (trained as usual, its scores negated when evaluated), each with a
    baseline of its own."""
    tmp = tmp_path_factory.mktemp("gate")
    cfg = small_config(tmp, **CFG)
    assert run("--config", cfg, "--out", tmp / "good", "--heads", "cosine", "--update-baseline", tmp / "good.json") == 0
    original = CosineHead.score
    CosineHead.score = lambda self, a, b: original(self, a, b) if self.training else -original(self, a, b)
    try:
        code = run("--config", cfg, "--out", tmp / "bad", "--heads", "cosine", "--update-baseline", tmp / "bad.json")
    finally:
        CosineHead.score = original
    assert code == 0
    return tmp, cfg


def _records(out):
    return [r for r in results.load_all(out) if r.head.name == "cosine"]


def test_the_interval_rule_flags_a_worse_lower_is_better_metric_and_not_an_improved_one(runs):
    tmp, _ = runs
    good, bad = regression.load(tmp / "good.json"), regression.load(tmp / "bad.json")
    worse, _ = regression.compare(_records(tmp / "bad"), good, "interval", tmp / "bad", tmp / "good.json", 500)
    flagged = {r.metric: r for r in worse}
    assert "infonce_excess" in flagged and flagged["infonce_excess"].direction == "lower"
    low, high = flagged["infonce_excess"].interval
    assert low > 0 and high > low  # the broken head's excess is higher: worse, across the whole interval
    assert "text_retrieval_recall@10" in flagged  # a higher-is-better metric that dropped
    better, _ = regression.compare(_records(tmp / "good"), bad, "interval", tmp / "good", tmp / "bad.json", 500)
    assert "infonce_excess" not in {r.metric for r in better}
    assert "text_retrieval_recall@10" not in {r.metric for r in better}


def test_a_failed_head_is_a_regression_not_a_pass(runs, capsys, monkeypatch):
    tmp, cfg = runs

    def broken(self, a, b):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(CosineHead, "score", broken)
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp / "f", "--heads", "cosine", "--check", tmp / "good.json") == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "missing/failed" in out and "regression check passed" not in out


def test_update_baseline_keeps_hand_set_tolerances(runs, tmp_path):
    tmp, cfg = runs
    path = tmp_path / "b.json"
    path.write_text((tmp / "good.json").read_text())
    base = json.loads(path.read_text())
    base["tolerances"]["infonce_excess"] = 0.5
    base["default_tolerance"] = 0.07
    path.write_text(json.dumps(base))
    assert run("--config", cfg, "--out", tmp / "good", "--heads", "cosine", "--update-baseline", path) == 0
    again = json.loads(path.read_text())
    assert again["tolerances"]["infonce_excess"] == 0.5 and again["default_tolerance"] == 0.07


def test_a_run_with_other_head_options_is_refused_not_passed(runs, tmp_path, capsys):
    tmp, _ = runs
    cfg = small_config(tmp_path, **CFG, heads={"cosine": {"out_dim": 2}})
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine", "--check", tmp / "good.json") == 2
    err = capsys.readouterr().err
    assert "other options than the baseline" in err and "out_dim 2" in err


def test_the_boards_delta_is_head_minus_reference(runs):
    tmp, cfg = runs
    out = tmp / "good"
    assert run("--config", cfg, "--out", out, "--heads", "cosine,kme_proto") == 0
    board = (out / "leaderboard.md").read_text()
    values = {r.head.name: r.metrics["infonce_excess"] for r in results.load_all(out) if r.head.kind == "head"}
    row = next(line for line in board.splitlines() if line.startswith("| kme_proto"))
    delta = float(re.search(r"\| ([+-]\d+\.\d+) \[", row).group(1))
    assert delta == pytest.approx(values["kme_proto"] - values["cosine"], abs=1e-4)


def test_a_misspelt_reference_head_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    assert run("--heads", "cosine", "--reference-head", "cosin", "--out", out) == 2
    err = capsys.readouterr().err
    assert "--reference-head 'cosin'" in err and "cosine" in err and not out.exists()


def test_heads_with_different_repeat_counts_are_paired_by_repeat_index(tmp_path, capsys):
    """cosine with 2 repeats and kme_proto with 1 in one folder: the board is built (it used to crash with
    "the two heads have 2 and 1 repeats") and compare pairs repeat 0 with repeat 0."""
    cfg = small_config(tmp_path)
    out = tmp_path / "o"
    assert run("--config", cfg, "--out", out, "--heads", "cosine", "--repeats", 2) == 0
    assert run("--config", cfg, "--out", out, "--heads", "kme_proto") == 0
    board = (out / "leaderboard.md").read_text()
    assert "kme_proto" in board and "cosine" in board
    capsys.readouterr()
    assert (
        main(
            ["compare", "--suite", "synthetic", "--heads", "kme_proto,cosine", "--out", str(out), "--resamples", "200"]
        )
        == 0
    )
    from bench.report import leaderboard, verdicts

    got = verdicts.compare(out, leaderboard.collapse_repeats(results.load_all(out)), ["kme_proto", "cosine"], 200)
    r0 = {r.repeat: r for r in results.load_all(out) if r.head.name == "cosine"}[0]
    k0 = next(r for r in results.load_all(out) if r.head.name == "kme_proto")
    main_row = next(x for x in got if x["metric"] == "infonce_excess")
    assert main_row["difference"] == pytest.approx(k0.metrics["infonce_excess"] - r0.metrics["infonce_excess"])


def test_compare_says_a_head_ran_under_another_protocol(tmp_path, capsys):
    cfg = small_config(tmp_path)
    out = tmp_path / "o"
    assert run("--config", cfg, "--out", out, "--heads", "cosine", "--seed", 1) == 0
    assert run("--config", cfg, "--out", out, "--heads", "kme_proto") == 0
    capsys.readouterr()
    assert main(["compare", "--suite", "synthetic", "--heads", "kme_proto,cosine", "--out", str(out)]) == 2
    err = capsys.readouterr().err  # whichever run the board takes as the newest, the other head is named
    assert ("cosine has results" in err or "kme_proto has results" in err) and "another protocol" in err


def test_a_tampered_or_foreign_baseline_is_refused_before_the_run(runs, tmp_path, capsys):
    tmp, cfg = runs
    base = tmp_path / "b.json"
    base.write_text((tmp / "good.json").read_text())
    shutil.copytree(tmp / "good.outcomes", tmp_path / "good.outcomes")  # the baseline names its files so
    npz = tmp_path / "good.outcomes" / "cosine.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    out = tmp_path / "o"
    assert run("--config", cfg, "--out", out, "--heads", "cosine", "--check", base) == 2
    assert "checksum mismatch" in capsys.readouterr().err and not out.exists()  # nothing was computed
    assert run("--config", cfg, "--out", out, "--heads", "cosine", "--seed", 5, "--check", tmp / "good.json") == 2
    assert "differs from the baseline" in capsys.readouterr().err and not out.exists()


def test_a_baseline_head_left_out_of_the_run_does_not_stop_the_others_being_judged(runs):
    """The baseline holds heads the run did not compute (sorted first here): each is skipped, and the heads
    after it are still judged (a mutation of that ``continue`` into ``break`` passed every test)."""
    import copy

    tmp, _ = runs
    good = regression.load(tmp / "good.json")
    wider = copy.deepcopy(good)
    wider["scores"] = {"aaa_not_run": dict(good["scores"]["cosine"]), **good["scores"]}
    worse, unjudged = regression.compare(_records(tmp / "bad"), wider, "exact")
    assert "infonce_excess" in {r.metric for r in worse if r.head == "cosine"} and unjudged == []


def test_update_keeps_the_heads_it_did_not_run_only_under_the_same_protocol(runs):
    """A baseline updated from a run of some of its heads keeps the others' scores and options, refuses
    another protocol, suite version or suite, leaves a skipped head out, and reads a baseline written
    before head options were recorded (mutation survivors of regression.make and comparable)."""
    import copy
    import dataclasses

    tmp, _ = runs
    recs = _records(tmp / "good")
    base, kept = regression.make(recs)
    assert kept == [] and set(base["scores"]) == {"cosine"}
    prev = copy.deepcopy(base)
    prev["scores"]["other"] = {"infonce_excess": 0.25}
    prev["head_options"]["other"] = {"width": 3}
    new, kept = regression.make(recs, prev)
    assert kept == ["other"] and new["scores"]["other"] == {"infonce_excess": 0.25}
    assert new["head_options"]["other"] == {"width": 3} and new["generated_by"]["kept_from_previous"] == ["other"]
    for key, value in (("protocol_hash", "0" * 16), ("suite_version", 99), ("suite", "retrieval")):
        with pytest.raises(regression.BaselineError, match="under another protocol"):
            regression.make(recs, {**prev, key: value})
    old = copy.deepcopy(prev)
    del old["head_options"]  # from before options were recorded
    new, _ = regression.make(recs, old)
    assert set(new["head_options"]) == {"cosine"} and new["scores"]["other"] == {"infonce_excess": 0.25}
    regression.comparable(old, "synthetic", base["suite_version"], base["protocol_hash"], {"cosine": {"out_dim": 2}})
    skipped = dataclasses.replace(recs[0], status="skipped", head=dataclasses.replace(recs[0].head, name="probe_only"))
    new, _ = regression.make([*recs, skipped])
    assert "probe_only" not in new["scores"] and "probe_only" not in new["head_options"]


def test_a_baseline_whose_scores_are_not_per_head_tables_is_refused(runs, tmp_path):
    tmp, _ = runs
    base = json.loads((tmp / "good.json").read_text())
    for scores in ({"cosine": 0.5}, [1, 2]):
        path = tmp_path / "b.json"
        path.write_text(json.dumps({**base, "scores": scores}))
        with pytest.raises(regression.BaselineError, match="scores"):
            regression.load(path)
