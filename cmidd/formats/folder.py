"""Sets as image files, a folder per class: what SRe2L, RDED and most decoupled methods save,
and what other tools (DD-Ranking among them) read with torchvision's ImageFolder."""

import logging
from pathlib import Path

import torch

from ..errors import UserError, describe
from .common import check_statistics, foreign_set, from_pixels, load_tensors
from .tensors import SetFile

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SOFT_LABELS = "soft_labels.pt"  # [N, classes], the images' order: class folders, then file names


class ImageFolderSet(SetFile):
    """``<path>/<class>/<image>``: the class folders in sorted order are the dataset's classes
    (as ImageFolder orders them), the files of each in sorted order; pixels in [0, 1] go into
    the dataset's space. ``soft_labels.pt`` beside the folders, if there, holds the targets."""

    name = "image_folder"

    def read(self, path: Path, real):
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        classes = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        if len(classes) != real.num_classes:
            raise UserError(
                f"synthetic={path} has {len(classes)} class folders; dataset={real.name} has "
                f"{real.num_classes} classes"
            )
        mode = "L" if real.shape[0] == 1 else "RGB"
        images, labels = [], []
        for c, folder in enumerate(classes):
            for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in EXTENSIONS):
                try:
                    with Image.open(file) as image:
                        images.append(pil_to_tensor(image.convert(mode)))
                except Exception as error:  # noqa: BLE001 -- not an image, truncated
                    what = describe(error)
                    raise UserError(f"synthetic={file} is not a readable image: {what}") from None
                labels.append(c)
        if not images:
            raise UserError(f"synthetic={path} holds no images ({', '.join(EXTENSIONS)})")
        shapes = {tuple(i.shape) for i in images}
        if shapes != {real.shape}:
            raise UserError(
                f"synthetic={path} holds images of shape {sorted(shapes)}; dataset={real.name} "
                f"has {real.shape} (resize them as their method's evaluation does first)"
            )
        images = from_pixels(torch.stack(images).float() / 255, real)
        soft = path / SOFT_LABELS
        targets = load_tensors(soft).float() if soft.is_file() else None
        synthetic = foreign_set(
            images, torch.tensor(labels), real, path, self.name, targets=targets
        )
        if self.check:
            check_statistics(images, real, path)
        return synthetic

    def write(self, synthetic, to: Path) -> None:
        """The set's training images (decoded, in pixels, 8 bits per channel: within 1/510 of
        the stored values) as ``<to>/<class:03d>/<index:06d>.png``, and its soft labels if it
        has them, in the order they are read back (by class, then index)."""
        _write(synthetic, to)


def _write(synthetic, to: Path) -> None:
    from torchvision.utils import save_image

    images, labels = synthetic.decoded()
    pixels, labels = synthetic.denormalized(images).cpu(), labels.cpu()
    for c in labels.unique().tolist():
        (to / f"{c:03d}").mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
        save_image(image, to / f"{label:03d}" / f"{i:06d}.png")
    if synthetic.targets is not None:
        order = torch.argsort(labels, stable=True)
        torch.save(synthetic.train_set()[1].cpu()[order], to / SOFT_LABELS)
