"""Base distillation methods; each is a config option of the ``method`` group."""

from .base import Method
from .coreset import Forgetting, Herding, KCenter, Random
from .dm import DM
from .gradient_matching import GradientMatching
from .idc import IDC
from .idm import IDM
from .mtt import MTT
from .sre2l import SRe2L

__all__ = [
    "DM",
    "Forgetting",
    "GradientMatching",
    "Herding",
    "IDC",
    "IDM",
    "KCenter",
    "Method",
    "MTT",
    "Random",
    "SRe2L",
]
