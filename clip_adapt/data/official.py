"""Readers of the OFFICIAL archive layouts of the datasets CoOp does not ship split files for.

Each reader takes the dataset folder (``$DATA/<OFFICIAL_DIRS[name]>``) exactly as the official archive extracts and
returns an :class:`OfficialSplit`: human-readable class names (index == label), and the official train/test lists as
``(relative posix path from the dataset folder, 0-based label, class name)``. The shared split layer (val carving,
CoOp-format split files, few-shot caches) builds on these; nothing here knows about Dassl or configs.

Validation (DESIGN.md, Datasets): every metadata file is checked for consistency (ids present in all
files, labels in range, no duplicates); a malformed line is an error naming ``file:line``; every listed image must
exist (all missing ones are counted, the first few named). Nothing is silently dropped; the only allowance is
Birdsnap's ``allow_missing`` (its images are fetched from Flickr and many URLs are dead), and then the dropped images
are returned in ``OfficialSplit.missing`` for the caller to report.
"""
import json
import os
import pickle
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError, require_dir, require_file


@dataclass
class OfficialSplit:
    classnames: list  # human-readable, index == label
    train: list  # [(relpath_from_dataset_dir, label0based, classname)], posix relative paths
    test: list
    val: list | None = None  # only if the official archive has a val split (none of the readers here do)
    missing: list = field(default_factory=list)  # relpaths listed but absent (only birdsnap with allow_missing)


OFFICIAL_DIRS = {
    "cub": "CUB_200_2011",
    "nabirds": "nabirds",
    "birdsnap": "birdsnap",
    "stanford_dogs": "stanford_dogs",
    "resisc45": "NWPU-RESISC45",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}

# Official counts.
#  cub: Wah et al., "The Caltech-UCSD Birds-200-2011 Dataset", CNS-TR-2011-001 (11,788 images, 200 classes;
#       train_test_split.txt: 5,994 train / 5,794 test).
#  nabirds: Van Horn et al., CVPR 2015 and the NABirds v1 readme (48,562 images; 555 visual categories have images;
#       train_test_split.txt: 23,929 train / 24,633 test).
#  birdsnap: Berg et al., CVPR 2014 and the Birdsnap v1.1 readme.txt (49,829 images of 500 species; test_images.txt
#       lists 2,443 test images, the other 47,386 are train). Fewer are present after download (dead URLs).
#  stanford_dogs: Khosla et al., FGVC workshop CVPR 2011 and the dataset page (20,580 images, 120 breeds;
#       lists.tar: 12,000 train / 8,580 test).
#  resisc45: Cheng et al., Proc. IEEE 2017 (31,500 images = 45 classes x 700); no official split: the counts follow
#       this module's documented rule (20% train / 80% test per class, see read_resisc45).
#  cifar10 / cifar100: Krizhevsky 2009 and https://www.cs.toronto.edu/~kriz/cifar.html (50,000 train / 10,000 test).
OFFICIAL_COUNTS = {
    "cub": {"train": 5994, "test": 5794, "classes": 200},
    "nabirds": {"train": 23929, "test": 24633, "classes": 555},
    "birdsnap": {"train": 47386, "test": 2443, "classes": 500},
    "stanford_dogs": {"train": 12000, "test": 8580, "classes": 120},
    "resisc45": {"train": 6300, "test": 25200, "classes": 45},
    "cifar10": {"train": 50000, "test": 10000, "classes": 10},
    "cifar100": {"train": 50000, "test": 10000, "classes": 100},
}

OFFICIAL_URLS = {
    "cub": "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    "nabirds": "https://dl.allaboutbirds.org/nabirds",
    "birdsnap": "http://thomasberg.org/datasets/birdsnap/1.1/birdsnap.tgz",
    "stanford_dogs": "http://vision.stanford.edu/aditya86/ImageNetDogs/",
    "resisc45": "https://gcheng-nwpu.github.io/#Datasets",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}

# MD5 of the archives that have a stable public URL (the CIFAR values are the ones published with torchvision's
# loaders; CUB's is the CaltechDATA archive's).
OFFICIAL_MD5 = {
    "cub": "97eceeb196236b17998738112f37df78",
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}

# How to obtain each dataset (the `hint` of every DatasetError raised for it).
OFFICIAL_HINTS = {
    "cub": f"download CUB_200_2011.tgz from {OFFICIAL_URLS['cub']} and extract it in $DATA "
           "(it creates CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
           "images/)",
    "nabirds": f"request nabirds.tar.gz at {OFFICIAL_URLS['nabirds']} and extract it in $DATA (it creates nabirds/ "
               "with images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/)",
    "birdsnap": f"download {OFFICIAL_URLS['birdsnap']}, extract it in $DATA (it creates birdsnap/ with species.txt, "
                "images.txt, test_images.txt, get_birdsnap.py) and run `python get_birdsnap.py` inside birdsnap/ "
                "(it downloads the images to birdsnap/download/images/)",
    "stanford_dogs": f"download images.tar and lists.tar from {OFFICIAL_URLS['stanford_dogs']} and extract both in "
                     "$DATA/stanford_dogs/ (Images/, train_list.mat, test_list.mat)",
    "resisc45": f"download NWPU-RESISC45.rar from {OFFICIAL_URLS['resisc45']} and extract it in $DATA "
                "(it creates NWPU-RESISC45/<class>/<class>_NNN.jpg)",
    "cifar10": f"download {OFFICIAL_URLS['cifar10']} and extract it in $DATA/cifar10/ "
               "(it creates cifar-10-batches-py/)",
    "cifar100": f"download {OFFICIAL_URLS['cifar100']} and extract it in $DATA/cifar100/ "
                "(it creates cifar-100-python/)",
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_SHOW_MISSING = 5  # how many missing paths an error names


# ----------------------------------------------------------------------------------------------------- helpers
def _err(name, message, path):
    return DatasetError(message, path, OFFICIAL_HINTS.get(name, ""))


def _dir(name, path, what):
    try:
        return require_dir(path, what)
    except DatasetError as e:
        raise e.with_hint(OFFICIAL_HINTS[name]) from None


def _file(name, path, what="metadata file"):
    try:
        return require_file(path, what)
    except DatasetError as e:
        raise e.with_hint(OFFICIAL_HINTS[name]) from None


def _lines(name, path):
    """Non-blank lines of a text metadata file as (1-based line number, line without its line break)."""
    path = _file(name, path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _id_table(name, path, expect, parse=str):
    """`<id> <value>` lines (value may contain spaces) -> {id: (parsed value, line number)}."""
    table = {}
    for lineno, line in _lines(name, path):
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise _err(name, f"{path}:{lineno}: malformed line, expected '{expect}', got {line!r}", path)
        key, value = parts
        try:
            value = parse(value.strip())
        except ValueError as e:
            raise _err(name, f"{path}:{lineno}: malformed line, expected '{expect}', got {line!r} ({e})",
                       path) from None
        if key in table:
            raise _err(name, f"{path}:{lineno}: duplicate id {key!r} (first on line {table[key][1]})", path)
        table[key] = (value, lineno)
    return table


def _flag01(value):
    if value not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return value == "1"


def _safe_relpath(name, rel, where, path):
    """A listed image path must be relative and stay inside the dataset folder."""
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or ".." in parts or not rel:
        raise _err(name, f"{where}: image path {rel!r} must be relative to the dataset folder", path)
    return "/".join(p for p in parts if p not in ("", "."))


def find_missing(dataset_dir, relpaths):
    """The relative paths (in order) that are not files under dataset_dir; one directory listing per folder."""
    dataset_dir = Path(dataset_dir)
    listing = {}
    missing = []
    for rel in relpaths:
        folder, _, base = rel.rpartition("/")
        if folder not in listing:
            try:
                listing[folder] = set(os.listdir(dataset_dir / folder))
            except OSError:
                listing[folder] = set()
        if base not in listing[folder]:
            missing.append(rel)
    return missing


def _missing_error(name, dataset_dir, missing, total, listed_in, hint=None):
    first = [str(Path(dataset_dir) / m) for m in missing[:_SHOW_MISSING]]
    more = f" (and {len(missing) - len(first)} more)" if len(missing) > len(first) else ""
    return DatasetError(f"{len(missing)} of {total} images listed in {listed_in} are missing: "
                        + ", ".join(first) + more, first[0], OFFICIAL_HINTS[name] if hint is None else hint)


def _check_images(name, dataset_dir, entries, listed_in):
    rels = [e[0] for e in entries]
    missing = find_missing(dataset_dir, rels)
    if missing:
        raise _missing_error(name, dataset_dir, missing, len(rels), listed_in)


def _check_all_classes_used(name, classnames, entries, path):
    used = {label for _, label, _ in entries}
    empty = [c for i, c in enumerate(classnames) if i not in used]
    if empty:
        raise _err(name, f"{path}: {len(empty)} classes have no images: {empty[:_SHOW_MISSING]}", path)


def readable(raw):
    """'baseball_diamond' -> 'baseball diamond' (underscores as spaces, whitespace collapsed)."""
    return " ".join(raw.replace("_", " ").split())


# --------------------------------------------------------------------------------------------- CUB and NABirds
def _read_cub_style(name, dataset_dir, classname_of, drop_empty_classes):
    """The shared layout of CUB-200-2011 and NABirds (NABirds reuses CUB's metadata file format):
    images.txt `<image_id> <path under images/>`, image_class_labels.txt `<image_id> <class_id>`,
    train_test_split.txt `<image_id> <is_training_image>`, classes.txt `<class_id> <class name>`.
    Labels: the classes that have images, 0-based in the order of their (integer) class id."""
    root = _dir(name, dataset_dir, "dataset folder")
    files = {k: root / f"{k}.txt" for k in ("images", "image_class_labels", "train_test_split", "classes")}
    for f in files.values():
        _file(name, f)
    images = _id_table(name, files["images"], "<image_id> <image_path>")
    labels = _id_table(name, files["image_class_labels"], "<image_id> <class_id>", int)
    is_train = _id_table(name, files["train_test_split"], "<image_id> <is_training_image 0|1>", _flag01)
    classes = {}
    for key, (value, lineno) in _id_table(name, files["classes"], "<class_id> <class_name>").items():
        try:
            classes[int(key)] = (value, lineno)
        except ValueError:
            raise _err(name, f"{files['classes']}:{lineno}: malformed line, class id {key!r} is not an integer",
                       files["classes"]) from None

    for other in ("image_class_labels", "train_test_split"):
        table = labels if other == "image_class_labels" else is_train
        absent = [k for k in images if k not in table]
        if absent:
            raise _err(name, f"{files[other]}: {len(absent)} image ids of {files['images']} are absent, "
                             f"e.g. {absent[:_SHOW_MISSING]}", files[other])
        extra = [k for k in table if k not in images]
        if extra:
            k = extra[0]
            raise _err(name, f"{files[other]}:{table[k][1]}: image id {k!r} is not in {files['images']} "
                             f"({len(extra)} such ids)", files[other])
    for k, (cid, lineno) in labels.items():
        if cid not in classes:
            raise _err(name, f"{files['image_class_labels']}:{lineno}: class id {cid} is not in {files['classes']}",
                       files["image_class_labels"])

    used = {cid for cid, _ in labels.values()}
    if not drop_empty_classes:
        empty = [f"{cid} {classes[cid][0]}" for cid in sorted(classes) if cid not in used]
        if empty:
            raise _err(name, f"{files['classes']}: {len(empty)} classes have no image in "
                             f"{files['image_class_labels']}: {empty[:_SHOW_MISSING]}", files["classes"])
    class_ids = [cid for cid in sorted(classes) if cid in used]
    label_of = {cid: i for i, cid in enumerate(class_ids)}
    classnames = [classname_of(classes[cid][0]) for cid in class_ids]

    train, test = [], []
    for key, (rel, lineno) in images.items():
        rel = "images/" + _safe_relpath(name, rel, f"{files['images']}:{lineno}", files["images"])
        label = label_of[labels[key][0]]
        (train if is_train[key][0] else test).append((rel, label, classnames[label]))
    _check_images(name, root, train + test, files["images"])
    return OfficialSplit(classnames=classnames, train=train, test=test)


def cub_classname(raw):
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    return readable(re.sub(r"^\d+\.", "", raw))


def read_cub(dataset_dir):
    """CUB-200-2011 as CUB_200_2011.tgz extracts (official train_test_split.txt; 200 classes, all with images)."""
    return _read_cub_style("cub", dataset_dir, cub_classname, drop_empty_classes=False)


def read_nabirds(dataset_dir):
    """NABirds as nabirds.tar.gz extracts. classes.txt also lists the non-leaf nodes of the taxonomy (e.g. '0 Birds'),
    which have no images: only the classes with images are used (555 in the official release), relabelled 0-based in
    the order of class id. Names are used as written (already human-readable, e.g. 'Red-tailed Hawk (Adult)')."""
    return _read_cub_style("nabirds", dataset_dir, lambda raw: " ".join(raw.split()), drop_empty_classes=True)


# ----------------------------------------------------------------------------------------------------- Birdsnap
BIRDSNAP_IMAGE_DIR = "download/images"  # where get_birdsnap.py saves `path` of images.txt


def _tsv(name, path, required):
    """Tab-separated file with a header line -> (header, [(line number, {column: value})])."""
    lines = _lines(name, path)
    if not lines:
        raise _err(name, f"{path}: empty file, expected a header line with {required}", path)
    header_lineno, header_line = lines[0]
    header = [h.strip() for h in header_line.strip().split("\t")]
    absent = [c for c in required if c not in header]
    if absent:
        raise _err(name, f"{path}:{header_lineno}: malformed header, columns {absent} missing (got {header})", path)
    rows = []
    for lineno, line in lines[1:]:
        values = line.split("\t")
        if len(values) < len(header):  # trailing empty fields are stripped with the line: pad them
            values += [""] * (len(header) - len(values))
        if len(values) != len(header) or any(not values[header.index(c)].strip() for c in required):
            raise _err(name, f"{path}:{lineno}: malformed line, expected {len(header)} tab-separated fields "
                             f"({', '.join(header[:4])}, ...), got {line[:120]!r}", path)
        rows.append((lineno, {h: v.strip() for h, v in zip(header, values)}))
    return header, rows


def read_birdsnap(dataset_dir, allow_missing=False):
    """Birdsnap v1.1: species.txt (header id, common, scientific, dir), images.txt (header url, md5, path,
    species_id, ...), test_images.txt (header 'path'; the official test list; every other image is train), images
    downloaded by get_birdsnap.py to download/images/<path>. Labels: species id order, 0-based; names: 'common'.

    Many Flickr URLs are dead, so a download usually lacks images. Missing images are an error (count and first
    paths named) unless allow_missing=True; then they are left out of train/test and listed in `.missing`."""
    name = "birdsnap"
    root = _dir(name, dataset_dir, "dataset folder")
    species_file, images_file, test_file = root / "species.txt", root / "images.txt", root / "test_images.txt"
    for f in (species_file, images_file, test_file):
        _file(name, f)
    _dir(name, root / BIRDSNAP_IMAGE_DIR, "image folder (written by get_birdsnap.py)")

    _, species_rows = _tsv(name, species_file, ["id", "common"])
    species = {}
    for lineno, row in species_rows:
        try:
            sid = int(row["id"])
        except ValueError:
            raise _err(name, f"{species_file}:{lineno}: malformed line, species id {row['id']!r} is not an integer",
                       species_file) from None
        if sid in species:
            raise _err(name, f"{species_file}:{lineno}: duplicate species id {sid}", species_file)
        species[sid] = readable(row["common"])
    species_ids = sorted(species)
    label_of = {sid: i for i, sid in enumerate(species_ids)}
    classnames = [species[sid] for sid in species_ids]

    _, image_rows = _tsv(name, images_file, ["path", "species_id"])
    label_of_path, lineno_of_path = {}, {}
    for lineno, row in image_rows:
        rel = _safe_relpath(name, row["path"], f"{images_file}:{lineno}", images_file)
        try:
            sid = int(row["species_id"])
        except ValueError:
            raise _err(name, f"{images_file}:{lineno}: malformed line, species_id {row['species_id']!r} is not an "
                             "integer", images_file) from None
        if sid not in label_of:
            raise _err(name, f"{images_file}:{lineno}: species_id {sid} is not in {species_file}", images_file)
        if rel in label_of_path:
            raise _err(name, f"{images_file}:{lineno}: duplicate path {rel!r} (first on line "
                             f"{lineno_of_path[rel]})", images_file)
        label_of_path[rel], lineno_of_path[rel] = label_of[sid], lineno

    _, test_rows = _tsv(name, test_file, ["path"])
    test_paths = set()
    for lineno, row in test_rows:
        rel = _safe_relpath(name, row["path"], f"{test_file}:{lineno}", test_file)
        if rel not in label_of_path:
            raise _err(name, f"{test_file}:{lineno}: test image {rel!r} is not listed in {images_file}", test_file)
        if rel in test_paths:
            raise _err(name, f"{test_file}:{lineno}: duplicate test image {rel!r}", test_file)
        test_paths.add(rel)

    entries = [(f"{BIRDSNAP_IMAGE_DIR}/{rel}", label, classnames[label]) for rel, label in label_of_path.items()]
    _check_all_classes_used(name, classnames, entries, images_file)
    missing = find_missing(root, [e[0] for e in entries])
    if missing and not allow_missing:
        raise _missing_error(name, root, missing, len(entries), images_file, hint=(
            "re-run get_birdsnap.py in the birdsnap folder to retry failed downloads; images whose URL is dead "
            "cannot be recovered: pass allow_missing to use the images present (the missing ones are reported)"))
    gone = set(missing)
    prefix = len(BIRDSNAP_IMAGE_DIR) + 1
    train = [e for e in entries if e[0] not in gone and e[0][prefix:] not in test_paths]
    test = [e for e in entries if e[0] not in gone and e[0][prefix:] in test_paths]
    return OfficialSplit(classnames=classnames, train=train, test=test, missing=missing)


# ------------------------------------------------------------------------------------------------ Stanford Dogs
def dogs_classname(folder):
    """'n02085782-Japanese_spaniel' -> 'Japanese spaniel' (WordNet id dropped, underscores as spaces)."""
    return readable(folder.split("-", 1)[1] if "-" in folder else folder)


def _mat_list(name, path):
    """file_list and labels (1-based) of Stanford Dogs' train_list.mat / test_list.mat -> [(file, label)]."""
    from scipy.io import loadmat

    path = _file(name, path, "list file (from lists.tar)")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises several types for a corrupt file
        raise _err(name, f"{path}: unreadable .mat file ({type(e).__name__}: {e})", path) from None
    for key in ("file_list", "labels"):
        if key not in mat:
            raise _err(name, f"{path}: malformed list file, variable {key!r} missing (has "
                             f"{sorted(k for k in mat if not k.startswith('__'))})", path)
    files, labels = np.asarray(mat["file_list"]).ravel(), np.asarray(mat["labels"]).ravel()
    if len(files) != len(labels):
        raise _err(name, f"{path}: malformed list file, {len(files)} file_list entries but {len(labels)} labels",
                   path)
    out = []
    for i, (f, y) in enumerate(zip(files, labels), 1):
        f = np.asarray(f).ravel()
        f = str(f[0]) if f.size == 1 else ""
        try:
            yi = int(y)
            ok = yi == y and yi >= 1 and f
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise _err(name, f"{path}:{i}: malformed entry {i}, expected a file name and a 1-based label, got "
                             f"({f!r}, {y!r})", path)
        out.append((_safe_relpath(name, f, f"{path}:{i}", path), yi))
    return out


def read_stanford_dogs(dataset_dir):
    """Stanford Dogs: Images/<wnid>-<Breed>/<file>.jpg (images.tar) and train_list.mat / test_list.mat (lists.tar;
    file_list relative to Images/, labels 1-based). Class names come from the folder of each label."""
    name = "stanford_dogs"
    root = _dir(name, dataset_dir, "dataset folder")
    train_mat, test_mat = root / "train_list.mat", root / "test_list.mat"
    _file(name, train_mat, "list file (from lists.tar)")
    _file(name, test_mat, "list file (from lists.tar)")
    _dir(name, root / "Images", "image folder (from images.tar)")
    lists = {"train": _mat_list(name, train_mat), "test": _mat_list(name, test_mat)}
    folder_of = {}
    for split, mat in (("train", train_mat), ("test", test_mat)):
        for i, (rel, y) in enumerate(lists[split], 1):
            folder = rel.split("/")[0] if "/" in rel else ""
            if not folder:
                raise _err(name, f"{mat}:{i}: file {rel!r} is not inside a class folder", mat)
            if folder_of.setdefault(y, folder) != folder:
                raise _err(name, f"{mat}:{i}: label {y} is used for folders {folder_of[y]!r} and {folder!r}", mat)
    n_classes = max(folder_of)
    absent = [y for y in range(1, n_classes + 1) if y not in folder_of]
    if absent:
        raise _err(name, f"{train_mat}: labels must be 1..{n_classes}, labels {absent[:_SHOW_MISSING]} have no "
                         "image", train_mat)
    classnames = [dogs_classname(folder_of[y]) for y in range(1, n_classes + 1)]
    split = {s: [(f"Images/{rel}", y - 1, classnames[y - 1]) for rel, y in lists[s]] for s in lists}
    _check_images(name, root, split["train"], train_mat)
    _check_images(name, root, split["test"], test_mat)
    return OfficialSplit(classnames=classnames, train=split["train"], test=split["test"])


# ----------------------------------------------------------------------------------------------------- RESISC45
RESISC45_TRAIN_FRACTION = 0.2
RESISC45_SEED = 0
RESISC45_NOT_CLASSES = "split_"  # prefix of the split layer's files/folders in the dataset folder


def resisc45_split_class(classname, files):
    """The documented split of one class: a permutation of the sorted file names drawn from
    numpy.random.default_rng([RESISC45_SEED, crc32(classname)]); the first round(0.2 * n) are train (at least one
    of each split). Seeding by class name keeps every class's split unchanged whatever other classes exist."""
    files = sorted(files)
    n = len(files)
    rng = np.random.default_rng([RESISC45_SEED, zlib.crc32(classname.encode("utf-8"))])
    order = rng.permutation(n)
    n_train = min(n - 1, max(1, int(round(RESISC45_TRAIN_FRACTION * n))))
    train = sorted(files[i] for i in order[:n_train])
    test = sorted(files[i] for i in order[n_train:])
    return train, test


def read_resisc45(dataset_dir):
    """NWPU-RESISC45: <class_name>/<class_name>_NNN.jpg, 45 classes x 700 images; labels in sorted folder order.

    The archive has no official split. Rule (fixed, independent of any config): per class, 20% train and 80% test,
    chosen by :func:`resisc45_split_class` (seeded permutation of the sorted files). 20% training images per class is
    one of the two protocols of the dataset paper (Cheng et al. 2017: 10% and 20% training ratios, the rest test),
    and its 80% test (25,200 images) is the test set size CLIP reports for RESISC45. Val is carved from train by the
    shared split layer. Top-level names starting with '.' or 'split_' are not classes: the latter are the split
    layer's own outputs (split_*.json files, split_fewshot*/ caches) written into the dataset folder."""
    name = "resisc45"
    root = _dir(name, dataset_dir, "dataset folder")
    class_dirs, stray = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith((".", RESISC45_NOT_CLASSES)):
            continue
        if entry.is_dir():
            class_dirs.append(entry.name)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            stray.append(entry.name)
    if stray:
        raise _err(name, f"{root}: images outside any class folder: {stray[:_SHOW_MISSING]}", root / stray[0])
    if not class_dirs:
        raise _err(name, f"{root}: no class folders (expected <class_name>/<class_name>_NNN.jpg)", root)
    classnames = [readable(c) for c in class_dirs]
    train, test = [], []
    for label, folder in enumerate(class_dirs):
        files = []
        for entry in os.scandir(root / folder):
            if entry.name.startswith(".") or entry.name == "Thumbs.db":
                continue
            if not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                raise _err(name, f"{root / folder / entry.name}: not an image file (expected "
                                 f"{folder}/{folder}_NNN.jpg)", root / folder / entry.name)
            files.append(entry.name)
        if len(files) < 2:
            raise _err(name, f"{root / folder}: {len(files)} images, a class needs at least 2 to be split",
                       root / folder)
        tr, te = resisc45_split_class(folder, files)
        train += [(f"{folder}/{f}", label, classnames[label]) for f in tr]
        test += [(f"{folder}/{f}", label, classnames[label]) for f in te]
    return OfficialSplit(classnames=classnames, train=train, test=test)


# -------------------------------------------------------------------------------------------------------- CIFAR
CIFAR_SOURCES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}
CIFAR_EXPORT_DIR = "images"  # $DATA/<folder>/images/{train,test}/<NNNNN>.png
CIFAR_MANIFEST = "export.json"  # written last inside the export; its absence marks an export as partial


def _unpickle(name, path):
    path = _file(name, path, "CIFAR batch file")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # a truncated/corrupt pickle raises many types
        raise _err(name, f"{path}: unreadable CIFAR pickle ({type(e).__name__}: {e})", path) from None
    if not isinstance(obj, dict):
        raise _err(name, f"{path}: malformed CIFAR pickle, expected a dict, got {type(obj).__name__}", path)
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(name, source, files, label_key, n_classes):
    """uint8 images (N, 32, 32, 3) and int labels of a list of batch files, validated."""
    images, labels = [], []
    for fname in files:
        path = source / fname
        batch = _unpickle(name, path)
        for key in ("data", label_key):
            if key not in batch:
                raise _err(name, f"{path}: malformed CIFAR pickle, key {key!r} missing (has {sorted(batch)})", path)
        data = np.asarray(batch["data"])
        y = np.asarray(batch[label_key]).astype(np.int64).ravel()
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(y):
            raise _err(name, f"{path}: malformed CIFAR pickle, 'data' must be uint8 (N, 3072) with N = "
                             f"{len(y)} labels, got {data.dtype} {data.shape}", path)
        bad = np.flatnonzero((y < 0) | (y >= n_classes))
        if len(bad):
            raise _err(name, f"{path}: label {int(y[bad[0]])} of image {int(bad[0])} is outside 0..{n_classes - 1}",
                       path)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_filenames(n):
    return [f"{i:05d}.png" for i in range(n)]


def _export_complete(export, counts, digest):
    """A finished export: manifest matches the source, and each split folder holds exactly the expected files."""
    try:
        manifest = json.loads((export / CIFAR_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("counts") != counts or manifest.get("labels_sha") != digest:
        return False
    for split, n in counts.items():
        try:
            names = set(os.listdir(export / split))
        except OSError:
            return False
        if names != set(_cifar_filenames(n)):
            return False
    return True


def _write_pngs(arrays, folder, desc):
    """One PNG per image (fast zlib level; PIL encodes outside the GIL, so a few threads help), with a progress bar."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from tqdm import tqdm

    folder.mkdir(parents=True)

    def save(i):
        Image.fromarray(arrays[i]).save(folder / f"{i:05d}.png", compress_level=1)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(arrays), desc=desc, unit="img", mininterval=1.0,
                                                   leave=False) as bar:
        for _ in pool.map(save, range(len(arrays)), chunksize=256):
            bar.update(1)


def _new_dir(root, tag):
    """A fresh uniquely named hidden folder in root (created with the umask's permissions, unlike mkdtemp's 0700,
    so an export shared on a cluster stays readable by others)."""
    while True:
        path = root / f".{CIFAR_EXPORT_DIR}-{tag}-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def export_cifar_pngs(name, dataset_dir, arrays, digest):
    """Write the arrays once to $DATA/<folder>/images/{split}/<NNNNN>.png, atomically: into a temporary folder that
    is renamed into place after its manifest is written. A complete export is reused untouched; a partial one
    (no manifest, other counts or labels, files missing) is never used: it is replaced."""
    root = Path(dataset_dir)
    export = root / CIFAR_EXPORT_DIR
    counts = {split: int(len(a)) for split, a in arrays.items()}
    if _export_complete(export, counts, digest):
        return export
    tmp = None
    try:
        tmp = _new_dir(root, "tmp")
        for split, a in arrays.items():
            _write_pngs(a, tmp / split, f"{name}: exporting {split} PNGs")
        (tmp / CIFAR_MANIFEST).write_text(json.dumps({"counts": counts, "labels_sha": digest}))
        stale = None
        if export.exists() or export.is_symlink():  # partial or outdated: move it aside, swap in the new export
            stale = _new_dir(root, "stale")
            os.replace(export, stale / "old")
        try:
            os.replace(tmp, export)
        except OSError:
            if not _export_complete(export, counts, digest):  # not a concurrent writer that finished first
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    except OSError as e:
        raise _err(name, f"cannot write the PNG export of {name} under {root} ({type(e).__name__}: {e}); the "
                         "images are exported once, so run once with write access to this folder", export) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return export


def _read_cifar(name, dataset_dir):
    """The official python archive under $DATA/<folder>/ (pickled uint8 arrays), exported once to PNG files
    (Dassl reads image files); returns relative paths images/{train,test}/<NNNNN>.png in the archive's order."""
    import hashlib

    subdir, train_files, test_files, meta_file, label_key, names_key = CIFAR_SOURCES[name]
    root = _dir(name, dataset_dir, "dataset folder")
    source = _dir(name, root / subdir, "extracted archive folder")
    for f in train_files + test_files + [meta_file]:
        _file(name, source / f, "CIFAR batch file")
    meta = _unpickle(name, source / meta_file)
    if names_key not in meta:
        raise _err(name, f"{source / meta_file}: malformed meta file, key {names_key!r} missing (has {sorted(meta)})",
                   source / meta_file)
    classnames = [readable(n.decode("utf-8") if isinstance(n, bytes) else str(n)) for n in meta[names_key]]
    arrays, labels = {}, {}
    for split, files in (("train", train_files), ("test", test_files)):
        arrays[split], labels[split] = _cifar_arrays(name, source, files, label_key, len(classnames))
    out = {s: [(f"{CIFAR_EXPORT_DIR}/{s}/{fn}", int(y), classnames[int(y)])
               for fn, y in zip(_cifar_filenames(len(labels[s])), labels[s])] for s in ("train", "test")}
    _check_all_classes_used(name, classnames, out["train"], source / train_files[0])
    digest = hashlib.sha256(b"".join(labels[s].astype("<i8").tobytes() for s in ("train", "test"))).hexdigest()
    export_cifar_pngs(name, root, arrays, digest)
    return OfficialSplit(classnames=classnames, train=out["train"], test=out["test"])


def read_cifar10(dataset_dir):
    """CIFAR-10: $DATA/cifar10/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)."""
    return _read_cifar("cifar10", dataset_dir)


def read_cifar100(dataset_dir):
    """CIFAR-100: $DATA/cifar100/cifar-100-python/ (train, test, meta); the 100 fine labels."""
    return _read_cifar("cifar100", dataset_dir)


READERS = {
    "cub": read_cub,
    "nabirds": read_nabirds,
    "birdsnap": read_birdsnap,
    "stanford_dogs": read_stanford_dogs,
    "resisc45": read_resisc45,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
}
