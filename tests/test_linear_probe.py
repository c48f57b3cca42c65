"""The linear probe against CLIP_benchmark 1.6.2's own ``linear_probe.evaluate`` on the same features and
seed (its CUDA calls turned into no-ops on this CPU machine), and the protocol's parts on their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.eval import linear_probe


def features(n, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(0)) * 2
    y = torch.arange(n) % classes
    x = torch.nn.functional.normalize(centres[y] + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    return x, y


def clip_benchmark_probe(monkeypatch, tmp_path, train, val, test, fewshot_k, epochs, seed, batch_size=64):
    """CLIP_benchmark's evaluate() on the same features, written where its feature cache keeps them (so it
    skips its own featurisation), with its CUDA calls turned into no-ops."""
    from clip_benchmark.metrics import linear_probe as cb

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    real_to = torch.Tensor.to
    monkeypatch.setattr(
        torch.Tensor, "to", lambda self, *a, **k: real_to(self, *["cpu" if x == "cuda" else x for x in a], **k)
    )
    folder = tmp_path / "m"
    folder.mkdir()
    for split, (x, y) in {"train": train, "val": val, "test": test}.items():
        if x is not None:
            torch.save(x, folder / f"features_{split}.pt")
            torch.save(y, folder / f"targets_{split}.pt")
    marker = torch.utils.data.DataLoader([])  # only whether a validation loader is given matters now
    torch.manual_seed(seed)  # its few-shot permutation uses the caller's generator state
    return cb.evaluate(
        None,
        marker,
        marker,
        fewshot_k,
        batch_size,
        0,
        0.1,
        epochs,
        "m",
        seed,
        str(tmp_path),
        device="cuda",
        val_dataloader=None if val[0] is None else marker,
        normalize=False,
        amp=False,
    )


@pytest.mark.parametrize("fewshot_k,with_val", [(-1, True), (3, True), (-1, False)])
def test_equals_clip_benchmark_on_the_same_features_and_seed(monkeypatch, tmp_path, fewshot_k, with_val):
    train, val, test = features(60, 8, 6, 1), features(24, 8, 6, 2), features(30, 8, 6, 3)
    theirs = clip_benchmark_probe(
        monkeypatch, tmp_path, train, val if with_val else (None, None), test, fewshot_k, 5, 7
    )
    monkeypatch.undo()
    ours = linear_probe.evaluate(
        train[0],
        train[1],
        test[0],
        *(val if with_val else (None, None)),
        fewshot_k=fewshot_k,
        batch_size=64,
        lr=0.1,
        epochs=5,
        seed=7,
    )
    assert ours.weight_decay == theirs["weight_decay"]
    pred = ours.logits.argmax(1)
    assert float((pred == test[1]).double().mean()) == pytest.approx(theirs["lp_acc1"], abs=1e-9)
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(test[1], pred) == pytest.approx(theirs["lp_mean_per_class_recall"], abs=1e-9)
    assert ours.fits == (1 + 7 + 4 * 3 if with_val else 1)
    assert theirs["lp_acc1"] > 0.5  # a probe that learned something, so agreement is not agreement on chance


def test_the_sweep_visits_clip_benchmarks_grid():
    assert len(linear_probe.WEIGHT_DECAYS) == 97 and linear_probe.COARSE == [0, 16, 32, 48, 64, 80, 96]
    assert [round(linear_probe.WEIGHT_DECAYS[i], 8) for i in linear_probe.COARSE] == [
        1e-6,
        2.154e-05,
        0.00046416,
        0.01,
        0.21544347,
        4.64158883,
        100.0,
    ]
    train, val, test = features(40, 4, 4, 5), features(20, 4, 4, 6), features(8, 4, 4, 7)
    res = linear_probe.evaluate(train[0], train[1], test[0], *val, epochs=1, batch_size=16)
    wds = [wd for wd, _ in res.sweep]
    assert wds[:7] == [linear_probe.WEIGHT_DECAYS[i] for i in linear_probe.COARSE]
    assert len(wds) == 7 + 12 and res.weight_decay in wds


def test_fewshot_needs_k_of_every_class_and_the_split_is_seeded():
    x, y = features(10, 4, 5, 0)
    with pytest.raises(linear_probe.ProbeError, match="fewshot_k=3"):
        linear_probe.evaluate(x, y, x, fewshot_k=3)
    a = linear_probe.validation_split(100, 0.1, 0)
    b = linear_probe.validation_split(100, 0.1, 0)
    assert (
        len(a[1]) == 10
        and torch.equal(a[1], b[1])
        and not torch.equal(a[1], linear_probe.validation_split(100, 0.1, 1)[1])
    )
    assert sorted(torch.cat(a).tolist()) == list(range(100))
    assert np.isclose(linear_probe.WEIGHT_DECAYS[48], 0.01)


# -- the suite end to end -----------------------------------------------------------------------------
import json  # noqa: E402 (after the tests above, which need none of these)

from bench.cli import main  # noqa: E402 (after the tests above, which need none of these)
from bench.data.fixtures import make_cifar10  # noqa: E402 (after the tests above, which need none of these)
from bench.report import results  # noqa: E402 (after the tests above, which need none of these)


@pytest.fixture(scope="module")
def probe_data_root(tmp_path_factory):
    from test_backbone import TINY
    from test_retrieval_suite import make_coco_train

    root = tmp_path_factory.mktemp("probe")
    make_cifar10(root, n_train=100, n_test=40)
    make_coco_train(root)
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return root, cfg


def probe_config(tmp_path, root, extra=""):
    path = tmp_path / "probe.yaml"
    path.write_text(
        "train: {steps: 3, batch_size: 16, warmup_steps: 1}\nheads: {kme_rff: {num_features: 64}}\n"
        f"suites: {{linear_probe: {{layers: 2, workers: 0, batch_size: 16, datasets: [cifar10], epochs: 3, "
        f"probe_batch_size: 32, cache_dir: '{root / 'cache'}'{extra}}}}}\n"
    )
    return path


def test_every_head_runs_and_filip_is_skipped_with_a_note(probe_data_root, tmp_path):
    from bench.report import leaderboard

    root, cfg = probe_data_root
    heads = "clip_frozen,cosine,kme_rbf,kme_rff,kme_proto,proto_cosine,wpse,filip,meru"
    code = main(
        [
            "--suite",
            "linear_probe",
            "--backbone",
            str(cfg),
            "--data-root",
            str(root),
            "--config",
            str(probe_config(tmp_path, root)),
            "--heads",
            heads,
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 0  # a skipped head is not a failure
    recs = {r.head.name: r for r in results.load_all(tmp_path / "o")}
    assert recs["filip"].status == "skipped" and "embed_image" in recs["filip"].error
    for name, r in recs.items():
        if name != "filip":
            assert r.status == "ok", (name, r.error)
            assert 0 <= r.metrics["cifar10/lp_acc1"] <= r.metrics["cifar10/lp_acc5"] <= 1
            details = r.evaluation_details
            assert details["cifar10/weight_decay"] in [wd for wd, _ in details["cifar10/sweep"]]
            assert details["cifar10/train_images"] == 90 and details["cifar10/validation_images"] == 10
    board = leaderboard.build(tmp_path / "o")
    assert "`filip` skipped: filip has no embed_image" in board


def test_clip_frozen_probe_equals_clip_benchmark_on_its_features(probe_data_root, tmp_path, monkeypatch):
    """The suite's clip_frozen row against CLIP_benchmark's evaluate() on features made independently, with the
    model's own encode_image on CLIP's preprocessing, the same validation rows and the same seed."""
    from bench.data import image_source, probe_data
    from bench.features.backbone import Backbone, BackboneSpec

    root, cfg = probe_data_root
    code = main(
        [
            "--suite",
            "linear_probe",
            "--backbone",
            str(cfg),
            "--data-root",
            str(root),
            "--config",
            str(probe_config(tmp_path, root)),
            "--heads",
            "clip_frozen",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    ours = results.read(results.run_path(tmp_path / "o", "linear_probe", "clip_frozen"))
    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=3)

    def encoded(split):
        s = probe_data.load_split(root, "cifar10", split)
        images = torch.stack([bb.preprocess(image_source.open_image(p)) for p in s.image_paths])
        with torch.no_grad():
            return torch.nn.functional.normalize(bb.model.encode_image(images).float(), dim=-1), torch.tensor(s.labels)

    (x, y), test = encoded("train"), encoded("test")
    rows, val_rows = linear_probe.validation_split(len(y), 0.1, 3)
    theirs = clip_benchmark_probe(
        monkeypatch, tmp_path, (x[rows], y[rows]), (x[val_rows], y[val_rows]), test, -1, 3, 3, batch_size=32
    )
    m = ours.metrics
    assert ours.evaluation_details["cifar10/weight_decay"] == theirs["weight_decay"]
    assert m["cifar10/lp_acc1"] == pytest.approx(theirs["lp_acc1"], abs=1e-6)
    assert m["cifar10/lp_acc5"] == pytest.approx(theirs["lp_acc5"], abs=1e-6)
    assert m["cifar10/lp_mean_per_class_recall"] == pytest.approx(theirs["lp_mean_per_class_recall"], abs=1e-6)
    assert theirs["lp_acc1"] > 0.3, theirs  # learned something (10 classes): agreement is not agreement on chance


def test_hf_source_gives_the_folder_probe_exactly(probe_data_root, tmp_path):
    """CIFAR-10's arrays as a Hugging Face DatasetDict (PNG bytes: lossless), read through sources."""
    from datasets import Dataset, DatasetDict

    from bench.data import image_source, probe_data

    root, cfg = probe_data_root
    splits = {}
    for split in ("train", "test"):
        s = probe_data.load_split(root, "cifar10", split)
        splits[split] = Dataset.from_dict(
            {"img": [image_source.open_image(p) for p in s.image_paths], "label": s.labels}
        )
    DatasetDict(splits).save_to_disk(str(tmp_path / "cifar_hf"))
    runs = {}
    for name, extra in [("folder", ""), ("hf", f", sources: {{cifar10: 'hf:{tmp_path / 'cifar_hf'}'}}")]:
        out = tmp_path / name
        assert (
            main(
                [
                    "--suite",
                    "linear_probe",
                    "--backbone",
                    str(cfg),
                    "--data-root",
                    str(root),
                    "--config",
                    str(probe_config(tmp_path, root, extra)),
                    "--heads",
                    "clip_frozen,cosine",
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        runs[name] = {r.head.name: r for r in results.load_all(out)}
    for head in ("clip_frozen", "cosine"):
        assert runs["hf"][head].metrics == runs["folder"][head].metrics
        assert runs["hf"][head].config.key != runs["folder"][head].config.key


def test_check_data_lists_the_probe_datasets(probe_data_root, capsys):
    root, _ = probe_data_root
    main(["--check-data", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert "linear_probe    cifar10                 yes    100 train, 40 test images" in out
    assert "cifar100 (linear_probe)" in out and "cifar-100-python" in out
    assert max(len(line) for line in out.splitlines()) <= 100


@pytest.mark.parametrize("name", ["imagenet1k", "cifar100", "stl10", "flowers", "dtd", "pets", "fgvc_aircraft"])
def test_a_missing_probe_dataset_is_refused_with_its_layout_and_nothing_written(tmp_path, name):
    from bench.core.errors import DataError
    from bench.data import probe_data

    with pytest.raises(DataError, match="Expected layout"):
        probe_data.load_split(tmp_path, name, "train")
    assert list(tmp_path.iterdir()) == []


def test_our_cifar_reader_gives_torchvisions_pixels_and_labels(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv

    from bench.data import image_source, probe_data

    make_cifar10(tmp_path, n_train=20, n_test=10)
    monkeypatch.setattr(tv, "check_integrity", lambda *a, **k: True)  # a fixture cannot match the archive's md5
    for split in ("train", "test"):
        ours = probe_data.load_split(tmp_path, "cifar10", split)
        theirs = tv.CIFAR10(str(tmp_path / "cifar10"), train=split == "train", download=False)
        assert len(theirs) == len(ours.labels)
        for i in range(len(theirs)):
            assert np.array_equal(np.asarray(theirs[i][0]), np.asarray(image_source.open_image(ours.image_paths[i])))
            assert theirs[i][1] == ours.labels[i]


def test_batched_loader_gives_the_plain_dataloaders_order():
    x, y = torch.arange(50.0).view(25, 2), torch.arange(25)
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    ours = linear_probe._loader(x, y, 8, True)
    assert len(ours) == len(plain) == 4

    def epochs(loader):
        torch.manual_seed(5)
        torch.nn.Linear(2, 3)  # the fit draws its layer first, then iterates
        return [torch.cat([b[1] for b in loader]).tolist() for _ in range(3)]

    a, b = epochs(plain), epochs(ours)
    assert a == b and a[0] != a[1]


def test_a_head_whose_probe_vector_is_nan_fails_instead_of_scoring_one(probe_data_root, tmp_path, capsys):
    """NaN logits used to rank every sample's true class first (`s > true` is False for NaN): lp_acc1 = 1.0,
    status ok, shown bold as the best. Now the head fails with the reason, and the others still run."""
    import heads as registry

    cosine = registry.get_head("cosine")

    @registry.register_head("nan_probe")
    class NanProbe(cosine):
        def embed_image(self, points, mask=None):
            return super().embed_image(points, mask) * float("nan")

    try:
        root, cfg = probe_data_root
        args = ["--suite", "linear_probe", "--backbone", cfg, "--data-root", root, "--heads", "nan_probe,cosine"]
        args += ["--config", probe_config(tmp_path, root), "--out", tmp_path / "o", "--no-progress"]
        assert main(args) == 1
        recs = {r.head.name: r for r in results.load_all(tmp_path / "o")}
        assert recs["nan_probe"].status == "failed" and "NaN or infinite" in recs["nan_probe"].error
        assert recs["nan_probe"].metrics == {} and recs["cosine"].status == "ok"
    finally:
        registry.HEADS.unregister("nan_probe")


@pytest.mark.parametrize("split", ["test", "train"])
def test_a_validation_split_that_is_the_test_or_train_split_is_refused(probe_data_root, tmp_path, capsys, split):
    root, cfg = probe_data_root
    config = probe_config(tmp_path, root, extra=f", val_split: {split}, val_proportion: 0")
    args = ["--suite", "linear_probe", "--backbone", cfg, "--data-root", root, "--config", config]
    assert main([*args, "--out", tmp_path / "o", "--no-progress"]) == 2
    assert f"val_split = '{split}'" in capsys.readouterr().err and not (tmp_path / "o").exists()


# -- data that would give a meaningless probe number, refused before any head trains -----------------
@pytest.fixture(scope="module")
def cifar_splits(probe_data_root):
    """The CIFAR fixture's splits as Hugging Face Datasets (PNG bytes), to reshape per case."""
    from datasets import Dataset

    from bench.data import image_source, probe_data

    root, _ = probe_data_root
    out = {}
    for split in ("train", "test"):
        s = probe_data.load_split(root, "cifar10", split)
        out[split] = Dataset.from_dict({"img": [image_source.open_image(p) for p in s.image_paths], "label": s.labels})
    return out


def _probe_run(probe_data_root, tmp_path, source: str, extra: str = ""):
    root, cfg = probe_data_root
    config = probe_config(tmp_path, root, f", sources: {{cifar10: '{source}'}}{extra}")
    args = ["--suite", "linear_probe", "--backbone", cfg, "--data-root", root, "--config", config]
    return main([*map(str, args), "--heads", "cosine", "--out", str(tmp_path / "o"), "--no-progress"])


@pytest.mark.parametrize(
    "case,problem",
    [
        ("one_class", "1 class"),
        ("single_dataset", "same rows"),
        ("no_such_split", "split 'no_such_split' cannot be chosen"),
        ("tiny_carve", "leaves 100 to train on and 0 to validate on"),
        ("huge_carve", "(after the validation carve) hold 1 class"),
        ("fewshot", "fewshot_k = 40"),
    ],
)
def test_degenerate_probe_data_is_refused_before_any_work(
    probe_data_root, cifar_splits, tmp_path, capsys, case, problem
):
    from datasets import DatasetDict

    train, test = cifar_splits["train"], cifar_splits["test"]
    extra = ""
    if case == "one_class":
        DatasetDict({"train": train.map(lambda r: {"label": 0}), "test": test}).save_to_disk(tmp_path / "d")
        source = f"hf:{tmp_path / 'd'}"
    elif case in ("single_dataset", "no_such_split"):
        train.save_to_disk(tmp_path / "d")
        source = f"hf:{tmp_path / 'd'}" + (":no_such_split" if case == "no_such_split" else "")
    else:
        DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "d")
        source = f"hf:{tmp_path / 'd'}"
        extra = {"tiny_carve": ", val_proportion: 0.001", "huge_carve": ", val_proportion: 0.999"}.get(
            case, ", fewshot_k: 40"
        )
    capsys.readouterr()
    assert _probe_run(probe_data_root, tmp_path, source, extra) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_class_seen_only_in_validation_still_gets_a_row(probe_data_root, cifar_splits, tmp_path):
    """The final fit trains on train + validation: the classifier needs a row for every class of either
    (CLIP_benchmark's training-labels max + 1 ended in ``IndexError: Target 9 is out of bounds``)."""
    from datasets import DatasetDict

    train, test = cifar_splits["train"], cifar_splits["test"]
    nine = [i for i, y in enumerate(train["label"]) if y == 9]
    DatasetDict(
        {
            "train": train.select([i for i in range(len(train)) if i not in nine]),
            "validation": train.select(nine),
            "test": test,
        }
    ).save_to_disk(tmp_path / "d")
    extra = ", val_split: validation, val_proportion: 0"
    assert _probe_run(probe_data_root, tmp_path, f"hf:{tmp_path / 'd'}", extra) == 0
    record = results.read(results.run_path(tmp_path / "o", "linear_probe", "cosine"))
    assert record.status == "ok" and record.metrics["cifar10/lp_acc1"] is not None
    details = record.evaluation_details
    # the named split is the validation set (the weight decay is chosen on it), and only it
    assert details["cifar10/validation_images"] == len(nine) and details["cifar10/train_images"] == len(train) - len(
        nine
    )
    assert len(details["cifar10/sweep"]) > 1


@pytest.mark.parametrize("name", ["meru", "kme_rbf", "kme_rff", "wpse"])
def test_probe_vectors_are_unit_for_heads_whose_image_vector_is_not(name):
    """CLIP_benchmark L2-normalises probe features; for these heads embed_image is not unit, so dropping the
    normalisation changes lp_acc1 and the chosen weight decay."""
    import heads as registry
    from suites.linear_probe import LinearProbeSuite

    torch.manual_seed(0)
    head = registry.get_head(name)(16, 16).eval()
    points = torch.randn(12, 3, 16) * 3
    raw = head.embed_image(points, None).norm(dim=-1)
    assert not torch.allclose(raw, torch.ones_like(raw), atol=1e-3)  # the case the normalisation exists for
    vectors = LinearProbeSuite.vectors(None, head, points, torch.device("cpu"))
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(12), atol=1e-5)


def test_a_two_class_probe_set_is_accepted(probe_data_root, cifar_splits, tmp_path):
    """Two classes are the fewest a probe can separate (one is refused)."""
    from datasets import DatasetDict

    train, test = cifar_splits["train"], cifar_splits["test"]
    two = lambda r: {"label": r["label"] % 2}  # noqa: E731
    DatasetDict({"train": train.map(two), "test": test.map(two)}).save_to_disk(tmp_path / "d")
    assert _probe_run(probe_data_root, tmp_path, f"hf:{tmp_path / 'd'}", "") == 0
    record = results.read(results.run_path(tmp_path / "o", "linear_probe", "cosine"))
    assert record.status == "ok" and record.metrics["cifar10/lp_acc5"] is None  # CLIP_benchmark: no acc5 below 6


def test_a_test_class_the_probe_never_saw_is_never_predicted(probe_data_root, cifar_splits, tmp_path):
    """Its logit column is -inf (the probe has no row for it): every query of that class is a miss."""
    from datasets import DatasetDict

    train, test = cifar_splits["train"], cifar_splits["test"]
    seen = [i for i, y in enumerate(train["label"]) if y != 9]
    DatasetDict({"train": train.select(seen), "test": test}).save_to_disk(tmp_path / "d")
    assert _probe_run(probe_data_root, tmp_path, f"hf:{tmp_path / 'd'}", ", val_proportion: 0") == 0
    record = results.read(results.run_path(tmp_path / "o", "linear_probe", "cosine"))
    assert record.status == "ok", record.error
    outcomes = results.read_outcomes(tmp_path / "o", record)
    nine = np.asarray(test["label"]) == 9
    assert nine.any() and (outcomes["cifar10/lp/rank"][nine] == 9).all()  # below all 9 classes it learnt
