"""FAIR (unsupervised adaptation with Class Description Anchors) as a Dassl trainer, registered on import (the class lives in clip_adapt/engine/fair.py)."""
from clip_adapt.engine.fair import FAIR  # noqa: F401
