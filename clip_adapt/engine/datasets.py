"""The one Dassl dataset class, and the registration of one subclass per dataset of the catalog.

`register_dataset(short)` creates the subclass named `clip_adapt.prompts.DATASET_CLASSES[short]` and registers it
with Dassl, unless a class of that name is registered already: inside a CoOp checkout CoOp's own dataset classes
(ImageNet, OxfordPets, ..., ImageNetV2) are kept and used, since they read the same split files.

It reads cfg.DATASET.ROOT, NUM_SHOTS (few-shot train, and val with min(K, 4) per class: CoOp's picks for cfg.SEED,
CoOp's pkl read when present, else our JSON), SUBSAMPLE_CLASSES (CoOp's base/new), VAL_FRACTION and SPLIT_SEED (val
carved from train when a dataset has none), DOWNLOAD, ALLOW_MISSING and SPLIT_CACHE_DIR (where split files go when
DATA is read-only; default: beside the data if writable, else under TRAINER.FEATURE_CACHE_DIR), and hands them to
the framework-free loader (clip_adapt/data/loader.py).
Test-only datasets (the ImageNet variants) have no train split: like CoOp, train_x and val are their test split.
"""
import pickle

from dassl.data.datasets import DatasetBase, Datum

from clip_adapt.atomic import atomic_path
from clip_adapt.data.loader import load_dataset


class CLIPAdaptDataset(DatasetBase):
    short_name = ""  # set by each dataset file: the key of clip_adapt.data.catalog

    def __init__(self, cfg):
        from clip_adapt.engine.base import default_feature_cache_dir

        d = cfg.DATASET
        data = load_dataset(self.short_name, d.ROOT, num_shots=d.NUM_SHOTS, seed=cfg.SEED,
                            subsample=d.SUBSAMPLE_CLASSES, val_fraction=d.VAL_FRACTION, split_seed=d.SPLIT_SEED,
                            download=d.DOWNLOAD, allow_missing=d.ALLOW_MISSING,
                            split_cache_dir=d.get("SPLIT_CACHE_DIR", ""),
                            fallback_dir=cfg.TRAINER.get("FEATURE_CACHE_DIR", "") or default_feature_cache_dir())
        self.dataset_dir = str(data.dataset_dir)
        if data.coop_fewshot_pkl is not None:
            write_coop_fewshot(data.coop_fewshot_pkl, *data.fewshot)
        train, val, test = (self._datums(items) for items in (data.train, data.val, data.test))
        if not train:  # test-only dataset
            train, val = test, test
        super().__init__(train_x=train, val=val, test=test)
        self._classnames = list(data.classnames)
        self._lab2cname = dict(enumerate(data.classnames))
        self._num_classes = len(data.classnames)

    @staticmethod
    def _datums(items):
        return [Datum(impath=path, label=label, classname=cname) for path, label, cname in items]


def write_coop_fewshot(path, train, val):
    """Write few-shot picks as CoOp's `split_fewshot/shot_K-seed_S.pkl` ({"train": [Datum], "val": [Datum]},
    absolute paths, as CoOp's dataset files write it), so CoOp runs on the same DATA use the same images. A folder
    that cannot be written (read-only DATA) is skipped with a note: our own JSON copy of the picks is kept elsewhere.
    """
    if path.exists():
        return
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                pickle.dump({"train": CLIPAdaptDataset._datums(train), "val": CLIPAdaptDataset._datums(val)}, f,
                            protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as e:
        print(f"Note: CoOp's few-shot file {path} not written ({e.strerror or e}); the picks are cached as JSON")


def register_dataset(short):
    """The Dassl dataset class registered as DATASET_CLASSES[short]: ours, or the one already registered."""
    from dassl.data.datasets import DATASET_REGISTRY

    from clip_adapt.prompts import DATASET_CLASSES

    name = DATASET_CLASSES[short]
    if name in DATASET_REGISTRY.registered_names():
        return DATASET_REGISTRY.get(name)
    cls = type(name, (CLIPAdaptDataset,), {"short_name": short, "__module__": __name__,
                                           "__doc__": f"Dataset `{short}` (clip_adapt/data/catalog.py)."})
    DATASET_REGISTRY.register(cls)
    return cls


def register_all():
    """Register every dataset of the catalog (those not registered already)."""
    from clip_adapt.prompts import DATASET_CLASSES

    return {short: register_dataset(short) for short in DATASET_CLASSES}
