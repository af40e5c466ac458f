"""Dassl dataset `CIFAR100CLIP`: `cifar100` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

CIFAR100CLIP = register_dataset("cifar100")
