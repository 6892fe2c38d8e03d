"""cmidd's one entry point: ``python launch.py [group=option ...] [key=value ...]``."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cmidd import app


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    return app.run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
