"""ReCLIP (source-free domain adaptation) as a Dassl trainer, registered on import (the class lives in clip_adapt/engine/reclip.py)."""
from clip_adapt.engine.reclip import ReCLIP  # noqa: F401
