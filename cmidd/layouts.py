"""Where the ImageNet and TinyImageNet loaders used to live (``cmidd.data.layouts`` now). Their
configs keep this name as ``dataset.loader._target_``, which is part of what names the decoded
images and the pre-trained networks cached for them: a new name would orphan those caches."""

from .data.layouts import load_imagenet, load_tinyimagenet

__all__ = ["load_imagenet", "load_tinyimagenet"]
