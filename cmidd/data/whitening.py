"""ZCA whitening of the real data, as trajectory matching uses on CIFAR (Cazenavette et al., 2022;
``kornia.enhance.ZCAWhitening(eps=0.1)`` in the MTT reference code, after KIP).

Whitening replaces the mean/std normalization: it is fit on the training images in [0, 1] and
applied to the training and test images, so every network of a run (experts, proxies, evaluation)
sees whitened data. It is deterministic given the data, so it is recomputed when the data are
loaded rather than stored.
"""

import torch
from kornia.enhance import ZCAWhitening

from ..errors import UserError
from .real import RealData, denormalize


def _pixels(images: torch.Tensor, real: RealData) -> torch.Tensor:
    return denormalize(images, real.mean, real.std)


def whiten(real: RealData, eps: float) -> RealData:
    """``real`` ZCA-whitened (its ``whitening`` keeps the fit for showing images as pixels)."""
    if real.whitening is not None:
        raise ValueError(f"dataset {real.name} is already whitened")
    if real.train_all is not None:
        raise UserError(
            "zca.enabled=true fits and whitens all images in memory: use dataset.storage=memory"
        )
    zca = ZCAWhitening(eps=float(eps), compute_inv=True)
    zca.fit(torch.cat([_pixels(x, real) for x in real.train]))
    with torch.no_grad():
        train = [zca(_pixels(x, real)) for x in real.train]
        test = torch.cat([zca(_pixels(x, real)) for x in real.test_images.split(5000)])
        val = None if real.val_images is None else zca(_pixels(real.val_images, real))
    c = real.shape[0]
    return RealData(
        name=real.name,
        train=train,
        test_images=test,
        test_labels=real.test_labels,
        mean=(0.0,) * c,
        std=(1.0,) * c,
        class_names=real.class_names,
        whitening=zca,
        zca_eps=float(eps),
        val_images=val,
        val_labels=real.val_labels,
        val=real.val,
    )
