"""Similarity heads. Add a head: write one module with a ``@register_head`` class, then list
it in ``BUILTIN_MODULES`` below (or load your own file with ``run_bench.py --head-module``)."""

from __future__ import annotations

import importlib

from heads.base import HEADS, SimilarityHead, get_head, list_heads, register_head

# The one place that decides which heads ship with the package.
BUILTIN_MODULES = (
    "heads.cosine",
    "heads.clip_frozen",
    "heads.kme_rbf",
    "heads.kme_rff",
    "heads.kme_proto",  # kme_proto and its control, proto_cosine
    "heads.wpse",
    "heads.filip",
    "heads.meru",
    "heads.pcmepp",
    "heads.smooth_chamfer",
    "heads.flair",
)

for _module in BUILTIN_MODULES:
    importlib.import_module(_module)

__all__ = ["HEADS", "SimilarityHead", "get_head", "list_heads", "register_head", "BUILTIN_MODULES"]
