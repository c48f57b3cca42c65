"""The board, compare and the baseline show what the latest run stands for, never a stale or edited file.

Each case was a silent wrong number (exit 0): a repeat at another setting averaged in, a backup copy
counted as a repeat, an edited metric reused and written into the baseline, the board following the
newest timestamp instead of the latest run, and the commit read after the build.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import SMALL

from bench.cli import main
from bench.report import last_run, leaderboard, results


def run(*args) -> int:
    return main([*map(str, args), "--no-progress", "--resamples", "200"])


def cfg(tmp: Path, name: str = "c.yaml", **over) -> Path:
    merged = json.loads(json.dumps(SMALL))
    for dotted, value in over.items():
        node = merged
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(merged))
    return path


def board(out: Path) -> tuple[dict, list[str]]:
    chosen, notes = leaderboard.select(results.load_all(out), last_run.read_all(out))
    rows = {r.head.name: r for r in leaderboard.collapse_repeats(chosen["synthetic"])}
    return rows, notes


def test_a_repeat_at_another_setting_is_never_averaged_in(tmp_path):
    out = tmp_path / "out"
    assert run("--config", cfg(tmp_path), "--heads", "cosine,kme_rff", "--repeats", "2", "--out", out) == 0
    rows, notes = board(out)
    # kme_rff's repeats run seeds 0 and 1 of its random features, each repeat in its own world: one setting
    assert rows["cosine"].repeats.n == 2 and rows["kme_rff"].repeats.n == 2 and not notes
    eight = cfg(tmp_path, "eight.yaml", heads__cosine__out_dim=8)
    assert run("--config", eight, "--heads", "cosine", "--out", out) == 0
    rows, notes = board(out)
    cosine = rows["cosine"]
    assert cosine.repeats is None and cosine.head.options["out_dim"] == 8  # one run at 8, not "n 2"
    assert any("repeat(s) 1 of cosine" in n for n in notes)
    md = (out / "leaderboard.md").read_text()
    assert "repeat(s) 1 of cosine" in md


def test_the_board_follows_the_latest_run_not_the_newest_timestamp(tmp_path):
    """After a run at another lr for cosine only, ``--heads clip_frozen`` at the first protocol reuses its
    cell (old timestamp). The board must show that run's protocol, and name cosine (now at the other lr)
    as left out, so that the rerun it asks for is one that changes something."""
    out = tmp_path / "out"
    first = cfg(tmp_path)
    assert run("--config", first, "--heads", "cosine,clip_frozen", "--out", out) == 0
    assert run("--config", cfg(tmp_path, "lr.yaml", train__lr=0.02), "--heads", "cosine", "--out", out) == 0
    assert set(board(out)[0]) == {"cosine", "oracle"}
    assert run("--config", first, "--heads", "clip_frozen", "--out", out) == 0
    rows, notes = board(out)
    assert set(rows) == {"clip_frozen", "oracle"}
    assert any("left out cosine" in n for n in notes)
    assert "| clip_frozen" in (out / "leaderboard.md").read_text()


def test_an_edited_metric_is_recomputed_not_reused_shown_or_made_the_baseline(tmp_path, capsys):
    out = tmp_path / "out"
    c = cfg(tmp_path)
    assert run("--config", c, "--heads", "cosine", "--out", out) == 0
    path = results.run_path(out, "synthetic", "cosine")
    true_value = results.read(path).metrics["infonce_excess"]
    data = json.loads(path.read_text())
    data["metrics"]["infonce_excess"] = 0.0001
    path.write_text(json.dumps(data))
    capsys.readouterr()
    baseline = tmp_path / "base.json"
    assert run("--config", c, "--heads", "cosine", "--out", out, "--update-baseline", baseline) == 0
    log = capsys.readouterr()
    assert "claims infonce_excess = 0.0001" in log.out + log.err and "cosine: reused" not in log.out + log.err
    assert results.read(path).metrics["infonce_excess"] == true_value
    assert json.loads(baseline.read_text())["scores"]["cosine"]["infonce_excess"] == true_value


def test_a_backup_copy_in_runs_is_left_out_of_board_and_compare(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--config", cfg(tmp_path), "--heads", "cosine,kme_rbf", "--out", out) == 0
    path = results.run_path(out, "synthetic", "cosine")
    (path.parent / "cosine (copy).json").write_bytes(path.read_bytes())
    rows, _ = board(out)
    assert rows["cosine"].repeats is None
    capsys.readouterr()
    assert main(["compare", "--suite", "synthetic", "--heads", "cosine,kme_rbf", "--out", str(out)]) == 0
    assert "cosine (copy).json" in capsys.readouterr().err


def test_the_commit_named_is_the_one_read_when_the_run_started(tmp_path, monkeypatch):
    """A commit made during the build (here: the commit source changes when the suite builds its data)
    must not be named by the records of a run that started before it."""
    import suites
    from bench.report import provenance

    current = {"git_commit": "a" * 40}
    monkeypatch.setattr(provenance, "_code_version", lambda: dict(current, package_version="x", git_dirty=False))
    synthetic = suites.get_suite("synthetic")
    build = synthetic.build

    def commit_during_build(self, *args, **kwargs):
        current["git_commit"] = "b" * 40
        return build(self, *args, **kwargs)

    monkeypatch.setattr(synthetic, "build", commit_during_build)
    out = tmp_path / "out"
    assert run("--config", cfg(tmp_path), "--heads", "cosine", "--out", out) == 0
    assert current["git_commit"] == "b" * 40  # the build did run
    assert results.read(results.run_path(out, "synthetic", "cosine")).git_commit == "a" * 40


FLAT_HEAD = """
import torch
from heads import SimilarityHead, register_head


@register_head("flat_test")
class Flat(SimilarityHead):
    version = 1
    description = "every pair scores the same: a collapsed head"
    trainable = False

    def encode_image(self, points, mask=None):
        return points[:, -1]

    def encode_text(self, points, mask=None):
        return points[:, -1]

    def score(self, image_rep, text_rep):
        return torch.zeros(image_rep.shape[0], text_rep.shape[0])
"""


def test_a_collapsed_head_is_flagged_and_never_best(tmp_path, capsys):
    import heads

    module = tmp_path / "flat_head.py"
    module.write_text(FLAT_HEAD)
    out = tmp_path / "out"
    try:
        code = run("--config", cfg(tmp_path), "--out", out, "--head-module", module, "--heads", "flat_test,cosine")
        assert code == 0
        assert "flat_test: DEGENERATE" in capsys.readouterr().out
        record = results.read(results.run_path(out, "synthetic", "flat_test"))
        assert record.degenerate and "collapsed" in record.degenerate
        assert results.read(results.run_path(out, "synthetic", "cosine")).degenerate is None
        lines = (out / "leaderboard.md").read_text().splitlines()
        flat_rows = [line for line in lines if line.startswith("| flat_test")]
        assert flat_rows and all("**" not in line and "DEGENERATE" in line for line in flat_rows)
        capsys.readouterr()
        assert main(["compare", "--suite", "synthetic", "--heads", "flat_test,cosine", "--out", str(out)]) == 0
        shown = capsys.readouterr()
        table = shown.out.split("\nverdict:")[0]
        assert "flat_test is DEGENERATE" in shown.err and "better" not in table and "flat_test degenerate" in table
    finally:
        heads.HEADS.unregister("flat_test")


def test_a_few_exact_ties_are_not_a_collapse_but_constant_scores_are():
    """FILIP's scores saturate on shared points: its best positive ties with one or two of 999 negatives for
    half the queries, and it still ranks. A collapse ties it with most of them."""
    import numpy as np

    from bench.eval import degenerate

    spec = {"r@1": {"kind": "hit", "query": "q", "k": 1}}

    def arrays(tied):
        tied = np.asarray(tied, dtype=np.int32)
        return {
            "q/rank": np.zeros_like(tied),
            "q/tied_neg": tied,
            "q/tied_pos": np.ones_like(tied),
            "q/n_candidates": np.asarray(1000),
        }

    assert degenerate.check(arrays([2] * 60 + [0] * 40), spec) is None
    assert degenerate.check(arrays([999] * 60 + [0] * 40), spec)
    assert (
        degenerate.check(arrays([600] * 51 + [0] * 49), spec)
        and degenerate.check(arrays([600] * 50 + [0] * 50), spec) is None
    )
    old = arrays([999] * 100)
    del old["q/n_candidates"]
    assert degenerate.check(old, spec) is None  # written before n_candidates: not judged
