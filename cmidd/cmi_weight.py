"""``cmi.weight=auto``: the CMI weight set from the run itself, so that one dimensionless setting
means the same across proxies, base methods, datasets and IPC (beyond the paper, whose lambda
"must be adjusted according to L_DD" and spans 500 to 80,000 across its tables).

At each step where the CMI term is added, the weight makes the term's gradient on the synthetic
images a fixed fraction ``ratio`` of the distillation loss's gradient:

    weight = ratio * ||grad_S L_DD|| / ||grad_S CMI_emp(S)||

An iteration's value is the mean of its steps' (DC, DSA and IDC add the term at several steps of
an iteration, each on another network). ``mode="freeze"`` averages the values of the first
``calibrate`` iterations with CMI and keeps that weight for the rest of the run; ``mode="track"``
follows them with a bias-corrected exponential moving average of ``momentum``. Within an
iteration the weight in use counts that iteration's steps so far. Both gradients are computed
anyway for the update (the loop adds them rather than back-propagating their weighted sum). A
step where either gradient is zero or not finite (e.g. one image per class, where CMI is
identically 0) is not measured.
"""

import math

import torch

from .errors import UserError, check_choice, check_number

MODES = ("freeze", "track")


def weighted(weight) -> bool:
    """Whether a ``cmi.weight`` value adds the term: ``auto`` (a missing table entry too) or a
    positive number."""
    return isinstance(weight, str) or float(weight) > 0


class AutoWeight:
    def __init__(self, ratio: float, mode: str = "freeze", calibrate: int = 10, momentum=0.9):
        check_choice("cmi.auto.mode", mode, MODES)
        check_number("cmi.auto.calibrate", calibrate, 1, integer=True)
        if check_number("cmi.auto.ratio", ratio, 0) == 0:
            raise UserError("cmi.auto.ratio=0 is invalid: it must be a positive number")
        if check_number("cmi.auto.momentum", momentum, 0) >= 1:
            raise UserError(f"cmi.auto.momentum={momentum} is invalid: it must be < 1")
        self.ratio, self.mode, self.calibrate, self.momentum = ratio, mode, calibrate, momentum
        self.value = 0.0  # the weight in use: 0 until the first measurement
        self.count = 0  # iterations measured
        self.average = 0.0  # their mean (freeze) or uncorrected moving average (track)
        self.steps = []  # the current iteration's measurements

    @property
    def frozen(self) -> bool:
        return self.mode == "freeze" and self.count >= self.calibrate

    def _combined(self, latest: float, count: int) -> tuple:
        """(average, weight) after adding an iteration's value ``latest`` as the ``count``-th."""
        if self.mode == "freeze":
            average = self.average + (latest - self.average) / count
            return average, average
        average = self.momentum * self.average + (1 - self.momentum) * latest
        return average, average / (1 - self.momentum**count)

    def update(self, distill_grad: torch.Tensor, cmi_grad: torch.Tensor) -> float:
        """The weight for this step, from the two gradients on the trained images."""
        if self.frozen:
            return self.value
        distill_norm, cmi_norm = float(distill_grad.norm()), float(cmi_grad.norm())
        if not (math.isfinite(distill_norm) and math.isfinite(cmi_norm)):
            return self.value
        if distill_norm == 0 or cmi_norm == 0:
            return self.value
        self.steps.append(self.ratio * distill_norm / cmi_norm)
        latest = sum(self.steps) / len(self.steps)
        _, self.value = self._combined(latest, self.count + 1)
        return self.value

    def end_iteration(self) -> None:
        """Count the iteration's measurements (if any) as one value."""
        if self.steps:
            latest = sum(self.steps) / len(self.steps)
            self.count += 1
            self.average, self.value = self._combined(latest, self.count)
            self.steps = []

    def state_dict(self) -> dict:
        """Between iterations (where checkpoints are written), so without pending steps."""
        return {"value": self.value, "count": self.count, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.count, self.average = state["value"], state["count"], state["average"]
        self.steps = []
