"""Dassl dataset `ImageNetSketch`: `imagenet_sketch` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

ImageNetSketch = register_dataset("imagenet_sketch")
