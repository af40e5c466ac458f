"""DPA Dassl trainer (clip_adapt/engine/dpa.py) on a tiny CLIP and the fixture dataset: the prototypes at
initialisation, a training step, end to end with resume of the prototypes, the script and its `ours` row."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

SMALL = ["DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "6", "OPTIM.MAX_EPOCH", "1",
         "OPTIM.LR", "0.01", "TRAINER.PREC", "fp32"]


@pytest.fixture
def build(tmp_path, dassl_cfg):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401

    register_fixture_dataset(tmp_path / "images", "DPAFixture")

    def _build(out, *opts):
        cfg = dassl_cfg("configs/trainers/DPA/vit_b16.yaml", "TRAINER.NAME", "DPA", "DATASET.NAME", "DPAFixture",
                        "OUTPUT_DIR", str(out), *SMALL, *opts)
        set_random_seed(cfg.SEED)
        return build_trainer(cfg)

    return _build


def test_prototypes_at_initialisation(build, tmp_path, tiny_clip_path):
    """Text prototypes = the class text embeddings; image prototypes = the class means of the zero-shot
    pseudo-labelled weak-view features, computed here from a separately loaded CLIP."""
    from clip_adapt.clip_loader import load_clip
    from clip_adapt.fair.views import weak_transform
    from clip_adapt.prompts import get_prompt_set
    from clip_adapt.text import class_embeddings
    from PIL import Image

    dpa = build(tmp_path / "dpa")
    clip_model = load_clip(tiny_clip_path, device=torch.device("cpu"), precision="fp32")
    ps = get_prompt_set(dpa.dataset_short, "clip", dpa.classnames)
    text = class_embeddings(clip_model, ps.classnames, ps.templates)
    assert torch.allclose(dpa.model.classifier.detach(), F.normalize(text, dim=-1), atol=1e-6)

    dpa.before_train()
    inp = dpa.cfg.INPUT
    tfm = weak_transform(inp.SIZE, inp.INTERPOLATION, inp.PIXEL_MEAN, inp.PIXEL_STD)
    with torch.no_grad():
        imgs = torch.stack([tfm(Image.open(d.impath).convert("RGB")) for d in dpa.adapt_source])
        feats = F.normalize(clip_model.encode_image(imgs).float(), dim=-1)
        pseudo = (feats @ F.normalize(text, dim=-1).t()).argmax(1)
    assert torch.equal(dpa.memory_labels, pseudo)
    for c in range(len(dpa.classnames)):
        want = F.normalize(feats[pseudo == c].mean(0), dim=0) if (pseudo == c).any() else F.normalize(text[c], dim=0)
        assert torch.allclose(dpa.prototypes[c], want, atol=1e-5)


def test_a_step_moves_norms_and_text_prototypes_and_fills_the_memory(build, tmp_path):
    dpa = build(tmp_path / "dpa")
    dpa.before_train()
    before = {n: p.detach().clone() for n, p in dpa.model.named_parameters() if p.requires_grad}
    dpa.memory_labels[:] = -1
    dpa.set_model_mode("train")
    dpa.batch_idx, dpa.num_batches = 0, len(dpa.train_loader_x)
    batch = next(iter(dpa.train_loader_x))
    out = dpa.forward_backward(batch)
    moved = {n for n, p in dpa.model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])}
    assert "classifier" in moved and any("ln_" in n for n in moved)
    assert (dpa.memory_labels[batch["index"]] >= 0).all() and set(out) >= {"ce", "fair", "align"}


def test_end_to_end_and_resume_restores_the_prototypes(build, tmp_path):
    out = tmp_path / "dpa"
    dpa = build(out)
    dpa.train()
    results = json.loads((out / "results.json").read_text())
    assert results["trainer"] == "DPA" and results["alpha"] == 0.5 and results["epochs"] == 1
    again = build(out)
    assert again.resume_model_if_exist(str(out)) == 1
    assert torch.allclose(again.prototypes, dpa.prototypes)
    assert torch.equal(again.memory_labels, dpa.memory_labels)


@pytest.mark.slow
def test_main_sh_end_to_end_and_results_row(script_env, tiny_clip_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", "scripts/dpa/main.sh", name, "vit_b16", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "DPA" / "vit_b16" / "seed1"
    assert "Finish training" in (run / "log.txt").read_text()
    res = subprocess.run([sys.executable, "-m", "tools.results", "--output", script_env["OUTPUT"], "--seeds", "1",
                          "--format", "csv", "--no-baselines"], cwd=REPO, env=script_env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = next(line for line in res.stdout.splitlines() if line.startswith("DPA,"))
    assert ",ours," in row
