"""Base distillation methods; each is a config option of the ``method`` group."""
from .base import Method
from .dm import DM

__all__ = ["DM", "Method"]
