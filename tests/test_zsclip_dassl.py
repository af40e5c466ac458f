"""Zero-shot CLIP through scripts/zsclip/main.sh -> train.py on a fixture dataset of real image files, with a tiny
CLIP checkpoint: it prints an accuracy, writes results.json, and a second invocation skips the finished seed."""
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl


def _zsclip(env, dataset, *opts):
    return subprocess.run(["bash", "scripts/zsclip/main.sh", dataset, "vit_b16", *opts], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_main_sh_prints_accuracy_then_skips_the_finished_seed(script_env, tiny_clip_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    opts = ["MODEL.BACKBONE.NAME", str(tiny_clip_path), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]
    first = _zsclip(script_env, name, *opts)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    seed_dir = Path(script_env["OUTPUT"]) / name / "ZSCLIP" / "vit_b16" / "seed1"
    log = (seed_dir / "log.txt").read_text()
    match = re.search(r"=> result.*?\* accuracy: ([\d.]+)%", log, re.S)
    assert match, log[-2000:]
    assert json.loads((seed_dir / "results.json").read_text())["accuracy"] == pytest.approx(float(match.group(1)),
                                                                                              abs=0.05)
    second = _zsclip(script_env, name, *opts)
    assert second.returncode == 0 and "skipping" in second.stdout
    assert sorted(p.name for p in seed_dir.glob("log.txt*")) == ["log.txt"]  # nothing re-ran


def test_unknown_dataset_or_cfg_is_named(script_env):
    res = subprocess.run(["bash", "scripts/zsclip/main.sh", "no_such_set", "vit_b16"], cwd=REPO, env=script_env,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "no_such_set" in res.stderr
    res = subprocess.run(["bash", "scripts/zsclip/main.sh"], cwd=REPO, env=script_env, capture_output=True, text=True)
    assert res.returncode == 2 and "usage" in res.stderr


def test_single_and_ensemble_templates_give_different_classifiers(dassl_cfg, tmp_path):
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401  registers the trainers

    register_fixture_dataset(tmp_path / "images", "ZSFixture")
    yaml = "configs/trainers/ZSCLIP/vit_b16.yaml"
    single = build_trainer(dassl_cfg(yaml, "TRAINER.NAME", "ZSCLIP", "DATASET.NAME", "ZSFixture",
                                     "OUTPUT_DIR", str(tmp_path / "a")))
    ens = build_trainer(dassl_cfg(yaml, "TRAINER.NAME", "ZSCLIP", "DATASET.NAME", "ZSFixture",
                                  "OUTPUT_DIR", str(tmp_path / "b"), "TRAINER.ZSCLIP.TEMPLATES", "ensemble"))
    assert single.text_features.shape == ens.text_features.shape == (3, 32)
    assert not single.text_features.allclose(ens.text_features)
    acc = single.test()
    assert 0.0 <= acc <= 100.0 and single.last_result == acc


@pytest.mark.parametrize("cfg,templates", [("vit_b16", "single"), ("vit_b16_coop_ensemble", "coop_ensemble"),
                                           ("vit_b16_clip", "clip")])
def test_each_template_config_runs_end_to_end_and_names_its_set(script_env, tiny_clip_path, cfg, templates):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]), "eurosat")
    opts = ["MODEL.BACKBONE.NAME", str(tiny_clip_path), "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]
    proc = subprocess.run(["bash", "scripts/zsclip/main.sh", name, cfg, *opts], cwd=REPO, env=script_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seed_dir = Path(script_env["OUTPUT"]) / name / "ZSCLIP" / cfg / "seed1"
    res = json.loads((seed_dir / "results.json").read_text())
    assert res["templates"] == templates and 0.0 <= res["accuracy"] <= 100.0
    assert f"Zero-shot prompts: {templates} (" in (seed_dir / "log.txt").read_text()


@pytest.mark.parametrize("templates", ["single", "coop_ensemble", "clip"])
def test_classifier_is_the_reference_ensemble_of_its_set(dassl_cfg, tmp_path, templates):
    """The trainer's class weights equal CoOp's ZeroshotCLIP / ZeroshotCLIP2 computation written out here from the
    set's template strings (EuroSAT fixture with its 10 classes, so `clip` also brings CLIP's class names)."""
    import clip
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401
    from clip_adapt.clip_prompt_lists import CLIP_PROMPTS
    from clip_adapt.templates import IMAGENET_TEMPLATES_SELECT
    from tests.dataset_fixtures import build_fixture_dataset

    build_fixture_dataset(tmp_path / "data", "eurosat", n_classes=10, n_train=1, n_val=1, n_test=1)
    cfg = dassl_cfg("configs/trainers/ZSCLIP/vit_b16.yaml", "TRAINER.NAME", "ZSCLIP", "DATASET.NAME", "EuroSAT",
                    "DATASET.ROOT", str(tmp_path / "data"), "OUTPUT_DIR", str(tmp_path / "out"),
                    "TRAINER.ZSCLIP.TEMPLATES", templates)
    trainer = build_trainer(cfg)
    expected_templates = {"single": ["a centered satellite photo of {}."],
                          "coop_ensemble": IMAGENET_TEMPLATES_SELECT + ["a centered satellite photo of {}."],
                          "clip": CLIP_PROMPTS["eurosat"]["templates"]}[templates]
    names = CLIP_PROMPTS["eurosat"]["classes"] if templates == "clip" else trainer.classnames
    assert trainer.prompts.templates == expected_templates and trainer.prompts.classnames == names
    total = 0
    with torch.no_grad():
        for t in expected_templates:
            feats = trainer.clip_model.encode_text(torch.cat([clip.tokenize(t.format(c.replace("_", " ")))
                                                              for c in names])).float()
            total = total + feats / feats.norm(dim=-1, keepdim=True)
    expected = total / len(expected_templates)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(trainer.text_features, expected, rtol=0, atol=2e-6)


def test_unknown_template_set_is_named(dassl_cfg, tmp_path):
    from dassl.engine import build_trainer

    import clip_adapt.plugin  # noqa: F401

    register_fixture_dataset(tmp_path / "images", "ZSFixture")
    with pytest.raises(ValueError, match="TRAINER.ZSCLIP.TEMPLATES"):
        build_trainer(dassl_cfg("configs/trainers/ZSCLIP/vit_b16.yaml", "TRAINER.NAME", "ZSCLIP",
                                "DATASET.NAME", "ZSFixture", "TRAINER.ZSCLIP.TEMPLATES", "coop"))
