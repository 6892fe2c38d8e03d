"""cmi.weight=auto: the weight is ratio * ||grad L_DD|| / ||grad CMI|| on the trained images,
frozen after calibration or tracked, and reaches results.json and the checkpoint."""

import csv
import io
import json

import pytest
import torch

from cmidd.cmi_weight import AutoWeight
from cmidd.components import components
from cmidd.distill import Distillation

AUTO = ["cmi.weight=auto", "cmi.auto.ratio=0.5"]


def _loop(parts, tmp_path, iterations=0):
    return Distillation(parts, iterations, tmp_path)


def _steps(auto, *norm_pairs):
    """One iteration of steps with gradients of the given norms; the weights used."""
    used = [auto.update(torch.tensor([a]), torch.tensor([b])) for a, b in norm_pairs]
    auto.end_iteration()
    return used


def test_freeze_averages_the_first_iterations_then_keeps_the_weight():
    auto = AutoWeight(ratio=0.5, mode="freeze", calibrate=2)
    assert _steps(auto, (3.0, 1.0)) == pytest.approx([1.5])
    # the second iteration's steps (values 0.5 and 1.5, mean 1.0) against the first's 1.5
    assert _steps(auto, (1.0, 1.0), (3.0, 1.0)) == pytest.approx([1.0, 1.25])
    assert auto.frozen and auto.value == pytest.approx(1.25)
    assert _steps(auto, (100.0, 1.0)) == pytest.approx([1.25])


def test_calibration_counts_iterations_not_steps():
    auto = AutoWeight(ratio=1.0, mode="freeze", calibrate=2)
    _steps(auto, *[(1.0, 1.0)] * 5)
    assert auto.count == 1 and not auto.frozen


def test_track_is_a_bias_corrected_moving_average_of_iterations():
    auto = AutoWeight(ratio=1.0, mode="track", momentum=0.5)
    assert _steps(auto, (2.0, 1.0)) == pytest.approx([2.0])
    # (0.5 * (0.5 * 2) + 0.5 * 4) / (1 - 0.5**2), the iteration's value 4 the mean of 3 and 5
    assert _steps(auto, (3.0, 1.0), (5.0, 1.0))[-1] == pytest.approx(2.5 / 0.75)


@pytest.mark.parametrize("bad", [(1.0, 0.0), (0.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))])
def test_a_zero_or_non_finite_gradient_is_not_measured(bad):
    auto = AutoWeight(ratio=1.0, mode="track", momentum=0.0)
    assert _steps(auto, bad) == [0.0] and auto.count == 0
    assert _steps(auto, (2.0, 1.0), bad) == pytest.approx([2.0, 2.0])
    assert auto.count == 1


def test_first_step_weight_and_update_are_the_formulas(tiny, tmp_path):
    """One DM step with auto (calibrated on that step): the weight is the formula's value from
    the two gradients computed apart, and the images move by -lr * (g_DD + weight * g_CMI)."""
    overrides = [*AUTO, "cmi.auto.calibrate=1", "method.optimizer.momentum=0"]
    ref = components(tiny(*overrides))
    images = ref.synthetic.images
    before = images.detach().clone()
    (g_dd,) = torch.autograd.grad(next(iter(ref.method.losses(ref.synthetic, 0))), images)
    proxy = ref.cmi.draw()
    (g_cmi,) = torch.autograd.grad(ref.cmi(*ref.synthetic.decoded(), proxy=proxy), images)
    weight = 0.5 * g_dd.norm() / g_cmi.norm()

    parts = components(tiny(*overrides))
    losses = _loop(parts, tmp_path)._step(0)
    assert losses["cmi/weight"] == pytest.approx(weight.item(), rel=1e-5)
    assert parts.cmi.auto.frozen
    lr = parts.optimizer.param_groups[0]["lr"]
    expected = before - lr * (g_dd + weight * g_cmi)
    torch.testing.assert_close(parts.synthetic.images.detach(), expected, rtol=1e-4, atol=1e-5)


class _Scaled:
    """A method whose losses are multiplied by ``scale`` from iteration ``start`` on."""

    def __init__(self, method, scale, start):
        self.method, self.scale, self.start = method, scale, start

    def __getattr__(self, name):
        return getattr(self.method, name)

    def losses(self, synthetic, iteration):
        factor = self.scale if iteration >= self.start else 1.0
        for loss in self.method.losses(synthetic, iteration):
            yield factor * loss


@pytest.mark.parametrize("mode", ["track", "freeze"])
def test_weight_follows_a_change_of_scale_of_the_loss_only_when_tracked(tiny, tmp_path, mode):
    """The same run twice (images held still by lr 0, so every step sees the same batches),
    once with the distillation loss multiplied by 10 from iteration 3: a tracked weight rises
    towards 10 times the other's, a frozen one (calibrated before) does not move."""
    overrides = [*AUTO, f"cmi.auto.mode={mode}", "cmi.auto.momentum=0.5"]
    overrides += ["cmi.auto.calibrate=3", "method.optimizer.lr=0"]
    weights = []
    for scale in (1.0, 10.0):
        parts = components(tiny(*overrides))
        parts.method = _Scaled(parts.method, scale, start=3)
        loop = _loop(parts, tmp_path)
        weights.append([loop._step(i)["cmi/weight"] for i in range(9)])
    ratios = [b / a for a, b in zip(*weights, strict=True)]
    assert ratios[:3] == pytest.approx([1.0] * 3)
    if mode == "freeze":
        assert ratios == pytest.approx([1.0] * 9)
    else:
        assert 1.0 < ratios[3] < ratios[5] < ratios[8]
        assert ratios[8] == pytest.approx(10.0, rel=0.05)


def test_a_loss_ten_times_larger_gets_a_weight_ten_times_larger(tiny, tmp_path):
    weights = []
    for scale in (1.0, 10.0):
        parts = components(tiny(*AUTO, "cmi.auto.calibrate=1"))
        parts.method = _Scaled(parts.method, scale, start=0)
        weights.append(_loop(parts, tmp_path)._step(0)["cmi/weight"])
    assert weights[1] == pytest.approx(10 * weights[0], rel=1e-5)


def test_results_and_loss_curve_carry_the_weight(tiny, tmp_path):
    from cmidd import app

    results = app.run(tiny(*AUTO, "cmi.auto.calibrate=2", "loss_every=1"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    curve = [p["weight"] for p in saved["loss_curve"]]
    assert len(curve) == 3 and curve[0] > 0 and curve[1] == curve[2]  # frozen after 2 steps
    assert saved["cmi"]["weight"] == pytest.approx(curve[-1])
    assert results["cmi"]["weight"] == saved["cmi"]["weight"]
    assert saved["config"]["cmi"]["weight"] == "auto"


def test_fixed_weight_runs_record_their_weight(tiny, tmp_path):
    from cmidd import app

    app.run(tiny("cmi.weight=7"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["cmi"]["weight"] == 7.0
    assert "weight" not in saved["loss_curve"][0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cmi.weight=Auto", "cmi.weight=Auto is invalid: it must be a number >= 0 or auto"),
        ("cmi.auto.mode=fast", "cmi.auto.mode=fast is invalid: it must be one of freeze, track"),
        ("cmi.auto.ratio=0", "cmi.auto.ratio=0 is invalid: it must be a positive number"),
        ("cmi.auto.momentum=1", "cmi.auto.momentum=1 is invalid: it must be < 1"),
        ("cmi.auto.calibrate=0", "cmi.auto.calibrate=0 is invalid: it must be an integer >= 1"),
    ],
)
def test_bad_auto_settings_are_one_line_errors(app_error, override, message):
    code, line = app_error("cmi.weight=auto", override)  # the last override wins
    assert code == 2 and message in line


def test_weight_report_and_plot_show_auto_with_the_weights_it_chose(tmp_path):
    from cmidd.report.plots import loss_plot, weight_plot
    from cmidd.report.runs import Run
    from cmidd.report.tables import runs_csv
    from cmidd.report.weight import weight

    def run(setting, used, acc, seed=0):
        config = {
            "cmi": {"weight": setting, "auto": {"ratio": 0.3, "mode": "freeze", "calibrate": 10}}
        }
        val = {"mean": acc, "runs": [acc]}  # validation as test: this test is about auto's rows
        results = {
            "accuracy": {"convnet": {"mean": acc, "runs": [acc], "val": val}},
            "cmi": {"weight": used},
            "loss_curve": [{"iteration": 1, "distill": 1.0, "cmi": 0.1, "total": 1.1}],
            "config": config,
        }
        return Run(tmp_path / f"{setting}{seed}", "k", seed, "finished", results)

    runs = [run(0.0, 0.0, 0.40), run(300, 300, 0.44), run("auto", 250, 0.43)]
    runs += [run("auto", 350, 0.45, seed=1)]
    rows = weight(runs).splitlines()[2:]
    assert rows[0].startswith("| 0.0 | 40.00") and rows[1].startswith("| 300 (best on valid")
    assert rows[2] == (
        "| auto (ratio 0.3, freeze 10): 300 [250, 350] | 44.00 ± 1.41 | 44.00 ± 1.41 |"
    )
    table = csv.DictReader(io.StringIO(runs_csv(runs, tmp_path)))
    assert [[row["cmi_weight"], row["cmi_weight_used"]] for row in table] == [
        ["0.0", "0.0"],
        ["300", "300"],
        ["auto", "250"],
        ["auto", "350"],
    ]
    weight_plot(runs, tmp_path / "weight.png")
    loss_plot(runs, tmp_path / "loss.png")
    assert (tmp_path / "weight.png").stat().st_size > 1000


def test_weight_report_gives_a_table_and_auto_verdict_per_setting(tmp_path):
    from cmidd.report.plots import weight_plot
    from cmidd.report.runs import Run
    from cmidd.report.weight import weight

    def run(proxy, setting, acc, seed=0, mode="freeze", status="finished"):
        auto = {"ratio": 0.4, "mode": mode, "calibrate": 10, "momentum": 0.9}
        config = {"cmi": {"weight": setting, "auto": auto}}
        entry = {"mean": acc, "runs": [acc]}
        results = {"accuracy": {"convnet": {**entry, "val": entry}}, "config": config}
        # as job keys keep them: auto's own overrides only on auto runs, prefixes kept
        extra = f"++cmi.auto.mode={mode}," if setting == "auto" else ""
        key = f"{extra}cmi.weight={setting},proxy={proxy}"
        return Run(tmp_path / f"{proxy}{setting}{seed}", key, seed, status, results)

    runs = [run("alexnet", w, a) for w, a in [(0, 0.40), (10, 0.43), (100, 0.42)]]
    runs += [run("alexnet", "auto", 0.426), run("alexnet", "auto", 0.428, seed=1)]
    runs += [run("alexnet", "auto", 0.425, mode="track")]  # exactly 0.5 points below: within
    runs += [run("convnet", w, a) for w, a in [(0, 0.40), (300, 0.45), (1000, 0.39)]]
    runs += [run("convnet", 1000, None, seed=1, status="failed: diverged")]
    runs += [run("convnet", "auto", 0.395)]
    text = weight(runs)
    alexnet, convnet = text.split("### ")[1:]
    assert alexnet.startswith("proxy=alexnet\n") and convnet.startswith("proxy=convnet\n")
    freeze, track = [line for line in alexnet.splitlines() if line.startswith("- auto")]
    # within 0.5 of the best fixed weight (10: 43 %) and above the base (40 %)
    assert freeze.startswith("- auto (ratio 0.4, freeze 10): on validation, -0.30 points against")
    assert "(10), +2.70 against the base (weight 0): meets both criteria" in freeze
    assert track.startswith("- auto (ratio 0.4, track 0.9): on validation, -0.50 points")
    assert track.endswith("meets both criteria")
    assert convnet.rstrip().endswith(
        "falls short: more than 0.5 points below the best fixed weight and below the base "
        "(runs finished: 1000: 1 of 2)"
    )
    assert "| 300 (best on validation) | 45.00 ± 0.00 | 45.00 ± 0.00 |" in convnet
    assert "| 300 " not in alexnet
    # without a base there is nothing to compare with
    assert "not comparable" in weight([r for r in runs if r.get("cmi.weight") != 0])
    weight_plot(runs, tmp_path / "weight.png")  # a panel per setting
    assert (tmp_path / "weight.png").stat().st_size > 1000


@pytest.mark.slow  # two crashes and resumes (7 s): CI runs it (pytest -m slow)
@pytest.mark.parametrize("mode", ["track", "freeze"])
def test_a_resumed_auto_run_goes_on_with_the_same_weight(tiny, tmp_path, monkeypatch, mode):
    from test_resume import crash_at, final_images

    from cmidd.methods import DM
    from cmidd.tasks import distill

    overrides = [*AUTO, f"cmi.auto.mode={mode}", "cmi.auto.calibrate=6"]
    overrides += ["iterations=8", "checkpoint.every=2", "loss_every=1"]
    whole = distill(tiny(*overrides), tmp_path / "whole")
    restore = crash_at(monkeypatch, DM, 5)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*overrides), tmp_path / "resumed")
    restore()
    resumed = distill(tiny(*overrides), tmp_path / "resumed")
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "resumed"))
    weights = [[p["weight"] for p in r["loss_curve"]] for r in (whole, resumed)]
    assert weights[0] == weights[1]
    assert resumed["cmi"]["weight"] == whole["cmi"]["weight"]


# 7 tiny runs (12 s): CI runs it (pytest -m slow); the default suite has dm, idc, idm, mtt below.
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dm", "dc", "dsa", "idc", "idm", "mtt", "sre2l"])
def test_every_method_takes_auto_at_the_steps_of_a_fixed_weight(
    method, tiny, mtt, tmp_path, monkeypatch
):
    """auto adds the term where a fixed weight does (the reference's schedule per method), and
    the run ends with a chosen, finite, positive weight."""
    from conftest import compose_config
    from test_cmi_schedule import EXPECTED, ITERATIONS, TINY_LOOPS, count_per_iteration
    from test_sre2l import SRE2L

    common = [f"iterations={ITERATIONS}", "cmi.weight=auto"]
    if method == "mtt":
        cfg = mtt(*common)
    elif method == "sre2l":
        cfg = compose_config([*SRE2L, *common], cache_dir=tmp_path / "cache")
    else:
        cfg = tiny(f"method={method}", *TINY_LOOPS[method], *common)
    counts = count_per_iteration(cfg, tmp_path, monkeypatch)
    if method in EXPECTED:
        assert counts == EXPECTED[method]
    weight = json.loads((tmp_path / "results.json").read_text())["cmi"]["weight"]
    assert 0 < weight < float("inf")


ONE_STEP = {  # one image update per iteration, so a chosen weight can be replayed as fixed
    "dm": [],
    "idc": ["method.algorithm.inner_loop=1", "method.algorithm.n_data=16"],
    "idm": ["method.algorithm.train_batch=32", "method.algorithm.train_steps=1"],
    "mtt": None,
}


@pytest.mark.parametrize("method", sorted(ONE_STEP))
def test_auto_updates_the_set_as_the_fixed_weight_it_chose(method, tiny, mtt, tmp_path):
    """Through IDC's and IDM's decoded tiles and MTT's learned lr too: the update with auto
    equals the update of a run with the chosen weight fixed."""

    def one_step(weight):
        if method == "mtt":
            cfg = mtt("cmi.weight=1", "cmi.auto.calibrate=1")
        else:
            cfg = tiny(f"method={method}", *ONE_STEP[method], "cmi.weight=1")
        cfg.cmi.weight = "auto" if weight == "auto" else 1
        parts = components(cfg)
        if weight != "auto":
            parts.cmi.fixed = weight
        losses = _loop(parts, tmp_path)._step(0)
        learned = [parts.synthetic.lr] if method == "mtt" else []
        return losses, [parts.synthetic.images.detach(), *learned]

    losses, with_auto = one_step("auto")
    chosen = losses["cmi/weight"]
    assert chosen > 0
    for auto, fixed in zip(with_auto, one_step(chosen)[1], strict=True):
        torch.testing.assert_close(auto, fixed, rtol=1e-5, atol=1e-6)


def test_seqmatch_measures_the_gradients_of_the_subset_it_trains(mtt, tmp_path, monkeypatch):
    rows, update = [], AutoWeight.update
    monkeypatch.setattr(
        AutoWeight, "update", lambda self, d, c: rows.append((len(d), len(c))) or update(self, d, c)
    )
    parts = components(mtt("plugin=seqmatch_shared", "ipc=10", "iterations=4", "cmi.weight=auto"))
    loop = _loop(parts, tmp_path, iterations=4)
    for iteration in range(4):
        loop._step(iteration)
    assert rows == [(50, 50)] * 4  # of 100 images: subset 1, then subset 2 (subset 1 frozen)


def test_checkpoints_from_before_auto_still_resume():
    from cmidd.checkpoint import differing_keys

    auto = {"ratio": 0.4, "mode": "freeze", "calibrate": 10, "momentum": 0.9}
    before = {"cmi": {"weight": 300}, "plugin": {"name": "none"}}
    assert differing_keys(before, {"cmi": {"weight": 300, "auto": auto}, **before}) == []
    changed = {"cmi": {"weight": 300, "auto": {**auto, "ratio": 1.0}}}
    assert differing_keys({"cmi": {"weight": 300, "auto": auto}}, changed) == []
    now_auto = {"cmi": {"weight": "auto", "auto": auto}}
    assert differing_keys(before, {**before, **now_auto})[0] == "cmi.auto.calibrate"
    assert differing_keys(now_auto, {"cmi": {"weight": "auto", "auto": changed["cmi"]["auto"]}})


def test_cmi_none_with_auto_is_the_baseline(tiny, tmp_path):
    parts = components(tiny("cmi=none", "cmi.weight=auto"))
    assert parts.cmi is None or not parts.cmi.active
