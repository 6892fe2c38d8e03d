"""Seconds per training step of the proxy nets at the cpu_cifar10 width (32), to size a pool.

One SGD step on a batch of 256 random 3x32x32 images, the nets alternating so that they share
the machine's noise; the first step of each net is a warm-up. Usage:
``python benchmarks/proxy_step.py [--width 32] [--steps 3]``.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from cmidd.nets import AlexNet, ConvNet, ResNet18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    nets = {
        "convnet": ConvNet(3, 10, 32, width=args.width),
        "alexnet": AlexNet(3, 10, 32, width=args.width),
        "resnet18": ResNet18(3, 10, 32, norm="instance", width=args.width),
    }
    x, y = torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))
    optimizers = {
        k: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9) for k, n in nets.items()
    }
    times = {k: [] for k in nets}
    for step in range(args.steps + 1):
        for name, net in nets.items():
            start = time.perf_counter()
            optimizers[name].zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizers[name].step()
            if step:
                times[name].append(time.perf_counter() - start)
    base = sum(times["convnet"]) / args.steps
    for name, t in times.items():
        mean = sum(t) / args.steps
        epoch = mean * 50_000 / 256 / 60
        print(
            f"{name}-{args.width}: {mean:.3f} s/step ({mean / base:.1f}x convnet), "
            f"{epoch:.1f} min per 50,000-image epoch, {torch.get_num_threads()} threads"
        )


if __name__ == "__main__":
    main()
