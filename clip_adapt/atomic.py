"""One way to write a file the project keeps (checkpoints, split files, caches, downloads): into a temporary file in
the target's folder, flushed to disk, given the permissions the process umask allows (0644 under the usual 022,
not mkstemp's 0600), then renamed over the target. A kill at any moment leaves either the old file or the new one,
never a partial one under the target's name.
"""
import contextlib
import os
import tempfile
from pathlib import Path


def _umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder):
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix=".part"):
    """Yield a temporary path beside `path`; on a clean exit it is made durable and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    """Write `text` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return Path(path)
