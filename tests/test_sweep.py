"""tools.sweep with fake scripts (no Dassl): dry-run, skip of finished seeds, continue past a failed run, DAC shots,
the run folder of FAIR transductive / ReCLIP inductive, SLURM through submitit's in-process cluster."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tools import runs, sweep

FAKE = r"""#!/usr/bin/env bash
# fake scripts/{method}/main.sh: records its call, fails on dataset "broken", else writes a finished log; like
# train.py, it skips a finished folder made with the same arguments and refuses one made with others (exit 2)
set -eu
echo "$SEEDS $*" >> "$OUTPUT/calls.txt"
dataset="$1"; cfg="$2"; shift 2
{shots}
[[ "$dataset" == broken ]] && {{ echo "boom" >&2; exit 3; }}
[[ "$dataset" == silent ]] && exit 0
dir="$OUTPUT/$dataset/{trainer}/$run/seed$SEEDS"
if [[ -f "$dir/args" ]]; then
    [[ "$(cat "$dir/args")" == "$*" ]] && exit 0
    echo "error: $dir holds another run" >&2; exit 2
fi
mkdir -p "$dir"
echo "$*" > "$dir/args"
printf 'Finish training\n=> result\n* accuracy: 5%s.0%%\n' "$SEEDS" > "$dir/log.txt"
"""


def _write_fake_scripts(root: Path):
    for method, trainer in runs.METHOD_TRAINERS.items():
        shots = 'run="${cfg}_${1}shots"; shift' if method == "dac" else 'run="$cfg"'
        path = root / method / "main.sh"
        path.parent.mkdir(parents=True)
        path.write_text(FAKE.format(method=method, trainer=trainer, shots=shots))
    return root


@pytest.fixture
def env(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    scripts = _write_fake_scripts(tmp_path / "scripts")
    e = dict(os.environ, OUTPUT=str(out), SWEEP_SCRIPTS_DIR=str(scripts), PYTHONWARNINGS="ignore")
    return e, out


def _sweep(env, *args):
    return subprocess.run([sys.executable, "-m", "tools.sweep", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _calls(out):
    f = out / "calls.txt"
    return f.read_text().splitlines() if f.exists() else []


def test_dry_run_prints_one_command_per_seed_and_runs_nothing(env):
    e, out = env
    res = _sweep(e, "--method", "fair", "--datasets", "cub,dtd", "--cfgs", "vit_b16", "--seeds", "1,2",
                 "--dry-run", "--", "OPTIM.MAX_EPOCH", "1")
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.startswith("[dry-run]")]
    assert len(lines) == 4
    assert any("SEEDS=2" in l and "fair/main.sh cub vit_b16 OPTIM.MAX_EPOCH 1" in l for l in lines)
    assert _calls(out) == []


def test_skips_finished_seeds_and_continues_past_a_failed_run(env):
    e, out = env
    first = _sweep(e, "--method", "fair", "--datasets", "broken,cub", "--cfgs", "vit_b16", "--seeds", "1,2")
    assert first.returncode == 1
    # the failure of "broken" did not stop "cub"; both of broken's seeds are named at the end
    assert runs.is_finished(out / "cub/FAIR/vit_b16/seed1") and runs.is_finished(out / "cub/FAIR/vit_b16/seed2")
    summary = first.stdout[first.stdout.index("sweep:"):]
    assert "2 ran, 0 skipped (finished, same run), 2 failed" in summary
    assert "FAILED fair broken vit_b16 seed1" in summary and "FAILED fair broken vit_b16 seed2" in summary
    n_calls = len(_calls(out))
    assert n_calls == 4
    second = _sweep(e, "--method", "fair", "--datasets", "cub", "--cfgs", "vit_b16", "--seeds", "1,2,3")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 ran, 2 skipped (finished, same run)" in second.stdout
    # finished seeds go through the script too (train.py verifies they are the same run), then the new seed
    assert _calls(out)[n_calls:] == ["1 cub vit_b16", "2 cub vit_b16", "3 cub vit_b16"]
    changed = _sweep(e, "--method", "fair", "--datasets", "cub", "--cfgs", "vit_b16", "--seeds", "1",
                     "--", "OPTIM.LR", "0.5")
    assert changed.returncode == 1  # a finished run with other settings is never taken for this one
    assert "0 ran, 0 skipped (finished, same run), 1 failed" in changed.stdout
    assert "is not this run" in changed.stdout and "holds another run" in changed.stderr


def test_zero_exit_without_a_finished_run_is_a_failure(env):
    e, out = env
    res = _sweep(e, "--method", "zsclip", "--datasets", "silent", "--cfgs", "vit_b16", "--seeds", "1")
    assert res.returncode == 1
    assert "holds no finished run" in res.stderr and "FAILED zsclip silent" in res.stdout


def test_dac_requires_shots_and_passes_them(env):
    e, out = env
    res = _sweep(e, "--method", "dac", "--datasets", "dtd", "--cfgs", "rn50", "--seeds", "1")
    assert res.returncode == 2 and "--shots is required" in res.stderr
    res = _sweep(e, "--method", "fair", "--datasets", "dtd", "--cfgs", "rn50", "--shots", "1")
    assert res.returncode == 2 and "only for dac" in res.stderr
    res = _sweep(e, "--method", "dac", "--datasets", "dtd", "--cfgs", "rn50", "--shots", "1,4", "--seeds", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(_calls(out)) == ["1 dtd rn50 1", "1 dtd rn50 4"]
    assert runs.is_finished(out / "dtd/DAC/rn50_4shots/seed1")


def test_run_folder_follows_the_adaptation_split(tmp_path):
    scripts = _write_fake_scripts(tmp_path / "s")
    kw = dict(scripts_dir=scripts, output=tmp_path / "o")
    fair = sweep.plan("fair", ["cub"], ["vit_b16"], [1], opts=["DATASET.ADAPT_SPLIT", "test"], **kw)[0]
    reclip = sweep.plan("reclip", ["cub"], ["vit_b16"], [1], opts=["DATASET.ADAPT_SPLIT", "train"], **kw)[0]
    plain = sweep.plan("reclip", ["cub"], ["vit_b16"], [2], **kw)[0]
    assert fair.seed_dir.parts[-2:] == ("vit_b16_transductive", "seed1")
    assert reclip.seed_dir.parts[-2:] == ("vit_b16_inductive", "seed1")
    assert plain.seed_dir.parts[-3:] == ("ReCLIP", "vit_b16", "seed2")
    with pytest.raises(ValueError, match="KEY VALUE"):
        sweep.plan("fair", ["cub"], ["vit_b16"], [1], opts=["OPTIM.LR"], **kw)


FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for $PYTHON in scripts/common.sh: `-m tools.runs ...` runs for real, `train.py ...` writes a finished log
if [[ "$1" == "-m" ]]; then exec "{python}" "$@"; fi
while [[ $# -gt 0 && "$1" != "--output-dir" ]]; do shift; done
mkdir -p "$2"
printf 'Finish training\n=> result\n* accuracy: 50.0%%\n' > "$2/log.txt"
"""


@pytest.mark.parametrize("method,opts", [("fair", ()), ("fair", ("DATASET.ADAPT_SPLIT", "test")),
                                         ("reclip", ()), ("reclip", ("DATASET.ADAPT_SPLIT", "train")),
                                         ("zsclip", ())])
def test_real_scripts_write_where_the_sweep_looks(tmp_path, method, opts):
    """The seed folder the sweep checks (tools.runs.method_run_name) is the one the real script writes to."""
    script = REPO / "scripts" / method / "main.sh"
    dataset_cfgs = sorted((REPO / "configs" / "datasets").glob("*.yaml"))
    if not script.is_file() or not dataset_cfgs:
        pytest.skip(f"needs {script} and a configs/datasets/*.yaml")
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "out"
    job = sweep.plan(method, [dataset_cfgs[0].stem], ["vit_b16"], [1], opts=list(opts), output=out)[0]
    env = dict(os.environ, OUTPUT=str(out), SEEDS="1", PYTHON=str(fake), PYTHONWARNINGS="ignore")
    res = subprocess.run(job.argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    written = [p.parent for p in out.rglob("log.txt")]
    assert written == [job.seed_dir]
    assert runs.is_finished(job.seed_dir)


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit is not installed")
def test_slurm_path_goes_through_submitit_and_reports_failures(env, tmp_path):
    e, out = env
    res = _sweep(e, "--method", "fair", "--datasets", "broken,cub", "--cfgs", "vit_b16", "--seeds", "1",
                 "--slurm", "--slurm-cluster", "debug", "--slurm-log-dir", str(tmp_path / "logs"),
                 "--partition", "gpu")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[submitted] fair cub vit_b16 seed1" in res.stdout
    assert "FAILED fair broken vit_b16 seed1" in res.stdout
    assert runs.is_finished(out / "cub/FAIR/vit_b16/seed1")


def test_slurm_without_submitit_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(SystemExit, match="pip install submitit"):
        sweep._submitit()


RECORDING_PYTHON = r"""#!/usr/bin/env bash
# stands in for $PYTHON: `-m tools.runs ...` runs for real; `train.py ...` records its argv and writes a finished log
if [[ "$1" == "-m" ]]; then exec "{python}" "$@"; fi
echo "$*" >> "{record}"
while [[ $# -gt 0 && "$1" != "--output-dir" ]]; do shift; done
mkdir -p "$2"
printf 'Finish training\n=> result\n* accuracy: 50.0%%\n' > "$2/log.txt"
"""


def test_generic_trainer_script_runs_any_trainer_with_its_imports_and_configs(tmp_path):
    """--method trainer --trainer CoOp: scripts/trainer/main.sh gets the trainer, --shots becomes DATASET.NUM_SHOTS
    and the `<cfg>_<K>shots` folder, --import reaches train.py (absolute), the cfg comes from TRAINER_CONFIGS."""
    dataset = sorted((REPO / "configs" / "datasets").glob("*.yaml"))[0].stem
    cfgs = tmp_path / "coop_configs"
    (cfgs / "CoOp").mkdir(parents=True)
    (cfgs / "CoOp" / "rn50.yaml").write_text("OPTIM:\n  MAX_EPOCH: 1\n")
    record = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(RECORDING_PYTHON.format(python=sys.executable, record=record))
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(fake), TRAINER_CONFIGS=str(cfgs), PYTHONWARNINGS="ignore", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "tools.sweep", "--method", "trainer", "--trainer", "CoOp",
                          "--datasets", dataset, "--cfgs", "rn50", "--shots", "4", "--seeds", "1",
                          "--import", "coop/train.py", "--output", str(out), "--", "TRAINER.COOP.N_CTX", "4"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert runs.is_finished(out / dataset / "CoOp" / "rn50_4shots" / "seed1")
    argv = record.read_text()
    assert f"--import {tmp_path / 'coop' / 'train.py'}" in argv and "--trainer CoOp" in argv
    assert f"--config-file {cfgs / 'CoOp' / 'rn50.yaml'}" in argv
    assert "DATASET.NUM_SHOTS 4 TRAINER.COOP.N_CTX 4" in argv
    with pytest.raises(ValueError, match="--trainer NAME goes with --method trainer"):
        sweep.plan("trainer", [dataset], ["rn50"], [1])
    with pytest.raises(ValueError, match="not as DATASET.NUM_SHOTS"):
        sweep.plan("trainer", [dataset], ["rn50"], [1], shots=[4], opts=["DATASET.NUM_SHOTS", "2"], trainer="CoOp")


EXIT_CODE_PYTHON = """#!/usr/bin/env bash
# fake $PYTHON for scripts/common.sh: records the seed of each train.py call and exits with $FAKE_RC
for ((i = 1; i <= $#; i++)); do [[ "${!i}" == --seed ]] && { j=$((i + 1)); echo "${!j}" >> "$OUTPUT/seeds.txt"; }; done
exit "$FAKE_RC"
"""


@pytest.mark.parametrize("rc, seeds_run, script_rc", [(2, ["1"], 2), (1, ["1", "2", "3"], 1), (0, ["1", "2", "3"], 0)])
def test_common_sh_stops_its_seed_loop_on_an_input_error_only(tmp_path, rc, seeds_run, script_rc):
    """train.py's exit code 2 (config, dataset, backbone, another run in the folder: every seed would hit it) stops
    scripts/common.sh after the first seed; any other failure lets the next seeds run."""
    fake = tmp_path / "python"
    fake.write_text(EXIT_CODE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHON=str(fake), OUTPUT=str(out), DATA=str(tmp_path / "data"), SEEDS="1 2 3",
               FAKE_RC=str(rc))
    res = subprocess.run(["bash", "scripts/fair/main.sh", "cub", "vit_b16"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == script_rc, res.stdout + res.stderr
    assert (out / "seeds.txt").read_text().split() == seeds_run
    if rc == 2:
        assert "not running seeds 2 3" in res.stderr


def test_slurm_dry_run_prints_what_each_multi_gpu_multi_node_job_executes(env):
    e, out = env
    res = _sweep(e, "--method", "fair", "--datasets", "cub", "--cfgs", "vit_b16", "--seeds", "1,2", "--slurm",
                 "--gpus-per-node", "4", "--nodes", "2", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.startswith("[dry-run slurm]")]
    assert len(lines) == 2 and _calls(out) == []
    for seed, line in zip((1, 2), lines):
        assert "2 node(s) x 4 GPU(s)" in line and "NODE_RANK=k MASTER_ADDR=<the job's first node>" in line
        assert f"SEEDS={seed}" in line and "NPROC=4 NNODES=2" in line and "fair/main.sh cub vit_b16" in line
    one = _sweep(e, "--method", "fair", "--datasets", "cub", "--cfgs", "vit_b16", "--seeds", "1", "--slurm",
                 "--gpus-per-node", "2", "--dry-run")
    assert "1 node x 2 GPU(s): " in one.stdout and "NPROC=2" in one.stdout and "NNODES" not in one.stdout
    local = _sweep(e, "--method", "fair", "--datasets", "cub", "--cfgs", "vit_b16", "--gpus-per-node", "2")
    assert local.returncode == 2 and "NPROC=<GPUs>" in local.stderr


def test_a_multi_node_job_gives_each_node_its_rank_and_the_first_node_as_rendezvous():
    job = sweep.plan("fair", ["cub"], ["vit_b16"], [1])[0]
    assert sweep.node_env(job, 0, ["n1", "n2"], "123") == {}  # one node: torchrun --standalone
    job = sweep.replace(job, nproc=4, nnodes=2)
    e0, e1 = (sweep.node_env(job, k, ["n1", "n2"], "4567_3") for k in (0, 1))
    assert e0["MASTER_ADDR"] == e1["MASTER_ADDR"] == "n1" and e0["MASTER_PORT"] == e1["MASTER_PORT"]
    assert (e0["NODE_RANK"], e1["NODE_RANK"]) == ("0", "1")
    assert job.env["NPROC"] == "4" and job.env["NNODES"] == "2"


LAUNCH_PYTHON = """#!/usr/bin/env bash
# fake $PYTHON: records how scripts/common.sh launches train.py
echo "$*" >> "$OUTPUT/launch.txt"
"""


@pytest.mark.parametrize("extra, expected", [
    ({}, "train.py --root"),
    ({"NPROC": "2"}, "-m torch.distributed.run --nproc_per_node 2 --standalone train.py"),
    ({"NPROC": "4", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29400"},
     "-m torch.distributed.run --nproc_per_node 4 --nnodes 2 --node_rank 1 --master_addr n1 --master_port 29400 "
     "train.py"),
])
def test_the_scripts_start_torchrun_with_nproc(tmp_path, extra, expected):
    fake = tmp_path / "python"
    fake.write_text(LAUNCH_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHON=str(fake), OUTPUT=str(out), SEEDS="1", **extra)
    res = subprocess.run(["bash", "scripts/fair/main.sh", "cub", "vit_b16"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert (out / "launch.txt").read_text().startswith(expected), res.stderr
    bad = subprocess.run(["bash", "scripts/fair/main.sh", "cub", "vit_b16"], cwd=REPO, capture_output=True, text=True,
                         env=dict(env, NPROC="0"), timeout=60)
    assert bad.returncode == 2 and "NPROC must be a positive integer" in bad.stderr
