"""Dassl dataset `ImageNetA`: `imagenet_a` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

ImageNetA = register_dataset("imagenet_a")
