"""A run stopped at any point leaves no corrupt file, and the same command resumes it."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import small_config

from bench.core import atomic
from bench.report import results

REPO = Path(__file__).resolve().parent.parent


def command(cfg, out):
    return [
        sys.executable,
        str(REPO / "run_bench.py"),
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--no-progress",
        "--heads",
        "cosine,kme_rbf,kme_rff",
    ]


def wait_for(path: Path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        if proc.poll() is not None or time.time() - start > timeout:
            pytest.fail(f"{path} never appeared (exit {proc.poll()})")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, marks=pytest.mark.slow), signal.SIGTERM])
def test_killed_during_training_resumes_and_reuses_finished_cells(tmp_path, sig):
    cfg = small_config(tmp_path, train={"steps": 1000, "batch_size": 64, "warmup_steps": 5})
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command(cfg, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = results.run_path(out, "synthetic", "cosine")
    wait_for(first, proc)  # cosine finished; kme_rbf is training now
    time.sleep(0.3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not results.run_path(out, "synthetic", "kme_rff").exists()
    results.read(first)  # what was finished is intact
    # a kill -9 in the middle of a write leaves at most a temporary file; plant one to be sure
    from bench.core import processes

    (first.parent / f".kme_rbf.json.{processes.host_name()}~{proc.pid}.abc123.tmp").write_text("{half")
    rerun = subprocess.run(command(cfg, out), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "cosine: reused" in rerun.stdout and "kme_rbf: reused" not in rerun.stdout
    assert all(
        results.read(results.run_path(out, "synthetic", h)).status == "ok" for h in ("cosine", "kme_rbf", "kme_rff")
    )
    assert not list(out.rglob("*.tmp"))


def test_no_space_left_while_writing_keeps_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic.write_json(target, {"old": 1})

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_out_of_memory_while_scoring_retries_with_smaller_chunks_then_fails_clearly():
    import torch

    import heads
    from bench.eval.scoring import ScoreError, score_matrix

    head = heads.get_head("kme_rbf")(8, 8, memory_budget_mb=64.0)
    real = type(head).score
    seen = []

    def flaky(self, a, b):
        seen.append(self.memory_budget_mb)
        if self.memory_budget_mb > 10:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return real(self, a, b)

    x, y = torch.randn(5, 3, 8), torch.randn(6, 3, 8)
    with torch.no_grad():
        img, txt = head.encode_image(x), head.encode_text(y)
    type(head).score = flaky
    try:
        out = score_matrix(head, img, txt, 5, 6)
        assert out.shape == (5, 6) and seen == [64.0, 32.0, 16.0, 8.0]
        head.memory_budget_mb = 1e9
        with pytest.raises(ScoreError, match="out of memory while scoring down to memory_budget_mb"):
            score_matrix(head, img, txt, 5, 6)
    finally:
        type(head).score = real


def test_kill_9_in_the_middle_of_writes_never_leaves_a_corrupt_file(tmp_path):
    """A writer rewriting a large result file in a loop is killed at an arbitrary moment."""
    target = tmp_path / "runs" / "s" / "h.json"
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from bench.core import atomic\n"
        "i = 0\n"
        "while True:\n"
        f"    atomic.write_json({str(target)!r}, {{'i': i, 'payload': ['x' * 1000] * 2000}})\n"
        "    i += 1\n"
    )
    for delay in (0.15, 0.4, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", script])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if target.exists():
            assert json.loads(target.read_text())["payload"][0] == "x" * 1000  # whole, never half
    atomic.sweep_stale(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_and_cache_folders_follow_the_umask(tmp_path, umask):
    from bench.features.cache import FeatureCache

    old = os.umask(umask)
    try:
        atomic.write_json(tmp_path / "r.json", {"a": 1})
        cache = FeatureCache(tmp_path / "cache")
        cache.store({"k": 1}, torch.zeros(2, 3))
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask
    entry = cache.path({"k": 1})
    assert entry.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (entry / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_live_writers_temporary_file_is_never_swept(tmp_path):
    """A second run starting while the first writes used to delete the first's temporary file (its rename
    then failed with FileNotFoundError). Only a dead owner's leftovers are removed."""
    from bench.core import processes

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        host = processes.host_name()
        live = tmp_path / f".cosine.json.{host}~{sleeper.pid}.x1.tmp"
        gone = tmp_path / f".cosine.json.{host}~{dead.pid}.x2.tmp"
        elsewhere = tmp_path / f".cosine.json.otherhost~{dead.pid}.x3.tmp"
        for f in (live, gone, elsewhere):
            f.write_text("{half")
        with atomic.atomic_path(tmp_path / "mine.json") as mine:  # this process is writing too
            Path(mine).write_text("{}")
            assert atomic.sweep_stale(tmp_path) == [gone]
            assert Path(mine).exists()
        assert live.exists() and elsewhere.exists() and (tmp_path / "mine.json").read_text() == "{}"
    finally:
        sleeper.kill()
        sleeper.wait()
