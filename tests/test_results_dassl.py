"""End to end (Dassl, tiny CLIP, fixture dataset): `python -m tools.sweep` for zero-shot CLIP (2 seeds) and FAIR
(1 epoch), then `python -m tools.results` with a baselines file -> our rows, the published row, Δ, and the PNG."""
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.dassl

TINY = ["INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"]


def _run(module, env, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_sweep_then_results_prints_leaderboard_and_writes_png(script_env, tiny_clip_path, tmp_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    env = {**script_env, "SWEEP_SCRIPTS_DIR": str(REPO / "scripts")}
    out = Path(env["OUTPUT"])
    opts = ["MODEL.BACKBONE.NAME", str(tiny_clip_path), *TINY]

    zs = _run("tools.sweep", env, "--method", "zsclip", "--datasets", name, "--cfgs", "vit_b16", "--seeds", "1,2",
              "--", *opts)
    assert zs.returncode == 0, zs.stdout[-3000:] + zs.stderr[-3000:]
    assert "2 ran, 0 skipped" in zs.stdout
    fair = _run("tools.sweep", env, "--method", "fair", "--datasets", name, "--cfgs", "vit_b16", "--seeds", "1",
                "--", *opts, "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "1",
                "TRAINER.FAIR.N_CROPS", "2", "TRAINER.FAIR.TOPK_CROPS", "2",
                "TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD", "False", "TRAINER.FAIR.DESCRIPTIONS_FALLBACK", "template")
    assert fair.returncode == 0, fair.stdout[-3000:] + fair.stderr[-3000:]
    again = _run("tools.sweep", env, "--method", "zsclip", "--datasets", name, "--cfgs", "vit_b16", "--seeds", "1,2",
                 "--", *opts)
    assert again.returncode == 0 and "0 ran, 2 skipped" in again.stdout

    baselines = tmp_path / "published.csv"
    baselines.write_text(f"method,protocol,backbone,source,{name}\n"
                         f"Some method,testproto,ViT-B/16,Test paper Table 1,55.5\n")
    png = tmp_path / "results.png"
    res = _run("tools.results", env, "--output", str(out), "--baselines", str(baselines), "--plot", str(png))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    board = res.stdout[res.stdout.index("### Leaderboard"):]
    assert "| ZSCLIP" in board and "| FAIR" in board  # our rows
    assert "Some method" in board and "Test paper Table 1" in board and "testproto" in board  # published row
    assert "(Δ " in board  # FAIR vs our zero-shot row
    fair_row = next(line for line in board.splitlines() if line.startswith("| FAIR"))
    assert "vit_b16_templatedesc" in fair_row  # offline: template descriptions, asked for and named
    zs_row = next(line for line in board.splitlines() if line.startswith("| ZSCLIP"))
    assert " ± " in zs_row  # two seeds -> mean ± std
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
