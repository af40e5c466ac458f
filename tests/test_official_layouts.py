"""Readers of the official archive layouts (clip_adapt/data/official.py) on tiny fixture trees written in
each archive's real layout (tests/official_fixtures.py). No Dassl."""
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.official_fixtures import EXPECTED_CLASSNAMES, build_official_fixture, class_grey
from clip_adapt.data.errors import DatasetError
from clip_adapt.data.official import (
    OFFICIAL_COUNTS, OFFICIAL_DIRS, OFFICIAL_URLS, READERS, OfficialSplit, read_birdsnap, read_cifar10,
    read_cifar100, read_resisc45, resisc45_split_class,
)

NAMES = sorted(READERS)
N_CLASSES, N_TRAIN, N_TEST = 3, 4, 2


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One pristine fixture per dataset (read-only use; tests that break a tree copy it first)."""
    root = tmp_path_factory.mktemp("official")
    return {name: build_official_fixture(root, name, N_CLASSES, N_TRAIN, N_TEST) for name in NAMES}


@pytest.fixture
def fresh(tmp_path):
    """A fixture tree of its own, to be modified by the test."""
    return lambda name, **kw: build_official_fixture(tmp_path, name, **kw)


def expected_counts(name):
    if name == "resisc45":  # no official split: 20% of each class's 6 images (round(1.2) = 1) are train
        return N_CLASSES * 1, N_CLASSES * 5
    return N_CLASSES * N_TRAIN, N_CLASSES * N_TEST


def _lines(path):
    return path.read_text().splitlines()


# --------------------------------------------------------------------------------------------- reading fixtures
@pytest.mark.parametrize("name", NAMES)
def test_reads_official_layout(fixtures, name):
    d = fixtures[name]
    split = READERS[name](d)
    assert isinstance(split, OfficialSplit) and split.val is None and split.missing == []
    assert (len(split.train), len(split.test)) == expected_counts(name)
    assert split.classnames == EXPECTED_CLASSNAMES[name][:N_CLASSES]
    for part in (split.train, split.test):
        assert sorted({y for _, y, _ in part}) == list(range(N_CLASSES))  # 0-based, contiguous, every class
        for rel, y, cname in part:
            assert cname == split.classnames[y]
            assert not os.path.isabs(rel) and "\\" not in rel and ".." not in rel.split("/")
            assert (d / rel).is_file(), rel
    assert not {r for r, _, _ in split.train} & {r for r, _, _ in split.test}
    # the image behind each label is the class's image (grey level per class in the fixture)
    for rel, y, _ in split.train + split.test:
        mean = np.asarray(Image.open(d / rel).convert("L"), dtype=np.float64).mean()
        assert abs(mean - class_grey(y)) < 6, (rel, y, mean)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(fixtures, name):
    assert READERS[name](fixtures[name]) == READERS[name](fixtures[name])


def test_interface_tables_cover_every_reader():
    for table in (OFFICIAL_DIRS, OFFICIAL_COUNTS, OFFICIAL_URLS):
        assert set(table) == set(READERS)
    assert OFFICIAL_COUNTS["cub"] == {"train": 5994, "test": 5794, "classes": 200}
    assert OFFICIAL_COUNTS["resisc45"]["train"] + OFFICIAL_COUNTS["resisc45"]["test"] == 45 * 700


def test_nabirds_non_leaf_classes_are_not_labels(fixtures):
    d = fixtures["nabirds"]
    assert any(line.split(None, 1)[1] == "Birds" for line in _lines(d / "classes.txt"))
    split = READERS["nabirds"](d)
    assert "Birds" not in split.classnames and len(split.classnames) == N_CLASSES


# ---------------------------------------------------------------------------------------------------- RESISC45
def test_resisc45_split_rule():
    files = [f"harbor_{i:03d}.jpg" for i in range(1, 701)]
    train, test = resisc45_split_class("harbor", list(reversed(files)))
    assert (len(train), len(test)) == (140, 560)
    assert sorted(train + test) == files and not set(train) & set(test)
    assert (train, test) == resisc45_split_class("harbor", files)  # listing order does not matter
    assert train != resisc45_split_class("airport", files)[0]  # each class has its own permutation
    assert train != files[:140]  # a random subset, not the first files


def test_resisc45_split_independent_of_other_classes_and_location(tmp_path):
    small = read_resisc45(build_official_fixture(tmp_path / "a", "resisc45", n_classes=2, per_class_train=8))
    big = read_resisc45(build_official_fixture(tmp_path / "b", "resisc45", n_classes=4, per_class_train=8))
    assert len(small.train) == 2 * 2  # round(0.2 * 10) per class
    for part in ("train", "test"):
        assert set(getattr(small, part)) <= set(getattr(big, part))


def test_resisc45_ignores_the_split_layer_outputs(fixtures, fresh):
    d = fresh("resisc45")
    (d / "split_fewshot_v0.1_s0").mkdir()
    (d / "split_fewshot_v0.1_s0" / "shot_1-seed_1.json").write_text("{}")
    (d / "split_clipadapt_resisc45.json").write_text("{}")
    assert read_resisc45(d) == read_resisc45(fixtures["resisc45"])


def test_resisc45_rejects_non_image_and_stray_files(fresh):
    d = fresh("resisc45")
    bad = d / "airplane"
    (bad / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="notes.txt: not an image file") as e:
        read_resisc45(d)
    assert e.value.path == bad / "notes.txt"
    (bad / "notes.txt").unlink()
    shutil.copy(next(bad.iterdir()), d / "loose.jpg")
    with pytest.raises(DatasetError, match="outside any class folder"):
        read_resisc45(d)


# ------------------------------------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("name,reader", [("cifar10", read_cifar10), ("cifar100", read_cifar100)])
def test_cifar_png_export_is_exact_and_reused(fresh, name, reader):
    d = fresh(name)
    split = reader(d)
    src = d / ("cifar-10-batches-py/data_batch_1" if name == "cifar10" else "cifar-100-python/train")
    with open(src, "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert split.train[0][0] == "images/train/00000.png"
    assert np.array_equal(np.asarray(Image.open(d / split.train[0][0])), first)  # lossless, archive order
    files = sorted(p for p in (d / "images").rglob("*") if p.is_file())
    assert len(files) == len(split.train) + len(split.test) + 1  # + manifest
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    assert reader(d) == split
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes  # second call did not rewrite
    assert not [p for p in d.iterdir() if p.name.startswith(".images-")]  # no temp folders left behind


@pytest.mark.parametrize("damage", ["no_manifest", "file_missing", "other_labels"])
def test_cifar_partial_export_is_never_used(fresh, damage):
    d = fresh("cifar10")
    split = read_cifar10(d)
    export = d / "images"
    if damage == "no_manifest":  # an export interrupted before it finished (no manifest written)
        (export / "export.json").unlink()
        (export / "train" / "00003.png").write_bytes(b"truncated")
    elif damage == "file_missing":
        (export / "test" / "00001.png").unlink()
    else:  # the archive changed since the export
        meta = d / "cifar-10-batches-py" / "test_batch"
        with open(meta, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        batch[b"labels"] = [(y + 1) % N_CLASSES for y in batch[b"labels"]]
        with open(meta, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    again = read_cifar10(d)
    if damage != "other_labels":
        assert again == split
    assert (export / "export.json").is_file()
    for rel, _, _ in again.train + again.test:
        Image.open(d / rel).load()  # every file is a complete PNG again
    assert sorted(p.name for p in (export / "test").iterdir()) == [f"{i:05d}.png" for i in range(len(again.test))]


# ------------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("name", NAMES)
def test_missing_dataset_folder(tmp_path, name):
    d = tmp_path / OFFICIAL_DIRS[name]
    with pytest.raises(DatasetError) as e:
        READERS[name](d)
    assert e.value.path == d and str(d) in str(e.value)
    assert e.value.hint  # says how to obtain it


MISSING_METADATA = {
    "cub": "train_test_split.txt",
    "nabirds": "image_class_labels.txt",
    "birdsnap": "test_images.txt",
    "stanford_dogs": "test_list.mat",
    "cifar10": "cifar-10-batches-py/data_batch_3",
    "cifar100": "cifar-100-python/meta",
}


@pytest.mark.parametrize("name", sorted(MISSING_METADATA))
def test_missing_metadata_file(fresh, name):
    d = fresh(name)
    (d / MISSING_METADATA[name]).unlink()
    with pytest.raises(DatasetError) as e:
        READERS[name](d)
    assert e.value.path == d / MISSING_METADATA[name] and str(d / MISSING_METADATA[name]) in str(e.value)
    assert OFFICIAL_URLS[name].split("/")[2] in e.value.hint


def test_resisc45_without_class_folders(fresh):
    d = fresh("resisc45")
    for p in list(d.iterdir()):
        shutil.rmtree(p)
    with pytest.raises(DatasetError, match="no class folders"):
        read_resisc45(d)


def _append(path, line):
    n = len(path.read_text().splitlines())
    with open(path, "a") as f:
        f.write(line + "\n")
    return f"{path}:{n + 1}"


MALFORMED = {  # file, appended line
    "cub": ("image_class_labels.txt", "17"),
    "nabirds": ("classes.txt", "x12 Some Bird"),
    "birdsnap": ("images.txt", "http://x/1.jpg\tabc"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_line_names_file_and_line(fresh, name):
    d = fresh(name)
    fname, line = MALFORMED[name]
    where = _append(d / fname, line)
    with pytest.raises(DatasetError) as e:
        READERS[name](d)
    assert where in str(e.value) and e.value.path == d / fname


@pytest.mark.parametrize("fname,line,match", [
    ("train_test_split.txt", "5 2", "expected '<image_id> <is_training_image 0|1>'"),
    ("image_class_labels.txt", "3 1", "duplicate id '3'"),
    ("image_class_labels.txt", "99 1", "image id '99' is not in"),
    ("classes.txt", "7", "malformed line"),
])
def test_cub_inconsistent_metadata(fresh, fname, line, match):
    d = fresh("cub")
    where = _append(d / fname, line)
    with pytest.raises(DatasetError, match=match) as e:
        READERS["cub"](d)
    assert where in str(e.value)


def test_cub_label_outside_classes_and_id_absent(fresh):
    d = fresh("cub")
    f = d / "image_class_labels.txt"
    lines = _lines(f)
    lines[4] = lines[4].split()[0] + " 201"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=f"{f}:5: class id 201 is not in"):
        READERS["cub"](d)
    d2 = fresh("nabirds")  # an image id of images.txt without a train/test flag
    f2 = d2 / "train_test_split.txt"
    f2.write_text("\n".join(_lines(f2)[1:]) + "\n")
    with pytest.raises(DatasetError, match="1 image ids of .* are absent") as e:
        READERS["nabirds"](d2)
    assert e.value.path == f2


def test_birdsnap_metadata_errors(fresh):
    d = fresh("birdsnap")
    where = _append(d / "test_images.txt", "Nobody/1.jpg")
    with pytest.raises(DatasetError, match="not listed in") as e:
        read_birdsnap(d)
    assert where in str(e.value)
    d = fresh("birdsnap")
    (d / "species.txt").write_text("identifier\tcommon\n1\tBlue Jay\n")
    with pytest.raises(DatasetError, match=r"species.txt:1: malformed header"):
        read_birdsnap(d)
    d = fresh("birdsnap")
    f = d / "images.txt"
    lines = _lines(f)
    fields = lines[1].split("\t")
    fields[3] = "42"
    lines[1] = "\t".join(fields)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=f"{f}:2: species_id 42 is not in"):
        read_birdsnap(d)


def _rewrite_mat(path, **changes):
    from scipy.io import loadmat, savemat

    mat = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    mat.update(changes)
    savemat(str(path), mat)
    return mat


def test_stanford_dogs_malformed_lists(fresh):
    d = fresh("stanford_dogs")
    labels = _rewrite_mat(d / "test_list.mat")["labels"].copy()
    labels[2, 0] = 0  # labels are 1-based
    _rewrite_mat(d / "test_list.mat", labels=labels)
    with pytest.raises(DatasetError, match=f"{d / 'test_list.mat'}:3: malformed entry 3"):
        READERS["stanford_dogs"](d)
    labels[2, 0] = 3  # a file of the second breed's folder labelled as the third breed
    _rewrite_mat(d / "test_list.mat", labels=labels)
    with pytest.raises(DatasetError, match=f"{d / 'test_list.mat'}:3: label 3 is used for folders"):
        READERS["stanford_dogs"](d)
    mat = _rewrite_mat(d / "train_list.mat")
    del mat["labels"]
    from scipy.io import savemat
    savemat(str(d / "train_list.mat"), mat)
    with pytest.raises(DatasetError, match="variable 'labels' missing") as e:
        READERS["stanford_dogs"](d)
    assert e.value.path == d / "train_list.mat"
    (d / "train_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="unreadable .mat file"):
        READERS["stanford_dogs"](d)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_malformed_pickles(fresh, name):
    d = fresh(name)
    src = d / ("cifar-10-batches-py/test_batch" if name == "cifar10" else "cifar-100-python/test")
    key = b"labels" if name == "cifar10" else b"fine_labels"
    with open(src, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[key][1] = 57
    with open(src, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(DatasetError, match=f"{src}: label 57 of image 1 is outside") as e:
        READERS[name](d)
    assert e.value.path == src
    src.write_bytes(src.read_bytes()[:100])
    with pytest.raises(DatasetError, match="unreadable CIFAR pickle"):
        READERS[name](d)
    assert not (d / "images").exists()  # nothing exported from a broken archive


LISTED = {"cub": "images.txt", "nabirds": "images.txt", "birdsnap": "images.txt", "stanford_dogs": "train_list.mat"}


@pytest.mark.parametrize("name", sorted(LISTED))
def test_listed_image_absent_names_the_path(fixtures, fresh, name):
    d = fresh(name)
    rel = READERS[name](fixtures[name]).train[1][0]
    (d / rel).unlink()
    with pytest.raises(DatasetError) as e:
        READERS[name](d)
    assert e.value.path == d / rel and str(d / rel) in str(e.value)
    assert "1 of " in str(e.value) and LISTED[name] in str(e.value)


def test_many_missing_images_are_counted_and_the_first_named(fixtures, fresh):
    d = fresh("cub")
    rels = [r for r, _, _ in READERS["cub"](fixtures["cub"]).test]
    for rel in rels:
        (d / rel).unlink()
    with pytest.raises(DatasetError, match=f"{len(rels)} of 18 images listed in .*images.txt are missing") as e:
        READERS["cub"](d)
    assert "(and 1 more)" in str(e.value)
    assert sum(str(d / r) in str(e.value) for r in rels) == 5


def test_birdsnap_allow_missing_reports_instead_of_dropping_silently(fixtures, fresh):
    d = fresh("birdsnap")
    full = read_birdsnap(fixtures["birdsnap"])
    gone = [full.train[0][0], full.test[1][0]]
    for rel in gone:
        (d / rel).unlink()
    with pytest.raises(DatasetError, match="2 of 18 images .* are missing") as e:
        read_birdsnap(d)
    assert "allow_missing" in e.value.hint
    split = read_birdsnap(d, allow_missing=True)
    assert sorted(split.missing) == sorted(gone)
    assert len(split.train) == len(full.train) - 1 and len(split.test) == len(full.test) - 1
    assert not {r for r, _, _ in split.train + split.test} & set(gone)
    assert split.classnames == full.classnames


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_cifar_export_into_read_only_folder_is_a_dataset_error(fresh):
    d = fresh("cifar10")
    d.chmod(0o555)
    try:
        with pytest.raises(DatasetError, match="cannot write the PNG export") as e:
            read_cifar10(d)
        assert e.value.path == d / "images"
    finally:
        d.chmod(0o755)


def test_cifar_export_is_readable_by_others(fresh):
    d = fresh("cifar100")
    old = os.umask(0o022)
    try:
        read_cifar100(d)
    finally:
        os.umask(old)
    assert (d / "images").stat().st_mode & 0o055 == 0o055


def test_cifar_failed_export_leaves_nothing_usable(fresh, monkeypatch):
    from clip_adapt.data import official

    d = fresh("cifar10")
    calls = []

    def disk_full(arrays, folder, desc):
        calls.append(folder)
        folder.mkdir(parents=True)
        (folder / "00000.png").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(official, "_write_pngs", disk_full)
    with pytest.raises(DatasetError, match="cannot write the PNG export .*No space left") as e:
        read_cifar10(d)
    assert e.value.path == d / "images" and calls
    assert not (d / "images").exists() and not [p for p in d.iterdir() if p.name.startswith(".images-")]
    monkeypatch.undo()
    assert len(read_cifar10(d).train) == N_CLASSES * N_TRAIN
