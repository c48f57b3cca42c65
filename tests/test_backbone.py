"""Point sets from a tiny random-weight open_clip model: the last point is the model's own embedding."""
import json

import pytest
import torch

from bench.backbone import Backbone, BackboneError, BackboneSpec

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}


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


def test_random_weights_are_announced_and_recorded(tiny_backbone, caplog):
    assert tiny_backbone.identity["weights"] == "random:seed0"
    assert tiny_backbone.identity["model_config_sha256"]


def test_unknown_model_name_suggests():
    with pytest.raises(BackboneError, match="Did you mean"):
        Backbone(BackboneSpec.parse("ViT-B-3:openai"))


def test_spec_parsing():
    assert BackboneSpec.parse("ViT-B-32:openai") == BackboneSpec("ViT-B-32", "openai")
    assert BackboneSpec.parse("ViT-B-32") == BackboneSpec("ViT-B-32", None)
    assert str(BackboneSpec.parse("RN50:/ckpt/x.pt")) == "RN50:/ckpt/x.pt"
