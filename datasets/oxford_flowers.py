"""Dassl dataset `OxfordFlowers`: `oxford_flowers` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

OxfordFlowers = register_dataset("oxford_flowers")
