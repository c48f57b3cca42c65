"""Two processes under torchrun (gloo, CPU) give the metrics of one process, within float tolerance."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import results
from bench.cli import main
from helpers import small_config

REPO = Path(__file__).resolve().parent.parent


def test_torchrun_two_processes_match_one(tmp_path):
    cfg = small_config(tmp_path)
    heads = "cosine,kme_rbf,kme_rff"
    assert main(["--config", str(cfg), "--out", str(tmp_path / "one"), "--heads", heads, "--no-progress"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "run_bench.py"), "--config", str(cfg), "--out", str(tmp_path / "two"),
           "--heads", heads, "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("# simbench leaderboard") == 1  # rank 0 alone reports
    one = {r["head"]["name"]: r for r in results.load_all(tmp_path / "one")}
    two = {r["head"]["name"]: r for r in results.load_all(tmp_path / "two")}
    assert set(one) == set(two)
    for head in heads.split(","):
        assert two[head]["config"]["hash"] == one[head]["config"]["hash"]
        for metric, value in one[head]["metrics"].items():
            assert two[head]["metrics"][metric] == pytest.approx(value, abs=1e-5), (head, metric)
    assert not list((tmp_path / "two").rglob("*.tmp"))


def test_batch_must_divide_across_processes(monkeypatch):
    import torch

    from bench import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        distributed.local_slice(torch.arange(64))
