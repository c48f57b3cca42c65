"""The speed benchmark runs and reports its ratios (no timing is asserted: speed is measured, not tested)."""

import json
import math

from bench.tools import perf


def test_perf_benchmark_writes_rows_and_ratios(tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert (
        perf.main(
            [
                "--n",
                "40",
                "--m",
                "60",
                "--points",
                "3",
                "--dim",
                "16",
                "--features",
                "32",
                "--batch",
                "16",
                "--repeats",
                "1",
                "--json",
                str(out),
                "--out",
                str(tmp_path / "rec"),
                "--bootstrap-images",
                "50",
            ]
        )
        == 0
    )
    record = json.loads(out.read_text())
    assert set(record["ratios"]) == {"time_kme_rbf_over_matmul", "time_kme_rff_over_cosine", "time_naive_over_kme_rbf"}
    assert all(v is not None and math.isfinite(v) and v > 0 for v in record["ratios"].values())
    rows = {r["row"] for r in record["rows"]}
    assert {
        "score cosine",
        "score kme_rbf",
        "score kme_rff",
        "score kme_rbf naive",
        "matmul same FLOPs as kme_rbf",
    } <= rows
    assert any(r.startswith("bootstrap 7 retrieval metrics, 50 images") for r in rows)
    assert record["git_commit"] is not None and record["libraries"]["torch"]
    assert list((tmp_path / "rec").glob("perf-cpu-*.json"))
    out = capsys.readouterr().out
    assert "time_kme_rbf_over_matmul" in out and "sizes: " in out and "nan" not in out


def test_naive_reference_equals_the_head():
    import torch

    import heads

    head = heads.get_head("kme_rbf")(8, 8, sigma=0.4)
    x, y = perf.unit_sets(5, 3, 8, "cpu", 1), perf.unit_sets(7, 3, 8, "cpu", 2)
    with torch.no_grad():
        img, txt = head.encode_image(x), head.encode_text(y)
        assert torch.allclose(perf.naive_kme(img, txt, 0.4), head.score(img, txt), atol=1e-4)


def test_naive_is_skipped_with_a_note_when_too_big(tmp_path):
    import torch

    report = perf.run(30, 40, 3, 8, 16, 8, torch.device("cpu"), 1, 1.0, naive_max_gb=1e-9, log=lambda s: None)
    assert report["ratios"]["time_naive_over_kme_rbf"] is None and "skipped" in report["notes"][0]


def test_extraction_benchmark_runs_both_loops(tmp_path, capsys):
    from test_backbone import TINY

    from bench.tools import perf_extraction

    cfg = tmp_path / "simbench-tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "x.json"
    assert (
        perf_extraction.main(
            [
                "--backbone",
                str(cfg),
                "--layers",
                "2",
                "--images",
                "12",
                "--batch",
                "4",
                "--workers",
                "0",
                "--rounds",
                "1",
                "--device",
                "cpu",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads(out.read_text())
    assert record["images"] == 12 and record["captions"] == 60
    assert math.isfinite(record["time_clip_benchmark_over_ours"]) and record["time_clip_benchmark_over_ours"] > 0
    assert "time_clip_benchmark_over_ours" in capsys.readouterr().out
