"""Point sets from a tiny random-weight open_clip model: the last point is the model's own embedding."""

import json

import pytest
import torch

from bench.data.fixtures import TINY_BACKBONE
from bench.features.backbone import Backbone, BackboneError, BackboneSpec

TINY = TINY_BACKBONE


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "simbench-tiny.json"
    path.write_text(json.dumps(TINY))
    return Backbone(BackboneSpec.parse(str(path)), layers=3, seed=0)


def test_last_point_is_exactly_encode_image_and_encode_text(tiny_backbone):
    bb = tiny_backbone
    images = torch.randn(4, 3, 32, 32)
    tokens = bb.tokenize(["a photo of a cat", "a dog", "two birds on a wire", ""])
    ip, tp = bb.image_points(images), bb.text_points(tokens)
    assert ip.shape == (4, 3, 32) and tp.shape == (4, 3, 32)
    with torch.no_grad():
        assert torch.equal(ip[:, -1], bb.model.encode_image(images).float())
        assert torch.equal(tp[:, -1], bb.model.encode_text(tokens).float())
    assert not torch.allclose(ip[:, 0], ip[:, -1])  # earlier blocks give different points


def test_earlier_points_are_the_pooled_token_through_final_norm_and_projection(tiny_backbone):
    bb = tiny_backbone
    m = bb.model
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = m.visual._embeds(images)
        outs = []
        for blk in m.visual.transformer.resblocks:
            x = blk(x)
            outs.append(x)
        expected = m.visual.ln_post(outs[-2][:, 0]) @ m.visual.proj  # second-to-last block's CLS
    assert torch.allclose(bb.image_points(images)[:, -2], expected, atol=1e-5)


def test_random_weights_are_announced_and_recorded(tiny_backbone, caplog, tmp_path):
    import logging

    assert tiny_backbone.identity["weights"] == "random:seed0"
    assert tiny_backbone.identity["model_config_sha256"]
    path = tmp_path / "simbench-tiny.json"
    path.write_text(json.dumps(TINY))
    with caplog.at_level(logging.WARNING, logger="bench.features.backbone"):
        other = Backbone(BackboneSpec.parse(str(path)), layers=2, seed=3)
    assert other.identity["weights"] == "random:seed3"
    assert any("NO pretrained weights" in r.getMessage() and "seed 3" in r.getMessage() for r in caplog.records)


def test_unknown_model_name_suggests():
    with pytest.raises(BackboneError, match="Did you mean"):
        Backbone(BackboneSpec.parse("ViT-B-3:openai"))


def test_spec_parsing():
    assert BackboneSpec.parse("ViT-B-32:openai") == BackboneSpec("ViT-B-32", "openai")
    assert BackboneSpec.parse("ViT-B-32") == BackboneSpec("ViT-B-32", None)
    assert str(BackboneSpec.parse("RN50:/ckpt/x.pt")) == "RN50:/ckpt/x.pt"


def test_dataset_features_go_through_the_cache_and_match_the_model(tiny_backbone, tmp_path, monkeypatch):
    from PIL import Image

    from bench.features import extract
    from bench.features.cache import FeatureCache

    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (40 + i, 36), color=(40 * i, 80, 160)).save(p)
        paths.append(p)
    texts = ["a red square", "a blue square", "a green thing"]
    calls = {"image": 0, "text": 0}
    real_image, real_text = tiny_backbone.image_points, tiny_backbone.text_points

    def count_image(x):
        calls["image"] += 1
        return real_image(x)

    def count_text(t):
        calls["text"] += 1
        return real_text(t)

    monkeypatch.setattr(tiny_backbone, "image_points", count_image)
    monkeypatch.setattr(tiny_backbone, "text_points", count_text)
    cache = FeatureCache(tmp_path / "cache")
    got = extract.image_points(cache, tiny_backbone, "toy", "test", paths, batch_size=2, workers=0, progress=False)
    img, cached = got.points, got.cached
    txt = extract.text_points(cache, tiny_backbone, "toy", "test", texts, batch_size=2, progress=False).points
    assert got.corrupt == {}
    assert not cached and img.shape == (5, 3, 32) and txt.shape == (3, 3, 32)
    assert calls == {"image": 3, "text": 2}
    again = extract.image_points(cache, tiny_backbone, "toy", "test", paths, batch_size=2, workers=0, progress=False)
    img2, cached = again.points, again.cached
    txt2 = extract.text_points(cache, tiny_backbone, "toy", "test", texts, batch_size=2, progress=False).points
    assert cached and calls == {"image": 3, "text": 2}  # no forward pass the second time
    assert torch.equal(img, img2) and torch.equal(txt, txt2)
    with torch.no_grad():
        from PIL import Image as I

        pre = torch.stack([tiny_backbone.preprocess(I.open(p).convert("RGB")) for p in paths])
        assert torch.allclose(img[:, -1], tiny_backbone.model.encode_image(pre), atol=1e-5)
    # touching an image changes the fingerprint: the entry is rebuilt, not reused
    Image.new("RGB", (50, 50)).save(paths[0])
    extract.image_points(cache, tiny_backbone, "toy", "test", paths, batch_size=2, workers=0, progress=False)
    assert calls["image"] == 6


def test_token_readout_is_the_last_block_through_norm_and_projection(tiny_backbone):
    """Tokens equal open_clip's own forward_intermediates output for the last block, through the final
    LayerNorm and projection; the last real point is encode_image / encode_text exactly."""
    bb = tiny_backbone
    m = bb.model
    images = torch.randn(3, 3, 32, 32)
    texts = bb.tokenize(["a photo of a cat", "a dog", ""])
    ip, im = bb.image_tokens(images)
    tp, tm = bb.text_tokens(texts)
    with torch.no_grad():
        out = m.forward_intermediates(
            image=images,
            text=texts,
            image_indices=1,
            text_indices=1,
            normalize=False,
            image_output_fmt="NLC",
            image_output_extra_tokens=True,
        )
        patches = m.visual.ln_post(out["image_intermediates"][-1]) @ m.visual.proj
        text_all = m.ln_final(out["text_intermediates"][-1]) @ m.text_projection
        enc_i, enc_t = m.encode_image(images).float(), m.encode_text(texts).float()
    assert ip.shape == (3, 16 + 1, 32) and bool(im.all())  # 4 x 4 patches, then the class token
    assert torch.allclose(ip[:, :-1], patches, atol=1e-5)
    assert torch.equal(ip[:, -1], enc_i)
    lengths = tm.sum(1)
    assert lengths.tolist() == [int(texts[i].argmax()) + 1 for i in range(3)]  # through end-of-text
    assert lengths[2] == 2  # an empty caption: start and end
    for i in range(3):
        n = int(lengths[i])
        assert torch.allclose(tp[i, : n - 1], text_all[i, : n - 1], atol=1e-5)
        assert torch.equal(tp[i, n - 1], enc_t[i])
