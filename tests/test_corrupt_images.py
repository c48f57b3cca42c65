"""Undecodable images: the run fails listing them, or --skip-corrupt leaves them out and says which."""

import json
import os
import shutil
import socket

import torch
from PIL import Image
from test_backbone import tiny_backbone  # noqa: F401 (fixture)
from test_retrieval_suite import data, run_retrieval  # noqa: F401 (module fixture: COCO + Flickr + a tiny backbone)

from bench.features import extract
from bench.features.cache import FeatureCache
from bench.report import results


def corrupt(path, how):
    if how == "garbage":
        path.write_bytes(b"this is not an image at all" * 10)
    else:  # a JPEG cut in half: the header decodes, the pixels do not
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])


def test_undecodable_rows_are_zero_recorded_and_cached(tiny_backbone, tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"img{i}.jpg"
        arr = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(i)) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(p, quality=95)
        paths.append(p)
    clean = extract.image_points(
        FeatureCache(tmp_path / "c0"), tiny_backbone, "toy", "test", paths, batch_size=4, workers=0, progress=False
    )
    corrupt(paths[1], "garbage")
    corrupt(paths[4], "truncated")
    cache = FeatureCache(tmp_path / "c1")
    got = extract.image_points(cache, tiny_backbone, "toy", "test", paths, batch_size=4, workers=0, progress=False)
    assert sorted(got.corrupt) == [1, 4]
    assert "UnidentifiedImageError" in got.corrupt[1] and "truncated" in got.corrupt[4]
    assert not got.points[[1, 4]].any()
    keep = [0, 2, 3, 5]
    assert torch.allclose(got.points[keep], clean.points[keep], atol=1e-6)  # a bad image spoils nothing else
    again = extract.image_points(cache, tiny_backbone, "toy", "test", paths, batch_size=4, workers=0, progress=False)
    assert again.cached and again.corrupt == got.corrupt and torch.equal(again.points, got.points)


def test_corrupt_test_image_fails_by_default_then_skip_corrupt_leaves_it_out(data, tmp_path, capsys):
    src, cfg, _ = data
    root = tmp_path / "data"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("cache"))
    small = root / "small.yaml"
    small.write_text(
        "train: {steps: 5, batch_size: 16, warmup_steps: 1}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 8, cache_dir: '{root / 'cache'}'}}}}\n"
    )
    txt = root / "flickr30k" / "flickr30k_test_karpathy.txt"  # distinct captions: no ties for rounding to break
    lines = txt.read_text().splitlines()
    txt.write_text(
        "\n".join(
            [lines[0]]
            + [
                f"{line.split(',')[0]},{animal} number {i} on a {thing}"
                for i, (line, animal, thing) in enumerate(
                    zip(lines[1:], ["cat", "dog", "cow", "owl", "fox"] * 8, ["mat", "bus", "hill", "tree"] * 10)
                )
            ]
        )
        + "\n"
    )
    bad = root / "flickr30k" / "1003.jpg"
    corrupt(bad, "garbage")
    capsys.readouterr()
    assert run_retrieval(root, cfg, small, tmp_path / "a", heads="clip_frozen") == 2
    err = capsys.readouterr().err
    assert "flickr30k/test: 1 of 8 images could not be decoded" in err and str(bad) in err and "--skip-corrupt" in err
    assert "--check-data" not in err  # it would not see them: the hint would mislead
    assert not (tmp_path / "a" / "runs").exists()  # nothing written for a run that did not happen

    shards = list((root / "cache").rglob("shard-*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    out = tmp_path / "b"
    assert main_skip(root, cfg, small, out) == 0
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps  # the failed run's pass was reused
    rec = results.read(results.run_path(out, "retrieval", "clip_frozen"))
    skipped = rec.suite.test_set["corrupt_images_skipped"]
    assert list(skipped) == ["flickr30k/test"] and skipped["flickr30k/test"]["count"] == 1
    assert list(skipped["flickr30k/test"]["files"]) == [str(bad)]
    assert rec.suite.test_set["datasets"]["flickr30k"] == {
        **rec.suite.test_set["datasets"]["flickr30k"],
        "images": 7,
        "captions": 35,
    }

    # Left out means exactly as if the image and its captions were never in the dataset.
    clean = tmp_path / "clean"
    shutil.copytree(root, clean, ignore=shutil.ignore_patterns("cache"))
    (clean / "flickr30k" / "1003.jpg").unlink()
    txt = clean / "flickr30k" / "flickr30k_test_karpathy.txt"
    txt.write_text(
        "".join(line for line in txt.read_text().splitlines(keepends=True) if not line.startswith("1003.jpg"))
    )
    small_clean = clean / "small.yaml"
    small_clean.write_text(small.read_text().replace(str(root / "cache"), str(clean / "cache")))
    assert run_retrieval(clean, cfg, small_clean, tmp_path / "c", heads="clip_frozen") == 0
    ref = results.read(results.run_path(tmp_path / "c", "retrieval", "clip_frozen"))
    flickr = {k: v for k, v in rec.metrics.items() if k.startswith("flickr30k/")}
    assert flickr == {k: v for k, v in ref.metrics.items() if k.startswith("flickr30k/")}
    assert rec.config.hash != ref.config.hash  # skip_corrupt is part of the protocol


def test_corrupt_training_image_drops_its_pairs(data, tmp_path):
    src, cfg, _ = data
    root = tmp_path / "data"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("cache"))
    small = root / "small.yaml"
    small.write_text(
        "train: {steps: 3, batch_size: 8, warmup_steps: 1}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 8, cache_dir: '{root / 'cache'}', "
        "datasets: [flickr30k]}}\n"
    )
    corrupt(root / "mscoco_captions" / "train2014" / "COCO_train2014_000000000002.jpg", "truncated")
    assert main_skip(root, cfg, small, tmp_path / "out", heads="cosine") == 0
    rec = results.read(results.run_path(tmp_path / "out", "retrieval", "cosine"))
    ident = rec.suite.test_set
    # 30 captions: 3 go with the corrupt image, the held-out validation image's go to validation
    assert ident["train"]["pairs"] + ident["validation"]["captions"] == 27
    assert ident["corrupt_images_skipped"]["mscoco_captions/train"]["count"] == 1


def test_skip_corrupt_does_not_apply_to_the_synthetic_suite(capsys):
    from bench.cli import main

    assert main(["--suite", "synthetic", "--skip-corrupt", "--no-progress"]) == 2
    assert "--skip-corrupt does not apply" in capsys.readouterr().err


def test_building_folders_of_dead_writers_are_swept(tmp_path):
    cache = FeatureCache(tmp_path)
    host = socket.gethostname().replace(".", "_")
    dead = subprocess_pid_that_exited()
    left = tmp_path / f".abc.{host}.{dead}.x1.partial"
    live = tmp_path / f".abd.{host}.{os.getpid()}.x2.partial"
    old_elsewhere = tmp_path / ".abe.otherhost.1.x3.partial"
    young_elsewhere = tmp_path / ".abf.otherhost.1.x4.partial"
    for d in (left, live, old_elsewhere, young_elsewhere):
        d.mkdir()
        (d / "shard-00000.safetensors").write_bytes(b"half")
    os.utime(old_elsewhere, (0, 0))
    cache.store({"dataset": "toy"}, torch.ones(3, 2, 4))
    remaining = {p.name for p in tmp_path.glob(".*.partial")}
    assert remaining == {live.name, young_elsewhere.name}
    assert torch.equal(cache.load({"dataset": "toy"}), torch.ones(3, 2, 4))
    assert json.loads((cache.path({"dataset": "toy"}) / "manifest.json").read_text())["extra"] == {}


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def main_skip(root, cfg, small, out, heads="clip_frozen"):
    from bench.cli import main

    return main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            str(cfg),
            "--data-root",
            str(root),
            "--config",
            str(small),
            "--heads",
            heads,
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
            "--skip-corrupt",
        ]
    )
