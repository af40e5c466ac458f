"""Checkpoints that hold state dicts only (tensors, numbers, strings), so torch's default `weights_only=True`
loads them (torch >= 2.6 refuses Dassl's pickled scheduler objects). Written atomically: a crash while saving
leaves the previous checkpoint intact. RNG states are included so a resumed run continues the same stream.
"""
import random
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path


def rng_state():
    """Python, numpy and torch (CPU, CUDA) RNG states as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj, path):
    """torch.save through clip_adapt.atomic (temporary file, fsync, umask permissions, atomic rename)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path, map_location="cpu"):
    """Load with torch's default weights_only=True; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"cannot load checkpoint {path}: {e}") from e
