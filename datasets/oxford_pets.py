"""Dassl dataset `OxfordPets`: `oxford_pets` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

OxfordPets = register_dataset("oxford_pets")
