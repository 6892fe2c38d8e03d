"""Where the paper-shape DM + CMI iteration's time goes, plain and with compute.fuse: DM's loss
with its backward, and the CMI term (a ResNet-18 proxy) with its backward, alternating, after one
untimed round that compiles.

    OMP_NUM_THREADS=1 python benchmarks/fuse_profile.py [--device cpu] [--rounds 2]
"""

import argparse
import statistics
import time

from hydra import compose, initialize_config_dir
from measure import ROOT, sync
from specs import PAPER_SHAPE

from cmidd import batching
from cmidd.components import components


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        overrides = [*PAPER_SHAPE, "method=dm", f"device={args.device}", "logger=none"]
        parts = components(compose("config", overrides=overrides))
    synthetic = parts.synthetic

    def dm(iteration):
        for loss in parts.method.losses(synthetic, iteration):
            synthetic.images.grad = None
            loss.backward()

    def cmi(iteration):
        synthetic.images.grad = None
        parts.cmi(*synthetic.decoded(), proxy=parts.cmi.draw()).backward()

    seconds = {}
    for r in range(args.rounds + 1):
        for name, work in (("dm", dm), ("cmi", cmi)):
            for fuse in (False, True):
                with batching.settings(fuse=fuse):
                    sync(parts.device)
                    tic = time.perf_counter()
                    work(r)
                    sync(parts.device)
                if r:  # round 0 compiles
                    seconds.setdefault((name, fuse), []).append(time.perf_counter() - tic)
    for (name, fuse), times in seconds.items():
        print(f"{name:4s} {'fused' if fuse else 'plain'}: {statistics.fmean(times):.3f} s")


if __name__ == "__main__":
    main()
