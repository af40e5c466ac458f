"""The run contract (docs/RUNS.md) as a user meets it, through train.py and scripts/<method>/main.sh in subprocesses:
a finished run is skipped only when it is the same run, bad inputs end with one message and no traceback, a broken
run writes no result, the log keeps every line of a killed run, the scripts' first contact without data.
In-process checks of the same code paths: tests/test_base_trainer_dassl.py; kills during saves:
tests/test_crash_safety_dassl.py."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_reliability_dassl import write_world_fixture

pytestmark = pytest.mark.dassl

DAC_OPTS = ("DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2")


def _env(**extra):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    env.update(extra)
    return env


def _train(data, out, clip, cache, *opts, trainer="DAC", cfg="configs/trainers/DAC/world.yaml", flags=(),
           prefix=()):
    cmd = [sys.executable, "-W", "ignore", *prefix, "train.py", "--root", str(data), "--seed", "1", "--trainer",
           trainer, "--dataset-config-file", "configs/datasets/fashion_mnist_shift.yaml", "--config-file", cfg,
           "--output-dir", str(out), *flags, "MODEL.BACKBONE.NAME", str(clip), "TRAINER.FEATURE_CACHE_DIR",
           str(cache), *opts]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)


def _one_message(res, *needles):
    """stderr holds exactly one error line, containing every needle, and no traceback."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    write_world_fixture(data, per_class={"train": 4, "val": 2, "test": 4})
    return data


# ---- identity: skip and resume only the same run -------------------------------------------------------------
def _zsclip(env, dataset, clip, *opts):
    return subprocess.run(["bash", "scripts/zsclip/main.sh", dataset, "vit_b16", "MODEL.BACKBONE.NAME", str(clip),
                           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", *opts], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_finished_run_is_skipped_only_with_the_same_config_and_backbone(script_env, tiny_clip_path, tmp_path):
    from clip_adapt.clip_loader import save_tiny_clip
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    first = _zsclip(script_env, name, tiny_clip_path)
    assert first.returncode == 0, first.stderr[-3000:]
    seed_dir = Path(script_env["OUTPUT"]) / name / "ZSCLIP" / "vit_b16" / "seed1"
    before = (seed_dir / "results.json").read_text()

    same = _zsclip(script_env, name, tiny_clip_path, "TRAINER.FEATURE_CACHE_DIR", str(tmp_path / "c2"))
    assert same.returncode == 0 and "finished run in" in same.stdout and "skipping" in same.stdout
    other = save_tiny_clip(tmp_path / "other.pt", seed=1)
    changed = _zsclip(script_env, name, other)
    assert changed.returncode == 2
    _one_message(changed, "backbone:", "tiny_vit.pt", "other.pt", "OUTPUT=<another folder>")
    templates = _zsclip(script_env, name, tiny_clip_path, "TRAINER.ZSCLIP.TEMPLATES", "ensemble")
    assert templates.returncode == 2
    _one_message(templates, "TRAINER.ZSCLIP.TEMPLATES: 'single' -> 'ensemble'")
    assert sorted(p.name for p in seed_dir.glob("log.txt*")) == ["log.txt"]  # nothing re-ran
    assert (seed_dir / "results.json").read_text() == before


# ---- bad inputs: one message, no traceback, nothing written ----------------------------------------------------
@pytest.mark.parametrize("opts, needles", [
    (("TRAINER.PREC", "fp8"), ("TRAINER.PREC", "'fp8'", "fp16, fp32, amp")),
    (("OPTIM.NAME", "lion"), ("OPTIM.NAME", "'lion'", "sgd, adam, adamw")),
    (("DATASET.NAME", "../../escape"), ("DATASET.NAME", "plain name", "'../../escape'")),
    (("TRAINER.DAC.AUG_PASSES", "0"), ("TRAINER.DAC.AUG_PASSES",)),
])
def test_a_bad_config_value_is_one_message_naming_it(world, tmp_path, tiny_clip_path, opts, needles):
    out = tmp_path / "out" / "seed1"
    res = _train(world, out, tiny_clip_path, tmp_path / "cache", *DAC_OPTS, *opts)
    assert res.returncode == 2
    _one_message(res, *needles)
    assert not (tmp_path / "out").exists()


def test_an_output_path_that_is_a_file_is_one_message(world, tmp_path, tiny_clip_path):
    blocker = tmp_path / "output"
    blocker.write_text("not a folder")
    res = _train(world, blocker / "seed1", tiny_clip_path, tmp_path / "cache", *DAC_OPTS)
    assert res.returncode == 2
    _one_message(res, str(blocker), "is a file")
    assert blocker.read_text() == "not a folder"


def test_non_finite_training_ends_with_one_message_and_no_result(world, tmp_path, tiny_clip_path):
    from tools import runs

    out = tmp_path / "out"
    res = _train(world, out, tiny_clip_path, tmp_path / "cache", *DAC_OPTS, "OPTIM.LR", "1e30")
    assert res.returncode == 1
    _one_message(res, "non-finite", "epoch 2/2, batch 1/1", "no result is written")
    assert not (out / "results.json").exists()
    assert runs.run_status(out).reason.startswith("log.txt: failed: non-finite")


def test_an_unreadable_resume_checkpoint_is_one_message_naming_it(world, tmp_path, tiny_clip_path):
    out = tmp_path / "out"
    assert _train(world, out, tiny_clip_path, tmp_path / "cache", *DAC_OPTS).returncode == 0
    (out / "results.json").unlink()  # an unfinished run, whose checkpoint is then damaged
    state = out / "trainer_state.pth.tar"
    state.write_bytes(b"garbage")
    res = _train(world, out, tiny_clip_path, tmp_path / "cache", *DAC_OPTS)
    assert res.returncode == 1
    _one_message(res, str(state), "to start fresh, delete")


FULL_DISK = """
import errno, runpy, sys, torch
real = torch.save
def save(obj, f, *a, **k):
    if "model.pth.tar-2." in str(f):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(obj, f, *a, **k)
torch.save = save
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_full_disk_during_a_save_is_one_message_and_the_run_resumes(world, tmp_path, tiny_clip_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-W", "ignore", "-c", FULL_DISK, "--root", str(world), "--seed", "1", "--trainer", "DAC",
           "--dataset-config-file", "configs/datasets/fashion_mnist_shift.yaml", "--config-file",
           "configs/trainers/DAC/world.yaml", "--output-dir", str(out), "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "TRAINER.FEATURE_CACHE_DIR", str(tmp_path / "cache"), *DAC_OPTS]
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    _one_message(res, str(out / "dac" / "model.pth.tar-2"), "No space left on device",
                 "the last complete checkpoint (epoch 1)")
    assert torch.load(out / "trainer_state.pth.tar")["epoch"] == 1
    again = _train(world, out, tiny_clip_path, tmp_path / "cache", *DAC_OPTS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "will resume training from epoch 2" in again.stdout and (out / "results.json").exists()


def test_the_log_keeps_every_line_printed_before_a_sigkill(tmp_path):
    code = ("import os, signal, train; train._import_dassl(); train.setup_logging(%r); "
            "print('the last line before the kill'); os.kill(os.getpid(), signal.SIGKILL)") % str(tmp_path / "out")
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL
    assert "the last line before the kill" in (tmp_path / "out" / "log.txt").read_text()


# ---- scripts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("fair", "../cub", "vit_b16"), ("fair", "cub", "../FAIR/vit_b16"),
                                  ("dac", "dtd", "sub/rn50", "1"), ("reclip", "..", "vit_b16")])
def test_scripts_accept_only_plain_names(script_env, tmp_path, args):
    res = subprocess.run(["bash", f"scripts/{args[0]}/main.sh", *args[1:]], cwd=REPO, env=script_env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "must be a plain name" in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written (OUTPUT not even created)


def test_first_contact_without_data_is_one_message_and_stops_after_the_first_seed(script_env, tmp_path):
    from tools import runs

    env = dict(script_env, SEEDS="1 2 3")
    res = subprocess.run(["bash", "scripts/fair/main.sh", "cub", "vit_b16"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    both = res.stdout + res.stderr
    missing = str(Path(env["DATA"]) / "CUB_200_2011")
    assert res.returncode == 2
    assert both.count("missing dataset folder") == 1 and missing in res.stderr and "how to obtain it" in res.stderr
    assert "Traceback" not in both and "seed 2:" not in both and "not running seeds 2 3" in res.stderr
    assert len(res.stdout.splitlines()) <= 5, res.stdout  # no config or environment dump on the terminal
    output = Path(env["OUTPUT"])
    assert not output.exists() or runs.scan(output) == []  # no seed folder left to list as crashed
