"""TipAdapter / TipAdapterF Dassl trainers (clip_adapt/engine/tipadapter.py) on a tiny CLIP and the fixture dataset:
zero-shot identity at alpha 0, the cache built from DAC's cached features, keys fine-tuned from those features, the
val-only search, eval-only from the saved model, and the scripts end to end with their `ours` rows."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

K = 2
SMALL = ["TRAINER.TIPADAPTER.AUG_PASSES", "2", "TRAINER.TIPADAPTER.BATCH_SIZE", "4", "DATASET.NUM_SHOTS", str(K),
         "DATALOADER.TEST.BATCH_SIZE", "5", "TRAINER.TIPADAPTER.SEARCH_STEP", "(20, 10)"]


@pytest.fixture
def build(tmp_path, dassl_cfg):
    """build(trainer, output_dir, KEY, VALUE, ...) -> a trainer on the fixture dataset, in process."""
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401

    register_fixture_dataset(tmp_path / "images", "TipFixture")

    def _build(trainer, out, *opts):
        yaml = {"TipAdapter": "configs/trainers/TipAdapter/vit_b16.yaml",
                "TipAdapterF": "configs/trainers/TipAdapterF/vit_b16.yaml",
                "DAC": "configs/trainers/DAC/vit_b16.yaml", "ZSCLIP": "configs/trainers/ZSCLIP/vit_b16.yaml"}[trainer]
        extra = SMALL if trainer.startswith("Tip") else []
        if trainer == "TipAdapterF":
            extra = extra + ["OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.01"]
        cfg = dassl_cfg(yaml, "TRAINER.NAME", trainer, "DATASET.NAME", "TipFixture", "OUTPUT_DIR", str(out),
                        *extra, *opts)
        set_random_seed(cfg.SEED)
        return build_trainer(cfg)

    return _build


def _count_image_encoder(monkeypatch):
    from clip.model import CLIP

    calls = {"n": 0}
    original = CLIP.encode_image

    def wrapped(self, *a, **k):
        calls["n"] += 1
        return original(self, *a, **k)

    monkeypatch.setattr(CLIP, "encode_image", wrapped)
    return calls


def test_alpha_zero_is_zero_shot_clip(build, tmp_path):
    """Tip-Adapter at alpha = 0 classifies the test split exactly as ZSCLIP with the same templates."""
    zs = build("ZSCLIP", tmp_path / "zs", "TRAINER.ZSCLIP.TEMPLATES", "single", "DATALOADER.TEST.BATCH_SIZE", "5")
    zs_acc = zs.test()
    tip = build("TipAdapter", tmp_path / "tip", "TRAINER.TIPADAPTER.TEMPLATES", "single")
    assert torch.equal(tip.text, zs.text_features)
    tip.alpha = 0.0
    assert tip.test() == zs_acc
    feats, _ = tip.split_features("test")
    images = torch.stack([zs.test_loader.dataset[i]["img"] for i in range(len(zs.test_loader.dataset))])
    assert torch.allclose(tip.logits_from_features(feats), zs.model_inference(images), atol=1e-4)


def test_cache_is_built_from_dacs_cached_features_without_the_encoder(build, tmp_path, monkeypatch):
    """A DAC run stores the A train passes, val and test features; Tip-Adapter with the same A reads them all."""
    dac = build("DAC", tmp_path / "dac", "TRAINER.DAC.AUG_PASSES", "2", "DATASET.NUM_SHOTS", str(K),
                "DATALOADER.TEST.BATCH_SIZE", "5", "OPTIM.MAX_EPOCH", "1", "TRAINER.DAC.BATCH_SIZE", "4")
    dac.train()
    views, labels = dac.train_views()
    calls = _count_image_encoder(monkeypatch)
    tip = build("TipAdapter", tmp_path / "tip")
    tip.train()
    assert calls["n"] == 0
    keys, values, cols = tip.cache_model()
    assert torch.allclose(keys, torch.nn.functional.normalize(views.mean(0), dim=-1))
    assert torch.equal(values.argmax(1), labels) and cols is None
    assert [d.impath for d in tip.fewshot] == [d.impath for d in dac.fewshot]


def test_training_free_run_searches_on_val_and_reports_the_formula(build, tmp_path):
    out = tmp_path / "tip"
    tip = build("TipAdapter", out)
    tip.train()
    search = json.loads((out / "tipadapter_search.json").read_text())
    results = json.loads((out / "results.json").read_text())
    alphas, betas = tip._grids(tip.tc)
    assert search["split"] == "val" and search["alpha"] in alphas.tolist() and search["beta"] in betas.tolist()
    assert results["alpha"] == search["alpha"] and results["epochs"] == 0 and results["num_shots"] == K
    # the reported accuracy is that of s f W^T + alpha exp(-beta (1 - f K^T)) L on the test features, written out
    feats, labels = tip.split_features("test")
    views, train_labels = tip.train_views()
    keys = torch.nn.functional.normalize(views.mean(0), dim=-1)
    onehot = torch.nn.functional.one_hot(train_labels, 3).float()
    logits = tip.logit_scale * feats @ tip.text.t() + \
        search["alpha"] * torch.exp(-search["beta"] * (1 - feats @ keys.t())) @ onehot
    correct = int((logits.argmax(1) == labels).sum())
    assert results["accuracy"] == pytest.approx(100.0 * correct / labels.numel(), abs=1e-9)


def test_training_free_rejects_epochs_naming_the_key(build, tmp_path):
    with pytest.raises(ValueError, match="OPTIM.MAX_EPOCH must be 0"):
        build("TipAdapter", tmp_path / "x", "OPTIM.MAX_EPOCH", "3")


def test_fine_tuned_keys_start_at_the_features_and_move(build, tmp_path):
    tip = build("TipAdapterF", tmp_path / "f")
    tip.before_train()
    views, _ = tip.train_views()
    start = torch.nn.functional.normalize(views.mean(0), dim=-1)
    assert torch.equal(tip.head.keys.detach(), start)
    batch = next(iter(tip.train_loader_x))
    tip.set_model_mode("train")
    tip.batch_idx, tip.num_batches = 0, len(tip.train_loader_x)
    tip.forward_backward(batch)
    assert not torch.allclose(tip.head.keys.detach(), start)


def test_fine_tuned_run_end_to_end_and_eval_only(build, tmp_path):
    out = tmp_path / "f"
    tip = build("TipAdapterF", out)
    tip.train()
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 2 and (out / "tipadapter" / "model.pth.tar-2").exists()
    assert (out / "tipadapter_final.pt").exists()
    ev = build("TipAdapterF", tmp_path / "ev", "OPTIM.MAX_EPOCH", "2")
    ev.load_model(str(out))
    assert (ev.alpha, ev.beta) == (results["alpha"], results["beta"])
    assert ev.test() == pytest.approx(results["accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize("method,trainer", [("tipadapter", "TipAdapter"), ("tipadapterf", "TipAdapterF")])
def test_main_sh_end_to_end_and_results_row(script_env, tiny_clip_path, method, trainer):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", f"scripts/{method}/main.sh", name, "vit_b16", "2", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "TRAINER.TIPADAPTER.AUG_PASSES", "2"]
    if method == "tipadapterf":
        cmd += ["OPTIM.MAX_EPOCH", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / trainer / "vit_b16_2shots" / "seed1"
    log = (run / "log.txt").read_text()
    assert "Finish training" in log and "* accuracy:" in log and "alpha/beta searched on val" in log
    again = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipping" in again.stdout
    res = subprocess.run([sys.executable, "-m", "tools.results", "--output", script_env["OUTPUT"], "--seeds", "1",
                          "--format", "csv", "--no-baselines"], cwd=REPO, env=script_env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = next(line for line in res.stdout.splitlines() if line.startswith(trainer + ","))
    assert ",ours," in row
