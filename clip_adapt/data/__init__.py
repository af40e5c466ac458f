"""Framework-free dataset layer: official layouts, the shared CoOp split reader, val carving, few-shot caches.

Entry point: `loader.load_dataset(name, root, ...)`; the catalog of all datasets is `catalog`; the split format and
rules are in `splits`; every error is an `errors.DatasetError` naming the path at fault.
"""
