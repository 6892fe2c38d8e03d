"""Proxy pools: built once, reloaded from the cache, checked against the run's data."""

import json
from pathlib import Path

import pytest
import torch

from cmidd import pretrained
from cmidd.components import load_real
from cmidd.pretrained import StoreError
from cmidd.tasks import build_pretrained


def pretrain(cfg, out_dir):
    return build_pretrained(cfg, out_dir, "proxy")


def proxy_pool(cfg, real, device):
    if not cfg.cmi.pretrained:
        return pretrained.random_pool(cfg.proxy, real, device)
    return pretrained.get("proxy", cfg, real, device)


def location(cfg, real, kind):
    return pretrained.location(kind, cfg, real)


def test_build_then_reload_gives_the_same_frozen_eval_mode_proxies(tiny, tmp_path):
    cfg = tiny("proxy.recipe.epochs=20")
    real = load_real(cfg, "cpu")
    summary = pretrain(cfg, tmp_path)
    assert len(summary["test_accuracy"]) == 2 and all(a > 0.2 for a in summary["test_accuracy"])
    directory = location(cfg, real, "proxy")
    meta = json.loads((directory / "proxy_000.json").read_text())
    assert {
        "net",
        "num_classes",
        "image_size",
        "mean",
        "std",
        "recipe",
        "test_accuracy",
        "seed",
        "sha256",
    } <= set(meta)
    mtime = (directory / "proxy_000.pt").stat().st_mtime_ns
    cfg.proxy.build_if_missing = False
    pool = proxy_pool(cfg, real, "cpu")  # loads, trains nothing
    assert (directory / "proxy_000.pt").stat().st_mtime_ns == mtime
    assert len(pool) == 2 and all(not net.training for net in pool.nets)
    assert all(not p.requires_grad for net in pool.nets for p in net.parameters())
    x = real.train[0][:4]
    again = proxy_pool(cfg, real, "cpu")
    assert torch.equal(pool.first.embed(x), again.first.embed(x))


def test_missing_pool_names_the_command_that_builds_it(tiny):
    cfg = tiny("proxy.build_if_missing=false")
    with pytest.raises(StoreError, match="python launch.py task=pretrain .*proxy.pool_size=2"):
        proxy_pool(cfg, load_real(cfg, "cpu"), "cpu")


def test_pool_for_other_data_or_a_corrupt_file_is_refused_then_rebuilt(tiny, tmp_path):
    cfg = tiny("proxy.build_if_missing=false")
    real = load_real(cfg, "cpu")
    pretrain(cfg, tmp_path)
    directory = location(cfg, real, "proxy")
    meta_path = directory / "proxy_001.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "num_classes": 100}))
    with pytest.raises(StoreError, match="num_classes=100.*num_classes=10"):
        proxy_pool(cfg, real, "cpu")
    meta_path.write_text(json.dumps(meta))
    weights = directory / "proxy_001.pt"
    intact = weights.read_bytes()
    weights.write_bytes(intact[:100])
    with pytest.raises(StoreError, match="corrupt.*task=pretrain"):
        proxy_pool(cfg, real, "cpu")
    pretrain(cfg, tmp_path)  # the command the error names retrains the broken proxy only
    assert weights.read_bytes() == intact
    assert len(proxy_pool(cfg, real, "cpu")) == 2


def test_untrained_pool_varies_its_initializations(tiny, cache):
    cfg = tiny("cmi.pretrained=false", "proxy.pool_size=3")
    pool = proxy_pool(cfg, load_real(cfg, "cpu"), "cpu")
    weights = [next(net.parameters()) for net in pool.nets]
    assert len(pool) == 3 and not torch.equal(weights[0], weights[1])
    assert not (cache / "proxies").exists()  # nothing was trained or cached


def test_launcher_reports_a_missing_pool_in_one_line_with_exit_status_2(cache, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, TINY

    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *TINY,
            f"cache_dir={cache}",
            "proxy.build_if_missing=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: proxy pool") and "python launch.py task=pretrain" in line


@pytest.mark.slow  # two launcher processes (14 s on 2 cores): CI runs it (pytest -m slow)
def test_two_processes_building_one_pool_train_each_proxy_once(cache, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT, TINY

    command = [sys.executable, "launch.py", *TINY, "task=pretrain", f"cache_dir={cache}"]
    jobs = [
        subprocess.Popen(
            [*command, f"hydra.run.dir={tmp_path / str(k)}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(2)
    ]
    logs = [job.communicate(timeout=300)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs), logs
    trained = sum(log.count("trained: test accuracy") for log in logs)
    assert trained == 2  # proxy.pool_size=2, each trained by exactly one of the processes
    pools = {
        json.loads((tmp_path / str(k) / "pretrained.json").read_text())["directory"]
        for k in range(2)
    }
    assert len(pools) == 1
    assert sorted(p.name for p in Path(pools.pop()).iterdir()) == [
        "proxy_000.json",
        "proxy_000.pt",
        "proxy_001.json",
        "proxy_001.pt",
    ]


def test_cache_directory_names_are_stable():
    # Pinned: a change of the naming would orphan every pool and buffer already built.
    from cmidd.pretrained.store import store_dir

    data = {"dataset": "cifar10", "num_classes": 10}
    spec = {"net": {"width": 32}, "recipe": {"epochs": 5}, "seed": 0}
    assert store_dir("/c", data, "convnet", spec).as_posix() == "/c/cifar10/convnet-87fe749e18"


def test_truncated_metadata_is_refused_naming_the_file_then_rebuilt_and_reported(
    tiny, tmp_path, caplog
):
    cfg = tiny("proxy.build_if_missing=false")
    real = load_real(cfg, "cpu")
    pretrain(cfg, tmp_path)
    meta_path = location(cfg, real, "proxy") / "proxy_001.json"
    meta_path.write_text(meta_path.read_text()[:40])  # cut off mid-write
    with pytest.raises(StoreError, match=r"proxy_001\.json is unusable .*task=pretrain"):
        proxy_pool(cfg, real, "cpu")
    with caplog.at_level("WARNING"):
        pretrain(cfg, tmp_path)
    assert "proxy_001.pt is unusable (metadata proxy_001.json: JSONDecodeError" in caplog.text
    assert "rebuilding it" in caplog.text
    assert len(proxy_pool(cfg, real, "cpu")) == 2


def test_a_build_that_waits_for_another_says_so(tmp_path, caplog):
    import threading

    from filelock import FileLock

    from cmidd.pretrained.store import Store

    store = Store(tmp_path / "pool", "proxy", "proxy pool", "proxy.pool_size")
    store.directory.mkdir()
    held = FileLock(str(store.directory) + ".lock")
    held.acquire()
    built = []
    with caplog.at_level("INFO"):
        worker = threading.Thread(
            target=lambda: built.extend(
                store.build(1, {"dataset": "x"}, lambda i: ({"w": torch.zeros(1)}, {}))
            )
        )
        worker.start()
        worker.join(timeout=2)
        assert worker.is_alive() and "waiting for another run" in caplog.text
        held.release()
        worker.join(timeout=30)
    assert len(built) == 1 and built[0]["index"] == 0
