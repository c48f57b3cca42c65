"""Training losses as a protocol option, and heads with direction-specific scores.

The SigLIP loss is checked against open_clip's own SigLipLoss and a float64 loop over pairs; the
InfoNCE loss with two direction matrices against its definition; the option reaches the protocol
hash, the trained loss parameters reach the weights file and the result, and a bad name exits 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.eval import metrics
from bench.run import config, losses


def test_siglip_equals_open_clip_on_cosine_scores():
    from open_clip.loss import SigLipLoss

    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(6, 5), dim=-1)
    loss = losses.build("siglip")
    with torch.no_grad():
        loss.log_scale.fill_(math.log(7.0))
        loss.bias.fill_(-3.0)
    want = SigLipLoss()(x, y, torch.tensor(7.0), torch.tensor(-3.0))
    s = x @ y.T
    assert torch.allclose(loss(s, s), want, atol=1e-6)


def test_siglip_against_a_pair_loop_with_two_directions():
    torch.manual_seed(1)
    a, b = torch.randn(4, 4).double(), torch.randn(4, 4).double()
    loss = losses.build("siglip").double()
    t, bias = float(loss.scale.detach()), float(loss.bias.detach())  # 10 and -10, as stored (float32 log 10)
    assert t == pytest.approx(10.0, rel=1e-6) and bias == -10.0

    def loop(s):
        total = 0.0
        for i in range(4):
            for j in range(4):
                label = 1.0 if i == j else -1.0
                total -= math.log(1 / (1 + math.exp(-label * (t * float(s[i, j]) + bias))))
        return total / 4

    assert float(loss(a, a).detach()) == pytest.approx(loop(a), rel=1e-9)
    assert float(loss(a, b).detach()) == pytest.approx((loop(a) + loop(b)) / 2, rel=1e-9)
    assert loss.infonce_optimum is False and losses.build("infonce").infonce_optimum is True


def test_infonce_with_direction_matrices_takes_rows_of_one_and_columns_of_the_other():
    torch.manual_seed(2)
    i2t, t2i = torch.randn(5, 5).double(), torch.randn(5, 5).double()
    rows = -torch.log_softmax(i2t, dim=1).diagonal().mean()
    cols = -torch.log_softmax(t2i, dim=0).diagonal().mean()
    assert float(losses.build("infonce")(i2t, t2i)) == pytest.approx(float(rows + cols) / 2, rel=1e-12)
    assert float(metrics.infonce_terms(i2t, t2i).mean()) == pytest.approx(float(rows + cols) / 2, rel=1e-12)
    assert float(losses.build("infonce")(i2t, i2t)) == pytest.approx(float(metrics.symmetric_infonce(i2t)), rel=1e-12)


def test_retrieval_recalls_rank_text_queries_by_the_t2i_matrix():
    i2t = torch.eye(3)
    t2i = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])  # texts 0 and 1 find the wrong image
    got = metrics.retrieval_recalls(i2t, torch.eye(3, dtype=torch.bool), ks=(1,), t2i=t2i)
    assert got["text_retrieval_recall@1"] == 1.0
    assert got["image_retrieval_recall@1"] == pytest.approx(1 / 3)


def test_loss_is_part_of_the_protocol_and_checked():
    a = config.resolve({})
    b = config.resolve({"train": {"loss": "siglip"}})
    assert a["train"]["loss"] == "infonce" and config.config_hash(a) != config.config_hash(b)
    with pytest.raises(config.ConfigError, match="siglip"):
        config.resolve({"train": {"loss": "sigclip"}})


def test_siglip_run_trains_the_loss_and_saves_it(tmp_path):
    from safetensors.torch import load_file

    from bench.report import results
    from bench.run.runner import run_suite

    cfg = config.resolve(
        {
            "train": {"steps": 30, "batch_size": 64, "loss": "siglip"},
            "suites": {"synthetic": {"train_pairs": 512, "test_pairs": 64}},
        }
    )
    summary = run_suite(
        "synthetic", ["cosine"], cfg, tmp_path, torch.device("cpu"), progress=False, log=lambda *a: None
    )
    record = next(r for r in summary.records if r.head.name == "cosine")
    assert record.status == "ok"
    trained = record.trained_loss
    assert trained["name"] == "siglip"
    assert trained["parameters"]["bias"] != -10.0  # the bias moved: it was trained
    state = load_file(str(results.weights_path(tmp_path, "synthetic", "cosine")))
    assert float(state["loss.bias"]) == pytest.approx(trained["parameters"]["bias"])
    assert record.config.resolved["train"]["loss"] == "siglip"


def test_bad_loss_name_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train: {loss: infonse}\n")
    proc = subprocess.run(
        [sys.executable, "run_bench.py", "--suite", "synthetic", "--out", str(tmp_path / "out"), "--config", str(cfg)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "infonce" in proc.stderr and "Traceback" not in proc.stderr
