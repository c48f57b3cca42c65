"""Retrieval datasets in the real on-disk formats, made by the tests; bad data fails clearly."""

import os
from pathlib import Path

import pytest
from PIL import Image

from bench.data import retrieval_data
from bench.data.fixtures import make_coco, make_flickr
from bench.data.retrieval_data import DataError


def test_coco_and_flickr_are_read_with_every_caption(tmp_path):
    make_coco(tmp_path)
    make_flickr(tmp_path)
    coco = retrieval_data.load(tmp_path, "mscoco_captions", "test")
    assert len(coco.image_paths) == 4 and len(coco.captions) == 20
    assert coco.caption_image[:6] == [0, 0, 0, 0, 0, 1]
    flickr = retrieval_data.load(tmp_path, "flickr30k", "test")
    assert len(flickr.image_paths) == 3 and flickr.captions[0] == "a caption of 0, with a comma 0"
    assert flickr.fingerprint() == retrieval_data.load(tmp_path, "flickr30k", "test").fingerprint()


def test_flickr_reader_agrees_with_clip_benchmark(tmp_path):
    from clip_benchmark.datasets.flickr import Flickr

    make_flickr(tmp_path)
    ours = retrieval_data.load(tmp_path, "flickr30k", "test")
    theirs = Flickr(str(tmp_path / "flickr30k"), str(tmp_path / "flickr30k" / "flickr30k_test_karpathy.txt"))
    assert [Path(p).name for p, _ in theirs.data] == [p.name for p in ours.image_paths]
    assert [c for _, caps in theirs.data for c in caps] == ours.captions


def test_missing_partial_and_malformed_data_fail_clearly_and_write_nothing(tmp_path):
    with pytest.raises(DataError, match="does not exist. Expected layout"):
        retrieval_data.load(tmp_path, "flickr30k", "test")
    make_coco(tmp_path)
    folder = tmp_path / "mscoco_captions" / "val2014"
    (folder / "COCO_val2014_000000000001.jpg").unlink()
    (folder / "COCO_val2014_000000000002.jpg").write_bytes(b"")
    before = sorted(os.listdir(folder))
    with pytest.raises(DataError, match=r"1 missing .*000000000001.*1 empty"):
        retrieval_data.load(tmp_path, "mscoco_captions", "test")
    assert sorted(os.listdir(folder)) == before
    (tmp_path / "mscoco_captions" / "coco_test_karpathy.json").write_text('{"images": 3}')
    with pytest.raises(DataError, match="not a COCO-style caption file"):
        retrieval_data.load(tmp_path, "mscoco_captions", "test")
    with pytest.raises(DataError, match="Did you mean: 'flickr30k'"):
        retrieval_data.load(tmp_path, "flickr30", "test")


def test_empty_caption_is_named(tmp_path):
    make_flickr(tmp_path)
    ann = tmp_path / "flickr30k" / "flickr30k_test_karpathy.txt"
    ann.write_text(ann.read_text() + "1000.jpg,   \n")
    with pytest.raises(DataError, match="empty caption"):
        retrieval_data.load(tmp_path, "flickr30k", "test")


def test_check_all_reports_ready_and_missing(tmp_path):
    make_flickr(tmp_path)
    rows = {r["dataset"]: r for r in retrieval_data.check_all(tmp_path)}
    assert rows["flickr30k"]["ready"] and "3 images, 15 captions" in rows["flickr30k"]["detail"]
    assert not rows["mscoco_captions"]["ready"] and "coco_test_karpathy.json" in rows["mscoco_captions"]["layout"]


def test_check_data_command(tmp_path, capsys, monkeypatch):
    from bench.cli import main

    make_coco(tmp_path)
    make_flickr(tmp_path)
    assert main(["--check-data", "--data-root", str(tmp_path)]) == 1  # the ImageNet variants are missing
    out = capsys.readouterr().out
    assert "mscoco_captions" in out and "yes" in out and "imagenet-r" in out and "hendrycks" in out
    assert max(len(line) for line in out.splitlines()) <= 100 and "| layout" not in out
    # the COCO test split is there, the train split every head of the real-data suites trains on is not
    assert "retrieval       mscoco_captions         yes" in out and "training        mscoco_captions         no" in out
    users = "classification, compositionality, linear_probe, retrieval"
    assert f"the train split every head of {users} trains on" in " ".join(out.split())
    monkeypatch.setenv("SIMBENCH_DATA", str(tmp_path / "nowhere"))
    assert main(["--check-data"]) == 1
    assert "does not exist" in " ".join(capsys.readouterr().out.split())  # wrapped to 100 columns


def test_open_clip_style_csv_is_a_training_source(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    csv = tmp_path / "train.csv"
    csv.write_text("filepath\ttitle\n0.png\ta cat\n1.png\ta dog\n0.png\tanother cat\n2.png\ta bird, flying\n")
    ds = retrieval_data.load(tmp_path / "unused", f"csv:{csv}", "train")
    assert ds.captions == ["a cat", "a dog", "another cat", "a bird, flying"]
    assert ds.caption_image == [0, 1, 0, 2] and len(ds.image_paths) == 3
    csv.write_text("path\ttitle\n0.png\tx\n")
    with pytest.raises(DataError, match="lacks column"):
        retrieval_data.load(tmp_path, f"csv:{csv}", "train")
    csv.write_text("filepath\ttitle\n9.png\tx\n")
    with pytest.raises(DataError, match="1 missing"):
        retrieval_data.load(tmp_path, f"csv:{csv}", "train")


def make_shards(tmp_path, n_shards=2, per_shard=3):
    import io
    import tarfile

    for s in range(n_shards):
        with tarfile.open(tmp_path / f"train-{s:03d}.tar", "w") as tf:
            for i in range(per_shard):
                key = f"{s:03d}{i:05d}"
                buf = io.BytesIO()
                Image.new("RGB", (12, 12), color=(20 * i, 10 * s, 99)).save(buf, format="JPEG")
                for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", f"shard {s} picture {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))


def test_webdataset_shards_are_a_training_source_read_through_the_tar(tmp_path):
    from bench.data import image_source

    make_shards(tmp_path)
    ds = retrieval_data.load(tmp_path, f"wds:{tmp_path}/train-{{000..001}}.tar", "train")
    assert len(ds.captions) == 6 and ds.captions[4] == "shard 1 picture 1" and ds.caption_image == list(range(6))
    img = image_source.open_image(ds.image_paths[4])
    assert img.size == (12, 12) and img.mode == "RGB"
    assert (
        ds.fingerprint()
        == retrieval_data.load(tmp_path, f"wds:{tmp_path}/train-{{000..001}}.tar", "train").fingerprint()
    )
    with pytest.raises(DataError, match="1 of 3 shards missing"):
        retrieval_data.load(tmp_path, f"wds:{tmp_path}/train-{{000..002}}.tar", "train")
    (tmp_path / "train-001.tar").write_bytes((tmp_path / "train-001.tar").read_bytes()[:700])
    with pytest.raises(DataError, match="truncated|lacks"):
        retrieval_data.load(tmp_path, f"wds:{tmp_path}/train-{{000..001}}.tar", "train")


def write_tar(path, samples):
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


def jpeg(seed):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (10, 10), color=(seed * 20 % 255, 40, 80)).save(buf, format="JPEG")
    return buf.getvalue()


def test_clip_benchmark_webdataset_export_of_a_retrieval_test_set(tmp_path):
    from clip_benchmark.datasets.builder import build_wds_dataset

    folder = tmp_path / "flickr30k"
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "nshards.txt").write_text("2\n")
    (folder / "dataset_type.txt").write_text("retrieval\n")
    for s in range(2):
        write_tar(
            folder / "test" / f"{s}.tar",
            [(f"s{s}i{i}", {"jpg": jpeg(i), "txt": f"cap {s}-{i} a\ncap {s}-{i} b\n".encode()}) for i in range(3)],
        )
    ours = retrieval_data.load(tmp_path, "flickr30k", "test")
    theirs = build_wds_dataset("flickr30k", transform=lambda x: x, split="test", data_dir=str(folder))
    their_captions = [c for _, caps in theirs for c in caps]
    assert ours.captions == their_captions and len(ours.image_paths) == 6
    assert ours.caption_image == [i for i in range(6) for _ in range(2)]


def test_clip_benchmark_webdataset_export_of_a_classification_set(tmp_path):
    from clip_benchmark.datasets.builder import build_wds_dataset

    from bench.data import classification_data

    folder = tmp_path / "imagenet-r"
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "nshards.txt").write_text("1")
    (folder / "classnames.txt").write_text("cat\ndog\nbird\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na drawing of a {c}.\n")
    write_tar(folder / "test" / "0.tar", [(f"k{i}", {"jpg": jpeg(i), "cls": str(i % 3).encode()}) for i in range(5)])
    ours = classification_data.load(tmp_path, "imagenet-r")
    theirs = build_wds_dataset("imagenet-r", transform=lambda x: x, split="test", data_dir=str(folder))
    assert ours.labels == [int(y) for _, y in theirs] == [0, 1, 2, 0, 1]
    assert ours.classnames == theirs.classes and ours.templates == theirs.templates
    assert ours.prompts()[:2] == ["a photo of a cat.", "a drawing of a cat."]
    assert len(ours.fingerprint()) == 16


def test_tar_handles_are_never_shared_across_processes(tmp_path):
    """A handle opened before a fork must not be used by the child: forked DataLoader workers would share
    its file offset and read each other's bytes. Broken by keying the handles by shard alone."""
    import io
    import multiprocessing
    import tarfile

    from bench.data import image_source

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tf:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), color=(40 * i, 0, 0)).save(buf, format="PNG")
            info = tarfile.TarInfo(f"{i}.png")
            info.size = len(buf.getvalue())
            tf.addfile(info, io.BytesIO(buf.getvalue()))
    parent = image_source._tar(shard)[0]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child_handle_is_parents = pool.apply(_uses_parent_handle, (str(shard), id(parent)))
    assert not child_handle_is_parents


def _uses_parent_handle(shard: str, parent_id: int) -> bool:
    from bench.data import image_source

    return id(image_source._tar(Path(shard))[0]) == parent_id
