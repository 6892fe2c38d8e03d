"""cmidd's one entry point: ``python launch.py [group=option ...] [key=value ...]``."""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

import cmidd  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    return instantiate(cfg.task)(cfg, out_dir)


if __name__ == "__main__":
    main()
