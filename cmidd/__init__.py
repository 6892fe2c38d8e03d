"""cmidd: dataset distillation with the class-aware CMI regularizer (Zhong et al., ICLR 2025)."""

from . import config as _config
from .cmi import empirical_cmi, per_class_cmi

_config.register()

__all__ = ["empirical_cmi", "per_class_cmi"]
