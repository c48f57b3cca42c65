"""Zero-shot classification end to end on a generated ImageNet-Sketch-layout folder (1,000 class
folders, as clip_benchmark expects) and a tiny random-weight open_clip model, cross-checked against
clip_benchmark's zeroshot_classification.evaluate."""

import json

import pytest
import torch
from helpers import assert_outcomes_reproduce_metrics, rebuild
from PIL import Image
from test_backbone import TINY
from test_retrieval_suite import make_coco_train

from bench.cli import main
from bench.data import classification_data
from bench.data.retrieval_data import DataError
from bench.report import results


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids

    root = tmp_path_factory.mktemp("cls")
    g = torch.Generator().manual_seed(0)
    for i, wnid in enumerate(all_imagenet_wordnet_ids):
        folder = root / "imagenet_sketch" / wnid
        folder.mkdir(parents=True)
        for j in range(2 if i % 100 == 0 else 1):  # ImageFolder wants every class folder non-empty
            arr = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(folder / f"{j}.png")
    make_coco_train(root)
    cfg = root / "simbench-tiny.json"
    cfg.write_text(json.dumps(TINY))
    small = root / "small.yaml"
    small.write_text(
        "train: {steps: 3, batch_size: 16, warmup_steps: 1}\n"
        f"suites: {{classification: {{layers: 2, workers: 0, batch_size: 8, text_batch_size: 4096, "
        f"datasets: [imagenet_sketch], cache_dir: '{root / 'cache'}'}}}}\n"
    )
    return root, cfg, small


def test_dataset_reads_clip_benchmark_names_and_templates(data):
    root, _, _ = data
    ds = classification_data.load(root, "imagenet_sketch")
    assert len(ds.classnames) == 1000 and ds.classnames[0] == "tench" and len(ds.templates) == 80
    assert len(ds.image_paths) == 1010 and sorted(set(ds.labels)) == list(range(1000))
    prompts = ds.prompts()
    assert len(prompts) == 80_000 and "tench" in prompts[0] and "goldfish" in prompts[80]


def test_missing_dataset_is_not_downloaded(tmp_path):
    with pytest.raises(DataError, match="missing or empty. Expected layout"):
        classification_data.load(tmp_path, "imagenet-r")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # 30 s: clip_benchmark's own evaluation loop over 1,010 images
def test_clip_frozen_equals_clip_benchmark_zero_shot(data, tmp_path):
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification

    from bench.features.backbone import Backbone, BackboneSpec

    root, cfg, small = data
    args = [
        "--suite",
        "classification",
        "--backbone",
        str(cfg),
        "--data-root",
        str(root),
        "--config",
        str(small),
        "--out",
        str(tmp_path),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*args, "--heads", "clip_frozen,kme_rbf"]) == 0
    ours = results.read(results.run_path(tmp_path, "classification", "clip_frozen")).metrics
    # kme_rbf's numbers from its own score() and combine_prompts, counted here without bench.eval.metrics.
    record, cdata, head = rebuild("classification", small, cfg, root, tmp_path, "kme_rbf")
    t = cdata.test["imagenet_sketch"]
    with torch.no_grad():
        classes = head.combine_prompts(head.encode_text(t.prompts), t.n_classes, t.n_templates)
        logits = head.score(head.encode_image(t.images), classes)
    top5 = logits.topk(5, dim=1).indices
    pred = top5[:, 0]
    kme = record.metrics
    assert kme["imagenet_sketch/acc1"] == pytest.approx((pred == t.labels).double().mean().item(), abs=1e-12)
    assert kme["imagenet_sketch/acc5"] == pytest.approx(
        (top5 == t.labels[:, None]).any(1).double().mean().item(), abs=1e-12
    )
    from sklearn.metrics import balanced_accuracy_score

    assert kme["imagenet_sketch/mean_per_class_recall"] == pytest.approx(
        balanced_accuracy_score(t.labels.numpy(), pred.numpy()), abs=1e-12
    )

    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)
    ds = build_dataset("imagenet_sketch", root=str(root / "imagenet_sketch"), transform=bb.preprocess, split="test")
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    theirs = zeroshot_classification.evaluate(
        bb.model, loader, bb.tokenizer, ds.classes, ds.templates, "cpu", amp=False
    )
    assert ours["imagenet_sketch/acc1"] == pytest.approx(theirs["acc1"], abs=1e-6)
    assert ours["imagenet_sketch/acc5"] == pytest.approx(theirs["acc5"], abs=1e-6)
    assert ours["imagenet_sketch/mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-6)


def test_partial_imagenetv2_is_refused_before_clip_benchmark_would_download(tmp_path, monkeypatch):
    import clip_benchmark.datasets.imagenetv2 as v2

    folder = tmp_path / "imagenetv2" / "ImageNetV2-matched-frequency" / "0"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.jpeg")
    monkeypatch.setattr(v2.requests, "get", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(DataError, match="found 1 of 10000 images"):
        classification_data.load(tmp_path, "imagenetv2")
    assert sorted(p.name for p in (tmp_path / "imagenetv2").iterdir()) == ["ImageNetV2-matched-frequency"]


def test_objectnet_labels_follow_its_folder_map_not_imagefolder_indices():
    class FakeObjectNet:
        label_map = {"air_freshener": 0, "alarm_clock": 1}
        samples = [("/x/images/alarm_clock/1.png", 7), ("/x/images/air_freshener/2.png", 3)]

    assert classification_data._samples(FakeObjectNet()) == [
        ("/x/images/alarm_clock/1.png", 1),
        ("/x/images/air_freshener/2.png", 0),
    ]


def test_skip_corrupt_drops_the_sample_and_keeps_labels_aligned(data, tmp_path, capsys):
    """A corrupt image fails the run; --skip-corrupt gives exactly the scores of the dataset without it."""
    import shutil

    from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids

    root, cfg, small = data
    bad_root, clean_root = tmp_path / "bad", tmp_path / "clean"
    for target in (bad_root, clean_root):
        shutil.copytree(root / "imagenet_sketch", target / "imagenet_sketch")
        shutil.copytree(root / "mscoco_captions", target / "mscoco_captions")
    victim = f"imagenet_sketch/{all_imagenet_wordnet_ids[100]}/1.png"  # class 100 keeps its other image
    (bad_root / victim).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (clean_root / victim).unlink()

    def run(data_root, out, *extra):
        return main(
            [
                "--suite",
                "classification",
                "--backbone",
                str(cfg),
                "--data-root",
                str(data_root),
                "--config",
                str(small),
                "--out",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
                "--heads",
                "clip_frozen",
                *extra,
            ]
        )

    assert run(bad_root, tmp_path / "a") == 2
    assert str(bad_root / victim) in capsys.readouterr().err
    assert run(bad_root, tmp_path / "b", "--skip-corrupt") == 0
    assert run(clean_root, tmp_path / "c") == 0
    skipped = results.read(results.run_path(tmp_path / "b", "classification", "clip_frozen"))
    clean = results.read(results.run_path(tmp_path / "c", "classification", "clip_frozen"))
    assert skipped.metrics == clean.metrics
    assert assert_outcomes_reproduce_metrics(tmp_path / "b") == 3  # acc1, acc5, mean per-class recall
    assert run(clean_root, tmp_path / "c", "--heads", "cosine") == 0  # a second head beside clip_frozen
    assert (
        main(
            [
                "compare",
                "--suite",
                "classification",
                "--heads",
                "cosine,clip_frozen",
                "--out",
                str(tmp_path / "c"),
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    assert "imagenet_sketch/mean_per_class_recall" in capsys.readouterr().out
    assert skipped.suite.test_set["datasets"]["imagenet_sketch"]["images"] == 1009
    assert list(skipped.suite.test_set["corrupt_images_skipped"]["imagenet_sketch/test"]["files"]) == [
        str(bad_root / victim)
    ]


def small_export(root):
    """A 3-class, 2-template classification set in clip_benchmark's webdataset export (as imagenet-r)."""
    from test_retrieval_data import jpeg, write_tar

    folder = root / "imagenet-r"
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "nshards.txt").write_text("1")
    (folder / "classnames.txt").write_text("cat\ndog\nbird\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na drawing of a {c}.\n")
    write_tar(folder / "test" / "0.tar", [(f"k{i}", {"jpg": jpeg(i), "cls": str(i % 3).encode()}) for i in range(12)])


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_every_new_head_classifies_zero_shot_end_to_end(data, tmp_path, loss):
    """wpse and filip from token sets (filip with its prompt ensemble), meru from pooled points."""
    root, cfg, _ = data
    small_export(tmp_path)
    from test_retrieval_suite import make_coco_train

    make_coco_train(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"train: {{steps: 3, batch_size: 16, warmup_steps: 1, loss: {loss}}}\n"
        f"suites: {{classification: {{layers: 2, workers: 0, batch_size: 8, datasets: [imagenet-r], "
        f"cache_dir: '{tmp_path / 'cache'}'}}}}\n"
    )
    heads = "cosine,kme_rbf,kme_rff,wpse,filip,meru,pcmepp,smooth_chamfer,flair"
    assert (
        main(
            [
                "--suite",
                "classification",
                "--backbone",
                str(cfg),
                "--data-root",
                str(tmp_path),
                "--config",
                str(config),
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
                "--device",
                "cpu",
                "--heads",
                heads,
            ]
        )
        == 0
    )
    recs = {r.head.name: r for r in results.load_all(tmp_path / "o")}
    assert set(recs) == set(heads.split(","))
    for name, r in recs.items():
        assert r.status == "ok", (name, r.error)
        assert 0 <= r.metrics["imagenet-r/acc1"] <= 1


def test_a_classification_set_from_hugging_face_keeps_clip_benchmarks_names(data, tmp_path):
    from datasets import ClassLabel, Dataset

    root, _, _ = data
    ds = classification_data.load(root, "imagenet_sketch")
    rows = Dataset.from_dict({"image": [str(p) for p in ds.image_paths[:6]], "label": ds.labels[:6]})
    rows = rows.cast_column("label", ClassLabel(names=[f"n{i}" for i in range(1000)]))
    rows.save_to_disk(str(tmp_path / "sketch"))
    got = classification_data.load(root, "imagenet_sketch", f"hf:{tmp_path / 'sketch'}")
    assert got.classnames == ds.classnames and got.templates == ds.templates  # clip_benchmark's, by name
    assert got.labels == ds.labels[:6] and len(got.image_paths) == 6
