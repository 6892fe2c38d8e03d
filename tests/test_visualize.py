"""task=visualize: the paper's t-SNE figures (1, 7) and the side-by-side grids (4)."""

import json

import pytest
from hydra.utils import instantiate

from cmidd.errors import UserError
from cmidd.tasks import distill


def visualize(cfg, out_dir):
    """The task as the launcher runs it (built from ``task=visualize``)."""
    return instantiate(cfg.task)(cfg, out_dir)


@pytest.fixture
def two_sets(tiny, tmp_path):
    distill(tiny("cmi=none", "iterations=4"), tmp_path / "base")
    distill(tiny("cmi.weight=1e5", "iterations=4"), tmp_path / "cmi")
    return [tmp_path / "base" / "synthetic.pt", tmp_path / "cmi" / "synthetic.pt"]


def test_figures_of_two_sets_with_their_cmi_deterministic_for_a_seed(tiny, two_sets, tmp_path):
    sets = f"sets=[{two_sets[0]},{two_sets[1]}]"
    first = visualize(tiny("task=visualize", sets), tmp_path / "fig1")
    again = visualize(tiny("task=visualize", sets), tmp_path / "fig2")
    for name in ("tsne.png", "grids.png"):
        assert (tmp_path / "fig1" / name).stat().st_size > 5000
        assert (tmp_path / "fig1" / name).read_bytes() == (tmp_path / "fig2" / name).read_bytes()
    assert first == again == json.loads((tmp_path / "fig1" / "visualize.json").read_text())
    cmi = first["cmi"]  # each set labelled by the settings in which their runs differ
    base, reg = "cmi.weight=0.0, cmi.name=none", "cmi.weight=100000.0, cmi.name=feature"
    assert set(cmi) == {base, reg} and set(cmi[base]) == {"feature", "probability"}
    assert cmi[reg]["feature"] < cmi[base]["feature"]  # the regularized set, lower CMI
    assert 0 < first["pixel_difference"]["mean_abs"] < first["pixel_difference"]["max_abs"]


def test_one_set_draws_its_tsne_only_and_bad_input_is_one_line(tiny, two_sets, tmp_path):
    visualize(tiny("task=visualize", f"sets=[{two_sets[0]}]"), tmp_path / "one")
    assert (tmp_path / "one" / "tsne.png").exists() and not (
        tmp_path / "one" / "grids.png"
    ).exists()
    with pytest.raises(UserError, match="task=visualize needs sets="):
        visualize(tiny("task=visualize"), tmp_path / "none")
    with pytest.raises(UserError, match="task.proxy_index=5"):
        visualize(
            tiny("task=visualize", f"sets=[{two_sets[0]}]", "task.proxy_index=5"), tmp_path / "bad"
        )
