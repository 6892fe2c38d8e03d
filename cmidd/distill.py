"""The distillation loop: any base method's loss, plus the CMI term (Eq. 11 of the paper)

    L = L_DD + cmi.weight * CMI_emp(S)

computed on the un-augmented (decoded) synthetic set, in the iterations where it is due (every
``cmi.every``-th; 1 by default, the paper suggests 5 as a cheaper variant), at the steps the
method's reference code adds it (``Method.cmi_every_step``, ``Method.new_proxy_every_step``:
the first or every image update of an iteration, one proxy per iteration or per step). With
weight 0 the proxy never runs; with ``cmi.weight=auto`` the weight comes from the two gradients
at each such step (cmidd/cmi_weight.py).
"""

import logging
import math
import signal
import time
from pathlib import Path

import torch

from .checkpoint import Preempted
from .errors import NonFiniteError, UserError, describe
from .evaluate import evaluate_set
from .files import write_json
from .loggers import NullLogger
from .manifest import peak_memory
from .progress import Progress
from .runtime import global_rng_state, set_global_rng_state
from .shards import SET as SHARD_SET
from .synthetic import decode

log = logging.getLogger(__name__)
RECORDED = ("loss/", "cmi/weight")  # what the loss curve keeps of an iteration's logged values


def _finite(value: float, iteration: int, term: str, rates: str) -> float:
    if not math.isfinite(value):
        raise NonFiniteError(f"iteration {iteration + 1}: {term} is {value} (lower {rates})")
    return value


class Distillation:
    """The loop over ``iterations`` of a run's ``parts`` (``cmidd.components.Parts``: the set,
    its optimizer and schedule, the method, its plug-in, the CMI term, the evaluator, the real
    data and the seed), writing into ``out_dir``: results.json, the set, and through
    ``checkpointer`` (if any) its own ``state_dict`` every ``checkpoint.every`` iterations."""

    def __init__(
        self,
        parts,
        iterations: int,
        out_dir: Path,
        logger=None,
        checkpointer=None,
        config: dict = None,
        log_every: int = 50,
        loss_every: int = 10,
        manifest: dict = None,
    ):
        self.synthetic, self.method, self.plugin = parts.synthetic, parts.method, parts.plugin
        self.optimizer, self.scheduler, self.cmi = parts.optimizer, parts.scheduler, parts.cmi
        self.evaluator, self.real, self.seed = parts.evaluator, parts.real, parts.seed
        self.shard = parts.shard  # a shard is neither evaluated nor measured: its merge is
        self.iterations, self.out_dir = iterations, Path(out_dir)
        self.logger = logger or NullLogger()
        self.log_every, self.checkpointer, self.loss_every = log_every, checkpointer, loss_every
        self.done, self.seconds = 0, 0.0  # iterations completed, and their time
        self.unsaved = None  # why synthetic.pt could not be written, if it could not
        self.results = {
            "accuracy": {},
            "accuracy_curve": [],  # {"iteration", <arch>: accuracy} at each evaluation
            "cmi_curve": [],  # {"iteration", "cmi"}: the set's CMI there (None without a pool)
            # {"iteration", "distill", "cmi", "total"; "weight" with cmi.weight=auto}
            "loss_curve": [],  # after the first iteration and every loss_every
            # and "weight" (the one used) at the end; "weight_fallback": why auto set it, if it did
            "cmi": {"start": None, "end": None}
            | ({"weight_fallback": self.cmi.fallback} if self.cmi.fallback else {}),
            "iterations": iterations,
            "seconds_per_iteration": None,
            "status": "running",
            "config": config or {},
            "shard": None if self.shard is None else self.shard.describe(),
            "manifest": manifest or {},  # cmidd/manifest.py; time per stage and memory at the end
        }

    def state_dict(self) -> dict:
        """Everything the loop needs to continue after ``done`` iterations exactly as without a
        stop: tensors and plain containers only (checkpoints load with ``weights_only``)."""
        return {
            "iteration": self.done,
            "seconds": self.seconds,
            "results": self.results,
            "config": self.results["config"],
            "synthetic": self.synthetic.state(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "plugin": self.plugin.state_dict(),
            "cmi": self.cmi.state_dict(),
            "rng": global_rng_state(),
            "logger_run_id": self.logger.run_id,
        }

    def load_state_dict(self, state: dict) -> None:
        """Back to a checkpoint's ``state``; the config and the budget stay this run's (a resumed
        run may go on for longer than the first)."""
        self.synthetic.restore(state["synthetic"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.method.load_state_dict(state["method"])
        self.plugin.load_state_dict(state["plugin"])
        self.cmi.load_state_dict(state["cmi"])
        set_global_rng_state(state["rng"])
        self.done, self.seconds = state["iteration"], state["seconds"]
        self.results = {
            **state["results"],
            "status": "running",
            "iterations": self.iterations,
            "config": self.results["config"],
            "manifest": self.results["manifest"],  # this session's
        }
        log.info("resumed from the checkpoint after %d iterations", self.done)

    @property
    def _rates(self) -> str:
        """The settings that can make the set diverge, for error messages."""
        learned = ", method.synthetic_lr.lr" if self.synthetic.lr is not None else ""
        weight = "cmi.auto.ratio" if self.cmi.auto is not None else "cmi.weight"
        return f"method.optimizer.lr{learned} or {weight}"

    def _evaluate(self, iteration: int) -> dict:
        """Evaluate the set after ``iteration`` iterations (0: the initial set)."""
        accuracy = evaluate_set(
            self.method, self.evaluator, self.synthetic, self.real, self.seed, iteration
        )
        point = {"iteration": iteration, **{arch: r["mean"] for arch, r in accuracy.items()}}
        self._add_point("accuracy_curve", point)
        cmi = self.cmi.measure(*self.synthetic.decoded())
        self._add_point("cmi_curve", {"iteration": iteration, "cmi": cmi})
        self.logger.log({f"eval/{arch}": r["mean"] for arch, r in accuracy.items()}, step=iteration)
        if self.method.stores_set:
            self.synthetic.save_grid(self.out_dir / "synthetic.png")
            self.logger.image("synthetic", self.out_dir / "synthetic.png", step=iteration)
        log.info(
            "after %d iterations: accuracy %s",
            iteration,
            ", ".join(f"{a} {r['mean']:.4f} ± {r['std']:.4f}" for a, r in accuracy.items()),
        )
        write_json(self.out_dir / "results.json", self.results)
        self._draw_curve()
        return accuracy

    def _draw_curve(self) -> None:
        """``curve.png``; a picture that cannot be drawn never stops the run."""
        from .report.plots import run_curve  # matplotlib's backend is chosen on first use

        try:
            run_curve(self.results, self.out_dir / "curve.png")
        except (OSError, ValueError) as error:
            log.warning("curve.png could not be drawn: %s", error)

    def _measure(self, when: str) -> None:
        """The set's CMI under the measuring pool (``start``, ``end``), and beside it, labelled,
        under the pool it is optimized against (``start_in_pool``, ``end_in_pool``)."""
        images = self.synthetic.decoded()
        self.results["cmi"][when] = self.cmi.measure(*images)
        self.results["cmi"][f"{when}_in_pool"] = self.cmi.measure(*images, in_pool=True)

    def _add_point(self, curve: str, point: dict) -> None:
        """A point of a curve of results.json, replacing one at its iteration (a run extended
        after its last evaluation)."""
        points = self.results.setdefault(curve, [])
        points[:] = [p for p in points if p["iteration"] != point["iteration"]] + [point]

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
        if cmi is None or self.cmi.auto is None:
            (loss if cmi is None else loss + self.cmi.weight * cmi).backward()
            return self.cmi.weight
        # cmi.weight=auto: the two gradients apart, to weigh them by their norms on the images
        # this step trains; together they cost what the sum's backward costs.
        images = self.synthetic.images
        if loss.requires_grad:
            loss.backward()
        distill = torch.zeros_like(images) if images.grad is None else images.grad
        (cmi_grad,) = torch.autograd.grad(cmi, images)
        rows = slice(None) if stage is None else stage.trainable
        weight = self.cmi.weigh(distill[rows], cmi_grad[rows])
        images.grad = distill.add_(cmi_grad, alpha=weight)
        return weight

    def _step(self, iteration: int) -> dict:
        losses = {"loss/distill": 0.0, "loss/cmi": 0.0, "loss/total": 0.0}
        proxy = None
        self.plugin.begin(iteration)
        stage = self.plugin.stage(self.synthetic, iteration)
        for k, loss in enumerate(self.method.losses(self.synthetic, iteration)):
            distill = _finite(loss.item(), iteration, "the distillation loss", self._rates)
            cmi, cmi_value = None, 0.0
            if self.cmi.due(iteration, k, self.method.cmi_every_step):
                if proxy is None or self.method.new_proxy_every_step:
                    proxy = self.cmi.draw()
                total = None if self.shard is None else self.shard.total
                cmi = self.cmi(*self._cmi_set(stage), proxy=proxy, total=total)
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
        losses |= self.cmi.end_iteration()
        if self.synthetic.lr is not None:
            losses["synthetic/lr"] = self.synthetic.learned_lr
        return losses

    def _checkpoint(self, final: bool = False) -> None:
        if self.checkpointer is None or not (final or self.checkpointer.due(self.done)):
            return
        self.checkpointer.save(self.state_dict())
        if self.checkpointer.requested and not final:
            interrupted = self.checkpointer.requested == signal.SIGINT
            how = "interrupted" if interrupted else "preempted"
            self.results["status"] = f"{how} after {self.done} iterations"
            write_json(self.out_dir / "results.json", self.results)
            raise Preempted(
                f"stopped after {self.done} iterations; the checkpoint is saved", interrupted
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
        if state:
            self.load_state_dict(state)
        start = self.done
        if state and state["results"]["status"] == "finished" and start == self.iterations:
            log.info("the checkpoint's run is finished after %d iterations", start)
            return self.results
        if state is None and self.shard is None:
            self._measure("start")
        progress = Progress(self.iterations, start)
        evaluated = {p["iteration"] for p in self.results["accuracy_curve"]}
        eval_times = []
        for iteration in range(start, self.iterations):
            due = self.shard is None and self.evaluator.due(iteration, self.iterations)
            if due and iteration not in evaluated:
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
            self.seconds += time.perf_counter() - tic
            self.logger.log(losses, step=iteration)
            self.done = iteration + 1
            self._record_losses(losses)
            self._log_progress(progress, losses, eval_times)
            self._checkpoint()
        if self.checkpointer is not None:  # the last checkpoint is written: Ctrl-C stops now
            self.checkpointer.immediate = True
        self.results["seconds_per_iteration"] = self.seconds / max(self.iterations, 1)
        self.results["cmi"]["weight"] = self.cmi.weight
        if self.shard is None:  # a shard's part waits for the whole set (cmidd/merge.py)
            self.method.finish(self.synthetic)
            self._measure("end")
            tic = time.perf_counter()
            self.results["accuracy"] = self._evaluate(self.iterations)
            eval_times.append(time.perf_counter() - tic)
        seconds = {"distillation": self.seconds, "evaluation": sum(eval_times)}
        self.results["manifest"].setdefault("seconds", {}).update(seconds)
        self.results["manifest"]["peak_memory"] = peak_memory(self.synthetic.images.device)
        self.save_set()
        self.results["status"] = "finished"
        if self.method.stores_set:
            self._checkpoint(final=True)  # lets the run be extended later
        write_json(self.out_dir / "results.json", self.results)
        return self.results

    def save_set(self) -> None:
        """``synthetic.pt`` and ``synthetic.png`` of the set as it is now (if it is worth one);
        a shard's part of the set is ``shard.pt``, which only a merge makes a set of."""
        if not self.method.stores_set:
            return
        meta = {"iteration": self.done, "seed": self.seed, "dataset": self.real.meta}
        try:
            name = "synthetic.pt" if self.shard is None else SHARD_SET
            self.synthetic.save(self.out_dir / name, **meta)
            self.synthetic.save_grid(self.out_dir / "synthetic.png")
        except OSError as error:  # the grid; the set's own write is a UserError already
            self.unsaved = f"{self.out_dir / 'synthetic.png'} could not be written: {error}"
            raise UserError(self.unsaved) from error
        except UserError as error:
            self.unsaved = str(error)
            raise

    def fail(self, error: BaseException) -> None:
        """After ``run`` stopped on ``error``: keep what was computed (the set, which is the last
        finite one, and results.json saying why the run stopped), as far as the disk lets."""
        if isinstance(error, KeyboardInterrupt):
            self.results["status"] = f"interrupted after {self.done} iterations"
        elif not isinstance(error, Preempted):
            self.results["status"] = f"failed: {describe(error)}"
        if self.unsaved is None:
            try:
                self.save_set()
            except UserError:
                self.results["status"] += f"; {self.unsaved}"
        try:
            write_json(self.out_dir / "results.json", self.results)
        except UserError as unwritten:
            log.error("%s", unwritten)
