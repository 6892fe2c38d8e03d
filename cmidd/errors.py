"""Errors that are the user's to fix: reported as one line, without a traceback."""

import math
import pickle
import re

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class UserError(Exception):
    """Bad input or a missing prerequisite; the message names the key, the value and the fix."""


class NonFiniteError(UserError):
    """A loss or the synthetic set became NaN or infinite; the message names the iteration and
    the term, so that its weight or learning rate can be lowered."""


def describe(error: BaseException) -> str:
    """Why ``error`` happened, for a one-line message: its type and first sentence, without
    terminal escape codes. A file refused by ``torch.load(weights_only=True)`` is described by
    what it tried to load; torch's own advice (to load it unsafely) is not repeated."""
    text = _ESCAPES.sub("", str(error))
    if isinstance(error, pickle.UnpicklingError) and "weights_only" in text.lower():
        found = _GLOBAL.search(text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds objects other than tensors and plain containers{what}, which were "
            "refused without being run"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_number(key: str, value, minimum: float, integer: bool = False):
    """``value`` of config ``key``, if it is a finite number (an integer) >= ``minimum``."""
    kind = int if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or value < minimum
    ):
        what = "an integer" if integer else "a finite number"
        raise UserError(f"{key}={value} is invalid: it must be {what} >= {minimum}")
    return value


def check_choice(key: str, value, choices):
    """``value`` of config ``key``, if it is one of ``choices``."""
    if value not in choices:
        names = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
        raise UserError(f"{key}={value} is invalid: it must be one of {names}")
    return value
