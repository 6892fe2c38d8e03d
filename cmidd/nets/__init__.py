"""Networks: plain modules built from constructor arguments, each with ``embed`` and ``forward``."""

from .alexnet import AlexNet
from .convnet import ConvNet
from .resnet import ResNet18
from .vgg import VGG
from .zoo import torchvision_model

__all__ = ["AlexNet", "ConvNet", "ResNet18", "VGG", "torchvision_model"]
