"""Load any catalogued dataset into train/val/test lists of (absolute image path, label, class name).

One path for all 22 datasets:
1. the dataset's split file: CoOp's `split_zhou_*.json` where CoOp ships one (read as it is), otherwise ours,
   `split_clipadapt_<name>.json` in the dataset folder, written once from the dataset's own metadata (official
   train/test, official val if any, else a val carved from train: `splits.carve_val`);
2. few-shot subsets (`num_shots >= 1`): CoOp's picks (`splits.fewshot`); CoOp's `split_fewshot/shot_K-seed_S.pkl`
   is read when present, else our JSON `split_fewshot/shot_K-seed_S.json` is read or written;
3. base/new class subsampling (CoOp's SUBSAMPLE_CLASSES);
4. every listed image must exist (an error names the first missing path and counts the others).

Files this layer writes (our split file, few-shot files, missing_images.txt) go beside the data when that folder
can be written, else into a split cache folder (`split_folders`: DATASET.SPLIT_CACHE_DIR, or a folder under the
feature cache dir); files are read from beside the data first, then from that folder.
"""
import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import catalog, official
from .errors import DatasetError, ImageReadError, require_dir, require_file
from ..atomic import write_text
from .splits import (carve_val, classnames_of, fewshot_cached, fewshot_file_name, read_split, subsample_classes,
                     write_first, write_split)

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class LoadedDataset:
    """A dataset ready for a framework: items are (absolute path, label, classname); labels 0..C-1."""
    name: str
    classnames: list
    train: list
    val: list
    test: list
    split_file: Path
    dataset_dir: Path = None  # the dataset's folder under DATA (the split file may live in a split cache folder)
    # few-shot runs: where CoOp's `split_fewshot/shot_K-seed_S.pkl` of these picks belongs (None: not CoOp's split,
    # or the pkl was read), and the picks before class subsampling (absolute paths), for `engine.datasets` to write it
    coop_fewshot_pkl: Path = None
    fewshot: tuple = None


def _split_tag(val_fraction, split_seed):
    if float(val_fraction) == DEFAULT_VAL_FRACTION and int(split_seed) == DEFAULT_SPLIT_SEED:
        return ""
    return f"_val{float(val_fraction):g}_seed{int(split_seed)}"


def own_split_file(info, dataset_dir, val_fraction=DEFAULT_VAL_FRACTION, split_seed=DEFAULT_SPLIT_SEED):
    """Our split file for a dataset without a CoOp split file; its name records a non-default val carve."""
    return Path(dataset_dir) / f"split_clipadapt_{info.short}{_split_tag(val_fraction, split_seed)}.json"


def _list_images(folder):
    return sorted(p for p in os.listdir(folder) if p.lower().endswith(IMAGE_EXTS) and not p.startswith("."))


def read_imagenet_classnames(path):
    """CoOp's classnames.txt: `<wnid> <class name>` per line, in label order -> ordered dict wnid -> name."""
    path = require_file(path, "class-name file")
    names = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name:
            raise DatasetError(f"malformed class-name file {path}, line {i}: expected '<wnid> <class name>'", path)
        names[wnid] = name.strip()
    return names


def _wnid_folders(image_dir, classnames_file):
    """Class folders named by WordNet id, sorted (CoOp's label order), each with its CLIP class name."""
    names = read_imagenet_classnames(classnames_file)
    folders = sorted(d for d in os.listdir(image_dir) if (Path(image_dir) / d).is_dir() and not d.startswith("."))
    if not folders:
        raise DatasetError(f"no class folders in {image_dir}", image_dir)
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise DatasetError(f"class folders in {image_dir} not in {classnames_file}: {unknown[:5]}", image_dir)
    return folders, names


def _read_wnid_tree(dataset_dir, sub, folders, names):
    items = []
    for label, wnid in enumerate(folders):
        for fname in _list_images(dataset_dir / sub / wnid):
            items.append((f"{sub}/{wnid}/{fname}", label, names[wnid]))
    return items


def _variant_classnames_file(info, root, dataset_dir):
    """classnames.txt next to the variant's images (CoOp's layout), else imagenet's own."""
    for cand in (dataset_dir / "classnames.txt", Path(root) / catalog.get("imagenet").folder / "classnames.txt"):
        if cand.is_file():
            return cand
    raise DatasetError(f"missing class-name file: {dataset_dir / 'classnames.txt'} (nor in "
                       f"{Path(root) / 'imagenet' / 'classnames.txt'})", dataset_dir / "classnames.txt")


def build_split(info, root, dataset_dir, allow_missing=False, folders=None):
    """The dataset's own train/val/test (val None when it has none), relative to the dataset folder."""
    if info.reader == catalog.FGVC:
        return _read_fgvc(dataset_dir)
    if info.reader == catalog.IMAGENET:
        image_dir = require_dir(dataset_dir / "images", "image folder")
        folders, names = _wnid_folders(require_dir(image_dir / "train", "image folder"),
                                       dataset_dir / "classnames.txt")
        require_dir(image_dir / "val", "image folder")
        missing = [f for f in folders if not (image_dir / "val" / f).is_dir()]
        if missing:
            raise DatasetError(f"missing class folder(s) in {image_dir / 'val'}: {missing[:5]}",
                               image_dir / "val" / missing[0])
        return {"train": _read_wnid_tree(dataset_dir, "images/train", folders, names), "val": None,
                "test": _read_wnid_tree(dataset_dir, "images/val", folders, names)}
    if info.reader == catalog.IMAGENET_WNID:
        image_dir = require_dir(dataset_dir / info.image_dir, "image folder")
        folders, names = _wnid_folders(image_dir, _variant_classnames_file(info, root, dataset_dir))
        return {"train": [], "val": None, "test": _read_wnid_tree(dataset_dir, info.image_dir, folders, names)}
    if info.reader == catalog.IMAGENET_V2:
        image_dir = require_dir(dataset_dir / info.image_dir, "image folder")
        names = list(read_imagenet_classnames(_variant_classnames_file(info, root, dataset_dir)).values())
        test = []
        for label in sorted(int(d) for d in os.listdir(image_dir) if d.isdigit()):
            if label >= len(names):
                raise DatasetError(f"class folder {image_dir / str(label)} has no line in classnames.txt",
                                   image_dir / str(label))
            for fname in _list_images(image_dir / str(label)):
                test.append((f"{info.image_dir}/{label}/{fname}", label, names[label]))
        if not test:
            raise DatasetError(f"no images in {image_dir}/<label>/", image_dir)
        return {"train": [], "val": None, "test": test}
    if info.reader == catalog.OFFICIAL:
        reader = official.READERS[info.short]
        if allow_missing and "allow_missing" in inspect.signature(reader).parameters:
            split = reader(Path(dataset_dir), allow_missing=True)
            if split.missing:  # left out of the split file written once: reported, never silent
                report_missing(folders or [dataset_dir], [str(Path(dataset_dir) / m) for m in split.missing])
        else:
            split = reader(Path(dataset_dir))
        return {"train": list(map(tuple, split.train)), "val": None if split.val is None else
                list(map(tuple, split.val)), "test": list(map(tuple, split.test))}
    raise ValueError(f"dataset {info.short}: reader {info.reader!r} does not build splits")


def _read_fgvc(dataset_dir):
    """FGVC-Aircraft's variant-level lists (`images_variant_<split>.txt`: `<image id> <variant>`), as CoOp reads
    them; class names and labels in the order of variants.txt."""
    variants_file = require_file(dataset_dir / "variants.txt")
    names = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    label_of = {name: i for i, name in enumerate(names)}
    out = {}
    for split in ("train", "val", "test"):
        path = require_file(dataset_dir / f"images_variant_{split}.txt")
        items = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in label_of:
                raise DatasetError(f"{path}, line {i}: variant {variant!r} is not in {variants_file}", path)
            items.append((f"images/{image_id}.jpg", label_of[variant], variant))
        out[split] = items
    return out


def split_folders(dataset_dir, split_cache_dir="", fallback_dir=""):
    """Folders the split layer writes into, in order of preference (each is also read, after the dataset folder).

    split_cache_dir (DATASET.SPLIT_CACHE_DIR) set: only `<split_cache_dir>/<folder>-<hash>`. Unset: the dataset
    folder, then `<fallback_dir>/splits/<folder>-<hash>` (the feature cache dir) when the data is read-only. The
    hash is of the dataset folder's real path, so two DATA roots never share a split file.
    """
    dataset_dir = Path(dataset_dir)
    tag = hashlib.sha1(os.path.realpath(dataset_dir).encode()).hexdigest()[:10]
    sub = f"{dataset_dir.name}-{tag}"
    if split_cache_dir:
        return [Path(split_cache_dir).expanduser() / sub]
    return [dataset_dir] + ([Path(fallback_dir).expanduser() / "splits" / sub] if fallback_dir else [])


def _read_folders(dataset_dir, folders):
    return [Path(dataset_dir)] + [f for f in folders if Path(f) != Path(dataset_dir)]


def split_file_and_root(info, dataset_dir, val_fraction=DEFAULT_VAL_FRACTION, split_seed=DEFAULT_SPLIT_SEED):
    """(split file path, folder its relative paths resolve against)."""
    if info.coop_split:
        return dataset_dir / info.split_file, dataset_dir / info.image_dir
    return own_split_file(info, dataset_dir, val_fraction, split_seed), dataset_dir


def load_split(info, root, val_fraction=DEFAULT_VAL_FRACTION, split_seed=DEFAULT_SPLIT_SEED,
               allow_missing=False, folders=None):
    """-> (split dict with relative paths, split file, image root). Writes our split file the first time, into
    the first writable folder of `folders` (default: the dataset folder)."""
    dataset_dir = require_dir(Path(root) / info.folder)
    split_file, image_root = split_file_and_root(info, dataset_dir, val_fraction, split_seed)
    folders = list(folders) if folders else [dataset_dir]
    if info.coop_split:
        require_file(split_file, "CoOp split file")
        split = read_split(split_file)
    else:
        found = [f / split_file.name for f in _read_folders(dataset_dir, folders) if (f / split_file.name).is_file()]
        if found:
            split_file = found[0]
            split = read_split(split_file)
        else:
            for meta in info.metadata:
                p = dataset_dir / meta
                if not p.exists() and not (meta == "classnames.txt" and info.test_only):
                    raise DatasetError(f"missing metadata file: {p}", p)
            split = build_split(info, root, dataset_dir, allow_missing, folders)
            if split["val"] is None:
                if info.test_only:
                    split["val"] = []
                else:
                    split["train"], split["val"] = carve_val(split["train"], val_fraction, split_seed)
            split_file = write_first(folders, split_file.name, lambda p: write_split(p, split), "split file")
    if split["val"] is None:  # a split file without val (e.g. written by hand): carve it, deterministically
        split["train"], split["val"] = carve_val(split["train"], val_fraction, split_seed)
    return split, split_file, image_root


def verify_exist(items, image_root, split_file):
    """Every listed image must exist: an error names the first missing path and how many are missing."""
    missing = [rel for rel, _, _ in items if not os.path.isfile(os.path.join(image_root, rel))]
    if missing:
        first = Path(image_root) / missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"image listed in {split_file} is absent: {first}{more}", first)


def open_image(path):
    """Open an image as RGB; a missing or unreadable file is an ImageReadError (a DatasetError) naming its path."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise ImageReadError(f"image is absent: {path}", path) from e
    except Exception as e:  # PIL.UnidentifiedImageError, truncated files, OSError
        raise ImageReadError(f"unreadable image {path}: {type(e).__name__}: {e}", path) from e


def verify_readable(paths):
    """Fully decode every image (slow: for the check command); raises on the first unreadable one."""
    for path in paths:
        open_image(path)


def drop_missing(items, image_root, report):
    """DATASET.ALLOW_MISSING: leave out listed images that are absent, appending their paths to `report` (a list)."""
    kept = []
    for item in items:
        if os.path.isfile(os.path.join(image_root, item[0])):
            kept.append(item)
        else:
            report.append(os.path.join(image_root, item[0]))
    return kept


def report_missing(folders, missing):
    """Write the left-out images to missing_images.txt (beside the data, else in the split cache folder) and say
    so (nothing is dropped silently)."""
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    text = "".join(f"{p}\n" for p in missing)
    out = write_first(folders, "missing_images.txt", lambda p: write_text(p, text), "list of missing images")
    print(f"WARNING: DATASET.ALLOW_MISSING: {len(missing)} listed image(s) are absent and left out; "
          f"listed in {out}", flush=True)


def load_dataset(name, root, num_shots=0, seed=1, subsample="all", val_fraction=DEFAULT_VAL_FRACTION,
                 split_seed=DEFAULT_SPLIT_SEED, download=False, allow_missing=False, split_cache_dir="",
                 fallback_dir=""):
    """Load dataset `name` from `root` (DATA). Errors name the path at fault and how to obtain it.

    allow_missing (DATASET.ALLOW_MISSING, for datasets fetched from URLs that die, e.g. Birdsnap): absent listed
    images are left out, written to missing_images.txt and counted in a warning, instead of an error.
    split_cache_dir (DATASET.SPLIT_CACHE_DIR) / fallback_dir: where written files go (`split_folders`).
    num_shots >= 1: CoOp's K-shot train and min(K, 4)-shot val for `seed` (`splits.fewshot_cached`); a class with
    fewer than K train images is an error naming it.
    """
    info = catalog.get(name)
    try:
        if download and not (Path(root) / info.folder).is_dir() and info.downloads:
            from .download import download_dataset
            download_dataset(info, root)
        dataset_dir = require_dir(Path(root) / info.folder)
        folders = split_folders(dataset_dir, split_cache_dir, fallback_dir)
        split, split_file, image_root = load_split(info, root, val_fraction, split_seed, allow_missing, folders)
        train, val, test = split["train"], split["val"], split["test"]
        if allow_missing:
            missing = []
            train, val, test = (drop_missing(items, image_root, missing) for items in (train, val, test))
            if missing:
                report_missing(folders, missing)
        classnames = classnames_of(split_file, train, val, test)
        coop_pkl, picks = None, None
        if num_shots and num_shots >= 1 and not info.test_only:
            tag = _split_tag(val_fraction, split_seed)
            sub = f"split_fewshot{tag}"
            train, val, source = fewshot_cached([f / sub for f in folders], int(num_shots), int(seed), train, val,
                                           image_root=image_root, where=split_file,
                                           coop_dir=dataset_dir / "split_fewshot" if not tag else None,
                                           read_dirs=[f / sub for f in _read_folders(dataset_dir, folders)])
            if info.coop_split and not tag and source.suffix != ".pkl":  # CoOp's own split: CoOp reads these picks
                coop_pkl, picks = dataset_dir / "split_fewshot" / fewshot_file_name(num_shots, seed, "pkl"), \
                    (train, val)
        train, val, test = subsample_classes(subsample, train, val, test)
        if str(subsample).lower() != "all":
            classnames = classnames_of(split_file, train, val, test)
        if not allow_missing:  # (with it, drop_missing above already left out every absent image)
            for items in (train, val, test):
                verify_exist(items, image_root, split_file)
    except DatasetError as e:
        raise e.with_hint(info.hint()) from e.__cause__

    def absolute(items):
        return [(os.path.join(image_root, rel), label, cname) for rel, label, cname in items]

    return LoadedDataset(info.short, classnames, absolute(train), absolute(val), absolute(test), Path(split_file),
                         Path(dataset_dir), coop_pkl, picks and (absolute(picks[0]), absolute(picks[1])))
