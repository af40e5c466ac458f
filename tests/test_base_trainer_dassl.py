"""The Dassl edge (clip_adapt/engine/base.py) with a tiny test-only trainer: resume, weights_only checkpoints, NaN stop,
eval-only loading, and train.py's config errors. Needs Dassl (skipped with a reason without it)."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl


class Crash(Exception):
    pass


def _register_probe_trainer():
    """A linear probe on frozen tiny-CLIP features: the smallest trainer that exercises the base class."""
    from dassl.engine import TRAINER_REGISTRY

    from clip_adapt.engine.base import CLIPAdaptTrainer
    from clip_adapt.zeroshot import encode_images

    class BaseProbe(CLIPAdaptTrainer):
        crash_at = None  # (epoch, batch) at which to simulate a kill
        nan_at = None  # (epoch, batch) whose loss is NaN
        inf_grad_at = None  # (epoch, batch) whose gradients are infinite (the loss stays finite)
        nan_logits = False  # the test logits are NaN

        def build_model(self):
            self.clip_model = self.build_clip()
            for p in self.clip_model.parameters():
                p.requires_grad_(False)
            self.head = torch.nn.Linear(self.clip_model.text_projection.shape[1], self.num_classes)
            self.register_trainable("head", self.head)

        def forward_backward(self, batch):
            if (self.epoch, self.batch_idx) == BaseProbe.crash_at:
                raise Crash(f"killed at epoch {self.epoch} batch {self.batch_idx}")
            with torch.no_grad():
                feats = encode_images(self.clip_model, batch["img"])
            loss = torch.nn.functional.cross_entropy(self.head(feats), batch["label"])
            if (self.epoch, self.batch_idx) == BaseProbe.nan_at:
                loss = loss * float("nan")
            if (self.epoch, self.batch_idx) == BaseProbe.inf_grad_at:
                self.head.weight.register_hook(lambda g: g * float("inf"))
            self.model_backward_and_update(loss)
            return {"loss": loss.item()}

        def model_inference(self, image):
            logits = self.head(encode_images(self.clip_model, image))
            return logits * float("nan") if BaseProbe.nan_logits else logits

    TRAINER_REGISTRY._obj_map.pop("BaseProbe", None)
    TRAINER_REGISTRY.register(BaseProbe)
    return BaseProbe


@pytest.fixture
def run(dassl_cfg, tmp_path):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    register_fixture_dataset(tmp_path / "images", "BaseFixture")
    probe = _register_probe_trainer()

    def _run(out, *opts, crash_at=None, nan_at=None, inf_grad_at=None, nan_logits=False, train=True):
        probe.crash_at, probe.nan_at, probe.inf_grad_at, probe.nan_logits = crash_at, nan_at, inf_grad_at, nan_logits
        cfg = dassl_cfg(None, "TRAINER.NAME", "BaseProbe", "DATASET.NAME", "BaseFixture", "OUTPUT_DIR", str(out),
                        "OPTIM.NAME", "sgd", "OPTIM.LR", "0.5", "OPTIM.MAX_EPOCH", "3", "OPTIM.LR_SCHEDULER",
                        "cosine", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "linear",
                        "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "INPUT.TRANSFORMS", "('random_flip', 'normalize')",
                        *opts)
        set_random_seed(cfg.SEED)
        trainer = build_trainer(cfg)
        if train:
            trainer.train()
        return trainer

    return _run


def test_interrupted_run_resumes_to_the_same_result(run, tmp_path, capsys):
    full = run(tmp_path / "full")
    with pytest.raises(Crash):
        run(tmp_path / "cut", crash_at=(1, 1))  # dies inside epoch 2, after epoch 1's checkpoint
    assert (tmp_path / "cut" / "trainer_state.pth.tar").exists()
    capsys.readouterr()
    resumed = run(tmp_path / "cut")
    assert "will resume training from epoch 2" in capsys.readouterr().out
    assert torch.equal(resumed.head.weight, full.head.weight)
    assert resumed.last_result == full.last_result
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["accuracy"] == full.last_result


def test_checkpoints_load_with_weights_only_and_hold_state_dicts(run, tmp_path):
    run(tmp_path / "out")
    path = tmp_path / "out" / "head" / "model.pth.tar-3"
    state = torch.load(path)  # torch's default weights_only=True
    assert set(state) >= {"state_dict", "epoch", "optimizer", "scheduler"} and state["epoch"] == 3
    assert isinstance(state["scheduler"], dict) and set(state["state_dict"]) == {"weight", "bias"}
    torch.load(tmp_path / "out" / "trainer_state.pth.tar")
    assert not (tmp_path / "out" / "head" / "model.pth.tar-2").exists()  # older epochs pruned (no CHECKPOINT_FREQ)


def test_lr_follows_the_torch_native_schedule(run, tmp_path):
    trainer = run(tmp_path / "out", "OPTIM.MAX_EPOCH", "4")
    # linear warmup (1 epoch) then cosine over 3 epochs: stepped once per epoch -> after 4 steps cosine ended
    assert trainer.get_current_lr() == pytest.approx(0.0, abs=1e-12)
    assert trainer._scheds["head"].last_epoch == 4


def test_nan_loss_stops_with_epoch_and_batch(run, tmp_path):
    with pytest.raises(FloatingPointError, match=r"epoch 2/3, batch 2/3"):
        run(tmp_path / "out", nan_at=(1, 1))
    assert not (tmp_path / "out" / "results.json").exists()


def test_non_finite_parameters_after_a_step_stop_with_epoch_and_batch(run, tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite trainable parameters \(weight of 'head'\) after the "
                                                 r"optimiser step at epoch 2/3, batch 2/3; stopping; no result"):
        run(tmp_path / "out", inf_grad_at=(1, 1))
    assert not (tmp_path / "out" / "results.json").exists()


def test_non_finite_test_logits_stop_before_any_result(run, tmp_path, capsys):
    with pytest.raises(FloatingPointError, match=r"non-finite logits in the evaluation on the test split, batch 1"):
        run(tmp_path / "out", nan_logits=True)
    assert not (tmp_path / "out" / "results.json").exists()
    assert "=> result" not in capsys.readouterr().out


def _crashed(run, out):
    with pytest.raises(Crash):
        run(out, crash_at=(1, 1))  # dies inside epoch 2, after epoch 1's checkpoint


def test_resume_with_another_config_is_an_error_naming_the_keys(run, tmp_path):
    from clip_adapt.checkpoint import RunIdentityError

    _crashed(run, tmp_path / "cut")
    with pytest.raises(RunIdentityError) as e:
        run(tmp_path / "cut", "OPTIM.LR", "0.1", "OPTIM.MAX_EPOCH", "4")
    msg = str(e.value)
    assert "OPTIM.LR: 0.5 -> 0.1" in msg and "OPTIM.MAX_EPOCH: 3 -> 4" in msg and "OUTPUT=<another folder>" in msg
    assert torch.load(tmp_path / "cut" / "trainer_state.pth.tar")["epoch"] == 1  # nothing was overwritten


def test_resume_with_another_backbone_is_an_error(run, tmp_path):
    from clip_adapt.checkpoint import RunIdentityError
    from clip_adapt.clip_loader import save_tiny_clip

    _crashed(run, tmp_path / "cut")
    other = save_tiny_clip(tmp_path / "other_clip.pt", seed=1)
    with pytest.raises(RunIdentityError, match=r"backbone: .*tiny_vit.pt \(sha256 \w+\) -> .*other_clip.pt"):
        run(tmp_path / "cut", "MODEL.BACKBONE.NAME", str(other))


def test_keys_that_do_not_change_the_result_may_differ_on_resume(run, tmp_path):
    full = run(tmp_path / "full")
    _crashed(run, tmp_path / "cut")
    resumed = run(tmp_path / "cut", "TRAIN.PRINT_FREQ", "1", "DATASET.ROOT", str(tmp_path / "elsewhere"),
                  "TRAINER.FEATURE_CACHE_DIR", str(tmp_path / "other_cache"))
    assert torch.equal(resumed.head.weight, full.head.weight) and resumed.last_result == full.last_result


def test_a_folder_with_a_checkpoint_but_no_recorded_config_is_not_resumed(run, tmp_path):
    from clip_adapt.checkpoint import RunIdentityError

    _crashed(run, tmp_path / "cut")
    (tmp_path / "cut" / "run.json").unlink()
    with pytest.raises(RunIdentityError, match="no run.json recording the config"):
        run(tmp_path / "cut")


def test_an_unreadable_checkpoint_is_one_error_naming_the_file(run, tmp_path):
    from clip_adapt.checkpoint import ResumeError

    _crashed(run, tmp_path / "cut")
    state = tmp_path / "cut" / "trainer_state.pth.tar"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ResumeError, match=rf"cannot resume from .*{state}.*to start fresh, delete"):
        run(tmp_path / "cut")


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(run, tmp_path, monkeypatch):
    import errno

    from clip_adapt.checkpoint import CheckpointWriteError

    full = run(tmp_path / "full")
    real_save = torch.save

    def save(obj, f, *a, **k):
        if "model.pth.tar-2." in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointWriteError, match=r"cannot write .*head/model.pth.tar-2: No space left on device; "
                                                   r"the last complete checkpoint \(epoch 1\)"):
        run(tmp_path / "cut")
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "cut" / "trainer_state.pth.tar")["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "cut" / "head").iterdir()) == ["checkpoint", "model.pth.tar-1"]
    resumed = run(tmp_path / "cut")
    assert torch.equal(resumed.head.weight, full.head.weight) and resumed.last_result == full.last_result


def test_a_bad_generic_value_is_a_config_error_naming_key_and_allowed_values(run, tmp_path):
    from clip_adapt.checkpoint import ConfigError

    with pytest.raises(ConfigError, match=r"TRAINER.PREC must be one of fp16, fp32, amp; got 'fp8'"):
        run(tmp_path / "out", "TRAINER.PREC", "fp8", train=False)
    with pytest.raises(ConfigError, match=r"OPTIM.LR must be a finite number > 0; got inf"):
        run(tmp_path / "out", "OPTIM.LR", "1e999", train=False)
    assert not (tmp_path / "out").exists()


def test_eval_only_loads_the_last_epoch(run, tmp_path):
    trained = run(tmp_path / "out")
    fresh = run(tmp_path / "eval", train=False)
    assert not torch.equal(fresh.head.weight, trained.head.weight)
    fresh.load_model(str(tmp_path / "out"))
    assert torch.equal(fresh.head.weight, trained.head.weight)
    assert fresh.test() == trained.last_result


def _train_py(*args):
    return subprocess.run([sys.executable, "-W", "ignore", "train.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_train_py_names_an_unknown_config_key(tmp_path):
    res = _train_py("--output-dir", str(tmp_path), "--config-file", "configs/trainers/ZSCLIP/vit_b16.yaml",
                    "TRAINER.FAIR.NOT_A_KEY", "1")
    assert res.returncode != 0 and "TRAINER.FAIR.NOT_A_KEY" in res.stderr


def test_train_py_names_the_yaml_file_with_a_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  LEARNING_RATE: 0.1\n")
    res = _train_py("--config-file", str(bad))
    assert res.returncode != 0 and "bad.yaml" in res.stderr and "LEARNING_RATE" in res.stderr


def test_train_py_reports_a_missing_dataset_folder_once_and_leaves_no_folder(tmp_path, tiny_clip_path):
    out = tmp_path / "output" / "cub" / "ZSCLIP" / "vit_b16" / "seed1"
    res = _train_py("--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "ZSCLIP",
                    "--dataset-config-file", "configs/datasets/cub.yaml",
                    "--config-file", "configs/trainers/ZSCLIP/vit_b16.yaml", "--output-dir", str(out),
                    "--eval-only", "MODEL.BACKBONE.NAME", str(tiny_clip_path))
    missing = str(tmp_path / "data" / "CUB_200_2011")
    assert res.returncode == 2
    assert f"error: missing dataset folder: {missing}" in res.stderr and "how to obtain it" in res.stderr
    assert "Traceback" not in res.stderr
    assert (res.stdout + res.stderr).count("missing dataset folder") == 1  # once, not also echoed to stdout
    assert "** Config **" not in res.stdout  # the config dump goes to log.txt only
    assert not (tmp_path / "output").exists()  # the folder held only the log of this failure: removed
