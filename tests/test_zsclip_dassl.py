"""Zero-shot CLIP through scripts/zsclip/main.sh -> train.py on a fixture dataset of real image files, with a tiny
CLIP checkpoint: it prints an accuracy, writes results.json, and a second invocation skips the finished seed."""
import json
import re
import subprocess
from pathlib import Path

import pytest

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
