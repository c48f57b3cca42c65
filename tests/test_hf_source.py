"""Hugging Face datasets as a source: the same images and captions give exactly the same metrics from
``hf:`` (save_to_disk and parquet) as from the folder layout; offline; bad specs fail with exit 2."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_backbone import TINY
from test_retrieval_suite import make_coco_train

from bench.cli import main
from bench.core.errors import DataError
from bench.data import hf_source, retrieval_data
from bench.data.fixtures import make_coco
from bench.report import results


def coco_as_hf(root, split: str):
    """The folder copy's images (by path: save_to_disk and parquet embed their bytes) and captions, one row per
    image with its list of captions, in the folder reader's order."""
    from datasets import Dataset, Image

    ds = retrieval_data.load(root, "mscoco_captions", split)
    per_image = [[] for _ in ds.image_paths]
    for caption, i in zip(ds.captions, ds.caption_image):
        per_image[i].append(caption)
    return Dataset.from_dict({"image": [str(p) for p in ds.image_paths], "sentences": per_image}).cast_column(
        "image", Image()
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfdata")
    g = torch.Generator().manual_seed(4)
    make_coco(root, n_images=10, per=3, split="test", g=g)
    make_coco_train(root)
    hf = root / "hf"
    coco_as_hf(root, "test").save_to_disk(str(hf / "coco_test"))
    coco_as_hf(root, "train").save_to_disk(str(hf / "coco_train"))
    coco_as_hf(root, "test").to_parquet(str(hf / "coco_test.parquet"))
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return root, hf, cfg


def run(root, cfg, out, tmp_path, suite_params: str):
    config = tmp_path / f"{out.name}.yaml"
    config.write_text(
        "train: {steps: 4, batch_size: 8, warmup_steps: 1}\nheads: {kme_rff: {num_features: 64}}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 4, datasets: [mscoco_captions], "
        f"cache_dir: '{tmp_path / 'cache'}'{suite_params}}}}}\n"
    )
    code = main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            str(cfg),
            "--data-root",
            str(root),
            "--config",
            str(config),
            "--heads",
            "clip_frozen,cosine,kme_rbf,wpse",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return {r.head.name: r for r in results.load_all(out)}


def test_hf_sources_give_exactly_the_folder_metrics(data, tmp_path):
    root, hf, cfg = data
    folder = run(root, cfg, tmp_path / "folder", tmp_path, "")
    disk = run(
        root,
        cfg,
        tmp_path / "disk",
        tmp_path,
        f", sources: {{mscoco_captions: 'hf:{hf / 'coco_test'}'}}, train_dataset: 'hf:{hf / 'coco_train'}'",
    )
    parquet = run(
        root,
        cfg,
        tmp_path / "parquet",
        tmp_path,
        f", sources: {{mscoco_captions: 'hf:{hf / 'coco_test.parquet'}:test'}}",
    )
    for head, rec in folder.items():
        assert disk[head].metrics == rec.metrics, head
        assert parquet[head].metrics == rec.metrics, head
    # the data are identified by the dataset's own fingerprint, not the folder's: different keys
    assert disk["cosine"].config.key != folder["cosine"].config.key
    assert disk["cosine"].suite.test_set["train"]["dataset"].startswith("hf:")


ENV_BEFORE = os.environ.get("HF_DATASETS_OFFLINE")


def test_spec_parsing_and_offline():
    assert hf_source.parse("hf:/data/coco:test") == ("/data/coco", "test")
    assert hf_source.parse("hf:/data/coco") == ("/data/coco", None)
    assert hf_source.parse("hf:nlphuji/flickr30k:test") == ("nlphuji/flickr30k", "test")
    assert hf_source.parse("hf:cifar10") == ("cifar10", None)
    with pytest.raises(DataError, match="offline"):
        hf_source.open_dataset("hf:no-such-user/no-such-dataset-xyz:test")
    import datasets
    import huggingface_hub.constants

    # the libraries' own switches say offline; the process environment is left as the user set it
    assert datasets.config.HF_DATASETS_OFFLINE is True and huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ or os.environ["HF_DATASETS_OFFLINE"] == ENV_BEFORE


def test_a_changed_caption_changes_the_fingerprint_and_columns_are_checked(data, tmp_path):
    from datasets import Dataset, Image

    root, hf, _ = data
    base = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{hf / 'coco_test'}")
    ds = coco_as_hf(root, "test")
    edited = ds.map(
        lambda row, i: {"sentences": [s + "!" for s in row["sentences"]] if i == 0 else row["sentences"]},
        with_indices=True,
    )
    edited.save_to_disk(str(tmp_path / "edited"))
    other = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'edited'}")
    assert other.fingerprint() != base.fingerprint()
    with pytest.raises(DataError, match="no caption column.*image, sentences.*caption_column"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{hf / 'coco_test'}", {"caption_column": "text"})
    Dataset.from_dict({"image": [str(base.image_paths[0]) if False else None], "caption": ["x"]}).cast_column(
        "image", Image()
    ).save_to_disk(str(tmp_path / "holes"))
    with pytest.raises(DataError, match="rows have no image"):
        retrieval_data.load(root, "x", "test", f"hf:{tmp_path / 'holes'}")


def test_bad_hf_source_exits_2(data, tmp_path, capsys):
    root, hf, cfg = data
    config = tmp_path / "bad.yaml"
    config.write_text(
        f"suites: {{retrieval: {{datasets: [mscoco_captions], cache_dir: '{tmp_path / 'c'}', "
        f"sources: {{mscoco_captions: 'hf:{tmp_path / 'nothing-here'}'}}}}}}\n"
    )
    code = main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            str(cfg),
            "--data-root",
            str(root),
            "--config",
            str(config),
            "--heads",
            "cosine",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nothing-here" in err and "Traceback" not in err


def test_a_dataset_rewritten_between_two_runs_of_one_process_is_read_again(data, tmp_path):
    """Opened datasets and their stamps are forgotten at each run's start (the suite's loaded()): a dataset
    rewritten in place between two runs of one process gives the new rows' images, not the old ones'."""
    import shutil

    import numpy as np

    from bench.data import image_source
    from bench.run import config
    from suites import get_suite

    root, hf, cfg = data
    coco_as_hf(root, "test").save_to_disk(str(tmp_path / "copy"))
    cls = get_suite("retrieval")
    params = config.merge_checked(
        cls.default_params(),
        {
            "datasets": ["mscoco_captions"],
            "data_root": str(root),
            "cache_dir": str(tmp_path / "c"),
            "sources": {"mscoco_captions": f"hf:{tmp_path / 'copy'}"},
        },
        "suites.retrieval",
    )
    first = cls(params).loaded()[0]["mscoco_captions"]
    before = np.asarray(image_source.open_image(first.image_paths[0]))
    ds = coco_as_hf(root, "test")
    ds.select(list(range(1, len(ds))) + [0]).flatten_indices().save_to_disk(str(tmp_path / "copy2"))
    shutil.rmtree(tmp_path / "copy")
    shutil.move(str(tmp_path / "copy2"), str(tmp_path / "copy"))
    second = cls(params).loaded()[0]["mscoco_captions"]
    after = np.asarray(image_source.open_image(second.image_paths[0]))
    want = np.asarray(image_source.open_image(ds_path(root, 1)))  # the folder copy's second image: the new row 0
    assert not np.array_equal(before, after) and np.array_equal(after, want)
    assert second.fingerprint() != first.fingerprint()


def ds_path(root, i):
    return retrieval_data.load(root, "mscoco_captions", "test").image_paths[i]


# -- read by the dataset's features, never by a value's Python type ---------------------------------
def _per_image(root):
    ds = retrieval_data.load(root, "mscoco_captions", "test")
    per = [[] for _ in ds.image_paths]
    for caption, i in zip(ds.captions, ds.caption_image):
        per[i].append(caption)
    return ds, per


def test_caption_records_are_read_at_their_text_field(data, tmp_path):
    """COCO exports hold ``Sequence({raw, sentid})`` (a dict of lists per row) or ``List({raw, sentid})``
    (a list of dicts): every caption is read, not the field names "raw" and "sentid"."""
    from datasets import Dataset, Features, Image, List, Sequence, Value

    root, hf, _ = data
    folder, per = _per_image(root)
    images = [str(p) for p in folder.image_paths]
    record = {"raw": Value("string"), "sentid": Value("int32")}
    variants = {
        "sequence": (Sequence(record), [{"raw": c, "sentid": list(range(len(c)))} for c in per]),
        "list": (List(record), [[{"raw": x, "sentid": j} for j, x in enumerate(c)] for c in per]),
    }
    for name, (feature, column) in variants.items():
        features = Features({"image": Image(), "sentences": feature})
        Dataset.from_dict({"image": images, "sentences": column}, features=features).save_to_disk(tmp_path / name)
        got = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / name}")
        assert got.captions == folder.captions and got.caption_image == folder.caption_image, name
    Dataset.from_dict({"image": images, "sentences": [{"sentid": [1]} for _ in per]}).save_to_disk(tmp_path / "x")
    with pytest.raises(DataError, match="fields sentid, none of them a caption"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'x'}")


def test_a_split_named_in_the_spec_wins_and_a_single_dataset_has_none(data, tmp_path):
    from datasets import DatasetDict

    root, hf, _ = data
    ds = coco_as_hf(root, "test")
    other = ds.map(lambda r: {"sentences": [s + " (validation)" for s in r["sentences"]]})
    DatasetDict({"test": ds, "validation": other}).save_to_disk(tmp_path / "dd")
    got = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'dd'}:validation")
    assert got.captions and all(c.endswith("(validation)") for c in got.captions)
    with pytest.raises(DataError, match="single Dataset.*split 'no_such_split' cannot be chosen"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{hf / 'coco_test'}:no_such_split")


def test_image_columns_are_read_by_feature(data, tmp_path):
    """Binary bytes are images; a list column or a 0-row dataset is refused by name; relative paths are
    read from the dataset's folder, and a missing one is named with where it was looked for."""
    import shutil

    from datasets import Dataset

    root, hf, _ = data
    folder, per = _per_image(root)
    raw = [open(p, "rb").read() for p in folder.image_paths]
    Dataset.from_dict({"image": raw, "sentences": per}).save_to_disk(tmp_path / "binary")
    got = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'binary'}")
    assert got.captions == folder.captions
    from bench.data import image_source

    assert (
        image_source.open_image(got.image_paths[0]).tobytes()
        == image_source.open_image(folder.image_paths[0]).tobytes()
    )
    Dataset.from_dict({"image": [[1, 2]] * len(per), "sentences": per}).save_to_disk(tmp_path / "lists")
    with pytest.raises(DataError, match="column 'image' holds List.*not images"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'lists'}")
    Dataset.from_dict({"image": [], "sentences": []}).save_to_disk(tmp_path / "empty")
    with pytest.raises(DataError, match="0 rows"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'empty'}")
    rel = tmp_path / "relative"
    Dataset.from_dict({"image": [f"img/{i}.jpg" for i in range(len(per))], "sentences": per}).save_to_disk(rel)
    with pytest.raises(DataError, match="relative paths are read from the dataset's folder"):
        retrieval_data.load(root, "mscoco_captions", "test", f"hf:{rel}")
    (rel / "img").mkdir()
    for i, p in enumerate(folder.image_paths):
        shutil.copyfile(p, rel / "img" / f"{i}.jpg")
    image_source.reset()
    got = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{rel}")
    assert (
        image_source.open_image(got.image_paths[1]).tobytes()
        == image_source.open_image(folder.image_paths[1]).tobytes()
    )


def test_rewritten_image_files_behind_paths_are_a_new_identity(data, tmp_path):
    """A dataset that names its images by path: rewriting the files (its Arrow files untouched) changes
    the data fingerprint, so cells and cached features are recomputed, not reused."""
    import shutil

    from datasets import Dataset
    from PIL import Image as PILImage

    from bench.data import image_source

    root, hf, _ = data
    folder, per = _per_image(root)
    (tmp_path / "img").mkdir()
    paths = []
    for i, p in enumerate(folder.image_paths):
        shutil.copyfile(p, tmp_path / "img" / f"{i}.jpg")
        paths.append(str(tmp_path / "img" / f"{i}.jpg"))
    Dataset.from_dict({"image": paths, "sentences": per}).save_to_disk(tmp_path / "d")
    before = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'd'}").fingerprint()
    PILImage.new("RGB", (20, 20), (9, 9, 9)).save(paths[0])
    image_source.reset()
    after = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{tmp_path / 'd'}").fingerprint()
    assert after != before


def test_a_parquet_replaced_with_the_same_mtime_is_read_anew(data, tmp_path):
    """``datasets`` keys its parquet conversion by path and time; ``cp -p`` of other content kept the old one."""
    from bench.core import snapshot
    from bench.data import image_source

    root, hf, _ = data
    ds = coco_as_hf(root, "test")
    target = tmp_path / "coco.parquet"
    ds.to_parquet(str(target))
    stat = target.stat()
    first = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{target}:test")
    ds.map(lambda r: {"sentences": [s[:-1] + "#" for s in r["sentences"]]}).to_parquet(str(target))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    image_source.reset()
    with snapshot.frozen():
        second = retrieval_data.load(root, "mscoco_captions", "test", f"hf:{target}:test")
    assert all(c.endswith("#") for c in second.captions) and second.fingerprint() != first.fingerprint()


def test_an_empty_image_in_a_later_arrow_chunk_is_named_by_its_own_row(tmp_path):
    """Sizes are read chunk by chunk from the Arrow column: a row's index counts the chunks before it."""
    import io

    from datasets import Dataset, Image, load_from_disk
    from PIL import Image as PILImage

    def png(i):
        buf = io.BytesIO()
        PILImage.new("RGB", (8, 8), (i * 30, 0, 0)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    images = [png(i) for i in range(6)]
    images[4] = {"bytes": b"", "path": None}  # in the second of two shards
    ds = Dataset.from_dict({"image": images, "caption": [f"c{i}" for i in range(6)]}).cast_column("image", Image())
    ds.save_to_disk(str(tmp_path / "two"), num_shards=2)
    assert len(load_from_disk(str(tmp_path / "two")).data.table.column("image").chunks) >= 2
    with pytest.raises(DataError, match=r"1 of 6 rows have no image.*\(rows \[4\]\)"):
        retrieval_data.load(tmp_path, "x", "test", f"hf:{tmp_path / 'two'}")
