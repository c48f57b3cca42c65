"""run_bench.py sweep: grids parsed strictly, every point an ordinary keyed run, the table and figures
made from exactly the runs of the sweep, and shared head options (heads.*, a suite's head_defaults)."""

import json
import math

import pandas as pd
import pytest
from helpers import small_config

from bench.cli import main
from bench.report import results
from bench.run import config, runner, sweep
from bench.run.config import ConfigError


def run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


# -- grids -------------------------------------------------------------------------------------
def test_axes_parse_values_as_yaml_and_points_are_the_product_in_order():
    axes = sweep.parse_grid(["heads.*.out_dim=2,4", "suites.synthetic.mode=draws,posterior", "train.lr=0.5,null"])
    assert axes[0].values == (2, 4) and axes[1].values == ("draws", "posterior") and axes[2].values == (0.5, None)
    pts = sweep.points(axes)
    assert len(pts) == 8 and pts[0] == {"heads.*.out_dim": 2, "suites.synthetic.mode": "draws", "train.lr": 0.5}
    assert [p["heads.*.out_dim"] for p in pts] == [2] * 4 + [4] * 4  # the first axis varies slowest
    user = {"train": {"steps": 5}, "heads": {"cosine": {"out_dim": 9}}}
    applied = sweep.apply(user, pts[-1])
    assert applied == {
        "train": {"steps": 5, "lr": None},
        "heads": {"cosine": {"out_dim": 9}, "*": {"out_dim": 4}},
        "suites": {"synthetic": {"mode": "posterior"}},
    }
    assert user == {"train": {"steps": 5}, "heads": {"cosine": {"out_dim": 9}}}  # not modified
    assert sweep.point_name(axes, pts[5], 5) == "005-out_dim=4-mode=draws-lr=None"


@pytest.mark.parametrize(
    "spec, says",
    [
        ("heads.*.out_dim", "KEY=V1,V2"),
        ("heads.out_dim=2,4", "heads.NAME.OPTION"),
        ("suites.topics=4", "suites.NAME.OPTION"),
        ("heads.*.out_dim=2,,4", "one or more"),
        ("heads.*.out_dim=2,2", "listed twice"),
        ("heads.*.out_dim=2,2.0", "listed twice"),
        ("train.lr=1e-3,0.001", "listed twice"),
        ("repeats=1,2", "--repeats"),
        ("heads.*.out dim=2", "dotted config key"),
    ],
)
def test_bad_axes_are_refused_with_the_fix(spec, says):
    with pytest.raises(ConfigError, match=says.replace("*", r"\*").replace(".", r"\.")):
        sweep.parse_grid([spec])


def test_too_big_or_repeated_grids_are_refused():
    with pytest.raises(ConfigError, match="more than"):
        sweep.parse_grid([f"train.steps={','.join(map(str, range(21)))}", f"seed={','.join(map(str, range(20)))}"])
    with pytest.raises(ConfigError, match="twice"):
        sweep.parse_grid(["train.steps=1,2", "train.steps=3"])


# -- shared head options ---------------------------------------------------------------------------
def options_of(user: dict, heads: list[str]) -> dict:
    cfg = config.resolve(user)
    return {c.head: c.options for c in runner.plan("synthetic", heads, cfg).cells}


def test_every_head_option_reaches_the_heads_that_have_it_and_a_head_section_wins():
    opts = options_of({"heads": {"*": {"out_dim": 3}, "kme_rbf": {"out_dim": 5}}}, ["cosine", "kme_rbf", "clip_frozen"])
    assert opts["cosine"]["out_dim"] == 3 and opts["kme_rbf"]["out_dim"] == 5 and "out_dim" not in opts["clip_frozen"]


def test_the_synthetic_suite_runs_heads_at_its_out_dim_unless_told_otherwise():
    assert options_of({}, ["cosine", "kme_proto"])["cosine"]["out_dim"] == 4  # suites/synthetic.py head_defaults
    assert options_of({"heads": {"*": {"out_dim": 8}}}, ["cosine"])["cosine"]["out_dim"] == 8
    assert options_of({"heads": {"cosine": {"out_dim": None}}}, ["cosine"])["cosine"]["out_dim"] is None
    # the option is part of the cell's config, so another value is another cell
    cfg = config.resolve({})
    a = runner.plan("synthetic", ["cosine"], cfg).cells[0].hash
    b = runner.plan("synthetic", ["cosine"], config.resolve({"heads": {"*": {"out_dim": 8}}})).cells[0].hash
    assert a != b


def test_an_every_head_option_no_head_has_is_an_error():
    with pytest.raises(ConfigError, match=r"heads\.\*\.out_dims.*Did you mean: 'out_dim'"):
        options_of({"heads": {"*": {"out_dims": 3}}}, ["cosine"])
    with pytest.raises(ConfigError, match="none of the heads"):
        options_of({"heads": {"*": {"out_dim": 3}}}, ["clip_frozen"])


# -- the command -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = small_config(tmp)
    out = tmp / "sw"
    args = [
        "sweep",
        "--config",
        cfg,
        "--out",
        out,
        "--heads",
        "cosine,kme_proto",
        "--grid",
        "heads.*.out_dim=2,3",
        "--grid",
        "suites.synthetic.topics=3,4",
        "--repeats",
        2,
        "--resamples",
        200,
    ]
    assert run(*args) == 0
    return tmp, cfg, out, args


def test_the_table_holds_exactly_the_sweeps_runs(swept):
    _, _, out, _ = swept
    df = pd.read_csv(out / "sweep.csv")
    manifest = json.loads((out / "sweep.json").read_text())
    assert [p["values"] for p in manifest["points"]] == [
        {"heads.*.out_dim": d, "suites.synthetic.topics": k} for d in (2, 3) for k in (3, 4)
    ]
    assert manifest["git_commit"] and manifest["repeats"] == 2
    main_rows = df[df.metric == "infonce_excess"]
    assert len(main_rows) == 4 * 3 and set(main_rows["head"]) == {"cosine", "kme_proto", "oracle"}
    for p in manifest["points"]:  # every number is the mean of that point's own result files
        folder = out / "points" / p["folder"]
        for head in ("cosine", "kme_proto"):
            recs = [results.read(results.run_path(folder, "synthetic", head, r)) for r in (0, 1)]
            assert recs[0].head.options["out_dim"] == p["values"]["heads.*.out_dim"]
            assert recs[0].config.resolved["suite_params"]["topics"] == p["values"]["suites.synthetic.topics"]
            row = main_rows[(main_rows.folder == p["folder"]) & (main_rows["head"] == head)].iloc[0]
            values = [r.metrics["infonce_excess"] for r in recs]
            assert row.n == 2 and math.isclose(row["mean"], sum(values) / 2, rel_tol=1e-12)
            assert row.interval == "bootstrap" and row.low <= row.high
    pearson = df[(df.metric == "pmi_pearson") & (df["head"] == "cosine")]
    assert (pearson.interval == "t over repeats").all()  # no per-query form: the interval is over repeats
    md = (out / "sweep.md").read_text()
    assert "## infonce_excess (lower is better)" in md and "| out_dim | topics | cosine | kme_proto | oracle |" in md
    for m in manifest["metrics"]:
        assert (out / f"sweep-{m}.png").stat().st_size > 10_000


def test_a_second_sweep_reuses_every_cell_and_ignores_stray_runs(swept, capsys):
    tmp, cfg, out, args = swept
    stray = out / "points" / "000-out_dim=2-topics=3"
    assert run("--config", cfg, "--out", stray, "--heads", "kme_rbf") == 0  # another head in a point's folder
    before = (out / "sweep.csv").read_text()
    capsys.readouterr()
    assert run(*args) == 0
    said = capsys.readouterr()
    said = said.out + said.err
    # no head trains again; the stray run rewrote that point's oracle row for its own world, so that one is recomputed
    assert "(train " not in said and said.count("every cell reused") == 7, said
    assert (out / "sweep.csv").read_text() == before  # same runs, same table; kme_rbf is not in it


@pytest.mark.parametrize(
    "extra, says",
    [
        (["--grid", "suites.retrieval.batch_size=1,2"], "would change nothing"),
        (["--grid", "heads.kme_rbf.sigma=1,2"], "not in this sweep's heads"),
        (["--grid", "heads.*.out_dim=0,2"], "out_dim"),
        (["--grid", "suites.synthetic.topics=1,2"], "topics"),
        (["--grid", "train.steps=1", "--metrics", "infonce_exces"], "Did you mean: 'infonce_excess'"),
        (["--grid", "seed=1,2", "--seed", "3"], "both set the seed"),
        ([], "at least one --grid"),
    ],
)
def test_a_bad_sweep_fails_before_any_work(tmp_path, capsys, extra, says):
    cfg = small_config(tmp_path)
    code = run("sweep", "--config", cfg, "--out", tmp_path / "sw", "--heads", "cosine", *extra)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err
    assert not (tmp_path / "sw").exists()


def test_a_point_whose_run_would_not_use_its_label_is_refused(tmp_path, capsys):
    """``heads.cosine.out_dim: 8`` in the shared config wins over ``heads.*.out_dim``: rows labelled 2 and 4
    ran at 8. The sweep refuses before any work, naming the setting to remove."""
    cfg = small_config(tmp_path, heads={"cosine": {"out_dim": 8}})
    code = run("sweep", "--config", cfg, "--out", tmp_path / "sw", "--heads", "cosine", "--grid", "heads.*.out_dim=2,4")
    err = capsys.readouterr().err
    assert code == 2 and "cosine would run with out_dim = 8" in err and "heads.cosine.out_dim" in err
    assert not (tmp_path / "sw").exists()


def test_values_written_as_yaml_text_label_what_ran():
    from bench.run import sweep as sweep_mod

    axes = sweep_mod.parse_grid(["train.lr=1e-3"])
    cfg = config.resolve(sweep_mod.apply({}, sweep_mod.points(axes)[0]))
    sweep_mod.ran_as_labelled(axes, sweep_mod.points(axes)[0], cfg, [])  # 1e-3 (text) is the 0.001 that runs
    assert cfg["train"]["lr"] == 0.001
