"""Dassl dataset `CIFAR10CLIP`: `cifar10` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

CIFAR10CLIP = register_dataset("cifar10")
