"""Checksum-verified downloads: the one implementation behind CLIP checkpoints (sha256, clip_loader), dataset archives
(md5, data/download.py) and class-description files (sha256, fair/descriptions.py).

A download goes to a temporary file beside the target and is moved into place only when its digest matches, so an
interrupted or corrupted download never leaves a file that looks complete.
"""
import hashlib
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_path


class ChecksumError(ValueError):
    """The downloaded bytes do not have the published digest (the file was not kept)."""


def file_digest(path, algorithm="sha256", chunk=1 << 20):
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download_verified(url, target, digest, algorithm="sha256", timeout=60, progress=True):
    """Download `url` to `target` and keep it only if its `algorithm` digest equals `digest`.

    Network failures raise OSError (URLError, timeouts); a wrong digest raises ChecksumError. Either way nothing is
    left at `target` or beside it.
    """
    target = Path(target)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as src:
            total = int(src.headers.get("Content-Length") or 0) if hasattr(src, "headers") else 0
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=f"download {target.name}",
                      disable=not progress) as bar:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
        got = file_digest(tmp, algorithm)
        if got != digest:
            raise ChecksumError(f"{algorithm} mismatch for {url}: expected {digest}, got {got}; the file was not kept")
    return target
