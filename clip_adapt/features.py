"""Image features of a whole split through a frozen CLIP image encoder, cached on disk (DESIGN.md, "Performance").

Frozen parts are computed once: a split's features are extracted once per key and stored in a `FeatureCache`; a
later run with the same key reads the file and never calls the encoder. The key holds everything that changes a
feature: the backbone checkpoint's sha256, the precision it runs in, the full description of the transform
(`describe_transform`: every step with its parameters), the dataset, split, few-shot K and seed, the augmentation
pass, and the ordered images with their labels and the size and modification time (ns) of each image file, so an
image replaced in place is a cache miss.

The extraction leaves the global RNG untouched (each image is produced inside `torch.random.fork_rng`, seeded by
(pass seed, image index)), so a trainer that extracts features before training shuffles the same way whether or
not the cache was hit, a resumed run continues exactly, and a data-parallel extraction equals a 1-process one.
"""
import contextlib
import hashlib
import json
import os

import torch
from tqdm import tqdm

from . import distributed
from .zeroshot import encode_images


def describe_transform(transform):
    """A complete, stable text of a transform: torchvision's repr where a step defines one (it lists the
    parameters), else the class name with its public attributes (never an object address); Compose, RandomApply
    and the like are described step by step."""
    if isinstance(transform, str) or transform is None:
        return str(transform)
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, (list, tuple)):
        extra = {k: v for k, v in vars(transform).items() if k != "transforms" and not k.startswith("_")}
        inner = ", ".join(describe_transform(t) for t in steps)
        return f"{type(transform).__qualname__}([{inner}]{_attrs(extra, lead=True)})"
    if type(transform).__repr__ is not object.__repr__ and not callable(getattr(transform, "lambd", None)):
        return repr(transform)
    attrs = {k: v for k, v in vars(transform).items() if not k.startswith("_")} if hasattr(transform, "__dict__") \
        else {}
    return f"{type(transform).__module__}.{type(transform).__qualname__}({_attrs(attrs)})"


def _attrs(attrs, lead=False):
    def text(v):
        if callable(v) and not isinstance(v, type):
            return f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__qualname__)}"
        return describe_transform(v) if hasattr(v, "transforms") else repr(v)

    body = ", ".join(f"{k}={text(v)}" for k, v in sorted(attrs.items()))
    return (", " + body if body else "") if lead else body


def image_stats(impaths):
    """(size in bytes, mtime in ns) of each image file ((-1, -1) for a path that is not a file)."""
    out = []
    for p in impaths:
        try:
            st = os.stat(p)
            out.append((int(st.st_size), int(st.st_mtime_ns)))
        except OSError:
            out.append((-1, -1))
    return out


def items_digest(impaths, labels, stats=None):
    """sha1 of the ordered (image path, label[, size, mtime_ns]) list: the cache key names the exact images of a
    split and their content as the file system dates it."""
    h = hashlib.sha1()
    rows = [[str(p), int(y)] for p, y in zip(impaths, labels)]
    if stats is not None:
        rows = [r + list(st) for r, st in zip(rows, stats)]
    h.update(json.dumps(rows).encode())
    return h.hexdigest()


def feature_key(backbone_id, dataset, split, impaths, labels, transform, aug_pass=0, num_shots=-1,
                fewshot_seed=-1, *, precision):
    """The cache key of one extraction pass (a JSON-able dict); stats every image (see the module docstring)."""
    if not backbone_id:
        raise ValueError("feature_key: backbone_id (the checkpoint's sha256) is required")
    impaths = list(impaths)
    return {"kind": "image_features", "backbone": str(backbone_id), "precision": str(precision),
            "dataset": str(dataset), "split": str(split), "num_shots": int(num_shots),
            "fewshot_seed": int(fewshot_seed), "aug_pass": int(aug_pass), "transform": describe_transform(transform),
            "rng": "per_image",
            "n": len(impaths), "items": items_digest(impaths, labels, image_stats(impaths))}


@torch.no_grad()
def extract_features(model, loader, device=None, autocast=None, desc="image features", num_items=None):
    """N x D float32 normalised features and N labels of every item of `loader`, in dataset order.

    Batches are Dassl-style dicts (img, label, index); rows are placed by `index`, so any sampler works.
    Data-parallel (torchrun), each process encodes every N-th batch and the rows are gathered: every process gets
    the whole split, each batch computed as in a 1-process run (clip_adapt/distributed.py).
    """
    device = device or next(model.parameters()).device
    autocast = autocast or contextlib.nullcontext
    n = num_items if num_items is not None else len(loader.dataset)
    outputs, where = [], []
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(distributed.shard_batches(loader), desc=desc, leave=False):
            with autocast():
                outputs.append(encode_images(model, batch["img"].to(device)).float().cpu())
            where.append(torch.stack([batch["index"].long(), batch["label"].long()], 1))
    finally:
        model.train(was_training)
    outputs, where = distributed.gather_batches(outputs, where)
    if not outputs:
        raise ValueError(f"extract_features: the loader of {desc!r} yielded no images")
    f, where = torch.cat(outputs), torch.cat(where)
    feats, labels = torch.zeros(n, f.shape[1]), torch.full((n,), -1, dtype=torch.long)
    feats[where[:, 0]] = f
    labels[where[:, 0]] = where[:, 1]
    return feats, labels


def cached_features(cache, key, model, loader, seed=0, **kwargs):
    """(features, labels) for `key` from `cache`, or extracted with `extract_features` and stored.

    Item i of the loader is produced with torch's and Python's RNGs seeded by (seed, i)
    (clip_adapt.distributed.SeededItems), so a random augmentation pass is reproducible whatever the batching,
    the loader workers or the number of processes; the global RNG is left untouched.
    """
    def compute():
        seeded = distributed.rebatch(loader, dataset=distributed.SeededItems(loader.dataset, seed))
        with distributed.seeded_rng(seed):  # the loader's own draws (its workers' base seed) leave the RNG alone
            feats, labels = extract_features(model, seeded, num_items=len(loader.dataset), **kwargs)
        return {"features": feats, "labels": labels}

    if cache is None:
        value = compute()
    else:
        value = cache.get_or_compute(key, compute)
    return value["features"], value["labels"]
