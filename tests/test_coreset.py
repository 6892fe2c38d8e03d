"""The coreset baselines of Table 1: what each selects on tiny constructed cases, and end to end."""

import json

import pytest
import torch
from conftest import BASE, compose_config

from cmidd.methods.coreset import forgetting_events, herding, k_center
from cmidd.synthetic import SyntheticSet
from cmidd.tasks import distill


@pytest.fixture
def coreset(cache):
    """A coreset method at tiny scale (coresets have no method.algorithm sizes to shrink)."""
    return lambda *overrides: compose_config([*BASE, *overrides], cache_dir=cache)


def test_herding_picks_the_point_closest_to_the_mean_first_then_tracks_the_mean():
    features = torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.3, 0.8], [-4.0, 0.0], [0.0, 3.0]])
    mean = features.mean(0)  # (0.06, 0.76): point 2 is nearest
    order = herding(features, 3).tolist()
    assert order[0] == int((features - mean).norm(dim=1).argmin()) == 2
    # The second pick brings the mean of the two picks closest to the class mean.
    best = min(
        (i for i in range(5) if i != 2),
        key=lambda i: (mean - (features[2] + features[i]) / 2).norm(),
    )
    assert order[1] == best and len(set(order)) == 3
    assert herding(features, 10).tolist() == herding(features, 5).tolist()  # at most n, no repeats


def test_k_center_picks_the_farthest_point_from_those_chosen():
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 5.0], [0.0, -3.0]])
    order = k_center(features, 3, first=0).tolist()
    assert order[:2] == [0, 2]  # the second is the farthest from the first
    # The third maximizes the distance to the nearer of the two: (5, 5), not (0, -3).
    assert order[2] == 3


def test_forgetting_counts_transitions_from_correct_to_wrong():
    correct = torch.tensor(
        [[1, 1, 0, 1], [0, 1, 0, 1], [1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.bool
    )
    # example 0 forgotten twice; 1 never; 2 never learned (counts as most, 4 presentations); 3 once
    assert forgetting_events(correct).tolist() == [2, 0, 4, 1]


@pytest.mark.parametrize("method", ["random", "herding", "kcenter", "forgetting"])
def test_a_coreset_is_real_images_of_each_class_evaluated_like_a_set(method, coreset, tmp_path):
    from cmidd.components import load_real

    cfg = coreset(f"method={method}", "ipc=3")
    results = distill(cfg, tmp_path / "run")
    assert results["status"] == "finished" and results["iterations"] == 0
    assert results["config"]["cmi"]["weight"] == 0 and results["cmi"]["start"] is not None
    chosen = SyntheticSet.load(tmp_path / "run" / "synthetic.pt")
    real = load_real(cfg, "cpu")
    for image, label in zip(chosen.images, chosen.labels, strict=True):
        assert (real.train[int(label)] == image).flatten(1).all(1).any()  # a real image of it
    assert chosen.labels.bincount().tolist() == [3] * 10
    assert len({tuple(i.flatten().tolist()) for i in chosen.images}) == 30  # distinct
    again = distill(coreset(f"method={method}", "ipc=3"), tmp_path / "again")
    assert again["accuracy"] == results["accuracy"]  # seeded


def test_a_coreset_with_cmi_is_skipped_and_says_so(coreset, tmp_path):
    results = distill(coreset("method=random", "cmi=feature", "cmi.weight=10"), tmp_path)
    assert results["status"].startswith("skipped: method=random takes no CMI term")
    assert json.loads((tmp_path / "results.json").read_text())["status"] == results["status"]
    assert not (tmp_path / "synthetic.pt").exists()


def test_cpu_preset_runs_coresets_without_iterations():
    for method in ("random", "herding", "kcenter", "forgetting"):
        cfg = compose_config(["experiment=cpu_cifar10", f"method={method}"])
        assert cfg.iterations == 0 and cfg.cmi.name == "none"
