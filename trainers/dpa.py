"""DPA (Dual Prototypes Alignment) as a Dassl trainer, registered on import (the class lives in
clip_adapt/engine/dpa.py)."""
from clip_adapt.engine.dpa import DPA  # noqa: F401
