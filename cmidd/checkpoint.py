"""Checkpoints of a distillation run, so that a killed or preempted run resumes where it was.

A checkpoint is the loop's ``state_dict`` (``cmidd.distill.Distillation``: the synthetic set,
its optimizer, the number of iterations done, every random generator's state, the method's,
plug-in's and CMI term's state, the results so far and the logger's run id): tensors and plain
containers only, so that it loads with ``torch.load(weights_only=True)`` (a checkpoint in a run
directory is a file like any other, and a pickle could run code). It is written to a temporary
file and renamed, so a kill during the write leaves the previous checkpoint intact. SIGTERM and
SIGUSR1 (what SLURM and submitit send before preemption) ask for a checkpoint at the end of the
current iteration, after which the run stops with ``Preempted``; so does SIGINT (Ctrl-C), and a
second one stops at once.
"""

import logging
import signal
from pathlib import Path

import torch

from .errors import UserError, describe
from .files import digest, non_finite, save
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
    "task",  # the distillation's checkpoint, whether the task around it compares it or not
)
# Keys that extend a run rather than change it: a resumed run may go on for longer (its
# evaluation schedule may follow, e.g. eval.every derived from iterations).
EXTENDABLE = ("iterations", "eval.every")


# How the config changed since checkpoints were first written, so that older ones still resume:
# keys added, with the value such a run had (it ran in float32; every method but IDC's and IDM's
# had factor 1; no data were kept for validation); keys added as copies of others (a plug-in's
# view of its method's settings); and keys removed, which never changed a result (what a method
# declares now lives on its class; a selection's optimizer was never stepped).
ADDED = {
    "precision": 32,
    "shard.count": 1,  # before class shards: the whole run
    "shard.index": 0,
    "method.factor": 1,
    "dataset.val.per_class": 0,
    "dataset.val.seed": 0,
    "method.algorithm.relabel.padding": 0,  # before the CIFAR relabel recipe: ImageNet's views
    "method.algorithm.relabel.mix": "cutmix",
    "method.algorithm.relabel.mix_alpha": 1.0,
}
COPIED = {
    "plugin.technique.max_start_epoch": "method.algorithm.max_start_epoch",
    "plugin.technique.expert_epochs": "method.algorithm.expert_epochs",
    "plugin.technique.trained_epochs": "expert.recipe.epochs",
    "plugin.technique.net": "method.algorithm.net",
}
# Groups added since: a run saved without them ran without them (the hard-label protocol beside
# eval=kd's students changes nothing the distillation did).
ADDED_GROUPS = ("eval.hard.",)
REMOVED = (
    "method.needs",
    "method.takes_cmi",
    "method.optimizer",
    "plugin.needs",
    "method.algorithm.relabel.cutmix",
)

# Keys that follow ``iterations`` and so refuse an extended run, with the reason.
WHY = {
    "plugin.technique.iterations": "the technique's stages are shared out over the run's "
    "iterations, so a finished run cannot be extended with more"
}


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; run the same command to resume.
    ``interrupted``: the signal was Ctrl-C (SIGINT), not a scheduler's."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def differing_keys(saved: dict, current: dict, unused: tuple = ()) -> list:
    """The keys whose values differ between two resolved configs, ignoring neutral and
    extendable ones and those under ``unused`` (groups the run does not read, such as the
    teacher of a method that has none)."""
    if "plugin" not in saved and (current.get("plugin") or {}).get("name") == "none":
        saved = {**saved, "plugin": current["plugin"]}  # from before plug-ins: it ran without one
    a, b = flatten(saved), flatten(current)
    if a.get("plugin.name") == "seqmatch" and "plugin.technique.experts" not in a:
        # before the reference's per-stage experts, plugin=seqmatch was today's variant (the
        # option's name decides its class)
        a = {**a, "plugin.name": "seqmatch_shared"}
        a.pop("plugin.technique._target_", None)
        b = {k: v for k, v in b.items() if k != "plugin.technique._target_"}
    copies = {
        key + k[len(source) :]: v
        for key, source in COPIED.items()
        for k, v in a.items()
        if k == source or k.startswith(f"{source}.")
    }
    if "method.algorithm.relabel.cutmix" in a:  # before relabel.mix: CutMix or no mix
        copies["method.algorithm.relabel.mix"] = (
            "cutmix" if a["method.algorithm.relabel.cutmix"] else "none"
        )
    a |= {k: v for k, v in {**ADDED, **copies}.items() if k not in a and k in b}
    if not any(k.startswith(ADDED_GROUPS) for k in a):
        b = {k: v for k, v in b.items() if not k.startswith(ADDED_GROUPS)}
    a = {k: v for k, v in a.items() if not (k.startswith(REMOVED) and k not in b)}
    # cmi.auto's settings only matter to a run whose weight is auto (and are absent before it).
    auto = "auto" in (a.get("cmi.weight"), b.get("cmi.weight"))
    return sorted(
        k
        for k in a.keys() | b.keys()
        if a.get(k) != b.get(k)
        and not k.startswith((*NEUTRAL, *unused))
        and k not in EXTENDABLE
        and (auto or not k.startswith("cmi.auto."))
    )


class Checkpointer:
    def __init__(self, path: Path, every: int):
        self.path, self.every, self.requested = Path(path), every, False
        self.immediate = False  # past the iterations: Ctrl-C stops at once

    def install_signal_handlers(self) -> None:
        def request(signum, frame):
            if signum == signal.SIGINT and (self.requested or self.immediate):
                raise KeyboardInterrupt  # a second Ctrl-C, or one after the iterations
            again = " (Ctrl-C again to stop now)" if signum == signal.SIGINT else ""
            log.warning("signal %d: checkpointing at the end of this iteration%s", signum, again)
            self.requested = signum

        signals = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
        self.previous = {signum: signal.signal(signum, request) for signum in signals}

    def restore_signal_handlers(self) -> None:
        """Put back the handlers from before the run: the jobs of a local multirun share one
        process, and a handler left behind would swallow a signal meant for the next job."""
        for signum, handler in getattr(self, "previous", {}).items():
            signal.signal(signum, handler)
        self.previous = {}

    def due(self, iteration: int) -> bool:
        return self.requested or (self.every > 0 and iteration % self.every == 0)

    def save(self, state: dict) -> None:
        """``state`` with its checksum, written whole or not at all."""
        save({**state, "sha256": digest(state)}, self.path)

    def _verify(self, state: dict) -> None:
        """The checksum saved with the state (none before checksums) and finite values."""
        expected = state.pop("sha256", None)
        if expected is None:
            log.warning("checkpoint %s has no checksum (an older cmidd wrote it)", self.path)
        elif digest(state) != expected:
            raise UserError(
                f"checkpoint {self.path} is damaged: its contents do not match the checksum "
                "saved with them; delete it to start over"
            )
        where = non_finite(state)
        if where:
            raise UserError(
                f"checkpoint {self.path} holds NaN or infinite values ({where}): a run cannot "
                "continue from it; delete it to start over"
            )

    def load(self, config: dict, unused: tuple = ()):
        """The checkpoint's state, or None if there is none; refuses one from another config
        (``unused``: key prefixes of groups the run does not read)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            saved = state["config"]
        except Exception as error:  # noqa: BLE001 -- any unreadable file gets the same message
            raise UserError(
                f"checkpoint {self.path} cannot be read: {describe(error)}; delete it to start over"
            ) from None
        self._verify(state)
        differing = differing_keys(saved, config, unused)
        if differing:
            shown = ", ".join(
                f"{k}={flatten(saved).get(k)!r} (now {flatten(config).get(k)!r})"
                for k in differing[:5]
            )
            why = "".join(f" ({WHY[k]})" for k in differing if k in WHY)
            raise UserError(
                f"checkpoint {self.path} is from a run with other settings: {shown}{why}; "
                "use another run directory or delete the checkpoint"
            )
        if "cmi" not in state:  # written before the CMI term kept its own state
            auto = state.pop("cmi_weight", None)
            state["cmi"] = {"generator": state.pop("proxy_generator"), "auto": auto}
        state.setdefault("plugin", {})  # written before plug-ins
        if config["iterations"] < state["iteration"]:
            raise UserError(
                f"iterations={config['iterations']} is invalid: checkpoint "
                f"{self.path} is after {state['iteration']} iterations already"
            )
        return state
