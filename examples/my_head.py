"""A complete custom head, run with:

    python run_bench.py --head-module examples/my_head.py --heads my_bilinear,cosine

It scores with a learnable bilinear form between the pooled points: s(x, y) = t * e_x^T W e_y.
"""

import math

import torch
from torch import nn

from heads import SimilarityHead, register_head


@register_head("my_bilinear")
class MyBilinear(SimilarityHead):
    version = 1
    description = "Bilinear form between unit pooled embeddings, times a learnable scale."
    trainable = True

    def __init__(self, image_dim: int, text_dim: int, init_scale: float = 1 / 0.07):
        super().__init__(image_dim, text_dim)
        self.options = {"init_scale": init_scale}  # recorded in the result file
        self.bilinear = nn.Parameter(torch.eye(image_dim, text_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def encode_image(self, points, mask=None):
        return nn.functional.normalize(points[:, -1].float(), dim=-1)  # the pooled point is last

    def encode_text(self, points, mask=None):
        return nn.functional.normalize(points[:, -1].float(), dim=-1)

    def score(self, image_rep, text_rep):
        return self.log_scale.clamp(max=math.log(100)).exp() * image_rep @ self.bilinear @ text_rep.T
