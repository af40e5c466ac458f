"""Dassl dataset `ImageNetV2`: `imagenet_v2` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

ImageNetV2 = register_dataset("imagenet_v2")
