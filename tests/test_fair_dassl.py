"""The FAIR Dassl trainer on a tiny CLIP and a few 32 px images (needs Dassl; skipped with a reason without it)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

DESCRIPTIONS = {"Cat": ["a small furry animal", "a cat with whiskers"], "dog": ["a loyal dog"],
                "BIRD": ["a bird with feathers", "a bird in flight", "a beak"]}


@pytest.fixture
def build(tmp_path, dassl_cfg):
    """build(output_dir, KEY, VALUE, ...) -> a FAIR trainer on the shared fixture dataset, in this process."""
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401  registers the trainers

    register_fixture_dataset(tmp_path / "images", "FAIRFixture")
    desc_file = tmp_path / "descriptions.json"
    desc_file.write_text(json.dumps(DESCRIPTIONS))

    def _build(out, *opts):
        cfg = dassl_cfg("configs/trainers/FAIR/vit_b16.yaml", "TRAINER.NAME", "FAIR", "DATASET.NAME", "FAIRFixture",
                        "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.TEST.BATCH_SIZE", "6",
                        "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.01", "OUTPUT_DIR", str(out),
                        "TRAINER.FAIR.DESCRIPTIONS", str(desc_file), "TRAINER.FAIR.N_CROPS", "3",
                        "TRAINER.FAIR.TOPK_CROPS", "2", *opts)
        torch.manual_seed(1)
        return build_trainer(cfg)

    return _build


class _NoLabel(dict):
    def __getitem__(self, key):
        if key == "label":
            raise AssertionError("FAIR read batch['label'] during training")
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


def _step(trainer, batch):
    trainer.batch_idx, trainer.num_batches = 0, len(trainer.train_loader_x)
    trainer.set_model_mode("train")
    return trainer.forward_backward(_NoLabel(batch))


def test_one_step_changes_exactly_the_trainable_parameters(build, tmp_path):
    trainer = build(tmp_path / "out")
    model = trainer.model
    batch = next(iter(trainer.train_loader_x))
    # the unlabelled split carries no label; the crops come from the loader (full-resolution 48 x 40 images)
    assert set(batch) == {"img_weak", "img_strong", "crops", "crop_boxes", "index"}
    assert batch["crops"].shape == (8, 3, 3, 32, 32) and (batch["crop_boxes"][..., 0] >= 20).all()
    visual_before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    anchors_before = model.cda.anchors.detach().clone()
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(".ln_" in f".{n}" or n.startswith("ln_") for n in trainable)
    summary = _step(trainer, batch)
    assert {"loss", "ce", "fair", "weight", "ambiguous", "agree"} <= set(summary)
    changed = {k for k, v in model.visual.state_dict().items() if not torch.equal(v, visual_before[k])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:5]
    assert not torch.equal(model.cda.anchors.detach(), anchors_before)
    opt = trainer._optims["fair"]
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.1]


def test_labels_are_never_read_in_training(build, tmp_path, monkeypatch, capsys):
    from dassl.data.datasets import Datum

    trainer = build(tmp_path / "out")

    def poisoned(self):
        raise AssertionError("a label of the unlabelled split was read during training")

    with monkeypatch.context() as m:
        m.setattr(Datum, "label", property(poisoned))
        trainer.before_epoch()
        trainer.run_epoch()  # every step of an epoch, no label anywhere
    for item in trainer.adapt_source:  # hidden labels unknown: the diagnostic says so, training is unaffected
        item._label = -1
    trainer.after_epoch()
    assert "pseudo-label accuracy (diagnostic) n/a" in capsys.readouterr().out


def test_full_run_logs_diagnostics_and_saves_small_checkpoints(build, tmp_path, capsys):
    trainer = build(tmp_path / "out")
    assert trainer.adapt_split == "train" and len(trainer.adapt_source) == 24
    assert len(trainer.train_loader_x) == 3
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("pseudo-label accuracy (diagnostic)") == 2
    assert "mean weight" in out and "ambiguous" in out and "LAS-zero-shot agreement" in out
    assert "Finish training" in out and "* accuracy:" in out
    ckpt = torch.load(tmp_path / "out" / "fair" / "model.pth.tar-2", weights_only=True)
    assert "cda.anchors" in ckpt["state_dict"]
    assert all(k == "cda.anchors" or ".ln_" in f".{k}" for k in ckpt["state_dict"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    desc_file = tmp_path / "descriptions.json"
    assert results["descriptions"] == {"file": str(desc_file),
                                       "sha256": hashlib.sha256(desc_file.read_bytes()).hexdigest()}
    assert results["adapt_split"] == "train"
    assert 0 <= results["accuracy"] <= 100
    assert trainer.get_current_lr() < 0.01  # cosine schedule stepped


def test_resume_continues_exactly(build, tmp_path):
    # distribution alignment and the mean teacher both carry state across epochs: both must survive the resume
    opts = ("TRAINER.FAIR.DIST_ALIGN", "True", "TRAINER.FAIR.TEACHER_EMA", "0.9")
    full = build(tmp_path / "full", "OPTIM.MAX_EPOCH", "2", *opts)
    full.train()
    first = build(tmp_path / "resumed", "OPTIM.MAX_EPOCH", "2", *opts)
    first.max_epoch = 1  # "interrupted" after epoch 1 (its schedule was built for 2 epochs)
    first.train()
    resumed = build(tmp_path / "resumed", "OPTIM.MAX_EPOCH", "2", *opts)
    resumed.train()
    assert resumed.start_epoch == 1
    a = {n: p for n, p in full.model.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.model.named_parameters() if p.requires_grad}
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    torch.testing.assert_close(full.model.dist_align.mean, resumed.model.dist_align.mean, rtol=0, atol=0)
    assert set(full.model.teacher_state) == set(a)
    for k in a:
        torch.testing.assert_close(full.model.teacher_state[k], resumed.model.teacher_state[k], rtol=0, atol=0)
    assert any(not torch.equal(full.model.teacher_state[k], a[k]) for k in a)  # the EMA lags the trained weights
    assert full.last_result == resumed.last_result


def test_descriptions_missing_a_class_is_an_error_listing_it(build, tmp_path):
    from clip_adapt.fair import DescriptionsError

    bad = tmp_path / "partial.json"
    bad.write_text(json.dumps({"cat": ["x"]}))
    with pytest.raises(DescriptionsError, match="'dog', 'bird'"):
        build(tmp_path / "out", "TRAINER.FAIR.DESCRIPTIONS", str(bad))


def test_no_description_file_is_an_error_unless_the_template_fallback_is_asked_for(build, tmp_path, capsys):
    from clip_adapt.fair import DescriptionsError

    with pytest.raises(DescriptionsError, match="'cat', 'dog', 'bird'.*DESCRIPTIONS_FALLBACK template"):
        build(tmp_path / "out", "TRAINER.FAIR.DESCRIPTIONS", "")  # the default and the paper configs: "error"
    trainer = build(tmp_path / "out", "TRAINER.FAIR.DESCRIPTIONS", "", "TRAINER.FAIR.DESCRIPTIONS_FALLBACK",
                    "template", "DATASET.ADAPT_SPLIT", "test", "TRAINER.FAIR.TEST_CROPS", "True")
    assert trainer.descriptions_source == "template"
    assert [d.impath for d in trainer.adapt_source] == [d.impath for d in trainer.dm.dataset.test]
    assert "transductive" in capsys.readouterr().out
    batch = next(iter(trainer.test_loader))  # test images with their full-resolution crops
    assert batch["crops"].shape == (6, 3, 3, 32, 32) and set(batch) == {"img", "crops", "label", "index"}
    a, b = trainer.test(), trainer.test()  # test-time crops are seeded per image
    assert a == b
    trainer.last_result = a
    trainer.write_results()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["descriptions"] == "template"


@pytest.mark.parametrize("key,value", [("TRAINER.FAIR.TOPK_CROPS", "9"), ("TRAINER.FAIR.MARGIN", "bogus"),
                                       ("TRAINER.FAIR.STRONG_AUG", "autoaugment"),
                                       ("TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "none"),
                                       ("TRAINER.FAIR.CROP_SCALE", "(0.0, 0.5)"), ("TRAINER.FAIR.GAMMA", "1.5"),
                                       ("DATASET.ADAPT_SPLIT", "val")])
def test_bad_config_values_name_the_key_before_any_heavy_work(build, tmp_path, monkeypatch, key, value):
    from clip_adapt.engine.fair import FAIR
    from clip_adapt.fair import FAIRConfigError

    def no_data(self):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr(FAIR, "build_data_loader", no_data)
    with pytest.raises(FAIRConfigError, match=key.replace(".", r"\.")) as e:
        build(tmp_path / "out", "TRAINER.FAIR.N_CROPS", "8", key, value)
    assert str(e.value).startswith(key) and "got" in str(e.value)


def test_topk_above_n_crops_is_one_line_from_train_py(tmp_path, tiny_clip_path):
    cmd = [sys.executable, "-W", "ignore", "train.py", "--root", str(tmp_path / "data"), "--trainer", "FAIR",
           "--dataset-config-file", "configs/datasets/oxford_pets.yaml",
           "--config-file", "configs/trainers/FAIR/vit_b16.yaml", "--output-dir", str(tmp_path / "out"),
           "MODEL.BACKBONE.NAME", str(tiny_clip_path), "TRAINER.FAIR.TOPK_CROPS", "9"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: TRAINER.FAIR.TOPK_CROPS must be an integer in 1..N_CROPS (8), got 9"
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_unreadable_training_image_names_its_path(build, tmp_path, workers):
    from clip_adapt.data.errors import DatasetError

    trainer = build(tmp_path / "out", "DATALOADER.NUM_WORKERS", workers)
    bad = Path(trainer.adapt_source[5].impath)
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DatasetError) as e:
        trainer.before_epoch()
        trainer.run_epoch()
    assert str(e.value).startswith(f"unreadable image {bad}: ") and "\n" not in str(e.value)


# ---- scripts/fair/main.sh end to end (needs the project's dataset fixtures) -----------------------------------


@pytest.mark.slow
def test_main_sh_end_to_end(script_env, tiny_clip_path, tmp_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", "scripts/fair/main.sh", name, "vit_b16", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
           "OPTIM.MAX_EPOCH", "1", "TRAINER.FAIR.N_CROPS", "2", "TRAINER.FAIR.TOPK_CROPS", "2",
           "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "False"]
    # offline, no description file: the paper configs stop with one message saying how to supply one
    failed = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert "error: class descriptions" in failed.stderr and "TRAINER.FAIR.DESCRIPTIONS /path/to" in failed.stderr
    # template sentences asked for: the run folder says so, and so does results.json
    cmd += ["TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "template"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "FAIR" / "vit_b16_templatedesc" / "seed1"
    log = (run / "log.txt").read_text()
    assert "Finish training" in log and "* accuracy:" in log and "pseudo-label accuracy (diagnostic)" in log
    assert (run / "fair" / "model.pth.tar-1").exists()
    assert json.loads((run / "results.json").read_text())["descriptions"] == "template"
    again = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipping" in again.stdout
    from tools.runs import base_cfg, method_run_name
    assert method_run_name("fair", "vit_b16", opts=cmd[4:]) == "vit_b16_templatedesc"  # tools mirror the script
    assert base_cfg("vit_b16_transductive_templatedesc") == "vit_b16"
