"""Dassl dataset `CUB`: `cub` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

CUB = register_dataset("cub")
