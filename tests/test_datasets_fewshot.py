"""Few-shot sets are CoOp's (Dassl's generate_fewshot_dataset after CoOp's seeding), CoOp's split_fewshot pkl is
read, and a read-only DATA folder is never written (split files go to the split cache folder)."""
import contextlib
import json
import os
import pickle
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.dataset_fixtures import build_fixture_dataset
from clip_adapt.data import catalog
from clip_adapt.data.errors import DatasetError
from clip_adapt.data.loader import load_dataset, split_folders
from clip_adapt.data.splits import read_coop_fewshot


def _shuffled_pets(root, n_classes=4, n_train=20, n_val=6, seed=0):
    """oxford_pets fixture whose split file lists train/val in a shuffled order (CoOp's draw depends on it)."""
    build_fixture_dataset(root, "oxford_pets", n_classes=n_classes, n_train=n_train, n_val=n_val, n_test=2)
    split_file = Path(root) / "oxford_pets" / catalog.get("oxford_pets").split_file
    split = json.loads(split_file.read_text())
    rng = random.Random(seed)
    for s in ("train", "val"):
        rng.shuffle(split[s])
    split_file.write_text(json.dumps(split))
    return Path(root) / "oxford_pets"


def _tree(root):
    """Every path under `root` with its size and mtime (what a run must leave untouched)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def read_only(folder):
    """Make `folder` (recursively) unwritable, also for root: chmod for a normal user; as root chmod does not
    stop writes, so the immutable attribute (chattr +i) is used. Skips, saying why, when neither works here."""
    folder = Path(folder)
    as_root = os.geteuid() == 0
    if as_root:
        if shutil.which("chattr") is None:
            pytest.skip("running as root (chmod does not stop root's writes) and chattr is not installed")
        proc = subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"running as root and chattr +i failed here ({proc.stderr.strip()}): no read-only folder")
    else:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in filenames:
                os.chmod(Path(dirpath) / name, 0o444)
            os.chmod(dirpath, 0o555)
    try:
        try:
            (folder / ".probe").write_text("x")
            probe_ok = True
        except OSError:
            probe_ok = False
        if probe_ok:
            (folder / ".probe").unlink()
            pytest.skip("the folder stayed writable after chmod/chattr on this file system")
        yield folder
    finally:
        if as_root:
            subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)
        else:
            for dirpath, dirnames, filenames in os.walk(folder):
                os.chmod(dirpath, 0o755)


# ---- parity with Dassl's generate_fewshot_dataset after CoOp's seeding -------------------------------------------
@pytest.mark.dassl
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("shots", [1, 4, 16])
def test_fewshot_sets_equal_dassls_generate_fewshot_dataset_after_coops_seeding(tmp_path, shots, seed):
    from dassl.data.datasets import DatasetBase, Datum
    from dassl.utils import set_random_seed

    _shuffled_pets(tmp_path)
    full = load_dataset("oxford_pets", tmp_path)  # the split file's lists, in its order
    train = [Datum(impath=p, label=y, classname=c) for p, y, c in full.train]
    val = [Datum(impath=p, label=y, classname=c) for p, y, c in full.val]
    # CoOp: train.py calls set_random_seed(cfg.SEED), then the dataset draws train, then val with min(K, 4)
    set_random_seed(seed)
    base = DatasetBase(train_x=train, val=val, test=val)
    dassl_train = base.generate_fewshot_dataset(train, num_shots=shots)
    dassl_val = base.generate_fewshot_dataset(val, num_shots=min(shots, 4))
    ours = load_dataset("oxford_pets", tmp_path, num_shots=shots, seed=seed)
    assert [p for p, _, _ in ours.train] == [d.impath for d in dassl_train]
    assert [p for p, _, _ in ours.val] == [d.impath for d in dassl_val]
    assert [y for _, y, _ in ours.train] == [d.label for d in dassl_train]
    again = load_dataset("oxford_pets", tmp_path, num_shots=shots, seed=seed)  # read back from our JSON file
    assert (again.train, again.val) == (ours.train, ours.val)


@pytest.mark.dassl
def test_an_existing_coop_pkl_is_read_and_its_contents_used(tmp_path):
    from dassl.data.datasets import Datum

    ddir = _shuffled_pets(tmp_path)
    full = load_dataset("oxford_pets", tmp_path)
    # picks no sampler would make: the last 2 train images of each class in list order, val the first of each
    by_class = {}
    for item in full.train:
        by_class.setdefault(item[1], []).append(item)
    picked = [it for items in by_class.values() for it in items[-2:]]
    first_val = list({y: (p, y, c) for p, y, c in reversed(full.val)}.values())
    moved = "/elsewhere/data/oxford_pets/images/"  # written on another machine: absolute paths of another root
    image_dir = str(ddir / "images") + "/"
    data = {"train": [Datum(impath=p, label=y, classname=c) for p, y, c in picked],
            "val": [Datum(impath=p, label=y, classname=c) for p, y, c in first_val]}
    for d in data["train"]:
        d._impath = d.impath.replace(image_dir, moved)
    (ddir / "split_fewshot").mkdir()
    with open(ddir / "split_fewshot" / "shot_2-seed_1.pkl", "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    got = load_dataset("oxford_pets", tmp_path, num_shots=2, seed=1)
    assert got.train == picked and got.val == first_val
    assert not (ddir / "split_fewshot" / "shot_2-seed_1.json").exists()  # nothing drawn, nothing written


@pytest.mark.dassl
def test_the_dassl_dataset_writes_coops_pkl_and_coop_reads_the_same_picks(tmp_path, dassl_cfg):
    import clip_adapt.plugin  # noqa: F401  registers the datasets
    from dassl.data.datasets import build_dataset

    ddir = _shuffled_pets(tmp_path)
    cfg = dassl_cfg(None, "DATASET.NAME", "OxfordPets", "DATASET.ROOT", str(tmp_path), "DATASET.NUM_SHOTS", "2",
                    "SEED", "3")
    ds = build_dataset(cfg)
    pkl = ddir / "split_fewshot" / "shot_2-seed_3.pkl"
    assert pkl.is_file() and (pkl.stat().st_mode & 0o777) == 0o666 & ~_umask()
    with open(pkl, "rb") as f:  # what CoOp's dataset files do with an existing file
        coop = pickle.load(f)
    assert [d.impath for d in coop["train"]] == [d.impath for d in ds.train_x]
    assert [d.impath for d in coop["val"]] == [d.impath for d in ds.val]
    assert {type(d).__module__ for d in coop["train"]} == {"dassl.data.datasets.base_dataset"}
    again = build_dataset(cfg)  # a second run reads the pkl back: the same picks
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_coop_pkl_may_hold_only_datums(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "shot_1-seed_1.pkl"
    path.write_bytes(pickle.dumps({"train": [Evil()]}))
    with pytest.raises(DatasetError, match="not allowed in a CoOp few-shot file"):
        read_coop_fewshot(path, tmp_path, [], [])


# ---- a read-only DATA folder ----------------------------------------------------------------------------------------
def test_a_read_only_data_folder_is_never_written_split_files_go_to_the_cache_folder(tmp_path):
    data = tmp_path / "data"
    build_fixture_dataset(data, "imagenet", n_train=4, n_val=2)  # ours: a split file and few-shot files to write
    before = _tree(data)
    cache = tmp_path / "cache"
    with read_only(data):
        d = load_dataset("imagenet", data, num_shots=2, seed=1, fallback_dir=cache)
        assert _tree(data) == before
        folder = split_folders(data / "imagenet", "", cache)[1]
        assert d.split_file == folder / "split_clipadapt_imagenet.json" and d.split_file.is_file()
        assert (folder / "split_fewshot" / "shot_2-seed_1.json").is_file()
        assert load_dataset("imagenet", data, num_shots=2, seed=1, fallback_dir=cache).train == d.train
        with pytest.raises(DatasetError, match=str(data / "imagenet")):  # nowhere to write: names the folder
            load_dataset("imagenet", data, num_shots=4, seed=1)
    assert _tree(data) == before


def test_split_cache_dir_is_used_when_set_and_read_after_the_dataset_folder(tmp_path):
    data = tmp_path / "data"
    build_fixture_dataset(data, "dtd", n_train=4, n_val=2)
    d = load_dataset("dtd", data, num_shots=2, seed=3, split_cache_dir=tmp_path / "splits")
    folder = split_folders(data / "dtd", tmp_path / "splits")[0]
    assert (folder / "split_fewshot" / "shot_2-seed_3.json").is_file()
    assert not (data / "dtd" / "split_fewshot").exists()
    assert folder.parent == tmp_path / "splits" and folder.name.startswith("dtd-")
    assert load_dataset("dtd", data, num_shots=2, seed=3, split_cache_dir=tmp_path / "splits").train == d.train
