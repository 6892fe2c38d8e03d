"""What each section of benchmarks/run.py measures: the full CPU-scale settings on the CIFAR-10
copy (``FULL``) and the same pipeline on tiny digits (``QUICK``, for the tests)."""

# The paper's shape of one run (CIFAR-10, ConvNet-128, IPC 10, 256 real images per class, a
# ResNet-18 proxy, untrained: the timing does not depend on its weights).
PAPER_SHAPE = [
    "experiment=paper",
    "dataset=cifar10_jpg",
    "cmi.pretrained=false",
    "proxy.pool_size=1",
]

FULL = {
    "overrides": ["experiment=cpu_cifar10"],
    "methods": ["dm", "dsa"],
    "seeds": [0, 1, 2],
    "every": 5,
    "every_methods": ["dm"],
    "cost_iterations": {"dm": 20, "dsa": 5, "mtt": 6},
    "eval_epochs": (10, 30),
    "memory": {"classes": 100, "ipc": 50},
    "paper_eval": True,
    # One MTT iteration at CIFAR-10 IPC 10's shape (ConvNet-128 student, 100 images per step).
    "mtt_memory": {"classes": 10, "ipc": 10, "steps": [10, 20, 30], "width": 128},
    "storage_iterations": 20,  # DM with the real images in memory, on disk, streamed
    # The DM+CMI iteration at the paper's shape, fused classes against class by class.
    "paper_step": {"overrides": [*PAPER_SHAPE, "method=dm"], "iterations": 4},
    # Micro-batched forwards (compute.micro_batch) against the batches before issue 21.
    "speed": {
        "iterations": {
            "dm_paper": ([*PAPER_SHAPE, "method=dm"], 3),
            # 2 outer steps of 5 inner epochs instead of the paper's 10 of 50 (minutes on a CPU)
            "dsa_paper": ([*PAPER_SHAPE, "method=dsa", "method.algorithm.loops=[2,5]"], 2),
            "dm_cpu_cifar10": (["experiment=cpu_cifar10", "method=dm"], 6),
            "dsa_cpu_cifar10": (["experiment=cpu_cifar10", "method=dsa"], 2),
        },
        "small": ["experiment=cpu_cifar10", "method=dm"],
        "repeats": 2,
        "proxy_images": 10240,
    },
    # compute.fuse and compute.compile (inductor) against the plain path, alternating.
    "fuse": {
        "iterations": {
            "dm_paper": ([*PAPER_SHAPE, "method=dm"], 3),
            "dm_cpu_cifar10": (["experiment=cpu_cifar10", "method=dm", "cmi.weight=300"], 6),
            "dsa_cpu_cifar10": (["experiment=cpu_cifar10", "method=dsa", "cmi.weight=3000"], 2),
        },
        "evaluations": {"evaluation_cpu_cifar10": ["experiment=cpu_cifar10", "method=dm"]},
        "repeats": 2,
    },
    # The GPU options (precision=bf16, compute.channels_last, compute.compile) against float32.
    "speed_options": {
        "iterations": {
            "dm_paper": ([*PAPER_SHAPE, "method=dm"], 5),
            "dm_cpu_cifar10": (["experiment=cpu_cifar10", "method=dm"], 10),
        },
        "evaluations": {
            "evaluation_paper": [*PAPER_SHAPE, "method=dm"],
            "evaluation_cpu_cifar10": ["experiment=cpu_cifar10", "method=dm"],
        },
        "repeats": 2,
        "compile": "inductor",
        "cpu": False,  # bf16 without CPU support measured 4-9x slower (docs/speed.md)
    },
}
QUICK = {
    "overrides": [
        "dataset=digits",
        "iterations=4",
        "eval.models=2",
        "eval.epochs=2",
        "eval.every=2",
        "method.algorithm.batch_real=16",
        "method.algorithm.net.width=8",
        "eval.nets.convnet.width=8",
        "proxy.net.width=8",
        "proxy.pool_size=2",
        "proxy.recipe.epochs=1",
        "method.algorithm.loops=[1,2]",
        "cmi.weight=100",
    ],
    "methods": ["dm", "dsa"],
    "seeds": [0, 1],
    "every": 2,
    "every_methods": ["dm"],
    "cost_iterations": {"dm": 4, "dsa": 2},
    "eval_epochs": (1, 2),
    "memory": {"classes": 10, "ipc": 5},
    "paper_eval": False,
    "mtt_memory": {"classes": 10, "ipc": 2, "steps": [1, 2], "width": 8},
    "storage_iterations": None,  # digits are held in memory only
    "paper_step": {
        "overrides": [
            "dataset=digits",
            "method=dm",
            "method.algorithm.batch_real=16",
            "cmi.weight=100",
            "cmi.pretrained=false",
            "proxy.pool_size=1",
            "proxy.net.width=8",
        ],
        "iterations": 2,
    },
    "speed": {
        "iterations": {
            "dm_digits": (
                ["dataset=digits", "method=dm", "cmi.weight=100", "proxy.net.width=8"]
                + ["proxy.pool_size=2", "proxy.recipe.epochs=1"],
                2,
            )
        },
        "small": ["dataset=digits", "eval.epochs=2", "eval.nets.convnet.width=8"],
        "repeats": 1,
        "proxy_images": 256,
    },
    "speed_options": {
        "iterations": {
            "dm_digits": (
                ["dataset=digits", "method=dm", "cmi=none", "method.algorithm.batch_real=16"]
                + ["method.algorithm.net.width=8"],
                1,
            )
        },
        "evaluations": {
            "evaluation_digits": ["dataset=digits", "eval.epochs=2", "eval.nets.convnet.width=8"]
        },
        "repeats": 1,
        "compile": "eager",  # the wiring, without inductor's compilation time
        "cpu": True,
    },
}
