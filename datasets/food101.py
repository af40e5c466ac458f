"""Dassl dataset `Food101`: `food101` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

Food101 = register_dataset("food101")
