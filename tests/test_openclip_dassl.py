"""The four trainers on tiny random open_clip models (ViT, ModifiedResNet, a SigLIP-style timm tower with a logit
bias and a stand-in tokenizer, timm's ConvNeXt for FAIR; tests/openclip_fixtures.py) through the oc_* configs, on
fixture datasets of real image files: the model's preprocessing reaches cfg.INPUT, the identity reaches results.json
and the results table."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip", reason="open_clip is not installed (pip install 'clip-adapt[openclip]')")
pytest.importorskip("timm", reason="timm is not installed (pip install timm): the timm-tower tests need it")

from tests import openclip_fixtures as fx  # noqa: E402
from tests.conftest import REPO, register_fixture_dataset  # noqa: E402

pytestmark = pytest.mark.dassl
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
YAML = "configs/trainers/{}/oc_vit_b16_laion.yaml"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("oc_weights")
    return {fx.VIT: fx.save(root / "vit.pt", fx.VIT), fx.RN: fx.save(root / "rn.bin", fx.RN),
            fx.SIGMOID: fx.save(root / "sigmoid.safetensors", fx.SIGMOID),
            fx.CONVNEXT: fx.save(root / "convnext.pt", fx.CONVNEXT)}


@pytest.fixture
def build(tmp_path, weights):
    """build(trainer, arch, KEY, VALUE, ...) -> a trainer of the oc_vit_b16_laion config on a fixture dataset, with
    MODEL.BACKBONE.NAME open_clip:<tiny arch>:<weights file> and no INPUT.SIZE given (the model's 32 px)."""
    import dassl  # noqa: F401
    from dassl.config import get_cfg_default
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401  registers the trainers
    from clip_adapt.config import extend_cfg

    register_fixture_dataset(tmp_path / "images", "OCFixture", n_test=18)

    def _build(trainer, arch, *opts):
        cfg = extend_cfg(get_cfg_default())
        cfg.merge_from_file(str(REPO / YAML.format(trainer)))
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", f"open_clip:{arch}:{weights[arch]}", "TRAINER.NAME", trainer,
                             "DATASET.NAME", "OCFixture", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False",
                             "SEED", "1", "TRAINER.FEATURE_CACHE_DIR", str(tmp_path / "cache"),
                             "OUTPUT_DIR", str(tmp_path / f"out_{trainer}_{arch}"), "DATALOADER.TRAIN_X.BATCH_SIZE",
                             "8", "DATALOADER.TEST.BATCH_SIZE", "6", *opts])
        cfg.freeze()
        torch.manual_seed(1)
        return build_trainer(cfg)

    return _build


def _identity(arch, path):
    return f"open_clip:{arch}:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"


def _results(trainer):
    return json.loads((Path(trainer.output_dir) / "results.json").read_text())


@pytest.mark.parametrize("arch", [fx.VIT, fx.RN])
def test_zsclip_runs_with_the_models_preprocessing_and_records_the_backbone(build, weights, arch):
    trainer = build("ZSCLIP", arch)
    inp = trainer.cfg.INPUT
    assert tuple(inp.SIZE) == (32, 32) and list(inp.PIXEL_MEAN) == OPENAI_MEAN and inp.INTERPOLATION == "bicubic"
    assert trainer.test_loader.dataset.transform.transforms[0].size == 32  # Dassl's loaders read the new values
    acc = trainer.test()
    assert 0.0 <= acc <= 100.0
    trainer.write_results()
    res = _results(trainer)
    assert res["backbone"] == f"open_clip:{arch}:{weights[arch]}"
    assert res["backbone_sha256"] == trainer.backbone_id == _identity(arch, weights[arch])


def test_zsclip_logits_of_a_sigmoid_model_include_its_logit_bias(build, weights):
    trainer = build("ZSCLIP", fx.SIGMOID)
    model = trainer.clip_model
    assert float(model.logit_bias) == -10.0  # open_clip's init_logit_bias of the config
    images = next(iter(trainer.test_loader))["img"]
    with torch.no_grad():
        img = F.normalize(model.model.encode_image(images), dim=-1)
        prompts = [f"a photo of a {c}." for c in trainer.classnames]
        text = F.normalize(model.model.encode_text(model.tokenizer(prompts)), dim=-1)
    want = model.logit_scale.exp() * img @ text.t() + model.logit_bias
    assert trainer.prompts.templates == ["a photo of a {}."]  # the fixture's single template
    assert torch.allclose(trainer.model_inference(images), want, atol=1e-5)


@pytest.mark.parametrize("arch", [fx.VIT, fx.RN, fx.SIGMOID, fx.CONVNEXT])
def test_fair_trains_the_open_clip_towers_norm_layers(build, weights, arch):
    trainer = build("FAIR", arch, "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.01", "TRAINER.FAIR.N_CROPS", "2",
                    "TRAINER.FAIR.TOPK_CROPS", "2", "TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "template",
                    "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "False")
    from clip_adapt.fair.model import visual_norm_parameters

    norms = {n for n, _ in visual_norm_parameters(trainer.model.visual)}
    trained = {n.removeprefix("visual.") for n, p in trainer.model.named_parameters()
               if p.requires_grad and n.startswith("visual.")}
    assert trained == norms and norms
    before = {n: p.detach().clone() for n, p in trainer.model.visual.named_parameters()}
    trainer.train()
    after = dict(trainer.model.visual.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= norms  # only norm parameters moved
    assert _results(trainer)["backbone_sha256"] == _identity(arch, weights[arch])


@pytest.mark.parametrize("arch", [fx.VIT, fx.RN, fx.SIGMOID])
def test_reclip_trains_both_branches_of_an_open_clip_model(build, weights, arch):
    trainer = build("ReCLIP", arch, "TRAINER.RECLIP.AUTO_EPOCHS", "False", "OPTIM.MAX_EPOCH", "1",
                    "TRAINER.RECLIP.KNN", "5", "TRAINER.RECLIP.CHUNK", "16")
    trainable = {f"{b}.{n}": p.detach().clone() for b, m in (("v", trainer.branch_v), ("t", trainer.branch_t))
                 for n, p in m.named_parameters() if p.requires_grad}
    assert any(k.startswith("v.clip.model.visual.") for k in trainable)
    text_prefix = "t.clip.model.text." if arch == fx.SIGMOID else "t.clip.model.transformer."
    assert any(k.startswith(text_prefix) for k in trainable)
    assert all(k.startswith(("v.clip.model.visual.", text_prefix, "t.clip.model.ln_final.")) for k in trainable)
    trainer.train()
    res = _results(trainer)
    assert res["backbone"] == f"open_clip:{arch}:{weights[arch]}" and 0.0 <= res["accuracy"] <= 100.0


@pytest.mark.parametrize("arch", [fx.VIT, fx.RN, fx.SIGMOID])
def test_dac_trains_on_open_clip_features(build, weights, arch):
    trainer = build("DAC", arch, "DATASET.NUM_SHOTS", "2", "TRAINER.DAC.AUG_PASSES", "2", "TRAINER.DAC.BATCH_SIZE",
                    "4", "OPTIM.MAX_EPOCH", "1", "TRAINER.DAC.SEARCH_ALPHA", "(0.0, 1.0, 2)",
                    "TRAINER.DAC.SEARCH_BETA", "(1.0, 2.0, 2)")
    trainer.train()
    views, _ = trainer.train_views()
    dim = 64 if arch == fx.SIGMOID else 32  # the tiny models' embedding widths
    assert views.shape == (2, 6, dim)  # A passes x N = 3 classes x 2 shots x D
    res = _results(trainer)
    assert res["backbone_sha256"] == _identity(arch, weights[arch]) and "alpha" in res


def test_input_keys_set_by_the_config_are_kept(build):
    trainer = build("ZSCLIP", fx.VIT, "INPUT.SIZE", "(40, 40)", "INPUT.INTERPOLATION", "bilinear",
                    "INPUT.PIXEL_MEAN", "[0.1, 0.2, 0.3]")
    inp = trainer.cfg.INPUT
    assert tuple(inp.SIZE) == (40, 40) and list(inp.PIXEL_MEAN) == [0.1, 0.2, 0.3]
    # INTERPOLATION "bilinear" is Dassl's default value, so it is taken as unset (docs/OPENCLIP.md)
    assert inp.INTERPOLATION == "bicubic"
    off = build("ZSCLIP", fx.VIT, "INPUT.SIZE", "(32, 32)", "MODEL.BACKBONE.OPENCLIP_PREPROCESS", "False")
    assert off.cfg.INPUT.INTERPOLATION == "bilinear" and list(off.cfg.INPUT.PIXEL_MEAN) == [0.485, 0.456, 0.406]


def test_fair_main_sh_with_an_open_clip_config_and_the_results_table(script_env, weights):
    """The script contract: bash scripts/fair/main.sh <dataset> oc_vit_b16_laion KEY VALUE ...; the table names
    the backbone by architecture and weights."""
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    env = dict(script_env, IMPORT="tests/openclip_fixtures.py")
    opts = ["MODEL.BACKBONE.NAME", f"open_clip:{fx.VIT}:{weights[fx.VIT]}", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "1", "TRAINER.FAIR.N_CROPS", "2", "TRAINER.FAIR.TOPK_CROPS", "2",
            "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "False", "TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "template",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "8"]
    proc = subprocess.run(["bash", "scripts/fair/main.sh", name, "oc_vit_b16_laion", *opts], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seed_dir = Path(script_env["OUTPUT"]) / name / "FAIR" / "oc_vit_b16_laion_templatedesc" / "seed1"
    res = json.loads((seed_dir / "results.json").read_text())
    ident = _identity(fx.VIT, weights[fx.VIT])
    assert res["backbone"] == f"open_clip:{fx.VIT}:{weights[fx.VIT]}" and res["backbone_sha256"] == ident
    assert "open_clip preprocessing of" in (seed_dir / "log.txt").read_text()
    table = subprocess.run([sys.executable, "-m", "tools.results", "--output", script_env["OUTPUT"]], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    assert f"open_clip:{fx.VIT}:vit.pt sha256:{ident.rsplit(':', 1)[1][:8]}" in table.stdout


def test_a_missing_weights_file_is_one_line_from_train_py(tmp_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(tmp_path / "data")
    missing = tmp_path / "nowhere" / "w.safetensors"
    proc = subprocess.run([sys.executable, "train.py", "--root", str(tmp_path / "data"), "--trainer", "ZSCLIP",
                           "--dataset-config-file", f"configs/datasets/{name}.yaml", "--config-file",
                           "configs/trainers/ZSCLIP/oc_vit_b16_laion.yaml", "--output-dir", str(tmp_path / "out"),
                           "--eval-only", "MODEL.BACKBONE.NAME", f"open_clip:ViT-B-16:{missing}",
                           "DATALOADER.NUM_WORKERS", "0"],
                          cwd=REPO, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (f"error: open_clip weights file not found: {missing} "
                                                    f"(MODEL.BACKBONE.NAME 'open_clip:ViT-B-16:{missing}')")
