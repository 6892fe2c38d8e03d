"""The plug-in techniques (plugin=iid|dream|seqmatch): their defining behaviour on constructed
cases, and each on its base methods through the real config."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cmidd.components import components
from cmidd.errors import UserError
from cmidd.plugins.base import class_rows
from cmidd.plugins.dream import representatives
from cmidd.plugins.iid import centralization, covariance, covariance_gap, feature_map
from cmidd.runtime import generator
from cmidd.tasks import distill

# ---- IID -------------------------------------------------------------------------------------


def test_iid_covariance_is_the_per_position_sample_covariance_summed_over_positions():
    maps = torch.randn(7, 3, 5, dtype=torch.float64)
    expected = sum(
        torch.cov(maps[:, :, p].T, correction=0) for p in range(maps.shape[2])
    )  # C x C per position, (1/n) normalization
    assert torch.allclose(covariance(maps), expected)


def test_iid_terms_vanish_where_their_targets_are_met_and_not_elsewhere():
    real = torch.randn(16, 4, 9)
    assert covariance_gap(real, real.clone()) == 0
    # A shift of every sample leaves the covariance as it is: L_CM matches spread, not mean.
    assert covariance_gap(real, real + 3.0).abs() < 1e-4
    assert covariance_gap(real, 2 * real) > 0
    same = torch.randn(1, 6).expand(5, 6)
    assert centralization(same) < 1e-10
    spread = torch.randn(5, 6)
    expected = sum((f - spread.mean(0)).pow(2).sum() for f in spread)
    assert torch.allclose(centralization(spread), expected)


def test_iid_covariance_uses_the_convnet_feature_map():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 6, 3))
    flat = torch.randn(2, 6 * 16)
    assert feature_map(net, flat).shape == (2, 6, 16)


def test_iid_adds_its_terms_to_dm_and_idm_with_their_own_weights(tiny):
    cfg = tiny("method=dm", "plugin=iid", "cmi=none")
    assert (cfg.plugin.technique.centralization, cfg.plugin.technique.covariance) == (0.05, 0.01)
    idm = tiny("method=idm", "plugin=iid")
    assert (idm.plugin.technique.centralization, idm.plugin.technique.covariance) == (0.01, 0.03)
    base, iid = components(tiny("method=dm", "cmi=none")), components(cfg)
    losses = []
    for parts in (base, iid):
        parts.method.plugin.begin(0)
        losses.append(next(parts.method.losses(parts.synthetic, 0)).item())
    assert losses[1] > losses[0] > 0  # same nets, batches and draws; IID's terms are >= 0


@pytest.mark.parametrize("method", ["dsa", "idc"])
def test_a_technique_on_a_method_it_does_not_plug_into_is_a_one_line_error(app_error, method):
    status, line = app_error(f"method={method}", "plugin=iid")
    assert status == 2
    assert line == f"error: plugin=iid does not plug into method={method}: it plugs into dm, idm"


def test_the_technique_is_a_wandb_tag(tiny):
    from cmidd.loggers import run_labels

    assert "plugin:iid" in run_labels(tiny("plugin=iid"))["tags"]
    assert not any(t.startswith("plugin:") for t in run_labels(tiny())["tags"])


def test_table6_sweep_skips_the_combinations_that_do_not_apply(tiny, tmp_path):
    results = distill(tiny("method=dm", "plugin=dream", "plugin.unsupported=skip"), tmp_path)
    assert results["status"].startswith("skipped: plugin=dream does not plug into method=dm")


# ---- DREAM -----------------------------------------------------------------------------------


def test_dream_selects_the_sample_nearest_each_kmeans_centre():
    # Three tight clusters, each with one point exactly at its centre of mass.
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    points = []
    for c in centres:
        ring = torch.randn(8, 2, generator=gen, dtype=torch.float64)
        ring = ring - ring.mean(0)  # the cluster's mean is c exactly
        points += [c.clone()] + list(c + 0.5 * ring)
    features = torch.stack(points)
    chosen = representatives(features, 3, seed=0)
    assert sorted(chosen.tolist()) == [0, 9, 18]  # the points at the centres
    assert representatives(features[:2], 3, seed=0).tolist() == [0, 1]  # fewer than asked: all


def test_dream_matches_representatives_of_the_current_net_and_reclusters_on_its_interval(
    tiny, monkeypatch
):
    import cmidd.plugins.dream as dream

    calls = []
    real_representatives = dream.representatives

    def counting(features, n, seed):
        calls.append(n)
        return real_representatives(features, n, seed)

    monkeypatch.setattr(dream, "representatives", counting)
    cfg = tiny(
        "method=idc",
        "plugin=dream",
        "cmi=none",
        "ipc=1",
        "method.algorithm.inner_loop=5",
        "method.algorithm.n_data=16",
        "plugin.technique.interval=2",
    )
    assert cfg.plugin.technique.clusters == 128  # DREAM's real batch for IDC
    parts = components(cfg)
    classes = parts.real.num_classes
    assert calls == [1 * 4] * classes  # the initial set: IPC x factor^2 representatives
    calls.clear()
    plugin, method = parts.method.plugin, parts.method
    plugin.begin(0)
    steps = method.losses(parts.synthetic, 0)
    for _ in range(5):
        next(steps)
    assert calls == [128] * classes * 3  # steps 0, 2 and 4 of the 5
    # The matched real images are the chosen representatives of the class.
    chosen = plugin.chosen[0]
    assert torch.equal(plugin.real_batch(method, 0, None), parts.real.train[0][chosen])


def test_dream_starts_from_representatives_of_an_untrained_net(tiny):
    cfg = tiny("method=dsa", "plugin=dream", "cmi=none")
    parts = components(cfg)
    net = parts.method.fresh_network("dream/init").eval()
    real = parts.real.train[0]
    with torch.no_grad():
        features = net.embed(real)
    first_seed = int(torch.randint(2**31 - 1, (1,), generator=generator(cfg.seed, "dream/kmeans")))
    expected = real[representatives(features, cfg.ipc, first_seed)]
    assert torch.equal(parts.synthetic.images[parts.synthetic.labels == 0], expected)
    random = components(tiny("method=dsa", "cmi=none")).synthetic
    assert not torch.equal(random.images[random.labels == 0], expected)


# ---- SeqMatch --------------------------------------------------------------------------------


def test_subsets_split_every_class_like_the_reference():
    labels = torch.arange(2).repeat_interleave(50)
    masks = class_rows(labels, 3)
    assert [int(m[:50].sum()) for m in masks] == [17, 17, 16]
    assert torch.stack(masks).sum(0).eq(1).all()  # every image in exactly one subset


def test_seqmatch_freezes_earlier_subsets_and_keeps_them_in_the_student_batches(mtt, tmp_path):
    cfg = mtt("plugin=seqmatch", "ipc=10", "iterations=4", "cmi.weight=1", "checkpoint.every=1")
    parts = components(cfg)
    plugin = parts.method.plugin
    assert plugin.starts == [[0, 1], [1, 3]]  # later start epochs for the second subset
    first, second = class_rows(parts.synthetic.labels, 2)
    stage = plugin.stage(parts.synthetic, 3)
    assert torch.equal(stage.visible, first | second) and torch.equal(stage.trainable, second)
    assert plugin.stage(parts.synthetic, 1).visible.equal(first) and stage.batch == 50
    for iteration, used in ((0, first), (3, first | second)):  # the images the student sees
        parts.synthetic.images.grad = None
        next(parts.method.losses(parts.synthetic, iteration)).backward()
        seen = parts.synthetic.images.grad.flatten(1).abs().sum(1) > 0
        assert torch.equal(seen, used)

    from cmidd.distill import Distillation
    from cmidd.loggers import NullLogger

    start = parts.synthetic.images.detach().clone()
    run = Distillation(
        parts.synthetic,
        parts.method,
        parts.optimizer,
        4,
        instantiate(cfg.eval),
        parts.real,
        cfg.seed,
        tmp_path,
        NullLogger(),
        cmi=parts.cmi,
    )
    run._step(0)
    run._step(1)
    middle = parts.synthetic.images.detach().clone()
    assert not torch.equal(middle[first], start[first])  # stage 1 trains subset 1 ...
    assert torch.equal(middle[second], start[second])  # ... and leaves the later one alone
    run._step(2)
    run._step(3)
    end = parts.synthetic.images.detach()
    assert torch.equal(end[first], middle[first])  # frozen, momentum and CMI notwithstanding
    assert not torch.equal(end[second], middle[second])
    # (the experts are built now) every subset needs an image of every class
    with pytest.raises(UserError, match=r"plugin.technique.subsets=11 is invalid: .*ipc=10"):
        components(mtt("plugin=seqmatch", "cmi=none", "plugin.technique.subsets=11"))


@pytest.mark.slow  # three tiny runs and a proxy pool (about 45 s): CI runs it (pytest -m slow)
def test_a_run_with_a_technique_resumes_exactly(tiny, tmp_path, monkeypatch):
    from test_resume import RESUMABLE, crash_at, final_images

    from cmidd.methods import DM

    cfg = [*RESUMABLE, "plugin=iid", "eval.every=0"]
    distill(tiny(*cfg), tmp_path / "whole")
    restore = crash_at(monkeypatch, DM, 5)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*cfg), tmp_path / "resumed")
    restore()
    distill(tiny(*cfg), tmp_path / "resumed")  # the proxy draws go on where they stopped
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "resumed"))
