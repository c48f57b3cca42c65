"""Every input a user can get wrong, table-driven: the exit code, a phrase the one-paragraph message
must contain, and which files must be left exactly as they were.

Exit 2: refused before any work, nothing in --out or the data root changed. Exit 1: a user's head
broke; it is recorded as failed with its error and the other heads still ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import SMALL
from PIL import Image
from test_backbone import TINY

import heads
from bench.cli import main
from bench.data.fixtures import make_coco, make_flickr
from bench.report import results

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------------------------
# The synthetic suite: config, flags, paths, baselines, result files.

SYNTH_CASES = [
    # id, config overrides (merged into SMALL), extra CLI args, expected exit, phrase in stderr
    ("lr-nan", {"train": {"lr": float("nan")}}, [], 2, "train.lr must be a finite number"),
    ("lr-inf", {"train": {"lr": float("inf")}}, [], 2, "finite number"),
    ("weight-decay-negative", {"train": {"weight_decay": -1}}, [], 2, "train.weight_decay = -1.0 is out of range"),
    ("grad-clip-negative", {"train": {"grad_clip": -1}}, [], 2, "train.grad_clip = -1.0 is out of range"),
    ("steps-fraction", {"train": {"steps": 2.5}}, [], 2, "train.steps must be an integer"),
    ("batch-one", {"train": {"batch_size": 1}}, [], 2, "batch_size >= 2 (InfoNCE needs negatives)"),
    ("points-used-fraction", {"heads": {"kme_rbf": {"points_used": 2.5}}}, [], 2, "points_used must be an int"),
    ("points-used-zero", {"heads": {"kme_rbf": {"points_used": 0}}}, [], 2, "points_used must be a positive integer"),
    ("rff-budget-zero", {"heads": {"kme_rff": {"memory_budget_mb": 0}}}, [], 2, "memory_budget_mb must be positive"),
    (
        "rbf-budget-negative",
        {"heads": {"kme_rbf": {"memory_budget_mb": -5}}},
        [],
        2,
        "memory_budget_mb must be positive",
    ),
    ("sigma-nan", {"heads": {"kme_rbf": {"sigma": float("nan")}}}, [], 2, "finite number"),
    ("unknown-head-option", {"heads": {"kme_rbf": {"sigmaa": 0.3}}}, [], 2, "Did you mean: 'sigma'"),
    ("option-null", {"heads": {"kme_rff": {"num_features": None}}}, [], 2, "must not be null"),
    (
        "triton-on-cpu",
        {"heads": {"kme_rbf": {"kernel": "triton"}}},
        ["--device", "cpu"],
        2,
        "kernel: triton needs a CUDA device",
    ),
    ("batch-larger-than-train", {"train": {"batch_size": 5000}}, [], 2, "train_pairs = 1000 is out of range"),
    ("topics-zero", {"suites": {"synthetic": {"topics": 0}}}, [], 2, "suites.synthetic.topics = 0 is out of range"),
    ("test-pairs-zero", {"suites": {"synthetic": {"test_pairs": 0}}}, [], 2, "suites.synthetic.test_pairs = 0"),
    ("bend-one", {"suites": {"synthetic": {"bend": 1.0}}}, [], 2, "suites.synthetic.bend"),
    ("noise-zero", {"suites": {"synthetic": {"noise": 0}}}, [], 2, "suites.synthetic.noise"),
    ("world-seed-negative", {"suites": {"synthetic": {"world_seed": -1}}}, [], 2, "world_seed"),
    ("unknown-suite-key", {"suites": {"synthetic": {"topcs": 3}}}, [], 2, "Did you mean: 'topics'"),
    ("unknown-suite-in-config", {"suites": {"retreival": {}}}, [], 2, "Did you mean: 'retrieval'"),
    ("unknown-top-key", {"trian": {}}, [], 2, "Did you mean: 'train'"),
    ("seed-string", {"seed": "zero"}, [], 2, "seed must be of type int"),
    ("seed-huge", {}, ["--seed", str(2**70)], 2, "--seed 1180591620717411303424 is out of range"),
    ("seed-negative", {}, ["--seed", "-1"], 2, "out of range"),
    ("device-meta", {}, ["--device", "meta"], 2, "--device 'meta'"),
    ("device-nonsense", {}, ["--device", "gpu0"], 2, "--device 'gpu0' is not a device"),
    ("device-cuda-absent", {}, ["--device", "cuda"], 2, "torch sees no GPU"),
    ("heads-empty", {}, ["--heads", " , "], 2, "--heads is empty"),
    ("heads-unknown", {}, ["--heads", "cosin"], 2, "Did you mean: 'cosine'"),
    ("heads-twice", {}, ["--heads", "cosine,cosine"], 2, "names a head twice"),
    ("suite-unknown", {}, ["--suite", "synthetc"], 2, "Did you mean: 'synthetic'"),
    ("check-and-update", {}, ["--check", "B.json", "--update-baseline", "C.json"], 2, "use one of them"),
    ("all-and-check", {}, ["--suite", "all", "--check", "B.json"], 2, "name it with --suite"),
    ("backbone-on-synthetic", {}, ["--backbone", "ViT-B-32"], 2, "--backbone does not apply"),
    ("head-module-missing", {}, ["--head-module", "nowhere/my_head.py"], 2, "no such file"),
    ("repeats-zero", {"repeats": 0}, [], 2, "repeats 0 is out of range"),
    ("repeats-with-check", {}, ["--repeats", "2", "--check", "B.json"], 2, "Use --repeats 1 for the regression check"),
    ("resamples-too-few", {}, ["--resamples", "5"], 2, "--resamples 5: use 0 (no intervals) or at least 100"),
]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An --out folder holding an earlier good run, which no refused run may touch."""
    tmp = tmp_path_factory.mktemp("earlier")
    cfg = tmp / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    out = tmp / "out"
    assert main(["--config", str(cfg), "--out", str(out), "--heads", "cosine,clip_frozen", "--no-progress"]) == 0
    return out


def _merge(base: dict, over: dict) -> dict:
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("case", SYNTH_CASES, ids=[c[0] for c in SYNTH_CASES])
def test_bad_synthetic_input(case, earlier, tmp_path, capsys):
    _, overrides, extra, code, phrase = case
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    before = snapshot(out)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_merge(SMALL, overrides)))
    assert main(["--config", str(cfg), "--out", str(out), "--no-progress", *extra]) == code
    err = capsys.readouterr().err
    assert phrase in err, err
    assert "Traceback" not in err
    assert snapshot(out) == before  # refused before any work: nothing rewritten, not even the leaderboard


def _cfg(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(SMALL) if text is None else text)
    return path


def _paths_cases():
    """Cases built from files: (id, builder(tmp_path, earlier) -> args, exit, phrase)."""

    def out_is_file(tmp, earlier):
        (tmp / "f").write_text("x")
        return ["--config", _cfg(tmp), "--out", tmp / "f"]

    def out_under_file(tmp, earlier):
        (tmp / "f").write_text("x")
        return ["--config", _cfg(tmp), "--out", tmp / "f" / "sub"]

    def out_unwritable(tmp, earlier):
        return ["--config", _cfg(tmp), "--out", "/proc/simbench-out"]  # read-only even for root

    def baseline_null(tmp, earlier):
        (tmp / "b.json").write_text("null")
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--check", tmp / "b.json"]

    def baseline_dir(tmp, earlier):
        (tmp / "b").mkdir()
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--check", tmp / "b"]

    def baseline_garbage(tmp, earlier):
        (tmp / "b.json").write_bytes(b"\xff\xfe{not json")
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--check", tmp / "b.json"]

    def baseline_missing(tmp, earlier):
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--check", tmp / "nope.json"]

    def baseline_scores_list(tmp, earlier):
        base = json.loads((Path(__file__).parent.parent / "results/baselines/synthetic.json").read_text())
        base["scores"] = [1, 2]
        (tmp / "b.json").write_text(json.dumps(base))
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--check", tmp / "b.json"]

    def config_missing(tmp, earlier):
        return ["--config", tmp / "nope.yaml", "--out", tmp / "o"]

    def config_syntax(tmp, earlier):
        return ["--config", _cfg(tmp, "train: {steps: [1, 2\n"), "--out", tmp / "o"]

    def config_list(tmp, earlier):
        return ["--config", _cfg(tmp, "- 1\n- 2\n"), "--out", tmp / "o"]

    def config_train_list(tmp, earlier):
        return ["--config", _cfg(tmp, "train: [1, 2]\n"), "--out", tmp / "o"]

    def head_module_raises(tmp, earlier):
        (tmp / "broken.py").write_text("raise RuntimeError('half-written file')\n")
        return ["--config", _cfg(tmp), "--out", tmp / "o", "--head-module", tmp / "broken.py"]

    return [
        ("out-is-a-file", out_is_file, 2, "is a file, not a folder"),
        ("out-under-a-file", out_under_file, 2, "is a file; pass another folder"),
        ("out-unwritable", out_unwritable, 2, "is not writable"),
        ("baseline-null", baseline_null, 2, "holds NoneType, not a baseline"),
        ("baseline-directory", baseline_dir, 2, "is a folder; pass the baseline's JSON file"),
        ("baseline-not-json", baseline_garbage, 2, "is not valid JSON"),
        ("baseline-missing", baseline_missing, 2, "does not exist; create it with --update-baseline"),
        ("baseline-scores-not-a-mapping", baseline_scores_list, 2, "'scores' must map each head"),
        ("config-missing", config_missing, 2, "does not exist; pass an existing YAML file"),
        ("config-syntax", config_syntax, 2, "is not valid YAML"),
        ("config-not-a-mapping", config_list, 2, "must hold a mapping at the top level"),
        ("config-section-not-a-mapping", config_train_list, 2, "train must be a mapping"),
        ("head-module-raises", head_module_raises, 2, "failed to import: RuntimeError: half-written file"),
    ]


PATH_CASES = _paths_cases()


@pytest.mark.parametrize("case", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_bad_paths(case, earlier, tmp_path, capsys):
    _, build, code, phrase = case
    args = [str(a) for a in build(tmp_path, earlier)]
    before = snapshot(tmp_path)
    assert main([*args, "--no-progress", "--heads", "cosine"]) == code
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_read_only_out_folder(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert main(["--config", str(_cfg(tmp_path)), "--out", str(out), "--no-progress"]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        out.chmod(0o700)


def test_result_file_holding_null_is_named_and_recomputed(earlier, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    (out / "runs" / "synthetic" / "cosine.json").write_text("null")
    assert (
        main(["--config", str(_cfg(tmp_path)), "--out", str(out), "--heads", "cosine,clip_frozen", "--no-progress"])
        == 0
    )
    text = capsys.readouterr().out
    assert "holds NoneType, not a result" in text and "recomputed now" in text
    assert results.read(out / "runs" / "synthetic" / "cosine.json").status == "ok"


# --------------------------------------------------------------------------------------------
# A user's head that breaks: recorded as failed with its error; the others run; exit 1.

BROKEN_HEADS = """
import torch
from heads import SimilarityHead, register_head


class _Base(SimilarityHead):
    version = 1
    description = "broken on purpose"
    trainable = False

    def encode_image(self, points, mask=None):
        return points[:, -1]

    def encode_text(self, points, mask=None):
        return points[:, -1]

    def score(self, image_rep, text_rep):
        return image_rep @ text_rep.T


@register_head("bad_init")
class BadInit(_Base):
    def __init__(self, image_dim, text_dim):
        super().__init__(image_dim, text_dim)
        raise RuntimeError("cannot allocate the prototypes")


@register_head("bad_score")
class BadScore(_Base):
    def score(self, image_rep, text_rep):
        raise RuntimeError("score exploded")


@register_head("none_encode")
class NoneEncode(_Base):
    def encode_text(self, points, mask=None):
        return None


@register_head("wrong_shape")
class WrongShape(_Base):
    def score(self, image_rep, text_rep):
        return (image_rep @ text_rep.T)[:, :3]


@register_head("nan_score")
class NanScore(_Base):
    def score(self, image_rep, text_rep):
        return (image_rep @ text_rep.T) * float("nan")


@register_head("nan_training")
class NanTraining(_Base):
    trainable = True

    def __init__(self, image_dim, text_dim):
        super().__init__(image_dim, text_dim)
        self.w = torch.nn.Parameter(torch.ones(()))

    def score(self, image_rep, text_rep):
        return self.w * (image_rep @ text_rep.T) * float("inf")
"""

HEAD_CASES = [
    ("bad_init", "RuntimeError: cannot allocate the prototypes (at broken_heads.py:"),
    ("bad_score", "RuntimeError: score exploded"),
    ("none_encode", "encode_text() returned None"),
    ("wrong_shape", "score() must return a [150, 150] tensor, got (150, 3)"),
    ("nan_score", "NaN/inf values"),
    ("nan_training", "training loss is"),
]


@pytest.fixture
def forget_broken_heads():
    yield
    for name, _ in HEAD_CASES:
        heads.HEADS.unregister(name)


@pytest.mark.parametrize("head,phrase", HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_a_broken_user_head_fails_alone(head, phrase, tmp_path, capsys, forget_broken_heads):
    module = tmp_path / "broken_heads.py"
    module.write_text(BROKEN_HEADS)
    out = tmp_path / "out"
    code = main(
        [
            "--config",
            str(_cfg(tmp_path)),
            "--out",
            str(out),
            "--head-module",
            str(module),
            "--heads",
            f"{head},clip_frozen",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "1 head(s) failed: " + head in captured.err
    recs = {r.head.name: r for r in results.load_all(out)}
    assert recs[head].status == "failed" and phrase in recs[head].error, recs[head].error
    assert recs["clip_frozen"].status == "ok" and recs["oracle"].status == "ok"  # the others still ran
    assert phrase in (out / "leaderboard.md").read_text()


# --------------------------------------------------------------------------------------------
# Real-data suites: data, backbone, checkpoint and cache problems (tiny random backbone, tiny data).


def make_real_data(root: Path) -> tuple[Path, Path]:
    """Tiny COCO (test and train) and Flickr folders, and the tiny random backbone's config."""
    data = root / "data"
    make_coco(data, n_images=4, per=2, split="test")
    make_coco(data, n_images=4, per=2, split="train")
    make_flickr(data, n_images=3, per=2)
    tiny = root / "simbench-tiny.json"
    tiny.write_text(json.dumps(TINY))
    return data, tiny


@pytest.fixture(scope="module")
def realdata(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return (root, *make_real_data(root))


def _real_cfg(tmp: Path, retrieval: dict | None = None, train: dict | None = None) -> Path:
    cfg = {
        "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, **(train or {})},
        "suites": {
            "retrieval": {
                "layers": 2,
                "workers": 0,
                "batch_size": 4,
                "cache_dir": str(tmp / "cache"),
                **(retrieval or {}),
            }
        },
    }
    path = tmp / "real.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _copy_data(data: Path, tmp: Path) -> Path:
    target = tmp / "data"
    shutil.copytree(data, target)
    return target


def _real_cases():
    def bad_json_config(tmp, data, tiny):
        (tmp / "bad.json").write_text('{"embed_dim": 32,')
        return {"backbone": str(tmp / "bad.json")}

    def config_without_towers(tmp, data, tiny):
        (tmp / "odd.json").write_text('{"embed_dim": 32}')
        return {"backbone": str(tmp / "odd.json")}

    def missing_checkpoint(tmp, data, tiny):
        return {"backbone": f"{tiny}:{tmp / 'nope.pt'}"}

    def random_bytes_checkpoint(tmp, data, tiny):
        (tmp / "w.pt").write_bytes(os.urandom(4096))
        return {"backbone": f"{tiny}:{tmp / 'w.pt'}"}

    def truncated_checkpoint(tmp, data, tiny):
        import open_clip

        model = open_clip.create_model(_register(tiny))
        torch.save(model.state_dict(), tmp / "full.pt")
        blob = (tmp / "full.pt").read_bytes()
        (tmp / "w.pt").write_bytes(blob[: len(blob) // 2])
        return {"backbone": f"{tiny}:{tmp / 'w.pt'}"}

    def mismatched_checkpoint(tmp, data, tiny):
        other = json.loads(tiny.read_text())
        other["embed_dim"] = 16
        (tmp / "other.json").write_text(json.dumps(other))
        import open_clip

        torch.save(open_clip.create_model(_register(tmp / "other.json")).state_dict(), tmp / "w.pt")
        return {"backbone": f"{tiny}:{tmp / 'w.pt'}"}

    def tag_needs_download(tmp, data, tiny):
        return {"backbone": f"{tiny}:laion400m_e32"}

    def real_tag_offline(tmp, data, tiny):
        return {"backbone": "ViT-B-32:openai"}  # builds ViT-B-32 (~3 s), then the offline hub refuses

    def unknown_model(tmp, data, tiny):
        return {"backbone": "ViT-B-33"}

    def too_many_layers(tmp, data, tiny):
        return {"backbone": str(tiny), "layers": 9}

    def datasets_empty(tmp, data, tiny):
        return {"backbone": str(tiny), "datasets": []}

    def datasets_unknown(tmp, data, tiny):
        return {"backbone": str(tiny), "datasets": ["flickr30"]}

    def batch_zero(tmp, data, tiny):
        return {"backbone": str(tiny), "batch_size": 0}

    def workers_negative(tmp, data, tiny):
        return {"backbone": str(tiny), "workers": -1}

    def layers_zero(tmp, data, tiny):
        return {"backbone": str(tiny), "layers": 0}

    def captions_not_utf8(tmp, data, tiny):
        f = data / "flickr30k" / "flickr30k_test_karpathy.txt"
        f.write_bytes(f.read_bytes() + "1000.jpg,caf\xe9 au lait\n".encode("latin-1"))
        return {"backbone": str(tiny)}

    def coco_not_utf8(tmp, data, tiny):
        f = data / "mscoco_captions" / "coco_test_karpathy.json"
        f.write_bytes(f.read_text().replace("caption 0", "caf\xe9").encode("latin-1"))
        return {"backbone": str(tiny)}

    def empty_test_set(tmp, data, tiny):
        (data / "flickr30k" / "flickr30k_test_karpathy.txt").write_text("image,caption\n")
        return {"backbone": str(tiny)}

    def coco_image_without_captions(tmp, data, tiny):
        f = data / "mscoco_captions" / "coco_test_karpathy.json"
        ann = json.loads(f.read_text())
        ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] != 101]
        f.write_text(json.dumps(ann))
        return {"backbone": str(tiny)}

    def null_caption(tmp, data, tiny):
        f = data / "mscoco_captions" / "coco_test_karpathy.json"
        ann = json.loads(f.read_text())
        ann["annotations"][1]["caption"] = None
        f.write_text(json.dumps(ann))
        return {"backbone": str(tiny)}

    def deleted_test_image(tmp, data, tiny):
        (data / "flickr30k" / "1001.jpg").unlink()
        return {"backbone": str(tiny)}

    def cache_is_a_file(tmp, data, tiny):
        (tmp / "cachefile").write_text("x")
        return {"backbone": str(tiny), "cache_dir": str(tmp / "cachefile")}

    def cache_unwritable(tmp, data, tiny):
        return {"backbone": str(tiny), "cache_dir": "/proc/simbench-cache"}

    def source_not_in_run(tmp, data, tiny):
        return {"backbone": str(tiny), "sources": {"imagenet1k": "hf:/nowhere"}}

    def source_not_hf(tmp, data, tiny):
        return {"backbone": str(tiny), "sources": {"flickr30k": str(data / "flickr30k")}}

    def hf_without_captions(tmp, data, tiny):
        from datasets import Dataset

        images = sorted(str(p) for p in (data / "flickr30k").glob("*.jpg"))
        Dataset.from_dict({"image": images, "words": ["x"] * len(images)}).save_to_disk(str(tmp / "hf"))
        return {"backbone": str(tiny), "sources": {"flickr30k": f"hf:{tmp / 'hf'}"}}

    return [
        ("source-for-a-dataset-not-in-the-run", source_not_in_run, "not a dataset of this run"),
        ("source-not-hf", source_not_hf, "write hf:PATH_OR_NAME[:SPLIT]"),
        ("hf-source-without-caption-column", hf_without_captions, "no caption column (tried caption, captions"),
        ("model-config-syntax-error", bad_json_config, "is not valid JSON"),
        ("model-config-without-towers", config_without_towers, "needs the keys embed_dim, vision_cfg and text_cfg"),
        ("checkpoint-missing", missing_checkpoint, "does not exist (or is not a file)"),
        ("checkpoint-random-bytes", random_bytes_checkpoint, "could not be loaded into"),
        ("checkpoint-truncated", truncated_checkpoint, "could not be loaded into"),
        ("checkpoint-for-another-config", mismatched_checkpoint, "made for another model config"),
        ("pretrained-tag-offline", tag_needs_download, "are not available here"),
        ("openai-weights-offline", real_tag_offline, "for ViT-B-32 are not available here"),
        ("unknown-model", unknown_model, "unknown open_clip model 'ViT-B-33'"),
        ("layers-beyond-blocks", too_many_layers, "layers=9 asks for the pooled token at the last 9 blocks"),
        ("datasets-empty", datasets_empty, "name at least one test set"),
        ("datasets-unknown", datasets_unknown, "Did you mean: 'flickr30k'"),
        ("suite-batch-zero", batch_zero, "suites.retrieval.batch_size = 0 is out of range"),
        ("suite-workers-negative", workers_negative, "suites.retrieval.workers = -1 is out of range"),
        ("suite-layers-zero", layers_zero, "suites.retrieval.layers = 0 is out of range"),
        ("captions-not-utf8", captions_not_utf8, "is not UTF-8 text"),
        ("coco-json-not-utf8", coco_not_utf8, "is not UTF-8 text"),
        ("empty-test-set", empty_test_set, "is empty: 0 images, 0 captions"),
        ("coco-image-without-captions", coco_image_without_captions, "1 of 4 images have no caption"),
        ("null-caption", null_caption, "has a caption that is null, not text"),
        ("deleted-test-image", deleted_test_image, "1 missing"),
        ("cache-is-a-file", cache_is_a_file, "is a file, not a folder"),
        ("cache-unwritable", cache_unwritable, "is not writable"),
    ]


def _register(path: Path) -> str:
    import open_clip

    open_clip.add_model_config(path)
    return path.stem


REAL_CASES = _real_cases()


@pytest.mark.parametrize("case", REAL_CASES, ids=[c[0] for c in REAL_CASES])
def test_bad_real_data_input(case, realdata, tmp_path, capsys):
    _, build, phrase = case
    root, data, tiny = realdata
    data = _copy_data(data, tmp_path)
    params = build(tmp_path, data, tiny)
    cfg = _real_cfg(tmp_path, {k: v for k, v in params.items() if k != "backbone"})
    before = snapshot(data)
    out = tmp_path / "out"
    code = main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            params["backbone"],
            "--data-root",
            str(data),
            "--config",
            str(cfg),
            "--heads",
            "clip_frozen",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and phrase in err and "Traceback" not in err, err
    assert snapshot(data) == before and not out.exists()  # the data root untouched, nothing written


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_simbench_cache_env_that_cannot_hold_a_cache(kind, realdata, tmp_path, monkeypatch, capsys):
    root, data, tiny = realdata
    target = tmp_path / "cachefile" if kind == "file" else Path("/proc/simbench-cache")
    if kind == "file":
        target.write_text("x")
    monkeypatch.setenv("SIMBENCH_CACHE", str(target))
    cfg = _real_cfg(tmp_path, {"cache_dir": ""})
    out = tmp_path / "out"
    code = main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            str(tiny),
            "--data-root",
            str(data),
            "--config",
            str(cfg),
            "--heads",
            "clip_frozen",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "($SIMBENCH_CACHE)" in err and ("is a file" in err or "is not writable" in err), err
    assert not out.exists()


def test_batch_larger_than_real_training_set(realdata, tmp_path, capsys):
    root, data, tiny = realdata
    cfg = _real_cfg(tmp_path, train={"batch_size": 64})
    out = tmp_path / "out"
    code = main(
        [
            "--suite",
            "retrieval",
            "--backbone",
            str(tiny),
            "--data-root",
            str(data),
            "--config",
            str(cfg),
            "--heads",
            "cosine",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "train.batch_size=64 is larger than the 6 training pairs" in err, err
    assert not (out / "runs").exists()


def test_cache_manifest_holding_null_is_rebuilt(realdata, tmp_path, capsys):
    root, data, tiny = realdata
    cfg = _real_cfg(tmp_path)
    args = [
        "--suite",
        "retrieval",
        "--backbone",
        str(tiny),
        "--data-root",
        str(data),
        "--config",
        str(cfg),
        "--heads",
        "clip_frozen",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    manifests = sorted((tmp_path / "cache").glob("*/manifest.json"))
    assert manifests
    for m in manifests:
        m.write_text("null")
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = results.read(results.run_path(tmp_path / "a", "retrieval", "clip_frozen")).metrics
    b = results.read(results.run_path(tmp_path / "b", "retrieval", "clip_frozen")).metrics
    assert a == b and all(json.loads(m.read_text()) for m in manifests)  # rebuilt, same features


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    from bench.data.image_source import open_image

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(open_image(tmp_path / "g16.png")).astype(float)
    assert rgb.shape == (32, 32, 3)
    assert np.abs(rgb[..., 0] - ramp / 257).max() <= 0.5 + 1e-9  # the full range onto 0..255
    naive = np.asarray(Image.open(tmp_path / "g16.png").convert("RGB"))
    assert (naive == 255).mean() > 0.9  # what PIL alone gives: almost all white


# --------------------------------------------------------------------------------------------
# A bug in simbench is not bad input: its traceback is shown, with one line saying so, exit 1.


@pytest.mark.parametrize("error", ["KeyError('bend')", "ValueError('internal')"])
def test_an_internal_error_is_a_bug_with_its_traceback_not_exit_2(tmp_path, error):
    """With `bend` missing inside the suite, the old command line printed `error: bend` and exited 2."""
    import subprocess
    import sys

    broken = tmp_path / "breaks_planning.py"
    broken.write_text(f"from bench.run import runner\n\ndef plan(*a, **k):\n    raise {error}\n\nrunner.plan = plan\n")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            str(repo / "run_bench.py"),
            "--head-module",
            str(broken),
            "--heads",
            "cosine",
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and error.split("(")[0] in proc.stderr
    assert "This is a bug in simbench" in proc.stderr and "error: " not in proc.stderr
    assert not (tmp_path / "out").exists()
