"""Dassl dataset `NABirds`: `nabirds` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

NABirds = register_dataset("nabirds")
