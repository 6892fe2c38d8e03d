"""AlexNet as adapted to small images in dataset-distillation papers (DC/DSA/DM code)."""

import torch
from torch import nn


class AlexNet(nn.Module):
    """Five conv layers (128-192-256-192-192 at ``width`` 128, the reference's; other widths
    scale all five) with three 2x2 max-pools; ``embed`` is their flattened output (192*4*4 on
    32x32)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 128):
        super().__init__()
        c1, c2, c3 = width, width * 3 // 2, width * 2
        # The reference pads single-channel 28x28 inputs by 4 so they reach 32x32 after conv1.
        pad = 4 if in_channels == 1 else 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=pad),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        size = (image_size + 2 * pad - 4) // 8
        if size < 1:
            raise ValueError(
                f"AlexNet needs images of at least 8 pixels, got image_size={image_size}"
            )
        self.feature_dim = c2 * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
