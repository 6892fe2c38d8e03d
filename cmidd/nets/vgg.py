"""VGG-11 with instance norm, as in dataset-distillation papers (DC/DSA/DM code)."""

import torch
from torch import nn

from .norm import norm_layer

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """``embed`` is the flattened output of the last block (512-d on 32x32 at ``width`` 64, the
    reference's; other widths scale every block). Max-pools that would shrink the feature map
    below 1x1 (images smaller than 32 pixels) are left out."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        norm: str = "instance",
        layers: tuple = VGG11,
        width: int = 64,
    ):
        super().__init__()
        blocks, channels, size = [], in_channels, image_size
        for i, item in enumerate(layers):
            if item == "M":
                if size >= 2:
                    blocks.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            pad = 3 if in_channels == 1 and i == 0 else 1  # reference: 28x28 grey -> 32x32
            size += 2 * pad - 2
            item = item * width // 64  # the first block's channels; the others scale with it
            blocks += [
                nn.Conv2d(channels, item, 3, padding=pad),
                norm_layer(norm, item),
                nn.ReLU(inplace=True),
            ]
            channels = item
        self.features = nn.Sequential(*blocks)
        self.feature_dim = channels * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
