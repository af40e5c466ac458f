"""Checkpoints survive a kill at every file operation of the save sequence (clip_adapt/engine/base.py, save_model).

A harness process (one subprocess, Dassl imported once) forks, for every k, a child that trains a tiny linear probe
and dies with os._exit at the k-th file operation of its checkpoint writes (torch.save -- killed half-way through
the write --, os.replace, os.remove); then a second child reruns the same run in the same folder. Each rerun must
resume (no error) and end with exactly the accuracy and the weights of an uninterrupted run.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.dassl

KILLED = 17  # the exit code of a child killed by the harness


def _cfg(out, images, clip_path, cache):
    import dassl  # noqa: F401
    from dassl.config import get_cfg_default

    from clip_adapt.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list(["TRAINER.NAME", "BaseProbe", "DATASET.NAME", "CrashFixture", "OUTPUT_DIR", str(out),
                         "MODEL.BACKBONE.NAME", str(clip_path), "INPUT.SIZE", "(32, 32)",
                         "DATALOADER.NUM_WORKERS", "0", "TRAINER.FEATURE_CACHE_DIR", str(cache), "USE_CUDA", "False",
                         "SEED", "1", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH", "3",
                         "OPTIM.LR_SCHEDULER", "cosine", "DATALOADER.TRAIN_X.BATCH_SIZE", "12",
                         "INPUT.TRANSFORMS", "('random_flip', 'normalize')"])
    cfg.freeze()
    return cfg


def _train(cfg, kill_at=None):
    """Train in this process; with kill_at, die at the kill_at-th file operation made inside save_model (0: never;
    the count is left in trainer.file_ops)."""
    import torch
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    torch.set_num_threads(1)
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    if kill_at is not None:
        count = [0]
        inside = [False]

        def instrument(owner, attr, partial_write=False):
            real = getattr(owner, attr)

            def op(*args, **kwargs):
                if inside[0]:
                    count[0] += 1
                    if count[0] == kill_at:
                        if partial_write:  # die half-way through writing the file
                            real(*args, **kwargs)
                            with open(args[1], "r+b") as f:
                                f.truncate(max(1, os.path.getsize(args[1]) // 2))
                        os._exit(KILLED)
                return real(*args, **kwargs)

            setattr(owner, attr, op)

        instrument(torch, "save", partial_write=True)
        for attr in ("replace", "remove", "unlink", "rename"):
            instrument(os, attr)
        save = trainer.save_model

        def save_model(*args, **kwargs):
            inside[0] = True
            try:
                return save(*args, **kwargs)
            finally:
                inside[0] = False

        trainer.save_model = save_model
    trainer.train()
    if kill_at is not None:
        trainer.file_ops = count[0]
    return trainer


def _in_child(fn):
    """Run fn() in a forked child (stdout/stderr to /dev/null); its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            fn()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def harness(tmp, clip_path):
    """Prints a JSON report: the number of file operations of an uninterrupted run and, per kill point k, the exit
    code of the killed child and of the rerun, and whether the rerun's result equals the uninterrupted one."""
    import torch

    from tests.conftest import register_fixture_dataset
    from tests.test_base_trainer_dassl import _register_probe_trainer

    register_fixture_dataset(os.path.join(tmp, "images"), "CrashFixture")
    _register_probe_trainer()
    cache = os.path.join(tmp, "cache")

    def result(out):
        acc = json.load(open(os.path.join(out, "results.json")))["accuracy"]
        weights = torch.load(os.path.join(out, "head", "model.pth.tar-3"))["state_dict"]
        return acc, weights

    full = os.path.join(tmp, "full")
    n_ops = os.path.join(tmp, "n_ops")

    def count_ops():  # the uninterrupted run, counting the file operations of its saves (kill_at 0: never)
        trainer = _train(_cfg(full, None, clip_path, cache), kill_at=0)
        open(n_ops, "w").write(str(trainer.file_ops))

    assert _in_child(count_ops) == 0, "the uninterrupted run failed"
    total = int(open(n_ops).read())
    acc, weights = result(full)
    report = {"ops": total, "kills": []}
    for k in range(1, total + 1):
        out = os.path.join(tmp, f"kill{k}")
        cfg = _cfg(out, None, clip_path, cache)
        killed = _in_child(lambda: _train(cfg, kill_at=k))
        rerun = _in_child(lambda: _train(cfg))
        same = False
        if rerun == 0:
            acc_k, weights_k = result(out)
            same = acc_k == acc and all(torch.equal(v, weights_k[n]) for n, v in weights.items())
        report["kills"].append({"k": k, "killed": killed, "rerun": rerun, "same": same})
    print("REPORT " + json.dumps(report))


@pytest.mark.slow
def test_a_kill_at_any_file_operation_of_a_save_resumes_to_the_same_result(tmp_path, tiny_clip_path):
    code = f"from tests.test_crash_safety_dassl import harness; harness({str(tmp_path)!r}, {str(tiny_clip_path)!r})"
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.split("REPORT ", 1)[1])
    # 3 epochs x (model file: write + rename; trainer state: write + rename; pointer: rename) + 2 removals of the
    # previous epoch's model file
    assert report["ops"] >= 15, report
    for kill in report["kills"]:
        assert kill["killed"] == KILLED, kill  # the child really died at that operation
        assert kill["rerun"] == 0 and kill["same"], kill
