"""Config keys that steer how a run is done, not what it computes.

One list, used three ways: they are left out of run directory names (``exclude_keys`` in
conf/config.yaml, which Hydra needs spelled out key by key; tests/test_config.py checks that it
names each of them and each key under them), out of the report's job keys
(cmidd/report/runs.py), and not checked when a checkpoint is resumed (cmidd/checkpoint.py). Each
entry is a prefix: ``logger`` covers ``logger=none`` and ``logger.group=...``; ``compute.`` the
keys of that group only.
"""

HOW = (
    "logger",
    "device",
    "compute.",  # speed only; results differ by rounding (cmidd/batching.py)
    "checkpoint.",
    "cache_dir",
    "data_root",
)
