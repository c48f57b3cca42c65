"""Feature cache: second run does no forward pass; stale, partial or altered entries are rebuilt."""

import json

import pytest
import torch

from bench.features.cache import FeatureCache

FIELDS = {
    "backbone": {"model": "tiny", "weights": "random:seed0", "layers": 2},
    "dataset": "toy",
    "split": "test",
    "fingerprint": "abc",
    "side": "image",
}


class Producer:
    """Stands in for the backbone and counts forward passes (batches)."""

    def __init__(self, n=25, batch=10):
        self.calls, self.n, self.batch = 0, n, batch

    def __call__(self):
        g = torch.Generator().manual_seed(0)
        batches = []
        for start in range(0, self.n, self.batch):
            self.calls += 1
            batches.append(torch.randn(min(self.batch, self.n - start), 2, 4, generator=g))
        return torch.cat(batches), {"made_by": "Producer"}


def test_second_run_does_no_forward_pass(tmp_path):
    cache, produce = FeatureCache(tmp_path, shard_rows=10), Producer()
    first, cached, extra = cache.get_or_build(FIELDS, produce)
    assert not cached and produce.calls == 3 and first.shape == (25, 2, 4)
    again, cached, extra_again = cache.get_or_build(FIELDS, produce)
    assert cached and produce.calls == 3 and torch.equal(first, again)
    assert extra == extra_again == {"made_by": "Producer"}  # what the builder recorded comes back from disk
    assert len(list(cache.path(FIELDS).glob("shard-*.safetensors"))) == 3
    assert not list(tmp_path.glob("*.partial"))


def test_any_change_of_key_fields_misses(tmp_path):
    cache, produce = FeatureCache(tmp_path), Producer()
    cache.get_or_build(FIELDS, produce)
    for key, value in [("fingerprint", "abd"), ("split", "train"), ("side", "text")]:
        cache.get_or_build({**FIELDS, key: value}, produce)
    cache.get_or_build({**FIELDS, "backbone": {**FIELDS["backbone"], "layers": 3}}, produce)
    assert produce.calls == 5 * 3


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "manifest"])
def test_damaged_cache_is_detected_and_rebuilt(tmp_path, damage, caplog):
    cache, produce = FeatureCache(tmp_path, shard_rows=10), Producer()
    good = cache.get_or_build(FIELDS, produce).points
    shard = cache.path(FIELDS) / "shard-00001.safetensors"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-7])
    elif damage == "alter":
        data = bytearray(shard.read_bytes())
        data[-3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "delete":
        shard.unlink()
    else:
        (cache.path(FIELDS) / "manifest.json").write_text("{not json")
    assert cache.problem(FIELDS) is not None
    rebuilt, cached, _ = cache.get_or_build(FIELDS, produce)
    assert not cached and produce.calls == 6 and torch.equal(rebuilt, good)
    assert "stale" in caplog.text
    assert cache.problem(FIELDS) is None


def test_interrupted_build_leaves_nothing_usable_behind(tmp_path):
    cache = FeatureCache(tmp_path)

    def boom():
        raise KeyboardInterrupt  # the forward pass is interrupted before anything is published

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build(FIELDS, boom)
    assert cache.problem(FIELDS) == "not cached"
    assert not list(tmp_path.iterdir())


def test_manifest_records_shape_and_checksums(tmp_path):
    cache = FeatureCache(tmp_path, shard_rows=10)
    cache.get_or_build(FIELDS, Producer())
    manifest = json.loads((cache.path(FIELDS) / "manifest.json").read_text())
    assert manifest["rows"] == 25 and manifest["shape"] == [25, 2, 4]
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 5]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


def test_a_concurrent_writer_that_publishes_first_wins_cleanly(tmp_path):
    """Two ranks extracting the same features: the second finds a valid entry in place and keeps it."""
    cache = FeatureCache(tmp_path)
    other = FeatureCache(tmp_path)

    def produce_while_other_publishes():
        other.get_or_build(FIELDS, lambda: (torch.ones(2, 2, 4), {}))  # the other rank finishes first
        return torch.ones(2, 2, 4), {}

    points, cached, _ = cache.get_or_build(FIELDS, produce_while_other_publishes)
    assert not cached and torch.equal(points, torch.ones(2, 2, 4))
    assert cache.problem(FIELDS) is None
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(FIELDS).name]


def test_token_sets_are_ragged_float16_and_read_a_batch_at_a_time(tmp_path):
    """Only real tokens are stored (float16); the file is memory-mapped, never loaded whole; a batch comes
    back padded to its own longest set with the right mask; a damaged token file is rebuilt."""
    import numpy as np

    from bench.features.token_sets import TokenSets

    cache = FeatureCache(tmp_path)
    g = torch.Generator().manual_seed(0)
    points = torch.randn(5, 6, 3, generator=g)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3, 2, 5])[:, None]
    calls = []

    def stream(writer, start, stop):
        calls.append((start, stop))
        writer.append(points[start : start + 2], mask[start : start + 2])
        writer.append(points[start + 2 : stop], mask[start + 2 : stop])
        return {"note": "x"}

    fields = {**FIELDS, "readout": "tokens"}
    sets, cached, extra = cache.get_or_build_tokens(fields, 5, stream)
    assert not cached and extra == {"note": "x"} and isinstance(sets, TokenSets) and calls == [(0, 5)]
    assert isinstance(sets.tokens, np.memmap) and sets.total_tokens == 17 and sets.shape == (5, 6, 3)
    p, m = sets.rows(torch.tensor([1, 3]))
    assert p.shape == (2, 2, 3) and m.tolist() == [[True, False], [True, True]]
    assert torch.equal(p[0, 0], points[1, 0].half().float()) and torch.equal(p[1], points[3, :2].half().float())
    sub = sets.select(torch.tensor([True, False, True, False, False]))
    q, n = sub.rows(torch.arange(2))
    assert len(sub) == 2 and torch.equal(q[1, :3], points[2, :3].half().float()) and n.sum() == 9
    again, cached, _ = cache.get_or_build_tokens(fields, 5, stream)
    assert cached and len(calls) == 1
    with open(cache.path(fields) / "tokens.f16", "r+b") as fh:  # flip bytes in place: same size
        fh.seek(8)
        fh.write(b"\x00\x7c")
    assert "checksum" in cache.problem(fields)
    cache.get_or_build_tokens(fields, 5, stream)
    assert len(calls) == 2 and cache.problem(fields) is None


def test_token_parts_of_ranks_join_in_order_with_an_empty_share(tmp_path):
    """What rank 0 does under torchrun: the ranks' parts (one empty) joined into one entry equal to one writer's."""
    from bench.features.token_sets import TokenSets

    g = torch.Generator().manual_seed(1)
    points = torch.randn(5, 4, 3, generator=g)
    mask = torch.arange(4)[None, :] < torch.tensor([4, 1, 3, 2, 2])[:, None]
    cache = FeatureCache(tmp_path / "c")
    parts, layouts = tmp_path / "parts", []
    for r, (a, b) in enumerate([(0, 3), (3, 3), (3, 5)]):
        (parts / f"rank{r:05d}").mkdir(parents=True)
        layouts.append(
            cache._write_tokens(
                parts / f"rank{r:05d}",
                lambda w, a=a, b=b: (
                    w.append(points[a:b], mask[a:b]) if b > a else None,
                    {"corrupt": {str(a): "x"}} if a == 3 else {},
                )[1],
            )
        )
    joined = tmp_path / "joined"
    joined.mkdir()
    layout = cache._join_parts(joined, parts, layouts)
    whole = tmp_path / "whole"
    whole.mkdir()
    cache._write_tokens(whole, lambda w: w.append(points, mask))
    assert (joined / "tokens.f16").read_bytes() == (whole / "tokens.f16").read_bytes()
    a, b = TokenSets(joined, 3, layout["total_tokens"]), TokenSets(whole, 3, layout["total_tokens"])
    assert torch.equal(a.rows(torch.arange(5))[0], b.rows(torch.arange(5))[0]) and layout["rows"] == 5
    assert layout["extra"] == {"corrupt": {"3": "x"}}
