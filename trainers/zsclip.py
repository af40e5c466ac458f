"""ZSCLIP (zero-shot CLIP baseline of this project) as a Dassl trainer, registered on import (the class lives in clip_adapt/engine/zsclip.py)."""
from clip_adapt.engine.zsclip import ZSCLIP  # noqa: F401
