"""train.encoder: a cached prefix plus the trainable ends of both towers equals open_clip's own forward;
gradients reach the trainable blocks and nothing else; bad settings are refused before any work."""

import json
from pathlib import Path

import pytest
import torch
from test_backbone import TINY

from bench.core.errors import ConfigError
from bench.features import adapt
from bench.features.backbone import Backbone, BackboneSpec
from bench.features.token_sets import TokenSets, TokenWriter
from bench.run import config


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "simbench-tiny.json"
    path.write_text(json.dumps(TINY))  # 3 blocks in each tower
    return Backbone(BackboneSpec.parse(str(path)), layers=3, seed=0)


def stored(tmp_path, sets, mask) -> TokenSets:
    """Sets through the on-disk ragged float16 store, as the cache keeps them."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    writer = TokenWriter(tmp_path)
    writer.append(sets, mask)
    layout = writer.finish()
    return TokenSets(tmp_path, layout["dim"], layout["total_tokens"])


INPUTS = (torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)),)
CAPTIONS = ["a photo of a cat", "a dog", "two birds on a long wire above the road", ""]


@pytest.mark.parametrize("spec", ["last_blocks:1", "last_blocks:2", "all_blocks"])
def test_cached_prefix_plus_trainable_blocks_is_open_clips_forward(backbone, tmp_path, spec):
    """Both readouts, with the prefix stored as float16 and ragged (captions of different lengths in one
    batch): the points equal forward_intermediates' (tests/test_backbone.py checks those against open_clip)."""
    adapter = adapt.Adapter(backbone, adapt.EncoderSpec.parse(spec))
    slot = adapt.EncoderSlot(adapter)
    images, tokens = INPUTS[0], backbone.tokenize(CAPTIONS)
    for readout, want_img, want_txt in (
        ("layers", backbone.image_points(images), backbone.text_points(tokens)),
        ("tokens", backbone.image_tokens(images), backbone.text_tokens(tokens)),
    ):
        frozen = adapter.pristine.image.frozen_points(readout)
        assert frozen == ({"last_blocks:1": 2, "last_blocks:2": 1}.get(spec, 0) if readout == "layers" else 0)
        img_sets = stored(tmp_path / f"{spec}{readout}i", *adapter.image_prefix(images, frozen))
        txt_sets = stored(tmp_path / f"{spec}{readout}t", *adapter.text_prefix(tokens, frozen))
        img = adapt.AdaptedPoints(img_sets, "image", slot, readout, 3, 32)
        txt = adapt.AdaptedPoints(txt_sets, "text", slot, readout, 3, 32)
        with torch.no_grad():
            got_img, got_txt = img.rows(torch.arange(4)), txt.rows(torch.arange(4))
        if readout == "layers":
            assert got_img[1] is None and got_txt[1] is None
            torch.testing.assert_close(got_img[0], want_img, atol=5e-3, rtol=5e-3)  # float16 prefix
            torch.testing.assert_close(got_txt[0], want_txt, atol=5e-3, rtol=5e-3)
        else:
            (gi, gim), (gt, gtm) = got_img, got_txt
            assert torch.equal(gim, want_img[1]) and gi.shape == want_img[0].shape
            torch.testing.assert_close(gi, want_img[0], atol=5e-3, rtol=5e-3)
            width = gt.shape[1]  # padded to the longest caption of the batch, not the context
            assert torch.equal(gtm, want_txt[1][:, :width]) and not want_txt[1][:, width:].any()
            torch.testing.assert_close(gt[gtm], want_txt[0][:, :width][gtm], atol=5e-3, rtol=5e-3)


def test_a_subset_reads_the_same_rows(backbone, tmp_path):
    adapter = adapt.Adapter(backbone, adapt.EncoderSpec.parse("last_blocks:1"))
    slot = adapt.EncoderSlot(adapter)
    tokens = backbone.tokenize(CAPTIONS)
    txt = adapt.AdaptedPoints(stored(tmp_path, *adapter.text_prefix(tokens, 2)), "text", slot, "layers", 3, 32)
    with torch.no_grad():
        whole = txt.rows(torch.arange(4))[0]
        part = txt[torch.tensor([False, True, False, True])].rows(torch.arange(2))[0]
    assert len(txt[1:3]) == 2 and txt.shape == (4, 3, 32)
    torch.testing.assert_close(part, whole[[1, 3]])


def test_gradients_reach_the_trainable_blocks_and_nothing_else(backbone, tmp_path):
    adapter = adapt.Adapter(backbone, adapt.EncoderSpec.parse("last_blocks:1"))
    slot = adapt.EncoderSlot(adapter)
    towers = slot.bind("cpu")
    frozen_model = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    img = adapt.AdaptedPoints(
        stored(tmp_path / "i", *adapter.image_prefix(INPUTS[0], 2)), "image", slot, "layers", 3, 32
    )
    txt = adapt.AdaptedPoints(
        stored(tmp_path / "t", *adapter.text_prefix(backbone.tokenize(CAPTIONS), 2)), "text", slot, "layers", 3, 32
    )
    loss = img.rows(torch.arange(4))[0].square().sum() + txt.rows(torch.arange(4))[0].square().sum()
    loss.backward()
    names = {n for n, _ in towers.named_parameters()}
    # exactly one block of each tower, its final LayerNorm and its projection
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in names} == {
        "image.blocks",
        "image.norm",
        "image.proj",
        "text.blocks",
        "text.norm",
        "text.proj",
    }
    assert {n.split(".")[2] for n in names if ".blocks." in n} == {"0"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in towers.parameters())
    assert all(p.grad is None for p in backbone.model.parameters())  # the frozen part never ran
    assert all(p.grad is None for p in adapter.pristine.parameters())  # each head starts from these
    assert all(torch.equal(v, frozen_model[k]) for k, v in backbone.model.state_dict().items())


@pytest.mark.parametrize(
    "train, message",
    [
        ({"encoder": "frozen:2"}, "write frozen"),
        ({"encoder": "last_blocks:0"}, "last_blocks:N (N >= 1"),
        ({"encoder": "some_blocks"}, "train.encoder"),
        ({"encoder_lr": 1e-4}, "does nothing with train.encoder: frozen"),
        ({"encoder": "last_blocks:1", "encoder_lr": 0}, "train.encoder_lr = 0"),
    ],
)
def test_bad_encoder_settings_are_refused_when_resolved(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config.resolve({"train": train})


def test_frozen_leaves_the_resolved_config_as_it_was():
    """The frozen protocol is keyed as before encoders could train: the settings are not in it."""
    assert config.resolve({})["train"] == config.TRAIN_DEFAULTS
    assert config.resolve({"train": {"encoder": "frozen"}})["train"] == config.TRAIN_DEFAULTS
    trained = config.resolve({"train": {"encoder": " last_blocks:2"}})["train"]
    assert trained["encoder"] == "last_blocks:2" and trained["encoder_lr"] == config.ENCODER_DEFAULTS["encoder_lr"]


def test_block_count_is_checked_from_the_model_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    adapt.check_blocks(adapt.EncoderSpec.parse("last_blocks:3"), str(path), "here")
    with pytest.raises(ConfigError, match=r"N\s+must be 1..3"):
        adapt.check_blocks(adapt.EncoderSpec.parse("last_blocks:4"), str(path), "here")
    with pytest.raises(ConfigError, match="must be 1..12"):
        adapt.check_blocks(adapt.EncoderSpec.parse("last_blocks:13"), "ViT-B-32", "here")


# -- end to end: the retrieval suite on generated data, last_blocks:1 ------------------------------------------
@pytest.fixture(scope="module")
def retrieval_data(tmp_path_factory):
    from test_retrieval_suite import make_coco_train, noisy_images

    from bench.data.fixtures import make_coco

    root = tmp_path_factory.mktemp("data")
    make_coco(root, n_images=12, per=5, split="test")
    make_coco_train(root)
    noisy_images(
        root / "mscoco_captions" / "val2014", [p.name for p in (root / "mscoco_captions" / "val2014").iterdir()], 1
    )
    cfg = root / "simbench-tiny.json"
    cfg.write_text(json.dumps(TINY))
    return root, cfg


def adapted_config(root, tmp_path, encoder="last_blocks:1", **train):
    small = tmp_path / "small.yaml"
    train = {"steps": 30, "batch_size": 16, "warmup_steps": 1, "encoder": encoder, "encoder_lr": 0.01, **train}
    small.write_text(
        "train: " + json.dumps(train) + "\n"
        f"suites: {{retrieval: {{layers: 2, workers: 0, batch_size: 8, datasets: [mscoco_captions], "
        f"cache_dir: '{root / 'cache'}'}}}}\n"
    )
    return small


def run(root, cfg, small, out, heads):
    from bench.cli import main

    return main(
        ["--suite", "retrieval", "--backbone", str(cfg), "--data-root", str(root), "--config", str(small)]
        + ["--heads", heads, "--out", str(out), "--no-progress", "--device", "cpu"]
    )


def test_last_blocks_trains_the_encoder_and_the_evaluation_reads_the_trained_blocks(retrieval_data, tmp_path):
    """The loss falls, the saved blocks differ from the pristine ones, and the recorded recalls are those of an
    independent forward through open_clip with the saved weights put into the model."""
    from safetensors.torch import load_file

    import heads as head_registry
    from bench.data import retrieval_data as rd
    from bench.eval import metrics
    from bench.report import results

    root, cfg = retrieval_data
    small = adapted_config(root, tmp_path, eval_points=3, patience=0)
    assert run(root, cfg, small, tmp_path / "out", "cosine,filip") == 0
    recs = {r.head.name: r for r in results.load_all(tmp_path / "out")}
    for rec in recs.values():
        assert rec.ok and rec.config.resolved["train"]["encoder"] == "last_blocks:1"
        losses = [p["train_loss"] for p in rec.curve]
        assert losses[-1] < losses[0], losses
    rec = recs["cosine"]
    weights = load_file(results.weights_path(tmp_path / "out", "retrieval", "cosine"))
    encoder = {k[len("encoder.") :]: v for k, v in weights.items() if k.startswith("encoder.")}
    assert encoder and {k.split(".")[0] for k in encoder} == {"image", "text"}

    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)  # the run's backbone, built anew
    m = bb.model
    ds = rd.load(root, "mscoco_captions", "test")
    from PIL import Image

    images = torch.stack([bb.preprocess(Image.open(p).convert("RGB")) for p in ds.image_paths])
    tokens = bb.tokenize(ds.captions)
    frozen_img, frozen_txt = bb.image_points(images), bb.text_points(tokens)
    with torch.no_grad():  # the saved blocks, put where they came from: open_clip runs the whole model
        for side, blocks, norm, proj in (
            ("image", m.visual.transformer.resblocks, m.visual.ln_post, m.visual.proj),
            ("text", m.transformer.resblocks, m.ln_final, m.text_projection),
        ):
            blocks[-1].load_state_dict(
                {
                    k[len(f"{side}.blocks.0.") :]: v
                    for k, v in encoder.items()
                    if ".blocks.0." in k and k.startswith(side)
                }
            )
            norm.load_state_dict(
                {k[len(f"{side}.norm.") :]: v for k, v in encoder.items() if k.startswith(f"{side}.norm.")}
            )
            proj.copy_(encoder[f"{side}.proj"])
    img, txt = bb.image_points(images), bb.text_points(tokens)
    assert (img - frozen_img).abs().max() > 0.05 and (txt - frozen_txt).abs().max() > 0.05  # the blocks trained
    head = head_registry.get_head("cosine")(32, 32, **rec.head.options)
    head.load_state_dict({k: v for k, v in weights.items() if not k.startswith(("encoder.", "loss."))})
    head.eval()
    with torch.no_grad():
        scores = head.score(head.encode_image(img, None), head.encode_text(txt, None))
        untrained = head.score(head.encode_image(frozen_img, None), head.encode_text(frozen_txt, None))
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.tensor(ds.caption_image), torch.arange(len(ds.captions))] = True
    independent = metrics.retrieval_recalls(scores, positives, (1, 5, 10))
    pristine = metrics.retrieval_recalls(untrained, positives, (1, 5, 10))
    far = 0
    for name, value in independent.items():  # float16 prefix: a near-tie may turn, never more than one query
        got = rec.metrics[f"mscoco_captions/{name}"]
        queries = len(ds.captions) if name.startswith("image") else len(ds.image_paths)
        assert abs(got - value) <= 1 / queries + 1e-9, (name, got, value)
        far += abs(got - pristine[name]) > 1 / queries + 1e-9
    assert far, "the untrained blocks give the same recalls: this check could not tell them apart"


@pytest.mark.parametrize(
    "encoder, heads, suite, message",
    [
        ("last_blocks:4", "cosine", "retrieval", "must be 1..3"),
        ("last_blocks:1", "clip_frozen,cosine", "retrieval", "clip_frozen trains nothing"),
        ("all_blocks", "cosine", "synthetic", "has no backbone whose blocks could train"),
    ],
)
def test_bad_encoder_runs_exit_2_before_any_work(retrieval_data, tmp_path, capsys, encoder, heads, suite, message):
    from bench.cli import main

    root, cfg = retrieval_data
    small = adapted_config(root, tmp_path, encoder=encoder)
    before = sorted((root / "cache").rglob("*")) if (root / "cache").exists() else []
    args = ["--suite", suite, "--config", str(small), "--heads", heads, "--out", str(tmp_path / "o"), "--no-progress"]
    if suite == "retrieval":
        args += ["--backbone", str(cfg), "--data-root", str(root)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert (sorted((root / "cache").rglob("*")) if (root / "cache").exists() else []) == before


class Through:
    """Points made by a module from fixed inputs, a batch at a time, as AdaptedPoints makes them."""

    def __init__(self, x, module):
        self.x, self.module = x, module

    def __len__(self):
        return len(self.x)

    @property
    def shape(self):
        return (len(self.x), 1, self.x.shape[-1])

    def rows(self, idx):
        return self.module(self.x[idx]).unsqueeze(1), None  # [b, 1, D]


def _toy(encoder_lr=0.05):
    import heads as head_registry
    from suites.base import PointSets

    torch.manual_seed(0)
    encoder = torch.nn.ModuleDict({"image": torch.nn.Linear(8, 8), "text": torch.nn.Linear(8, 8)})
    x = torch.randn(64, 8)
    data = PointSets(Through(x, encoder["image"]), Through(x + 0.1 * torch.randn(64, 8), encoder["text"]))
    head = head_registry.get_head("cosine")(8, 8, out_dim=4)
    train = {**config.TRAIN_DEFAULTS, "steps": 12, "batch_size": 16, "warmup_steps": 0, "eval_points": 3}
    return head, encoder, data, {**train, "patience": 0, "encoder": "last_blocks:1", "encoder_lr": encoder_lr}


def test_the_encoder_trains_at_its_own_rate_and_the_best_points_blocks_are_kept():
    from bench.run.train import Validator, train_head

    head, encoder, data, train = _toy()
    seen = []

    def measure(_head):  # the first point is the best: its weights must come back, the encoder's too
        seen.append({k: v.clone() for k, v in encoder.state_dict().items()})
        return 3.0 - len(seen)

    start = {k: v.clone() for k, v in encoder.state_dict().items()}
    stats = train_head(head, data, train, 0, "cpu", validator=Validator("m", True, 0.01, measure), encoder=encoder)
    assert stats.best_step == 4 and len(seen) == 3
    assert all(torch.equal(v, seen[0][k]) for k, v in encoder.state_dict().items())
    assert not all(torch.equal(v, start[k]) for k, v in encoder.state_dict().items())

    head, encoder, data, train = _toy(encoder_lr=1e-9)  # the head's lr (0.01) would move it by far more
    start = {k: v.clone() for k, v in encoder.state_dict().items()}
    train_head(head, data, {**train, "eval_points": 0}, 0, "cpu", encoder=encoder)
    assert max((v - start[k]).abs().max() for k, v in encoder.state_dict().items()) < 1e-6


@pytest.mark.slow  # 25 s: a torchrun launch
def test_torchrun_averages_the_encoders_gradients_like_the_heads(retrieval_data, tmp_path):
    """Two gloo ranks train the same blocks as one process: equal saved encoder weights and metrics."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from bench.report import results

    root, cfg = retrieval_data
    small = adapted_config(root, tmp_path, steps=6, eval_points=0, patience=0)
    assert run(root, cfg, small, tmp_path / "one", "cosine") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(repo / "run_bench.py"), "--suite", "retrieval", "--backbone", str(cfg), "--data-root", str(root)]
    cmd += ["--config", str(small), "--heads", "cosine", "--out", str(tmp_path / "two"), "--device", "cpu"]
    proc = subprocess.run(cmd + ["--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = (load_file(results.weights_path(tmp_path / n, "retrieval", "cosine")) for n in ("one", "two"))
    encoder = [k for k in one if k.startswith("encoder.")]
    assert encoder and set(one) == set(two)
    start = adapt.Adapter(
        Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0), adapt.EncoderSpec.parse("last_blocks:1")
    )
    pristine = start.pristine.state_dict()
    flat = lambda w: torch.cat([w[k].flatten() for k in encoder])  # noqa: E731
    moved = (flat(one) - torch.cat([pristine[k[len("encoder.") :]].flatten() for k in encoder])).norm()
    apart = (flat(two) - flat(one)).norm()
    # Adam moves a weight by about lr whatever its gradient's size, so float order across ranks shows in the
    # smallest gradients; ranks that did not average would each follow half the batch, as far apart as moved
    print(f"moved {float(moved):.4f}, ranks apart {float(apart):.5f}")
    assert moved > 0.05 and apart < 0.05 * moved
    a, b = (results.read(results.run_path(tmp_path / n, "retrieval", "cosine")) for n in ("one", "two"))
    assert b.config.hash == a.config.hash


@pytest.mark.parametrize("suite", ["compositionality", "linear_probe"])  # classification: 80,000 prompts, 110 s
def test_every_backbone_suite_runs_with_trained_blocks(tmp_path, suite):
    """Each real suite reads its test sets through the trained blocks (train.encoder is not retrieval's own)."""
    from test_retrieval_suite import make_coco_train, noisy_images

    from bench.cli import main
    from bench.data.fixtures import make_aro, make_cifar10, make_sugarcrepe, make_winoground
    from bench.report import results

    root = tmp_path / "data"
    make_coco_train(root)
    extra = ""
    if suite == "compositionality":
        sugar = make_sugarcrepe(root, per_task=4)
        noisy_images(sugar / "val2017", [p.name for p in (sugar / "val2017").iterdir()], 5)
        make_winoground(root, n=6)
        make_aro(root)
    else:
        make_cifar10(root, n_train=60, n_test=20)
        extra = ", datasets: [cifar10], epochs: 2, probe_batch_size: 32"
    (root / "tiny.json").write_text(json.dumps(TINY))
    small = tmp_path / "small.yaml"
    small.write_text(
        "train: {steps: 4, batch_size: 8, warmup_steps: 1, encoder: 'last_blocks:1', encoder_lr: 0.01}\n"
        f"suites: {{{suite}: {{layers: 2, workers: 0, batch_size: 8, cache_dir: '{tmp_path / 'cache'}'{extra}}}}}\n"
    )
    args = ["--suite", suite, "--backbone", str(root / "tiny.json"), "--data-root", str(root), "--config", str(small)]
    assert main([*args, "--heads", "cosine,filip", "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    recs = {r.head.name: r for r in results.load_all(tmp_path / "o")}
    assert recs["cosine"].ok and recs["cosine"].config.resolved["train"]["encoder"] == "last_blocks:1"
    assert recs["filip"].status in ("ok", "skipped")  # the probe skips a head without embed_image
    manifests = [json.loads(p.read_text())["fields"] for p in (tmp_path / "cache").glob("*/manifest.json")]
    assert manifests and all(f["readout"] == "encoder_prefix" for f in manifests)  # nothing frozen was extracted


def test_the_tuner_searches_encoder_lr_only_when_blocks_train(tmp_path, capsys):
    import heads as head_registry
    from bench.cli import main
    from bench.run import tuning

    cls = head_registry.get_head("cosine")
    trained = {p.name: p for p in tuning.head_space(cls, None, "default space", encoder=True)}
    assert trained["train.encoder_lr"].high < tuning.DEFAULT_SPACE["train.lr"]["low"]  # far below the head's
    assert "train.encoder_lr" not in {p.name for p in tuning.head_space(cls, None, "default space")}
    space = tmp_path / "space.yaml"
    space.write_text("train.encoder_lr: {low: 1.0e-6, high: 1.0e-4, log: true}\n")
    args = ["tune", "--heads", "cosine", "--trials", "2", "--space", str(space), "--out", str(tmp_path / "o")]
    assert main(args) == 2  # the synthetic suite, frozen: an encoder lr would do nothing
    assert "does nothing with train.encoder: frozen" in capsys.readouterr().err


def test_the_cost_benchmark_measures_the_prefix_it_stores(tmp_path):
    """bench.tools.encoder_speed on the tiny model: the prefix's bytes are its tokens' float16 (17 per image:
    16 patches and the class token, plus the frozen pooled token layers 2 - N 1 needs) and their offsets."""
    from bench.tools import encoder_speed

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    out = tmp_path / "figures.json"
    args = ["--backbone", str(path), "--batch", "8", "--steps", "1", "--layers", "2", "--device", "cpu"]
    assert encoder_speed.main([*args, "--modes", "frozen,last_blocks:1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    adapted = figures["modes"][1]
    width = TINY["vision_cfg"]["width"]
    offsets = (8 * 9 + 128) / 8  # 9 int64 offsets and the .npy header, per image
    assert adapted["bytes_per_image"] == pytest.approx((17 + 1) * width * 2 + offsets, abs=1)
    assert adapted["seconds_per_step"] > 0 and figures["modes"][0]["seconds_per_step"] > 0
    assert figures["time_last_blocks_1_over_frozen"] > 0
