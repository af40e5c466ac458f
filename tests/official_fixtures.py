"""Tiny trees in the REAL layouts of the official archives read by clip_adapt/data/official.py.

`build_official_fixture(root, name)` writes root/OFFICIAL_DIRS[name] with real image files (JPEG, or CIFAR's pickled
uint8 arrays) whose grey level depends on the class (plus noise), and the real metadata formats: CUB's and NABirds'
space-separated id files (NABirds with UUID image ids and non-leaf taxonomy classes without images), Birdsnap's
tab-separated files with their real header lines, Stanford Dogs' MATLAB lists, CIFAR's python pickles.
"""
import hashlib
import io
import pickle
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from clip_adapt.data.official import OFFICIAL_DIRS

CUB_NAMES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet"]
NABIRDS_LEAVES = [(295, "Common Loon"), (296, "Red-tailed Hawk (Adult)"), (299, "Red-tailed Hawk (Immature)"),
                  (313, "Blue Jay"), (330, "Northern Cardinal (Adult Male)")]
NABIRDS_NONLEAF = [(0, "Birds"), (1, "Perching Birds"), (297, "Hawks")]
BIRDSNAP_SPECIES = [("Cooper's Hawk", "Accipiter cooperii", "Coopers_Hawk"),
                    ("Northern Goshawk", "Accipiter gentilis", "Northern_Goshawk"),
                    ("Sharp-shinned Hawk", "Accipiter striatus", "Sharp_shinned_Hawk"),
                    ("Golden Eagle", "Aquila chrysaetos", "Golden_Eagle"),
                    ("Bald Eagle", "Haliaeetus leucocephalus", "Bald_Eagle")]
BIRDSNAP_PARTS = ["back", "beak", "belly", "breast", "crown", "forehead", "left_cheek", "left_eye", "left_leg",
                  "left_wing", "nape", "right_cheek", "right_eye", "right_leg", "right_wing", "tail", "throat"]
BIRDSNAP_IMAGES_HEADER = ["url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2"] + [
    f"{p}_{a}" for p in BIRDSNAP_PARTS for a in ("x", "y")]
DOG_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog", "n02086079-Pekinese",
               "n02086240-Shih-Tzu"]
RESISC45_CLASSES = ["airplane", "baseball_diamond", "ground_track_field", "harbor", "sea_ice"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR100_NAMES = ["apple", "aquarium_fish", "maple_tree", "baby", "bear"]


def class_grey(c):
    """The mean grey level of class c's images (distinct per class)."""
    return 30 + (c * 70) % 200


def image_array(c, i, size=32, seed=0):
    rng = np.random.default_rng([seed, c, i])
    noise = rng.integers(-12, 13, size=(size, size, 3))
    return np.clip(class_grey(c) + noise, 0, 255).astype(np.uint8)


def write_jpeg(path, c, i, size=32):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(image_array(c, i, size)).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


def _names(base, n, fmt):
    return [base[c] if c < len(base) else fmt.format(c) for c in range(n)]


def _split_order(per_class_train, per_class_test):
    """Per-class image indices with their split, train and test interleaved as in the real files."""
    flags = [True] * per_class_train + [False] * per_class_test
    return sorted(range(len(flags)), key=lambda k: (k % 2, k)), flags


def _write_lines(path, lines):
    Path(path).write_text("".join(line + "\n" for line in lines))


def _cub(d, n, ntr, nte, size):
    classes = [f"{c + 1:03d}.{name}" for c, name in enumerate(_names(CUB_NAMES, n, "Bird_{}"))]
    images, labels, split = [], [], []
    order, flags = _split_order(ntr, nte)
    image_id = 0
    for c, cls in enumerate(classes):
        for k in order:
            image_id += 1
            rel = f"{cls}/{cls.split('.', 1)[1]}_{k + 1:04d}_{image_id}.jpg"
            write_jpeg(d / "images" / rel, c, k, size)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(flags[k])}")
    _write_lines(d / "images.txt", images)
    _write_lines(d / "image_class_labels.txt", labels)
    _write_lines(d / "train_test_split.txt", split)
    _write_lines(d / "classes.txt", [f"{c + 1} {cls}" for c, cls in enumerate(classes)])


def _nabirds(d, n, ntr, nte, size):
    leaves = [NABIRDS_LEAVES[c] if c < len(NABIRDS_LEAVES) else (400 + c, f"Bird {c}") for c in range(n)]
    classes = sorted(NABIRDS_NONLEAF + leaves)
    rng = np.random.default_rng(0)
    images, labels, split = [], [], []
    order, flags = _split_order(ntr, nte)
    for c, (cid, _) in enumerate(leaves):
        for k in order:
            uid = uuid.UUID(bytes=rng.bytes(16))
            rel = f"{cid:04d}/{uid.hex}.jpg"
            write_jpeg(d / "images" / rel, c, k, size)
            images.append(f"{uid} {rel}")
            labels.append(f"{uid} {cid}")
            split.append(f"{uid} {int(flags[k])}")
    _write_lines(d / "images.txt", images)
    _write_lines(d / "image_class_labels.txt", labels)
    _write_lines(d / "train_test_split.txt", split)
    _write_lines(d / "classes.txt", [f"{cid} {name}" for cid, name in classes])
    parent = {295: 1, 296: 297, 299: 297, 297: 0, 1: 0}
    _write_lines(d / "hierarchy.txt", [f"{cid} {parent.get(cid, 1)}" for cid, _ in classes if cid != 0])


def _birdsnap(d, n, ntr, nte, size):
    species = [BIRDSNAP_SPECIES[c] if c < len(BIRDSNAP_SPECIES) else (f"Bird {c}", f"Avis {c}", f"Bird_{c}")
               for c in range(n)]
    _write_lines(d / "species.txt", ["id\tcommon\tscientific\tdir"] + [
        f"{c + 1}\t{common}\t{sci}\t{folder.lower()}" for c, (common, sci, folder) in enumerate(species)])
    rows, tests = ["\t".join(BIRDSNAP_IMAGES_HEADER)], ["path"]
    order, flags = _split_order(ntr, nte)
    number = 500
    for c, (_, _, folder) in enumerate(species):
        for k in order:
            number += 7
            rel = f"{folder}/{number}.jpg"
            md5 = write_jpeg(d / "download" / "images" / rel, c, k, size)
            box = ["3", "4", str(size - 3), str(size - 2)]
            parts = [str(5 + (j * 3) % (size - 10)) for j in range(2 * len(BIRDSNAP_PARTS))]
            url = f"http://farm{1 + c % 9}.staticflickr.com/{number}/{number}_abc_o.jpg"
            rows.append("\t".join([url, md5, rel, str(c + 1)] + box + parts))
            if not flags[k]:
                tests.append(rel)
    _write_lines(d / "images.txt", rows)
    _write_lines(d / "test_images.txt", tests)
    (d / "get_birdsnap.py").write_text("# the official downloader ships here; the fixture does not run it\n")


def _stanford_dogs(d, n, ntr, nte, size):
    from scipy.io import savemat

    folders = [DOG_FOLDERS[c] if c < len(DOG_FOLDERS) else f"n0299{c:04d}-Dog_breed_{c}" for c in range(n)]
    lists = {"train": [], "test": []}
    for c, folder in enumerate(folders):
        wnid = folder.split("-")[0]
        for k in range(ntr + nte):
            rel = f"{folder}/{wnid}_{1000 + 37 * k}.jpg"
            write_jpeg(d / "Images" / rel, c, k, size)
            lists["train" if k < ntr else "test"].append((rel, c + 1))
    for split, entries in [("file", lists["train"] + lists["test"])] + list(lists.items()):
        files = np.empty((len(entries), 1), dtype=object)
        annos = np.empty((len(entries), 1), dtype=object)
        for i, (rel, _) in enumerate(entries):
            files[i, 0] = np.array([rel])
            annos[i, 0] = np.array([rel[:-4]])
        labels = np.array([[float(y)] for _, y in entries])
        savemat(str(d / f"{split}_list.mat"), {"file_list": files, "annotation_list": annos, "labels": labels})


def _resisc45(d, n, ntr, nte, size):
    for c, cls in enumerate(_names(RESISC45_CLASSES, n, "scene_class_{}")):
        for k in range(ntr + nte):
            write_jpeg(d / cls / f"{cls}_{k + 1:03d}.jpg", c, k, size)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(items, label_key, batch_label, extra=None):
    data = np.stack([np.ascontiguousarray(a.transpose(2, 0, 1)).reshape(-1) for a, _ in items]) if items else \
        np.zeros((0, 3072), np.uint8)
    out = {b"batch_label": batch_label.encode(), label_key.encode(): [y for _, y in items], b"data": data,
           b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(items))]}
    out.update(extra or {})
    return out


def _cifar_items(n, per_class, offset):
    return [(image_array(c, offset + k, 32), c) for k in range(per_class) for c in range(n)]


def _cifar10(d, n, ntr, nte, size):
    src = d / "cifar-10-batches-py"
    src.mkdir(parents=True)
    train = _cifar_items(n, ntr, 0)
    for b in range(5):
        _pickle(src / f"data_batch_{b + 1}", _cifar_batch(train[b::5], "labels", f"training batch {b + 1} of 5"))
    _pickle(src / "test_batch", _cifar_batch(_cifar_items(n, nte, 1000), "labels", "testing batch 1 of 1"))
    names = _names(CIFAR10_NAMES, n, "thing_{}")
    _pickle(src / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": [x.encode() for x in names],
                                   b"num_vis": 3072})


def _cifar100(d, n, ntr, nte, size):
    src = d / "cifar-100-python"
    src.mkdir(parents=True)
    for split, per, off, label in (("train", ntr, 0, "training batch 1 of 1"), ("test", nte, 1000, "testing batch 1 of 1")):
        items = _cifar_items(n, per, off)
        coarse = {b"coarse_labels": [y // 2 for _, y in items]}
        _pickle(src / split, _cifar_batch(items, "fine_labels", label, coarse))
    names = _names(CIFAR100_NAMES, n, "thing_{}")
    _pickle(src / "meta", {b"fine_label_names": [x.encode() for x in names],
                           b"coarse_label_names": [f"super_{i}".encode() for i in range((n + 1) // 2)]})


_BUILDERS = {"cub": _cub, "nabirds": _nabirds, "birdsnap": _birdsnap, "stanford_dogs": _stanford_dogs,
             "resisc45": _resisc45, "cifar10": _cifar10, "cifar100": _cifar100}

# The human-readable class names each fixture must read back as (n_classes <= 5).
EXPECTED_CLASSNAMES = {
    "cub": ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani", "Crested Auklet"],
    "nabirds": [name for _, name in NABIRDS_LEAVES],
    "birdsnap": [s[0] for s in BIRDSNAP_SPECIES],
    "stanford_dogs": ["Chihuahua", "Japanese spaniel", "Maltese dog", "Pekinese", "Shih-Tzu"],
    "resisc45": ["airplane", "baseball diamond", "ground track field", "harbor", "sea ice"],
    "cifar10": CIFAR10_NAMES,
    "cifar100": ["apple", "aquarium fish", "maple tree", "baby", "bear"],
}


def build_official_fixture(root, name, n_classes=3, per_class_train=4, per_class_test=2, size=32):
    """Write a tiny `name` tree in its official layout under root/OFFICIAL_DIRS[name]; return that folder.
    (CIFAR images are always 32x32, as in the real archives; RESISC45 has no official split, so it gets
    per_class_train + per_class_test images per class and the reader's rule splits them.)"""
    d = Path(root) / OFFICIAL_DIRS[name]
    d.mkdir(parents=True, exist_ok=True)
    _BUILDERS[name](d, n_classes, per_class_train, per_class_test, size)
    return d
