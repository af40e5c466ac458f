"""Dassl dataset `DescribableTextures`: `dtd` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

DescribableTextures = register_dataset("dtd")
