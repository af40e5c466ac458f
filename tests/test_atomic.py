"""Files the project writes honour the umask (0644 under 022) and are renamed into place whole."""
import json
import os
import stat

import pytest
import torch

from clip_adapt import atomic, checkpoint
from clip_adapt.cache import FeatureCache
from clip_adapt.data.splits import write_split


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_0644_under_umask_022(tmp_path, umask_022):
    checkpoint.save({"a": torch.zeros(1)}, tmp_path / "out" / "model.pth.tar-1")
    split = write_split(tmp_path / "data" / "split.json", {"train": [["a.jpg", 0, "x"]], "val": [], "test": []})
    cache = FeatureCache(tmp_path / "cache")
    cache.save({"k": 1}, torch.ones(2))
    for path in (tmp_path / "out" / "model.pth.tar-1", split, cache.path({"k": 1})):
        assert _mode(path) == 0o644, path


def test_a_stricter_umask_is_honoured(tmp_path):
    old = os.umask(0o077)
    try:
        p = atomic.write_text(tmp_path / "f.json", json.dumps({}))
    finally:
        os.umask(old)
    assert _mode(p) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
