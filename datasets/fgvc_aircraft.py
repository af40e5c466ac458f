"""Dassl dataset `FGVCAircraft`: `fgvc_aircraft` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

FGVCAircraft = register_dataset("fgvc_aircraft")
