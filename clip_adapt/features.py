"""Image features of a whole split through a frozen CLIP image encoder, cached on disk (DESIGN.md, "Performance").

Frozen parts are computed once: a split's features are extracted once per (backbone checkpoint sha256, dataset,
split, few-shot seed and K, augmentation pass, transform, list of images) and stored in a `FeatureCache`; a later
run with the same key reads the file and never calls the encoder.

The extraction leaves the global RNG untouched (it runs inside `torch.random.fork_rng`, seeded per pass), so a
trainer that extracts features before training shuffles the same way whether or not the cache was hit, and a
resumed run continues exactly.
"""
import contextlib
import hashlib
import json
import random

import torch
from tqdm import tqdm

from .zeroshot import encode_images


def items_digest(impaths, labels):
    """sha1 of the ordered (image path, label) list: the cache key names the exact images of a split."""
    h = hashlib.sha1()
    h.update(json.dumps([[str(p), int(y)] for p, y in zip(impaths, labels)]).encode())
    return h.hexdigest()


def feature_key(backbone_id, dataset, split, impaths, labels, transform, aug_pass=0, num_shots=-1,
                fewshot_seed=-1):
    """The cache key of one extraction pass (a JSON-able dict)."""
    if not backbone_id:
        raise ValueError("feature_key: backbone_id (the checkpoint's sha256) is required")
    return {"kind": "image_features", "backbone": str(backbone_id), "dataset": str(dataset), "split": str(split),
            "num_shots": int(num_shots), "fewshot_seed": int(fewshot_seed), "aug_pass": int(aug_pass),
            "transform": str(transform), "n": len(impaths), "items": items_digest(impaths, labels)}


@torch.no_grad()
def extract_features(model, loader, device=None, autocast=None, desc="image features", num_items=None):
    """N x D float32 normalised features and N labels of every item of `loader`, in dataset order.

    Batches are Dassl-style dicts (img, label, index); rows are placed by `index`, so any sampler works.
    """
    device = device or next(model.parameters()).device
    autocast = autocast or contextlib.nullcontext
    n = num_items if num_items is not None else len(loader.dataset)
    feats, labels = None, torch.full((n,), -1, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc=desc, leave=False):
            with autocast():
                f = encode_images(model, batch["img"].to(device)).float().cpu()
            if feats is None:
                feats = torch.zeros(n, f.shape[1])
            index = batch["index"].long()
            feats[index] = f
            labels[index] = batch["label"].long()
    finally:
        model.train(was_training)
    if feats is None:
        raise ValueError(f"extract_features: the loader of {desc!r} yielded no images")
    return feats, labels


def cached_features(cache, key, model, loader, seed=0, **kwargs):
    """(features, labels) for `key` from `cache`, or extracted with `extract_features` and stored.

    The extraction runs with torch's and Python's RNGs seeded by `seed` (random augmentation passes are
    reproducible) and restored afterwards.
    """
    def compute():
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                feats, labels = extract_features(model, loader, **kwargs)
        finally:
            random.setstate(py_state)
        return {"features": feats, "labels": labels}

    if cache is None:
        value = compute()
    else:
        value = cache.get_or_compute(key, compute)
    return value["features"], value["labels"]
