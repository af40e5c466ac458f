"""Dassl dataset `Caltech101`: `caltech101` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

Caltech101 = register_dataset("caltech101")
