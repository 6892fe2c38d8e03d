"""torchvision's ResNets by name, so that torchvision-format checkpoints (SRe2L's ImageNet teacher
is torchvision's ResNet-18) load into them unchanged; ``embed`` is added as cmidd's nets have."""

import types

import torch
from torchvision import models

from ..errors import UserError


def _embed(self, x: torch.Tensor) -> torch.Tensor:
    """The globally average-pooled features before ``fc``."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)


def torchvision_model(arch: str, in_channels: int, num_classes: int, image_size: int):
    """An untrained ``torchvision.models.get_model(arch)`` ResNet with ``num_classes`` outputs."""
    if in_channels != 3:
        raise UserError(f"net.arch={arch}: torchvision's models take 3 channels, not {in_channels}")
    model = models.get_model(arch, weights=None, num_classes=num_classes)
    if not isinstance(model, models.ResNet):
        raise UserError(f"net.arch={arch}: cmidd reads torchvision's ResNets only")
    model.feature_dim = model.fc.in_features
    model.embed = types.MethodType(_embed, model)
    return model
