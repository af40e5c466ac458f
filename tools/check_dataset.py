"""Check datasets under DATA: what is present, what is missing, image counts per split against the official counts,
and how to obtain what is missing.

    python -m tools.check_dataset --root $DATA cub [oxford_pets ...]   # or `all`
    python -m tools.check_dataset --root $DATA --download cifar10       # checksum-verified download where possible
    python -m tools.check_dataset --root $DATA --verify-images dtd      # also decode every image (slow)

Exit status: 0 when every named dataset is complete and matches its official counts, 1 otherwise, 2 on bad usage.
Where val is carved from train (no official val), train + val is compared with the official train count.
Loading a dataset the first time writes its split file (split_clipadapt_<name>.json), as training would.
"""
import argparse
import os
import sys
from pathlib import Path

from clip_adapt.data import catalog
from clip_adapt.data.errors import DatasetError
from clip_adapt.data.loader import load_split, split_file_and_root, verify_readable
from clip_adapt.data.splits import classnames_of

SHOW = 3  # missing images named per split


def _count_rows(info, split):
    """(split, found, official) rows; carved val -> one train+val row against the official train count."""
    counts = info.counts
    n = {s: len(split.get(s) or []) for s in ("train", "val", "test")}
    rows = []
    if info.test_only:
        rows.append(("test", n["test"], counts.get("test")))
    elif counts.get("val") is None:
        rows.append(("train+val", n["train"] + n["val"], counts.get("train")))
        rows.append(("test", n["test"], counts.get("test")))
    else:
        rows += [(s, n[s], counts.get(s)) for s in ("train", "val", "test")]
    return rows


def check(name, root, download=False, verify_images=False, out=print):
    """Check one dataset; print a report; return True when it is complete and matches the official counts."""
    info = catalog.get(name)
    ddir = Path(root) / info.folder
    out(f"== {info.short} ({info.registry_name}) in {ddir}")
    problems = []
    if download and not ddir.is_dir():
        if info.downloads:
            from clip_adapt.data.download import download_dataset
            try:
                download_dataset(info, root, log=lambda m: out(f"  {m}"))
            except DatasetError as e:
                problems.append(f"download failed: {e}")
        else:
            out("  no checksum-verified public download for this dataset; obtain it by hand (below)")
    if not ddir.is_dir():
        out(f"  MISSING folder {ddir}")
        problems.append(f"missing folder {ddir}")
    else:
        out(f"  present: folder {ddir}")
        split_file, image_root = split_file_and_root(info, ddir)
        if info.coop_split:
            state = "present" if split_file.is_file() else "MISSING"
            out(f"  {state}: CoOp split file {split_file}" +
                ("" if split_file.is_file() else f" (gdown {info.split_gdown})"))
            if not image_root.is_dir():
                out(f"  MISSING image folder {image_root}")
        for meta in info.metadata:
            p = ddir / meta
            out(f"  {'present' if p.exists() else 'MISSING'}: {p}")
        try:
            split, split_file, image_root = load_split(info, root)
            classnames = classnames_of(split_file, split["train"], split["val"], split["test"])
        except DatasetError as e:
            out(f"  BROKEN: {str(e).splitlines()[0]}")
            problems.append(str(e).splitlines()[0])
        else:
            out(f"  split file: {split_file}")
            problems += _check_images(split, image_root, verify_images, out)
            problems += _check_counts(info, split, classnames, out)
    if problems:
        out(f"  status: BROKEN ({len(problems)} problem(s))")
        out(f"  how to obtain: {info.hint()}")
        return False
    out("  status: OK")
    return True


def _check_images(split, image_root, verify_images, out):
    problems = []
    for s in ("train", "val", "test"):
        items = split.get(s) or []
        missing = [rel for rel, _, _ in items if not os.path.isfile(os.path.join(image_root, rel))]
        if missing:
            named = ", ".join(str(Path(image_root) / m) for m in missing[:SHOW])
            out(f"  MISSING {len(missing)} of {len(items)} {s} images listed in the split file, e.g. {named}")
            problems.append(f"{len(missing)} {s} images absent")
        elif verify_images:
            try:
                verify_readable(os.path.join(image_root, rel) for rel, _, _ in items)
            except DatasetError as e:
                out(f"  UNREADABLE: {e}")
                problems.append(str(e))
    return problems


def _check_counts(info, split, classnames, out):
    problems = []
    out(f"  {'split':<10} {'found':>9} {'official':>9}")
    rows = _count_rows(info, split) + [("classes", len(classnames), info.counts.get("classes"))]
    for s, found, official in rows:
        flag = "" if official is None or found == official else "  MISMATCH"
        out(f"  {s:<10} {found:>9} {'?' if official is None else official:>9}{flag}")
        if flag:
            problems.append(f"{s}: {found} images, official {official}")
    return problems


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.check_dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="+", help=f"dataset short names or 'all' ({', '.join(catalog.NAMES)})")
    p.add_argument("--root", default=os.environ.get("DATA", "./data"), help="dataset root (default: $DATA or ./data)")
    p.add_argument("--download", action="store_true", help="download what has a checksum-verified public archive")
    p.add_argument("--verify-images", action="store_true", help="decode every listed image (slow)")
    args = p.parse_args(argv)
    names = list(catalog.NAMES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in catalog.NAMES]
    if unknown:
        p.error(f"unknown dataset(s) {unknown}; known: {', '.join(catalog.NAMES)}")
    ok = [check(n, args.root, args.download, args.verify_images) for n in names]
    print(f"\n{sum(ok)} of {len(ok)} dataset(s) OK" +
          ("" if all(ok) else f"; broken: {', '.join(n for n, good in zip(names, ok) if not good)}"))
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
