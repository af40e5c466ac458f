"""Dassl dataset `StanfordCars`: `stanford_cars` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

StanfordCars = register_dataset("stanford_cars")
