"""LinearProbe Dassl trainer (clip_adapt/engine/linear_probe.py) on a tiny CLIP and the fixture dataset: DAC's
few-shot sets, one test-transform pass per split, C searched on val only, predictions equal to scikit-learn's fitted
on the same features, eval-only from the saved probe, scripts/linearprobe/main.sh end to end with an `ours` row."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

K = 2
SMALL = ["DATASET.NUM_SHOTS", str(K), "DATALOADER.TEST.BATCH_SIZE", "5", "TRAINER.LP.SEARCH_STEPS", "2"]


@pytest.fixture
def build(tmp_path, dassl_cfg):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401

    register_fixture_dataset(tmp_path / "images", "LPFixture")

    def _build(out, *opts, trainer="LinearProbe"):
        yaml = f"configs/trainers/{trainer}/vit_b16.yaml"
        extra = SMALL if trainer == "LinearProbe" else ["DATASET.NUM_SHOTS", str(K), "TRAINER.DAC.AUG_PASSES", "1",
                                                               "TRAINER.DAC.SAMPLER", "random"]  # one pass
        cfg = dassl_cfg(yaml, "TRAINER.NAME", trainer, "DATASET.NAME", "LPFixture", "OUTPUT_DIR", str(out), *extra,
                        *opts)
        set_random_seed(cfg.SEED)
        return build_trainer(cfg)

    return _build


def test_fit_searches_c_on_val_and_predicts_as_sklearn(build, tmp_path):
    from sklearn.linear_model import LogisticRegression

    out = tmp_path / "lp"
    lp = build(out)
    lp.train()
    search = json.loads((out / "lp_search.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert search["split"] == "val" and search["searched"] and len(search["history"]) == 7 + 2 * 2
    assert results["c"] == search["c"] and results["epochs"] == 0 and results["num_shots"] == K
    # the chosen C is the better end of the last round on val
    last = search["history"][-2:]
    assert search["c"] == max(last, key=lambda h: (h["val_accuracy"], -h["c"]))["c"]
    # the same features fitted by scikit-learn with that C predict the same test labels
    x, y = lp.train_features()
    xt, yt = lp.split_features("test")
    ref = LogisticRegression(solver="lbfgs", max_iter=1000, C=search["c"]).fit(x.numpy(), y.numpy())
    ours = lp.logits_from_features(xt).argmax(1).numpy()
    assert np.array_equal(ours, ref.predict(xt.numpy()))
    assert results["accuracy"] == pytest.approx(100.0 * np.mean(ref.predict(xt.numpy()) == yt.numpy()), abs=1e-9)


def test_uses_dacs_few_shot_set_and_the_test_transform(build, tmp_path):
    lp = build(tmp_path / "lp")
    dac = build(tmp_path / "dac", trainer="DAC")
    assert [d.impath for d in lp.fewshot] == [d.impath for d in dac.fewshot]
    x, _ = lp.train_features()
    x_val_style, _ = lp._encode_split(lp.fewshot, "train", lp.test_tfm, num_shots=K, seed=0)
    assert (x == x_val_style).all()  # deterministic test transform: no augmentation


def test_fixed_c_and_bad_values(build, tmp_path):
    lp = build(tmp_path / "lp", "TRAINER.LP.C", "0.5")
    lp.train()
    assert json.loads((tmp_path / "lp" / "lp_search.json").read_text())["c"] == 0.5
    with pytest.raises(ValueError, match="TRAINER.LP.C must be"):
        build(tmp_path / "x", "TRAINER.LP.C", "0.0")
    with pytest.raises(ValueError, match="OPTIM.MAX_EPOCH must be 0"):
        build(tmp_path / "y", "OPTIM.MAX_EPOCH", "2")


def test_eval_only_reads_the_saved_probe(build, tmp_path):
    out = tmp_path / "lp"
    lp = build(out)
    lp.train()
    acc = json.loads((out / "results.json").read_text())["accuracy"]
    ev = build(tmp_path / "ev")
    ev.load_model(str(out))
    assert ev.test() == pytest.approx(acc)
    with pytest.raises(FileNotFoundError, match="lp_final.pt"):
        build(tmp_path / "ev2").load_model(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_main_sh_end_to_end_and_results_row(script_env, tiny_clip_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", "scripts/linearprobe/main.sh", name, "vit_b16", "2", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "TRAINER.LP.SEARCH_STEPS", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "LinearProbe" / "vit_b16_2shots" / "seed1"
    log = (run / "log.txt").read_text()
    assert "Finish training" in log and "* accuracy:" in log and "searched on val" in log
    again = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipping" in again.stdout
    res = subprocess.run([sys.executable, "-m", "tools.results", "--output", script_env["OUTPUT"], "--seeds", "1",
                          "--format", "csv", "--no-baselines"], cwd=REPO, env=script_env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = next(line for line in res.stdout.splitlines() if line.startswith("LinearProbe,"))
    assert ",ours," in row
