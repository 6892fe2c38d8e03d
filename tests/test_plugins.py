"""The plug-in techniques (plugin=iid|dream|seqmatch): their defining behaviour on constructed
cases, and each on its base methods through the real config."""

import pytest
import torch
from torch import nn

from cmidd.components import components
from cmidd.errors import UserError
from cmidd.plugins.base import class_rows
from cmidd.plugins.dream import kmeans, representatives
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


@pytest.mark.parametrize(("method", "weights"), [("dm", (0.05, 0.01)), ("idm", (0.01, 0.03))])
def test_iid_adds_its_weighted_terms_to_each_class_of_dm_and_idm(tiny, method, weights):
    cfg = tiny(f"method={method}", "plugin=iid", "cmi=none")
    assert (cfg.plugin.technique.centralization, cfg.plugin.technique.covariance) == weights
    base, iid = components(tiny(f"method={method}", "cmi=none")), components(cfg)
    plugin, terms = iid.method.plugin, []

    def spy(c, net, real, syn, syn_images):
        term = type(plugin).class_loss(plugin, c, net, real, syn, syn_images)
        expected = weights[0] * centralization(plugin.proxy.embed(syn_images))
        expected = expected + weights[1] * covariance_gap(
            feature_map(net, real), feature_map(net, syn)
        )
        assert torch.allclose(term, expected) and expected > 0
        terms.append(term.item())
        return term

    plugin.class_loss = spy
    losses = []
    for parts in (base, iid):
        parts.method.plugin.begin(0)
        losses.append(next(parts.method.losses(parts.synthetic, 0)).item())
    # Same nets, batches and draws: IID adds its terms, one per class, and nothing else.
    assert len(terms) == iid.real.num_classes
    assert losses[1] - losses[0] == pytest.approx(sum(terms), rel=1e-4)
    assert plugin.proxy in plugin.pool.nets  # L_CC is in a pre-trained proxy's features


def test_iid_ratio_makes_each_term_a_ratio_of_the_matching_loss_at_iteration_0():
    """The rescaling rule on a constructed case: at iteration 0 each class's centralization term
    is 0.5 x its matching loss; from iteration 1 its weight is 0.5 x sum L_match / sum L_CC of
    iteration 0; the covariance term, without a ratio, keeps its weight throughout."""
    from cmidd.plugins.iid import IID

    class Pool:  # a proxy whose features are the images themselves
        def sample(self, g):
            return type("Proxy", (), {"embed": staticmethod(lambda x: x.flatten(1))})()

    net = nn.Sequential(nn.Conv2d(1, 2, 1))  # feature maps of 2 channels
    g = generator(0, "test")
    data = [
        (torch.randn(6, 8, generator=g), torch.randn(3, 8, generator=g) * (c + 1)) for c in (0, 1)
    ]
    images = [torch.randn(3, 1, 2, 2, generator=g) * (c + 2) for c in (0, 1)]
    iid = IID(0.05, 0.01, seed=0, ratio={"centralization": 0.5, "covariance": None})
    iid.provide(Pool())
    matches = [(r.mean(0) - s.mean(0)).pow(2).sum() for r, s in data]
    terms = [centralization(x.flatten(1)) for x in images]
    gaps = [covariance_gap(feature_map(net, r), feature_map(net, s)) for r, s in data]
    for iteration in (0, 1):
        if iteration == 1:  # resumed from a checkpoint taken after iteration 0
            state, iid = iid.state_dict(), IID(0.05, 0.01, seed=0, ratio=iid.ratio)
            iid.provide(Pool())
            iid.load_state_dict(state)
        iid.begin(iteration)
        for c, ((real, syn), x) in enumerate(zip(data, images, strict=True)):
            weight = (
                0.5 * matches[c] / terms[c] if iteration == 0 else iid.weights["centralization"]
            )
            expected = weight * terms[c] + 0.01 * gaps[c]
            assert torch.allclose(iid.class_loss(c, net, real, syn, x), expected)
    assert iid.weights["centralization"] == pytest.approx(0.5 * sum(matches) / sum(terms))
    assert iid.weights["covariance"] == 0.01


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
    points = []
    for c in torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]):
        ring = torch.randn(8, 2, generator=gen)
        points += [c.clone()] + list(c + 0.5 * (ring - ring.mean(0)))
    features = torch.stack(points)
    centres = kmeans(features, 3, torch.Generator().manual_seed(1))
    chosen = representatives(features, 3, torch.Generator().manual_seed(1))
    for centre, index in zip(centres, chosen, strict=True):  # the nearest sample to each centre
        assert (features - centre).norm(dim=1).argmin() == index
    assert sorted(chosen.tolist()) == [0, 9, 18]  # here: the points at the clusters' means
    few = representatives(features[:2], 3, gen)
    assert few.tolist() == [0, 1]  # no more samples than centres: all of them


def test_dream_matches_representatives_of_the_current_net_and_reclusters_on_its_interval(
    tiny, monkeypatch
):
    import cmidd.plugins.dream as dream

    clustered = []  # (size asked, the net's weights then, the indices chosen)
    representatives_of, embed_of = dream.representatives, dream.embed_all

    def embed_spy(net, images):
        clustered.append([torch.cat([p.flatten() for p in net.parameters()]).clone()])
        return embed_of(net, images)

    def representatives_spy(features, n, gen):
        chosen = representatives_of(features, n, gen)
        clustered[-1] += [n, chosen]
        return chosen

    monkeypatch.setattr(dream, "embed_all", embed_spy)
    monkeypatch.setattr(dream, "representatives", representatives_spy)
    cfg = tiny(
        "method=idc",
        "plugin=dream",
        "cmi=none",
        "ipc=1",
        "method.algorithm.inner_loop=5",
        "method.algorithm.n_data=16",
        "plugin.technique.interval=2",
        "plugin.technique.batch_real=8",
    )
    assert tiny("method=idc", "plugin=dream").plugin.technique.batch_real == 128  # DREAM's
    parts = components(cfg)
    method, classes = parts.method, parts.real.num_classes
    assert method.batch_real == 8  # also the batch IDC trains its network with
    assert [n for _, n, _ in clustered] == [1 * 4] * classes  # the start: IPC x factor^2
    clustered.clear()
    seen, depth, apply = [], [], method.augment.apply  # the batches matching augments

    def apply_spy(x, draw):  # composed augmentations call apply again: keep the outer calls
        if not depth:
            seen.append(x)
        depth.append(1)
        try:
            return apply(x, draw)
        finally:
            depth.pop()

    monkeypatch.setattr(method.augment, "apply", apply_spy)
    method.plugin.begin(0)
    steps = method.losses(parts.synthetic, 0)
    for _ in range(5):
        next(steps)
    assert [n for _, n, _ in clustered] == [8] * classes * 3  # steps 0, 2 and 4 of 5
    weights = [w for w, _, _ in clustered[::classes]]
    assert not torch.equal(weights[0], weights[1])  # the matching net, trained in between
    # Class 0 at step 0 is matched to its representatives (real first, then synthetic, per class).
    assert torch.equal(seen[0], parts.real.train[0][clustered[0][2]])
    assert torch.equal(seen[2 * classes], parts.real.train[0][clustered[0][2]])  # kept at step 1


def test_dream_starts_from_representatives_of_an_untrained_net(tiny):
    cfg = tiny("method=dsa", "plugin=dream", "cmi=none")
    parts = components(cfg)
    net = parts.method.fresh_network("dream/init").eval()
    real = parts.real.train[0]
    with torch.no_grad():
        features = net.embed(real)
    expected = real[representatives(features, cfg.ipc, generator(cfg.seed, "dream/kmeans"))]
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
    cfg = mtt("plugin=seqmatch_shared", "ipc=10", "iterations=4", "cmi.weight=1")
    parts = components(cfg)
    plugin = parts.method.plugin
    assert plugin.starts == [[0, 1], [1, 3]]  # later start epochs for the second subset
    first, second = class_rows(parts.synthetic.labels, 2)
    stage = plugin.stage(parts.synthetic, 3)
    assert torch.equal(stage.visible, first | second) and torch.equal(stage.trainable, second)
    assert plugin.stage(parts.synthetic, 1).visible.equal(first) and stage.batch == 50
    method, starts, sizes = parts.method, [], []
    segment, batches = method.trajectories.segment, method._batches
    method.trajectories.segment = lambda e, start, *a: starts.append(start) or segment(e, start, *a)
    method._batches = lambda n, size: sizes.append((n, size)) or batches(n, size)
    for iteration, used in ((0, first), (3, first | second)):  # the images the student sees
        parts.synthetic.images.grad = None
        next(method.losses(parts.synthetic, iteration)).backward()
        seen = parts.synthetic.images.grad.flatten(1).abs().sum(1) > 0
        assert torch.equal(seen, used)
    assert sizes == [(50, 50), (100, 50)]  # batches of the current subset's size, from the union
    for _ in range(20):
        next(method.losses(parts.synthetic, 3))
    assert starts[0] == 0 and set(starts[1:]) == {1, 2}  # stage 2 starts later on the experts
    method.trajectories.segment, method._batches = segment, batches

    from cmidd.distill import Distillation

    start = parts.synthetic.images.detach().clone()
    run = Distillation(parts, 4, tmp_path)
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
        components(mtt("plugin=seqmatch_shared", "cmi=none", "plugin.technique.subsets=11"))


SEQMATCH = ["plugin=seqmatch", "ipc=10", "iterations=4", "cmi=none"]
STAGE = ["plugin.technique.stage_epochs=3", "plugin.technique.init_epochs=2"]


def test_seqmatch_stage_experts_start_from_the_network_of_the_earlier_subsets(mtt, monkeypatch):
    """The reference's later buffers (buffer.py --reparam_syn): each expert's first weights are
    a fresh network trained on subset 1 at the lr learned in stage 1; then real-data epochs."""
    from cmidd.plugins import stage_experts
    from cmidd.pretrained.experts import flat_parameters
    from cmidd.runtime import build_seeded, generator

    parts = components(mtt(*SEQMATCH, *STAGE))
    method, plugin, synthetic = parts.method, parts.method.plugin, parts.synthetic
    assert plugin.starts == [[0, 3], [0, 2]]  # stage 2 starts on its own 3-epoch buffer
    assert plugin.trajectories(synthetic, 1, method.real) is None  # stage 1: the run's experts
    with torch.no_grad():
        synthetic.lr.fill_(0.02)  # as if stage 1 had learned it
    used = []
    segment = stage_experts.Trajectories.segment
    monkeypatch.setattr(
        stage_experts.Trajectories,
        "segment",
        lambda self, e, start, *a: used.append((id(self), start)) or segment(self, e, start, *a),
    )
    next(method.losses(synthetic, 2))  # stage 2 builds its buffer and matches it
    buffer = plugin.buffers[1]
    assert used[-1][0] == id(buffer) and used[-1][1] in (0, 1)
    assert plugin.lrs == [pytest.approx(0.02)]
    lr = plugin.lrs[0]
    assert len(buffer) == 2 and buffer.epochs == 3
    first = class_rows(synthetic.labels, 2)[0]
    images, labels = synthetic.images[first].detach(), synthetic.labels[first]
    real = method.real
    for i in range(2):
        name = f"seqmatch/stage2/expert/{i}"
        net = build_seeded(plugin.make_net, plugin.setup["seed"], name, **real.net_args)
        fresh = flat_parameters(net)
        augment = plugin.setup["augment"]
        stage_experts.warm_start(
            net, [(images, labels)], [lr], {"epochs": 2}, generator(0, name), augment
        )
        start = buffer.trajectories[i][0]
        assert torch.equal(start, flat_parameters(net)) and not torch.equal(start, fresh)
    assert not torch.equal(buffer.trajectories[0][0], method.trajectories.trajectories[0][0])
    # Cached: the same subsets and lrs find the buffer built, nothing is trained again.
    monkeypatch.setattr(stage_experts, "train_classifier", lambda *a, **k: 1 / 0)
    plugin.buffers = {}
    again = plugin.trajectories(synthetic, 3, real)
    assert torch.equal(again.trajectories[1], buffer.trajectories[1])


def test_seqmatch_resumes_with_the_lrs_of_its_finished_stages(mtt):
    plugin = components(mtt(*SEQMATCH, *STAGE)).method.plugin
    plugin.lrs = [0.03]
    again = components(mtt(*SEQMATCH, *STAGE)).method.plugin
    again.load_state_dict(plugin.state_dict())
    assert again.lrs == [0.03]


@pytest.mark.slow  # three tiny runs and a proxy pool (about 45 s): CI runs it (pytest -m slow)
def test_a_run_with_a_technique_resumes_exactly(tiny, tmp_path, monkeypatch):
    from test_resume import RESUMABLE, crash_at, final_images

    from cmidd.methods import DM

    cfg = [*RESUMABLE, "plugin=iid", "eval.every=0"]
    distill(tiny(*cfg), tmp_path / "whole")
    restore = crash_at(monkeypatch, DM, 5)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*cfg), tmp_path / "resumed")
    saved = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert "generator" in saved["plugin"]  # IID's proxy draws
    restore()
    distill(tiny(*cfg), tmp_path / "resumed")  # the proxy draws go on where they stopped
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "resumed"))


def test_extending_a_seqmatch_run_is_refused_saying_why(tmp_path):
    from cmidd.checkpoint import Checkpointer

    config = {"iterations": 4, "plugin": {"name": "seqmatch", "technique": {"iterations": 4}}}
    checkpointer = Checkpointer(tmp_path / "checkpoint.pt", every=1)
    checkpointer.save({"config": config, "iteration": 4})
    longer = {"iterations": 8, "plugin": {"name": "seqmatch", "technique": {"iterations": 8}}}
    with pytest.raises(UserError, match=r"iterations=4 \(now 8\) \(the technique's stages are"):
        checkpointer.load(longer)


def test_a_seqmatch_run_from_before_the_stage_experts_resumes_as_the_variant():
    from cmidd.checkpoint import differing_keys

    def seqmatch(name, target, **more):
        return {"plugin": {"name": name, "technique": {"_target_": target, "subsets": 2, **more}}}

    old = seqmatch("seqmatch", "cmidd.plugins.SeqMatch")
    assert differing_keys(old, seqmatch("seqmatch_shared", "cmidd.plugins.SeqMatchShared")) == []
    now = seqmatch("seqmatch", "cmidd.plugins.SeqMatch", experts=5)
    assert "plugin.name" in differing_keys(old, now)
