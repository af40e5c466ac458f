"""Sweep a method over datasets × cfgs (× shots for DAC) × seeds by calling scripts/<method>/main.sh once per seed.

    python -m tools.sweep --method fair --datasets cub,dtd --cfgs vit_b16 --seeds 1,2,3
    python -m tools.sweep --method dac --datasets dtd --cfgs rn50 --shots 1,2,4,8,16 --dry-run
    python -m tools.sweep --method reclip --datasets dtd --cfgs vit_b16 -- DATASET.ADAPT_SPLIT train
    python -m tools.sweep --method fair --datasets cub --cfgs vit_b16 --slurm --partition gpu --timeout 240
    python -m tools.sweep --method fair --datasets imagenet --cfgs vit_l14 --slurm --gpus-per-node 4 --nodes 2
    IMPORT=/path/to/CoOp/train.py TRAINER_CONFIGS=/path/to/CoOp/configs/trainers \
        python -m tools.sweep --method trainer --trainer CoOp --datasets dtd --cfgs rn50 --shots 1,16

Each (dataset, cfg, shots, seed) is one invocation `SEEDS=<s> bash <scripts-dir>/<method>/main.sh <dataset> <cfg>
[<shots>] [KEY VALUE ...]`, so a failure is reported per seed. A seed folder that already holds a finished run is
handed to train.py too, which compares the run's stored identity (resolved config, backbone sha256; docs/RUNS.md)
with the new one: the same run is skipped in seconds, another run is an error naming the differing keys (listed as
a failure). A failed run does not stop the sweep: failures are listed at the end and the exit code is 1.
`--dry-run` prints what would run (and which seeds are finished, to be verified) and runs nothing.

`--slurm` submits the same invocations as a SLURM job array through submitit (`pip install submitit`, or the
`slurm` extra of setup.py), waits for them and reports failures the same way (`--no-wait`: print job ids and exit).
`--gpus-per-node G --nodes N`: each run is one SLURM job of N nodes x G GPUs, one task per node starting torchrun
with G processes (NPROC=G NNODES=N; the first node is the rendezvous), i.e. a data-parallel run of N*G processes
(docs/DISTRIBUTED.md); `--dry-run` prints what each node would execute.
`--method trainer --trainer NAME` runs scripts/trainer/main.sh, for any registered trainer (CoOp, CoCoOp, ...;
their modules given with `--import` or the IMPORT variable, passed to train.py's `--import`); `--shots K` becomes
`DATASET.NUM_SHOTS K` and the run folder `<cfg>_<K>shots`.
Environment: DATA, OUTPUT, IMPORT, TRAINER_CONFIGS (as the scripts), SWEEP_SCRIPTS_DIR (default: the repository's
scripts/).
"""
import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tools import runs as runs_mod

REPO = Path(__file__).resolve().parents[1]
SHOTS_METHODS = ("dac", "tipadapter", "tipadapterf", "linearprobe")  # methods whose script takes <shots>
GENERIC = "trainer"  # scripts/trainer/main.sh <TRAINER> <dataset> <cfg>: any registered trainer (--trainer)


@dataclass(frozen=True)
class Job:
    """One script invocation for one seed."""
    method: str
    dataset: str
    cfg: str
    shots: Optional[int]
    seed: int
    opts: Tuple[str, ...]
    script: str
    output: str
    data: Optional[str]
    trainer: str = ""  # --method trainer: the Dassl trainer name
    imports: str = ""  # IMPORT for the script (train.py --import), space-separated; "" = leave the environment's
    nproc: int = 1  # processes (GPUs) per node: data-parallel under torchrun when > 1 (NPROC of the scripts)
    nnodes: int = 1  # nodes of one run (NNODES of the scripts)

    @property
    def trainer_name(self) -> str:
        return self.trainer if self.method == GENERIC else runs_mod.METHOD_TRAINERS[self.method]

    @property
    def seed_dir(self) -> Path:
        if self.method == GENERIC:
            name = runs_mod.run_name(self.cfg, self.shots)
        else:
            name = runs_mod.method_run_name(self.method, self.cfg, self.shots, self.opts)
        return Path(self.output) / self.dataset / self.trainer_name / name / f"seed{self.seed}"

    @property
    def argv(self) -> List[str]:
        if self.method == GENERIC:
            shots = [] if self.shots is None else ["DATASET.NUM_SHOTS", str(self.shots)]
            return ["bash", self.script, self.trainer, self.dataset, self.cfg] + shots + list(self.opts)
        return ["bash", self.script, self.dataset, self.cfg] + ([] if self.shots is None else [str(self.shots)]) \
            + list(self.opts)

    @property
    def env(self) -> dict:
        env = {"SEEDS": str(self.seed), "OUTPUT": self.output}
        if self.data is not None:
            env["DATA"] = self.data
        if self.imports:
            env["IMPORT"] = self.imports
        if self.nproc > 1 or self.nnodes > 1:
            env["NPROC"] = str(self.nproc)
        if self.nnodes > 1:
            env["NNODES"] = str(self.nnodes)
        return env

    def describe(self) -> str:
        shots = "" if self.shots is None else f" {self.shots}-shot"
        method = f"{self.method} {self.trainer}" if self.method == GENERIC else self.method
        return f"{method} {self.dataset} {self.cfg}{shots} seed{self.seed}"

    def command_line(self) -> str:
        return " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items()) + " " + shlex.join(self.argv)


@dataclass
class Report:
    ran: List[Job] = field(default_factory=list)
    skipped: List[Job] = field(default_factory=list)
    failed: List[Tuple[Job, str]] = field(default_factory=list)


def _csv_list(text: str, kind=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of {kind.__name__}") from None


def plan(method: str, datasets: Sequence[str], cfgs: Sequence[str], seeds: Sequence[int],
         shots: Optional[Sequence[int]] = None, opts: Sequence[str] = (), scripts_dir=None, output=None,
         data=None, trainer: str = "", imports: Sequence[str] = ()) -> List[Job]:
    """Every (dataset, cfg, shots, seed) job, in that nesting order."""
    if method not in runs_mod.METHOD_TRAINERS and method != GENERIC:
        raise ValueError(f"unknown method '{method}' (choose from {', '.join(runs_mod.METHOD_TRAINERS)}, {GENERIC})")
    if (method == GENERIC) != bool(trainer):
        raise ValueError(f"--trainer NAME goes with --method {GENERIC}, and only with it")
    if method in SHOTS_METHODS and not shots:
        raise ValueError(f"--shots is required for {method} (e.g. --shots 1,2,4,8,16)")
    if method not in SHOTS_METHODS and method != GENERIC and shots:
        raise ValueError(f"--shots is only for {', '.join(SHOTS_METHODS)} and {GENERIC}, not {method}")
    if len(opts) % 2:
        raise ValueError(f"extra options must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    if method == GENERIC and shots and "DATASET.NUM_SHOTS" in opts[0::2]:
        raise ValueError("give the shots with --shots, not as DATASET.NUM_SHOTS (they name the run folder)")
    scripts_dir = Path(scripts_dir or os.environ.get("SWEEP_SCRIPTS_DIR") or REPO / "scripts")
    script = scripts_dir / method / "main.sh"
    if not script.is_file():
        raise ValueError(f"no script {script} (set --scripts-dir or SWEEP_SCRIPTS_DIR)")
    imports = [os.path.abspath(m) if m.endswith(".py") or os.sep in m else m for m in imports]  # runs cd to REPO
    output = os.path.abspath(output or os.environ.get("OUTPUT") or "./output")
    data = data or os.environ.get("DATA")
    data = os.path.abspath(data) if data else None
    return [Job(method, ds, cfg, k, int(seed), tuple(opts), str(script), output, data, trainer, " ".join(imports))
            for ds in datasets for cfg in cfgs for k in (shots or [None]) for seed in seeds]


def node_env(job: Job, node: int, hostnames: Sequence[str], job_id: str) -> dict:
    """The torchrun rendezvous of a multi-node run, for the node `node` of a SLURM job: every node's script starts
    torchrun with NNODES, NODE_RANK, MASTER_ADDR = the job's first node, MASTER_PORT from the job id."""
    if job.nnodes <= 1:
        return {}
    port = 20000 + int("".join(c for c in str(job_id) if c.isdigit()) or 0) % 20000
    return {"NODE_RANK": str(node), "MASTER_ADDR": str(hostnames[0]), "MASTER_PORT": str(port)}


def run_job(job: Job, extra_env: Optional[dict] = None) -> int:
    """Run one job in the foreground (its output streams through); the exit status, or 1 if no finished run came
    out of a zero exit (checked on the first node only: rank 0 writes the result)."""
    env = dict(os.environ)
    env.update(job.env)
    env.update(extra_env or {})
    rc = subprocess.run(job.argv, cwd=REPO, env=env).returncode
    if env.get("NODE_RANK", "0") != "0":
        return rc
    if rc == 0 and not runs_mod.is_finished(job.seed_dir):
        print(f"{job.describe()}: the script exited 0 but {job.seed_dir} holds no finished run "
              f"({runs_mod.run_status(job.seed_dir).reason})", file=sys.stderr)
        return 1
    return rc


def run_job_or_raise(job: Job) -> str:
    """What a SLURM task runs (one task per node): the job, raising on failure so that submitit reports it."""
    extra = {}
    if job.nnodes > 1:
        import submitit

        env = submitit.JobEnvironment()
        extra = node_env(job, env.node, env.hostnames, env.job_id)
    rc = run_job(job, extra)
    if rc != 0:
        raise RuntimeError(f"{job.describe()} failed with exit status {rc} (see {job.seed_dir}/log.txt*)")
    return str(job.seed_dir)


def split_finished(jobs: Sequence[Job]):
    todo, done = [], []
    for j in jobs:
        (done if runs_mod.is_finished(j.seed_dir) else todo).append(j)
    return todo, done


def verify_finished(done: Sequence[Job], report: Report, dry_run: bool, out=sys.stdout):
    """Finished seeds go through train.py, which skips them only when their stored identity equals the job's."""
    for j in done:
        if dry_run:
            print(f"[finished] {j.describe()}: {j.seed_dir} (train.py checks it is the same run)", file=out)
            continue
        print(f"[verify] {j.describe()}: finished run in {j.seed_dir}", file=out, flush=True)
        try:
            rc = run_job(j)
        except OSError as e:
            rc = -1
            print(e, file=sys.stderr)
        if rc == 0:
            report.skipped.append(j)
        else:
            report.failed.append((j, f"the finished run in {j.seed_dir} is not this run (exit status {rc}, "
                                     f"the error above names the differing keys)"))


def run_local(jobs: Sequence[Job], dry_run: bool = False, out=sys.stdout) -> Report:
    report = Report()
    todo, done = split_finished(jobs)
    verify_finished(done, report, dry_run, out)
    for i, j in enumerate(todo, 1):
        if dry_run:
            print(f"[dry-run] {j.command_line()}", file=out)
            continue
        print(f"[{i}/{len(todo)}] {j.describe()}: {j.command_line()}", file=out, flush=True)
        try:
            rc = run_job(j)
        except OSError as e:
            rc, why = -1, str(e)
        else:
            why = f"exit status {rc}"
        if rc == 0:
            report.ran.append(j)
        else:
            report.failed.append((j, why))
            print(f"[FAILED] {j.describe()}: {why}; continuing", file=out, flush=True)
    return report


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SystemExit("error: --slurm needs submitit: pip install submitit  (or: pip install -e .[slurm])")
    return submitit


def run_slurm(jobs: Sequence[Job], args, out=sys.stdout) -> Report:
    """Submit the unfinished jobs as one job array through submitit (finished seeds are verified here, as in a
    local sweep); wait unless --no-wait."""
    submitit = _submitit()
    report = Report()
    todo, done = split_finished(jobs)
    verify_finished(done, report, args.dry_run, out)
    if not todo:
        return report
    if args.dry_run:
        for j in todo:
            where = (f"{j.nnodes} node(s) x {args.gpus} GPU(s), one task per node; on node k = 0..{j.nnodes - 1}: "
                     f"NODE_RANK=k MASTER_ADDR=<the job's first node> MASTER_PORT=<from the job id> "
                     if j.nnodes > 1 else f"1 node x {args.gpus} GPU(s): ")
            print(f"[dry-run slurm] {where}{j.command_line()}", file=out)
        return report
    executor = submitit.AutoExecutor(folder=args.slurm_log_dir, cluster=args.slurm_cluster)
    params = dict(timeout_min=args.timeout, name=f"sweep-{args.method}", gpus_per_node=args.gpus,
                  nodes=args.nodes, tasks_per_node=1, cpus_per_task=args.cpus,
                  slurm_array_parallelism=args.array_parallelism)
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.slurm_extra:
        params["slurm_additional_parameters"] = dict(kv.split("=", 1) for kv in args.slurm_extra)
    executor.update_parameters(**params)
    submitted = executor.map_array(run_job_or_raise, todo)
    for j, s in zip(todo, submitted):
        print(f"[submitted] {j.describe()}: job {s.job_id}", file=out, flush=True)
    if args.no_wait:
        print(f"submitted {len(submitted)} jobs; logs in {args.slurm_log_dir}; re-run the sweep to resubmit "
              f"failures (finished seeds are skipped)", file=out)
        return report
    for j, s in zip(todo, submitted):
        try:
            s.result()
            report.ran.append(j)
        except Exception as e:  # submitit re-raises the task's error (or a failed-job error)
            msg = str(e).strip().splitlines()
            report.failed.append((j, f"job {s.job_id}: {msg[-1] if msg else type(e).__name__}"))
    return report


def print_report(report: Report, dry_run: bool, out=sys.stdout):
    if dry_run:
        return
    print(f"\nsweep: {len(report.ran)} ran, {len(report.skipped)} skipped (finished, same run), "
          f"{len(report.failed)} failed",
          file=out)
    for j, why in report.failed:
        print(f"  FAILED {j.describe()}: {why} -> {j.seed_dir}", file=out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, opts = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=sorted(runs_mod.METHOD_TRAINERS) + [GENERIC])
    p.add_argument("--trainer", default="", help=f"with --method {GENERIC}: the registered Dassl trainer to run "
                                                 "(e.g. CoOp)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="passed to train.py --import (through IMPORT), e.g. a CoOp checkout's train.py; repeatable")
    p.add_argument("--datasets", required=True, type=_csv_list, help="comma-separated, e.g. cub,dtd")
    p.add_argument("--cfgs", required=True, type=_csv_list, help="comma-separated backbone cfgs, e.g. vit_b16,rn50")
    p.add_argument("--shots", type=lambda t: _csv_list(t, int), default=None,
                   help=f"{', '.join(SHOTS_METHODS)} and {GENERIC} only: e.g. 1,2,4,8,16")
    p.add_argument("--seeds", type=lambda t: _csv_list(t, int), default=[1, 2, 3], help="default 1,2,3")
    p.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    p.add_argument("--scripts-dir", default=None, help="folder with <method>/main.sh (default: env "
                                                       "SWEEP_SCRIPTS_DIR, else the repository's scripts/)")
    p.add_argument("--output", default=None, help="output tree (default: env OUTPUT, else ./output)")
    p.add_argument("--data", default=None, help="dataset root (default: env DATA, else the scripts' default)")
    g = p.add_argument_group("SLURM (through submitit)")
    g.add_argument("--slurm", action="store_true", help="submit to SLURM instead of running here")
    g.add_argument("--partition", default=None)
    g.add_argument("--timeout", type=int, default=240, help="minutes per run (default 240)")
    g.add_argument("--gpus-per-node", "--gpus", dest="gpus", type=int, default=1,
                   help="GPUs per node of a run (default 1); > 1: one torchrun process per GPU, data-parallel")
    g.add_argument("--nodes", type=int, default=1, help="nodes per run (default 1); > 1: torchrun across nodes")
    g.add_argument("--cpus", type=int, default=8, help="CPUs per run (default 8)")
    g.add_argument("--mem-gb", type=int, default=None)
    g.add_argument("--array-parallelism", type=int, default=32, help="max runs at once (default 32)")
    g.add_argument("--slurm-extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra sbatch options, e.g. account=abc qos=normal")
    g.add_argument("--slurm-log-dir", default="slurm_logs/%j", help="submitit folder (default slurm_logs/%%j)")
    g.add_argument("--slurm-cluster", default=None, choices=["slurm", "local", "debug"],
                   help="submitit cluster (default: auto-detect; 'local'/'debug' run here, for testing)")
    g.add_argument("--no-wait", action="store_true", help="submit and exit without waiting for the results")
    args = p.parse_args(argv)
    args.opts = opts
    try:
        if args.gpus < 1 or args.nodes < 1:
            raise ValueError(f"--gpus-per-node and --nodes must be >= 1, got {args.gpus} and {args.nodes}")
        if (args.gpus > 1 or args.nodes > 1) and not args.slurm:
            raise ValueError("--gpus-per-node / --nodes are for --slurm; on this machine run with NPROC=<GPUs> in "
                             "the environment (the scripts then start torchrun)")
        jobs = plan(args.method, args.datasets, args.cfgs, args.seeds, args.shots, opts, args.scripts_dir,
                    args.output, args.data, args.trainer, args.imports)
        if args.slurm:
            jobs = [replace(j, nproc=args.gpus, nnodes=args.nodes) for j in jobs]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = run_slurm(jobs, args) if args.slurm else run_local(jobs, args.dry_run)
    print_report(report, args.dry_run)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
