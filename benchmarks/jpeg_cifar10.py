"""Run a reference codebase's script on the CIFAR-10 JPEG copy, which has no torchvision
download: torchvision's CIFAR10 is replaced by an ImageFolder over the unpacked copy (the same
class order: CIFAR-10's names sort alphabetically) before the script is run.

    CIFAR10_JPEG=<cache>/data/cifar10-jpg python benchmarks/jpeg_cifar10.py <script.py> [args]

``REF_TRAIN_PER_CLASS=N`` keeps the first N training images of each class (a proxy's
pre-training at a small scale). The script runs in its own folder, with it and its parent on
``sys.path`` (the CMI reference's DC-DSA-DM imports ``pretrain.networks``)."""

import os
import runpy
import sys

from torchvision import datasets


class JpegCIFAR10(datasets.ImageFolder):
    def __init__(self, root, train=True, download=False, transform=None, **kwargs):
        folder = os.path.join(os.environ["CIFAR10_JPEG"], "train" if train else "test")
        super().__init__(folder, transform=transform)
        keep = int(os.environ.get("REF_TRAIN_PER_CLASS", "0"))
        if train and keep:
            counts, samples = {}, []
            for path, label in self.samples:
                counts[label] = counts.get(label, 0) + 1
                if counts[label] <= keep:
                    samples.append((path, label))
            self.samples = self.imgs = samples
            self.targets = [label for _, label in samples]


if __name__ == "__main__":
    datasets.CIFAR10 = JpegCIFAR10
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    os.chdir(os.path.dirname(script))
    sys.path[:0] = [os.path.dirname(script), os.path.dirname(os.path.dirname(script))]
    runpy.run_path(script, run_name="__main__")
