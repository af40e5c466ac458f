"""The ReCLIP Dassl trainer on a tiny CLIP and a few 32 px images (needs Dassl; skipped with a reason without it)."""
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl


@pytest.fixture
def build(tmp_path, dassl_cfg):
    """build(output_dir, KEY, VALUE, ...) -> a ReCLIP trainer on the shared fixture dataset, in this process."""
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401  registers the trainers

    register_fixture_dataset(tmp_path / "images", "ReCLIPFixture", n_train=24, n_val=6, n_test=30)

    def _build(out, *opts):
        cfg = dassl_cfg("configs/trainers/ReCLIP/vit_b16.yaml", "TRAINER.NAME", "ReCLIP",
                        "DATASET.NAME", "ReCLIPFixture", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OUTPUT_DIR", str(out),
                        "TRAINER.RECLIP.KNN", "5", "TRAINER.RECLIP.CHUNK", "16", *opts)
        torch.manual_seed(1)
        return build_trainer(cfg)

    return _build


def _trainable(trainer):
    return {f"{b}.{n}": p.detach().clone() for b, m in (("v", trainer.branch_v), ("t", trainer.branch_t))
            for n, p in m.named_parameters() if p.requires_grad}


def test_transductive_run_trains_both_branches_and_saves_small_checkpoints(build, tmp_path, capsys):
    trainer = build(tmp_path / "out")
    assert trainer.adapt_split == "test" and len(trainer.adapt_source) == 30
    assert trainer.max_epoch == 2  # min(100, 30/5000 + 2)
    before = _trainable(trainer)
    classifier0 = trainer.branch_v.classifier.clone()
    trainer.train()
    out = capsys.readouterr().out
    assert "pseudo-label accuracy (diagnostic)" in out and "agreement" in out
    assert "Finish training" in out and "* accuracy:" in out
    after = _trainable(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("v."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("t."))
    assert not torch.allclose(trainer.branch_v.classifier, classifier0)  # centroids replaced the text classifier
    for branch in ("reclip_v", "reclip_t"):
        ckpt = torch.load(tmp_path / "out" / branch / "model.pth.tar-2", weights_only=True)
        assert ckpt["state_dict"] and all(".ln_" in k or "ln_final" in k for k in ckpt["state_dict"])
    assert (tmp_path / "out" / "results.json").exists()


def test_inference_averages_the_two_branches(build, tmp_path):
    trainer = build(tmp_path / "out", "OPTIM.MAX_EPOCH", "1", "TRAINER.RECLIP.AUTO_EPOCHS", "False")
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = 0.5 * (trainer.branch_v(images) + trainer.branch_t(images))
    torch.testing.assert_close(trainer.model_inference(images), expected)


def test_inductive_adapts_on_the_train_split(build, tmp_path, capsys):
    trainer = build(tmp_path / "out", "DATASET.ADAPT_SPLIT", "train", "OPTIM.MAX_EPOCH", "1",
                    "TRAINER.RECLIP.AUTO_EPOCHS", "False")
    assert trainer.max_epoch == 1
    assert [d.impath for d in trainer.adapt_source] == [d.impath for d in trainer.dm.dataset.train_x]
    assert len(trainer.train_loader_x) == 3  # 24 train images, batch 8, no test image
    trainer.train()
    out = capsys.readouterr().out
    assert "inductive" in out and "* accuracy:" in out
    assert trainer.round.labels_v.numel() == 24


def test_resume_continues_exactly(build, tmp_path):
    opts = ("TRAINER.RECLIP.AUTO_EPOCHS", "False")
    full = build(tmp_path / "full", "OPTIM.MAX_EPOCH", "3", *opts)
    full.train()
    first = build(tmp_path / "resumed", "OPTIM.MAX_EPOCH", "3", *opts)
    run_epoch = first.run_epoch

    def interrupted():  # killed at the start of epoch 3, after epoch 2's checkpoint
        if first.epoch == 2:
            raise InterruptedError("killed")
        run_epoch()

    first.run_epoch = interrupted
    with pytest.raises(InterruptedError):
        first.train()
    resumed = build(tmp_path / "resumed", "OPTIM.MAX_EPOCH", "3", *opts)
    resumed.train()
    assert resumed.start_epoch == 2
    a, b = _trainable(full), _trainable(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    torch.testing.assert_close(full.branch_v.classifier, resumed.branch_v.classifier, rtol=0, atol=0)
    assert full.last_result == resumed.last_result


def test_a_finished_run_restores_the_centroid_classifier(build, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "1", "TRAINER.RECLIP.AUTO_EPOCHS", "False")
    done = build(tmp_path / "out", *opts)
    done.train()
    again = build(tmp_path / "out", *opts)
    again.train()  # nothing left to train: only the final test
    torch.testing.assert_close(again.branch_v.classifier, done.branch_v.classifier, rtol=0, atol=0)
    assert again.last_result == done.last_result


def test_bad_adapt_split_names_the_key(build, tmp_path):
    with pytest.raises(ValueError, match="DATASET.ADAPT_SPLIT"):
        build(tmp_path / "out", "DATASET.ADAPT_SPLIT", "val")


# ---- scripts/reclip/main.sh end to end (needs the project's dataset fixtures) -----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["transductive", "inductive"])
def test_main_sh_end_to_end(mode, script_env, tiny_clip_path, tmp_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    extra = ["DATASET.ADAPT_SPLIT", "train"] if mode == "inductive" else []
    cmd = ["bash", "scripts/reclip/main.sh", name, "vit_b16", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32,32)", "DATALOADER.NUM_WORKERS", "0", "TRAINER.RECLIP.AUTO_EPOCHS", "False",
           "OPTIM.MAX_EPOCH", "2", "TRAINER.RECLIP.KNN", "5", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "ReCLIP" / ("vit_b16_inductive" if mode == "inductive" else "vit_b16")
    log = (run / "seed1" / "log.txt").read_text()
    assert "* accuracy:" in log and "Finish training" in log
    assert ("inductive" in log) == (mode == "inductive")
    for branch in ("reclip_v", "reclip_t"):
        assert (run / "seed1" / branch / "model.pth.tar-2").exists()
    again = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipping" in again.stdout
