"""The distillation loop: any base method's loss, plus the CMI term (Eq. 11 of the paper)

    L = L_DD + cmi.weight * CMI_emp(S)

computed on the un-augmented (decoded) synthetic set, in the iterations where it is due (every
``cmi_every``-th; 1 by default, the paper suggests 5 as a cheaper variant), at the steps the
method's reference code adds it (``Method.cmi_every_step``, ``Method.new_proxy_every_step``:
the first or every image update of an iteration, one proxy per iteration or per step). With
weight 0 the proxy never runs; with ``cmi.weight=auto`` the weight comes from the two gradients
at each such step (cmidd/cmi_weight.py).
"""

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from .checkpoint import Preempted, loop_state, restore_loop
from .errors import NonFiniteError, UserError, describe
from .progress import Progress
from .synthetic import decode

log = logging.getLogger(__name__)
RECORDED = ("loss/", "cmi/weight")  # what the loss curve keeps of an iteration's logged values


def _finite(value: float, iteration: int, term: str, rates: str) -> float:
    if not math.isfinite(value):
        raise NonFiniteError(f"iteration {iteration + 1}: {term} is {value} (lower {rates})")
    return value


def write_json(path: Path, data: dict) -> None:
    """Atomic write: a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Distillation:
    def __init__(
        self,
        synthetic,
        method,
        optimizer,
        iterations: int,
        evaluator,
        real,
        seed: int,
        out_dir: Path,
        logger,
        cmi=None,
        log_every: int = 50,
        config: dict = None,
        checkpointer=None,
        loss_every: int = 10,
        scheduler=None,
    ):
        self.synthetic, self.method, self.optimizer = synthetic, method, optimizer
        self.scheduler = scheduler  # of the optimizer's learning rate, stepped per iteration
        self.iterations, self.evaluator, self.real, self.seed = iterations, evaluator, real, seed
        self.out_dir, self.logger, self.cmi = Path(out_dir), logger, cmi
        self.log_every, self.checkpointer, self.loss_every = log_every, checkpointer, loss_every
        # The term's own schedule (cmi.weight or cmi.auto, cmi.every); no pool means no term.
        self.weight = cmi.weight if cmi is not None else 0.0
        self.auto = cmi.auto if cmi is not None else None
        self.active = cmi is not None and cmi.active
        self.cmi_every = cmi.every if cmi is not None else 1
        self.done = 0  # iterations completed
        self.unsaved = None  # why synthetic.pt could not be written, if it could not
        self.results = {
            "accuracy": {},
            "accuracy_curve": [],
            # {"iteration", "distill", "cmi", "total"; "weight" with cmi.weight=auto}
            "loss_curve": [],  # after the first iteration and every loss_every
            "cmi": {"start": None, "end": None},  # and "weight" (the one used) at the end
            "iterations": iterations,
            "seconds_per_iteration": None,
            "status": "running",
            "config": config or {},
        }

    @property
    def _rates(self) -> str:
        """The settings that can make the set diverge, for error messages."""
        learned = ", method.synthetic_lr.lr" if self.synthetic.lr is not None else ""
        weight = "cmi.auto.ratio" if self.auto is not None else "cmi.weight"
        return f"method.optimizer.lr{learned} or {weight}"

    def _measure_cmi(self):
        return None if self.cmi is None else self.cmi.measure(*self.synthetic.decoded())

    def _evaluate(self, iteration: int) -> dict:
        """Evaluate the set after ``iteration`` iterations (0: the initial set)."""
        images, labels = self.synthetic.train_set()
        soft = {} if self.synthetic.relabel is None else {"soft_labels": self.synthetic.relabel}
        accuracy = self.evaluator(
            images,
            labels,
            self.real,
            self.seed,
            stream=f"eval/{iteration}",
            lr=self.synthetic.learned_lr,
            **soft,
        )
        point = {"iteration": iteration, **{arch: r["mean"] for arch, r in accuracy.items()}}
        curve = self.results["accuracy_curve"]
        curve[:] = [p for p in curve if p["iteration"] != iteration] + [point]  # an extended run
        self.logger.log({f"eval/{arch}": r["mean"] for arch, r in accuracy.items()}, step=iteration)
        self.synthetic.save_grid(self.out_dir / "synthetic.png")
        self.logger.image("synthetic", self.out_dir / "synthetic.png", step=iteration)
        log.info(
            "after %d iterations: accuracy %s",
            iteration,
            ", ".join(f"{a} {r['mean']:.4f} ± {r['std']:.4f}" for a, r in accuracy.items()),
        )
        write_json(self.out_dir / "results.json", self.results)
        return accuracy

    def _cmi_due(self, step: int, iteration: int) -> bool:
        return (
            self.active
            and iteration % self.cmi_every == 0
            and (step == 0 or self.method.cmi_every_step)
        )

    def _cmi_set(self, stage) -> tuple:
        """The images CMI is computed on: the (decoded) set, or the part a plug-in's stage uses."""
        if stage is None:
            return self.synthetic.decoded()
        s = self.synthetic
        return decode(s.images[stage.visible], s.labels[stage.visible], s.factor)

    def _update(self, stage) -> None:
        """The optimizer's step; the stored images a plug-in's stage does not train stay as they
        are (their gradient is zeroed, so no momentum builds up for them, and their values are
        put back, so momentum already built moves nothing)."""
        if stage is None:
            self.optimizer.step()
            return
        images, fixed = self.synthetic.images, ~stage.trainable
        kept = images.detach()[fixed].clone()
        if images.grad is not None:
            images.grad[fixed] = 0
        self.optimizer.step()
        with torch.no_grad():
            images[fixed] = kept

    def _backward(self, loss, cmi, stage) -> float:
        """The gradients of ``loss + weight * cmi``; returns the weight used."""
        if cmi is None or self.auto is None:
            (loss if cmi is None else loss + self.weight * cmi).backward()
            return self.weight
        # cmi.weight=auto: the two gradients apart, to weigh them by their norms on the images
        # this step trains; together they cost what the sum's backward costs.
        images = self.synthetic.images
        if loss.requires_grad:
            loss.backward()
        distill = torch.zeros_like(images) if images.grad is None else images.grad
        (cmi_grad,) = torch.autograd.grad(cmi, images)
        rows = slice(None) if stage is None else stage.trainable
        weight = self.auto.update(distill[rows], cmi_grad[rows])
        images.grad = distill.add_(cmi_grad, alpha=weight)
        return weight

    def _step(self, iteration: int) -> dict:
        losses = {"loss/distill": 0.0, "loss/cmi": 0.0, "loss/total": 0.0}
        proxy = None
        self.method.plugin.begin(iteration)
        stage = self.method.plugin.stage(self.synthetic, iteration)
        for k, loss in enumerate(self.method.losses(self.synthetic, iteration)):
            distill = _finite(loss.item(), iteration, "the distillation loss", self._rates)
            cmi, cmi_value = None, 0.0
            if self._cmi_due(k, iteration):
                if proxy is None or self.method.new_proxy_every_step:
                    proxy = self.cmi.draw()
                cmi = self.cmi(*self._cmi_set(stage), proxy=proxy)
                cmi_value = _finite(cmi.item(), iteration, "the CMI term", self._rates)
            self.optimizer.zero_grad(set_to_none=True)
            weight = self._backward(loss, cmi, stage)
            self._update(stage)
            if not self.synthetic.is_finite():
                raise NonFiniteError(
                    f"iteration {iteration + 1}: the synthetic set became NaN or "
                    f"infinite after the update (lower {self._rates})"
                )
            losses["loss/distill"] += distill
            losses["loss/cmi"] += cmi_value
            losses["loss/total"] += distill + weight * cmi_value
        if self.auto is not None:
            self.auto.end_iteration()
            losses["cmi/weight"] = self.auto.value
        if self.synthetic.lr is not None:
            losses["synthetic/lr"] = self.synthetic.learned_lr
        return losses

    def _checkpoint(self, done: int, seconds: float, final: bool = False) -> None:
        if self.checkpointer is None or not (final or self.checkpointer.due(done)):
            return
        self.checkpointer.save(loop_state(self, done, seconds))
        if self.checkpointer.requested and not final:
            self.results["status"] = f"preempted after {done} iterations"
            write_json(self.out_dir / "results.json", self.results)
            raise Preempted(
                f"stopped on a signal after {done} iterations; the checkpoint is "
                "saved: run the same command to resume"
            )

    def _record_losses(self, losses: dict) -> None:
        """The loss curve of results.json (the paper's Figure 5), after the first iteration and
        every ``loss_every`` iterations."""
        if self.done == 1 or self.done % self.loss_every == 0:
            point = {k.split("/")[1]: v for k, v in losses.items() if k.startswith(RECORDED)}
            self.results.setdefault("loss_curve", []).append({"iteration": self.done, **point})

    def _log_progress(self, progress: Progress, losses: dict, eval_times: list) -> None:
        """A progress line; its time left counts the evaluations still due at their mean time
        so far (they are not per iteration, so the rate leaves them out)."""
        if (self.done - 1) % self.log_every == 0 or self.done == self.iterations:
            due = sum(
                self.evaluator.due(i, self.iterations)
                for i in range(self.done, self.iterations + 1)
            )
            extra = due * sum(eval_times) / len(eval_times) if eval_times else 0.0
            losses = ", ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in losses.items())
            progress.log(log, self.done, "iteration %d: %s", self.done, losses, extra=extra)

    def run(self, state: dict = None) -> dict:
        """Distill from scratch, or from a checkpoint's ``state`` (a finished run's too, to
        extend it to more iterations)."""
        start, seconds = restore_loop(self, state) if state else (0, 0.0)
        self.done = start
        if state and state["results"]["status"] == "finished" and start == self.iterations:
            log.info("the checkpoint's run is finished after %d iterations", start)
            return self.results
        if state is None:
            self.results["cmi"]["start"] = self._measure_cmi()
        progress = Progress(self.iterations, start)
        evaluated = {p["iteration"] for p in self.results["accuracy_curve"]}
        eval_times = []
        for iteration in range(start, self.iterations):
            if self.evaluator.due(iteration, self.iterations) and iteration not in evaluated:
                tic = time.perf_counter()
                self._evaluate(iteration)
                eval_times.append(time.perf_counter() - tic)
                progress.exclude(eval_times[-1])
            tic = time.perf_counter()
            before = self.synthetic.snapshot()
            try:
                losses = self._step(iteration)
            except NonFiniteError as error:
                self.synthetic.restore(before)  # the last finite set is what gets saved
                raise NonFiniteError(
                    f"{error}; synthetic.pt keeps the last finite set, after {self.done} iterations"
                ) from None
            if self.scheduler is not None:
                self.scheduler.step()
            seconds += time.perf_counter() - tic
            self.logger.log(losses, step=iteration)
            self.done = iteration + 1
            self._record_losses(losses)
            self._log_progress(progress, losses, eval_times)
            self._checkpoint(self.done, seconds)
        self.results["seconds_per_iteration"] = seconds / max(self.iterations, 1)
        self.method.finish(self.synthetic)
        self.results["cmi"]["end"] = self._measure_cmi()
        self.results["cmi"]["weight"] = self.auto.value if self.auto else self.weight
        self.results["accuracy"] = self._evaluate(self.iterations)
        self.save_set()
        self.results["status"] = "finished"
        self._checkpoint(self.done, seconds, final=True)  # lets the run be extended later
        write_json(self.out_dir / "results.json", self.results)
        return self.results

    def save_set(self) -> None:
        """``synthetic.pt`` and ``synthetic.png`` of the set as it is now."""
        path = self.out_dir / "synthetic.pt"
        try:
            self.synthetic.save(path, iteration=self.done, seed=self.seed, dataset=self.real.meta)
            self.synthetic.save_grid(self.out_dir / "synthetic.png")
        except OSError as error:
            self.unsaved = f"{path} could not be written: {describe(error)}"
            raise UserError(self.unsaved) from error

    def fail(self, error: BaseException) -> None:
        """After ``run`` stopped on ``error``: keep what was computed (the set, which is the last
        finite one, and results.json saying why the run stopped)."""
        if not isinstance(error, Preempted):
            self.results["status"] = f"failed: {describe(error)}"
        if self.unsaved is None:
            try:
                self.save_set()
            except UserError:
                self.results["status"] += f"; {self.unsaved}"
        write_json(self.out_dir / "results.json", self.results)
