"""train.py that dies (os._exit(17)) at the step KILL_AT="<epoch>,<batch>" (0-based) on every rank, to test a
resume under torchrun (tests/test_distributed_dassl.py); without KILL_AT it is train.py."""
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as train.py, run from the repository root

from clip_adapt.engine import base  # noqa: E402

if os.environ.get("KILL_AT"):
    EPOCH, BATCH = map(int, os.environ["KILL_AT"].split(","))
    _check_loss = base.CLIPAdaptTrainer.check_loss

    def check_loss(self, loss):
        if self.epoch == EPOCH and self.batch_idx == BATCH:
            os._exit(17)
        return _check_loss(self, loss)

    base.CLIPAdaptTrainer.check_loss = check_loss

sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
