"""The one split format of the dataset layer: CoOp's `split_zhou_*.json` (read as it is, written the same way).

A split file is JSON `{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}` with paths
relative to the folder the dataset's images are resolved against (CoOp: its `image_dir`; ours: the dataset folder).
This module also holds the split rules that every dataset shares (one place each):

- `carve_val`: a val split carved from train when a dataset has none (DATASET.VAL_FRACTION, DATASET.SPLIT_SEED).
- `fewshot`: K labelled train items per class and min(K, 4) val items, exactly CoOp's picks for a seed (Dassl's
  generate_fewshot_dataset after CoOp's seeding); CoOp's `.pkl` read or our JSON cached by `fewshot_cached`.
- `subsample_classes`: CoOp's base/new class halves (DATASET.SUBSAMPLE_CLASSES), relabelled contiguously.
"""
import copyreg
import json
import math
import os
import pickle
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


FEWSHOT_RULE = "dassl_generate_fewshot_dataset"  # marks our few-shot JSON files drawn by `coop_fewshot`
COOP_VAL_SHOTS = 4  # CoOp's dataset files draw min(K, 4) val images per class


def check_shots(items, num_shots, what="train", where=None, label_of=lambda item: item[1],
                name_of=lambda item: item[2]):
    """Every class of `items` must have at least `num_shots` items: otherwise a DatasetError naming the class, the
    requested K and the count it has (Dassl's generate_fewshot_dataset, repeat=False, would silently keep fewer)."""
    counts, names = {}, {}
    for item in items:
        label = label_of(item)
        counts[label] = counts.get(label, 0) + 1
        names.setdefault(label, name_of(item))
    short = [(label, n) for label, n in counts.items() if n < num_shots]
    if num_shots < 1 or not short:
        return
    label, n = short[0]
    more = f"; {len(short) - 1} more class(es) have fewer than {num_shots} too" if len(short) > 1 else ""
    src = f" in {where}" if where else ""
    raise DatasetError(f"DATASET.NUM_SHOTS {num_shots}: class {names[label]!r} (label {label}) has only {n} {what} "
                       f"image(s){src}, fewer than the {num_shots} requested{more}", where,
                       hint=f"use DATASET.NUM_SHOTS <= {min(counts.values())} (the smallest class)")


def coop_fewshot(items, num_shots, rng, label_of=lambda item: item[1]):
    """K items per class drawn exactly as Dassl's `DatasetBase.generate_fewshot_dataset(items, num_shots=K)`
    (repeat=False) draws them with Python's global RNG when `rng` is in the same state.

    Classes in order of first appearance in `items` (Dassl's `split_dataset_by_label`), each class's items in list
    order; one `rng.sample(group, K)` per class with >= K items; a class with fewer keeps all of them (Dassl's
    rule; `fewshot` makes that an error before drawing). Output: classes in that order, items in the drawn order.
    """
    if num_shots < 1:
        return list(items)
    groups = {}
    for item in items:
        groups.setdefault(label_of(item), []).append(item)
    out = []
    for group in groups.values():
        out.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


def fewshot(train, val, num_shots, seed, where=None):
    """CoOp's K-shot train and min(K, 4)-shot val: the images CoOp's dataset files pick after train.py's
    `set_random_seed(SEED)`: one RNG seeded with SEED (`random.Random(seed)` draws what `random.seed(seed)` does),
    train drawn first, val next from the same stream (datasets/oxford_pets.py etc.; Dassl's
    generate_fewshot_dataset). A train class with fewer than K images is an error naming it (CoOp keeps fewer);
    a val class with fewer than min(K, 4) keeps all of them, as in CoOp."""
    check_shots(train, num_shots, "train", where)
    rng = random.Random(seed)
    sub_train = coop_fewshot(train, num_shots, rng)
    sub_val = coop_fewshot(val or [], min(num_shots, COOP_VAL_SHOTS), rng)
    return sub_train, sub_val


def fewshot_file_name(num_shots, seed, ext="json"):
    """CoOp's few-shot file name (`split_fewshot/shot_{K}-seed_{S}.pkl`); ours is the same with .json."""
    return f"shot_{num_shots}-seed_{seed}.{ext}"


def read_fewshot_json(path):
    """Our few-shot file -> (train, val), or None when it was not drawn by `coop_fewshot` (an older rule)."""
    try:
        marker = json.loads(Path(path).read_text()).get("fewshot_rule")
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetError(f"unreadable few-shot file {path}: {e}", path) from e
    if marker != FEWSHOT_RULE:
        return None
    cached = read_split(path)
    return cached["train"], cached["val"] or []


def write_fewshot_json(path, train, val):
    """Our few-shot file: CoOp's split JSON (relative paths) plus the rule that drew it."""
    data = {"fewshot_rule": FEWSHOT_RULE}
    for name, items in (("train", train), ("val", val), ("test", [])):
        data[name] = [[str(PurePosixPath(rel)), int(label), str(cname)] for rel, label, cname in items]
    write_text(path, json.dumps(data, indent=0))
    return Path(path)


class CoOpDatum:
    """Stands in for Dassl's `Datum` when reading CoOp's few-shot pickles without Dassl (same attribute names)."""

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def impath(self):
        return self.__dict__["_impath"]

    @property
    def label(self):
        return self.__dict__["_label"]

    @property
    def classname(self):
        return self.__dict__["_classname"]


class _CoOpUnpickler(pickle.Unpickler):
    """Only Dassl's Datum (mapped to CoOpDatum) and the plain containers of CoOp's pickles may be loaded."""

    ALLOWED = {("dassl.data.datasets.base_dataset", "Datum"): CoOpDatum,
               ("dassl.data.datasets", "Datum"): CoOpDatum,
               ("copyreg", "_reconstructor"): copyreg._reconstructor,
               ("builtins", "object"): object}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CoOp few-shot file") from None


def _relative(impath, image_root, known):
    """The split-file path of an absolute `impath` written on this or another machine: relative to `image_root`,
    else its longest trailing part that is a known relative path."""
    impath = str(impath).replace("\\", "/")
    root = str(image_root).replace("\\", "/").rstrip("/") + "/"
    if impath.startswith(root) and impath[len(root):] in known:
        return impath[len(root):]
    parts = impath.split("/")
    for i in range(len(parts)):
        cand = "/".join(parts[i:])
        if cand in known:
            return cand
    return None


def read_coop_fewshot(path, image_root, train, val):
    """CoOp's `split_fewshot/shot_{K}-seed_{S}.pkl` ({"train": [Datum], "val": [Datum]}, absolute paths), read
    without Dassl -> (train, val) as (relpath, label, classname) items of this dataset's split.

    Its images are used as they are; each must be one of the split's images (matched by its path relative to the
    image folder, so a file written under another DATA root reads too), else a DatasetError names it.
    """
    try:
        with open(path, "rb") as f:
            data = _CoOpUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise DatasetError(f"unreadable CoOp few-shot file {path}: {e}", path) from e
    if not isinstance(data, dict) or "train" not in data:
        raise DatasetError(f"malformed CoOp few-shot file {path}: expected a dict with key 'train'", path)
    known = {rel for rel, _, _ in list(train) + list(val or [])}
    out = {}
    for split in ("train", "val"):
        if split not in data:  # CoOp's ImageNet file holds train only: val is drawn as CoOp does not
            out[split] = None
            continue
        items = []
        for i, d in enumerate(data[split]):
            rel = _relative(getattr(d, "impath", ""), image_root, known)
            if rel is None:
                raise DatasetError(f"CoOp few-shot file {path}: {split}[{i}] = {getattr(d, 'impath', d)!r} is not "
                                   f"an image of this dataset's split", path)
            items.append((rel, int(d.label), str(d.classname)))
        out[split] = items
    return out["train"], out["val"]


def fewshot_cached(cache_dirs, num_shots, seed, train, val, image_root=None, coop_dir=None, where=None,
                   read_dirs=None):
    """Few-shot train (K per class) and val (min(K, 4) per class), CoOp's picks (`fewshot`).

    Read, in order: CoOp's `<coop_dir>/shot_{K}-seed_{S}.pkl` (its contents are used), then our
    `shot_{K}-seed_{S}.json` in each folder of `read_dirs` (default `cache_dirs`; first found, a file of an older
    sampling rule is ignored); otherwise drawn and written as JSON into the first folder of `cache_dirs` that can
    be written (an error names them all when none can). Returns (train, val, path read or written).
    """
    def as_list(dirs):
        return [Path(d) for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]

    cache_dirs = as_list(cache_dirs)
    read_dirs = cache_dirs if read_dirs is None else as_list(read_dirs)
    if coop_dir is not None:
        pkl = Path(coop_dir) / fewshot_file_name(num_shots, seed, "pkl")
        if pkl.is_file():
            sub_train, sub_val = read_coop_fewshot(pkl, image_root or "", train, val)
            if sub_val is None:  # drawn after train from one stream, as `fewshot` does
                rng = random.Random(seed)
                coop_fewshot(train, num_shots, rng)
                sub_val = coop_fewshot(val or [], min(num_shots, COOP_VAL_SHOTS), rng)
            print(f"Few-shot split: read CoOp's {pkl}")
            return sub_train, sub_val, pkl
    for d in read_dirs:
        path = d / fewshot_file_name(num_shots, seed)
        if path.is_file():
            got = read_fewshot_json(path)
            if got is not None:
                return got[0], got[1], path
    sub_train, sub_val = fewshot(train, val, num_shots, seed, where)
    path = write_first(cache_dirs, fewshot_file_name(num_shots, seed),
                       lambda p: write_fewshot_json(p, sub_train, sub_val), "few-shot file")
    return sub_train, sub_val, path


def write_first(folders, name, write, what):
    """write(folder / name) into the first of `folders` where it succeeds; a DatasetError names every folder
    tried when none can be written (read-only data folder and cache folder)."""
    errors = []
    for folder in folders:
        target = Path(folder) / name
        try:
            write(target)
            return target
        except OSError as e:
            errors.append(f"{folder} ({e.strerror or e})")
    raise DatasetError(f"cannot write the {what} {name}: no writable folder among " + "; ".join(errors) +
                       " (set DATASET.SPLIT_CACHE_DIR to a writable folder)", Path(folders[0]) if folders else None)


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
