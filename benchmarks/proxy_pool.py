"""Seconds per epoch of the proxy recipe for several proxy architectures, to size a pool before
building one (e.g. ResNet-18 proxies at CPU scale, issue 20).

    python benchmarks/proxy_pool.py -- experiment=cpu_cifar10 device=cpu
    python benchmarks/proxy_pool.py --proxies convnet,resnet18 --images 1024 -- dataset=digits

One epoch over ``--images`` real training images per architecture, the architectures
alternating so that they share the machine's noise (benchmarks/speed.py), and each pool's time
extrapolated to ``proxy.pool_size`` networks x ``proxy.recipe.epochs`` over the training set.
"""

import argparse
import json

import torch
from hydra import compose, initialize_config_dir
from measure import ROOT
from speed import proxy_pool_speed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", default="convnet,alexnet,resnet18", help="proxy options")
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        result = proxy_pool_speed(
            lambda o: compose(config_name="config", overrides=list(o)),
            ["logger=none", *args.overrides],
            args.proxies.split(","),
            args.images,
            args.repeats,
        )
    print(json.dumps({"threads": torch.get_num_threads(), **result}, indent=2))


if __name__ == "__main__":
    main()
