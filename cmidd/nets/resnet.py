"""CIFAR-style ResNet-18: 3x3 stem, no max-pool, global average pooling (DC/CMI reference)."""

import torch
from torch import nn
from torch.nn import functional as F

from .norm import norm_layer


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm_layer(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), norm_layer(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """``embed`` returns the globally average-pooled 512-d features."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        norm: str = "instance",
        width: int = 64,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(norm, width)
        blocks, planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**i
            blocks += [BasicBlock(planes, out, stride, norm), BasicBlock(out, out, 1, norm)]
            planes = out
        self.layers = nn.Sequential(*blocks)
        self.feature_dim = planes
        self.classifier = nn.Linear(planes, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
