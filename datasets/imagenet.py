"""Dassl dataset `ImageNet`: `imagenet` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

ImageNet = register_dataset("imagenet")
