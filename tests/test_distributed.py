"""Two processes under torchrun (gloo, CPU) give the metrics of one process, within float tolerance."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import small_config

from bench.cli import main
from bench.report import results

REPO = Path(__file__).resolve().parent.parent


def one_and_two_processes(tmp_path, cfg, heads: str):
    """The synthetic suite with ``heads`` in this process (out ``one``) and under 2 gloo ranks (``two``):
    both runs' records by head, and the torchrun process."""
    assert main(["--config", str(cfg), "--out", str(tmp_path / "one"), "--heads", heads, "--no-progress"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "run_bench.py"),
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "two"),
        "--heads",
        heads,
        "--device",
        "cpu",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by_head = lambda out: {r.head.name: r for r in results.load_all(out)}  # noqa: E731 (a one-line helper, used just below)
    return by_head(tmp_path / "one"), by_head(tmp_path / "two"), proc


def test_torchrun_two_processes_match_one(tmp_path):
    cfg = small_config(tmp_path)
    heads = "cosine,kme_rbf,kme_rff"
    one, two, proc = one_and_two_processes(tmp_path, cfg, heads)
    assert proc.stdout.count("# simbench leaderboard") == 1  # rank 0 alone reports
    assert set(one) == set(two)
    for head in heads.split(","):
        assert two[head].config.hash == one[head].config.hash
        for metric, value in one[head].metrics.items():
            assert two[head].metrics[metric] == pytest.approx(value, abs=1e-5), (head, metric)
    assert not list((tmp_path / "two").rglob("*.tmp"))


@pytest.mark.slow  # 20 s: two more torchrun launches
def test_torchrun_field_heads_and_siglip_match_one_process(tmp_path):
    """Direction-specific scores, per-step random features and the loss's own parameters under 2 ranks:
    FILIP's ragged token reps are padded to a common width when gathered, WPSE's draws agree across
    ranks, SigLIP's temperature and bias are averaged like a head's parameters."""
    from helpers import SMALL

    cfg = small_config(tmp_path, train={**SMALL["train"], "loss": "siglip"})
    heads = "wpse,filip,meru"
    one, two, _ = one_and_two_processes(tmp_path, cfg, heads)
    for head in heads.split(","):
        assert one[head].config.resolved["train"]["loss"] == "siglip"
        for name, value in one[head].trained_loss["parameters"].items():
            assert two[head].trained_loss["parameters"][name] == pytest.approx(value, abs=1e-4), (head, name)
        for metric, value in one[head].metrics.items():
            # float order differs across ranks: a rank may flip one near-tie of 150 items, so counts get 1/150
            tol = 1 / 150 if ("recall" in metric or "zeroshot" in metric) else 1e-3
            assert two[head].metrics[metric] == pytest.approx(value, abs=tol), (head, metric)


def test_batch_must_divide_across_processes(monkeypatch):
    import torch

    from bench.core import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        distributed.local_slice(torch.arange(64))


SHARDED_EXTRACTION = r"""
import json, os, sys
import torch
from pathlib import Path
from bench.core import distributed
from bench.features import extract
from bench.features.backbone import Backbone, BackboneSpec
from bench.features.cache import FeatureCache

work = Path(sys.argv[1])
distributed.init("cpu")
bb = Backbone(BackboneSpec.parse(str(work / "simbench-tiny.json")), layers=2, seed=0)
seen = {"images": 0, "texts": 0}
real_image, real_text = bb.image_points, bb.text_points
def count_image(x):
    seen["images"] += len(x)
    return real_image(x)
def count_text(t):
    seen["texts"] += len(t)
    return real_text(t)
bb.image_points, bb.text_points = count_image, count_text
paths = sorted((work / "images").glob("*.jpg"))
texts = [f"caption number {i}" for i in range(9)]
for attempt in ("first", "again"):
    cache = FeatureCache(work / "cache")
    img = extract.image_points(cache, bb, "toy", "test", paths, batch_size=2, workers=0, progress=False)
    txt = extract.text_points(cache, bb, "toy", "test", texts, batch_size=4, progress=False)
    torch.save({"images": img.points, "texts": txt.points, "corrupt": img.corrupt, "cached": img.cached and txt.cached,
                "seen": dict(seen)}, work / f"{attempt}-rank{distributed.rank()}.pt")
distributed.shutdown()
"""


def test_torchrun_shards_feature_extraction_and_publishes_one_cache(tmp_path):
    """Each rank encodes its share (7 images over 2 ranks: 4 + 3), every rank ends with all rows,
    the undecodable image is reported by whichever rank met it, and one entry is published."""
    import json

    import torch
    from PIL import Image
    from test_backbone import TINY

    from bench.features import extract
    from bench.features.backbone import Backbone, BackboneSpec
    from bench.features.cache import FeatureCache

    (tmp_path / "simbench-tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "images").mkdir()
    for i in range(7):
        arr = (torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(i)) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / "images" / f"{i}.jpg")
    (tmp_path / "images" / "5.jpg").write_bytes(b"not a jpeg")
    script = tmp_path / "extract.py"
    script.write_text(SHARDED_EXTRACTION)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"first-rank{r}.pt") for r in range(2)]
    assert [r["seen"] for r in ranks] == [{"images": 4, "texts": 5}, {"images": 3, "texts": 4}]
    bb = Backbone(BackboneSpec.parse(str(tmp_path / "simbench-tiny.json")), layers=2, seed=0)
    paths = sorted((tmp_path / "images").glob("*.jpg"))
    one = extract.image_points(
        FeatureCache(tmp_path / "one"), bb, "toy", "test", paths, batch_size=2, workers=0, progress=False
    )
    one_txt = extract.text_points(
        FeatureCache(tmp_path / "one"),
        bb,
        "toy",
        "test",
        [f"caption number {i}" for i in range(9)],
        batch_size=4,
        progress=False,
    )
    for r in ranks:
        assert not r["cached"] and r["corrupt"] == one.corrupt and list(one.corrupt) == [5]
        assert torch.allclose(r["images"], one.points, atol=1e-5) and torch.allclose(
            r["texts"], one_txt.points, atol=1e-5
        )
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2 and not list((tmp_path / "cache").glob(".*"))  # one image entry, one text entry
    again = [torch.load(tmp_path / f"again-rank{r}.pt") for r in range(2)]
    assert all(a["cached"] and a["seen"] == r["seen"] for a, r in zip(again, ranks))  # no forward pass the second time
    assert torch.equal(again[0]["images"], ranks[0]["images"])


def test_torchrun_retrieval_suite_shares_one_cache_and_rank0_writes(tmp_path):
    """The real-data suite under 2 gloo processes: extraction sharded, features equal to one
    process's, one set of cache entries, result files written once."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import load_file
    from test_backbone import TINY
    from test_retrieval_suite import make_coco_train, noisy_images

    from bench.data.fixtures import make_flickr

    root = tmp_path / "data"
    make_coco_train(root)
    make_flickr(root, n_images=5, per=2)
    noisy_images(root / "flickr30k", [p.name for p in (root / "flickr30k").glob("*.jpg")], 2)
    (root / "tiny.json").write_text(json.dumps(TINY))
    for name in ("one", "two"):
        (tmp_path / f"{name}.yaml").write_text(
            "train: {steps: 4, batch_size: 8, warmup_steps: 1}\n"
            f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 4, datasets: [flickr30k], "
            f"cache_dir: '{tmp_path / name / 'cache'}'}}}}\n"
        )
    args = [
        "--suite",
        "retrieval",
        "--backbone",
        str(root / "tiny.json"),
        "--data-root",
        str(root),
        "--heads",
        "cosine,filip",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*args, "--config", str(tmp_path / "one.yaml"), "--out", str(tmp_path / "one" / "out")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "run_bench.py"),
        *args,
        "--config",
        str(tmp_path / "two.yaml"),
        "--out",
        str(tmp_path / "two" / "out"),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("# simbench leaderboard") == 1

    def entries(name):
        out = {}
        for manifest in (tmp_path / name / "cache").glob("*/manifest.json"):
            fields = json.loads(manifest.read_text())["fields"]
            if fields.get("readout") == "tokens":  # each rank wrote its share; rank 0 joined them
                tokens = (manifest.parent / "tokens.f16").read_bytes()
                offsets = np.load(manifest.parent / "offsets.npy")
                out[("tokens", fields["dataset"], fields["split"], fields["side"])] = torch.frombuffer(
                    bytearray(tokens), dtype=torch.float16
                ).float()
                out[("offsets", fields["dataset"], fields["split"], fields["side"])] = torch.from_numpy(
                    offsets
                ).double()
                continue
            out[(fields["dataset"], fields["split"], fields["side"])] = torch.cat(
                [load_file(str(p))["points"] for p in sorted(manifest.parent.glob("shard-*.safetensors"))]
            )
        return out

    one, two = entries("one"), entries("two")
    assert set(one) == set(two) and len(two) == 12  # train and test, images and texts; layers, tokens and offsets
    for key in one:
        tol = 2e-3 if key[0] == "tokens" else 1e-5  # float16 storage: a batch-size rounding may flip a last bit
        assert one[key].shape == two[key].shape and torch.allclose(one[key], two[key], atol=tol), key
    assert not list((tmp_path / "two" / "cache").glob(".*"))
    rec = results.read(results.run_path(tmp_path / "two" / "out", "retrieval", "cosine"))
    assert rec.status == "ok" and rec.suite.test_set["datasets"]["flickr30k"]["images"] == 5
    assert results.read(results.run_path(tmp_path / "two" / "out", "retrieval", "filip")).status == "ok"
