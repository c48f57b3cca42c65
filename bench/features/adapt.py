"""Adapting encoders: the last N blocks of both towers train with the head, on a cached prefix.

``train.encoder`` is ``frozen`` (the default: heads train on cached point sets), ``last_blocks:N`` or
``all_blocks``. With N trainable blocks, everything before them is frozen, so it runs once: the hidden
states at the input of the first trainable block are cached (ragged float16, memory-mapped, the token
sets' machinery in bench/features/token_sets.py). Training and evaluation run only the trainable end of
each tower (``Tower``) on that prefix, so a test set is re-encoded through the trained blocks from the
cache, never from images.

A cached set is ``F`` frozen pooled tokens, then the prefix tokens. The layers readout reads the pooled
token at the last L blocks; when L > N the first F = L - N of those blocks are frozen, and their raw
pooled tokens (before the final LayerNorm, which trains) are stored with the prefix.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.core.errors import BackboneError, ConfigError
from bench.features.token_sets import TokenSets

FROZEN = "frozen"
ALL_BLOCKS = "all_blocks"


@dataclass(frozen=True)
class EncoderSpec:
    """``frozen``, ``last_blocks:N`` (N >= 1) or ``all_blocks``: which blocks of both towers train."""

    mode: str
    blocks: int | None = None  # N of last_blocks

    @classmethod
    def parse(cls, text) -> EncoderSpec:
        text = str(text).strip()
        if text in (FROZEN, ALL_BLOCKS):
            return cls(text)
        m = re.fullmatch(r"last_blocks:(\d+)", text)
        if m and int(m.group(1)) >= 1:
            return cls("last_blocks", int(m.group(1)))
        raise ConfigError(
            f"train.encoder = {text!r}: write frozen (heads train on cached features), last_blocks:N (N >= 1: "
            "the last N transformer blocks of both towers, their final LayerNorm and projection train with the "
            "head) or all_blocks (every block; patch and token embeddings stay frozen)."
        )

    @property
    def frozen(self) -> bool:
        return self.mode == FROZEN

    def trainable(self, total_blocks: int) -> int:
        return total_blocks if self.mode == ALL_BLOCKS else int(self.blocks or 0)

    def __str__(self) -> str:
        return f"last_blocks:{self.blocks}" if self.mode == "last_blocks" else self.mode


def tower_blocks(model_name: str) -> int | None:
    """Blocks of the shorter tower from the open_clip model config (name or JSON path), without building it."""
    import open_clip

    if model_name.endswith(".json"):
        try:
            cfg = json.loads(Path(model_name).read_text())
        except (OSError, ValueError):
            return None  # the backbone check names the problem
    else:
        cfg = open_clip.get_model_config(model_name)
    try:
        return min(int(cfg["vision_cfg"]["layers"]), int(cfg["text_cfg"].get("layers", 12)))
    except (TypeError, KeyError, ValueError):
        return None


def check_blocks(spec: EncoderSpec, model_name: str, where: str) -> None:
    """N must fit the towers; checked from the model config before any work."""
    total = tower_blocks(model_name)
    if spec.mode == "last_blocks" and total is not None and spec.blocks > total:
        raise ConfigError(
            f"train.encoder = {spec}: {Path(model_name).stem} has {total} blocks in its shorter tower, so N "
            f"must be 1..{total} (or all_blocks); {where}."
        )


def _apply_proj(x: torch.Tensor, proj) -> torch.Tensor:
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _run_block(block, x: torch.Tensor, batch_first: bool, attn_mask) -> torch.Tensor:
    """One open_clip residual block on ``[B, T, W]`` (as its Transformer runs it)."""
    if not batch_first:
        return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return block(x, attn_mask=attn_mask)


class Tower(nn.Module):
    """One tower's trainable end: copies of its last N blocks, its final LayerNorm and its projection."""

    def __init__(self, side: str, blocks, norm: nn.Module, proj, batch_first: bool, attn_mask, layers: int):
        super().__init__()
        self.side, self.batch_first, self.layers = side, batch_first, int(layers)
        self.blocks = nn.ModuleList(copy.deepcopy(list(blocks)))
        self.norm = copy.deepcopy(norm)
        if isinstance(proj, nn.Parameter):
            self.proj = nn.Parameter(proj.detach().clone())
        else:
            self.proj = copy.deepcopy(proj)
        self.register_buffer("attn_mask", None if attn_mask is None else attn_mask.detach().clone(), persistent=False)

    def frozen_points(self, readout: str) -> int:
        """F: pooled tokens of frozen blocks the layers readout needs (stored before each prefix)."""
        return max(0, self.layers - len(self.blocks)) if readout == "layers" else 0

    def _pool(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled token: the class token of an image, the end-of-text token (the last real one) of a text."""
        if self.side == "image":
            return x[:, 0]
        return x[torch.arange(len(x), device=x.device), lengths - 1]

    def _point(self, raw: torch.Tensor) -> torch.Tensor:
        return _apply_proj(self.norm(raw), self.proj)

    def forward(self, sets: torch.Tensor, mask: torch.Tensor, readout: str):
        """``[B, F + T, W]`` cached sets (F frozen pooled tokens, then the prefix) and their mask -> the
        readout: ``[B, L, D]`` points (layers), or ``([B, T', D] points, mask)`` (tokens)."""
        f = self.frozen_points(readout)
        pooled_frozen, x, real = sets[:, :f], sets[:, f:], mask[:, f:]  # [B, F, W], [B, T, W], [B, T]
        lengths = real.sum(1)
        t = x.shape[1]
        attn = (
            None if self.attn_mask is None else self.attn_mask[:t, :t]
        )  # causal text: pads after a text never reach it
        raws = [pooled_frozen[:, j] for j in range(f)]
        read_from = len(self.blocks) - (self.layers - f)  # the trained blocks whose pooled token is a point
        for i, block in enumerate(self.blocks):
            x = _run_block(block, x, self.batch_first, attn)
            if readout == "layers" and i >= read_from:
                raws.append(self._pool(x, lengths))
        if readout == "layers":
            return torch.stack([self._point(r) for r in raws], dim=1)  # [B, L, D]
        points = self._point(x)  # [B, T, D]: every token through the final LayerNorm and projection
        if self.side == "image":  # patches, then the pooled token (the frozen readout's order)
            points = torch.cat([points[:, 1:], points[:, :1]], dim=1)
            return points, torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
        return points, real.to(points.device)


class Towers(nn.Module):
    """The trainable ends of both towers (what ``train.encoder`` trains with each head)."""

    def __init__(self, image: Tower, text: Tower):
        super().__init__()
        self.image, self.text = image, text

    def side(self, side: str) -> Tower:
        return self.image if side == "image" else self.text


def _text_end(model, tokens: torch.Tensor) -> torch.Tensor:
    pool = getattr(model, "text_pool_type", "argmax")
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    if pool == "eos" and getattr(model, "text_eos_id", None) is not None:
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    raise BackboneError(f"train.encoder needs a text tower pooled at end-of-text (argmax or eos), not {pool!r}.")


def check_adaptable(model) -> None:
    """The towers whose ends ``Tower`` reproduces exactly: a class-token ViT and a causal text transformer."""
    v = getattr(model, "visual", None)
    problems = []
    if v is None or not hasattr(v, "transformer") or not hasattr(v, "_embeds"):
        problems.append("its vision tower is not an open_clip VisionTransformer")
    elif getattr(v, "attn_pool", None) is not None or getattr(v, "final_ln_after_pool", False):
        problems.append("its vision tower pools with attention or after the LayerNorm")
    elif getattr(v, "pool_type", "tok") != "tok":
        problems.append(f"its vision tower pools with {v.pool_type!r}, not the class token")
    if getattr(model, "attn_mask", None) is None or not hasattr(model, "token_embedding"):
        problems.append("its text tower is not a causal open_clip text transformer")
    if problems:
        raise BackboneError(
            f"train.encoder: this backbone cannot adapt its encoders ({'; '.join(problems)}). Use train.encoder: "
            "frozen, or a CLIP ViT backbone such as ViT-B-32."
        )


class Adapter:
    """The frozen part of a backbone's towers (run once, to make the cached prefix) and the pristine
    trainable ends each head starts from."""

    def __init__(self, backbone, spec: EncoderSpec):
        model = backbone.model
        check_adaptable(model)
        self.backbone, self.spec = backbone, spec
        v = model.visual
        self.blocks = min(len(v.transformer.resblocks), len(model.transformer.resblocks))
        n = spec.trainable(self.blocks)
        if n > self.blocks:
            raise ConfigError(
                f"train.encoder = {spec}: the towers have {self.blocks} blocks; N must be 1..{self.blocks}."
            )
        self.first = {"image": len(v.transformer.resblocks) - n, "text": len(model.transformer.resblocks) - n}
        layers = backbone.layers
        self.pristine = Towers(
            Tower("image", v.transformer.resblocks[-n:], v.ln_post, v.proj, v.transformer.batch_first, None, layers),
            Tower(
                "text",
                model.transformer.resblocks[-n:],
                model.ln_final,
                model.text_projection,
                model.transformer.batch_first,
                model.attn_mask,
                layers,
            ),
        ).eval()
        for p in self.pristine.parameters():
            p.requires_grad_(False)

    @property
    def identity(self) -> dict:
        """What a cached prefix depends on: the backbone without its readout, and where the frozen part ends."""
        ident = {k: v for k, v in self.backbone.identity.items() if k != "layers"}
        return {**ident, "encoder_prefix_ends_at": self.first}

    def fresh(self, device) -> Towers:
        """A trainable copy of the pristine ends: every head starts from the same encoder."""
        towers = copy.deepcopy(self.pristine).to(device)
        for p in towers.parameters():
            p.requires_grad_(True)
        return towers

    @torch.no_grad()
    def image_prefix(self, images: torch.Tensor, frozen: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 3, H, W]`` -> ``[B, F + T, W]`` sets (raw pooled tokens of the last F frozen blocks, then the
        hidden states at the input of the first trainable block) and an all-True mask."""
        v = self.backbone.model.visual
        x = v._embeds(images.to(self.backbone.device))  # [B, T, W] after ln_pre: the input of block 0
        pooled = []
        first = self.first["image"]
        for i, block in enumerate(v.transformer.resblocks[:first]):
            x = _run_block(block, x, v.transformer.batch_first, None)
            if i >= first - frozen:
                pooled.append(x[:, 0])
        sets = torch.cat([torch.stack(pooled, 1), x], 1) if pooled else x
        return sets.float(), torch.ones(sets.shape[:2], dtype=torch.bool, device=sets.device)

    @torch.no_grad()
    def text_prefix(self, tokens: torch.Tensor, frozen: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, context]`` tokens -> sets as ``image_prefix``; the mask keeps tokens up to end-of-text (the
        causal mask makes the later ones irrelevant to every point)."""
        m = self.backbone.model
        tokens = tokens.to(self.backbone.device)
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding.to(cast)  # [B, context, W]
        end = _text_end(m, tokens)
        rows = torch.arange(len(tokens), device=x.device)
        pooled = []
        first = self.first["text"]
        for i, block in enumerate(m.transformer.resblocks[:first]):
            x = _run_block(block, x, m.transformer.batch_first, m.attn_mask)
            if i >= first - frozen:
                pooled.append(x[rows, end])
        mask = torch.arange(tokens.shape[1], device=x.device)[None, :] <= end[:, None]
        if pooled:
            x = torch.cat([torch.stack(pooled, 1), x], 1)
            mask = torch.cat([torch.ones(len(x), frozen, dtype=torch.bool, device=x.device), mask], 1)
        return x.float(), mask


class EncoderSlot:
    """The towers the current head trains with; every ``AdaptedPoints`` of a run reads through it."""

    def __init__(self, adapter: Adapter):
        self.adapter = adapter
        self.towers: Towers = adapter.pristine
        self.device = torch.device("cpu")

    def bind(self, device) -> Towers:
        """A fresh trainable copy for the next head."""
        self.device = torch.device(device)
        self.towers = self.adapter.fresh(self.device)
        return self.towers


class AdaptedPoints:
    """Point sets made on demand by the slot's towers from cached prefix sets: ``rows(idx)`` reads the
    prefix a batch at a time and runs the trainable blocks (with gradients while training)."""

    adapted = True

    def __init__(self, prefix: TokenSets, side: str, slot: EncoderSlot, readout: str, layers: int, dim: int):
        self.prefix, self.side, self.slot, self.readout = prefix, side, slot, readout
        self.layers, self.dim = int(layers), int(dim)

    def __len__(self) -> int:
        return len(self.prefix)

    @property
    def shape(self) -> tuple[int, int, int]:
        width = self.layers if self.readout == "layers" else self.prefix.max_tokens
        return (len(self), width, self.dim)

    def select(self, rows) -> AdaptedPoints:
        return AdaptedPoints(self.prefix.select(rows), self.side, self.slot, self.readout, self.layers, self.dim)

    def __getitem__(self, item) -> AdaptedPoints:
        if isinstance(item, slice):
            return self.select(np.arange(len(self))[item])
        return self.select(item)

    def rows(self, idx):
        sets, mask = self.prefix.rows(idx)
        out = self.slot.towers.side(self.side)(sets.to(self.slot.device), mask.to(self.slot.device), self.readout)
        return (out, None) if self.readout == "layers" else out


def prefix_fields(adapter: Adapter, dataset: str, split: str, fingerprint: str, side: str, frozen: int) -> dict:
    return {
        "backbone": adapter.identity,
        "readout": "encoder_prefix",
        "frozen_pooled_tokens": frozen,
        "dataset": dataset,
        "split": split,
        "fingerprint": fingerprint,
        "side": side,
    }
