"""Torch-native LR schedules and state-dict-only checkpoints (weights_only loadable, RNG restored)."""
import random

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from clip_adapt import checkpoint as ckpt
from clip_adapt.optim import build_optimizer, build_scheduler


def _cfg(**kw):
    c = CN(dict(NAME="sgd", LR=0.1, WEIGHT_DECAY=0.0, MOMENTUM=0.9, ADAM_BETA1=0.9, ADAM_BETA2=0.999,
                LR_SCHEDULER="cosine", STEPSIZE=(-1,), GAMMA=0.1, MAX_EPOCH=10, WARMUP_EPOCH=-1,
                WARMUP_TYPE="constant", WARMUP_CONS_LR=1e-5, WARMUP_MIN_LR=1e-5, MIN_LR=0.0))
    c.update(kw)
    return c


def _lrs(cfg, epochs):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    sched = build_scheduler(opt, cfg)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, opt, sched


def test_cosine_reaches_min_lr():
    lrs, _, _ = _lrs(_cfg(MIN_LR=2e-6, MAX_EPOCH=5), 6)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(2e-6)
    assert all(a > b for a, b in zip(lrs[:5], lrs[1:6]))


def test_constant_warmup_then_cosine():
    lrs, _, _ = _lrs(_cfg(WARMUP_EPOCH=2, MAX_EPOCH=6), 3)
    assert lrs[0] == pytest.approx(1e-5) and lrs[1] == pytest.approx(1e-5) and lrs[2] == pytest.approx(0.1)


def test_linear_warmup_rises():
    lrs, _, _ = _lrs(_cfg(WARMUP_EPOCH=3, WARMUP_TYPE="linear", MAX_EPOCH=8), 4)
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(0.1)


def test_bad_names_are_named():
    with pytest.raises(ValueError, match="OPTIM.NAME"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], _cfg(NAME="lion"))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], _cfg())
    with pytest.raises(ValueError, match="OPTIM.LR_SCHEDULER"):
        build_scheduler(opt, _cfg(LR_SCHEDULER="wave"))


def test_scheduler_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    cfg = _cfg(WARMUP_EPOCH=1, MAX_EPOCH=6, NAME="adamw")
    _, opt, sched = _lrs(cfg, 3)
    ckpt.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "c.pth")
    state = torch.load(tmp_path / "c.pth", weights_only=True)  # torch's default since 2.6
    _, opt2, sched2 = _lrs(cfg, 0)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for _ in range(2):
        opt.step(); sched.step(); opt2.step(); sched2.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(opt2.param_groups[0]["lr"])


def test_rng_state_restores_every_generator(tmp_path):
    ckpt.save({"rng": ckpt.rng_state()}, tmp_path / "r.pth")
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pth")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pth"
    ckpt.save({"a": 1}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save({"a": 2}, path)
    assert ckpt.load(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_load_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        ckpt.load(tmp_path / "absent.pth")
