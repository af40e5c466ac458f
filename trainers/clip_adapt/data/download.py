"""Checksum-verified download of the datasets with a stable public archive (catalog `downloads`).

Only archives whose URL and MD5 are published facts are downloaded (CUB from CaltechDATA; CIFAR-10/100 from
cs.toronto.edu, the MD5s torchvision also checks); everything else is obtained by hand (catalog `obtain`).
"""
import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path

from .errors import DatasetError


def md5sum(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url, dest, md5):
    """Download `url` to `dest` (via a .part file) unless a file with the right MD5 is already there."""
    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as f:
            shutil.copyfileobj(resp, f)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DatasetError(f"download of {url} to {dest} failed: {e}", dest) from e
    got = md5sum(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {url}: md5 {got}, expected {md5} (file removed)", dest)
    part.replace(dest)
    return dest


def extract(archive, into):
    """Extract a tar archive (members may not leave `into`)."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"cannot extract {archive} into {into}: {e}", archive) from e


def download_dataset(info, root, log=print):
    """Download and extract every archive of a catalog entry into DATA (or its dataset folder)."""
    if not info.downloads:
        raise DatasetError(f"{info.short} has no checksum-verified public download; {info.hint()}",
                           Path(root) / info.folder)
    for dl in info.downloads:
        into = Path(root) if dl.extract_into == "root" else Path(root) / info.folder
        archive = Path(root) / "downloads" / dl.filename
        log(f"downloading {dl.url} -> {archive} (md5 {dl.md5})")
        fetch(dl.url, archive, dl.md5)
        log(f"extracting {archive} -> {into}")
        extract(archive, into)
