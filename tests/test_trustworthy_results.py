"""A number shown must come from the code, data, weights and settings it claims to.

Each test changes one thing a cell depends on (a head's code, a default, one image, the
checkpoint's bytes) and asserts the cell is recomputed; a regression check run on a copy of the
package whose head is broken on purpose must fail; baselines and reference rows are never lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import SMALL
from test_bad_inputs import _real_cfg, make_real_data, snapshot

import heads
from bench.cli import main
from bench.report import leaderboard, results

REPO = Path(__file__).resolve().parent.parent


def run(*args) -> int:
    return main([*map(str, args), "--no-progress"])


def small(tmp: Path, **over) -> Path:
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump({**SMALL, **over}))
    return path


def reused(out: str) -> list[str]:
    return [line.split("]")[1].split(":")[0].strip() for line in out.splitlines() if ": reused " in line]


USER_HEAD = """
import torch
from heads import SimilarityHead, register_head


@register_head("user_scaled")
class UserScaled(SimilarityHead):
    version = 1
    description = "pooled dot product times a fixed scale"
    trainable = False

    def __init__(self, image_dim, text_dim, scale: float = SCALE):
        super().__init__(image_dim, text_dim)
        self.scale = scale

    def encode_image(self, points, mask=None):
        return torch.nn.functional.normalize(points[:, -1], dim=-1)

    def encode_text(self, points, mask=None):
        return torch.nn.functional.normalize(points[:, -1], dim=-1)

    def score(self, image_rep, text_rep):
        return self.scale * image_rep @ text_rep.T
"""


@pytest.fixture
def user_head(tmp_path):
    path = tmp_path / "user_head.py"
    path.write_text(USER_HEAD.replace("SCALE", "10.0"))
    yield path
    heads.HEADS.unregister("user_scaled")


def test_changing_a_heads_code_or_default_recomputes_its_cell_only(user_head, tmp_path, capsys):
    cfg, out = small(tmp_path), tmp_path / "out"
    args = ["--config", cfg, "--out", out, "--head-module", user_head, "--heads", "user_scaled,clip_frozen"]
    assert run(*args) == 0
    first = results.read(results.run_path(out, "synthetic", "user_scaled"))
    assert first.head.options == {"scale": 10.0}  # the default, recorded
    assert str(user_head) in first.identity["code"]["files"]
    capsys.readouterr()

    heads.HEADS.unregister("user_scaled")
    assert run(*args) == 0  # nothing changed: both reused
    assert sorted(reused(capsys.readouterr().out)) == ["clip_frozen", "user_scaled"]

    heads.HEADS.unregister("user_scaled")
    user_head.write_text(user_head.read_text() + "\n# a comment is a code change too\n")
    assert run(*args) == 0
    assert reused(capsys.readouterr().out) == ["clip_frozen"]  # only the changed head's cell

    heads.HEADS.unregister("user_scaled")
    user_head.write_text(USER_HEAD.replace("SCALE", "20.0"))  # a new default
    assert run(*args) == 0
    assert reused(capsys.readouterr().out) == ["clip_frozen"]
    second = results.read(results.run_path(out, "synthetic", "user_scaled"))
    assert second.head.options == {"scale": 20.0}
    assert second.config.hash != first.config.hash
    assert second.metrics["infonce_excess"] != first.metrics["infonce_excess"]


def test_setting_an_option_to_its_default_is_the_same_cell(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--config", small(tmp_path), "--out", out, "--heads", "kme_rff") == 0
    capsys.readouterr()
    explicit = {**SMALL, "heads": {"kme_rff": {"num_features": 256, "features": "positive", "seed": 0}}}
    assert run("--config", small(tmp_path, **explicit), "--out", out, "--heads", "kme_rff") == 0
    assert reused(capsys.readouterr().out) == ["kme_rff"]
    assert (
        run(
            "--config",
            small(tmp_path, heads={"kme_rff": {"num_features": 256, "seed": 1}}),
            "--out",
            out,
            "--heads",
            "kme_rff",
        )
        == 0
    )
    assert reused(capsys.readouterr().out) == []  # an option changed: recomputed


def test_code_identity_is_the_import_closure_by_content(tmp_path):
    import suites
    from bench.run.code_identity import closure, code_identity

    ident = code_identity(heads.get_head("cosine"), suites.get_suite("synthetic"))
    files = set(ident["files"])
    assert {
        "heads/cosine.py",
        "heads/pointsets.py",
        "heads/base.py",
        "suites/synthetic.py",
        "suites/synthetic_world.py",
        "bench/run/train.py",
        "bench/eval/scoring.py",
        "bench/eval/metrics.py",
        "bench/run/runner.py",
    } <= files
    assert not files & {"heads/kme_rbf.py", "suites/retrieval.py", "bench/report/leaderboard.py", "bench/cli.py"}
    # A dependency's content, not its path or time, is what counts.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "helper.py").write_text("X = 1\n")
    (pkg / "main.py").write_text("def f():\n    from helper import X\n    return X\n")
    a = closure([pkg / "main.py"])
    os.utime(pkg / "helper.py", (0, 0))
    assert closure([pkg / "main.py"]) == a
    (pkg / "helper.py").write_text("X = 2\n")
    assert closure([pkg / "main.py"]) != a and len(a) == 2


def test_a_head_without_source_is_never_reused():
    from bench.run.code_identity import code_identity

    namespace: dict = {}
    exec("class Ghost:\n    pass\n", namespace)
    ghost = namespace["Ghost"]
    ghost.__module__ = "not_a_module"
    a, b = code_identity(ghost), code_identity(ghost)
    assert a["unhashable"] == ["Ghost"] and a["hash"] != b["hash"]


# --------------------------------------------------------------------------------------------
# Real data: one image, the checkpoint's bytes.


@pytest.fixture
def real(tmp_path):
    data, tiny = make_real_data(tmp_path)
    return data, tiny, _real_cfg(tmp_path)


def _retrieval(data, backbone, cfg, out, heads_="clip_frozen,cosine"):
    return run(
        "--suite",
        "retrieval",
        "--backbone",
        backbone,
        "--data-root",
        data,
        "--config",
        cfg,
        "--heads",
        heads_,
        "--out",
        out,
        "--device",
        "cpu",
    )


def test_changing_one_test_image_recomputes(real, tmp_path, capsys):
    from PIL import Image

    data, tiny, cfg = real
    out = tmp_path / "out"
    assert _retrieval(data, tiny, cfg, out) == 0
    before = results.read(results.run_path(out, "retrieval", "clip_frozen"))
    capsys.readouterr()
    assert _retrieval(data, tiny, cfg, out) == 0
    assert sorted(reused(capsys.readouterr().out)) == ["clip_frozen", "cosine"]

    Image.new("RGB", (20, 30), color=(250, 10, 10)).save(data / "flickr30k" / "1001.jpg")  # same name, new pixels
    assert _retrieval(data, tiny, cfg, out) == 0
    assert reused(capsys.readouterr().out) == []
    after = results.read(results.run_path(out, "retrieval", "clip_frozen"))
    assert after.identity["data"]["test"]["flickr30k"] != before.identity["data"]["test"]["flickr30k"]
    assert after.config.protocol_hash != before.config.protocol_hash  # never one table with the old rows


def test_replacing_the_checkpoint_bytes_recomputes(real, tmp_path, capsys):
    import open_clip

    data, tiny, cfg = real
    open_clip.add_model_config(tiny)
    ckpt, out = tmp_path / "weights.pt", tmp_path / "out"

    def save(seed):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(tiny.stem).state_dict(), ckpt)

    save(0)
    backbone = f"{tiny}:{ckpt}"
    assert _retrieval(data, backbone, cfg, out, "clip_frozen") == 0
    first = results.read(results.run_path(out, "retrieval", "clip_frozen"))
    capsys.readouterr()
    save(1)  # same path, same size, other weights
    assert _retrieval(data, backbone, cfg, out, "clip_frozen") == 0
    assert reused(capsys.readouterr().out) == []
    second = results.read(results.run_path(out, "retrieval", "clip_frozen"))
    w1, w2 = (r.identity["data"]["backbone"]["weights"] for r in (first, second))
    assert w1.startswith("checkpoint:") and w1 != w2
    assert first.metrics != second.metrics


# --------------------------------------------------------------------------------------------
# The regression check cannot pass on broken code.


def _copy_repo(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def _bench(repo: Path, *args, **env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(repo), **env_vars}
    return subprocess.run(
        [sys.executable, "run_bench.py", *args, "--no-progress"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _break_cosine(repo: Path) -> None:
    path = repo / "heads" / "cosine.py"
    text = path.read_text()
    broken = text.replace(
        "return self.logit_scale * image_rep.vectors @ text_rep.vectors.T",
        "return 0.01 * self.logit_scale * image_rep.vectors @ text_rep.vectors.T",
    )
    assert broken != text
    path.write_text(broken)


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory):
    """A copy of the repository whose published results are current, then a head broken on purpose."""
    repo = _copy_repo(tmp_path_factory.mktemp("repo"))
    small(repo)
    proc = _bench(repo, "--out", "results", "--heads", "cosine,kme_rff", "--config", "small.yaml")
    assert proc.returncode == 0, proc.stderr
    _break_cosine(repo)
    return repo


def test_readme_check_fails_when_a_head_is_broken(broken_repo):
    """The README's check command (here for the broken head alone, to keep the default run fast)."""
    proc = _bench(
        broken_repo, "--suite", "synthetic", "--check", "results/baselines/synthetic.json", "--heads", "cosine"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "REGRESSION" in proc.stdout and "cosine" in proc.stdout and "reused" not in proc.stdout


@pytest.mark.parametrize("path", ["avx2", "default"])
def test_the_gate_passes_on_other_cpu_kernel_paths_and_still_fails_a_broken_head(broken_repo, tmp_path, path):
    """The baseline was made under this machine's own kernel path; another path rounds differently. The
    check (interval rule) must pass for unchanged code under it, and fail for the broken head under it."""
    clean = _copy_repo(tmp_path / "clean")
    ok = _bench(
        clean,
        "--check",
        "results/baselines/synthetic.json",
        "--heads",
        "cosine,kme_proto,proto_cosine",
        "--out",
        str(tmp_path / "o"),
        ATEN_CPU_CAPABILITY=path,
    )
    assert ok.returncode == 0 and "regression check passed" in ok.stdout, ok.stdout + ok.stderr
    bad = _bench(
        broken_repo,
        "--check",
        "results/baselines/synthetic.json",
        "--heads",
        "cosine",
        "--out",
        str(tmp_path / "b"),
        ATEN_CPU_CAPABILITY=path,
    )
    assert bad.returncode == 1 and "REGRESSION" in bad.stdout, bad.stdout + bad.stderr


def test_committed_results_are_not_reused_for_changed_code(broken_repo):
    before = json.loads((broken_repo / "results/runs/synthetic/cosine.json").read_text())
    proc = _bench(broken_repo, "--out", "results", "--heads", "cosine,kme_rff", "--config", "small.yaml")
    assert proc.returncode == 0, proc.stderr
    assert reused(proc.stdout) == ["kme_rff"]  # cosine's cell was made by other code; kme_rff's was not
    after = json.loads((broken_repo / "results/runs/synthetic/cosine.json").read_text())
    assert after["metrics"] != before["metrics"] and after["config"]["key"] != before["config"]["key"]


def test_published_results_come_from_this_code():
    """results/ claims to be made by this code: every committed cell's key must be the key this code
    would compute (else regenerate it: see the README's 'Published results')."""
    from bench.report.provenance import resolve_device
    from bench.run import config, runner

    records = results.load_all(REPO / "results")
    assert records and all(r.status == "ok" for r in records)
    for suite in sorted({r.suite.name for r in records}):
        rs = [r for r in records if r.suite.name == suite]
        resolved = rs[0].config.resolved
        cfg = config.resolve(
            {
                "seed": resolved["seed"],
                "train": resolved["train"],
                "suites": {suite: resolved["suite_params"]},
                "heads": {r.head.name: r.head.options for r in rs if r.head.kind == "head" and r.repeat == 0},
            }
        )
        names = sorted({r.head.name for r in rs if r.head.kind == "head"})
        for repeat in sorted({r.repeat for r in rs}):  # repeat r is keyed by r: matched by index, not counted
            sp = runner.plan(suite, names, cfg, repeat=repeat)
            suite_obj = sp.suite_cls(sp.params)
            device = resolve_device(rs[0].identity["device_type"])
            _, refs = runner._identify(suite_obj, sp.suite_cls, sp.protocol, sp.cells, cfg, device)
            expected = {c.head: c for c in sp.cells} | refs
            for r in (r for r in rs if r.repeat == repeat):
                cell = expected[r.head.name]
                # the CPU kernel path is recorded as what it was: results/ is checked on any CPU
                mine = {k: v for k, v in cell.identity.items() if k != "cpu_capability"}
                theirs = {k: v for k, v in r.identity.items() if k != "cpu_capability"}
                assert r.config.hash == cell.hash and mine == theirs, (
                    f"results/runs/{suite}: {r.head.name} (repeat {repeat}) was made by other code, data or "
                    "libraries; regenerate it (docs/testing.md, 'Published results')."
                )
        assert {r.repeat for r in rs} == set(range(cfg_repeats(rs))), "every repeat of the published run is there"


def cfg_repeats(rs) -> int:
    return max(r.repeat for r in rs) + 1


@pytest.mark.slow
def test_readme_check_command_verbatim_fails_on_broken_code(broken_repo):
    proc = _bench(broken_repo, "--suite", "synthetic", "--check", "results/baselines/synthetic.json")
    assert proc.returncode == 1 and "REGRESSION" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_readme_first_command_computes_on_a_fresh_clone_and_leaves_tracked_files_alone(tmp_path):
    repo = _copy_repo(tmp_path)
    tracked = snapshot(repo)
    proc = _bench(repo)
    assert proc.returncode == 0, proc.stderr
    assert "every cell reused" not in proc.stdout and reused(proc.stdout) == []
    assert (repo / "outputs" / "leaderboard.md").is_file()
    assert {k: v for k, v in snapshot(repo).items() if k in tracked} == tracked
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "outputs/leaderboard.md"], capture_output=True)
    assert ignored.returncode == 0  # where a user's runs go is git-ignored


def test_the_default_output_folder_is_not_the_published_one():
    from bench.cli import DEFAULT_OUT, parser

    assert parser().parse_args(["run"]).out == DEFAULT_OUT != "results"
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", f"{DEFAULT_OUT}/runs/synthetic/cosine.json"], capture_output=True
    )
    assert ignored.returncode == 0


# --------------------------------------------------------------------------------------------
# Baselines and references are never lost.


@pytest.fixture(scope="module")
def four_heads(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("four")
    cfg = small(tmp)
    base = tmp / "base.json"
    assert run("--config", cfg, "--out", tmp / "out", "--update-baseline", base) == 0
    return tmp, cfg, base


def test_update_baseline_merges_and_says_what_it_kept(four_heads, tmp_path, capsys):
    tmp, cfg, base = four_heads
    target = tmp_path / "base.json"
    shutil.copy(base, target)
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp / "out", "--heads", "cosine", "--update-baseline", target) == 0
    text = capsys.readouterr().out
    others = ", ".join(sorted(set(heads.list_heads()) - {"cosine"}))
    assert f"kept from the previous baseline (not in this run): {others}" in text
    merged, original = json.loads(target.read_text()), json.loads(base.read_text())
    assert set(merged["scores"]) == set(original["scores"]) == {"oracle", *heads.list_heads()}
    assert merged["scores"] == original["scores"]


def test_update_baseline_refuses_to_mix_protocols(four_heads, tmp_path, capsys):
    tmp, cfg, base = four_heads
    target = tmp_path / "base.json"
    shutil.copy(base, target)
    before = target.read_bytes()
    assert (
        run("--config", cfg, "--out", tmp_path / "o", "--seed", 5, "--heads", "cosine", "--update-baseline", target)
        == 2
    )
    err = capsys.readouterr().err
    assert "under another protocol" in err
    suggested = err.split("(--heads ")[1].split(")")[0].split(",")
    assert "oracle" not in suggested and set(suggested) == set(heads.list_heads())  # a command that runs
    assert target.read_bytes() == before


def test_check_judges_only_the_heads_it_ran(four_heads, capsys):
    tmp, cfg, base = four_heads
    capsys.readouterr()
    assert run("--config", cfg, "--out", tmp / "out", "--heads", "cosine", "--check", base) == 0
    text = capsys.readouterr().out
    assert "no metric of cosine, oracle (all recomputed)" in text and "reused" not in text


def test_check_passes_an_improvement_and_fails_a_drop_beyond_tolerance(four_heads, tmp_path, capsys):
    tmp, cfg, base = four_heads
    saved = json.loads(base.read_text())
    tol = saved["tolerances"]["infonce_excess"]
    better = json.loads(json.dumps(saved))
    better["scores"]["cosine"]["infonce_excess"] += 5 * tol  # the run is now much better than this baseline
    (tmp_path / "better.json").write_text(json.dumps(better))
    exact = ("--check-rule", "exact")  # the scores are edited by hand here; the outcome files are not
    assert (
        run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine", "--check", tmp_path / "better.json", *exact)
        == 0
    )
    worse = json.loads(json.dumps(saved))
    worse["scores"]["cosine"]["infonce_excess"] -= 1.5 * tol
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    assert (
        run("--config", cfg, "--out", tmp_path / "o", "--heads", "cosine", "--check", tmp_path / "worse.json", *exact)
        == 1
    )


CRASHER = """
from heads import SimilarityHead, register_head


@register_head("crasher")
class Crasher(SimilarityHead):
    description = "the process dies while this head trains"

    def __init__(self, image_dim, text_dim):
        super().__init__(image_dim, text_dim)
        if image_dim != 4:  # not in the planning check on tiny dims: in the run itself
            raise KeyboardInterrupt  # as Ctrl-C or SIGTERM would, mid-run
"""


def test_a_crash_mid_run_keeps_references_and_leaderboard_consistent(four_heads, tmp_path, capsys):
    tmp, cfg, _ = four_heads
    out = tmp_path / "out"
    shutil.copytree(tmp / "out", out)
    oracle = (out / "runs/synthetic/oracle.json").read_bytes()
    module = tmp_path / "crasher.py"
    module.write_text(CRASHER)
    try:
        code = run("--config", cfg, "--out", out, "--seed", 7, "--head-module", module, "--heads", "cosine,crasher")
    finally:
        heads.HEADS.unregister("crasher")
    assert code == 130
    assert (out / "runs/synthetic/oracle.json").read_bytes() == oracle  # the reference row of the old protocol stays
    assert results.read(out / "runs/synthetic/cosine.json").seed == 7  # the finished cell is kept for the resume
    # The leaderboard is rebuilt from what runs/ now holds: it shows the protocol of the last run that finished
    # (the crashed one never wrote its index) and names the new protocol's cosine as left out.
    board = (out / "leaderboard.md").read_text()
    from bench.report import last_run, verdicts

    chosen, notes = leaderboard.select(results.load_all(out), last_run.read_all(out))
    judged = {suite: verdicts.for_suite(out, rs) for suite, rs in chosen.items()}
    assert board == leaderboard.build_markdown(chosen, notes, source=out.as_posix(), verdicts=judged)
    assert "left out cosine" in board and "seed 0" in board and "| oracle" in board


def test_leaderboard_states_provenance_per_row_and_the_protocol(four_heads, tmp_path):
    tmp, _, _ = four_heads
    out = tmp_path / "out"
    shutil.copytree(tmp / "out", out)
    board = leaderboard.build(out)
    assert f"Built from `{out.as_posix()}/runs/`" in board and "Every row from commit" in board
    assert (
        "train: batch_size 64, eval_points 15, grad_clip 1.0, loss infonce, lr 0.01, patience 4, steps 20, "
        "warmup_steps 5"
        in board
        and "test_pairs 150" in board
    )
    path = out / "runs/synthetic/kme_rff.json"
    record = json.loads(path.read_text())
    record["git_commit"], record["created_utc"] = "f" * 40, "2026-01-02T00:00:00+00:00"
    path.write_text(json.dumps(record))
    board = leaderboard.build(out)
    assert (
        "Rows come from 2 commits" in board and "| commit" in board and "ffffffffff" in board and "2026-01-02" in board
    )


def test_a_long_run_is_keyed_by_the_code_it_started_with(tmp_path, monkeypatch):
    """Inside snapshot.frozen() (every run and sweep), a file edited mid-run does not change the keys of
    later cells, and the commit is read once: the records name the code that actually ran."""
    from bench.core import snapshot
    from bench.report import provenance
    from bench.run import code_identity as ci

    head = tmp_path / "my_head.py"
    head.write_text("import helper_mod\nX = 1\n")
    (tmp_path / "helper_mod.py").write_text("Y = 1\n")
    before = ci.closure([head])
    with snapshot.frozen():
        first = ci.closure([head])
        head.write_text("import helper_mod\nX = 2\n")
        (tmp_path / "helper_mod.py").write_text("Y = 2\n")
        assert ci.closure([head]) == first == before
        calls = []
        monkeypatch.setattr(provenance, "_code_version", lambda: calls.append(1) or {"git_commit": str(len(calls))})
        assert provenance.code_version() == provenance.code_version() == {"git_commit": "1"}
    after = ci.closure([head])  # outside: the files as they are now
    assert after != before and set(after) == set(before)
    assert provenance.code_version() == {"git_commit": "2"}
