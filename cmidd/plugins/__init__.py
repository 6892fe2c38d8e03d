"""Plug-in techniques of earlier papers, each a config option of the ``plugin`` group."""

from .base import Plugin
from .dream import DREAM
from .iid import IID
from .seqmatch import SeqMatch, SeqMatchShared

__all__ = ["DREAM", "IID", "Plugin", "SeqMatch", "SeqMatchShared"]
