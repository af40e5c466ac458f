"""Dassl dataset `EuroSAT`: `eurosat` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

EuroSAT = register_dataset("eurosat")
