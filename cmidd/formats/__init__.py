"""Distilled sets in the formats the reference codebases write (``format=...``, conf/format/):
read into the dataset's space for evaluation, measurement and figures, and written back out
(``task=export``). docs/formats.md lists them."""

import logging
from pathlib import Path

from ..errors import UserError
from ..synthetic import SyntheticSet, check_fits
from .common import load_tensors
from .folder import ImageFolderSet
from .tensors import MultiFormationFile, SetFile, TrajectoryFiles, VicoFile

__all__ = [
    "AutoFormat",
    "CmiddFile",
    "ImageFolderSet",
    "MultiFormationFile",
    "SetFile",
    "TrajectoryFiles",
    "VicoFile",
]

log = logging.getLogger(__name__)


class CmiddFile(SetFile):
    """cmidd's own ``synthetic.pt`` (with its checksum, normalization and ZCA recorded)."""

    name = "cmidd"

    def read(self, path: Path, real):
        synthetic = SyntheticSet.load(path, real.test_images.device)
        check_fits(path, synthetic, real)
        synthetic.whitening = real.whitening  # check_fits: the same ZCA the set was made in
        return synthetic

    def write(self, synthetic, to: Path) -> None:
        meta = {k: v for k, v in getattr(synthetic, "meta", {}).items() if k != "format"}
        to.mkdir(parents=True, exist_ok=True)
        synthetic.save(to / "synthetic.pt", **meta)


class AutoFormat(ImageFolderSet):
    """The formats a file tells by itself: cmidd's ``synthetic.pt`` and image folders. A file
    that looks like another format is refused with the option to pass (its normalization, ZCA
    or factor cannot be read from it)."""

    name = "auto"

    def read(self, path: Path, real):
        if path.is_file() and not path.name.startswith("images_"):
            try:  # the common case, read once; the file is looked into again only if it fails
                synthetic = CmiddFile().read(path, real)
            except UserError:
                self.detect(path)  # another format's file: name the option to pass
                raise
            log.info("format=auto: %s read as format=cmidd", path)
            return synthetic
        self.detect(path)
        log.info("format=auto: %s read as format=image_folder", path)
        return super().read(path, real)

    @staticmethod
    def detect(path: Path) -> str:
        if not path.exists():
            raise UserError(f"synthetic={path} cannot be read: it does not exist")
        if path.is_dir():
            if (path / "images_best.pt").is_file():
                raise _ask(path, "MTT/DATM's images_best.pt", "mtt format.file.zca=<true|false>")
            if any(p.is_dir() for p in path.iterdir()):
                return "image_folder"
            raise UserError(f"synthetic={path} is a folder without class folders or set files")
        if path.name.startswith("images_"):
            raise UserError(
                f"synthetic={path} looks like an images_<it>.pt of MTT/DATM (pass format=mtt "
                "format.file.zca=<true|false>) or of the CMI reference's DC/DSA/DM scripts "
                "(format=vico)"
            )
        state = load_tensors(path)
        if isinstance(state, dict) and {"images", "labels", "mean", "std"} <= state.keys():
            return "cmidd"
        if isinstance(state, dict) and "data" in state:
            raise _ask(path, "a DC/DSA/DM result file (res_*.pt)", "vico")
        if isinstance(state, (list, tuple)) and len(state) == 2:
            raise _ask(path, "IDC's data.pt", "idc format.file.factor=<its --factor>")
        raise UserError(f"synthetic={path} is in no format cmidd knows (docs/formats.md)")


def _ask(path: Path, what: str, option: str) -> UserError:
    return UserError(f"synthetic={path} looks like {what}: pass format={option}")
