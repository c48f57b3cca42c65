"""The contract every similarity head follows, and the head registry.

A head turns cached backbone point sets into a representation per input (``encode_image`` /
``encode_text``) and scores every image against every text (``score``). The same ``score``
gives the logits for the InfoNCE loss and the rankings for evaluation, so what is trained is
exactly what is measured.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from bench.core.registry import Registry

HEADS: Registry[type[SimilarityHead]] = Registry("head")


def register_head(name: str):
    """Class decorator: ``@register_head("my_head")`` on a ``SimilarityHead`` subclass."""
    inner = HEADS.register(name)

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, SimilarityHead)):
            raise TypeError(f"@register_head({name!r}) must decorate a SimilarityHead subclass, got {cls!r}.")
        if cls.readout not in READOUTS:
            raise ValueError(
                f"@register_head({name!r}): readout = {cls.readout!r}; it must be one of {', '.join(READOUTS)}."
            )
        return inner(cls)

    return decorator


def get_head(name: str) -> type[SimilarityHead]:
    return HEADS.get(name)


def list_heads() -> list[str]:
    return HEADS.names()


# What a head reads from the backbone (suites extract only what the chosen heads need):
#   layers: the pooled token at the last L blocks, through the final LayerNorm and projection;
#   tokens: every token of the last block through the same (image: patches, then the class token;
#           text: the real tokens up to and including end-of-text), float16 on disk, with a mask.
# Either way the last real point of a set is the backbone's own pooled embedding.
READOUTS = ("layers", "tokens")


class SimilarityHead(nn.Module):
    """Base class. Subclasses set the metadata below and implement the three methods.

    Inputs are point sets ``[n, p, dim]`` with an optional boolean mask ``[n, p]`` (True marks a
    real point); the last real point of each set is the backbone's own pooled embedding.
    """

    name: str = ""
    version: int = 1
    description: str = ""
    trainable: bool = True
    # Scoring memory in MiB for heads that score in blocks (None: the head does not chunk). An
    # option users can set; on out-of-memory, evaluation halves it and retries (bench/eval/scoring.py).
    memory_budget_mb: float | None = None
    readout: str = "layers"  # one of READOUTS
    # Options ``run_bench.py tune`` searches besides the shared training settings: option -> range
    # ({"low", "high", "log"}; the option's type comes from its default). Metadata, not code.
    tunable: dict = {}

    def __init_subclass__(cls, **kwargs):
        """Record every constructor option, defaults included, as ``self.options`` (shown in the head's
        repr), so no head keeps a hand-written copy of its own signature."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            init(self, *args, **kw)
            if type(self).__init__ is recording_init:  # the most derived constructor records
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                self.options = {
                    k: v
                    for k, v in bound.arguments.items()
                    if k not in ("self", "image_dim", "text_dim")
                    and signature.parameters[k].kind
                    not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                }

        cls.__init__ = recording_init

    def __init__(self, image_dim: int, text_dim: int):
        super().__init__()
        if int(image_dim) <= 0 or int(text_dim) <= 0:
            raise ValueError(
                f"{type(self).__name__}: image_dim and text_dim must be positive, got {image_dim}, {text_dim}."
            )
        self.image_dim = int(image_dim)
        self.text_dim = int(text_dim)
        self.options: dict[str, Any] = {}

    # -- the contract -------------------------------------------------------------------
    def encode_image(self, points: torch.Tensor, mask: torch.Tensor | None = None):
        raise NotImplementedError

    def encode_text(self, points: torch.Tensor, mask: torch.Tensor | None = None):
        raise NotImplementedError

    def score(self, image_rep, text_rep) -> torch.Tensor:
        """``[n_images, n_texts]`` logits."""
        raise NotImplementedError

    def score_directions(self, image_rep, text_rep) -> tuple[torch.Tensor, torch.Tensor]:
        """``(i2t, t2i)``, both ``[n_images, n_texts]``: an image query ranks a row of ``i2t``, a text
        query a column of ``t2i``. Training, retrieval and the synthetic metrics use each direction's
        own matrix; zero-shot (images query classes) uses ``i2t``. Default: ``score`` for both.
        Override it (returning ``score``'s matrix as ``i2t``) when the two directions differ (FILIP)."""
        scores = self.score(image_rep, text_rep)
        return scores, scores

    @classmethod
    def directional_scores(cls) -> bool:
        """True when the head overrides ``score_directions``: its two directions may differ, and errors in
        them are its own ``score_directions()``'s, not ``score()``'s."""
        return cls.score_directions is not SimilarityHead.score_directions

    def embed_image(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One vector per image, ``[n, d]``, for the linear-probe suite (which L2-normalises it, as
        CLIP_benchmark's featurizer does). Optional: a head without it is skipped there, with a note.
        Return the vector whose inner product the head's similarity is built on, where one exists."""
        raise NotImplementedError

    @classmethod
    def has_image_embedding(cls) -> bool:
        return cls.embed_image is not SimilarityHead.embed_image

    def begin_train_step(self, step: int) -> None:
        """Called before every training step's encoding (e.g. to redraw random features); default nothing."""

    def combine_prompts(self, text_rep, n_classes: int, n_prompts: int):
        """One class representation from ``n_prompts`` prompt representations per class.

        ``text_rep`` holds ``n_classes * n_prompts`` texts, class-major. Heads whose
        representation is a mean embedding average it (that is exact for a mean embedding).
        The default asks the representation (``mean_over_groups``) and, for a plain tensor,
        averages over the prompts; override it when averaging is wrong for your head.
        """
        if hasattr(text_rep, "mean_over_groups"):
            return text_rep.mean_over_groups(n_classes, n_prompts)
        if isinstance(text_rep, torch.Tensor):
            return text_rep.reshape(n_classes, n_prompts, *text_rep.shape[1:]).mean(dim=1)
        raise TypeError(
            f"{type(self).__name__}: cannot combine prompts of a {type(text_rep).__name__}; "
            f"give it a mean_over_groups method or override combine_prompts."
        )

    def diagnostics(self, image_points: torch.Tensor, text_points: torch.Tensor) -> dict[str, float]:
        """Numbers about the head itself on a sample of test point sets (e.g. how far an approximation is
        from what it approximates), recorded in the result beside the metrics; not metrics. Default none."""
        return {}

    def check_device(self, device: torch.device) -> None:
        """Raise ValueError if these options cannot run on ``device``; called before any work."""

    # -- helpers ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return f"name={self.name!r}, version={self.version}, options={self.options}"

    @staticmethod
    def check_points(points: torch.Tensor, mask: torch.Tensor | None, dim: int, side: str) -> torch.Tensor:
        """Validate shapes early so a wrong feature file fails with a message, not deep in a matmul."""
        if points.dim() != 3 or points.shape[-1] != dim:
            raise ValueError(f"{side} points must have shape [n, p, {dim}], got {tuple(points.shape)}.")
        if mask is None:
            return torch.ones(points.shape[:2], dtype=torch.bool, device=points.device)
        if mask.shape != points.shape[:2]:
            raise ValueError(f"{side} mask must have shape {tuple(points.shape[:2])}, got {tuple(mask.shape)}.")
        mask = mask.to(device=points.device, dtype=torch.bool)
        if points.shape[0] and not bool(mask.any(dim=1).all()):
            raise ValueError(f"every {side} point set needs at least one real point (mask row all False).")
        return mask
