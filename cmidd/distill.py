"""The distillation loop: any base method's loss, plus the CMI term (Eq. 11 of the paper)

    L = L_DD + cmi.weight * CMI_emp(S)

computed on the un-augmented (decoded) synthetic set, once per iteration (or every ``cmi_every``
iterations, the paper's cheaper variant), with the first loss the method yields. With weight 0
the proxy never runs.
"""
import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from .checkpoint import Preempted, global_rng_state, set_global_rng_state
from .errors import NonFiniteError

log = logging.getLogger(__name__)


def _finite(value: float, iteration: int, term: str, rates: str) -> float:
    if not math.isfinite(value):
        raise NonFiniteError(f"iteration {iteration}: {term} is {value}; the synthetic set of the "
                             f"previous iteration is kept (lower {rates})")
    return value


def write_json(path: Path, data: dict) -> None:
    """Atomic write: a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Distillation:
    def __init__(self, synthetic, method, optimizer, iterations: int, evaluator, real, seed: int,
                 out_dir: Path, logger, cmi=None, weight: float = 0.0, cmi_every: int = 1,
                 log_every: int = 50, config: dict = None, checkpointer=None):
        self.synthetic, self.method, self.optimizer = synthetic, method, optimizer
        self.iterations, self.evaluator, self.real, self.seed = iterations, evaluator, real, seed
        self.out_dir, self.logger, self.cmi, self.weight = Path(out_dir), logger, cmi, weight
        self.log_every, self.checkpointer, self.cmi_every = log_every, checkpointer, cmi_every
        self.done = 0  # iterations completed
        self.results = {"accuracy": {}, "accuracy_curve": [], "cmi": {"start": None, "end": None},
                        "iterations": iterations, "seconds_per_iteration": None,
                        "status": "running", "config": config or {}}

    @property
    def _rates(self) -> str:
        """The settings that can make the set diverge, for error messages."""
        learned = ", method.synthetic_lr.lr" if self.synthetic.lr is not None else ""
        return f"method.optimizer.lr{learned} or cmi.weight"

    def _measure_cmi(self):
        return None if self.cmi is None else self.cmi.measure(*self.synthetic.decoded())

    def _evaluate(self, iteration: int) -> dict:
        images, labels = self.synthetic.decoded()
        accuracy = self.evaluator(images, labels, self.real, self.seed, stream=f"eval/{iteration}",
                                  lr=self.synthetic.learned_lr)
        point = {"iteration": iteration, **{arch: r["mean"] for arch, r in accuracy.items()}}
        self.results["accuracy_curve"].append(point)
        self.logger.log({f"eval/{arch}": r["mean"] for arch, r in accuracy.items()}, step=iteration)
        self.synthetic.save_grid(self.out_dir / "synthetic.png")
        self.logger.image("synthetic", self.out_dir / "synthetic.png", step=iteration)
        log.info("iteration %d: accuracy %s", iteration,
                 ", ".join(f"{a} {r['mean']:.4f} ± {r['std']:.4f}" for a, r in accuracy.items()))
        write_json(self.out_dir / "results.json", self.results)
        return accuracy

    def _step(self, iteration: int) -> dict:
        losses = {"loss/distill": 0.0, "loss/cmi": 0.0}
        for k, loss in enumerate(self.method.losses(self.synthetic, iteration)):
            total = loss
            losses["loss/distill"] += _finite(loss.item(), iteration, "the distillation loss", self._rates)
            first = k == 0 or getattr(self.method, "cmi_each_step", False)
            if first and self.weight > 0 and iteration % self.cmi_every == 0:
                cmi = self.cmi(*self.synthetic.decoded())
                total = loss + self.weight * cmi
                losses["loss/cmi"] += _finite(cmi.item(), iteration, "the CMI term", self._rates)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            if not all(torch.isfinite(p).all() for p in self.synthetic.parameters()):
                raise NonFiniteError(f"iteration {iteration}: the synthetic set became NaN or "
                                     f"infinite after the update; lower {self._rates}")
        losses["loss/total"] = losses["loss/distill"] + self.weight * losses["loss/cmi"]
        if self.synthetic.lr is not None:
            losses["synthetic/lr"] = self.synthetic.learned_lr
        return losses

    def state(self, next_iteration: int, seconds: float) -> dict:
        """Everything needed to continue from ``next_iteration`` exactly as without a stop."""
        return {"iteration": next_iteration, "seconds": seconds, "results": self.results,
                "config": self.results["config"], "synthetic": self.synthetic.state(),
                "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict(),
                "proxy_generator": self.cmi.generator.get_state() if self.cmi else None,
                "rng": global_rng_state(), "logger_run_id": self.logger.run_id}

    def restore(self, state: dict) -> tuple:
        with torch.no_grad():
            self.synthetic.images.copy_(state["synthetic"]["images"])
            if self.synthetic.lr is not None:
                self.synthetic.lr.fill_(state["synthetic"]["lr"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        if self.cmi is not None:
            self.cmi.generator.set_state(state["proxy_generator"])
        set_global_rng_state(state["rng"])
        self.results = {**state["results"], "status": "running"}
        log.info("resumed from the checkpoint at iteration %d", state["iteration"])
        return state["iteration"], state["seconds"]

    def _checkpoint(self, next_iteration: int, seconds: float) -> None:
        if self.checkpointer is None or not self.checkpointer.due(next_iteration):
            return
        self.checkpointer.save(self.state(next_iteration, seconds))
        if self.checkpointer.requested:
            self.results["status"] = f"preempted at iteration {next_iteration}"
            write_json(self.out_dir / "results.json", self.results)
            raise Preempted(f"stopped on a signal after iteration {next_iteration - 1}; the "
                            "checkpoint is saved: run the same command to resume")

    def run(self, state: dict = None) -> dict:
        """Distill from scratch, or from a checkpoint's ``state``."""
        start, seconds = self.restore(state) if state else (0, 0.0)
        self.done = start
        if state is None:
            self.results["cmi"]["start"] = self._measure_cmi()
        for iteration in range(start, self.iterations):
            if self.evaluator.due(iteration, self.iterations):
                self._evaluate(iteration)
            tic = time.perf_counter()
            losses = self._step(iteration)
            seconds += time.perf_counter() - tic
            self.logger.log(losses, step=iteration)
            if iteration % self.log_every == 0 or iteration == self.iterations - 1:
                log.info("iteration %d/%d: %s", iteration, self.iterations,
                         ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in losses.items()))
            self.done = iteration + 1
            self._checkpoint(iteration + 1, seconds)
        self.results["seconds_per_iteration"] = seconds / max(self.iterations, 1)
        self.results["cmi"]["end"] = self._measure_cmi()
        self.results["accuracy"] = self._evaluate(self.iterations)
        self.results["status"] = "finished"
        write_json(self.out_dir / "results.json", self.results)
        return self.results
