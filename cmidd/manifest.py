"""What a result was computed with, kept in ``results.json`` (``manifest``): the code (git commit,
and whether the tree had uncommitted changes), the versions of the libraries that decide the
numbers, the device, a checksum of the real data as the run loaded them, and, once the run is
done, its time per stage and its peak memory. Reports tell runs of different commits apart."""

import hashlib
import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "hydra-core", "omegaconf", "numpy", "wandb")
ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str):
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def data_checksum(real):
    """sha256 of the training, validation and test images and labels as loaded (in memory), or
    None for data read from disk or streamed on demand (their files carry checksums already)."""
    parts = [*real.train, real.test_images, real.test_labels, real.val_images, real.val_labels]
    if not all(p is None or isinstance(p, torch.Tensor) for p in parts):
        return None
    sha = hashlib.sha256()
    for part in parts:
        if part is not None:
            sha.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return sha.hexdigest()


def manifest(device, real) -> dict:
    """The run's manifest before it starts."""
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "commit": commit,
        "dirty": dirty,
        "versions": {package: _version(package) for package in PACKAGES},
        "python": platform.python_version(),
        "device": device_name(device),
        "data_sha256": data_checksum(real),
    }


def peak_memory(device) -> dict:
    """Peak resident memory of the process (MiB), and on CUDA the most memory torch allocated."""
    peak = {"host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(device).type == "cuda":
        peak["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak
