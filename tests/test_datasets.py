"""The dataset layer without Dassl: split files, val carve, few-shot caches, base/new, errors, catalog, check command."""
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.dataset_fixtures import build_fixture_dataset, write_image
from tools import check_dataset
from clip_adapt.data import catalog
from clip_adapt.data.download import fetch
from clip_adapt.data.errors import DatasetError
from clip_adapt.data.loader import load_dataset, open_image
from clip_adapt.data.splits import carve_val, fewshot, read_split, subsample_classes, write_split
from clip_adapt.prompts import DATASET_CLASSES

ISSUE_DATASETS = ("cub", "birdsnap", "stanford_dogs", "nabirds", "caltech101", "oxford_pets", "stanford_cars",
                  "oxford_flowers", "food101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "resisc45",
                  "imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r", "cifar10", "cifar100")


def _names_param():
    return list(catalog.NAMES)


def _per_class(items):
    counts = {}
    for _, label, _ in items:
        counts[label] = counts.get(label, 0) + 1
    return counts


# ---- every dataset from a fixture in its real layout ----------------------------------------------------------
@pytest.mark.parametrize("name", _names_param())
def test_every_dataset_loads_from_its_real_layout(name, tmp_path):
    assert build_fixture_dataset(tmp_path, name, n_classes=3, n_train=4, n_val=2, n_test=3) == name
    d = load_dataset(name, tmp_path)
    info = catalog.get(name)
    assert len(d.classnames) == 3 and len(set(d.classnames)) == 3
    for cname in d.classnames:  # human-readable: no "001." prefixes, no WordNet ids, not a number
        assert not re.match(r"^\d+[._]", cname) and not re.match(r"^n\d{8}$", cname) and not cname.isdigit(), cname
    for items in (d.train, d.val, d.test):
        assert sorted({label for _, label, _ in items}) == ([0, 1, 2] if items else [])
        for path, label, cname in items:
            assert os.path.isabs(path) and os.path.isfile(path) and d.classnames[label] == cname
    if name == "resisc45":  # no official split: official.read_resisc45 takes 20% of each class as train
        total = _per_class(d.train + d.val + d.test)
        assert total == {0: 9, 1: 9, 2: 9} and len(d.test) > len(d.train) + len(d.val) and d.val
        return
    assert _per_class(d.test) == {0: 3, 1: 3, 2: 3}
    if info.test_only:
        assert d.train == [] and d.val == []
    elif info.counts.get("val") is None:  # carved: 6 train images per class -> round(0.6) = 1 to val
        assert _per_class(d.val) == {0: 1, 1: 1, 2: 1} and _per_class(d.train) == {0: 5, 1: 5, 2: 5}
    else:
        assert _per_class(d.train) == {0: 4, 1: 4, 2: 4} and _per_class(d.val) == {0: 2, 1: 2, 2: 2}
    # the split file holds relative paths only
    data = json.loads(d.split_file.read_text())
    assert all(not os.path.isabs(rel) for s in data.values() for rel, _, _ in s)


def test_coop_split_file_is_read_as_it_is(tmp_path):
    """A split_zhou file exactly as CoOp ships it (paths relative to image_dir, CoOp's class names)."""
    ddir = tmp_path / "oxford_pets"
    split = {"train": [["Abyssinian_1.jpg", 0, "abyssinian"], ["american_bulldog_10.jpg", 1, "american_bulldog"]],
             "val": [["Abyssinian_2.jpg", 0, "abyssinian"], ["american_bulldog_11.jpg", 1, "american_bulldog"]],
             "test": [["Abyssinian_3.jpg", 0, "abyssinian"], ["american_bulldog_12.jpg", 1, "american_bulldog"]]}
    for s in split.values():
        for rel, label, _ in s:
            write_image(ddir / "images" / rel, label, 0)
    (ddir / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    d = load_dataset("oxford_pets", tmp_path)
    assert d.classnames == ["abyssinian", "american_bulldog"]
    assert d.train[0] == (str(ddir / "images" / "Abyssinian_1.jpg"), 0, "abyssinian")
    assert not list(ddir.glob("split_clipadapt_*"))  # nothing written next to CoOp's file


def test_split_file_written_once_then_reused(tmp_path):
    build_fixture_dataset(tmp_path, "imagenet")
    first = load_dataset("imagenet", tmp_path)
    assert first.split_file == tmp_path / "imagenet" / "split_clipadapt_imagenet.json"
    stamp = first.split_file.stat().st_mtime_ns
    # a new image appearing later does not change the fixed split: the file is the split
    write_image(tmp_path / "imagenet" / "images" / "train" / "n01440764" / "late.JPEG", 0, 99)
    again = load_dataset("imagenet", tmp_path)
    assert again.split_file.stat().st_mtime_ns == stamp and again.train == first.train and again.val == first.val


def test_non_default_val_carve_gets_its_own_split_file(tmp_path):
    build_fixture_dataset(tmp_path, "imagenet", n_train=8, n_val=2)
    default = load_dataset("imagenet", tmp_path)
    other = load_dataset("imagenet", tmp_path, val_fraction=0.5, split_seed=3)
    assert other.split_file.name == "split_clipadapt_imagenet_val0.5_seed3.json"
    assert len(other.val) == 15 and len(default.val) == 3


# ---- val carve ------------------------------------------------------------------------------------------------
def _items(n_classes=4, per_class=10):
    return [(f"c{c}/img{i}.jpg", c, f"class {c}") for c in range(n_classes) for i in range(per_class)]


def test_carve_val_is_deterministic_per_class_and_order_independent():
    items = _items()
    train, val = carve_val(items, 0.2, seed=0)
    assert _per_class(val) == {c: 2 for c in range(4)} and _per_class(train) == {c: 8 for c in range(4)}
    assert sorted(train + val) == sorted(items)
    assert carve_val(list(reversed(items)), 0.2, seed=0) == (train, val)
    assert carve_val(items, 0.2, seed=1)[1] != val


def test_carve_val_keeps_small_classes_in_train():
    items = [("a.jpg", 0, "a"), ("b.jpg", 1, "b"), ("c.jpg", 1, "b")]
    train, val = carve_val(items, 0.1, seed=0)
    assert _per_class(train) == {0: 1, 1: 1} and _per_class(val) == {1: 1}
    with pytest.raises(ValueError, match="VAL_FRACTION"):
        carve_val(items, 1.0, seed=0)


_SPLIT_SNIPPET = ("import sys, json; from pathlib import Path; from clip_adapt.data.loader import "
                  "load_dataset; d = load_dataset(sys.argv[1], Path(sys.argv[2]), num_shots=int(sys.argv[3]), seed=5);"
                  "print(json.dumps([d.train, d.val]))")


def _load_in_fresh_process(name, root, shots, hashseed):
    env = {**os.environ, "PYTHONHASHSEED": str(hashseed)}
    out = subprocess.run([sys.executable, "-c", _SPLIT_SNIPPET, name, str(root), str(shots)], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_val_carve_and_fewshot_are_identical_across_processes(tmp_path):
    build_fixture_dataset(tmp_path / "a", "imagenet", n_train=8, n_val=2)
    build_fixture_dataset(tmp_path / "b", "imagenet", n_train=8, n_val=2)
    a = _load_in_fresh_process("imagenet", tmp_path / "a", 2, hashseed=1)
    b = _load_in_fresh_process("imagenet", tmp_path / "b", 2, hashseed=2)
    def rel(split, root):
        return [[Path(p).relative_to(root).as_posix(), y, c] for p, y, c in split]

    assert [rel(s, tmp_path / "a") for s in a] == [rel(s, tmp_path / "b") for s in b]
    assert (tmp_path / "a" / "imagenet" / "split_clipadapt_imagenet.json").read_bytes() == \
        (tmp_path / "b" / "imagenet" / "split_clipadapt_imagenet.json").read_bytes()


# ---- few-shot -------------------------------------------------------------------------------------------------
def test_fewshot_is_seeded_and_cached_as_json_with_relative_paths(tmp_path):
    build_fixture_dataset(tmp_path, "dtd", n_train=6, n_val=5)
    d1 = load_dataset("dtd", tmp_path, num_shots=2, seed=1)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_1.json"
    assert cache.is_file()
    data = json.loads(cache.read_text())
    assert all(not os.path.isabs(rel) for s in ("train", "val") for rel, _, _ in data[s])
    assert _per_class(d1.train) == {0: 2, 1: 2, 2: 2} and _per_class(d1.val) == {0: 2, 1: 2, 2: 2}
    assert load_dataset("dtd", tmp_path, num_shots=2, seed=1).train == d1.train  # from the cache
    d2 = load_dataset("dtd", tmp_path, num_shots=2, seed=2)
    assert d2.train != d1.train
    six = load_dataset("dtd", tmp_path, num_shots=6, seed=1)
    assert _per_class(six.train) == {0: 6, 1: 6, 2: 6} and _per_class(six.val) == {0: 4, 1: 4, 2: 4}  # min(K,4)
    assert d1.test == load_dataset("dtd", tmp_path).test  # test is never subsampled


def test_more_shots_than_a_class_has_is_an_error_naming_the_class_and_counts(tmp_path):
    build_fixture_dataset(tmp_path, "dtd", n_train=6, n_val=5)
    first = read_split(tmp_path / "dtd" / "split_zhou_DescribableTextures.json")["train"][0]
    with pytest.raises(DatasetError) as err:
        load_dataset("dtd", tmp_path, num_shots=7, seed=1)
    msg = str(err.value)
    assert f"class {first[2]!r}" in msg and "only 6 train image(s)" in msg and "the 7 requested" in msg
    assert "DATASET.NUM_SHOTS 7" in msg and "DATASET.NUM_SHOTS <= 6" in msg
    assert not (tmp_path / "dtd" / "split_fewshot" / "shot_7-seed_1.json").exists()


def test_fewshot_cache_is_what_is_used(tmp_path):
    """The cache is the source of truth once written (a rerun never re-samples); a file of an older sampling rule
    (no `fewshot_rule` marker) is not served."""
    from clip_adapt.data.splits import write_fewshot_json

    build_fixture_dataset(tmp_path, "dtd", n_train=6)
    first = load_dataset("dtd", tmp_path, num_shots=1, seed=1)
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_1-seed_1.json"
    split = read_split(cache)
    edited = split["train"][:1] + [it for it in read_split(tmp_path / "dtd" /
                                   "split_zhou_DescribableTextures.json")["train"] if it[1] > 0][:2]
    write_fewshot_json(cache, edited, split["val"])
    assert load_dataset("dtd", tmp_path, num_shots=1, seed=1).train != first.train
    write_split(cache, split | {"train": edited})  # old format: ignored, the picks are drawn again
    assert load_dataset("dtd", tmp_path, num_shots=1, seed=1).train == first.train


def test_fewshot_rule_is_coops_draw_order():
    """Classes in order of first appearance, items in list order, one random.sample per class, train then val
    from one stream seeded with SEED (what Dassl's generate_fewshot_dataset does after CoOp's set_random_seed)."""
    import random

    items = _items(per_class=10)
    mixed = items[10:] + items[:10]  # class 1 first
    val = _items(per_class=5)
    train_a, val_a = fewshot(mixed, val, 3, seed=0)
    assert _per_class(train_a) == {c: 3 for c in range(4)} and _per_class(val_a) == {c: 3 for c in range(4)}
    rng = random.Random(0)
    groups = {}
    for it in mixed:
        groups.setdefault(it[1], []).append(it)
    expected = [x for g in groups.values() for x in rng.sample(g, 3)]
    vgroups = {}
    for it in val:
        vgroups.setdefault(it[1], []).append(it)
    assert train_a == expected and [it[1] for it in train_a[:3]] == [1, 1, 1]
    assert val_a == [x for g in vgroups.values() for x in rng.sample(g, 3)]
    assert fewshot(mixed, val, 3, seed=0) == (train_a, val_a) and fewshot(mixed, val, 3, seed=1) != (train_a, val_a)
    assert _per_class(fewshot(mixed, val, 8, seed=0)[1]) == {c: 4 for c in range(4)}  # val: min(K, 4)
    assert _per_class(fewshot(mixed, val[:2] + val[5:], 8, seed=0)[1])[0] == 2  # a short val class keeps all


# ---- base / new -----------------------------------------------------------------------------------------------
def test_subsample_classes_base_and_new_relabel_contiguously(tmp_path):
    build_fixture_dataset(tmp_path, "caltech101", n_classes=4)
    full = load_dataset("caltech101", tmp_path)
    base = load_dataset("caltech101", tmp_path, subsample="base")
    new = load_dataset("caltech101", tmp_path, subsample="new")
    assert base.classnames == full.classnames[:2] and new.classnames == full.classnames[2:]
    for d in (base, new):
        for items in (d.train, d.val, d.test):
            assert sorted({y for _, y, _ in items}) == [0, 1]
            assert all(d.classnames[y] == c for _, y, c in items)
    assert {p for p, _, _ in base.test} | {p for p, _, _ in new.test} == {p for p, _, _ in full.test}
    odd = subsample_classes("base", _items(n_classes=5))[0]
    assert sorted({y for _, y, _ in odd}) == [0, 1, 2]  # ceil(5/2) base classes, as CoOp
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        subsample_classes("half", _items())


# ---- errors name the path -------------------------------------------------------------------------------------
def test_missing_folder_names_path_and_how_to_obtain(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("oxford_pets", tmp_path)
    assert str(tmp_path / "oxford_pets") in str(e.value) and "how to obtain" in str(e.value)
    assert "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs" in str(e.value)  # CoOp split file's gdown id
    assert e.value.path == tmp_path / "oxford_pets"


@pytest.mark.parametrize("name,meta", [("oxford_pets", "split_zhou_OxfordPets.json"),
                                       ("fgvc_aircraft", "variants.txt"),
                                       ("fgvc_aircraft", "images_variant_test.txt"),
                                       ("imagenet", "classnames.txt"),
                                       ("imagenet_sketch", "classnames.txt")])
def test_missing_metadata_file_names_path(name, meta, tmp_path):
    build_fixture_dataset(tmp_path, name)
    path = tmp_path / catalog.get(name).folder / meta
    path.unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    assert str(path) in str(e.value) and "how to obtain" in str(e.value)


@pytest.mark.parametrize("name", ["oxford_pets", "imagenet", "fgvc_aircraft"])
def test_listed_image_absent_names_path(name, tmp_path):
    build_fixture_dataset(tmp_path, name)
    d = load_dataset(name, tmp_path)  # writes the split file (where ours)
    victim = Path(d.test[4][0])
    victim.unlink()
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    assert str(victim) in str(e.value) and e.value.path == victim


def test_unreadable_image_names_path(tmp_path):
    build_fixture_dataset(tmp_path, "eurosat")
    d = load_dataset("eurosat", tmp_path)
    bad = Path(d.train[0][0])
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        open_image(bad)
    assert open_image(d.train[1][0]).size == (32, 32)
    rc = check_dataset.main(["--root", str(tmp_path), "--verify-images", "eurosat"])
    assert rc == 1


def test_malformed_split_file_names_it(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": [["a.jpg", "zero", "cat"]], "test": []}))
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        read_split(path)
    path.write_text(json.dumps({"train": [["/abs/a.jpg", 0, "cat"]], "test": []}))
    with pytest.raises(DatasetError, match="absolute"):
        read_split(path)


def test_non_contiguous_labels_are_an_error(tmp_path):
    build_fixture_dataset(tmp_path, "dtd")
    f = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    split = json.loads(f.read_text())
    split["test"] = [[r, 5 if y == 2 else y, c] for r, y, c in split["test"]]
    f.write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="two class names|contiguous"):
        load_dataset("dtd", tmp_path)


# ---- catalog, configs -----------------------------------------------------------------------------------------
def test_catalog_covers_every_dataset_and_configs_name_its_registry_class():
    assert set(catalog.NAMES) == set(DATASET_CLASSES) and set(ISSUE_DATASETS) <= set(catalog.NAMES)
    configs = {p.stem for p in (REPO / "configs" / "datasets").glob("*.yaml")}
    assert configs == set(DATASET_CLASSES)
    for short, reg in DATASET_CLASSES.items():
        text = (REPO / "configs" / "datasets" / f"{short}.yaml").read_text()
        assert re.search(rf'NAME:\s*"?{reg}"?\s*$', text, re.M), short
        assert f'{reg} = register_dataset("{short}")' in (REPO / "datasets" / f"{short}.py").read_text()
        info = catalog.get(short)
        assert info.url.startswith("http") and info.counts.get("test") and info.counts.get("classes")
        if info.coop_split and short in ISSUE_DATASETS:  # CoOp's own split files
            assert info.split_file.startswith("split_zhou_") and re.fullmatch(r"[\w-]{33}", info.split_gdown)


# ---- check command --------------------------------------------------------------------------------------------
def _check(capsys, *argv):
    rc = check_dataset.main(list(argv))
    return rc, capsys.readouterr().out


def test_check_reports_missing_file_and_count_mismatch(tmp_path, capsys):
    build_fixture_dataset(tmp_path, "oxford_pets")
    rc, out = _check(capsys, "--root", str(tmp_path), "oxford_pets")
    assert rc == 1 and "MISMATCH" in out and re.search(r"test\s+9\s+3669\s+MISMATCH", out)
    victim = tmp_path / "oxford_pets" / "images" / "beagle_test1.jpg"
    victim.unlink()
    rc, out = _check(capsys, "--root", str(tmp_path), "oxford_pets")
    assert rc == 1 and str(victim) in out and "MISSING 1 of 9 test images" in out
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").unlink()
    rc, out = _check(capsys, "--root", str(tmp_path), "oxford_pets")
    assert rc == 1 and "MISSING: CoOp split file" in out and "gdown 1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs" in out
    rc, out = _check(capsys, "--root", str(tmp_path), "dtd")
    assert rc == 1 and f"MISSING folder {tmp_path / 'dtd'}" in out and "dtd-r1.0.1.tar.gz" in out


def test_check_passes_a_complete_dataset_with_matching_counts(tmp_path, capsys, monkeypatch):
    build_fixture_dataset(tmp_path, "imagenet")
    info = catalog.get("imagenet")
    monkeypatch.setitem(catalog._CATALOG, "imagenet", dataclasses.replace(
        info, counts={"train": 18, "val": None, "test": 9, "classes": 3}))
    rc, out = _check(capsys, "--root", str(tmp_path), "imagenet")
    assert rc == 0 and "status: OK" in out and re.search(r"train\+val\s+18\s+18", out)


def test_check_command_line(tmp_path):
    build_fixture_dataset(tmp_path, "fgvc_aircraft")
    proc = subprocess.run([sys.executable, "-m", "tools.check_dataset", "--root", str(tmp_path), "fgvc_aircraft"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "fgvc_aircraft" in proc.stdout and "3334" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "tools.check_dataset", "--root", str(tmp_path), "nope"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr


# ---- download: checksum verified ------------------------------------------------------------------------------
def test_fetch_verifies_md5(tmp_path):
    src = tmp_path / "archive.bin"
    src.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    dest = fetch(src.as_uri(), tmp_path / "dl" / "archive.bin", good)
    assert dest.read_bytes() == b"payload"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        fetch(src.as_uri(), tmp_path / "dl2" / "archive.bin", "0" * 32)
    assert not (tmp_path / "dl2" / "archive.bin").exists() and not (tmp_path / "dl2" / "archive.bin.part").exists()


def test_only_verified_archives_are_downloadable():
    for name in catalog.NAMES:
        for dl in catalog.get(name).downloads:
            assert dl.url.startswith("https://") and re.fullmatch(r"[0-9a-f]{32}", dl.md5)


def test_download_extracts_a_verified_archive_then_loads(tmp_path, monkeypatch):
    import tarfile

    build_fixture_dataset(tmp_path / "staging", "dtd")
    archive = tmp_path / "dtd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "staging" / "dtd", arcname="dtd")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    info = dataclasses.replace(catalog.get("dtd"), downloads=(catalog.Download(archive.as_uri(), md5, "dtd.tar.gz"),))
    monkeypatch.setitem(catalog._CATALOG, "dtd", info)
    root = tmp_path / "data"
    with pytest.raises(DatasetError):  # DATASET.DOWNLOAD False: nothing is fetched
        load_dataset("dtd", root)
    d = load_dataset("dtd", root, download=True)
    assert len(d.test) == 9 and (root / "downloads" / "dtd.tar.gz").is_file()


def test_check_reports_missing_official_metadata(tmp_path, capsys):
    build_fixture_dataset(tmp_path, "cub")
    (tmp_path / "CUB_200_2011" / "images.txt").unlink()
    rc, out = _check(capsys, "--root", str(tmp_path), "cub")
    assert rc == 1 and str(tmp_path / "CUB_200_2011" / "images.txt") in out and "CUB_200_2011.tgz" in out
