"""The speed section of benchmarks/run.py: each workload with ``compute.micro_batch=0`` (before:
the batches cmidd used until issue 21) and ``auto`` (after: sized to the device), alternating in
one process, as ratios of seconds."""

import statistics
import time

import torch
from hydra.utils import instantiate
from measure import alternate, sync, timing_loop
from omegaconf import OmegaConf

from cmidd import batching
from cmidd.components import components
from cmidd.runtime import generator
from cmidd.train import train_classifier

SETTINGS = {"before": 0, "after": "auto"}


class _Scoped:
    """A distillation loop whose steps run under one micro-batch setting."""

    def __init__(self, loop, setting):
        self.loop, self.setting = loop, setting

    def _step(self, iteration: int) -> None:
        with batching.micro_batches(self.setting):
            self.loop._step(iteration)


def _ratio(seconds: dict, **extra) -> dict:
    return {"seconds": seconds, "speedup": seconds["before"] / seconds["after"], **extra}


def iteration_speed(compose, overrides: list, iterations: int) -> dict:
    """Seconds per distillation iteration (iteration 0 untimed), before and after."""
    parts = components(compose(overrides))
    other = components(compose(overrides), real=parts.real)
    loops = {
        "before": _Scoped(timing_loop(parts), SETTINGS["before"]),
        "after": _Scoped(timing_loop(other), SETTINGS["after"]),
    }
    return _ratio(alternate(loops, iterations, parts.device), iterations_timed=iterations)


def _timed(work, device, repeats: int) -> dict:
    """Mean seconds of ``work()`` under each setting, in the order before, after, after,
    before, ... (``repeats`` each), after one untimed warm-up of each."""
    seconds = {name: [] for name in SETTINGS}
    order = [["before", "after"], ["after", "before"]]
    for r in range(repeats + 1):
        for name in order[r % 2]:
            with batching.micro_batches(SETTINGS[name]):
                sync(device)
                tic = time.perf_counter()
                work()
                sync(device)
            if r > 0:
                seconds[name].append(time.perf_counter() - tic)
    return {name: statistics.fmean(s) for name, s in seconds.items()}


def evaluation_speed(compose, overrides: list, repeats: int) -> dict:
    """Seconds to train and test one network of the config's evaluation protocol on a
    random-real synthetic set."""
    cfg = compose([*overrides, "cmi=none", "eval.models=1", "eval.vectorize=false"])
    parts = components(cfg)
    images, labels = parts.synthetic.decoded()
    evaluator = instantiate(cfg.eval)
    seconds = _timed(lambda: evaluator(images, labels, parts.real, cfg.seed), parts.device, repeats)
    return _ratio(seconds, epochs=cfg.eval.epochs, images=len(images))


def proxy_epoch_speed(compose, overrides: list, images: int, repeats: int) -> dict:
    """Seconds of one epoch of the config's proxy recipe over ``images`` real training images."""
    cfg = compose([*overrides, "cmi=none"])
    parts = components(cfg)
    x, y = parts.real.sample_mixed(images, generator(0, "speed/proxy"))
    recipe = cfg.proxy.recipe
    make = instantiate(cfg.proxy.net)

    def epoch():
        c, h, _ = parts.real.shape
        net = make(in_channels=c, num_classes=parts.real.num_classes, image_size=h)
        train_classifier(
            net.to(parts.device),
            x,
            y,
            1,
            recipe.lr,
            recipe.momentum,
            recipe.weight_decay,
            recipe.batch_size,
            generator(0, "speed/order"),
        )

    net = OmegaConf.to_container(cfg.proxy.net, resolve=True)
    seconds = _timed(epoch, parts.device, repeats)
    return _ratio(seconds, images=images, batch_size=recipe.batch_size, net=net)


def speed(compose, spec: dict, extra: list) -> dict:
    """Every workload of ``spec`` (FULL["speed"] in run.py), before and after, each composed
    with the ``extra`` overrides."""
    out = {"threads": torch.get_num_threads()}
    for name, (overrides, iterations) in spec["iterations"].items():
        out[name] = iteration_speed(compose, [*overrides, *extra], iterations)
    common = [*spec["small"], *extra]
    out["evaluation_network"] = evaluation_speed(compose, common, spec["repeats"])
    out["proxy_epoch"] = proxy_epoch_speed(compose, common, spec["proxy_images"], spec["repeats"])
    return out
