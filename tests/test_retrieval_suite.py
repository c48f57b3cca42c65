"""The retrieval suite end to end on fixture data and a tiny random-weight open_clip model,
cross-checked against clip_benchmark's own retrieval evaluation."""

import json
import shutil

import pytest
import torch
from helpers import assert_outcomes_reproduce_metrics, rebuild
from PIL import Image
from test_backbone import TINY

from bench.cli import main
from bench.data.fixtures import make_coco, make_flickr
from bench.report import results


def noisy_images(folder, names, seed):
    g = torch.Generator().manual_seed(seed)
    for name in names:
        arr = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_coco(root, n_images=12, per=5, split="test")
    make_coco_train(root)
    make_flickr(root, n_images=8, per=5)
    noisy_images(
        root / "mscoco_captions" / "val2014", [p.name for p in (root / "mscoco_captions" / "val2014").iterdir()], 1
    )
    noisy_images(root / "flickr30k", [p.name for p in (root / "flickr30k").glob("*.jpg")], 2)
    cfg = root / "simbench-tiny.json"
    cfg.write_text(json.dumps(TINY))
    small = root / "small.yaml"
    small.write_text(
        "train: {steps: 5, batch_size: 16, warmup_steps: 1}\nheads: {kme_rff: {num_features: 64}}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 8, cache_dir: '{root / 'cache'}'}}}}\n"
    )
    return root, cfg, small


def make_coco_train(root):
    folder = root / "mscoco_captions" / "train2014"
    folder.mkdir(parents=True)
    images, anns = [], []
    for i in range(10):
        name = f"COCO_train2014_{i:012d}.jpg"
        images.append({"id": i, "file_name": name})
        anns += [{"image_id": i, "id": i * 3 + j, "caption": f"train image {i} words {j}"} for j in range(3)]
    noisy_images(folder, [im["file_name"] for im in images], 3)
    (root / "mscoco_captions" / "coco_train_karpathy.json").write_text(
        json.dumps({"images": images, "annotations": anns})
    )


def run_retrieval(root, cfg, small, out, heads="clip_frozen,cosine,kme_rbf,kme_rff"):
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
        ]
    )


def test_retrieval_suite_runs_every_head_and_reuses_the_cache(data, tmp_path):
    root, cfg, small = data
    assert run_retrieval(root, cfg, small, tmp_path / "a") == 0
    recs = {r.head.name: r for r in results.load_all(tmp_path / "a")}
    assert set(recs) == {"clip_frozen", "cosine", "kme_rbf", "kme_rff"}
    for head in ("kme_rbf", "kme_rff", "cosine"):  # each number against an independent computation
        assert_recalls_match_clip_benchmark(root, cfg, small, tmp_path / "a", head)
    assert assert_outcomes_reproduce_metrics(tmp_path / "a") == 4 * 2 * 7  # heads x datasets x (6 recalls + RSUM)
    assert (
        main(
            [
                "compare",
                "--suite",
                "retrieval",
                "--heads",
                "kme_rbf,cosine",
                "--out",
                str(tmp_path / "a"),
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    ident = recs["cosine"].suite.test_set
    assert ident["backbone"]["weights"] == "random:seed0"
    assert ident["train"]["pairs"] + ident["validation"]["captions"] == 30  # validation: held-out training images
    assert (
        ident["validation"]["source"] == "held-out mscoco_captions/train images" and ident["validation"]["images"] == 1
    )
    assert ident["datasets"]["flickr30k"]["captions"] == 40
    shards = list((root / "cache").rglob("shard-*.safetensors"))
    assert len(shards) == 6  # train, coco test, flickr test; images and texts
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    assert run_retrieval(root, cfg, small, tmp_path / "b", heads="clip_frozen") == 0
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps  # features came from the cache
    b = results.read(results.run_path(tmp_path / "b", "retrieval", "clip_frozen"))
    assert b.metrics == recs["clip_frozen"].metrics


def assert_recalls_match_clip_benchmark(root, cfg, small, out, head_name):
    """The head's own score() on the cached test features, ranked by clip_benchmark's recall_at_k."""
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

    record, data, head = rebuild("retrieval", small, cfg, root, out, head_name)
    with torch.no_grad():
        for name, t in data.test.items():
            scores = head.score(head.encode_image(t.images), head.encode_text(t.texts))
            positives = torch.zeros_like(scores, dtype=torch.bool)
            positives[t.caption_image, torch.arange(len(t.texts))] = True
            total = 0.0
            for k in (1, 5, 10):
                # clip_benchmark's topk needs k <= candidates; beyond that every query is a hit, as in ours
                text_to_image = (
                    (cb_recall_at_k(scores.T, positives.T, min(k, len(t.images))) > 0).double().mean().item()
                )
                image_to_text = (cb_recall_at_k(scores, positives, min(k, len(t.texts))) > 0).double().mean().item()
                assert record.metrics[f"{name}/image_retrieval_recall@{k}"] == pytest.approx(text_to_image, abs=1e-9)
                assert record.metrics[f"{name}/text_retrieval_recall@{k}"] == pytest.approx(image_to_text, abs=1e-9)
                total += text_to_image + image_to_text
            assert record.metrics[f"{name}/recall_sum"] == pytest.approx(total, abs=1e-9)


def test_clip_frozen_equals_clip_benchmark_retrieval(data, tmp_path):
    from clip_benchmark.datasets.builder import get_dataset_collate_fn
    from clip_benchmark.datasets.flickr import Flickr
    from clip_benchmark.metrics import zeroshot_retrieval

    from bench.features.backbone import Backbone, BackboneSpec

    root, cfg, small = data
    assert run_retrieval(root, cfg, small, tmp_path, heads="clip_frozen") == 0
    ours = results.read(results.run_path(tmp_path, "retrieval", "clip_frozen")).metrics
    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)  # same seed: same random weights
    ds = Flickr(
        str(root / "flickr30k"), str(root / "flickr30k" / "flickr30k_test_karpathy.txt"), transform=bb.preprocess
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=get_dataset_collate_fn("flickr30k"))
    theirs = zeroshot_retrieval.evaluate(
        bb.model, loader, bb.tokenizer, "cpu", amp=False, recall_k_list=[1, 5]
    )  # its topk needs k <= 8 images
    for key, value in theirs.items():
        assert ours[f"flickr30k/{key}"] == pytest.approx(value, abs=1e-6), key


def test_missing_data_fails_before_any_work(data, tmp_path, capsys):
    _, cfg, small = data
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_retrieval(empty, cfg, small, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "does not exist. Expected layout" in err and "--check-data" in err
    assert not (tmp_path / "o").exists() and list(empty.iterdir()) == []


def test_backbone_flag_is_refused_by_the_synthetic_suite(tmp_path, capsys):
    assert main(["--backbone", "ViT-B-32", "--out", str(tmp_path)]) == 2
    assert "does not apply to suite 'synthetic'" in capsys.readouterr().err


def test_heads_train_on_webdataset_shards(data, tmp_path):
    from test_retrieval_data import make_shards

    root, cfg, _ = data
    make_shards(tmp_path, n_shards=2, per_shard=10)
    conf = tmp_path / "wds.yaml"
    conf.write_text(
        "train: {steps: 3, batch_size: 8, warmup_steps: 1}\n"
        f"suites: {{retrieval: {{layers: 2, workers: 2, batch_size: 8, datasets: [flickr30k], "
        f"train_dataset: 'wds:{tmp_path}/train-{{000..001}}.tar', cache_dir: '{tmp_path / 'cache'}'}}}}\n"
    )
    assert run_retrieval(root, cfg, conf, tmp_path / "o", heads="cosine") == 0
    record = results.read(results.run_path(tmp_path / "o", "retrieval", "cosine"))
    v = record.suite.test_set["validation"]
    assert record.suite.test_set["train"]["pairs"] + v["captions"] == 20 and record.timing["train_steps"] == 3


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_token_and_field_heads_run_end_to_end_under_either_loss(data, tmp_path, loss):
    """Every head beside the shipped ones, under either loss: the token heads read float16 token sets from
    the cache (a second entry beside the layers readout), and their scores equal a dense recomputation."""
    from bench.features.cache import FeatureCache

    root, cfg, small = data
    config = tmp_path / f"{loss}.yaml"
    config.write_text(small.read_text().replace("train: {", f"train: {{loss: {loss}, "))
    heads = "cosine,kme_rbf,kme_rff,wpse,filip,meru,pcmepp,smooth_chamfer,flair"
    assert run_retrieval(root, cfg, config, tmp_path / "a", heads) == 0
    recs = {r.head.name: r for r in results.load_all(tmp_path / "a")}
    assert set(recs) == set(heads.split(",")) and all(r.status == "ok" for r in recs.values())
    assert all(r.config.resolved["train"]["loss"] == loss for r in recs.values())
    manifests = [json.loads(m.read_text()) for m in (root / "cache").glob("*/manifest.json")]
    tokens = [m for m in manifests if m["fields"].get("readout") == "tokens"]
    assert tokens and all(m["dtype"] == "float16" for m in tokens)
    images = [m for m in tokens if m["fields"]["side"] == "image" and m["fields"]["dataset"] == "flickr30k"]
    assert images[0]["rows"] == 8 and images[0]["total_tokens"] == 8 * 17  # 16 patches and the class token
    texts = [m for m in tokens if m["fields"]["side"] == "text" and m["fields"]["dataset"] == "flickr30k"]
    assert texts[0]["total_tokens"] < 40 * 16  # ragged: real tokens only, not the context length
    # a rerun reuses every cell: nothing is extracted again
    assert run_retrieval(root, cfg, config, tmp_path / "a", heads) == 0
    # the token sets read back equal the backbone's own tokens
    from bench.data import retrieval_data
    from bench.features.backbone import Backbone, BackboneSpec

    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)
    ds = retrieval_data.load(root, "flickr30k", "test")
    cache = FeatureCache(root / "cache")
    from bench.features import extract

    got = extract.text_token_sets(cache, bb, "flickr30k", "test", ds.captions)
    assert got.cached
    p, m = got.points.rows(torch.arange(3))
    want, want_mask = bb.text_tokens(bb.tokenize(ds.captions[:3]))
    assert torch.equal(m, want_mask[:, : m.shape[1]]) and not bool(want_mask[:, m.shape[1] :].any())
    assert torch.allclose(p[m], want[want_mask], atol=1e-3, rtol=1e-3)  # float16 storage


def test_validation_is_coco_karpathy_val_when_present_and_trials_never_load_a_test_set(data, tmp_path, monkeypatch):
    root, cfg, small = data
    local = tmp_path / "data"
    shutil.copytree(root, local)
    folder = local / "mscoco_captions" / "val2014"
    names = [f"COCO_val2014_{50 + i:012d}.jpg" for i in range(3)]
    noisy_images(folder, names, 9)
    images = [{"id": 500 + i, "file_name": n} for i, n in enumerate(names)]
    anns = [
        {"image_id": 500 + i, "id": 9000 + 2 * i + j, "caption": f"val image {i} text {j}"}
        for i in range(3)
        for j in range(2)
    ]
    (local / "mscoco_captions" / "coco_val_karpathy.json").write_text(
        json.dumps({"images": images, "annotations": anns})
    )
    assert run_retrieval(local, cfg, small, tmp_path / "o", heads="cosine") == 0
    rec = results.read(results.run_path(tmp_path / "o", "retrieval", "cosine"))
    v = rec.suite.test_set["validation"]
    assert v["source"] == "mscoco_captions val (Karpathy)" and v["images"] == 3 and v["captions"] == 6
    assert rec.suite.test_set["train"]["pairs"] == 30  # nothing held out of training
    assert rec.curve and rec.convergence["metric"] == "validation/recall_sum"
    # a tuning trial on this suite: no test set is even listed
    from suites.retrieval import RetrievalSuite

    def no_test(*a, **k):
        raise AssertionError("a trial loaded a test set")

    monkeypatch.setattr(RetrievalSuite, "load_test_set", no_test)
    code = main(
        [
            "tune",
            "--suite",
            "retrieval",
            "--heads",
            "cosine",
            "--trials",
            "1",
            "--join",
            "--backbone",
            str(cfg),
            "--data-root",
            str(local),
            "--config",
            str(small),
            "--out",
            str(tmp_path / "t"),
            "--device",
            "cpu",
            "--no-progress",
            "--quiet",
        ]
    )
    assert code == 0
    trial = results.read(next((tmp_path / "t" / "tuning").rglob("runs/retrieval/cosine.json")))
    assert list(trial.metrics) == ["validation/recall_sum"] and trial.suite.test_set["datasets"] == {}
