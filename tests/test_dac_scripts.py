"""scripts/dac/main.sh and scripts/dac/ood.sh with a stand-in for $PYTHON (no Dassl needed): where runs go, what
train.py is given, skipping of finished runs, failures, argument errors."""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tools import runs, sweep

OOD_TARGETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")
NEEDED = [REPO / "configs" / "datasets" / f"{d}.yaml" for d in ("dtd", "imagenet") + OOD_TARGETS]
pytestmark = pytest.mark.skipif(not all(p.is_file() for p in NEEDED),
                                reason=f"needs the dataset configs {[p.name for p in NEEDED]}")

# stands in for $PYTHON in scripts/common.sh: `-m tools.runs ...` runs for real; `train.py ...` skips a finished
# output dir like the real one (printing "skipping"), else records its argv and writes a finished log (an eval-only
# one for --eval-only), or fails when its output dir contains FAIL_IN
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [[ "$1" == "-m" ]]; then exec "@PYTHON@" "$@"; fi
args=("$@"); out=""; eval_only=0
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --output-dir) out="${args[i+1]}" ;;
        --eval-only) eval_only=1 ;;
    esac
done
if "@PYTHON@" -m tools.runs is-finished "$out"; then echo "finished run in $out, skipping"; exit 0; fi
echo "$*" >> "@CALLS@"
mkdir -p "$out"
if [[ -n "${FAIL_IN:-}" && "$out" == *"$FAIL_IN"* ]]; then echo "simulated failure" >&2; exit 1; fi
if (( eval_only )); then
    printf 'eval_only: True\n=> result\n* accuracy: 40.0%%\n' > "$out/log.txt"
else
    printf 'Finish training\n=> result\n* accuracy: 50.0%%\n' > "$out/log.txt"
fi
"""


@pytest.fixture
def env(tmp_path):
    fake = tmp_path / "python"
    calls = tmp_path / "calls.txt"
    fake.write_text(FAKE_PYTHON.replace("@PYTHON@", sys.executable).replace("@CALLS@", str(calls)))
    fake.chmod(0o755)
    e = dict(os.environ, OUTPUT=str(tmp_path / "out"), DATA=str(tmp_path / "data"), SEEDS="1 2",
             PYTHON=str(fake), PYTHONWARNINGS="ignore")
    return e, tmp_path / "out", calls


def _run(e, *argv, **extra):
    return subprocess.run(["bash", *argv], cwd=REPO, env=dict(e, **extra), capture_output=True, text=True,
                          timeout=120)


def _calls(path):
    return path.read_text().splitlines() if path.exists() else []


def test_main_sh_passes_the_shots_and_writes_where_the_sweep_looks(env):
    e, out, calls = env
    res = _run(e, "scripts/dac/main.sh", "dtd", "vit_b16", "4", "OPTIM.MAX_EPOCH", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = _calls(calls)
    assert len(lines) == 2 and all("DATASET.NUM_SHOTS 4 OPTIM.MAX_EPOCH 1" in line for line in lines)
    assert all("--trainer DAC" in line and "configs/trainers/DAC/vit_b16.yaml" in line for line in lines)
    for seed in (1, 2):
        job = sweep.plan("dac", ["dtd"], ["vit_b16"], [seed], shots=[4], output=out)[0]
        assert job.seed_dir == out / "dtd" / "DAC" / "vit_b16_4shots" / f"seed{seed}"
        assert runs.is_finished(job.seed_dir)
    again = _run(e, "scripts/dac/main.sh", "dtd", "vit_b16", "4", "OPTIM.MAX_EPOCH", "1")
    assert again.returncode == 0 and again.stdout.count("skipping") == 2 and len(_calls(calls)) == 2


@pytest.mark.parametrize("args,message", [(("dtd", "vit_b16"), "usage"), (("dtd", "vit_b16", "0"), "positive"),
                                          (("dtd", "vit_b16", "x"), "positive"),
                                          (("dtd", "vit_b16", "2", "DATASET.NUM_SHOTS", "4"), "third argument"),
                                          (("dtd", "nope", "2"), "unknown config")])
def test_main_sh_argument_errors(env, args, message):
    e, _, calls = env
    res = _run(e, "scripts/dac/main.sh", *args)
    assert res.returncode == 2 and message in res.stderr and not _calls(calls)


def test_ood_sh_trains_on_imagenet_then_evaluates_each_seed_on_the_targets(env):
    e, out, calls = env
    res = _run(e, "scripts/dac/ood.sh", "vit_b16", "16", "OPTIM.MAX_EPOCH", "1", FAIL_IN="/imagenet/DAC/")
    # both trainings fail -> no evaluation, exit 1
    assert res.returncode == 1 and res.stderr.count("skipping its OOD evaluation") == 2
    assert all("--eval-only" not in line for line in _calls(calls))

    calls.unlink()
    res = _run(e, "scripts/dac/ood.sh", "vit_b16", "16", "OPTIM.MAX_EPOCH", "1", FAIL_IN="imagenet_a/DAC/")
    assert res.returncode == 1, res.stdout + res.stderr  # the ImageNet-A evaluations fail, the others run
    lines = _calls(calls)
    train = [line for line in lines if "--eval-only" not in line]
    evals = [line for line in lines if "--eval-only" in line]
    assert len(train) == 2 and all("configs/datasets/imagenet.yaml" in line and "DATASET.NUM_SHOTS 16" in line
                                   for line in train)
    assert len(evals) == 2 * len(OOD_TARGETS)
    for seed in (1, 2):
        model_dir = out / "imagenet" / "DAC" / "vit_b16_16shots" / f"seed{seed}"
        assert runs.is_finished(model_dir)
        for target in OOD_TARGETS:
            run_dir = out / target / "DAC" / "vit_b16_from_imagenet_16shots" / f"seed{seed}"
            line = next(x for x in evals if f"--output-dir {run_dir} " in x)
            assert f"--model-dir {model_dir}" in line and f"configs/datasets/{target}.yaml" in line
            assert "OPTIM.MAX_EPOCH 1" in line and "DATASET.NUM_SHOTS" not in line
            assert runs.is_finished(run_dir) == (target != "imagenet_a")
    # the results tools read the OOD runs as their own cfg with the shots
    ood = [r for r in runs.scan(out) if r.dataset == "imagenet_r"]
    assert {(r.cfg, r.shots, r.seed) for r in ood} == {("vit_b16_from_imagenet", 16, 1), ("vit_b16_from_imagenet", 16, 2)}

    calls.unlink()
    res = _run(e, "scripts/dac/ood.sh", "vit_b16", "16", "OPTIM.MAX_EPOCH", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = _calls(calls)  # only the two failed ImageNet-A evaluations run again
    assert len(lines) == 2 and all("imagenet_a/DAC/vit_b16_from_imagenet_16shots" in line for line in lines)


def test_ood_sh_checks_the_targets_before_training(env):
    e, _, calls = env
    res = _run(e, "scripts/dac/ood.sh", "vit_b16", "16", OOD_TARGETS="imagenet_v2 nope")
    assert res.returncode == 2 and "unknown dataset 'nope'" in res.stderr and not _calls(calls)
    res = _run(e, "scripts/dac/ood.sh", "vit_b16", "zero")
    assert res.returncode == 2 and "positive" in res.stderr and not _calls(calls)
