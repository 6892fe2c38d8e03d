"""The speed sections of benchmarks/run.py, each workload under several settings of
cmidd.batching alternating in one process, as ratios of seconds. ``speed``:
``compute.micro_batch=0`` (before: the batches cmidd used until issue 21) and ``auto`` (after:
sized to the device). ``speed_options``: float32 against ``compute.channels_last``,
``precision=bf16`` and ``compute.compile=inductor`` (GPU options; each is slower on a CPU
without bf16 or where NCHW kernels are the fast ones, docs/speed.md)."""

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

# The settings each workload is timed under; the first of each is the baseline of the ratios.
SETTINGS = {"before": {"micro_batch": 0}, "after": {"micro_batch": "auto"}}


def options(backend: str) -> dict:
    """float32, each GPU option alone, and all of them (``backend``: torch.compile's)."""
    base = {"precision": 32, "channels_last": False, "compile": "none"}
    return {
        "float32": base,
        "channels_last": {**base, "channels_last": True},
        "bf16": {**base, "precision": "bf16"},
        "compile": {**base, "compile": backend},  # the evaluation networks only
        "all": {"channels_last": True, "precision": "bf16", "compile": backend},
    }


ITERATION_OPTIONS = ("float32", "channels_last", "bf16")  # compile: not in the distillation loop

# compute.fuse (the distillation path's forwards compiled, cmidd/fused.py) and compute.compile
# (the evaluation networks): plain against compiled; the first timed step follows an untimed
# one that compiles.
FUSE = {
    "before": {"fuse": False, "compile": "none"},
    "after": {"fuse": True, "compile": "inductor"},
}


class _Scoped:
    """A distillation loop whose steps run under one setting of cmidd.batching."""

    def __init__(self, loop, setting: dict):
        self.loop, self.setting = loop, setting

    def _step(self, iteration: int) -> None:
        with batching.settings(**self.setting):
            self.loop._step(iteration)


def _ratio(seconds: dict, **extra) -> dict:
    """Seconds and the speed-up of each setting over the first (``speedups``; ``speedup``:
    after over before)."""
    base = seconds[next(iter(seconds))]
    speedups = {name: base / s for name, s in seconds.items()}
    headline = {"speedup": speedups["after"]} if "after" in speedups else {}
    return {"seconds": seconds, **headline, "speedups": speedups, **extra}


def iteration_speed(compose, overrides: list, iterations: int, settings=SETTINGS) -> dict:
    """Seconds per distillation iteration (iteration 0 untimed) under each of ``settings``."""
    parts = [components(compose(overrides))]
    parts += [components(compose(overrides), real=parts[0].real) for _ in list(settings)[1:]]
    loops = {
        name: _Scoped(timing_loop(p), setting)
        for (name, setting), p in zip(settings.items(), parts, strict=True)
    }
    return _ratio(alternate(loops, iterations, parts[0].device), iterations_timed=iterations)


def _timed(work, device, repeats: int, settings=SETTINGS) -> tuple:
    """Mean seconds of ``work(name)`` under each setting ``name`` of ``settings``, who goes first
    rotating (e.g. before, after, after, before, ...; ``repeats`` each), after one untimed
    warm-up of each; and what ``work`` returned last under each."""
    seconds, names, last = {name: [] for name in settings}, list(settings), {}
    for r in range(repeats + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with batching.settings(**settings[name]):
                sync(device)
                tic = time.perf_counter()
                last[name] = work(name)
                sync(device)
            if r > 0:
                seconds[name].append(time.perf_counter() - tic)
    return {name: statistics.fmean(s) for name, s in seconds.items()}, last


def evaluation_speed(compose, overrides: list, repeats: int, settings=SETTINGS) -> dict:
    """Seconds to train and test one network of the config's evaluation protocol on a
    random-real synthetic set, and its test accuracy, under each of ``settings``."""
    cfg = compose([*overrides, "cmi=none", "eval.models=1", "eval.vectorize=false"])
    parts = components(cfg)
    images, labels = parts.synthetic.decoded()
    evaluator = instantiate(cfg.eval)
    seconds, results = _timed(
        lambda _: evaluator(images, labels, parts.real, cfg.seed), parts.device, repeats, settings
    )
    accuracy = {name: next(iter(r.values()))["mean"] for name, r in results.items()}
    return _ratio(seconds, epochs=cfg.eval.epochs, images=len(images), accuracy=accuracy)


def _proxy_epoch(cfg, parts, x, y):
    """One epoch of ``cfg``'s proxy recipe over ``(x, y)``, on a fresh network each call."""
    recipe, make = cfg.proxy.recipe, instantiate(cfg.proxy.net)
    c, h, _ = parts.real.shape

    def epoch():
        net = make(in_channels=c, num_classes=parts.real.num_classes, image_size=h)
        args = (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.batch_size)
        train_classifier(net.to(parts.device), x, y, 1, *args, generator(0, "speed/order"))

    return epoch


def _proxy_data(cfg, images: int) -> tuple:
    parts = components(cfg)
    return parts, *parts.real.sample_mixed(images, generator(0, "speed/proxy"))


def proxy_epoch_speed(compose, overrides: list, images: int, repeats: int) -> dict:
    """Seconds of one epoch of the config's proxy recipe over ``images`` real training images."""
    cfg = compose([*overrides, "cmi=none"])
    parts, x, y = _proxy_data(cfg, images)
    epoch = _proxy_epoch(cfg, parts, x, y)
    seconds, _ = _timed(lambda _: epoch(), parts.device, repeats)
    net = OmegaConf.to_container(cfg.proxy.net, resolve=True)
    return _ratio(seconds, images=images, batch_size=cfg.proxy.recipe.batch_size, net=net)


def proxy_pool_speed(compose, overrides: list, proxies: list, images: int, repeats: int) -> dict:
    """Seconds of one proxy-recipe epoch over ``images`` real images for each option of the
    ``proxy`` group in ``proxies``, alternating, and the whole pool's time extrapolated from it
    (``pool_minutes``: pool_size x recipe epochs x the training set)."""
    cfgs = {p: compose([*overrides, f"proxy={p}", "cmi=none"]) for p in proxies}
    parts, x, y = _proxy_data(cfgs[proxies[0]], images)
    epochs = {p: _proxy_epoch(cfg, parts, x, y) for p, cfg in cfgs.items()}
    seconds, _ = _timed(lambda p: epochs[p](), parts.device, repeats, {p: {} for p in proxies})
    train = sum(len(t) for t in parts.real.train)
    pool = {
        p: seconds[p] * train / images * cfg.proxy.recipe.epochs * cfg.proxy.pool_size / 60
        for p, cfg in cfgs.items()
    }
    return _ratio(seconds, images=images, train_images=train, pool_minutes=pool)


def speed(compose, spec: dict, extra: list) -> dict:
    """Every workload of ``spec`` (FULL["speed"] in specs.py), before and after, each composed
    with the ``extra`` overrides."""
    out = {"threads": torch.get_num_threads()}
    for name, (overrides, iterations) in spec["iterations"].items():
        out[name] = iteration_speed(compose, [*overrides, *extra], iterations)
    common = [*spec["small"], *extra]
    out["evaluation_network"] = evaluation_speed(compose, common, spec["repeats"])
    out["proxy_epoch"] = proxy_epoch_speed(compose, common, spec["proxy_images"], spec["repeats"])
    return out


def speed_options(compose, spec: dict, extra: list) -> dict:
    """Every workload of ``spec`` (FULL["speed_options"] in specs.py) under ``options``, each
    composed with the ``extra`` overrides."""
    out = {"threads": torch.get_num_threads(), "compile": spec["compile"]}
    every = options(spec["compile"])
    iteration = {name: every[name] for name in ITERATION_OPTIONS}
    for name, (overrides, iterations) in spec["iterations"].items():
        out[name] = iteration_speed(compose, [*overrides, *extra], iterations, iteration)
    for name, overrides in spec["evaluations"].items():
        out[name] = evaluation_speed(compose, [*overrides, *extra], spec["repeats"], every)
    return out


def fuse_speed(compose, spec: dict, extra: list) -> dict:
    """Every workload of ``spec`` (FULL["fuse"] in specs.py) plain and compiled, alternating."""
    if spec is None:
        return {"skipped": "compiling takes minutes: run without --quick"}
    out = {"threads": torch.get_num_threads()}
    for name, (overrides, iterations) in spec["iterations"].items():
        out[name] = iteration_speed(compose, [*overrides, *extra], iterations, FUSE)
    for name, overrides in spec["evaluations"].items():
        out[name] = evaluation_speed(compose, [*overrides, *extra], spec["repeats"], FUSE)
    return out
