"""Tiny fixture datasets of real image files, written in each dataset's real layout under a DATA root.

`build_fixture_dataset(root, name)` writes dataset `name` (any of the 22 short names) and returns the short name,
usable as `<dataset>` in scripts (configs/datasets/<name>.yaml). Images of class c are noise around grey level
40 + 60*c (so classes differ); counts are per class. The 7 official-archive datasets are written by
tests/official_fixtures.py (build_official_fixture).
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from clip_adapt.data import catalog

# human-readable class names per dataset, as the real metadata has them (more are generated when asked)
CLASSNAMES = {
    "caltech101": ["accordion", "airplane", "anchor", "ant"],
    "oxford_pets": ["abyssinian", "american bulldog", "beagle", "bengal"],
    "stanford_cars": ["2012 Tesla Model S", "2012 BMW M3 coupe", "2007 Volvo 240 Sedan", "2012 Audi R8 Coupe"],
    "oxford_flowers": ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"],
    "food101": ["apple pie", "baby back ribs", "baklava", "beef carpaccio"],
    "fgvc_aircraft": ["707-320", "727-200", "737-200", "A300B4"],
    "sun397": ["abbey", "airplane cabin", "airport terminal", "alley"],
    "dtd": ["banded", "blotchy", "braided", "bubbly"],
    "eurosat": ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road"],
    "ucf101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling"],
    "imagenet": ["tench", "goldfish", "great white shark", "tiger shark"],
}
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]


def _classnames(name, n):
    base = CLASSNAMES.get(name, CLASSNAMES["imagenet"])
    return [base[i] if i < len(base) else f"{base[0]} {i}" for i in range(n)]


def write_image(path, label, index, size=32):
    """A real image file (format from the extension): noise around grey level 40 + 60*label."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(1000 * label + index)
    pixels = np.clip(rng.rand(size, size, 3) * 40 + 40 + 60 * label, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _coop_relpath(name, cname, label, split, i):
    slug = cname.replace(" ", "_")
    layouts = {
        "caltech101": f"{slug}/image_{split}{i:04d}.jpg",
        "oxford_pets": f"{slug}_{split}{i}.jpg",
        "stanford_cars": f"cars_{'test' if split == 'test' else 'train'}/{label:02d}{split}{i:03d}.jpg",
        "oxford_flowers": f"image_{label:02d}{split}{i:03d}.jpg",
        "food101": f"{slug}/{split}{i}.jpg",
        "sun397": f"{slug[0]}/{slug}/sun_{split}{i}.jpg",
        "dtd": f"{slug}/{slug}_{split}{i:04d}.jpg",
        "eurosat": f"{slug}/{slug}_{split}{i}.jpg",
        "ucf101": f"{slug}/v_{slug}_g{i:02d}_c01_{split}.jpg",
    }
    return layouts.get(name, f"{slug}/{split}{i}.jpg")  # any other dataset in CoOp's split format


def _build_coop(root, name, n_classes, counts, size):
    info = catalog.get(name)
    ddir = Path(root) / info.folder
    names = _classnames(name, n_classes)
    split = {}
    for s, n in counts.items():
        items = []
        for label, cname in enumerate(names):
            for i in range(n):
                rel = _coop_relpath(name, cname, label, s, i)
                write_image(ddir / info.image_dir / rel, label, {"train": 0, "val": 100, "test": 200}[s] + i, size)
                items.append([rel, label, cname])
        split[s] = items
    (ddir / info.split_file).write_text(json.dumps(split))
    return ddir


def _build_fgvc(root, n_classes, counts, size):
    ddir = Path(root) / catalog.get("fgvc_aircraft").folder
    names = _classnames("fgvc_aircraft", n_classes)
    (ddir / "images").mkdir(parents=True, exist_ok=True)
    (ddir / "variants.txt").write_text("".join(f"{v}\n" for v in names))
    k = 1000000
    for s, n in counts.items():
        lines = []
        for label, cname in enumerate(names):
            for i in range(n):
                k += 1
                write_image(ddir / "images" / f"{k:07d}.jpg", label, i, size)
                lines.append(f"{k:07d} {cname}\n")
        (ddir / f"images_variant_{s}.txt").write_text("".join(lines))
    return ddir


def _classnames_txt(path, n_classes):
    names = _classnames("imagenet", n_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} {c}\n" for w, c in zip(WNIDS, names)))


def _build_imagenet(root, name, n_classes, n_train, n_val, n_test, size):
    if n_classes > len(WNIDS):
        raise ValueError(f"imagenet fixtures have at most {len(WNIDS)} classes")
    info = catalog.get(name)
    ddir = Path(root) / info.folder
    _classnames_txt(ddir / "classnames.txt", n_classes)
    if name == "imagenet":
        trees = {"images/train": n_train + n_val, "images/val": n_test}  # val is carved from train
    else:
        trees = {info.image_dir: n_test}
    for sub, n in trees.items():
        for label in range(n_classes):
            folder = str(label) if name == "imagenet_v2" else WNIDS[label]
            for i in range(n):
                ext = "jpeg" if name == "imagenet_v2" else "JPEG"
                write_image(ddir / sub / folder / f"{WNIDS[label]}_{sub.replace('/', '_')}{i}.{ext}", label, i, size)
    return ddir


def build_fixture_dataset(root, name="oxford_pets", n_classes=3, n_train=4, n_val=2, n_test=3, size=32):
    """Write dataset `name` under DATA=`root` in its real layout; return its short name.

    Counts are per class. Datasets whose val is carved from train (imagenet, the official-archive ones) get
    n_train + n_val train images per class; test-only datasets (ImageNet variants) get n_test per class.
    """
    root = Path(root)
    if name in catalog.OFFICIAL_NAMES:
        from tests.official_fixtures import build_official_fixture

        build_official_fixture(root, name, n_classes=n_classes, per_class_train=n_train + n_val,
                               per_class_test=n_test)
        return name
    info = catalog.get(name)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if info.coop_split:
        _build_coop(root, name, n_classes, counts, size)
    elif info.reader == catalog.FGVC:
        _build_fgvc(root, n_classes, counts, size)
    else:
        _build_imagenet(root, name, n_classes, n_train, n_val, n_test, size)
    return name
