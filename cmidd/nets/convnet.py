"""The ConvNet of the dataset-distillation literature (DC, DSA, DM, MTT, IDC, IDM)."""

import torch
from torch import nn

from .norm import norm_layer

POOLS = {"avg": lambda: nn.AvgPool2d(2, 2), "max": lambda: nn.MaxPool2d(2, 2), "none": nn.Identity}


class ConvNet(nn.Module):
    """``depth`` blocks of [conv 3x3 (width); norm; ReLU; 2x2 pooling], then a linear classifier.

    ``embed`` returns the flattened output of the last block (2048-d for width 128 on 32x32).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        pooling: str = "avg",
    ):
        super().__init__()
        if pooling not in POOLS:
            raise ValueError(f"pooling={pooling!r} is not one of {sorted(POOLS)}")
        layers, channels, size = [], in_channels, image_size
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                norm_layer(norm, width),
                nn.ReLU(inplace=True),
                POOLS[pooling](),
            ]
            channels = width
            size = size // 2 if pooling != "none" else size
        if size < 1:
            raise ValueError(f"depth={depth} pools an image of size {image_size} away; lower depth")
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
