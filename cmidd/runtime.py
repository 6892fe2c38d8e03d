"""Device, seeding and named random generators: resolved once per run and passed down."""

import hashlib
import random

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but CUDA is not available on this machine; use device=cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def derive_seed(seed: int, name: str) -> int:
    """A stable 63-bit seed for the stream ``name`` of run seed ``seed``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator for one stream (sampling, augmentation, proxy draws...) of a run."""
    return torch.Generator().manual_seed(derive_seed(seed, name))


def seed_everything(seed: int) -> None:
    """Seed the global generators once; they only initialize network weights."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_seeded(make, seed: int, name: str, **kwargs):
    """``make(**kwargs)`` with the global generator temporarily seeded for stream ``name``, so a
    network's initialization depends only on (seed, name), not on what ran before it."""
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: networks are initialized on the CPU, then moved.
        torch.default_generator.manual_seed(derive_seed(seed, name))
        return make(**kwargs)
