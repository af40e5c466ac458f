"""Reliability under faults, through `train.py` in a subprocess as a user runs it.

Covered elsewhere and not repeated here: in-process exact resume, weights_only checkpoints, NaN loss naming the
epoch and batch, unknown config keys (tests/test_base_trainer_dassl.py); FAIR's in-process resume
(tests/test_fair_dassl.py). Here:
- a FAIR run killed with SIGKILL in the middle of its second epoch resumes from its output folder and ends with
  the same final accuracy (and the same trained parameters) as an uninterrupted run with the same seed;
- two runs with the same seed give identical accuracy on CPU;
- an unknown backbone name fails with the name; a corrupt image file fails with its path.
The dataset is a tiny tree in the real layout of `fashion_mnist_shift` (CoOp's split JSON + PNG files), so the
subprocess goes through the project's dataset layer (datasets/, clip_adapt/data/) like a real run.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO

pytestmark = pytest.mark.dassl

CLASSES = ["t-shirt", "trouser", "ankle boot"]


def write_world_fixture(root, per_class={"train": 12, "val": 2, "test": 4}):
    """A tiny `fashion_mnist_shift` tree under DATA=`root`: grey 32 px PNGs, a class-dependent bright shape."""
    from PIL import Image

    base = Path(root) / "fashion_mnist_shift"
    split = {}
    for s, (name, n) in enumerate(per_class.items()):
        rng = np.random.RandomState(s)
        items = []
        for label, cname in enumerate(CLASSES):
            for i in range(n):
                img = np.zeros((32, 32), np.uint8)
                img[4 + 8 * label:12 + 8 * label, 4:28] = 200
                img = np.clip(img + rng.rand(32, 32) * 40, 0, 255).astype(np.uint8)
                rel = f"{name}/{cname.replace(' ', '_')}/{i:05d}.png"
                (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img, mode="L").save(base / "images" / rel)
                items.append([rel, label, cname])
        split[name] = items
    (base / "split_fashion_mnist_shift.json").write_text(json.dumps(split))
    return base


def train_cmd(data, out, tiny_clip_path, cache, trainer="FAIR", cfg="configs/trainers/FAIR/world.yaml", *opts,
              flags=()):
    return [sys.executable, "-u", "-W", "ignore", "train.py", "--root", str(data), "--seed", "1", "--trainer",
            trainer, "--dataset-config-file", "configs/datasets/fashion_mnist_shift.yaml", "--config-file", cfg,
            "--output-dir", str(out), *flags, "MODEL.BACKBONE.NAME", str(tiny_clip_path), "DATALOADER.NUM_WORKERS", "0",
            "TRAINER.FEATURE_CACHE_DIR", str(cache), *opts]


FAIR_OPTS = ("DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "3", "TRAIN.PRINT_FREQ", "1",
             "TRAINER.FAIR.N_CROPS", "3", "TRAINER.FAIR.TOPK_CROPS", "2")


def _env():
    env = dict(os.environ)
    env.update({"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"})
    return env


def _run(cmd):
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


def _accuracy(out):
    return json.loads((Path(out) / "results.json").read_text())["accuracy"]


def _trained_state(out):
    state = torch.load(Path(out) / "fair" / "model.pth.tar-3")  # FAIR's registered module: norms + CDA
    return state["state_dict"]


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    write_world_fixture(data)
    return data


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_result_and_same_seed_runs_agree(world, tmp_path, tiny_clip_path):
    cache = tmp_path / "cache"
    full = _run(train_cmd(world, tmp_path / "full", tiny_clip_path, cache, "FAIR", "configs/trainers/FAIR/world.yaml",
                          *FAIR_OPTS))
    assert full.returncode == 0, full.stderr[-3000:]
    again = _run(train_cmd(world, tmp_path / "again", tiny_clip_path, cache, "FAIR",
                           "configs/trainers/FAIR/world.yaml", *FAIR_OPTS))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _accuracy(tmp_path / "again") == _accuracy(tmp_path / "full")  # same seed, same accuracy on CPU
    for k, v in _trained_state(tmp_path / "full").items():
        assert torch.equal(v, _trained_state(tmp_path / "again")[k]), k

    # the same run, killed with SIGKILL while epoch 2 is under way (epoch 1's checkpoint is on disk)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(world, cut, tiny_clip_path, cache, "FAIR", "configs/trainers/FAIR/world.yaml",
                                      *FAIR_OPTS), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        deadline = time.time() + 600
        for line in proc.stdout:  # Dassl prints "epoch [2/3] batch [k/9]" after every batch (PRINT_FREQ 1)
            seen.append(line)
            if "epoch [2/3]" in line:
                proc.send_signal(signal.SIGKILL)
                break
            assert time.time() < deadline, "no batch of epoch 2 was logged in time"
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    state = torch.load(cut / "trainer_state.pth.tar")
    assert state["epoch"] == 1, "the kill must land after epoch 1's checkpoint and before epoch 2's"
    assert not (cut / "results.json").exists()

    resumed = _run(train_cmd(world, cut, tiny_clip_path, cache, "FAIR", "configs/trainers/FAIR/world.yaml",
                             *FAIR_OPTS))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "will resume training from epoch 2" in resumed.stdout
    assert _accuracy(cut) == _accuracy(tmp_path / "full")
    for k, v in _trained_state(tmp_path / "full").items():
        assert torch.equal(v, _trained_state(cut)[k]), k


def test_unknown_backbone_name_fails_with_the_name(world, tmp_path):
    res = _run(train_cmd(world, tmp_path / "out", "ViT-Q/99", tmp_path / "cache", "ZSCLIP",
                         "configs/trainers/ZSCLIP/world.yaml", flags=["--eval-only"]))
    assert res.returncode != 0
    assert "unknown CLIP backbone 'ViT-Q/99' (MODEL.BACKBONE.NAME)" in res.stderr, res.stderr[-2000:]


def test_corrupt_image_fails_with_its_path(world, tmp_path, tiny_clip_path):
    bad = world / "fashion_mnist_shift" / "images" / "test" / "trouser" / "00002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    res = _run(train_cmd(world, tmp_path / "out", tiny_clip_path, tmp_path / "cache", "ZSCLIP",
                         "configs/trainers/ZSCLIP/world.yaml", flags=["--eval-only"]))
    assert res.returncode != 0
    assert str(bad) in res.stderr, res.stderr[-2000:]
