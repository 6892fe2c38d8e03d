"""Checkpoints of a distillation run, so that a killed or preempted run resumes where it was.

A checkpoint holds the synthetic set, its optimizer, the number of iterations done, every random
generator's state, the method's, plug-in's and automatic CMI weight's state, the results so far
and the logger's run id: tensors and plain containers
only, so that it loads with ``torch.load(weights_only=True)`` (a checkpoint in a run directory
is a file like any other, and a pickle could run code). It is written to a temporary file and
renamed, so a kill during the write leaves the previous checkpoint intact. SIGTERM and SIGUSR1
(what SLURM and submitit send before preemption) ask for a checkpoint at the end of the current
iteration, after which the run stops with ``Preempted``.
"""

import logging
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch

from .errors import UserError, describe
from .neutral import HOW

log = logging.getLogger(__name__)

# Keys that do not change a run's result: a checkpoint may be resumed with other values.
NEUTRAL = HOW + (
    "log_every",
    "loss_every",
    "resume",
    "download",
    "study",
    "plugin.unsupported",  # skip or error: decides whether a run happens, not what it computes
)
# Keys that extend a run rather than change it: a resumed run may go on for longer (its
# evaluation schedule may follow, e.g. eval.every derived from iterations).
EXTENDABLE = ("iterations", "eval.every")


# Keys that follow ``iterations`` and so refuse an extended run, with the reason.
WHY = {
    "plugin.technique.iterations": "the technique's stages are shared out over the run's "
    "iterations, so a finished run cannot be extended with more"
}


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; run the same command to resume."""


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


def loop_state(loop, done: int, seconds: float) -> dict:
    """Everything a ``Distillation`` needs to continue after ``done`` iterations exactly as
    without a stop."""
    return {
        "iteration": done,
        "seconds": seconds,
        "results": loop.results,
        "config": loop.results["config"],
        "synthetic": loop.synthetic.state(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict() if loop.scheduler else None,
        "method": loop.method.state_dict(),
        "plugin": loop.method.plugin.state_dict(),
        "proxy_generator": loop.cmi.generator.get_state() if loop.cmi else None,
        "cmi_weight": loop.auto.state_dict() if loop.auto else None,
        "rng": global_rng_state(),
        "logger_run_id": loop.logger.run_id,
    }


def restore_loop(loop, state: dict) -> tuple:
    """Put ``loop`` back in a checkpoint's ``state``; returns (iterations done, seconds)."""
    loop.synthetic.restore(state["synthetic"])
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.scheduler is not None:
        loop.scheduler.load_state_dict(state["scheduler"])
    loop.method.load_state_dict(state["method"])
    loop.method.plugin.load_state_dict(state.get("plugin", {}))  # none before plug-ins
    if loop.cmi is not None:
        loop.cmi.generator.set_state(state["proxy_generator"])
    if loop.auto is not None and state.get("cmi_weight"):
        loop.auto.load_state_dict(state["cmi_weight"])
    set_global_rng_state(state["rng"])
    # A resumed run may go on for longer than the first: the config is today's.
    loop.results = {
        **state["results"],
        "status": "running",
        "iterations": loop.iterations,
        "config": loop.results["config"],
    }
    log.info("resumed from the checkpoint after %d iterations", state["iteration"])
    return state["iteration"], state["seconds"]


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differing_keys(saved: dict, current: dict) -> list:
    """The keys whose values differ between two resolved configs, ignoring neutral and
    extendable ones."""
    if "plugin" not in saved and (current.get("plugin") or {}).get("name") == "none":
        saved = {**saved, "plugin": current["plugin"]}  # from before plug-ins: it ran without one
    if "precision" not in saved and "precision" in current:
        saved = {**saved, "precision": 32}  # from before the option: it ran in float32
    a, b = _flatten(saved), _flatten(current)
    # cmi.auto's settings only matter to a run whose weight is auto (and are absent before it).
    auto = "auto" in (a.get("cmi.weight"), b.get("cmi.weight"))
    return sorted(
        k
        for k in a.keys() | b.keys()
        if a.get(k) != b.get(k)
        and not k.startswith(NEUTRAL)
        and k not in EXTENDABLE
        and (auto or not k.startswith("cmi.auto."))
    )


class Checkpointer:
    def __init__(self, path: Path, every: int):
        self.path, self.every, self.requested = Path(path), every, False

    def install_signal_handlers(self) -> None:
        def request(signum, frame):
            log.warning("signal %d: checkpointing at the end of this iteration", signum)
            self.requested = True

        self.previous = {
            signum: signal.signal(signum, request) for signum in (signal.SIGTERM, signal.SIGUSR1)
        }

    def restore_signal_handlers(self) -> None:
        """Put back the handlers from before the run: the jobs of a local multirun share one
        process, and a handler left behind would swallow a signal meant for the next job."""
        for signum, handler in getattr(self, "previous", {}).items():
            signal.signal(signum, handler)
        self.previous = {}

    def due(self, iteration: int) -> bool:
        return self.requested or (self.every > 0 and iteration % self.every == 0)

    def save(self, state: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, config: dict):
        """The checkpoint's state, or None if there is none; refuses one from another config."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            saved = state["config"]
        except Exception as error:  # noqa: BLE001 -- any unreadable file gets the same message
            raise UserError(
                f"checkpoint {self.path} cannot be read: {describe(error)}; delete it to start over"
            ) from None
        differing = differing_keys(saved, config)
        if differing:
            shown = ", ".join(
                f"{k}={_flatten(saved).get(k)!r} (now {_flatten(config).get(k)!r})"
                for k in differing[:5]
            )
            why = "".join(f" ({WHY[k]})" for k in differing if k in WHY)
            raise UserError(
                f"checkpoint {self.path} is from a run with other settings: {shown}{why}; "
                "use another run directory or delete the checkpoint"
            )
        if config["iterations"] < state["iteration"]:
            raise UserError(
                f"iterations={config['iterations']} is invalid: checkpoint "
                f"{self.path} is after {state['iteration']} iterations already"
            )
        return state
