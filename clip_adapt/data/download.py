"""Checksum-verified download of the datasets with a stable public archive (catalog `downloads`).

Only archives whose URL and MD5 are published facts are downloaded (CUB from CaltechDATA; CIFAR-10/100 from
cs.toronto.edu, the MD5s torchvision also checks); everything else is obtained by hand (catalog `obtain`).
"""
import tarfile
from pathlib import Path

from ..download import ChecksumError, download_verified, file_digest
from .errors import DatasetError


def fetch(url, dest, md5):
    """Download `url` to `dest` unless a file with the right MD5 is already there (clip_adapt/download.py)."""
    dest = Path(dest)
    if dest.is_file() and file_digest(dest, "md5") == md5:
        return dest
    try:
        return download_verified(url, dest, md5, "md5")
    except ChecksumError as e:
        raise DatasetError(f"checksum mismatch: {e}", dest) from e
    except OSError as e:
        raise DatasetError(f"download of {url} to {dest} failed: {e}", dest) from e


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
