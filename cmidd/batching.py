"""Forwards and training steps in micro-batches sized to the device (``compute.micro_batch``),
in the device's fastest memory format and precision (``compute.channels_last``, ``precision``),
through compiled networks where asked (``compute.compile``: the evaluation networks;
``compute.fuse``: the distillation path, cmidd/fused.py).

On a CPU the norm, pooling and ReLU passes of a large batch are memory-bound: the first
activation of 256 CIFAR images in a width-128 ConvNet is 134 MB, far beyond any cache. Splitting
the batch so that the largest activation of one micro-batch stays within ``CPU_BUDGET_BYTES``
computes the same per step, up to float rounding, faster where batches are large (measured in
BENCHMARKS.md, "Speed work"). On CUDA large batches win, so ``auto`` leaves the batches there as
they were.

The settings are process-wide, like torch's own backend flags. ``compute.*`` changes speed, and
results only by rounding (which, as with another thread count, grows over a long run);
``precision=bf16`` changes results (8 bits of mantissa), so it names run directories and is
checked by ``resume=``. ``from_config`` sets them once per run, ``settings`` for a scope. A net
that is not per-sample (BatchNorm using batch statistics, a norm updating running statistics,
dropout drawing random numbers) is never split.
"""

import contextlib

import torch
from torch import nn

from .errors import UserError

# Bytes of the largest activation of one micro-batch on a CPU: 16 images of a width-128
# ConvNet, 64 of a width-32 one, at 32x32 (about the fastest sizes measured on 2 threads).
CPU_BUDGET_BYTES = 8 << 20
# Images per no-grad forward at most, whatever the setting: the callers' memory bound before
# micro-batches (test passes, DM's fused classes, DREAM, coreset features).
LIMIT = 1024

PRECISIONS = (32, "bf16")
_setting = {
    "micro_batch": "auto",
    "precision": 32,
    "channels_last": False,
    "compile": "none",
    "fuse": False,  # the distillation path's forwards compiled (cmidd/fused.py)
}
_footprints = {}  # (repr of the net, input shape, dtype, output) -> bytes of its largest activation


def _check(key: str, value) -> None:
    if key == "micro_batch":
        count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        valid, what = value == "auto" or count, "auto, 0 (off) or a number of images"
    elif key == "precision":
        valid, what = value == "bf16" or (type(value) is int and value == 32), "32 or bf16"
    elif key == "channels_last":
        valid, what = isinstance(value, bool), "true or false"
    elif key == "fuse":
        valid, what = isinstance(value, bool), "true, false or auto"
    else:  # compile: a backend of torch.compile, listed only when needed (a slow import)
        valid = value == "none" or value in _backends()
        what = "none, auto or a torch.compile backend"
        what = what if valid else f"none, auto or one of {_backends()}"
    if not valid:
        name = key if key == "precision" else f"compute.{key}"
        raise UserError(f"{name}={value!r} is invalid: it must be {what}")


def _backends() -> list:
    import torch._dynamo  # noqa: PLC0415 -- only when compiling: it takes seconds to import

    return [*torch._dynamo.list_backends(), "eager", "aot_eager"]


def configure(**values) -> None:
    """Any of ``micro_batch`` (``auto``: sized to the device; ``0``: off, the batches as
    before; ``N``: at most N images per forward), ``precision``, ``channels_last``, ``compile``
    and ``fuse``; the others keep their values."""
    for key, value in values.items():
        if key not in _setting:
            raise TypeError(f"configure() got an unknown setting {key}")
        _check(key, value)
    _setting.update(values)


# compute.fuse and compute.compile ``auto``: compiled on a CPU, where it measured faster at the
# CPU preset's shapes (BENCHMARKS.md, "Speed work"); on CUDA not measured yet, so off there.
AUTO = {"fuse": (True, False), "compile": ("inductor", "none")}


def from_config(cfg) -> None:
    """The settings of a run's config: ``compute.*`` and ``precision``."""
    compute = dict(cfg.compute)
    for key in compute:
        if key not in _setting or key == "precision":  # precision is a top-level key
            keys = ", ".join(k for k in _setting if k != "precision")
            raise UserError(f"compute.{key} is not a setting: compute has {keys}")
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    for key, (cpu, cuda) in AUTO.items():
        if compute.get(key) == "auto":
            compute[key] = cpu if on_cpu else cuda
    configure(**compute, precision=cfg.precision)


@contextlib.contextmanager
def settings(**values):
    """``configure(**values)`` for the scope of a ``with`` block."""
    before = dict(_setting)
    configure(**values)
    try:
        yield
    finally:
        _setting.update(before)


def micro_batches(micro_batch):
    """``compute.micro_batch`` for the scope of a ``with`` block."""
    return settings(micro_batch=micro_batch)


def setting(key: str):
    return _setting[key]


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on ``device`` under ``precision=bf16`` (and ``enabled``)."""
    bf16 = enabled and _setting["precision"] == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def shaped(images: torch.Tensor) -> torch.Tensor:
    """A batch of images in channels-last memory under ``compute.channels_last``."""
    if _setting["channels_last"] and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def prepared(net: nn.Module) -> nn.Module:
    """``net`` in channels-last memory under ``compute.channels_last`` (in place), compiled by
    ``torch.compile`` with the backend of ``compute.compile`` (a wrapper sharing its weights)."""
    if _setting["channels_last"]:
        net.to(memory_format=torch.channels_last)
    if _setting["compile"] == "none":
        return net
    return torch.compile(net, backend=_setting["compile"])


def per_sample(net: nn.Module) -> bool:
    """Whether splitting a batch changes nothing but rounding: no BatchNorm using batch
    statistics, no norm updating running statistics, no dropout drawing random numbers."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training or not m.track_running_stats:
                return False
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm):
            if m.training and m.track_running_stats:
                return False
        elif isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            return False
    return True


@torch.no_grad()
def _largest_activation(net: nn.Module, output: str, probe: torch.Tensor) -> int:
    """Bytes per image of the largest tensor any submodule returns (one probe forward of two
    images: norms in training mode refuse a batch of one with 1x1 feature maps)."""
    sizes = [probe.numel() * probe.element_size()]

    def record(module, inputs, result):
        if torch.is_tensor(result):
            sizes.append(result.numel() * result.element_size())

    hooks = [m.register_forward_hook(record) for m in net.modules()]
    try:
        getattr(net, output)(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes) // len(probe)


def _footprint(net: nn.Module, probe: torch.Tensor, output: str) -> int:
    key = (repr(net), tuple(probe.shape[1:]), probe.dtype, output)
    if key not in _footprints:
        _footprints[key] = _largest_activation(net, output, probe)
    return _footprints[key]


def size(net: nn.Module, images: torch.Tensor, output: str = "forward", cap=LIMIT) -> int:
    """Images per forward of ``getattr(net, output)`` on ``images`` under the setting, at most
    ``cap`` (None: no bound) unless the net is not per-sample (then always the whole batch)."""
    net = getattr(net, "_orig_mod", net)  # a compiled net: probe the net itself, uncompiled
    if not per_sample(net):
        return len(images)
    whole = len(images) if cap is None else min(len(images), cap)
    setting = _setting["micro_batch"]
    if setting == 0 or len(images) < 2:
        return whole
    if setting != "auto":
        return min(setting, whole)
    probe = images[:2]  # a tensor, also for images read from disk (cmidd.data.storage.DiskImages)
    if probe.device.type != "cpu":
        return whole
    return max(2, min(whole, CPU_BUDGET_BYTES // _footprint(net, probe, output)))


def _slices(n: int, step: int) -> list:
    """Rows 0..n in the fewest near-equal parts of at most ``step`` (100 at 64: 50 + 50, not
    64 + 36) and of two rows at least (norms in training mode refuse one image with 1x1 feature
    maps), as slices: images read from disk are indexed by slices only."""
    count = max(1, min(-(-n // max(step, 1)), n // 2))
    q, r = divmod(n, count)
    ends = [(k + 1) * q + min(k + 1, r) for k in range(count)]
    return [slice(end - q - (k < r), end) for k, end in enumerate(ends)]


@torch.no_grad()
def infer(net: nn.Module, images, output: str = "forward") -> torch.Tensor:
    """``getattr(net, output)(images)`` without autograd, ``size(...)`` images at a time, in
    float32 whatever ``precision`` computes them in."""
    forward, parts = getattr(net, output), []
    for rows in _slices(len(images), size(net, images, output)):
        x = shaped(images[rows])
        with autocast(x.device):
            out = forward(x)
        parts.append(out.float() if out.dtype == torch.bfloat16 else out)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _weighted_losses(net: nn.Module, images: torch.Tensor, loss, mixed: bool):
    """``loss(net(part), rows)`` of each micro-batch, weighted by its share of the batch: their
    sum is the whole batch's mean ``loss``. Consumed one at a time, only one part's activations
    are alive at once. ``mixed``: the forwards under ``precision`` (the backward is not)."""

    def part_loss(rows):
        x = shaped(images[rows])
        with autocast(x.device, enabled=mixed):
            return loss(net(x), rows)

    rows = _slices(len(images), size(net, images, cap=None))  # training batches had no bound
    if len(rows) == 1:
        yield part_loss(slice(None))
        return
    for part in rows:
        yield part_loss(part) * ((part.stop - part.start) / len(images))


def backward(net: nn.Module, images: torch.Tensor, loss, mixed: bool = False) -> None:
    """Accumulates the gradients of ``loss(net(images), rows)``, a mean over the batch's
    ``rows``, into the parameters, from micro-batches sized as ``infer``'s; ``mixed``: the
    forwards in ``precision`` (evaluation training)."""
    for part in _weighted_losses(net, images, loss, mixed):
        part.backward()


def gradient(net: nn.Module, images: torch.Tensor, loss, params: list) -> tuple:
    """``torch.autograd.grad`` of the same mean loss with respect to ``params`` (no graph kept),
    from micro-batches sized as ``infer``'s."""
    total = None
    for part in _weighted_losses(net, images, loss, mixed=False):
        grads = torch.autograd.grad(part, params)
        total = grads if total is None else tuple(a + g for a, g in zip(total, grads, strict=True))
    return total
