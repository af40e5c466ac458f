"""DAC (few-shot Domain Aligned CLIP) as a Dassl trainer, registered on import (the class lives in clip_adapt/engine/dac.py)."""
from clip_adapt.engine.dac import DAC  # noqa: F401
