"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (idx files, gzip-compressed).

`apt-get install dataset-fashion-mnist` puts the four files in /usr/share/datasets/fashion-mnist; another folder can be
named with $FASHION_MNIST_DIR. Images are 28 x 28 uint8, labels 0..9 in the order of CLASSNAMES.
"""
import gzip
import os
from pathlib import Path

import numpy as np

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Official class order (labels 0..9). "T-shirt/top" is named "t-shirt" so that it can be a folder name.
CLASSNAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


class FashionMNISTMissing(FileNotFoundError):
    """The idx files are not where they should be; the message names the package and the path."""


def data_dir():
    return Path(os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DIR)


def _read_idx(path, magic, ndim):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{path}: not an idx file of {ndim} dimensions (magic {got:#x}, expected {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: holds {data.size} bytes of data, its header says {dims}")
    return data.reshape(dims)


def load(split, root=None):
    """(images uint8 N x 28 x 28, labels int64 N) of the official `train` (60k) or `test` (10k) split."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    root = Path(root) if root else data_dir()
    paths = [root / name for name in FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FashionMNISTMissing(
            f"Fashion-MNIST idx files not found: {', '.join(missing)}. Install Debian's package "
            f"'{DEBIAN_PACKAGE}' (apt-get install -y {DEBIAN_PACKAGE}; it puts them in {DEFAULT_DIR}), or set "
            f"$FASHION_MNIST_DIR to a folder holding {', '.join(FILES[split])}."
        )
    images = _read_idx(paths[0], 0x803, 3)
    labels = _read_idx(paths[1], 0x801, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels")
    return images, labels
