"""Files a run writes and reads back: written whole or not at all, and checksummed.

A write goes to a temporary file beside its target and is renamed over it, so a reader (or a
crash) never sees half a file; a write that fails (a full disk, a read-only directory) removes
the temporary file and is a one-line ``UserError`` naming the file and the reason.
"""

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from .errors import UserError, describe


def atomic_write(path: Path, write) -> None:
    """``write(file)`` into a binary file object that becomes ``path`` once complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            write(file)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path} could not be written: {describe(error)}") from error
    except RuntimeError as error:  # how torch.save reports a failed write
        tmp.unlink(missing_ok=True)
        if "write" not in str(error):
            raise
        raise UserError(f"{path} could not be written: {describe(error)}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


def save(obj, path: Path) -> None:
    """``torch.save`` of tensors and plain containers, atomically."""
    atomic_write(path, lambda file: torch.save(obj, file))


def digest(obj) -> str:
    """sha256 of nested dicts, lists and tuples of tensors and plain values: their structure,
    every tensor's dtype, shape and bytes, every other value's repr."""
    sha = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous().reshape(-1)
            sha.update(f"T{tensor.dtype}{tuple(value.shape)}".encode())
            sha.update(tensor.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            sha.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                feed(key)
                feed(value[key])
        elif isinstance(value, list | tuple):
            sha.update(f"L{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            sha.update(f"V{value!r}".encode())

    feed(obj)
    return sha.hexdigest()


def non_finite(obj, where: str = ""):
    """Where (a dotted path) nested containers hold a NaN or infinite float tensor or number,
    or None."""
    if isinstance(obj, torch.Tensor):
        finite = not obj.is_floating_point() or bool(torch.isfinite(obj).all())
        return None if finite else where or "."
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where or "."
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None
