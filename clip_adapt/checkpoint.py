"""Checkpoints that hold state dicts only (tensors, numbers, strings), so torch's default `weights_only=True`
loads them (torch >= 2.6 refuses Dassl's pickled scheduler objects). Written atomically: a crash while saving
leaves the previous checkpoint intact. RNG states are included so a resumed run continues the same stream.

Also the identity of a run (docs/RUNS.md): its resolved config without the keys that do not change the result, and
its backbone's sha256, recorded in `run.json`; and the errors a run reports as one message.
"""
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path, write_text


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
    except Exception as e:  # torch's own message spans lines and suggests weights_only=False: keep its first line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"cannot load checkpoint {path} (damaged or not a checkpoint: {type(e).__name__}: "
                           f"{first})") from e


# ---- errors a run reports as one message (train.py prints them without a traceback) ----------------------------
class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


class RunIdentityError(RuntimeError):
    """An output folder holds a run made with another config or backbone than the one asked for."""


class ResumeError(RuntimeError):
    """An output folder's checkpoint cannot be read or is incomplete; the message names the file."""


class CheckpointWriteError(OSError):
    """A checkpoint or result file could not be written (full disk, permissions); the previous one is intact."""


# ---- the identity of a run: its resolved config and its backbone's sha256 (docs/RUNS.md) -------------------------
RUN_FILE = "run.json"
# Keys that do not change a run's result, so two runs differing only in them are the same run: where the run, its
# data and its caches live, whether missing files may be downloaded, how often it prints or keeps old checkpoints.
# MODEL.BACKBONE.NAME is replaced by the sha256 of the weights it resolves to (a name or a path to the same file is
# the same backbone).
NON_IDENTITY_KEYS = (
    "OUTPUT_DIR", "RESUME", "VERBOSE", "DATASET.ROOT", "DATASET.DOWNLOAD", "MODEL.BACKBONE.NAME",
    "MODEL.BACKBONE.CACHE_DIR", "MODEL.BACKBONE.DOWNLOAD", "TRAINER.FEATURE_CACHE_DIR",
    "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "TEST.COMPUTE_CMAT",
    "TEST.PER_CLASS_RESULT",
)
FORCE_FRESH_HINT = ("keep it and write this run elsewhere (scripts: OUTPUT=<another folder> bash scripts/...; "
                    "train.py: --output-dir <another folder>), or delete {folder} to replace it")


def flatten_cfg(cfg, prefix=""):
    """{'OPTIM.LR': 0.002, ...} from a (yacs) config; tuples become lists (the JSON form)."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten_cfg(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.loads(json.dumps(value))
    return flat


def backbone_sha256(name):
    """The sha256 of the weights MODEL.BACKBONE.NAME resolves to without loading or downloading them: a CLIP name
    -> its published sha256 (resolve_checkpoint refuses any other file); a file -> its sha256. Raises the loader's
    CheckpointError (naming MODEL.BACKBONE.NAME) for anything else."""
    from .clip_loader import CLIP_MODELS, checkpoint_fingerprint, model_sha256, resolve_checkpoint

    if str(name) in CLIP_MODELS:
        return model_sha256(str(name))
    return checkpoint_fingerprint(resolve_checkpoint(name, download=False))


def run_identity(cfg, backbone_sha, eval_only=False, model_dir="", load_epoch=None):
    """What a run's result depends on: the resolved config without NON_IDENTITY_KEYS, the backbone's sha256 and,
    for an evaluation, the model folder and epoch it loads."""
    flat = flatten_cfg(cfg)
    config = {k: v for k, v in sorted(flat.items()) if k not in NON_IDENTITY_KEYS}
    mode = {"eval_only": bool(eval_only)}
    if eval_only:
        mode.update(model_dir=os.path.abspath(model_dir) if model_dir else "", load_epoch=load_epoch)
    return {"config": config, "backbone": str(flat.get("MODEL.BACKBONE.NAME", "")), "backbone_sha256": backbone_sha,
            "mode": mode}


def identity_diff(old, new):
    """['OPTIM.LR: 0.002 -> 0.001', ...]: what differs between two identities (empty when they are the same run)."""
    out = []
    if old.get("backbone_sha256") != new.get("backbone_sha256"):
        def bb(i):
            sha = i.get("backbone_sha256") or "?"
            return f"{i.get('backbone')} (sha256 {sha[:12]})"
        out.append(f"backbone: {bb(old)} -> {bb(new)}")
    for section in ("mode", "config"):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                name = key if section == "config" else f"--{key.replace('_', '-')}"
                out.append(f"{name}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


def read_identity(folder):
    """The identity recorded in `folder`/run.json, or None when there is none."""
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "config" not in data:
            raise ValueError("not a run record")
        return data
    except (OSError, ValueError) as e:
        raise ResumeError(f"cannot read {path} ({e}); " + FORCE_FRESH_HINT.format(folder=folder)) from e


def check_identity(folder, identity, what="run"):
    """Raise RunIdentityError when `folder` records another run than `identity` (the message names each differing
    key, old -> new, and how to start this run fresh). A folder without run.json passes."""
    old = read_identity(folder)
    if old is None:
        return
    diff = identity_diff(old, identity)
    if diff:
        shown = "; ".join(diff[:12]) + (f"; and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise RunIdentityError(f"{folder} holds a {what} with another config ({RUN_FILE}): {shown}. To run this "
                               f"config, " + FORCE_FRESH_HINT.format(folder=folder))


def record_identity(folder, identity):
    """Write `folder`/run.json (atomically) unless it already records this identity (check_identity first)."""
    if read_identity(folder) == json.loads(json.dumps(identity)):
        return
    write_text(Path(folder) / RUN_FILE, json.dumps(identity, indent=1, sort_keys=True) + "\n")
