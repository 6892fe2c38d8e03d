"""The whole training split as the "set": the paper's "Whole Dataset" row of Table 1, the upper
bound a distilled set is measured against (DD-Ranking's hard-label recovery needs it).

The run's evaluation protocol (``eval=...``) trains its networks on every training image (the
validation split excepted) with its own networks, epochs and augmentation; a preset may state a
shorter full-data recipe (``conf/experiment/<preset>/whole_dataset.yaml``). The result depends on
the data, the protocol and the seed alone, not on the method or CMI settings of the sweep it runs
in, so it is cached in ``<cache_dir>/whole/`` and computed once. No ``synthetic.pt`` is written:
it would be a copy of the dataset.
"""

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from ..errors import UserError
from ..files import write_json
from ..synthetic import SyntheticSet
from .coreset import Selection

log = logging.getLogger(__name__)


class WholeDataset(Selection):
    stores_set = False

    def __init__(self, real, seed: int, device, cache_dir: str, protocol):
        """``protocol``: the evaluation's config (``eval``), which names the cached result."""
        super().__init__(real, seed, device)
        protocol = OmegaConf.to_container(protocol, resolve=True)
        key = json.dumps({"data": real.meta, "protocol": protocol, "seed": seed}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.cached = Path(cache_dir).expanduser() / "whole" / real.name / f"{digest}.json"

    def initial_set(self, real, ipc: int, generator, classes=None, indices=None) -> SyntheticSet:
        images, labels = real.train_tensors()
        synthetic = SyntheticSet(images[:], labels, real.mean, real.std)
        synthetic.whitening = real.whitening
        return synthetic

    def evaluated(self, evaluate) -> dict:
        """The protocol's accuracies on the whole split: cached, or computed and cached."""
        if self.cached.is_file():
            log.info("the whole training split's accuracy, cached: %s", self.cached)
            return json.loads(self.cached.read_text())
        accuracy = evaluate()
        try:
            self.cached.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.cached, accuracy)
        except (OSError, UserError) as error:  # a read-only cache: computed again next time
            log.warning("%s could not be cached: %s", self.cached, error)
        return accuracy
