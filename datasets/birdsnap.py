"""Dassl dataset `Birdsnap`: `birdsnap` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

Birdsnap = register_dataset("birdsnap")
