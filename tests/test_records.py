"""The typed result record: one schema, one loader that validates, upgrades and checks checksums."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench.core import records
from bench.core.records import SCHEMA_VERSION, ResultFileError
from bench.report import leaderboard, results


def raw(head="h", **extra) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": "2026-01-01T00:00:00+00:00",
        "status": "ok",
        "suite": {"name": "toy", "version": 1, "main_metric": "acc", "metric_directions": [["acc", "higher"]]},
        "head": {"name": head, "version": 1},
        "config": {"resolved": {}, "hash": "h", "protocol_hash": "p", "key": "k"},
        "metrics": {"acc": 0.5},
        **extra,
    }


def test_a_valid_record_round_trips_through_its_dict():
    rec = records.from_dict(raw(seed=3, repeat=1, diagnostics={"x": 1.0}))
    assert rec.suite.name == "toy" and rec.head.name == "h" and rec.seed == 3 and rec.directions == {"acc": True}
    again = records.from_dict(copy.deepcopy(rec.to_dict()))
    assert again == rec and "repeats" not in rec.to_dict() and "outcomes" not in rec.to_dict()


@pytest.mark.parametrize(
    "edit,problem",
    [
        (lambda d: d["metrics"].update(acc="0.9"), "metrics.acc"),
        (lambda d: d["suite"].pop("main_metric"), "suite.main_metric"),
        (lambda d: d.update(status="great"), "status"),
        (lambda d: d["head"].update(version="1"), "head.version"),
        (lambda d: d.update(seed=True), "seed"),
        (lambda d: d["suite"].update(metric_directions=[["acc", "up"]]), "metric_directions"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
        (lambda d: d.pop("schema_version"), "schema_version"),
        (lambda d: d.update(suite="toy"), "record.suite must be a mapping"),
        (lambda d: d.update(suite=None), "record.suite is null"),
        (lambda d: d.update(head=[1]), "record.head must be a mapping"),
        (lambda d: d.update(config=None), "record.config is null"),
    ],
)
def test_a_record_that_does_not_validate_is_named_with_its_problem(edit, problem):
    d = raw()
    edit(d)
    with pytest.raises(ResultFileError, match=problem):
        records.from_dict(d, "result file 'x.json'")


def test_schema_1_is_upgraded_and_never_reusable():
    old = raw()
    old["schema_version"] = 1
    del old["config"]["key"]
    rec = records.from_dict(old)
    assert rec.schema_version == SCHEMA_VERSION and rec.config.key is None and rec.identity == {}


def test_the_board_names_and_leaves_out_a_hand_edited_record(tmp_path):
    results.write(tmp_path, raw("good"))
    bad = tmp_path / "runs" / "toy" / "edited.json"
    bad.write_text(json.dumps(raw("edited") | {"metrics": {"acc": "high"}}))
    warnings = []
    md = leaderboard.build(tmp_path, warn=warnings.append, resamples=0)
    assert "| good" in md and "edited" not in md
    assert any("edited.json" in w and "metrics.acc" in w for w in warnings)


RANKS = {"q/rank": [0, 1, 2, 0], "q/tied_neg": [0, 0, 0, 0], "q/tied_pos": [1, 1, 1, 1]}  # acc@1 = 0.5
SPEC = {"acc": {"kind": "hit", "k": 1, "query": "q"}}


def test_outcomes_are_read_only_with_the_checksum_the_record_names(tmp_path):
    path = results.write(tmp_path, raw("h"), RANKS, SPEC)
    rec = results.read(path)
    assert list(results.read_outcomes(tmp_path, rec)["q/rank"]) == [0, 1, 2, 0]
    npz = results.outcomes_path(tmp_path, "toy", "h")
    npz.write_bytes(npz.read_bytes() + b"x")
    with pytest.raises(ResultFileError, match="checksum mismatch"):
        results.read_outcomes(tmp_path, rec)


def _edited(tmp_path, edit) -> Path:
    path = results.write(tmp_path, raw("h"), RANKS, SPEC)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_a_metric_that_its_own_outcomes_do_not_give_is_refused_everywhere(tmp_path):
    """The edited number (0.0001 where the outcomes give 0.5) is never shown, reused or made a baseline."""
    path = _edited(tmp_path, lambda d: d["metrics"].update(acc=0.0001))
    with pytest.raises(ResultFileError, match="claims acc = 0.0001.*give 0.5"):
        results.read_outcomes(tmp_path, results.read(path))
    warnings = []
    assert results.load_all(tmp_path, warn=warnings.append) == []
    assert any("claims acc" in w for w in warnings)


def test_an_edited_spec_is_caught_by_the_copy_inside_the_checksummed_file(tmp_path):
    path = _edited(tmp_path, lambda d: (d["outcomes"]["spec"]["acc"].update(k=5), d["metrics"].update(acc=1.0)))
    with pytest.raises(ResultFileError, match="another outcome spec"):
        results.read_outcomes(tmp_path, results.read(path))


def test_a_copy_of_a_result_is_not_a_second_repeat(tmp_path):
    path = results.write(tmp_path, raw("h"), RANKS, SPEC)
    (path.parent / "h.bak.json").write_bytes(path.read_bytes())
    warnings = []
    found = results.load_all(tmp_path, warn=warnings.append)
    assert [(r.head.name, r.repeat) for r in found] == [("h", 0)]
    assert any("h.bak.json" in w and "copy" in w for w in warnings)
