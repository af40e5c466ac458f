"""Finished-run detection and the output tree, in ONE place (scripts/common.sh, tools.sweep and tools.results use it).

Output layout (DESIGN.md, "Layout"): ``$OUTPUT/<dataset>/<TRAINER>/<cfg>[_<K>shots]/seed<S>/`` holding ``log.txt``
and, after a re-run or resume, ``log.txt-<YYYY-mm-dd-HH-MM-SS>`` (Dassl's logger never overwrites an existing
log.txt; it opens a new file with a timestamp suffix). `scan` also finds run folders at any depth (CoOp's
``<dataset>/<TRAINER>/<cfg>_<K>shots/nctx16_cscFalse_ctpend/seed<S>/``, its zero-shot ``<TRAINER>/<cfg>/<dataset>/``
without a seed level): the levels below the trainer are folded into the run name, and where the path does not start
with ``<dataset>/<TRAINER>/`` the log's own ``** Arguments **`` dump (``trainer:``, ``dataset_config_file:``) says
which level is which.

A run is FINISHED when its newest log that holds a result block (CoOp's log lines ``=> result`` then
``* accuracy: X%``) is either a training run whose result comes after ``Finish training``, or an eval-only run
(``eval_only: True`` in the ``** Arguments **`` dump that train.py writes to the log); a folder that records its run
(``run.json``, written at the run's start) is finished only once its ``results.json`` is written too. Its accuracy is
the LAST ``* accuracy`` printed after the LAST ``=> result`` of that log (earlier result blocks can be validation
results). A log holding train.py's ``ERROR: <message>`` line is reported as ``failed: <message>``. Whether a finished
folder holds the run a command asks for (same config and backbone) is decided by train.py (docs/RUNS.md).

Command line (exit code 0 = finished, 1 = not finished; used by scripts/common.sh):

    python -m tools.runs is-finished output/cub/FAIR/vit_b16/seed1
    python -m tools.runs result output/cub/FAIR/vit_b16/seed1      # prints the accuracy, exit 1 if unfinished
    python -m tools.runs list output                                # every run folder, its trainer, its state
"""
import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

LOG_NAME = "log.txt"
FINISH_LINE = "Finish training"
RESULT_LINE = "=> result"
EVAL_ONLY_LINE = "eval_only: True"
ERROR_PREFIX = "ERROR: "  # train.py writes the message of a run that stopped on an error into its log
RUN_FILE = "run.json"  # the run's identity (clip_adapt.checkpoint.RUN_FILE), written at its start
RESULTS_FILE = "results.json"  # written after the final test
ACCURACY_RE = re.compile(r"^\* accuracy: ([-+]?\d+(?:\.\d+)?)%\s*$")
SEED_DIR_RE = re.compile(r"^seed(\d+)$")
SHOTS_RE = re.compile(r"^(?P<cfg>.+)_(?P<shots>\d+)shots$")
# run-name suffixes that mark a different adaptation protocol (scripts/fair/main.sh, scripts/reclip/main.sh): they
# stay part of the run's cfg (the two protocols never mix) and are stripped only to find the zero-shot reference
VARIANT_SUFFIXES = ("_transductive", "_inductive", "_templatedesc")
# the script name of each method and the Dassl trainer it runs (scripts/<method>/main.sh)
METHOD_TRAINERS = {"zsclip": "ZSCLIP", "fair": "FAIR", "reclip": "ReCLIP", "dac": "DAC"}
# baselines run in the same harness (docs/BASELINES.md): also this project's trainers, labelled `ours`
METHOD_TRAINERS.update({"tipadapter": "TipAdapter", "tipadapterf": "TipAdapterF", "linearprobe": "LinearProbe",
                        "selftraining": "SelfTraining", "dpa": "DPA"})
TRANSDUCTIVE_METHODS = ("fair", "selftraining", "dpa")  # `DATASET.ADAPT_SPLIT test` -> run name <cfg>_transductive
ZERO_SHOT_TRAINER = "ZSCLIP"
OURS = "ours"  # the origin label of this project's trainers; any other trainer is labelled by its own name
# zero-shot references for the Δ column, in order of preference: ours, then CoOp's (CoOp trainers/zsclip.py:
# ZeroshotCLIP = one hand-made template per dataset, ZeroshotCLIP2 = prompt ensemble)
ZERO_SHOT_TRAINERS = (ZERO_SHOT_TRAINER, "ZeroshotCLIP", "ZeroshotCLIP2")
RESULTS_JSON = "results.json"  # written by clip_adapt/engine/base.py beside log.txt
SHOTS_LEVEL_RE = re.compile(r"^shots_(\d+)$")  # CoCoOp's base-to-new layout: <dataset>/shots_<K>/<TRAINER>/<cfg>


@dataclass(frozen=True)
class LogResult:
    """What one log file says: the final accuracy (None when there is no result block) and whether it counts."""
    path: Path
    accuracy: Optional[float]
    finished: bool
    eval_only: bool
    reason: str  # why it is not finished ("" when finished)


@dataclass(frozen=True)
class RunStatus:
    """One seed folder: finished (accuracy from `log`) or not (`reason` says why)."""
    seed_dir: Path
    accuracy: Optional[float]
    log: Optional[Path]
    reason: str

    @property
    def finished(self) -> bool:
        return self.accuracy is not None


@dataclass(frozen=True)
class Run:
    """A run folder located in the output tree, with its status and what it loaded."""
    dataset: str
    trainer: str
    run_name: str  # the levels between trainer and seed, joined by "/": vit_b16, rn50_16shots/nctx16_cscFalse_ctpend
    cfg: str  # the cfg of the level that names it (shots split off)
    shots: Optional[int]
    seed: Optional[int]  # None: a run folder without a seed level (CoOp's zero-shot layout)
    status: RunStatus
    backbone: str = ""  # MODEL.BACKBONE.NAME the run loaded (results.json, else the log's config dump); "" unknown
    backbone_sha256: str = ""  # sha256 of the loaded checkpoint (results.json of our trainers); "" unknown
    variant: str = ""  # what results.json records the run computed with (prompts, recipe, descriptions); "" none

    @property
    def key(self):
        return (self.dataset, self.trainer, self.run_name)

    @property
    def origin(self) -> str:
        return origin(self.trainer)


def origin(trainer: str) -> str:
    """`ours` for this project's trainers (METHOD_TRAINERS: FAIR, ReCLIP, DAC, ZSCLIP and the baselines run in the same
    harness, docs/BASELINES.md), else the trainer's own name."""
    return OURS if trainer in METHOD_TRAINERS.values() else trainer


def run_name(cfg: str, shots: Optional[int] = None) -> str:
    """`<cfg>` or `<cfg>_<K>shots` (the scripts contract)."""
    return cfg if shots is None else f"{cfg}_{int(shots)}shots"


def split_run_name(name: str):
    """Inverse of `run_name`: 'vit_b16_16shots' -> ('vit_b16', 16); 'vit_b16' -> ('vit_b16', None)."""
    m = SHOTS_RE.match(name)
    return (m.group("cfg"), int(m.group("shots"))) if m else (name, None)


def base_cfg(cfg: str) -> str:
    """The backbone config a run name starts from: 'vit_b16_transductive' -> 'vit_b16' (shots already split off);
    DAC's OOD runs (scripts/dac/ood.sh) 'rn50_from_imagenet' -> 'rn50'."""
    if "_from_" in cfg and not cfg.startswith("_from_"):
        return cfg.split("_from_", 1)[0]
    stripped = True
    while stripped:  # FAIR's suffixes combine: 'vit_b16_transductive_templatedesc' -> 'vit_b16'
        stripped = False
        for suffix in VARIANT_SUFFIXES:
            if cfg.endswith(suffix) and len(cfg) > len(suffix):
                cfg, stripped = cfg[: -len(suffix)], True
    return cfg


def method_run_name(method: str, cfg: str, shots: Optional[int] = None, opts=()) -> str:
    """The run folder name scripts/<method>/main.sh writes to, given its extra KEY VALUE opts (mirrors the scripts):
    FAIR with `DATASET.ADAPT_SPLIT test` -> `<cfg>_transductive`, with `TRAINER.FAIR.DESCRIPTIONS_FALLBACK template`
    -> `<cfg>[_transductive]_templatedesc`; ReCLIP with `DATASET.ADAPT_SPLIT train` -> `<cfg>_inductive`; DAC ->
    `<cfg>_<K>shots`."""
    opts = list(opts)
    pairs = dict(zip(opts[0::2], opts[1::2]))
    split = pairs.get("DATASET.ADAPT_SPLIT")
    if method in TRANSDUCTIVE_METHODS:
        if split == "test":
            cfg = cfg + "_transductive"
        if method == "fair" and pairs.get("TRAINER.FAIR.DESCRIPTIONS_FALLBACK") == "template":
            cfg = cfg + "_templatedesc"
    elif method == "reclip" and split == "train":
        cfg = cfg + "_inductive"
    return run_name(cfg, shots)


def seed_dir(output, dataset: str, trainer: str, cfg: str, shots: Optional[int], seed: int) -> Path:
    return Path(output) / dataset / trainer / run_name(cfg, shots) / f"seed{int(seed)}"


def log_files(seed_dir) -> List[Path]:
    """Logs of a seed folder, oldest first: log.txt, then log.txt-<timestamp> in timestamp order.

    Dassl names a new log `log.txt-%Y-%m-%d-%H-%M-%S` only when log.txt already exists, so log.txt is the oldest
    and the suffixes sort chronologically as strings.
    """
    d = Path(seed_dir)
    if not d.is_dir():
        return []
    first = [d / LOG_NAME] if (d / LOG_NAME).is_file() else []
    later = sorted(p for p in d.glob(LOG_NAME + "-*") if p.is_file())
    return first + later


def parse_log(path) -> LogResult:
    """Read one log (see the module docstring for the rule)."""
    path = Path(path)
    finish_at = -1
    last_result_at = -1
    accuracy = None
    eval_only = False
    error = None
    with open(path, "r", errors="replace") as f:
        for i, raw in enumerate(f):
            line = raw.strip()
            if line.startswith(ERROR_PREFIX):
                error = line[len(ERROR_PREFIX):]
            elif line == FINISH_LINE:
                finish_at = i
            elif line == RESULT_LINE:
                last_result_at = i
                accuracy = None  # only an accuracy printed after the last result block counts
            elif line == EVAL_ONLY_LINE:
                eval_only = True
            elif last_result_at >= 0:
                m = ACCURACY_RE.match(line)
                if m:
                    accuracy = float(m.group(1))
    if error is not None:
        return LogResult(path, None, False, eval_only, f"failed: {error}")
    if last_result_at < 0:
        return LogResult(path, None, False, eval_only, "no '=> result' line (still running, crashed or killed)")
    if accuracy is None:
        return LogResult(path, None, False, eval_only, "'=> result' without a '* accuracy: X%' line after it")
    if eval_only:
        return LogResult(path, accuracy, True, True, "")
    if finish_at < 0 or finish_at > last_result_at:
        return LogResult(path, accuracy, False, False,
                         "result is not after 'Finish training' (a validation result of an unfinished run)")
    return LogResult(path, accuracy, True, False, "")


def run_status(seed_dir) -> RunStatus:
    """The accuracy of the newest log that holds a final result, or the reason the run is not finished."""
    logs = log_files(seed_dir)
    if not logs:
        reason = "no seed folder" if not Path(seed_dir).is_dir() else "no log.txt"
        return RunStatus(Path(seed_dir), None, None, reason)
    newest_reason = None
    for log in reversed(logs):
        res = parse_log(log)
        if res.finished and not result_missing(seed_dir):
            return RunStatus(Path(seed_dir), res.accuracy, log, "")
        if res.finished:
            res = LogResult(log, None, False, res.eval_only, f"{RESULTS_FILE} missing (stopped before writing it)")
        if newest_reason is None:
            newest_reason = f"{log.name}: {res.reason}"
    return RunStatus(Path(seed_dir), None, logs[-1], newest_reason)


def result_missing(seed_dir) -> bool:
    """A run that records its identity (run.json, written at its start) is finished only once its results.json
    is written (after the final test); a log's result lines alone do not make it finished."""
    d = Path(seed_dir)
    return (d / RUN_FILE).is_file() and not (d / RESULTS_FILE).is_file()


def is_finished(seed_dir) -> bool:
    """True when the seed folder holds a finished run (the check scripts/common.sh and tools.sweep use)."""
    return run_status(seed_dir).finished


def scan(output) -> List[Run]:
    """Every run folder under `output` (find_run_dirs), identified by `identify_run`, sorted by folder."""
    root = Path(output)
    if not root.is_dir():
        raise FileNotFoundError(f"output folder {root} does not exist")
    runs = []
    for d in find_run_dirs(root):
        run = identify_run(root, d)
        if run is not None:
            runs.append(run)
    return runs


def find_run_dirs(root) -> List[Path]:
    """Folders under `root` that hold one run: a `seed<S>` folder, or any folder with a log.txt / log.txt-<time>
    (CoOp's zero-shot script writes no seed level). A run folder's own subfolders (checkpoints) are not searched."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        has_log = any(f == LOG_NAME or f.startswith(LOG_NAME + "-") for f in filenames)
        if d != root and (SEED_DIR_RE.match(d.name) or has_log):
            found.append(d)
            dirnames[:] = []
        else:
            dirnames.sort()
    return sorted(found)


@dataclass(frozen=True)
class LogInfo:
    """What a log's `** Arguments **` and `** Config **` dumps (printed by train.py, ours and CoOp's) say."""
    trainer: str = ""  # `trainer:` argument, else TRAINER.NAME
    dataset: str = ""  # stem of `dataset_config_file:` (configs/datasets/<dataset>.yaml), the folder name scripts use
    dataset_name: str = ""  # DATASET.NAME (the Dassl class, e.g. DescribableTextures)
    backbone: str = ""  # MODEL.BACKBONE.NAME
    seed: Optional[int] = None  # `seed:` argument


CONFIG_BANNER = "** Config **"
ARGS_BANNER = "** Arguments **"
CONFIG_END = "Collecting env info"  # the line both train.py print right after the config dump


def log_info(path) -> LogInfo:
    """Read the argument and config dumps at the top of one log (yacs prints nested keys indented by two spaces)."""
    args, cfg = {}, {}
    section, stack = None, []
    with open(path, "r", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            text = line.strip()
            if text == ARGS_BANNER:
                section = "args"
                continue
            if text == CONFIG_BANNER:
                section, stack = "cfg", []
                continue
            if text.startswith(CONFIG_END) or text.startswith("=> result"):
                break
            if section is None or not text or text.startswith("*"):
                continue
            key, sep, value = text.partition(":")
            if not sep:
                continue
            if section == "args":
                args[key.strip()] = value.strip()
                continue
            depth = (len(line) - len(line.lstrip(" "))) // 2
            stack = stack[:depth]
            if value.strip() == "":
                stack.append(key.strip())
            else:
                cfg[".".join(stack + [key.strip()])] = value.strip()
    seed = args.get("seed")
    try:
        seed = int(seed) if seed is not None else None
    except ValueError:
        seed = None
    ds_file = args.get("dataset_config_file", "")
    return LogInfo(trainer=args.get("trainer") or cfg.get("TRAINER.NAME", ""),
                   dataset=Path(ds_file).stem if ds_file else "", dataset_name=cfg.get("DATASET.NAME", ""),
                   backbone=cfg.get("MODEL.BACKBONE.NAME", ""), seed=seed)


def _results_json(run_dir) -> dict:
    res = Path(run_dir) / RESULTS_JSON
    try:
        data = json.loads(res.read_text()) if res.is_file() else {}
    except (OSError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def recorded_variant(run_dir) -> str:
    """What a run's results.json says it computed with, for the tables: the prompt template set (`templates`),
    ReCLIP's `recipe` and FAIR's template-sentence descriptions; "" when it records none of them."""
    data = _results_json(run_dir)
    parts = []
    if data.get("templates"):
        parts.append(f"prompts {data['templates']}")
    if data.get("recipe"):
        parts.append(f"recipe {data['recipe']}")
    if data.get("descriptions") == "template":
        parts.append("template descriptions")
    return ", ".join(parts)


def loaded_backbone(run_dir, log: Optional[Path]):
    """(name, sha256) of the CLIP a run loaded: results.json (our trainers write both), else the config dump of its
    log (name only); ("", "") when neither says."""
    data = _results_json(run_dir)
    if data.get("backbone"):
        return str(data["backbone"]), str(data.get("backbone_sha256") or "")
    if log is not None:
        return log_info(log).backbone, ""
    return "", ""


def _cfg_level(levels: Sequence[str]):
    """(cfg, shots) from the levels below the trainer: the first `<cfg>_<K>shots` level, else the first level (its
    shots from a `shots_<K>` level, CoCoOp's layout)."""
    for lvl in levels:
        cfg, shots = split_run_name(lvl)
        if shots is not None:
            return cfg, shots
    shots = next((int(m.group(1)) for m in map(SHOTS_LEVEL_RE.match, levels) if m), None)
    return levels[0], shots


def identify_run(root, run_dir) -> Optional[Run]:
    """Dataset, trainer, run name and seed of one run folder. Our layout (and CoOp's main.sh layout) starts
    `<dataset>/<TRAINER>/`: used whenever the log does not name another trainer or dataset (config file stem).
    Otherwise the trainer level is the
    one equal to the log's `trainer:` and the dataset level the one equal to its dataset config file's stem
    (DATASET.NAME when no level is). None when neither the path nor the log identify it."""
    root, run_dir = Path(root), Path(run_dir)
    levels = list(run_dir.relative_to(root).parts)
    m = SEED_DIR_RE.match(levels[-1])
    seed = int(m.group(1)) if m else None
    if m:
        levels = levels[:-1]
    status = run_status(run_dir)
    logs = log_files(run_dir)
    log = status.log or (logs[-1] if logs else None)
    info = log_info(log) if log is not None else LogInfo()
    if len(levels) >= 3 and (not info.trainer or levels[1] == info.trainer) \
            and (not info.dataset or levels[0] == info.dataset):
        dataset, trainer, rest = levels[0], levels[1], levels[2:]
    elif info.trainer and info.trainer in levels:
        trainer = info.trainer
        rest = [lvl for lvl in levels if lvl != trainer]
        if info.dataset and info.dataset in rest:
            dataset = info.dataset
            rest.remove(dataset)
        else:
            dataset = info.dataset or info.dataset_name
        if not dataset or not rest:
            return None
    else:
        return None
    if seed is None and m is None and info.seed is not None and info.seed >= 0:
        seed = info.seed
    cfg, shots = _cfg_level(rest)
    name, sha = loaded_backbone(run_dir, log)
    return Run(dataset, trainer, "/".join(rest), cfg, shots, seed, status, name, sha, recorded_variant(run_dir))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("is-finished", "exit 0 if the seed folder holds a finished run, else 1"),
                        ("result", "print the final accuracy of a seed folder (exit 1 if unfinished)")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("seed_dir")
    sp = sub.add_parser("list", help="list every run folder of an output tree, its trainer and its status")
    sp.add_argument("output")
    args = p.parse_args(argv)
    if args.cmd == "is-finished":
        return 0 if is_finished(args.seed_dir) else 1
    if args.cmd == "result":
        st = run_status(args.seed_dir)
        if not st.finished:
            print(f"{args.seed_dir}: not finished ({st.reason})", file=sys.stderr)
            return 1
        print(f"{st.accuracy:g}")
        return 0
    try:
        runs = scan(args.output)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in runs:
        st = r.status
        state = f"{st.accuracy:g}" if st.finished else f"unfinished ({st.reason})"
        print(f"{os.path.relpath(st.seed_dir, args.output)}\t{r.trainer} ({r.origin})\t{state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
