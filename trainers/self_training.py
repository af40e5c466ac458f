"""SelfTraining (thresholded pseudo-label self-training) as a Dassl trainer, registered on import (the class lives in
clip_adapt/engine/self_training.py)."""
from clip_adapt.engine.self_training import SelfTraining  # noqa: F401
