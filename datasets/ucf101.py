"""Dassl dataset `UCF101`: `ucf101` of clip_adapt/data/catalog.py."""
from clip_adapt.engine.datasets import register_dataset

UCF101 = register_dataset("ucf101")
