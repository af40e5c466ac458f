"""Inside a CoOp-shaped checkout (written here: its own train.py with setup_cfg/extend_cfg, trainers/zsclip.py
registering ZeroshotCLIP and ZeroshotCLIP2, datasets/imagenetv2.py registering ImageNetV2): the two lines of
docs/COOP.md register our trainers and datasets next to its own, and FAIR, ReCLIP, DAC and ZSCLIP run through its
train.py on a fixture dataset. Copying trainers/fair.py (+ datasets/dtd.py) alone into such a tree works too. Then
one `python -m tools.results` call tabulates those runs beside CoOp-layout runs (CoOp-format logs, deeper folders).
Our train.py's `--import` brings the same tree's trainers, datasets and config keys in from outside."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_results import write_coop_log
from tools import runs

pytestmark = pytest.mark.dassl

# A CoOp-style entry point (structure of CoOp's train.py: dataset/trainer imports at the top, extend_cfg declaring
# the trainers' keys, setup_cfg = defaults -> extend_cfg -> dataset yaml -> method yaml -> flags -> opts).
COOP_TRAIN = '''
import argparse

import torch
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

import datasets.imagenetv2  # noqa: F401
import trainers.zsclip  # noqa: F401
{plugin_import}


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    {plugin_extend}


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_file(args.dataset_config_file)
    cfg.merge_from_file(args.config_file)
    cfg.DATASET.ROOT = args.root
    cfg.OUTPUT_DIR = args.output_dir
    cfg.SEED = args.seed
    cfg.TRAINER.NAME = args.trainer
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    print("** Arguments **")
    for key in sorted(vars(args)):
        print("{{}}: {{}}".format(key, getattr(args, key)))
    print("** Config **")
    print(cfg)
    print("Collecting env info ...")
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    trainer.train()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag in ("--root", "--output-dir", "--trainer", "--config-file", "--dataset-config-file", "--model-dir"):
        p.add_argument(flag, type=str, default="")
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--load-epoch", type=int)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    main(p.parse_args())
'''

COOP_ZSCLIP = '''
from dassl.engine import TRAINER_REGISTRY, TrainerX


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """Stands in for CoOp's single-template zero-shot trainer (registration only)."""


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Stands in for CoOp's prompt-ensemble zero-shot trainer (registration only)."""
'''

COOP_IMAGENETV2 = '''
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase


@DATASET_REGISTRY.register()
class ImageNetV2(DatasetBase):
    """Stands in for CoOp's ImageNetV2 dataset class."""
    dataset_dir = "imagenetv2"
'''

RECIPE_IMPORT = "import clip_adapt.plugin  # noqa: F401  FAIR, ReCLIP, DAC, ZSCLIP and the datasets not defined here"
RECIPE_EXTEND = "clip_adapt.plugin.extend_cfg(cfg)  # their config keys"

REGISTRY_PROBE = '''
import sys
sys.argv = ["train.py"]
import train  # noqa: F401  (the tree's entry point, as a module: its imports register everything)
from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY
import clip_adapt
print("trainers", " ".join(sorted(TRAINER_REGISTRY.registered_names())))
print("ImageNetV2", DATASET_REGISTRY.get("ImageNetV2").__module__)
print("DescribableTextures", DATASET_REGISTRY.get("DescribableTextures").__module__)
print("clip_adapt", clip_adapt.__file__)
'''

TINY = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "USE_CUDA", "False"]
FAST = {
    "FAIR": ["OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.FAIR.N_CROPS", "2",
             "TRAINER.FAIR.TOPK_CROPS", "2", "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "False",
             "TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "template"],  # no description files offline
    "ReCLIP": ["OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"],
    "DAC": ["OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATASET.NUM_SHOTS", "2"],
    "ZSCLIP": [],
}


def coop_tree(root: Path, recipe=True) -> Path:
    """A CoOp-shaped checkout under `root`; with `recipe`, the two lines of docs/COOP.md added to its train.py."""
    (root / "trainers").mkdir(parents=True)
    (root / "datasets").mkdir()
    (root / "trainers" / "__init__.py").write_text("")
    (root / "datasets" / "__init__.py").write_text("")
    (root / "trainers" / "zsclip.py").write_text(COOP_ZSCLIP)
    (root / "datasets" / "imagenetv2.py").write_text(COOP_IMAGENETV2)
    (root / "train.py").write_text(COOP_TRAIN.format(plugin_import=RECIPE_IMPORT if recipe else "",
                                                     plugin_extend=RECIPE_EXTEND if recipe else ""))
    return root


def _env(tmp_path):
    # PYTHONPATH=REPO: `import clip_adapt` inside the tree resolves to this checkout, as `pip install -e .` would
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OUTDATED_IGNORE": "1",
            "CLIP_ADAPT_CACHE": str(tmp_path / "cache")}


def _python(cwd, env, *args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _train(tree, env, trainer, data, out, tiny_clip_path, *extra):
    cfg = "vit_b16"
    seed_dir = out / "dtd" / trainer / cfg / "seed1"
    args = ["train.py", "--root", str(data), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", str(REPO / "configs/datasets/dtd.yaml"),
            "--config-file", str(REPO / f"configs/trainers/{trainer}/{cfg}.yaml"), "--output-dir", str(seed_dir),
            *extra, "MODEL.BACKBONE.NAME", str(tiny_clip_path), *TINY, *FAST[trainer]]
    if trainer == "ZSCLIP":
        args.insert(1, "--eval-only")
    res = _python(tree, env, *args)
    assert res.returncode == 0, f"{trainer}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return seed_dir


@pytest.mark.slow
def test_recipe_registers_ours_beside_coops_own_runs_all_four_then_results_tabulates(tmp_path, tiny_clip_path):
    from tests import dataset_fixtures

    tree = coop_tree(tmp_path / "CoOp")
    env = _env(tmp_path)
    probe = _python(tree, env, "-c", REGISTRY_PROBE, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines() if " " in line)
    registered = set(lines["trainers"].split())
    assert {"ZeroshotCLIP", "ZeroshotCLIP2"} <= registered  # CoOp's own trainers still register
    assert {"FAIR", "ReCLIP", "DAC", "ZSCLIP"} <= registered  # ours, under names that do not clash
    assert lines["ImageNetV2"] == "datasets.imagenetv2"  # the tree's class is kept
    assert lines["DescribableTextures"] == "clip_adapt.engine.datasets"  # the tree has none: ours
    assert Path(lines["clip_adapt"]).resolve().is_relative_to(REPO)

    data = tmp_path / "data"
    dataset_fixtures.build_fixture_dataset(data, "dtd")
    out = tmp_path / "output"
    done = {t: _train(tree, env, t, data, out, tiny_clip_path) for t in ("ZSCLIP", "FAIR", "ReCLIP", "DAC")}
    for trainer, seed_dir in done.items():
        assert runs.is_finished(seed_dir), f"{trainer}: {runs.run_status(seed_dir).reason}"

    # CoOp-layout runs beside them: main.sh's deeper folders (2 seeds) and zeroshot.sh's seedless folder
    variant = "nctx16_cscFalse_ctpend"
    for seed, acc in ((1, 62.0), (2, 64.0)):
        write_coop_log(out / "dtd" / "CoOp" / "vit_b16_16shots" / variant / f"seed{seed}", "CoOp", "dtd", "ViT-B/16",
                  acc, seed=seed, cfg_file="vit_b16")
    write_coop_log(out / "ZeroshotCLIP" / "vit_b16" / "dtd", "ZeroshotCLIP", "dtd", "ViT-B/16", 44.0, eval_only=True,
              seed=-1, cfg_file="vit_b16")
    res = _python(REPO, env, "-m", "tools.results", "--output", str(out), "--no-baselines", "--format", "csv",
                  timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    import csv
    import io

    rows = {(r["method"], r["run"]): r for r in csv.DictReader(io.StringIO(res.stdout))}
    assert set(rows) == {("ZSCLIP", "vit_b16"), ("FAIR", "vit_b16"), ("ReCLIP", "vit_b16"), ("DAC", "vit_b16"),
                         ("CoOp", f"vit_b16_16shots/{variant}"), ("ZeroshotCLIP", "vit_b16")}
    for name in ("ZSCLIP", "FAIR", "ReCLIP", "DAC"):
        r = rows[(name, "vit_b16")]
        assert (r["protocol"], r["source"], r["backbone"]) == ("ours", "this project", "tiny_vit.pt")
    coop = rows[("CoOp", f"vit_b16_16shots/{variant}")]
    assert (coop["protocol"], coop["source"], coop["backbone"], coop["shots"]) == ("CoOp", "local run",
                                                                                     "ViT-B/16", "16")
    assert (coop["dtd"], coop["dtd_n"], coop["dtd_std"]) == ("63.00", "2", "1.41")
    assert coop["dtd_delta"] == "+19.00"  # against CoOp's zero-shot row (same backbone), not our tiny ZSCLIP
    zs = rows[("ZeroshotCLIP", "vit_b16")]
    assert (zs["protocol"], zs["source"], zs["dtd"], zs["dtd_delta"]) == ("ZeroshotCLIP", "local run", "44.00", "")
    fair = rows[("FAIR", "vit_b16")]
    zsclip = rows[("ZSCLIP", "vit_b16")]
    assert float(fair["dtd_delta"]) == pytest.approx(float(fair["dtd"].rstrip("*")) - float(zsclip["dtd"].rstrip("*")))
    assert "this project" not in {r["source"] for r in rows.values() if r["protocol"] != "ours"}
    # population std, as CoOp's parse_test_res.py prints it, on request; the markdown says which one it shows
    pop = _python(REPO, env, "-m", "tools.results", "--output", str(out), "--no-baselines", "--std", "population",
                  timeout=120)
    assert pop.returncode == 0, pop.stderr[-3000:]
    assert "63.00 ± 1.00" in pop.stdout and "mean ± population std" in pop.stdout
    assert f"Δ of CoOp vit_b16_16shots/{variant}: against ZeroshotCLIP vit_b16 (dtd)" in pop.stdout


@pytest.mark.slow
def test_copying_one_trainer_file_into_a_coop_trainers_folder_works(tmp_path, tiny_clip_path):
    """trainers/fair.py and datasets/dtd.py copied alone (no plugin import) register FAIR and the dataset from the
    installed clip_adapt; the tree's extend_cfg declares our keys with clip_adapt.config.extend_cfg."""
    from tests import dataset_fixtures

    tree = tmp_path / "CoOp"
    (tree / "trainers").mkdir(parents=True)
    (tree / "datasets").mkdir()
    for pkg in ("trainers", "datasets"):
        (tree / pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "trainers" / "fair.py", tree / "trainers" / "fair.py")
    shutil.copy(REPO / "datasets" / "dtd.py", tree / "datasets" / "dtd.py")
    text = COOP_TRAIN.format(plugin_import="import trainers.fair  # noqa: F401\nimport datasets.dtd  # noqa: F401",
                             plugin_extend="from clip_adapt.config import extend_cfg as ours; ours(cfg)")
    text = text.replace("import datasets.imagenetv2  # noqa: F401\nimport trainers.zsclip  # noqa: F401\n", "")
    (tree / "train.py").write_text(text)
    env = _env(tmp_path)
    probe = _python(tree, env, "-c", REGISTRY_PROBE.replace('print("ImageNetV2", DATASET_REGISTRY.get("ImageNetV2")'
                                                            '.__module__)\n', ""), timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in probe.stdout.splitlines() if " " in line)
    assert "FAIR" in lines["trainers"].split() and "ZSCLIP" not in lines["trainers"].split()  # only what was copied
    assert Path(lines["clip_adapt"]).resolve().is_relative_to(REPO)
    data = tmp_path / "data"
    dataset_fixtures.build_fixture_dataset(data, "dtd")
    seed_dir = _train(tree, env, "FAIR", data, tmp_path / "output", tiny_clip_path)
    assert runs.is_finished(seed_dir)


@pytest.mark.slow
def test_our_train_py_imports_a_coop_tree_from_outside(tmp_path, tiny_clip_path):
    """`train.py --import <CoOp>/train.py`: the tree's trainers and datasets register before ours (its ImageNetV2
    kept), its extend_cfg declares TRAINER.COOP (settable on the command line), and FAIR runs."""
    from tests import dataset_fixtures

    tree = coop_tree(tmp_path / "CoOp", recipe=False)  # an unmodified checkout
    data = tmp_path / "data"
    dataset_fixtures.build_fixture_dataset(data, "dtd")
    seed_dir = tmp_path / "output" / "dtd" / "FAIR" / "vit_b16" / "seed1"
    env = _env(tmp_path)
    res = _python(REPO, env, "train.py", "--import", str(tree / "train.py"), "--root", str(data), "--seed", "1",
                  "--trainer", "FAIR", "--dataset-config-file", "configs/datasets/dtd.yaml",
                  "--config-file", "configs/trainers/FAIR/vit_b16.yaml", "--output-dir", str(seed_dir),
                  "MODEL.BACKBONE.NAME", str(tiny_clip_path), *TINY, *FAST["FAIR"], "TRAINER.COOP.N_CTX", "4")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert runs.is_finished(seed_dir)
    log = (seed_dir / "log.txt").read_text()
    assert "  COOP:\n    CLASS_TOKEN_POSITION: end\n    CSC: False\n    N_CTX: 4" in log
    # a module that cannot be imported is named, without a traceback
    bad = _python(REPO, env, "train.py", "--import", str(tmp_path / "nowhere.py"), "--trainer", "FAIR", timeout=120)
    assert bad.returncode != 0 and f"--import {tmp_path / 'nowhere.py'}: ImportError: no such file" in bad.stderr
    assert "Traceback" not in bad.stderr
