"""The distillation loop: any base method's loss, plus the CMI term (Eq. 11 of the paper)

    L = L_DD + cmi.weight * CMI_emp(S)

computed on the un-augmented (decoded) synthetic set, once per iteration, with the first loss
the method yields. With weight 0 the proxy never runs.
"""
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def write_json(path: Path, data: dict) -> None:
    """Atomic write: a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Distillation:
    def __init__(self, synthetic, method, optimizer, iterations: int, evaluator, real, seed: int,
                 out_dir: Path, logger, cmi=None, weight: float = 0.0,
                 log_every: int = 50, config: dict = None):
        self.synthetic, self.method, self.optimizer = synthetic, method, optimizer
        self.iterations, self.evaluator, self.real, self.seed = iterations, evaluator, real, seed
        self.out_dir, self.logger, self.cmi, self.weight = Path(out_dir), logger, cmi, weight
        self.log_every = log_every
        self.results = {"accuracy": {}, "accuracy_curve": [], "cmi": {"start": None, "end": None},
                        "iterations": iterations, "seconds_per_iteration": None,
                        "status": "running", "config": config or {}}

    def _measure_cmi(self):
        return None if self.cmi is None else self.cmi.measure(*self.synthetic.decoded())

    def _evaluate(self, iteration: int) -> dict:
        images, labels = self.synthetic.decoded()
        accuracy = self.evaluator(images, labels, self.real, self.seed, stream=f"eval/{iteration}")
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
            if k == 0 and self.weight > 0:
                cmi = self.cmi(*self.synthetic.decoded())
                total = loss + self.weight * cmi
                losses["loss/cmi"] += cmi.item()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            losses["loss/distill"] += loss.item()
        losses["loss/total"] = losses["loss/distill"] + self.weight * losses["loss/cmi"]
        return losses

    def run(self) -> dict:
        self.results["cmi"]["start"] = self._measure_cmi()
        seconds = 0.0
        for iteration in range(self.iterations):
            if self.evaluator.due(iteration, self.iterations):
                self._evaluate(iteration)
            start = time.perf_counter()
            losses = self._step(iteration)
            seconds += time.perf_counter() - start
            self.logger.log(losses, step=iteration)
            if iteration % self.log_every == 0 or iteration == self.iterations - 1:
                log.info("iteration %d/%d: %s", iteration, self.iterations,
                         ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in losses.items()))
        self.results["seconds_per_iteration"] = seconds / max(self.iterations, 1)
        self.results["cmi"]["end"] = self._measure_cmi()
        self.results["accuracy"] = self._evaluate(self.iterations)
        self.results["status"] = "finished"
        write_json(self.out_dir / "results.json", self.results)
        return self.results
