"""Every dataset through Dassl's registry and DataManager, from fixtures in each dataset's real layout."""
import logging
import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.dataset_fixtures import build_fixture_dataset
from clip_adapt.data import catalog
from clip_adapt.prompts import DATASET_CLASSES

pytestmark = pytest.mark.dassl


def _cfg(root, name, *opts):
    import dassl  # noqa: F401
    logging.disable(logging.NOTSET)
    from dassl.config import get_cfg_default

    from clip_adapt.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file(str(REPO / "configs" / "datasets" / f"{name}.yaml"))
    cfg.merge_from_list(["DATASET.ROOT", str(root), "SEED", "1", "INPUT.SIZE", "(32, 32)",
                         "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False", *opts])
    cfg.freeze()
    return cfg


def _build(cfg):
    import clip_adapt.plugin  # noqa: F401  (registers every dataset)
    from dassl.data.datasets import build_dataset

    return build_dataset(cfg)


def _per_class(items):
    counts = {}
    for d in items:
        counts[d.label] = counts.get(d.label, 0) + 1
    return counts


@pytest.mark.parametrize("name", catalog.NAMES)
def test_every_dataset_builds_through_dassl(name, tmp_path):
    build_fixture_dataset(tmp_path, name)
    cfg = _cfg(tmp_path, name)
    assert cfg.DATASET.NAME == DATASET_CLASSES[name]
    ds = _build(cfg)
    assert type(ds).__name__ == DATASET_CLASSES[name]
    assert ds.num_classes == 3 and len(ds.classnames) == 3 and ds.lab2cname == dict(enumerate(ds.classnames))
    for split in (ds.train_x, ds.val, ds.test):
        assert split and sorted({d.label for d in split}) == [0, 1, 2]
        assert all(os.path.isfile(d.impath) and ds.classnames[d.label] == d.classname for d in split)
    if catalog.get(name).test_only:  # like CoOp: evaluation-only datasets expose test as train_x and val
        assert ds.train_x == ds.test and ds.val == ds.test


def test_fewshot_through_dassl_is_seeded_and_cached(tmp_path):
    build_fixture_dataset(tmp_path, "eurosat", n_train=6, n_val=6)
    ds = _build(_cfg(tmp_path, "eurosat", "DATASET.NUM_SHOTS", "2"))
    assert _per_class(ds.train_x) == {0: 2, 1: 2, 2: 2} and _per_class(ds.val) == {0: 2, 1: 2, 2: 2}
    assert (tmp_path / "eurosat" / "split_fewshot" / "shot_2-seed_1.json").is_file()
    again = _build(_cfg(tmp_path, "eurosat", "DATASET.NUM_SHOTS", "2"))
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]
    other = _build(_cfg(tmp_path, "eurosat", "DATASET.NUM_SHOTS", "2", "SEED", "2"))
    assert [d.impath for d in other.train_x] != [d.impath for d in ds.train_x]
    six = _build(_cfg(tmp_path, "eurosat", "DATASET.NUM_SHOTS", "6"))
    assert _per_class(six.val) == {0: 4, 1: 4, 2: 4}  # CoOp: val keeps min(K, 4) per class


def test_subsample_and_val_keys_through_dassl(tmp_path):
    build_fixture_dataset(tmp_path, "imagenet", n_classes=4, n_train=8, n_val=2)
    new = _build(_cfg(tmp_path, "imagenet", "DATASET.SUBSAMPLE_CLASSES", "new"))
    assert new.classnames == ["great white shark", "tiger shark"] and new.num_classes == 2
    carved = _build(_cfg(tmp_path, "imagenet", "DATASET.VAL_FRACTION", "0.5", "DATASET.SPLIT_SEED", "7"))
    assert _per_class(carved.val) == {c: 5 for c in range(4)}
    assert (tmp_path / "imagenet" / "split_clipadapt_imagenet_val0.5_seed7.json").is_file()


def test_data_manager_loads_batches(tmp_path):
    from dassl.data import DataManager

    build_fixture_dataset(tmp_path, "oxford_pets")
    import datasets  # noqa: F401

    dm = DataManager(_cfg(tmp_path, "oxford_pets", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"))
    batch = next(iter(dm.train_loader_x))
    assert tuple(batch["img"].shape) == (4, 3, 32, 32) and dm.num_classes == 3
    assert all(Path(p).is_file() for p in batch["impath"])


def test_missing_dataset_error_through_dassl_names_path(tmp_path):
    from clip_adapt.data.errors import DatasetError

    with pytest.raises(DatasetError, match=str(tmp_path / "caltech-101")):
        _build(_cfg(tmp_path, "caltech101"))


@pytest.mark.parametrize("damage, workers", [("garbage", 0), ("truncated", 0), ("truncated", 1)])
def test_unreadable_image_in_a_loader_names_its_path(damage, workers, tmp_path):
    from dassl.data.data_manager import build_data_loader

    from clip_adapt.engine.base import CheckedDatasetWrapper
    from clip_adapt.data.errors import DatasetError

    build_fixture_dataset(tmp_path, "dtd")
    cfg = _cfg(tmp_path, "dtd")
    ds = _build(cfg)
    bad = Path(ds.test[0].impath)
    data = bad.read_bytes()
    bad.write_bytes(b"not an image" if damage == "garbage" else data[: len(data) // 2])
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = workers
    loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=ds.test, batch_size=2,
                               is_train=False, dataset_wrapper=CheckedDatasetWrapper)
    with pytest.raises(DatasetError, match=re.escape(str(bad))) as e:
        next(iter(loader))
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)  # one line, also from a worker process


def test_trainer_loaders_read_through_the_checked_wrapper(tmp_path, dassl_cfg):
    """A truncated image reached by a trainer's own loader (CLIPAdaptTrainer.build_data_loader) names its path."""
    import datasets  # noqa: F401
    import clip_adapt.plugin  # noqa: F401  registers the trainers
    from dassl.engine import build_trainer

    from clip_adapt.data.errors import DatasetError

    build_fixture_dataset(tmp_path / "data", "dtd")
    cfg = dassl_cfg("configs/trainers/ZSCLIP/vit_b16.yaml", "TRAINER.NAME", "ZSCLIP",
                    "DATASET.NAME", "DescribableTextures",
                    "DATASET.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(tmp_path / "out"))
    trainer = build_trainer(cfg)
    bad = Path(trainer.dm.dataset.test[-1].impath)
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        trainer.test()


def test_allow_missing_leaves_out_absent_birdsnap_images_and_lists_them(tmp_path):
    """DATASET.ALLOW_MISSING: Birdsnap images that were never downloaded are left out, written to
    missing_images.txt and counted; without it the same tree is an error naming a missing path."""
    from clip_adapt.data.errors import DatasetError

    build_fixture_dataset(tmp_path, "birdsnap")
    images = sorted((tmp_path / "birdsnap").rglob("*.jpg"))
    gone = images[0]
    gone.unlink()
    with pytest.raises(DatasetError, match=re.escape(str(gone))):
        _build(_cfg(tmp_path, "birdsnap"))
    ds = _build(_cfg(tmp_path, "birdsnap", "DATASET.ALLOW_MISSING", "True"))
    listed = (tmp_path / "birdsnap" / "missing_images.txt").read_text().split()
    assert listed == [str(gone)]
    kept = [d.impath for d in ds.train_x + ds.val + ds.test]
    assert str(gone) not in kept and len(kept) == len(images) - 1
