"""Linear-probe CLIP as a Dassl trainer, registered on import (the class lives in clip_adapt/engine/linear_probe.py)."""
from clip_adapt.engine.linear_probe import LinearProbe  # noqa: F401
