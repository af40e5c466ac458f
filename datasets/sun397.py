"""Dassl dataset `SUN397`: `sun397` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

SUN397 = register_dataset("sun397")
