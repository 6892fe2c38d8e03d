"""The real data of a run: datasets loaded into ``RealData`` (``real``), by the loaders that the
``dataset`` options name (``loaders``: torchvision datasets, scikit-learn's digits, image
folders; ``layouts``: TinyImageNet and ImageNet-1K, named ``cmidd.layouts.*`` in their
configs), held where ``dataset.storage`` says
(``storage``: memory or a decoded disk cache; ``stream``: read from the files per batch), and
ZCA-whitened where a method asks (``whitening``).

The loaders are the ``_target_`` of ``dataset.loader`` (``cmidd.data.load_digits``...).
"""

from .loaders import load_digits, load_imagefolder, load_torchvision, unpack_once
from .real import RealData, denormalize, from_tensors, normalize, split_validation
from .storage import Storage
from .whitening import whiten

__all__ = [
    "RealData",
    "Storage",
    "denormalize",
    "from_tensors",
    "load_digits",
    "load_imagefolder",
    "load_torchvision",
    "normalize",
    "split_validation",
    "unpack_once",
    "whiten",
]
