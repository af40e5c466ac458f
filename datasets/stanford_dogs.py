"""Dassl dataset `StanfordDogs`: `stanford_dogs` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

StanfordDogs = register_dataset("stanford_dogs")
