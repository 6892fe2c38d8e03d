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


def class_folders(path: Path, real) -> list:
    """The class folders in the dataset's class order: by the dataset's class names where the
    folders are named so, by number where all are numbers (unpadded names sort 0, 1, 10, 2...),
    else in sorted order, as ImageFolder orders them (said in the log)."""
    if not path.is_dir():
        raise UserError(f"synthetic={path} is not a folder (format=image_folder)")
    folders = [p for p in path.iterdir() if p.is_dir()]
    if len(folders) != real.num_classes:
        raise UserError(
            f"synthetic={path} has {len(folders)} class folders; dataset={real.name} has "
            f"{real.num_classes} classes"
        )
    names = {p.name: p for p in folders}
    if set(names) == {str(n) for n in real.class_names}:
        return [names[str(n)] for n in real.class_names]
    digits = "".join(str(d) for d in range(10))
    if all(n.strip(digits) == "" for n in names):
        return sorted(folders, key=lambda p: int(p.name))
    log.info("%s: class folders taken in sorted order as the dataset's classes", path)
    return sorted(folders)


class ImageFolderSet(SetFile):
    """``<path>/<class>/<image>``: the class folders are the dataset's classes (``class_folders``
    orders them), the files of each in sorted order; pixels in [0, 1] go into the dataset's
    space. ``soft_labels.pt`` beside the folders, if there, holds the targets."""

    name = "image_folder"
    whitened = True  # written as pixels, whitening undone

    def read(self, path: Path, real):
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        classes = class_folders(path, real)
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
        targets = load_tensors(soft) if soft.is_file() else None
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
