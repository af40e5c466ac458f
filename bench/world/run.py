"""The world's one command: build the world if absent, run every method through its normal script
on the shifted target domain, print the leaderboard and the check of the world's target.

    python -m bench.world.run [--world world|world_clip0|world_noise] [--root data/<world>] [--output output/<world>] [--seeds 1 2 3]

`--world` picks the CLIP and the shift (bench/world/build.py WORLDS: `world`, the default blur 1.5 + noise
0.1 with CLIP seed 3; `world_clip0`, the same shift with CLIP seed 0; `world_noise`, blur 1.0 + noise 0.15 with CLIP
seed 0); its name is also the config name of the runs. Runs, in order, with
DATA=<root> OUTPUT=<output> SEEDS=<seeds> (finished seeds are skipped, so a second call only prints the table;
an output folder with runs of another world stops the command, see `claim_output`):
    bash scripts/zsclip/main.sh fashion_mnist_shift <world>
    bash scripts/fair/main.sh   fashion_mnist_shift <world>
    bash scripts/reclip/main.sh fashion_mnist_shift <world>
    bash scripts/dac/main.sh    fashion_mnist_shift <world> 4
each with `MODEL.BACKBONE.NAME <root>/clip_fashion_mnist.pt TRAINER.FEATURE_CACHE_DIR <output>/cache`. The
hyper-parameters are those of configs/trainers/<TRAINER>/<world>.yaml (chosen on the shifted val split, see
bench/world/README.md). Then `python -m tools.results --output <output> --seeds ... --no-baselines`, and, per
method, the mean and the smallest per-seed gain over zero-shot (target: mean >= +5, every seed >= +3).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import build

REPO = Path(__file__).resolve().parents[2]
DATASET = "fashion_mnist_shift"
CFG = "world"
METHODS = {  # name -> (script, extra positional args, TRAINER)
    "zsclip": ("scripts/zsclip/main.sh", [], "ZSCLIP"),
    "fair": ("scripts/fair/main.sh", [], "FAIR"),
    "reclip": ("scripts/reclip/main.sh", [], "ReCLIP"),
    "dac": ("scripts/dac/main.sh", ["4"], "DAC"),
    # the prior baselines (docs/BASELINES.md), where the world has their config: same data, shots and seeds
    "selftraining": ("scripts/selftraining/main.sh", [], "SelfTraining"),
    "dpa": ("scripts/dpa/main.sh", [], "DPA"),
    "tipadapter": ("scripts/tipadapter/main.sh", ["4"], "TipAdapter"),
    "tipadapterf": ("scripts/tipadapterf/main.sh", ["4"], "TipAdapterF"),
    "linearprobe": ("scripts/linearprobe/main.sh", ["4"], "LinearProbe"),
}
TARGET_TRAINERS = ("FAIR", "ReCLIP", "DAC")  # the methods the target is for; baselines are reported beside them
TARGET_MEAN, TARGET_MIN = 5.0, 3.0


def world_methods(world):
    """The methods with a config for `world` (configs/trainers/<TRAINER>/<world>.yaml), in METHODS order."""
    return [m for m, (_, _, trainer) in METHODS.items()
            if (REPO / "configs" / "trainers" / trainer / f"{world}.yaml").is_file()]


STAMP = "world_params.json"  # in an output folder: the parameters of the world its runs were made on


def claim_output(output, params):
    """Tie the output folder to the world `params` (written to <output>/world_params.json).

    Finished seeds are skipped and tabulated as they are, so runs made on another world (a folder filled before the
    world's CLIP or shift changed) would pass for this world's: such a folder stops the command with an error naming
    it, and nothing in it is deleted.
    """
    output = Path(output)
    stamp = output / STAMP
    params = json.loads(json.dumps(params))
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != params:
            changed = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
            raise SystemExit(f"{output} holds runs of another world: {stamp} records other {'/'.join(changed)} "
                             f"parameters than this world's; pass --output <another folder> or move {output} away")
        return
    if output.is_dir() and any(output.glob("*/*/*/seed*")):
        raise SystemExit(f"{output} holds runs but no {STAMP}, so they may come from another world (e.g. runs of "
                         f"world_clip0, whose CLIP is not seed {build.CLIP_SEED}); pass --output <another "
                         f"folder> or move {output} away")
    output.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(params, indent=2))


def run_method(name, root, output, seeds, extra=(), cfg=CFG):
    script, positional, _ = METHODS[name]
    env = dict(os.environ, DATA=str(root), OUTPUT=str(output), SEEDS=" ".join(map(str, seeds)),
               PYTHON=os.environ.get("PYTHON", sys.executable), PYTHONWARNINGS="ignore")
    cmd = ["bash", script, DATASET, cfg, *positional, "MODEL.BACKBONE.NAME", str(Path(root) / build.CHECKPOINT),
           "TRAINER.FEATURE_CACHE_DIR", str(Path(output) / "cache"), *extra]
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    print(f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.time() - t0:.0f} s", flush=True)
    return rc


def gains(output, seeds, cfg=CFG):
    """{trainer: (per-seed accuracies, per-seed gains over ZSCLIP)} from the output tree (tools.runs)."""
    from tools import results, runs

    summaries = {s.trainer: s for s in results.aggregate(runs.scan(output), seeds)
                 if s.dataset == DATASET and runs.base_cfg(s.cfg) == cfg}
    zs = summaries.get("ZSCLIP")
    out = {}
    for trainer, s in summaries.items():
        if trainer == "ZSCLIP" or zs is None:
            continue
        common = sorted(set(s.accuracies) & set(zs.accuracies))
        out[trainer] = ({k: s.accuracies[k] for k in common},
                        {k: s.accuracies[k] - zs.accuracies[k] for k in common})
    return out


def report(output, seeds, cfg=CFG):
    subprocess.run([sys.executable, "-W", "ignore", "-m", "tools.results", "--output", str(output), "--seeds",
                    *map(str, seeds), "--no-baselines"], cwd=REPO, check=False)
    print("\nTarget: every method >= +5 points over zero-shot on average, no seed below +3")
    ok = True
    found = gains(output, seeds, cfg)
    for trainer, (acc, delta) in sorted(found.items(), key=lambda kv: (kv[0] not in TARGET_TRAINERS, kv[0])):
        if not delta:
            continue
        mean = sum(delta.values()) / len(delta)
        worst = min(delta.values())
        per_seed = ", ".join(f"seed {k}: {v:+.2f}" for k, v in sorted(delta.items()))
        if trainer not in TARGET_TRAINERS:
            print(f"- {trainer:12s} mean {mean:+.2f}, min {worst:+.2f} ({per_seed}) (baseline)")
            continue
        hit = mean >= TARGET_MEAN and worst >= TARGET_MIN and len(delta) == len(seeds)
        ok &= hit
        print(f"- {trainer:12s} mean {mean:+.2f}, min {worst:+.2f} ({per_seed}) -> {'met' if hit else 'NOT met'}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.world.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default=CFG, choices=sorted(build.WORLDS),
                   help="which world, i.e. CLIP seed and shift (bench/world/build.py WORLDS); also the runs' config name "
                        "(default world)")
    p.add_argument("--root", help="world folder: DATA of the runs (default data/<world>)")
    p.add_argument("--output", help="OUTPUT of the runs (default output/<world>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", choices=list(METHODS),
                   help="default: every method with a config for the world")
    a = p.parse_args(argv)
    methods = a.methods or world_methods(a.world)
    output = Path(a.output or f"output/{a.world}").resolve()
    t0 = time.time()
    root, params = build.build_named(a.world, a.root)
    claim_output(output, params)
    failed = [m for m in methods if run_method(m, root, output, a.seeds, cfg=a.world) != 0]
    print(f"\nall runs done in {time.time() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    met = report(output, a.seeds, cfg=a.world)
    return 1 if failed else (0 if met else 3)


if __name__ == "__main__":
    sys.exit(main())
