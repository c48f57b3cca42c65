"""Fair training: validation data disjoint from train and test, learning curves and the "not converged"
mark, early stopping that keeps the best weights, and the CPU kernel path in every cell's identity."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import SMALL

import heads
from bench.cli import main
from bench.report import leaderboard, results
from bench.run import config
from bench.run.train import Validator, convergence, eval_steps, train_head
from suites.base import PointSets, SealedTest, SealedTestError
from suites.synthetic import SyntheticSuite


def cfg_file(tmp_path, **train):
    cfg = {**SMALL, "train": {**SMALL["train"], **train}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args) -> int:
    return main([*map(str, args), "--no-progress", "--quiet", "--resamples", "0"])


def suite(**params) -> SyntheticSuite:
    p = config.merge_checked(SyntheticSuite.default_params(), {**SMALL["suites"]["synthetic"], **params}, "s")
    return SyntheticSuite(p)


# -- validation data -------------------------------------------------------------------------------
def test_the_synthetic_validation_sample_has_its_own_stream_and_moves_no_training_or_test_draw():
    a, b = suite().build(0), suite(validation_pairs=300).build(0)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.pairs.texts, b.test.pairs.texts)
    assert len(a.validation.pairs) == 150 and len(b.validation.pairs) == 300
    assert torch.equal(a.validation.pairs.images, suite().build(0).validation.pairs.images)  # seeded
    d = suite(mode="draws").build(0)  # raw draws (posterior points of saturated inputs coincide by design)
    val = d.validation.pairs.images.flatten(1)
    for other in (d.train.images.flatten(1), d.test.pairs.images.flatten(1)):  # no validation row is a train/test row
        assert not (val[:, None, :] == other[None, :, :]).all(-1).any()
    # the validation optimum is the true PMI's InfoNCE on those pairs: an oracle head would score 0 excess
    assert a.validation.optimum > 0


def test_a_run_without_test_reads_no_test_sample_and_its_test_is_sealed():
    data = suite().build(0, with_test=False)
    assert isinstance(data.test, SealedTest)
    with pytest.raises(SealedTestError, match="sealed"):
        data.test.pairs  # noqa: B018 (the access itself is what is tested)
    full = suite().build(0)
    assert torch.equal(data.train.texts, full.train.texts) and data.validation.optimum == full.validation.optimum


def test_validation_identity_is_in_the_key_and_the_result(tmp_path):
    out = tmp_path / "o"
    assert run("--heads", "cosine", "--config", cfg_file(tmp_path), "--out", out) == 0
    first = results.read(results.run_path(out, "synthetic", "cosine"))
    assert first.suite.test_set["validation_pairs"] == 150
    cfg = {**SMALL, "suites": {"synthetic": {**SMALL["suites"]["synthetic"], "validation_pairs": 160}}}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(cfg))
    assert run("--heads", "cosine", "--config", tmp_path / "v.yaml", "--out", out) == 0
    second = results.read(results.run_path(out, "synthetic", "cosine"))
    assert second.config.key != first.config.key and second.suite.test_set["validation_pairs"] == 160


# -- curves, convergence, early stopping -------------------------------------------------------------
def test_evaluation_points_are_evenly_spaced_and_include_the_last_step():
    assert eval_steps(100, 10) == set(range(10, 101, 10))
    assert eval_steps(25, 10) == {3, 6, 9, 12, 15, 18, 21, 24, 25}
    assert eval_steps(5, 10) == {1, 2, 3, 4, 5} and eval_steps(100, 0) == set()


@pytest.mark.parametrize(
    "values, higher, converged",
    [
        ([5.0, 1.0, 0.5, 0.49, 0.489], False, True),  # flat tail (lower is better)
        ([5.0, 1.0, 0.5, 0.45, 0.40], False, False),  # still falling by 0.1 over the last 20%
        ([0.1, 0.3, 0.5, 0.51, 0.52], True, True),
        ([0.1, 0.3, 0.5, 0.55, 0.60], True, False),  # still rising: direction respected
        ([0.1, 0.3, 0.5, 0.55, 0.40], False, True),  # getting worse at the end is not "still improving"
    ],
)
def test_convergence_is_the_best_improvement_over_the_last_fifth(values, higher, converged):
    curve = [{"step": 10 * (i + 1), "val": v} for i, v in enumerate(values)]
    ok, improvement = convergence(curve, higher, tolerance=0.02)
    assert ok is converged and (improvement > 0.02) is (not converged)


def test_convergence_is_unknown_without_a_point_before_the_tail():
    assert convergence([{"step": 10, "val": 1.0}], False, 0.01) == (None, None)


def _pairs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 6, generator=g)
    return PointSets(z + 0.1 * torch.randn(n, 2, 6, generator=g), z + 0.1 * torch.randn(n, 2, 6, generator=g))


def test_early_stopping_stops_on_patience_and_keeps_the_best_points_weights():
    torch.manual_seed(0)
    head = heads.get_head("cosine")(6, 6)
    values = iter([3.0, 2.0, 1.0, 1.5, 1.6, 1.7, 0.1, 0.1])  # best at the third point, then 3 worse
    seen = []

    def measure(h):
        seen.append({k: v.clone() for k, v in h.state_dict().items()})
        return next(values)

    cfg = {"steps": 40, "batch_size": 16, "lr": 0.05, "weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 0}
    stats = train_head(
        head,
        _pairs(),
        {**cfg, "eval_points": 8, "patience": 3},
        0,
        torch.device("cpu"),
        progress=False,
        validator=Validator("m", False, 0.01, measure),
    )
    assert [p["step"] for p in stats.curve] == [5, 10, 15, 20, 25, 30]
    assert stats.steps == 30 and stats.stopped_early and stats.best_step == 15
    kept = head.state_dict()
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)  # the weights of the best point, not the last
    assert not all(torch.equal(kept[k], seen[-1][k]) for k in kept)


def test_a_run_records_its_curve_and_an_unconverged_head_is_marked_everywhere(tmp_path, capsys):
    out = tmp_path / "o"
    # 12 steps at a tiny learning rate: the validation metric is still falling at the end
    cfg = cfg_file(tmp_path, steps=12, lr=0.01, warmup_steps=0, eval_points=6)
    assert run("--heads", "cosine,kme_proto", "--config", cfg, "--out", out) == 0
    record = results.read(results.run_path(out, "synthetic", "cosine"))
    assert [p["step"] for p in record.curve] == [2, 4, 6, 8, 10, 12]
    assert all({"train_loss", "val"} <= set(p) for p in record.curve)
    assert record.convergence["metric"] == "validation/infonce_excess"
    assert record.convergence["converged"] is False and record.not_converged
    board = (out / "leaderboard.md").read_text()
    assert "NOT CONVERGED" in board and "converged" in board
    assert (out / "curves-synthetic.png").stat().st_size > 10_000  # the suite's learning-curve figure
    capsys.readouterr()
    assert (
        main(
            ["compare", "--suite", "synthetic", "--heads", "cosine,kme_proto", "--out", str(out), "--resamples", "200"]
        )
        == 0
    )
    assert "NOT CONVERGED" in capsys.readouterr().err
    # the value evaluated is that of the weights kept: the validation metric at the best step, re-measured
    s = suite()
    data = s.build(0)
    head = heads.get_head("cosine")(data.image_dim, data.text_dim, **record.head.options)
    from safetensors.torch import load_file

    state = load_file(str(results.weights_path(out, "synthetic", "cosine")))
    head.load_state_dict({k: v for k, v in state.items() if not k.startswith("loss.")})
    with torch.no_grad():
        again = s.validate(head.eval(), data, torch.device("cpu"))
    best = [p["val"] for p in record.curve if p["step"] == record.convergence["best_step"]][0]
    assert again == pytest.approx(best, abs=1e-9)


def test_a_converged_head_is_not_marked(tmp_path):
    out = tmp_path / "o"
    cfg = cfg_file(tmp_path, steps=200, lr=0.05, eval_points=10, patience=3)
    assert run("--heads", "cosine", "--config", cfg, "--out", out) == 0
    record = results.read(results.run_path(out, "synthetic", "cosine"))
    assert record.convergence["converged"] is True and not record.not_converged
    rows = leaderboard.collapse_repeats([record])
    assert leaderboard.convergence_text(rows[0]) == "yes"


def test_the_cpu_kernel_path_is_part_of_every_cells_identity(tmp_path):
    out = tmp_path / "o"
    assert run("--heads", "cosine", "--config", cfg_file(tmp_path), "--out", out) == 0
    raw = json.loads(results.run_path(out, "synthetic", "cosine").read_text())
    assert raw["identity"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize(
    "train, says",
    [
        ({"eval_points": -1}, "eval_points"),
        ({"patience": -2}, "patience"),
        ({"patience": 2, "eval_points": 0}, "patience"),
    ],
)
def test_bad_validation_settings_exit_2_before_any_work(tmp_path, train, says, capsys):
    out = tmp_path / "o"
    assert run("--heads", "cosine", "--config", cfg_file(tmp_path, **train), "--out", out) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_a_learning_rate_written_1e_3_is_read_as_the_number_yaml_leaves_as_text(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-2\n")
    cfg = config.resolve(config.load_yaml(str(path)))
    assert cfg["train"]["lr"] == 0.001 and cfg["train"]["weight_decay"] == 0.05
    with pytest.raises(config.ConfigError, match="train.lr"):
        config.resolve({"train": {"lr": "fast"}})
