"""The paper's ablations as Hydra multiruns, their report, and the cluster launchers."""

import csv
import itertools
import json
import subprocess
import sys

import pytest
from conftest import CONF, ROOT, TINY
from hydra import compose, initialize_config_dir

# Pools of 2 tiny proxies per architecture; weights pinned per proxy for the digits tables.
SWEEP_TINY = [o for o in TINY if not o.startswith("proxy.net.width")]


def launch(tmp_path, cache, *overrides, ok=True, drop=()):
    """Run launch.py at tiny scale, leaving out the tiny overrides whose keys are in ``drop``."""
    sweep_dir = tmp_path / "sweep"
    tiny = [o for o in SWEEP_TINY if o.split("=")[0] not in drop]
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags come before overrides
    overrides = [o for o in overrides if not o.startswith("-")]
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *flags,
            *tiny,
            f"cache_dir={cache}",
            f"hydra.sweep.dir={sweep_dir}",
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir, done


def report(sweep_dir):
    done = subprocess.run(
        [sys.executable, "-m", "cmidd.report", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return (sweep_dir / "report.md").read_text()


def sweep_grid(name):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.study == name
    params = cfg.hydra.sweeper.params
    return [
        dict(zip(params, values, strict=True))
        for values in itertools.product(*(str(v).split(",") for v in params.values()))
    ]


def test_presets_define_the_papers_grids():
    table7 = sweep_grid("table7")
    assert len(table7) == 8 and {g["proxy"] for g in table7} == {"convnet", "resnet18"}
    assert {g["cmi.space"] for g in table7} == {"probability", "feature"}
    weights = [float(g["cmi.weight"]) for g in sweep_grid("weight")]
    assert weights[0] == 0 and max(weights) / min(w for w in weights if w) >= 100
    assert {g["cmi"] for g in sweep_grid("curve")} == {"none", "feature"}
    table6 = sweep_grid("table6")
    assert {g["plugin"] for g in table6} == {"none", "iid", "dream", "seqmatch"}
    assert {g["method"] for g in table6} == {"dm", "idm", "idc", "mtt"} and len(table6) == 32
    assert {g["proxy"] for g in sweep_grid("proxy_arch")} == {
        "convnet",
        "alexnet",
        "vgg11",
        "resnet18",
    }


@pytest.mark.slow  # 8 runs, about a minute on 2 cores: CI runs it (pytest -m slow)
def test_table7_sweep_and_its_report(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=table7", "proxy.recipe.epochs=1")
    text = report(sweep_dir)
    table = text.split("## table7")[1].split("##")[0]
    rows = [
        line
        for line in table.splitlines()
        if line.startswith("| probability") or line.startswith("| feature")
    ]
    assert len(rows) == 4 and "missing" not in table and "failed" not in table
    assert "| CMI space | pre-trained | convnet | resnet18 |" in table
    with open(sweep_dir / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 8


@pytest.mark.slow  # 20 s on 2 cores; the suite stays under 10 minutes: CI runs it (pytest -m slow)
def test_weight_sweep_plots_accuracy_against_the_weight(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=weight", "cmi.weight=0,10,100,auto")
    text = report(sweep_dir)
    assert "| 0.0 |" in text or "| 0 |" in text
    assert "| auto (ratio 0.4, freeze 10): " in text  # with the weight it chose
    assert "\n- auto (ratio 0.4, freeze 10): " in text  # its verdict against weights 0, 10, 100
    assert "points against the best fixed weight" in text
    assert (sweep_dir / "weight.png").stat().st_size > 1000


@pytest.mark.slow  # over a minute on 2 cores: CI runs it (pytest -m slow)
def test_curve_sweep_over_seeds_groups_runs_that_differ_by_seed(tmp_path, cache):
    sweep_dir, _ = launch(
        tmp_path, cache, "sweep=curve", "seed=0,1", drop=("iterations", "eval.every")
    )
    jobs = sorted(
        p.parent.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob("results.json")
    )
    # <overrides without the seed>/seed=<seed>: the two seeds of a setting sit side by side
    assert [j.split("/")[1] for j in jobs] == ["seed=0", "seed=1"] * 2
    assert jobs[0].split("/")[0] == jobs[1].split("/")[0] and jobs[0].startswith("cmi=feature,")
    assert jobs[2].startswith("cmi=none,")
    curve = json.loads((sweep_dir / jobs[3] / "results.json").read_text())["accuracy_curve"]
    assert [p["iteration"] for p in curve] == list(range(0, 201, 20))  # demo: 200 iterations
    text = report(sweep_dir)
    for setting in ("cmi=feature,", "cmi=none,"):
        assert any(
            line.startswith(f"| {setting}") and "| 0, 1 |" in line for line in text.splitlines()
        )
    assert (sweep_dir / "curve.png").stat().st_size > 1000


@pytest.mark.slow  # over a minute on 2 cores: CI runs it (pytest -m slow)
def test_proxy_arch_sweep_reports_cmi_at_start_and_end(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=proxy_arch", "proxy.pool_size=1")
    table = report(sweep_dir).split("## proxy_arch")[1].split("##")[0]
    for proxy in ("convnet", "alexnet", "vgg11", "resnet18"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {proxy} "))
        assert "missing" not in row, row
        start, end_without, end_with = (float(c) for c in row.split("|")[2:5])
        assert min(start, end_without, end_with) >= 0
        # On 8x8 digits, instance norm zeroes ResNet-18's and VGG-11's 1x1 maps: their outputs
        # can be identical within a class, and the CMI exactly 0 (docs/configuration.md).
        if proxy in ("convnet", "alexnet"):
            assert start > 0 and end_without > 0 and end_with > 0


@pytest.mark.slow  # a 3-job sweep in a subprocess (20 s on 2 cores): CI runs it (pytest -m slow)
def test_a_failed_job_does_not_stop_the_others_and_says_why(tmp_path, cache):
    # dataset=imagefolder (no root, no weight for it in the table) fails inside its job.
    sweep_dir, done = launch(tmp_path, cache, "-m", "dataset=imagefolder,digits", ok=False)
    (failed,) = [p for p in sweep_dir.iterdir() if p.name.startswith("dataset=imagefolder")]
    reason = (failed / "seed=0" / "error.txt").read_text().strip().splitlines()[-1]
    assert (
        reason == "error: dataset.loader.root=??? is not set and has no default: add "
        "dataset.loader.root=<value> to the command"
    )
    # The job logs its one line (no traceback); the sweep goes on, then lists it and exits 2.
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{failed.name}/seed=0: {reason}" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: 1 job(s) of the sweep failed (above)"
    (done_dir,) = [p for p in sweep_dir.iterdir() if p.name.startswith("dataset=digits")]
    assert (done_dir / "seed=0" / "results.json").exists()
    text = report(sweep_dir)
    assert f"{failed.name}/seed=0`: missing: {reason}" in text


@pytest.mark.slow  # 25 s each on 2 cores: CI runs them (pytest -m slow)
@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_cluster_launchers_run_a_sweep(tmp_path, cache, launcher):
    pytest.importorskip(
        {
            "submitit_local": "hydra_plugins.hydra_submitit_launcher",
            "joblib": "hydra_plugins.hydra_joblib_launcher",
        }[launcher]
    )
    extra = (
        ["hydra.launcher.timeout_min=10"]
        if launcher == "submitit_local"
        else ["hydra.launcher.n_jobs=2"]
    )
    sweep_dir, _ = launch(tmp_path, cache, "-m", f"hydra/launcher={launcher}", *extra, "seed=0,1")
    assert len(list(sweep_dir.rglob("results.json"))) == 2


def test_report_on_an_empty_or_missing_directory_is_a_one_line_error(tmp_path):
    for target in (tmp_path, tmp_path / "nope"):
        done = subprocess.run(
            [sys.executable, "-m", "cmidd.report", str(target)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a 2-job multirun with W&B (22 s): the default suite stays under 10 minutes
def test_runs_of_a_sweep_share_a_wandb_group_and_carry_tags(tmp_path, cache):
    sweep_dir, _ = launch(
        tmp_path, cache, "sweep=curve", "logger=wandb", "logger.mode=offline", drop=("logger",)
    )
    run_files = sorted(sweep_dir.rglob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2
    for run_file in run_files:
        done = subprocess.run(
            ["wandb", "leet", "inspect", "--json", str(run_file)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        (run,) = [
            json.loads(line)["run"]
            for line in done.stdout.splitlines()
            if json.loads(line).get("type") == "run"
        ]
        assert run["run_group"] == sweep_dir.name
        assert {"study:curve", "method:dm", "dataset:digits", "ipc:10"} <= set(run["tags"])


def test_a_long_override_list_still_makes_a_valid_distinct_directory_name():
    from cmidd.config import job_dir

    long = ",".join(f"method.algorithm.key_{i}={i}" for i in range(30))
    other = long.replace("key_29=29", "key_29=30")
    assert len(job_dir(long).encode()) <= 200 and job_dir(long) != job_dir(other)
    assert job_dir("cmi=none,seed=1") == "cmi=none,seed=1"


def table_rows(text: str, study: str) -> list:
    table = text.split(f"## {study}")[1].split("##")[0]
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    ]


@pytest.mark.slow  # 42 s: the Table 1 multirun (kept out of the default run's 10-minute budget)
def test_table1_sweep_lays_out_coresets_methods_cmi_rows_and_deltas(tmp_path, cache):
    algorithm = ("method.algorithm.batch_real", "method.algorithm.net.width")  # DM's own sizes
    sweep_dir, _ = launch(
        tmp_path, cache, "sweep=table1", "method=random,herding,dm", "loss_every=1", drop=algorithm
    )
    rows = table_rows(report(sweep_dir), "table1")
    assert rows[0] == ["method", "digits IPC 10"]
    assert [r[0] for r in rows[1:]] == ["Random", "Herding", "DM", "DM + CMI", "Δ"]
    assert all("±" in r[1] for r in rows[1:5]) and rows[5][1][0] in "+-"
    # The coresets' cmi=feature jobs were skipped, not failed, and are not reported as problems.
    skipped = [
        p
        for p in sweep_dir.rglob("results.json")
        if json.loads(p.read_text())["status"].startswith("skipped")
    ]
    text = report(sweep_dir)
    assert len(skipped) == 2 and "Failed or missing" not in text
    assert "4 of 6 runs finished, 2 skipped" in text
    assert (sweep_dir / "loss.png").stat().st_size > 0  # Figure 5, from the DM runs' losses
    everything = table_rows(text, "All runs")
    assert [r[-1] for r in everything if "cmi=feature" in r[0] and "method=dm" not in r[0]] == [
        "skipped",
        "skipped",
    ]
    # Figure 5 needs the loss curves: recorded in results.json at the loss_every stride.
    dm = [
        json.loads(p.read_text()) for p in sweep_dir.rglob("results.json") if "method=dm" in str(p)
    ]
    assert all([q["iteration"] for q in r["loss_curve"]] == [1, 2, 3] for r in dm)


@pytest.mark.slow  # 25 s on 2 cores (4 architectures x 2 runs): CI runs it (pytest -m slow)
def test_table5_sweep_reports_each_architecture_with_and_without_cmi(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=table5", "method=dm", "eval.epochs=1")
    rows = table_rows(report(sweep_dir), "table5")
    assert rows[0] == ["method", "convnet", "alexnet", "vgg11", "resnet18"]
    assert [r[0] for r in rows[1:]] == ["DM", "DM + CMI", "Δ"]
    assert all(c[0] in "+-" for c in rows[3][1:])


@pytest.mark.slow  # a multirun with curve points (21 s): the default suite stays under 10 minutes
def test_curve_report_plots_the_distillation_loss(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=curve", "loss_every=1")
    report(sweep_dir)
    assert (sweep_dir / "loss.png").stat().st_size > 1000


def test_table6_lays_out_each_technique_against_its_base_with_and_without_cmi(tmp_path):
    from cmidd.report.runs import Run
    from cmidd.report.tables import table6

    def run(plugin, weight, seed, nets, method="dm"):
        config = {
            "method": {"name": method},
            "plugin": {"name": plugin},
            "dataset": {"name": "cifar10_jpg"},
            "ipc": 10,
            "cmi": {"weight": weight},
        }
        accuracy = {"convnet": {"mean": sum(nets) / len(nets), "runs": nets}}
        return Run(tmp_path, "k", seed, "finished", {"accuracy": accuracy, "config": config})

    runs = [
        run("none", 0, 0, [0.40]),
        run("none", 0, 1, [0.42]),
        run("none", 300, 0, [0.44]),
        run("iid", 0, 0, [0.45]),
        run("iid", 300, 0, [0.46, 0.48]),
        run("dream", 0, 0, [0.5], method="idc"),  # its base and +CMI runs are missing
        Run(tmp_path, "k", 0, "skipped: plugin=dream does not plug into method=dm"),
    ]
    rows = table_rows("## table6\n" + table6(runs), "table6")
    assert rows[0][:4] == ["technique", "dataset", "IPC", "base"]
    dream, iid = rows[1:]
    assert iid[:3] == ["IID on DM", "cifar10_jpg", "10"]
    assert iid[3] == "41.00 ± 1.41"  # two seeds: std over seeds
    assert iid[4:7] == ["44.00 ± 0.00", "45.00 ± 0.00", "47.00 ± 1.00"]  # one seed: over nets
    assert iid[7] == "+2.00 (1 seed: not established)"
    assert dream[0] == "DREAM on IDC" and dream[3:5] == ["missing", "missing"]
    assert dream[7] == "missing"


@pytest.mark.slow  # 6 jobs, 2 of them skipped (about 30 s): CI runs it (pytest -m slow)
def test_table6_sweep_skips_what_does_not_apply_and_reports_the_technique(tmp_path, cache):
    sweep_dir, _ = launch(tmp_path, cache, "sweep=table6", "method=dm", "plugin=none,iid,dream")
    text = report(sweep_dir)
    assert "4 of 6 runs finished, 2 skipped" in text
    rows = table_rows(text, "table6")
    assert [r[0] for r in rows[1:]] == ["IID on DM"]
    assert all("±" in c for c in rows[1][3:7]) and rows[1][7][0] in "+-"
