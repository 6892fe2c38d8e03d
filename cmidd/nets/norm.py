"""Normalization layers by name, as the dataset-distillation papers configure them."""

from torch import nn


def instance_norm(channels: int) -> nn.Module:
    # The DC/DM code's "instancenorm": GroupNorm with one group per channel, with affine
    # parameters (nn.InstanceNorm2d has none by default and behaves differently in eval mode).
    return nn.GroupNorm(channels, channels, affine=True)


NORMS = {"instance": instance_norm, "batch": nn.BatchNorm2d, "none": lambda channels: nn.Identity()}


def norm_layer(name: str, channels: int) -> nn.Module:
    if name not in NORMS:
        raise ValueError(f"norm={name!r} is not one of {sorted(NORMS)}")
    return NORMS[name](channels)
