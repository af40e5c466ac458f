"""Shared fixtures. Tests marked `dassl` are skipped, with the reason, when Dassl is not installed."""
import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HAVE_DASSL = importlib.util.find_spec("dassl") is not None
DASSL_REASON = ("Dassl is not installed (not on PyPI; `bash scripts/install.sh` clones it from its repository, or "
                "installs a local checkout given as DASSL_SRC=...): this test needs it")


def pytest_collection_modifyitems(config, items):
    if HAVE_DASSL:
        return
    skip = pytest.mark.skip(reason=DASSL_REASON)
    for item in items:
        if "dassl" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _undo_dassl_logging_disable():
    """`import dassl` disables logging process-wide; keep it from leaking into other tests."""
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    """A tiny randomly initialised CLIP (ViT, 32 px) saved as a plain state dict."""
    from clip_adapt.clip_loader import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_vit.pt", seed=0)


@pytest.fixture(scope="session")
def tiny_rn_clip_path(tmp_path_factory):
    """A tiny randomly initialised CLIP with a ModifiedResNet image tower."""
    from clip_adapt.clip_loader import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_rn.pt", seed=0, arch="rn")


@pytest.fixture
def script_env(tmp_path):
    """Environment for running scripts/<method>/main.sh on fixtures: DATA, OUTPUT, SEEDS, caches in tmp."""
    env = dict(os.environ)
    env.update({
        "DATA": str(tmp_path / "data"),
        "OUTPUT": str(tmp_path / "output"),
        "SEEDS": "1",
        "CLIP_ADAPT_CACHE": str(tmp_path / "cache"),
        "PYTHON": sys.executable,
        "PYTHONWARNINGS": "ignore",
    })
    return env


FIXTURE_CLASSES = ["cat", "dog", "bird"]


def register_fixture_dataset(root, name, n_train=24, n_val=6, n_test=12, classes=FIXTURE_CLASSES):
    """Register (or replace) an in-process Dassl dataset `name` of real PNG files under `root`.

    Images of class c are noise around grey level 60*c, so classes differ. Returns the class.
    """
    import numpy as np
    from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
    from PIL import Image

    def make(split, n):
        rng = np.random.RandomState({"train": 0, "val": 1, "test": 2}[split])
        items = []
        for i in range(n):
            c = i % len(classes)
            path = Path(root) / f"{split}_{i}.png"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((rng.rand(40, 48, 3) * 80 + 60 * c).astype(np.uint8)).save(path)
            items.append(Datum(impath=str(path), label=c, classname=classes[c]))
        return items

    def __init__(self, cfg):
        DatasetBase.__init__(self, train_x=make("train", n_train), val=make("val", n_val), test=make("test", n_test))

    cls = type(name, (DatasetBase,), {"__init__": __init__})
    DATASET_REGISTRY._obj_map.pop(name, None)
    DATASET_REGISTRY.register(cls)
    return cls


@pytest.fixture
def dassl_cfg(tmp_path, tiny_clip_path):
    """dassl_cfg(trainer_yaml, KEY, VALUE, ...) -> a frozen config for a tiny in-process run on CPU."""
    import dassl  # noqa: F401
    logging.disable(logging.NOTSET)
    from dassl.config import get_cfg_default

    from clip_adapt.config import extend_cfg

    def _cfg(trainer_yaml=None, *opts):
        cfg = extend_cfg(get_cfg_default())
        if trainer_yaml:
            cfg.merge_from_file(str(REPO / trainer_yaml))
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", str(tiny_clip_path), "INPUT.SIZE", "(32, 32)",
                             "DATALOADER.NUM_WORKERS", "0", "TRAINER.FEATURE_CACHE_DIR", str(tmp_path / "cache"),
                             "USE_CUDA", "False", "SEED", "1", *opts])
        cfg.freeze()
        return cfg

    return _cfg
