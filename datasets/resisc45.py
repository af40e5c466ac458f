"""Dassl dataset `RESISC45`: `resisc45` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

RESISC45 = register_dataset("resisc45")
