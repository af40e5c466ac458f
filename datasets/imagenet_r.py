"""Dassl dataset `ImageNetR`: `imagenet_r` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

ImageNetR = register_dataset("imagenet_r")
