"""open_clip backbones as point-set extractors.

A point set is the backbone's pooled token (image CLS, text end-of-text) read out at the last L
transformer blocks, each through the tower's final LayerNorm and output projection, so every point
lives in the joint embedding space. The last point is the model's own ``encode_image`` /
``encode_text`` output, taken from the same forward pass: exact by construction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.core import hashing
from bench.core.errors import BackboneError

log = logging.getLogger(__name__)


@dataclass
class BackboneSpec:
    """``NAME[:PRETRAINED]``: an open_clip config name or a model-config JSON path, then a tag or a checkpoint."""

    model: str
    pretrained: str | None

    @classmethod
    def parse(cls, text: str) -> BackboneSpec:
        model, sep, pretrained = text.partition(":") if not Path(text).exists() else (text, "", "")
        if not model:
            raise BackboneError(f"--backbone {text!r}: expected NAME[:PRETRAINED], e.g. ViT-B-32:openai.")
        return cls(model, pretrained or None)

    def __str__(self) -> str:
        return self.model + (f":{self.pretrained}" if self.pretrained else "")


_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """Content hash of a weights or config file (memoised per path, size and mtime within a process)."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        _SHA_MEMO[memo] = hashing.file_sha256(path)[:16]
    return _SHA_MEMO[memo]


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def weights_identity(spec: BackboneSpec, seed: int) -> dict:
    """What identifies the backbone's numbers, without building it: the model config's and the
    checkpoint's content hashes (not their paths), the pretrained tag, or the seed of random weights."""
    import open_clip

    config_sha = None
    if spec.model.endswith(".json"):
        path = Path(spec.model)
        if not path.is_file():
            raise BackboneError(
                f"--backbone: model config {spec.model!r} does not exist; pass an existing open_clip "
                "model-config JSON, or an open_clip model name (see open_clip.list_models())."
            )
        config_sha = file_sha256(path)
    pretrained = spec.pretrained
    if pretrained and Path(pretrained).is_file():
        weights = f"checkpoint:{file_sha256(Path(pretrained))}"
    elif pretrained and ("/" in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)):
        raise BackboneError(
            f"--backbone: checkpoint {pretrained!r} does not exist (or is not a file). Pass the path "
            "of a weights file, or an open_clip pretrained tag such as 'openai'."
        )
    elif pretrained:
        weights = f"tag:{pretrained}"
    else:
        weights = f"random:seed{seed}"
    return {
        "model": Path(spec.model).stem if config_sha else spec.model,
        "model_config_sha256": config_sha,
        "weights": weights,
        "open_clip": open_clip.__version__,
    }


class Backbone:
    def __init__(self, spec: BackboneSpec, layers: int = 4, device: str | torch.device = "cpu", seed: int = 0):
        import open_clip

        if layers < 1:
            raise BackboneError(f"layers must be >= 1, got {layers}.")
        self.spec, self.layers, self.device = spec, int(layers), torch.device(device)
        weights = weights_identity(spec, seed)
        name = weights["model"]
        if spec.model.endswith(".json"):
            _add_model_config(Path(spec.model))
        if name not in open_clip.list_models():
            from bench.core.registry import suggest

            raise BackboneError(f"unknown open_clip model {name!r}.{suggest(name, open_clip.list_models())}")
        pretrained = spec.pretrained
        if not pretrained:
            torch.manual_seed(seed)
            log.warning(
                "backbone %s has NO pretrained weights: randomly initialised from seed %d. "
                "Scores measure nothing about a real CLIP model.",
                name,
                seed,
            )
        self.model, _, self.preprocess = _create(name, pretrained)
        self.model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        if not hasattr(self.model, "forward_intermediates") or not hasattr(self.model, "visual"):
            raise BackboneError(
                f"open_clip model {name!r} has no forward_intermediates; point sets need a CLIP-style model."
            )
        self.embed_dim = int(
            self.model.text_projection.shape[-1]
            if not isinstance(self.model.text_projection, torch.nn.Linear)
            else self.model.text_projection.out_features
        )
        blocks = _blocks(self.model)
        if self.layers > blocks:
            raise BackboneError(
                f"layers={self.layers} asks for the pooled token at the last {self.layers} blocks, but "
                f"{name} has {blocks} (the fewer of its two towers); set the suite's layers to 1..{blocks}."
            )
        self.identity = {**weights, "layers": self.layers, "preprocess": repr(self.preprocess)}

    @property
    def key(self) -> str:
        return hashing.json_sha256(self.identity, 16)

    @torch.no_grad()
    def image_points(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` preprocessed images -> ``[B, L, D]`` points (last = encode_image)."""
        out = self.model.forward_intermediates(
            image=images.to(self.device),
            image_indices=self.layers,
            normalize=False,
            normalize_intermediates=True,
            image_output_fmt="NLC",
            image_output_extra_tokens=True,
        )
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
        out = m.forward_intermediates(
            text=tokens, text_indices=self.layers, normalize=False, normalize_intermediates=True
        )
        points = []
        for x in out["text_intermediates"][:-1]:
            pooled = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
            if isinstance(m.text_projection, torch.nn.Linear):
                pooled = m.text_projection(pooled)
            elif m.text_projection is not None:
                pooled = pooled @ m.text_projection
            points.append(pooled)
        return torch.stack([*points, out["text_features"]], dim=1).float()

    @torch.no_grad()
    def image_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` -> every token of the last block through the final LayerNorm and projection:
        ``[B, patches + 1, D]`` (patches, then the pooled token: exactly encode_image) and an all-True mask."""
        out = self.model.forward_intermediates(
            image=images.to(self.device),
            image_indices=1,
            normalize=False,
            normalize_intermediates=True,
            image_output_fmt="NLC",
            image_output_extra_tokens=True,
        )
        patches = out["image_intermediates"][-1]
        if patches.dim() == 4:  # a tower that ignores the NLC request returns NCHW
            patches = patches.flatten(2).transpose(1, 2)
        proj = self.model.visual.proj
        patches = patches @ proj if proj is not None else patches
        points = torch.cat([patches, out["image_features"][:, None]], dim=1).float()
        return points, torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)

    @torch.no_grad()
    def text_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, context]`` -> the last block's tokens through ln_final and the projection, ``[B, context, D]``,
        with a mask of the real ones: up to and including end-of-text, whose point is encode_text exactly."""
        m = self.model
        tokens = tokens.to(self.device)
        pool = getattr(m, "text_pool_type", "argmax")
        if pool == "argmax":
            end = tokens.argmax(dim=-1)
        elif pool == "eos" and getattr(m, "text_eos_id", None) is not None:
            end = (tokens == m.text_eos_id).int().argmax(dim=-1)
        else:
            raise BackboneError(
                f"the tokens readout needs a text tower pooled at end-of-text (argmax or eos); "
                f"{self.spec.model} pools with {pool!r}. Use a layers-readout head with it."
            )
        out = m.forward_intermediates(text=tokens, text_indices=1, normalize=False, normalize_intermediates=True)
        x = out["text_intermediates"][-1]
        if isinstance(m.text_projection, torch.nn.Linear):
            x = m.text_projection(x)
        elif m.text_projection is not None:
            x = x @ m.text_projection
        x = x.float().clone()
        rows = torch.arange(len(tokens), device=x.device)
        x[rows, end] = out["text_features"].float()
        mask = torch.arange(tokens.shape[1], device=x.device)[None, :] <= end[:, None]
        return x, mask

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


def _add_model_config(path: Path) -> None:
    import json as _json

    import open_clip

    try:
        cfg = _json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, _json.JSONDecodeError) as exc:
        raise BackboneError(
            f"--backbone: model config {str(path)!r} is not valid JSON ({exc}); fix the file "
            "(open_clip's model configs are the template)."
        ) from None
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise BackboneError(
            f"--backbone: model config {str(path)!r} needs the keys embed_dim, vision_cfg and text_cfg "
            "(open_clip's model configs are the template)."
        )
    open_clip.add_model_config(path)


def _create(name: str, pretrained: str | None):
    """open_clip's constructor, its failures turned into messages that say which file or tag and what to do."""
    import open_clip

    try:
        return open_clip.create_model_and_transforms(name, pretrained=pretrained)
    except Exception as exc:  # noqa: BLE001 (open_clip raises anything from RuntimeError to UnpicklingError)
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        if pretrained and Path(pretrained).is_file():
            raise BackboneError(
                f"--backbone: checkpoint {pretrained!r} could not be loaded into {name} ({what}). The file is "
                f"truncated, not a checkpoint, or made for another model config; pass the matching NAME:CHECKPOINT."
            ) from None
        if pretrained:
            raise BackboneError(
                f"--backbone: pretrained weights {pretrained!r} for {name} are not available here ({what}). "
                f"Nothing can be downloaded offline: download the checkpoint elsewhere and pass "
                f"{name}:/path/to/checkpoint, or run with network access once so open_clip caches it."
            ) from None
        raise BackboneError(f"--backbone: open_clip could not build {name} ({what}).") from None


def _blocks(model) -> int:
    """Transformer blocks in the shorter of the two towers (the point readout needs the last L of both)."""
    counts = []
    for tower in (getattr(getattr(model, "visual", None), "transformer", None), getattr(model, "transformer", None)):
        blocks = getattr(tower, "resblocks", None)
        if blocks is not None:
            counts.append(len(blocks))
    return min(counts) if counts else 10**9
