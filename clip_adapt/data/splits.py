"""The one split format of the dataset layer: CoOp's `split_zhou_*.json` (read as it is, written the same way).

A split file is JSON `{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}` with paths
relative to the folder the dataset's images are resolved against (CoOp: its `image_dir`; ours: the dataset folder).
This module also holds the split rules that every dataset shares (one place each):

- `carve_val`: a val split carved from train when a dataset has none (DATASET.VAL_FRACTION, DATASET.SPLIT_SEED).
- `fewshot`: K labelled items per class, seeded (cfg.SEED), CoOp's rule; cached as JSON by `fewshot_cached`.
- `subsample_classes`: CoOp's base/new class halves (DATASET.SUBSAMPLE_CLASSES), relabelled contiguously.
"""
import json
import math
import os
import random
from collections import defaultdict
from pathlib import Path, PurePosixPath

from .errors import DatasetError, require_file
from ..atomic import write_text

SPLITS = ("train", "val", "test")


def _check_items(items, path, split):
    out = []
    for i, entry in enumerate(items):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise DatasetError(f"malformed split file {path}: {split}[{i}] is {entry!r}, expected "
                               "[relpath, label, classname]", path)
        rel, label, cname = entry
        if not isinstance(rel, str) or not isinstance(label, int) or isinstance(label, bool) \
                or not isinstance(cname, str):
            raise DatasetError(f"malformed split file {path}: {split}[{i}] is {entry!r}, expected "
                               "[str relpath, int label, str classname]", path)
        if os.path.isabs(rel) or PurePosixPath(rel.replace("\\", "/")).is_absolute():
            raise DatasetError(f"split file {path}: {split}[{i}] has an absolute path {rel!r} (paths are relative)",
                               path)
        out.append((rel, label, cname))
    return out


def read_split(path):
    """Read a split file -> {"train": [(relpath, label, classname)], "val": [...], "test": [...]}.

    A missing "val" key reads as None (the dataset has no val split); "train" and "test" may be empty lists
    (test-only datasets). Extra keys are ignored.
    """
    path = require_file(path, "split file")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"unreadable split file {path}: {e}", path) from e
    if not isinstance(data, dict) or "test" not in data:
        raise DatasetError(f"malformed split file {path}: expected an object with keys train/val/test", path)
    out = {}
    for split in SPLITS:
        items = data.get(split)
        out[split] = None if items is None else _check_items(items, path, split)
    out["train"] = out["train"] or []
    return out


def write_split(path, split):
    """Write a split dict atomically (temp file + rename) with relative paths, CoOp's JSON format."""
    path = Path(path)
    data = {}
    for name in SPLITS:
        items = split.get(name)
        if items is None:
            continue
        data[name] = [[str(PurePosixPath(rel)), int(label), str(cname)] for rel, label, cname in items]
        for rel, _, _ in items:
            if os.path.isabs(rel):
                raise ValueError(f"split {name} holds an absolute path {rel!r}; split files hold relative paths")
    write_text(path, json.dumps(data, indent=0))
    return path


def by_label(items):
    groups = defaultdict(list)
    for item in items:
        groups[item[1]].append(item)
    return groups


def classnames_of(path, *splits):
    """Class names by label from the items of `splits`; labels must be 0..C-1 with one name each."""
    names = {}
    for items in splits:
        for rel, label, cname in items or []:
            if names.setdefault(label, cname) != cname:
                raise DatasetError(f"split file {path}: label {label} has two class names "
                                   f"{names[label]!r} and {cname!r}", path)
    labels = sorted(names)
    if labels != list(range(len(labels))):
        raise DatasetError(f"split file {path}: labels are not 0-based and contiguous "
                           f"(got {labels[:5]}{'...' if len(labels) > 5 else ''})", path)
    return [names[label] for label in labels]


def carve_val(train, fraction, seed):
    """Split train into (train, val) per class, deterministically.

    Rule: for each class (in label order) its items are sorted by path and shuffled with one
    `random.Random(seed)`; the first round(fraction * n) go to val, at least 1 when the class has >= 2 items and
    never all of them (a class with one item stays in train). Same inputs -> same split on every machine.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"DATASET.VAL_FRACTION must be in [0, 1), got {fraction}")
    rng = random.Random(seed)
    groups = by_label(train)
    new_train, val = [], []
    for label in sorted(groups):
        items = sorted(groups[label])
        rng.shuffle(items)
        n_val = int(round(fraction * len(items)))
        if fraction > 0 and len(items) >= 2:
            n_val = min(max(n_val, 1), len(items) - 1)
        else:
            n_val = 0
        val.extend(sorted(items[:n_val]))
        new_train.extend(sorted(items[n_val:]))
    return new_train, val


def fewshot(items, num_shots, seed):
    """CoOp's few-shot rule: K items per class sampled without replacement (all of them if a class has fewer).

    Deterministic for a given seed: classes in label order, each class's items sorted by path before sampling.
    """
    rng = random.Random(seed)
    groups = by_label(items)
    out = []
    for label in sorted(groups):
        group = sorted(groups[label])
        out.extend(sorted(rng.sample(group, num_shots) if len(group) > num_shots else group))
    return out


def fewshot_cached(cache_dir, num_shots, seed, train, val):
    """Few-shot train (K per class) and val (min(K, 4) per class, like CoOp), cached as
    `<cache_dir>/shot_{K}-seed_{S}.json` (CoOp's split format, relative paths) and reused by later runs."""
    path = Path(cache_dir) / f"shot_{num_shots}-seed_{seed}.json"
    if path.is_file():
        cached = read_split(path)
        return cached["train"], cached["val"] or []
    sub_train = fewshot(train, num_shots, seed)
    sub_val = fewshot(val or [], min(num_shots, 4), seed)
    write_split(path, {"train": sub_train, "val": sub_val, "test": []})
    return sub_train, sub_val


def subsample_classes(which, *splits):
    """CoOp's base-to-new protocol: `base` keeps the first ceil(C/2) labels, `new` the rest, `all` everything.

    Kept labels are relabelled 0..C'-1 in their original order. Returns the splits in the same order.
    """
    which = str(which).lower()
    if which == "all":
        return splits
    if which not in ("base", "new"):
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new, got {which!r}")
    labels = sorted({label for items in splits for _, label, _ in (items or [])})
    half = math.ceil(len(labels) / 2)
    keep = labels[:half] if which == "base" else labels[half:]
    relabel = {old: new for new, old in enumerate(keep)}
    return tuple(None if items is None else [(rel, relabel[label], cname) for rel, label, cname in items
                                             if label in relabel] for items in splits)
