"""What a run is made of, built from config: the real data, the method with the pre-trained
networks it declares (``method.needs``) and its plug-in technique (``plugin.needs``), the CMI
term, the synthetic set and its optimizer."""

import hashlib
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import batching, pretrained
from .cmi_weight import weighted
from .errors import UserError
from .runtime import generator, resolve_device, seed_everything
from .storage import Storage
from .validate import check_config, check_data, check_zca
from .whitening import whiten

log = logging.getLogger(__name__)


def storage(cfg: DictConfig) -> Storage:
    """Where the real images will live (``dataset.storage``); a disk cache is named by the
    loader's options (the data's place and transform included)."""
    loader = OmegaConf.to_container(cfg.dataset.loader, resolve=True)
    key = hashlib.sha1(json.dumps(loader, sort_keys=True, default=str).encode()).hexdigest()
    folder = Path(cfg.data_root).expanduser() / "decoded" / f"{cfg.dataset.name}-{key[:10]}"
    data = cfg.dataset
    return Storage(data.storage, data.memory_budget_gb, folder, data.workers, data.disk_budget_gb)


def load_real(cfg: DictConfig, device):
    log.info("loading dataset %s", cfg.dataset.name)
    try:
        real = instantiate(cfg.dataset.loader, device=device, storage=storage(cfg))
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, UserError):  # a layout problem, already naming its path
            raise cause from error
        raise UserError(
            f"dataset={cfg.dataset.name} could not be loaded: {cause} "
            f"(data_root={cfg.data_root}, download={cfg.download})"
        ) from error
    check_zca(cfg)
    if cfg.zca.enabled:
        log.info("ZCA-whitening the data (eps %g)", cfg.zca.eps)
        real = whiten(real, cfg.zca.eps)
    return real


def keep_baseline(cfg: DictConfig) -> None:
    """A weight given for the CMI runs of a sweep (cmi=none,feature cmi.weight=100) must not turn
    the baseline into a CMI run; the recorded config then says what ran."""
    if cfg.cmi.name == "none" and cfg.cmi.get("weight") != 0:
        log.warning(
            "cmi=none: ignoring cmi.weight=%s (the baseline runs without CMI)",
            cfg.cmi.get("weight"),
        )
        cfg.cmi.weight = 0.0


def proxy_pool(cfg: DictConfig, real, device):
    """The run's proxy pool: untrained networks for ``cmi.pretrained=false``, else the cached,
    pre-trained pool of ``proxy=...``."""
    if not cfg.cmi.pretrained:
        return pretrained.random_pool(cfg.proxy, real, device)
    return pretrained.get("proxy", cfg, real, device)


def cmi_term(cfg: DictConfig, real, device, pool=None):
    """The run's CMI term (``cmi=...``) on its proxy pool (``pool`` if the method has loaded it
    already); without a pool (and weight 0) CMI is simply not measured (None)."""
    weight = cfg.cmi.weight
    if weighted(weight) and cfg.ipc == 1 and cfg.method.get("factor", 1) == 1:
        warnings.warn(
            f"cmi.weight={weight} at ipc=1 with method={cfg.method.name}: every class has "
            "one image, so it is its own centroid and the CMI term is identically 0",
            stacklevel=2,
        )
    if pool is None:
        try:
            pool = proxy_pool(cfg, real, device)
        except pretrained.StoreError:
            if weighted(weight):
                raise
            log.warning("no proxy pool for this run: cmi.start and cmi.end are not measured")
            return None
    return instantiate(cfg.cmi)(pool=pool, generator=generator(cfg.seed, "proxy"))


def components(cfg: DictConfig, real=None) -> SimpleNamespace:
    """Everything a distillation run needs (also used by benchmarks/run.py)."""
    keep_baseline(cfg)
    check_config(cfg, strict=False)
    device = resolve_device(cfg.device)
    batching.from_config(cfg)
    seed_everything(cfg.seed)
    real = load_real(cfg, device) if real is None else real
    check_data(cfg, real)
    check_config(cfg)  # the table lookups left for after the data
    method_needs, plugin_needs = cfg.method.get("needs", []), cfg.plugin.get("needs", [])
    kinds = dict.fromkeys([*method_needs, *plugin_needs])  # each once, in a fixed order
    needs = {k: pretrained.get(k, cfg, real, device) for k in kinds}
    method = instantiate(cfg.method.algorithm)(
        real=real, seed=cfg.seed, device=device, **{k: needs[k] for k in method_needs}
    )
    technique = instantiate(cfg.plugin.technique)(
        seed=cfg.seed, **{k: needs[k] for k in plugin_needs}
    )
    technique.attach(method)
    cmi = cmi_term(cfg, real, device, needs.get("proxy") if cfg.cmi.pretrained else None)
    learn_lr = cfg.method.get("synthetic_lr")  # a learnable training lr, distilled with the images
    synthetic = method.initial_set(
        real,
        cfg.ipc,
        generator(cfg.seed, "init"),
        cfg.method.init,
        cfg.method.get("factor", 1),
        None if learn_lr is None else learn_lr.init,
    )
    groups = [{"params": [synthetic.images]}]
    if learn_lr is not None:
        groups.append({"params": [synthetic.lr], "lr": learn_lr.lr})
    optimizer = instantiate(cfg.method.optimizer)(groups)
    schedule = cfg.method.get("schedule")  # of the optimizer's lr, per iteration (SRe2L)
    return SimpleNamespace(
        device=device,
        real=real,
        method=method,
        cmi=cmi,
        synthetic=synthetic,
        optimizer=optimizer,
        scheduler=None if schedule is None else instantiate(schedule)(optimizer),
    )
