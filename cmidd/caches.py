"""Where a run's cached networks live, from its config: the proxy pool (``proxy=...``, built by
``task=pretrain``) and the expert buffer (``expert=...``, built by ``task=buffer``)."""
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .errors import UserError
from .experts import build_experts, expert_store, load_trajectories
from .proxy import build_pool, load_pool, random_pool
from .store import store_dir

log = logging.getLogger(__name__)
# Overrides that decide a cache's contents, kept in the command that builds it: these groups and
# keys with everything under them, and the choice of method and IPC (which pick the data's ZCA
# and a preset's per-method settings, conf/scale/<experiment>/<method>.yaml).
KEEP = ("dataset", "experiment", "cache_dir", "data_root", "zca")
KEEP_EXACT = ("method", "ipc")
SUBDIR = {"proxy": "proxies", "expert": "experts"}  # <cache_dir>/<subdir>/ per cached group


def location(cfg: DictConfig, real, group: str) -> Path:
    """The cache directory of ``cfg.<group>`` (proxy or expert) for the run's data."""
    node = cfg[group]
    # The loader's settings except where the files are (a moved dataset keeps its caches).
    loader = {k: v for k, v in OmegaConf.to_container(cfg.dataset.loader, resolve=True).items()
              if k not in ("root", "archive", "train", "test")}
    spec = {"net": OmegaConf.to_container(node.net, resolve=True),
            "recipe": OmegaConf.to_container(node.recipe, resolve=True), "seed": node.seed}
    return store_dir(Path(cfg.cache_dir) / SUBDIR[group], {**real.meta, "loader": loader},
                     node.name, spec)


def _kept(override: str, group: str) -> bool:
    key = override.lstrip("+~").split("=")[0]
    return key.split(".")[0] in (*KEEP, group) or key in KEEP_EXACT


def rebuild_command(cfg: DictConfig, task: str, group: str, size_key: str) -> str:
    """The exact command that builds this run's cache, from the run's own overrides."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside a Hydra app (tests, notebooks)
        overrides = [f"dataset={cfg.dataset.name}", f"{group}={cfg[group].name}",
                     f"method={cfg.method.name}", f"ipc={cfg.ipc}"]
    kept = [o for o in overrides if _kept(o, group)
            and not o.startswith((f"{group}.build_if_missing", size_key))]
    if cfg.zca.enabled and not any(o.startswith("zca.enabled") for o in kept):
        kept.append("zca.enabled=true")  # decided by the method's table in this run
    size = OmegaConf.select(cfg, size_key)
    return " ".join([f"python launch.py task={task}", *kept, f"{size_key}={size}"])


def build_proxies(cfg: DictConfig, real, device) -> list:
    """Train the proxies of ``proxy=...`` missing from the cache; returns all their metadata."""
    return build_pool(location(cfg, real, "proxy"), instantiate(cfg.proxy.net), cfg.proxy.pool_size,
                      real, OmegaConf.to_container(cfg.proxy.recipe, resolve=True), cfg.proxy.seed,
                      device, OmegaConf.to_container(cfg.proxy.net, resolve=True))


def proxy_pool(cfg: DictConfig, real, device):
    """The run's proxy pool: untrained nets for ``cmi.pretrained=false``, else the cached
    pre-trained pool, built first when missing if ``proxy.build_if_missing``."""
    make_net = instantiate(cfg.proxy.net)
    if not cfg.cmi.pretrained:
        return random_pool(make_net, cfg.proxy.pool_size, real, cfg.proxy.seed, device)
    if cfg.proxy.build_if_missing:
        build_proxies(cfg, real, device)
    return load_pool(location(cfg, real, "proxy"), make_net, cfg.proxy.pool_size, real, device,
                     rebuild_command(cfg, "pretrain", "proxy", "proxy.pool_size"))


def _expert_store(cfg: DictConfig, real):
    return expert_store(location(cfg, real, "expert"),
                        rebuild_command(cfg, "buffer", "expert", "expert.count"))


def _build_experts(store, cfg: DictConfig, real, device) -> list:
    log.info("expert buffer: %d %s experts in %s", cfg.expert.count, cfg.expert.name,
             store.directory)
    return build_experts(store, instantiate(cfg.expert.net), cfg.expert.count, real,
                         OmegaConf.to_container(cfg.expert.recipe, resolve=True),
                         instantiate(cfg.expert.recipe.augment), cfg.expert.seed, device,
                         OmegaConf.to_container(cfg.expert.net, resolve=True))


def build_expert_buffer(cfg: DictConfig, real, device) -> list:
    """Train the experts of ``expert=...`` missing from the cache; returns all their metadata."""
    return _build_experts(_expert_store(cfg, real), cfg, real, device)


def trajectories(cfg: DictConfig, real, device):
    """The experts' trajectories for the run (loaded once, memory-mapped), trained first when
    missing if ``expert.build_if_missing``."""
    student = OmegaConf.to_container(cfg.method.algorithm.net, resolve=True)
    experts = OmegaConf.to_container(cfg.expert.net, resolve=True)
    if student != experts:
        raise UserError(f"method.algorithm.net={student} differs from expert.net={experts}: the "
                        "student must be the experts' architecture")
    store = _expert_store(cfg, real)
    if cfg.expert.build_if_missing:
        _build_experts(store, cfg, real, device)  # checksums each expert once, for the load too
    return load_trajectories(store, cfg.expert.count, real)
