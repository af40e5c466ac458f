"""Every trainer under `torchrun` with 2 gloo processes on the CPU (tiny CLIP, the small world's dataset layout),
against the 1-process run with the same global batch: same accuracy, same trainable weights within float tolerance,
one log.txt and one results.json; `torchrun --nproc_per_node 1` is exactly a plain run; a 2-process run killed
mid-epoch resumes to the uninterrupted result. Core collectives: tests/test_distributed.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_reliability_dassl import write_world_fixture

pytestmark = pytest.mark.dassl

# trainer -> config values that give several steps per epoch (and, for ReCLIP, a last batch of one image, which
# leaves one process an empty share)
CASES = {
    "FAIR": ("DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2", "TRAINER.FAIR.N_CROPS", "3",
             "TRAINER.FAIR.TOPK_CROPS", "2", "DATALOADER.TEST.BATCH_SIZE", "4"),
    # the running statistics: distribution alignment and the EMA teacher (world.yaml: TEACHER_EMA 0.99)
    "FAIR_align": ("DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "2", "TRAINER.FAIR.N_CROPS", "3",
                   "TRAINER.FAIR.TOPK_CROPS", "2", "DATALOADER.TEST.BATCH_SIZE", "4", "TRAINER.FAIR.DIST_ALIGN", "True",
                   "TRAINER.FAIR.DIST_ALIGN_MOMENTUM", "0.5"),
    "ReCLIP": ("DATALOADER.TRAIN_X.BATCH_SIZE", "14", "OPTIM.MAX_EPOCH", "2", "DATALOADER.TEST.BATCH_SIZE", "4"),
    "DAC": ("DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2", "TRAINER.DAC.SAMPLER", "class_views",
            "TRAINER.DAC.BATCH_SIZE", "4", "TRAINER.DAC.AUG_PASSES", "3", "DATALOADER.TEST.BATCH_SIZE", "4"),
    "DAC_random": ("DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2", "TRAINER.DAC.BATCH_SIZE", "6",
                   "TRAINER.DAC.AUG_PASSES", "3", "DATALOADER.TEST.BATCH_SIZE", "4"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("world")
    write_world_fixture(data, per_class={"train": 8, "val": 2, "test": 5})
    return data


def _run(data, out, clip, trainer, opts, nproc=0, flags=(), script="train.py", env=None):
    """train.py in one plain process (nproc 0) or under torchrun with `nproc` processes."""
    launcher = ([sys.executable, "-W", "ignore"] if nproc == 0 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)])
    name = trainer.split("_")[0]
    cmd = [*launcher, script, "--root", str(data), "--seed", "1", "--trainer", name, "--dataset-config-file",
           "configs/datasets/fashion_mnist_shift.yaml", "--config-file", f"configs/trainers/{name}/world.yaml",
           "--output-dir", str(out), *flags, "MODEL.BACKBONE.NAME", str(clip), "DATALOADER.NUM_WORKERS", "0",
           "TRAINER.FEATURE_CACHE_DIR", str(out) + "_cache", *opts]
    run_env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)


def _weights(out):
    """{model/param: tensor} of the last epoch's checkpoints."""
    found = {}
    for path in sorted(Path(out).glob("*/model.pth.tar-*")):
        state = torch.load(path, weights_only=True)["state_dict"]
        found.update({f"{path.parent.name}/{k}": v for k, v in state.items() if torch.is_tensor(v)})
    return found


def _result(out):
    return json.loads((Path(out) / "results.json").read_text())


def _check_outputs(out, nproc):
    files = sorted(p.name for p in Path(out).iterdir() if p.is_file())
    assert files.count("results.json") == 1 and [f for f in files if f.startswith("log.txt")] == ["log.txt"], files
    log = (Path(out) / "log.txt").read_text()
    assert "[rank 1]" not in log and log.count("Finish training") <= 1 and log.count("=> result") == 1
    assert len(list((Path(out) / "tensorboard").glob("events.*"))) <= 1 if (Path(out) / "tensorboard").exists() \
        else True
    if nproc > 1:
        assert _result(out)["processes"] == nproc
        assert f"Data-parallel: {nproc} processes (gloo)" in log


@pytest.mark.parametrize("trainer", sorted(CASES))
def test_two_processes_match_one_with_the_same_global_batch(trainer, world, tmp_path, tiny_clip_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = _run(world, one, tiny_clip_path, trainer, CASES[trainer])
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = _run(world, two, tiny_clip_path, trainer, CASES[trainer], nproc=2)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    _check_outputs(two, 2)
    assert _result(two)["accuracy"] == _result(one)["accuracy"]
    w1, w2 = _weights(one), _weights(two)
    assert w1 and sorted(w1) == sorted(w2)
    for key in w1:
        assert torch.allclose(w1[key].float(), w2[key].float(), atol=1e-5, rtol=1e-4), \
            (key, (w1[key].float() - w2[key].float()).abs().max())
    e1, e2 = (torch.load(o / "trainer_state.pth.tar", weights_only=True)["extra"] for o in (one, two))
    if trainer.startswith("FAIR"):  # the EMA teacher and the alignment statistics are the global batch's
        assert sorted(e1) == sorted(e2) and "teacher_ema" in e1
        for name in e1["teacher_ema"]:
            assert torch.allclose(e1["teacher_ema"][name], e2["teacher_ema"][name], atol=1e-5, rtol=1e-4), name
        if trainer == "FAIR_align":
            assert torch.allclose(e1["dist_align"]["mean"], e2["dist_align"]["mean"], atol=1e-6)
            assert not torch.allclose(e1["dist_align"]["mean"], torch.full_like(e1["dist_align"]["mean"], 1 / 3))
    if trainer == "ReCLIP":  # one propagation, its labels shared: the last round's pseudo-labels are the same
        assert torch.equal(e1["labels_v"], e2["labels_v"]) and torch.equal(e1["labels_t"], e2["labels_t"])
    if trainer == "DAC":  # the searched alpha/beta and the cache model are the 1-process ones
        s1, s2 = (json.loads((o / "dac_search.json").read_text()) for o in (one, two))
        assert (s1["alpha"], s1["val_accuracy"]) == (s2["alpha"], s2["val_accuracy"])
        assert abs(s1["beta"] - s2["beta"]) < 1e-9


def test_zero_shot_evaluation_is_sharded_with_the_same_result(world, tmp_path, tiny_clip_path):
    opts = ("DATALOADER.TEST.BATCH_SIZE", "4")
    r1 = _run(world, tmp_path / "one", tiny_clip_path, "ZSCLIP", opts, flags=("--eval-only",))
    r2 = _run(world, tmp_path / "two", tiny_clip_path, "ZSCLIP", opts, nproc=2, flags=("--eval-only",))
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr[-3000:]
    assert _result(tmp_path / "two")["accuracy"] == _result(tmp_path / "one")["accuracy"]
    _check_outputs(tmp_path / "two", 2)


def test_torchrun_with_one_process_is_exactly_a_plain_run(world, tmp_path, tiny_clip_path):
    plain, one = tmp_path / "plain", tmp_path / "torchrun1"
    assert _run(world, plain, tiny_clip_path, "FAIR", CASES["FAIR"]).returncode == 0
    r = _run(world, one, tiny_clip_path, "FAIR", CASES["FAIR"], nproc=1)
    assert r.returncode == 0, r.stderr[-3000:]
    wp, w1 = _weights(plain), _weights(one)
    assert wp and all(torch.equal(wp[k], w1[k]) for k in wp)
    assert _result(one)["accuracy"] == _result(plain)["accuracy"]


def test_a_two_process_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(world, tmp_path, tiny_clip_path):
    opts = CASES["FAIR"][:2] + ("OPTIM.MAX_EPOCH", "3") + CASES["FAIR"][4:]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run(world, full, tiny_clip_path, "FAIR", opts, nproc=2).returncode == 0
    script = str(REPO / "tests" / "distributed_kill.py")
    r = _run(world, killed, tiny_clip_path, "FAIR", opts, nproc=2, script=script, env={"KILL_AT": "1,1"})
    assert r.returncode != 0 and not (killed / "results.json").exists()
    assert (killed / "fair" / "model.pth.tar-1").exists() and not (killed / "fair" / "model.pth.tar-2").exists()
    r = _run(world, killed, tiny_clip_path, "FAIR", opts, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = "".join(p.read_text() for p in killed.glob("log.txt*"))  # the rerun's log is a second file (Dassl)
    assert "will resume training from epoch 2" in logs
    wf, wk = _weights(full), _weights(killed)
    assert wf and all(torch.equal(wf[k], wk[k]) for k in wf)
    assert _result(killed)["accuracy"] == _result(full)["accuracy"]


def _errors(res):
    """The error lines of our processes (torchrun then reports the failed child with its own traceback)."""
    assert 'train.py", line' not in res.stderr and "clip_adapt/" not in res.stderr, res.stderr[-3000:]
    return [line for line in res.stderr.splitlines() if "error:" in line and "ChildFailedError" not in line]


def test_an_indivisible_global_batch_is_one_message_naming_both_numbers(world, tmp_path, tiny_clip_path):
    r = _run(world, tmp_path / "out", tiny_clip_path, "FAIR", ("DATALOADER.TRAIN_X.BATCH_SIZE", "7"), nproc=2)
    assert r.returncode != 0
    errors = _errors(r)
    assert len(errors) == 1 and "DATALOADER.TRAIN_X.BATCH_SIZE = 7" in errors[0] and "2 processes" in errors[0], \
        r.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_a_one_process_baseline_under_torchrun_is_one_message_naming_it(world, tmp_path, tiny_clip_path):
    r = _run(world, tmp_path / "out", tiny_clip_path, "SelfTraining", ("OPTIM.MAX_EPOCH", "1"), nproc=2)
    errors = _errors(r)
    assert r.returncode != 0 and len(errors) == 1 and "SelfTraining runs in one process only" in errors[0], \
        r.stderr[-3000:]
