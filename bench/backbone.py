"""open_clip backbones as point-set extractors.

A point set is the backbone's pooled token (image CLS, text end-of-text) read out at the last L
transformer blocks, each through the tower's final LayerNorm and output projection, so every point
lives in the joint embedding space. The last point is the model's own ``encode_image`` /
``encode_text`` output, taken from the same forward pass: exact by construction.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class BackboneError(ValueError):
    pass


@dataclass
class BackboneSpec:
    """``NAME[:PRETRAINED]``: an open_clip config name or a model-config JSON path, then a tag or a checkpoint."""

    model: str
    pretrained: str | None

    @classmethod
    def parse(cls, text: str) -> "BackboneSpec":
        model, sep, pretrained = text.partition(":") if not Path(text).exists() else (text, "", "")
        if not model:
            raise BackboneError(f"--backbone {text!r}: expected NAME[:PRETRAINED], e.g. ViT-B-32:openai.")
        return cls(model, pretrained or None)

    def __str__(self) -> str:
        return self.model + (f":{self.pretrained}" if self.pretrained else "")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Backbone:
    def __init__(self, spec: BackboneSpec, layers: int = 4, device: str | torch.device = "cpu", seed: int = 0):
        import open_clip

        if layers < 1:
            raise BackboneError(f"layers must be >= 1, got {layers}.")
        self.spec, self.layers, self.device = spec, int(layers), torch.device(device)
        name = spec.model
        config_hash = None
        if name.endswith(".json"):
            path = Path(name)
            if not path.is_file():
                raise BackboneError(f"model config {name!r} does not exist.")
            open_clip.add_model_config(path)
            config_hash = _file_sha256(path)
            name = path.stem
        if name not in open_clip.list_models():
            from bench.registry import suggest

            raise BackboneError(f"unknown open_clip model {name!r}.{suggest(name, open_clip.list_models())}")
        pretrained = spec.pretrained
        weights_id = None
        if pretrained and Path(pretrained).is_file():
            weights_id = f"checkpoint:{_file_sha256(Path(pretrained))}"
        elif pretrained:
            weights_id = f"tag:{pretrained}"
        else:
            torch.manual_seed(seed)
            weights_id = f"random:seed{seed}"
            log.warning("backbone %s has NO pretrained weights: randomly initialised from seed %d. "
                        "Scores measure nothing about a real CLIP model.", name, seed)
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
        self.model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        if not hasattr(self.model, "forward_intermediates") or not hasattr(self.model, "visual"):
            raise BackboneError(f"open_clip model {name!r} has no forward_intermediates; point sets need a CLIP-style model.")
        self.embed_dim = int(self.model.text_projection.shape[-1] if not isinstance(self.model.text_projection, torch.nn.Linear)
                             else self.model.text_projection.out_features)
        self.identity = {"model": name, "model_config_sha256": config_hash, "weights": weights_id,
                         "open_clip": open_clip.__version__, "layers": self.layers,
                         "preprocess": repr(self.preprocess)}

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]

    @torch.no_grad()
    def image_points(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` preprocessed images -> ``[B, L, D]`` points (last = encode_image)."""
        out = self.model.forward_intermediates(
            image=images.to(self.device), image_indices=self.layers, normalize=False,
            normalize_intermediates=True, image_output_fmt="NLC", image_output_extra_tokens=True)
        if "image_intermediates_prefix" not in out:
            raise BackboneError("this vision tower has no class token to read out at each block.")
        proj = self.model.visual.proj
        earlier = [t[:, 0] @ proj if proj is not None else t[:, 0] for t in out["image_intermediates_prefix"][:-1]]
        return torch.stack([*earlier, out["image_features"]], dim=1).float()

    @torch.no_grad()
    def text_points(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, context]`` tokens -> ``[B, L, D]`` points (last = encode_text)."""
        from open_clip.transformer import text_global_pool

        tokens = tokens.to(self.device)
        m = self.model
        out = m.forward_intermediates(text=tokens, text_indices=self.layers, normalize=False, normalize_intermediates=True)
        points = []
        for x in out["text_intermediates"][:-1]:
            pooled = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            if isinstance(m.text_projection, torch.nn.Linear):
                pooled = m.text_projection(pooled)
            elif m.text_projection is not None:
                pooled = pooled @ m.text_projection
            points.append(pooled)
        return torch.stack([*points, out["text_features"]], dim=1).float()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)
