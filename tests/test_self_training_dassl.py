"""SelfTraining Dassl trainer (clip_adapt/engine/self_training.py) on a tiny CLIP and the fixture dataset: unlabelled
two-view batches, the frozen zero-shot teacher, only norm layers moving, end to end with results.json, the script
and its `ours` row."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

SMALL = ["DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1",
         "OPTIM.LR", "0.01", "TRAINER.PREC", "fp32"]


@pytest.fixture
def build(tmp_path, dassl_cfg):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401

    register_fixture_dataset(tmp_path / "images", "STFixture")

    def _build(out, *opts, trainer="SelfTraining"):
        cfg = dassl_cfg(f"configs/trainers/{trainer}/vit_b16.yaml", "TRAINER.NAME", trainer, "DATASET.NAME",
                        "STFixture", "OUTPUT_DIR", str(out), *SMALL, *opts)
        set_random_seed(cfg.SEED)
        return build_trainer(cfg)

    return _build


def test_batches_hold_two_views_and_no_label(build, tmp_path):
    st = build(tmp_path / "st")
    batch = next(iter(st.train_loader_x))
    assert set(batch) == {"img_weak", "img_strong", "index"}


def test_one_step_moves_only_the_norms_and_not_the_zero_shot_teacher(build, tmp_path):
    st = build(tmp_path / "st", "TRAINER.SELFTRAINING.THRESHOLD", "0.0")
    before = {n: p.detach().clone() for n, p in st.model.named_parameters()}
    teacher = {n: p.detach().clone() for n, p in st.teacher.named_parameters()}
    st.set_model_mode("train")
    st.batch_idx, st.num_batches = 0, len(st.train_loader_x)
    out = st.forward_backward(next(iter(st.train_loader_x)))
    assert out["mask"] == 1.0
    moved = {n for n, p in st.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all("ln_" in n for n in moved)
    assert all(torch.equal(p, teacher[n]) for n, p in st.teacher.named_parameters())


def test_threshold_one_trains_nothing(build, tmp_path):
    st = build(tmp_path / "st", "TRAINER.SELFTRAINING.THRESHOLD", "1.0")
    before = {n: p.detach().clone() for n, p in st.model.named_parameters()}
    st.set_model_mode("train")
    st.batch_idx, st.num_batches = 0, len(st.train_loader_x)
    out = st.forward_backward(next(iter(st.train_loader_x)))
    assert out["mask"] == 0.0 and out["loss"] == 0.0
    assert all(torch.equal(p.detach(), before[n]) for n, p in st.model.named_parameters())


def test_bad_values_name_the_key(build, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.SELFTRAINING.TEACHER"):
        build(tmp_path / "x", "TRAINER.SELFTRAINING.TEACHER", "oracle")
    with pytest.raises(ValueError, match="TRAINER.SELFTRAINING.THRESHOLD"):
        build(tmp_path / "y", "TRAINER.SELFTRAINING.THRESHOLD", "1.5")


def test_end_to_end_writes_results_and_resumes(build, tmp_path):
    out = tmp_path / "st"
    st = build(out, "TRAINER.SELFTRAINING.TEACHER", "current")
    st.train()
    results = json.loads((out / "results.json").read_text())
    assert results["trainer"] == "SelfTraining" and results["teacher"] == "current" and results["epochs"] == 1
    assert (out / "selftraining" / "model.pth.tar-1").exists()
    again = build(out, "TRAINER.SELFTRAINING.TEACHER", "current")
    assert again.resume_model_if_exist(str(out)) == 1


@pytest.mark.slow
def test_main_sh_end_to_end_and_results_row(script_env, tiny_clip_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", "scripts/selftraining/main.sh", name, "vit_b16", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "SelfTraining" / "vit_b16" / "seed1"
    assert "Finish training" in (run / "log.txt").read_text()
    res = subprocess.run([sys.executable, "-m", "tools.results", "--output", script_env["OUTPUT"], "--seeds", "1",
                          "--format", "csv", "--no-baselines"], cwd=REPO, env=script_env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = next(line for line in res.stdout.splitlines() if line.startswith("SelfTraining,"))
    assert ",ours," in row


def test_ema_teacher_follows_the_student_and_resumes(build, tmp_path):
    out = tmp_path / "ema"
    st = build(out, "TRAINER.SELFTRAINING.TEACHER", "ema", "TRAINER.SELFTRAINING.TEACHER_EMA", "0.5",
               "TRAINER.SELFTRAINING.THRESHOLD", "0.0", "TRAINER.SELFTRAINING.FAIRNESS_WEIGHT", "1.0")
    name = next(n for n in st._trained_names)
    t0 = dict(st.teacher.named_parameters())[name].detach().clone()
    st.set_model_mode("train")
    st.batch_idx, st.num_batches = 0, len(st.train_loader_x)
    st.forward_backward(next(iter(st.train_loader_x)))
    s1 = dict(st.model.named_parameters())[name].detach()
    assert torch.allclose(dict(st.teacher.named_parameters())[name], 0.5 * t0 + 0.5 * s1)
    st.train()  # one epoch, checkpoint with the teacher's average
    again = build(out, "TRAINER.SELFTRAINING.TEACHER", "ema", "TRAINER.SELFTRAINING.TEACHER_EMA", "0.5",
                  "TRAINER.SELFTRAINING.THRESHOLD", "0.0", "TRAINER.SELFTRAINING.FAIRNESS_WEIGHT", "1.0")
    again.resume_model_if_exist(str(out))
    assert torch.equal(dict(again.teacher.named_parameters())[name], dict(st.teacher.named_parameters())[name])
