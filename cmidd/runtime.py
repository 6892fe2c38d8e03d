"""Device, seeding and named random generators: resolved once per run and passed down; the
global generators' state, which checkpoints keep."""

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


def global_rng_state() -> dict:
    """The global generators' states as tensors and plain numbers."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "words": list(words), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["words"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
