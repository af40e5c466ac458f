"""Tip-Adapter and Tip-Adapter-F as Dassl trainers, registered on import (the classes live in
clip_adapt/engine/tipadapter.py)."""
from clip_adapt.engine.tipadapter import TipAdapter, TipAdapterF  # noqa: F401
