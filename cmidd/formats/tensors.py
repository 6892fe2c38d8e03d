"""Sets saved as tensors by the reference codebases (``torch.save`` of tensors and lists), each
read into the dataset's space. What a file does not say (its normalization, ZCA, IDC's factor)
the format's config declares, from the reference code's tables where they have the dataset."""

import logging
from pathlib import Path

import torch

from ..data.real import denormalize
from ..errors import UserError, check_number
from .common import (
    check_statistics,
    foreign_set,
    from_pixels,
    images_of,
    into_dataset_space,
    load_tensors,
    normalization,
)

log = logging.getLogger(__name__)


class SetFile:
    """One format: ``read(path, real)`` is the set in ``real``'s space; ``write(synthetic, to)``,
    where the format has it, writes a set as the reference code would have. ``whitened``: whether
    the format's files can hold ZCA-whitened images."""

    name = None
    whitened = False

    def __init__(self, mean=None, std=None, check_statistics: bool = True):
        self.mean, self.std, self.check = mean, std, check_statistics

    def finish(self, images, labels, real, path, **kwargs):
        synthetic = foreign_set(images, labels, real, path, self.name, **kwargs)
        if self.check:
            check_statistics(synthetic.decoded()[0].detach(), real, path)
        return synthetic

    def file_space(self, synthetic, images: torch.Tensor) -> torch.Tensor:
        """A set's images in the space this format's files hold: whitened sets stay whitened
        where the format can say so (read them back with zca=true), the others are normalized
        as the format declares (the dataset's own where it has no entry)."""
        images = images.detach().cpu()
        if synthetic.whitening is not None:
            if not self.whitened:
                raise UserError(
                    f"export={self.name} cannot hold the set's ZCA-whitened images (its code has "
                    "no ZCA): use export=mtt, which keeps them whitened, or export=image_folder"
                )
            log.info("the set is ZCA-whitened: its file holds whitened images (zca=true)")
            return images
        if self.mean is None or self.std is None:
            log.info(
                "%s has no normalization for this dataset: the file holds the dataset's "
                "(mean=%s, std=%s); read it back with those",
                self.name,
                list(synthetic.mean),
                list(synthetic.std),
            )
            return images
        mean, std = normalization(self.mean, self.std, images.shape[1], "<export>")
        if (mean, std) == (tuple(synthetic.mean), tuple(synthetic.std)):
            return images
        view = (1, -1, 1, 1)
        pixels = denormalize(images, synthetic.mean, synthetic.std)
        return (pixels - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)


def _numbered(path: Path, default: str) -> tuple:
    """(images file, its labels file, its lr file) for a folder (``default``, e.g.
    images_best.pt) or an ``images_<it>.pt`` path, the others beside it."""
    images = path / default if path.is_dir() else path
    if not images.name.startswith("images_"):
        raise UserError(f"synthetic={path}: not an images_<name>.pt file or a folder holding one")
    labels, lr = (
        images.with_name(images.name.replace("images_", p, 1)) for p in ("labels_", "lr_")
    )
    if not labels.is_file():
        raise UserError(f"synthetic={path}: no labels file {labels.name} beside {images.name}")
    return images, labels, lr


class VicoFile(SetFile):
    """DC, DSA and DM as VICO-UoE/DatasetCondensation saves them, and the CMI reference's
    DC-DSA-DM scripts (ndhg1213/CMIDD main.py, main_DM.py): ``res_<method>_<dataset>_<model>_
    <ipc>ipc.pt``, a dict whose ``data`` holds one ``[images, labels]`` per experiment, the images
    normalized with utils.get_dataset's mean and std; the CMI reference's main_DM.py also saves
    ``images_<it>.pt`` and ``labels_<it>.pt`` (the same space), read from the images file."""

    name = "vico"

    def __init__(self, experiment: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.experiment = check_number("format.file.experiment", experiment, 0, integer=True)

    def read(self, path: Path, real):
        if path.name.startswith("images_"):
            images, labels, _ = _numbered(path, "")
            images, labels = load_tensors(images), load_tensors(labels)
        else:
            images, labels = self.entry(load_tensors(path), path)
        images = into_dataset_space(images, self.mean, self.std, False, real, path)
        return self.finish(images, labels, real, path)

    def entry(self, state, path: Path) -> tuple:
        data = state.get("data") if isinstance(state, dict) else None
        if not isinstance(data, list) or not data:
            raise UserError(
                f"synthetic={path} is not a DC/DSA/DM result file: no 'data' list of "
                "[images, labels] per experiment"
            )
        if self.experiment >= len(data):
            raise UserError(
                f"format.file.experiment={self.experiment} is invalid: synthetic={path} holds "
                f"{len(data)} experiments (0 to {len(data) - 1})"
            )
        entry = data[self.experiment]
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise UserError(
                f"synthetic={path}: experiment {self.experiment} is not [images, labels]"
            )
        return entry

    def write(self, synthetic, to: Path) -> None:
        images, labels = synthetic.decoded()
        if synthetic.targets is not None or synthetic.learned_lr is not None:
            log.warning(
                "export=vico keeps images and hard labels only: soft labels and lr are lost"
            )
        state = {"data": [[self.file_space(synthetic, images), labels.cpu()]], "accs_all_exps": {}}
        to.mkdir(parents=True, exist_ok=True)
        torch.save(state, to / "res_cmidd.pt")


class TrajectoryFiles(SetFile):
    """MTT (GeorgeCazenavette/mtt-distillation distill.py) and DATM (GzyAftermath/DATM): a
    directory with ``images_best.pt`` and ``labels_best.pt`` (or any ``images_<it>.pt`` named as
    the path, its labels file beside it), ZCA-whitened when the run used ``--zca``. DATM also
    saves ``lr_best.pt`` and learns soft labels: ``labels`` then hold logits per image (their
    softmax is the target; the class of an image is its place, DATM's ipc-per-class layout). MTT
    saves no learned lr: ``lr`` passes it (null: the protocol's)."""

    name = "mtt"
    whitened = True

    def __init__(self, zca=None, lr=None, **kwargs):
        super().__init__(**kwargs)
        self.zca = zca
        self.lr = None if lr is None else check_number("format.file.lr", lr, 0)

    def read(self, path: Path, real):
        images_file, labels_file, lr_file = _numbered(path, "images_best.pt")
        images = into_dataset_space(
            load_tensors(images_file), self.mean, self.std, self.zca, real, path
        )
        labels, targets = load_tensors(labels_file), None
        if torch.is_tensor(labels) and labels.is_floating_point() and labels.dim() == 2:
            targets, labels = labels.float().softmax(1), _by_place(len(labels), real.num_classes)
        lr = self.lr
        if lr is None and lr_file.is_file():
            lr = load_tensors(lr_file)
            if not (torch.is_tensor(lr) and lr.numel() == 1) and not isinstance(lr, float):
                raise UserError(f"synthetic={lr_file} is not one learning rate")
            lr = float(lr)
        if lr is None:
            log.info("%s has no learned lr: evaluated with the protocol's", path)
        return self.finish(images, labels, real, path, lr=lr, targets=targets)

    def write(self, synthetic, to: Path) -> None:
        """``images_best.pt``, ``labels_best.pt`` (soft targets as log-probabilities: DATM's
        logits, whose softmax they are) and ``lr_best.pt`` if the set learned one."""
        images, labels = synthetic.train_set()
        if labels.is_floating_point():
            labels = labels.clamp_min(torch.finfo(labels.dtype).tiny).log()
        to.mkdir(parents=True, exist_ok=True)
        torch.save(self.file_space(synthetic, images), to / "images_best.pt")
        torch.save(labels.detach().cpu(), to / "labels_best.pt")
        if synthetic.learned_lr is not None:
            torch.save(torch.tensor(synthetic.learned_lr), to / "lr_best.pt")


def _by_place(n: int, classes: int) -> torch.Tensor:
    """DATM's labels of n images: ipc per class, class by class (its label_syn's layout)."""
    if n % classes:
        raise UserError(f"{n} soft-labelled images do not lay out as ipc per class of {classes}")
    return torch.arange(classes).repeat_interleave(n // classes)


class MultiFormationFile(SetFile):
    """IDC (snu-mllab/Efficient-Dataset-Condensation condense.py): ``data.pt``, a list
    ``[images, labels]`` of stored images in pixels (its sets live in [0, 1]; the normalization
    is applied with the augmentation, and by test.py after decoding), each holding ``factor`` x
    ``factor`` smaller images (its ``--factor``), decoded as its ``decode_zoom`` does (crops
    upsampled bilinearly) when the set is trained on."""

    name = "idc"

    def __init__(self, factor=None, check_statistics: bool = True):
        super().__init__(check_statistics=check_statistics)
        self.factor = factor

    def read(self, path: Path, real):
        if self.factor is None:
            raise UserError(
                f"format.file.factor=null: say how many images per side each stored image of "
                f"synthetic={path} holds (IDC's --factor; 2 in its CIFAR runs, 1: none)"
            )
        factor = check_number("format.file.factor", self.factor, 1, integer=True)
        if real.whitening is not None and factor > 1:
            raise UserError(
                "format=idc with zca.enabled=true: IDC decodes its images in pixels, which does "
                "not commute with whitening; evaluate IDC sets without ZCA"
            )
        state = load_tensors(path)
        if not isinstance(state, (list, tuple)) or len(state) != 2:
            raise UserError(f"synthetic={path} is not IDC's data.pt: a list [images, labels]")
        images = images_of(state[0], path)
        if images.shape[-1] % factor:
            raise UserError(
                f"format.file.factor={factor} does not divide the image size {images.shape[-1]}: "
                "IDC pads such images before decoding, which cmidd's decoding does not"
            )
        return self.finish(from_pixels(images, real), state[1], real, path, factor=factor)
