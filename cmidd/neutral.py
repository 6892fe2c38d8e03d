"""Config keys that steer how a run is done, not what it computes.

One list, used three ways: they are left out of run directory names (``exclude_keys`` in
conf/config.yaml, which Hydra needs spelled out; tests/test_config.py checks it against this
list), out of the report's job keys (cmidd/report/runs.py), and not checked when a checkpoint is
resumed (cmidd/checkpoint.py). Entries ending in ``.`` are prefixes of a group's keys.
"""

HOW = (
    "logger",
    "device",
    "compute.",  # speed only; results differ by rounding (cmidd/batching.py)
    "checkpoint.",
    "cache_dir",
    "data_root",
)
