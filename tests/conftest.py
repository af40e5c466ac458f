"""Shared fixtures. Tests marked `dassl` are skipped, with the reason, when Dassl is not installed."""
import importlib.util
import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HAVE_DASSL = importlib.util.find_spec("dassl") is not None
DASSL_REASON = ("Dassl is not installed: it is not on PyPI (install it from its repository, see README 'Install'); "
                "this test needs it")


def pytest_collection_modifyitems(config, items):
    if HAVE_DASSL:
        return
    skip = pytest.mark.skip(reason=DASSL_REASON)
    for item in items:
        if "dassl" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _undo_dassl_logging_disable():
    """`import dassl` disables logging process-wide; keep it from leaking into other tests."""
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    """A tiny randomly initialised CLIP (ViT, 32 px) saved as a plain state dict."""
    from trainers.clip_adapt.clip_loader import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_vit.pt", seed=0)


@pytest.fixture(scope="session")
def tiny_rn_clip_path(tmp_path_factory):
    """A tiny randomly initialised CLIP with a ModifiedResNet image tower."""
    from trainers.clip_adapt.clip_loader import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_rn.pt", seed=0, arch="rn")


@pytest.fixture
def script_env(tmp_path):
    """Environment for running scripts/<method>/main.sh on fixtures: DATA, OUTPUT, SEEDS, caches in tmp."""
    env = dict(os.environ)
    env.update({
        "DATA": str(tmp_path / "data"),
        "OUTPUT": str(tmp_path / "output"),
        "SEEDS": "1",
        "CLIP_ADAPT_CACHE": str(tmp_path / "cache"),
        "PYTHON": sys.executable,
        "PYTHONWARNINGS": "ignore",
    })
    return env
