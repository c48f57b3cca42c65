"""run_bench.py tune: equal budgets (the same design points for every head), trials that cannot read test,
keyed resumable trials, refusals before any work, worker processes sharing one study, a worker killed
mid-trial losing nothing, and the tuned board."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import SMALL

from bench.cli import main
from bench.run import tuning
from suites.synthetic import SyntheticSuite

ROOT = Path(__file__).resolve().parents[1]
TINY = {**SMALL, "train": {**SMALL["train"], "steps": 12, "eval_points": 3, "patience": 0}}


def cfg_file(tmp_path, cfg=None) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg or TINY))
    return path


def tune(tmp_path, *args, out=None) -> int:
    out = out or tmp_path / "o"
    return main(
        [
            "tune",
            "--config",
            str(cfg_file(tmp_path)),
            "--out",
            str(out),
            "--no-progress",
            "--quiet",
            "--resamples",
            "200",
            *map(str, args),
        ]
    )


def trials(out: Path, head: str) -> list:
    storage = tuning.open_storage(None, out)
    return optuna.load_study(study_name=f"synthetic/{head}", storage=storage).get_trials(deepcopy=False)


def test_every_head_gets_the_same_shared_points_and_the_board_names_its_choice(tmp_path, capsys):
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine,kme_proto", "--trials", 3, "--repeats", 2) == 0
    cos, proto = trials(out, "cosine"), trials(out, "kme_proto")
    assert len(cos) == len(proto) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in cos + proto)
    shared = lambda t: {k: v for k, v in t.params.items() if k.startswith("train.")}  # noqa: E731
    assert [shared(t) for t in cos] == [shared(t) for t in proto]  # the same design, in the same order
    assert len({t.params["train.lr"] for t in cos}) == 3  # three distinct points
    assert {"head.prototypes"} == set(proto[0].params) - set(cos[0].params)  # a head's own tunable option
    board = (out / "tuned" / "leaderboard-tuned-synthetic.md").read_text()
    best = min(cos, key=lambda t: t.value)
    assert f"lr {best.params['train.lr']:.3g}" in board and "3" in board and "validation best / median / worst" in board
    # the chosen setting ran on test with 2 repeats
    from bench.report import results

    rec = results.read(results.run_path(out / "tuned", "synthetic", "cosine", 1))
    assert rec.config.resolved["train"]["lr"] == pytest.approx(best.params["train.lr"])
    assert "infonce_excess" in rec.metrics


def test_a_trial_never_reads_the_test_set(tmp_path, monkeypatch):
    """The trial runner builds without test data, and nothing in a trial evaluates on test."""

    def no_test(*a, **k):
        raise AssertionError("a trial evaluated on test")

    monkeypatch.setattr(SyntheticSuite, "evaluate", no_test)
    monkeypatch.setattr(SyntheticSuite, "references", no_test)
    monkeypatch.setattr(SyntheticSuite, "diagnostic_points", no_test)
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine", "--trials", 2, "--join") == 0  # --join: trials only
    from bench.report import results

    recs = [results.read(p) for p in (out / "tuning").rglob("runs/synthetic/cosine.json")]
    assert len(recs) == 2
    for r in recs:
        assert list(r.metrics) == ["validation/infonce_excess"] and r.suite.main_metric == "validation/infonce_excess"
        assert r.config.resolved["selection"] == "validation only" and "test_pairs" not in r.suite.test_set


def test_trials_are_keyed_cells_and_a_larger_study_resumes_the_same_design(tmp_path, caplog):
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine,kme_proto", "--trials", 2, "--join") == 0
    first = [t.params for t in trials(out, "cosine")]
    files = sorted((out / "tuning").rglob("cosine.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    assert tune(tmp_path, "--heads", "cosine,kme_proto", "--trials", 3, "--join") == 0
    now = trials(out, "cosine")
    assert [t.params for t in now[:2]] == first and len(now) == 3
    assert [f.stat().st_mtime_ns for f in files] == stamps  # the first two cells were not recomputed
    # the added point comes from the same design for both heads (kme_proto's space has one more dimension)
    shared = [{k: v for k, v in t.params.items() if k.startswith("train.")} for t in trials(out, "kme_proto")]
    assert shared == [t.params for t in now]


def test_ctrl_c_in_a_trial_fails_it_and_the_next_run_retries_its_setting(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    params = [tuning.Param("train.lr", 0.001, 0.1, log=True)]
    for p in tuning.design(params, 3, seed=0):
        study.enqueue_trial(p, user_attrs={"design": True})
    calls = []

    def objective(values):
        calls.append(values["train.lr"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return values["train.lr"], None

    with pytest.raises(KeyboardInterrupt):
        tuning.work(study, params, 3, objective)
    assert tuning.work(study, params, 3, objective) == 2
    done = [t for t in study.get_trials() if tuning.counted(t)]
    assert sorted(t.params["train.lr"] for t in done) == sorted(p["train.lr"] for p in tuning.design(params, 3, 0))
    assert calls[1] in calls[2:]  # the interrupted setting ran again


@pytest.mark.parametrize(
    "space, says",
    [
        ({"train.learning_rate": {"low": 0.001, "high": 0.1}}, "unknown tunable option 'train.learning_rate'"),
        ({"head.no_such_option": {"low": 1, "high": 2}}, "unknown tunable option 'head.no_such_option'"),
        ({"train.lr": {"low": 0.1, "high": 0.01}}, "empty or inverted range"),
        ({"train.lr": {"low": 0.1, "high": 0.1}}, "empty or inverted range"),
        ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, "low must be > 0"),
        ({"train.warmup_steps": {"low": 0.5, "high": 10}}, "integer"),
        ({"nonsense": {"low": 0, "high": 1}}, "train.SETTING or head.OPTION"),
    ],
)
def test_a_bad_space_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, space, says):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine,kme_proto", "--trials", 2, "--space", path, out=out) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--trials", 0], "--trials 0"),
        (["--storage", "nosuchdialect://x"], "cannot be opened"),
        (["--sampler", "grid"], "--sampler"),
        (["--workers", 0], "--workers"),
        (["--suite", "all"], "one suite"),
    ],
)
def test_bad_tune_flags_exit_2_before_any_work(tmp_path, capsys, args, says):
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine", *args, out=out) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and not (out / "tuning" / "synthetic").exists()


def test_a_study_made_under_another_protocol_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    assert tune(tmp_path, "--heads", "cosine", "--trials", 1, "--join", out=out) == 0
    other = {**TINY, "train": {**TINY["train"], "steps": 14}}
    code = main(
        [
            "tune",
            "--config",
            str(cfg_file(tmp_path, other)),
            "--out",
            str(out),
            "--heads",
            "cosine",
            "--trials",
            "1",
            "--join",
            "--no-progress",
            "--quiet",
        ]
    )
    assert code == 2 and "another protocol" in capsys.readouterr().err


def _worker(out: Path, cfg: Path, trials: int, *extra) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(ROOT / "run_bench.py"),
        "tune",
        "--heads",
        "cosine",
        "--trials",
        str(trials),
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--no-progress",
        "--quiet",
        "--join",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_workers_make_n_distinct_trials_and_the_same_best_as_one(tmp_path):
    cfg = cfg_file(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert _worker(one, cfg, 4).wait(timeout=300) == 0
    procs = [_worker(two, cfg, 4) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a = [t for t in trials(one, "cosine") if tuning.counted(t)]
    b = [t for t in trials(two, "cosine") if tuning.counted(t)]
    assert len(a) == len(b) == 4
    assert len({t.params["train.lr"] for t in b}) == 4  # distinct points, none run twice
    assert sorted(t.params["train.lr"] for t in a) == sorted(t.params["train.lr"] for t in b)
    best = lambda ts: min(ts, key=lambda t: t.value).params  # noqa: E731
    assert best(a) == best(b)
    assert {t.user_attrs["pid"] for t in b} and len({t.user_attrs["pid"] for t in b}) == 2  # both worked


def test_a_worker_killed_mid_trial_loses_nothing(tmp_path):
    slow = {**TINY, "train": {**TINY["train"], "steps": 400, "eval_points": 2}}
    cfg = cfg_file(tmp_path, slow)
    out = tmp_path / "o"
    victim = _worker(out, cfg, 2)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until its first trial is running
        time.sleep(0.5)
        if (out / "tuning" / "optuna.journal").exists():
            try:
                if any(t.state == optuna.trial.TrialState.RUNNING for t in trials(out, "cosine")):
                    break
            except KeyError:
                continue
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = [t for t in trials(out, "cosine") if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1
    assert _worker(out, cfg, 2).wait(timeout=600) == 0
    final = trials(out, "cosine")
    lost = [t for t in final if "lost" in t.user_attrs]
    assert [t.number for t in lost] == [killed[0].number] and lost[0].state == optuna.trial.TrialState.FAIL
    counted = [t for t in final if tuning.counted(t)]
    assert len(counted) == 2 and not any("lost" in t.user_attrs for t in counted)
    assert killed[0].params in [t.params for t in counted]  # its setting was retried, not dropped
