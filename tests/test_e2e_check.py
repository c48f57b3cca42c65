"""The GPU end-to-end script runs on a CPU at toy size (the numbers it prints are what matters on a GPU)."""

import json

from test_backbone import TINY

from bench.tools import e2e_check


def test_e2e_check_runs_and_reports_throughput(tmp_path, capsys):
    cfg = tmp_path / "simbench-tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "e2e.json"
    assert (
        e2e_check.main(
            [
                "--images",
                "12",
                "--backbone",
                str(cfg),
                "--layers",
                "2",
                "--steps",
                "2",
                "--batch",
                "16",
                "--device",
                "cpu",
                "--workers",
                "0",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    units = [r["unit"] for r in report["rows"]]
    import heads

    trainable = sum(heads.get_head(n).trainable for n in heads.list_heads())
    assert units[0] == "images/s" and units.count("pairs/s") == trainable  # one row per head that trains
    assert all(r["per_second"] > 0 for r in report["rows"])
