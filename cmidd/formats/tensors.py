"""Sets saved as tensors by the reference codebases (``torch.save`` of tensors and lists), each
read into the dataset's space. What a file does not say (its normalization, ZCA, IDC's factor)
the format's config declares, from the reference code's tables where they have the dataset."""

import logging
from pathlib import Path

import torch

from ..data.real import denormalize
from ..errors import UserError
from .common import (
    check_statistics,
    foreign_set,
    into_dataset_space,
    load_tensors,
    normalization,
)

log = logging.getLogger(__name__)


class SetFile:
    """One format: ``read(path, real)`` is the set in ``real``'s space; ``write(synthetic, to)``,
    where the format has it, writes a set as the reference code would have."""

    name = None

    def __init__(self, mean=None, std=None, check_statistics: bool = True):
        self.mean, self.std, self.check = mean, std, check_statistics

    def file_space(self, synthetic, images: torch.Tensor) -> torch.Tensor:
        """A set's images in the space this format's files hold: whitened sets stay whitened
        (read them back with zca=true), the others are normalized as the format declares."""
        images = images.detach().cpu()
        if synthetic.whitening is not None:
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

    def finish(self, images, labels, real, path, zca: bool = False, **kwargs):
        images = into_dataset_space(images, self.mean, self.std, zca, real, path)
        synthetic = foreign_set(images, labels, real, path, self.name, **kwargs)
        if self.check:
            check_statistics(synthetic.decoded()[0], real, path)
        return synthetic


class VicoFile(SetFile):
    """DC, DSA and DM as VICO-UoE/DatasetCondensation saves them, and the CMI reference's
    DC-DSA-DM scripts (ndhg1213/CMIDD main.py, main_DM.py): ``res_<method>_<dataset>_<model>_
    <ipc>ipc.pt``, a dict whose ``data`` holds one ``[images, labels]`` per experiment, the images
    normalized with utils.get_dataset's mean and std."""

    name = "vico"

    def __init__(self, experiment: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.experiment = experiment

    def read(self, path: Path, real):
        state = load_tensors(path)
        data = state.get("data") if isinstance(state, dict) else None
        if not isinstance(data, list) or not data:
            raise UserError(
                f"synthetic={path} is not a DC/DSA/DM result file: no 'data' list of "
                "[images, labels] per experiment"
            )
        if not 0 <= self.experiment < len(data):
            raise UserError(
                f"format.file.experiment={self.experiment} is invalid: synthetic={path} holds "
                f"{len(data)} experiments (0 to {len(data) - 1})"
            )
        images, labels = data[self.experiment]
        return self.finish(images, labels, real, path)

    def write(self, synthetic, to: Path) -> None:
        images, labels = synthetic.decoded()
        state = {"data": [[self.file_space(synthetic, images), labels.cpu()]], "accs_all_exps": {}}
        to.mkdir(parents=True, exist_ok=True)
        torch.save(state, to / "res_cmidd.pt")


class TrajectoryFiles(SetFile):
    """MTT (GeorgeCazenavette/mtt-distillation distill.py) and DATM (GzyAftermath/DATM): a
    directory with ``images_best.pt`` and ``labels_best.pt`` (or any ``images_<it>.pt`` named as
    the path, its labels file beside it), ZCA-whitened when the run used ``--zca``. DATM also
    saves ``lr_best.pt`` and learns soft labels: ``labels`` then hold logits per image (their
    softmax is the target). MTT saves no learned lr: ``lr`` passes it (null: the protocol's)."""

    name = "mtt"

    def __init__(self, zca=None, lr=None, **kwargs):
        super().__init__(**kwargs)
        self.zca, self.lr = zca, lr

    def read(self, path: Path, real):
        images_file = path / "images_best.pt" if path.is_dir() else path
        labels_file = images_file.with_name(images_file.name.replace("images_", "labels_", 1))
        lr_file = images_file.with_name(images_file.name.replace("images_", "lr_", 1))
        if not labels_file.is_file() or labels_file == images_file:
            raise UserError(
                f"synthetic={path}: no labels file {labels_file.name} beside {images_file.name}"
            )
        images, labels = load_tensors(images_file), load_tensors(labels_file)
        targets = None
        if torch.is_tensor(labels) and labels.is_floating_point() and labels.dim() == 2:
            targets, labels = labels.float().softmax(1), labels.argmax(1)
        lr = self.lr
        if lr is None and lr_file.is_file() and lr_file != images_file:
            lr = float(torch.as_tensor(load_tensors(lr_file)))
        if lr is None:
            log.info("%s has no learned lr: evaluated with the protocol's", path)
        return self.finish(images, labels, real, path, self.zca, lr=lr, targets=targets)

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


class MultiFormationFile(SetFile):
    """IDC (snu-mllab/Efficient-Dataset-Condensation condense.py): ``data.pt``, a list
    ``[images, labels]`` of stored images, normalized with data.py's MEANS and STDS, each holding
    ``factor`` x ``factor`` smaller images (its ``--factor``), decoded as its ``decode_zoom``
    does (crops upsampled bilinearly) when the set is trained on."""

    name = "idc"

    def __init__(self, factor=None, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def read(self, path: Path, real):
        if self.factor is None or int(self.factor) < 1:
            raise UserError(
                f"format.file.factor={self.factor}: say how many images per side each stored "
                "image of synthetic={path} holds (IDC's --factor; 2 in its CIFAR runs, 1: none)"
            )
        state = load_tensors(path)
        if not isinstance(state, (list, tuple)) or len(state) != 2:
            raise UserError(f"synthetic={path} is not IDC's data.pt: a list [images, labels]")
        images, labels = state
        size = images.shape[-1] if torch.is_tensor(images) else 0
        if size % int(self.factor):
            raise UserError(
                f"format.file.factor={self.factor} does not divide the image size {size}: IDC "
                "pads such images before decoding, which cmidd's decoding does not"
            )
        return self.finish(images, labels, real, path, factor=int(self.factor))
