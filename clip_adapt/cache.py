"""On-disk cache of tensors keyed by a JSON-able description (backbone hash, dataset, split, ...).

One file per key: `<root>/<sha1(key)[:16]>.pt` holding {"key": key, "value": tensors}; written through a
temporary file and renamed, so an interrupted run never leaves a half-written entry. Read with weights_only.
"""
import hashlib
import json
from pathlib import Path

import torch

from . import distributed
from .atomic import atomic_path


def key_digest(key):
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FeatureCache:
    def __init__(self, root):
        self.root = Path(root) if root else None
        self.hits = 0
        self.misses = 0

    def path(self, key):
        return self.root / f"{key_digest(key)}.pt"

    def load(self, key):
        """The cached value for `key`, or None."""
        if self.root is None:
            return None
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # corrupt entry (e.g. disk full when written): recompute
            return None
        if obj.get("key") != json.loads(json.dumps(key, sort_keys=True, default=str)):
            return None
        return obj["value"]

    def save(self, key, value):
        if self.root is None:
            return
        with atomic_path(self.path(key)) as tmp:
            torch.save({"key": json.loads(json.dumps(key, sort_keys=True, default=str)), "value": value}, tmp)

    def get_or_compute(self, key, compute):
        """`compute()` once per key; later calls (and later runs) read the file.

        Data-parallel (torchrun), every process takes the same branch: the file where each can read it; rank 0's
        copy sent to all where some cannot (e.g. a cache folder local to each node); else `compute()` on every
        process (it may be a collective, e.g. a sharded feature extraction), written by rank 0 only."""
        value = self.load(key)
        found = distributed.all_gather_objects(value is not None)
        if all(found):
            self.hits += 1
            return value
        if found[0]:
            self.hits += 1
            return distributed.broadcast_from_main(value)
        self.misses += 1
        value = compute()
        if distributed.is_main():
            self.save(key, value)
        return value
