"""Aggregate an output tree: mean ± std over seeds per (dataset, trainer, run), then a leaderboard.

    python -m tools.results --output ./output
    python -m tools.results --output ./output --seeds 1 2 3 --format latex --plot results.png
    python -m tools.results --output ./output --format csv --baselines baselines/tables/ua_vitb32_dpa.csv
    python -m tools.results --output ./output --std population     # the std CoOp's parse_test_res.py prints

Which folders hold a finished run, and their accuracy, is decided by tools/runs.py (one place; the newest log with a
final CoOp result block, re-run logs `log.txt-<timestamp>` included); run folders are found at any depth (CoOp's
layouts included, tools/runs.py). Unfinished seed folders are listed and not counted. `std` is the SAMPLE standard
deviation over seeds by default (ddof=1, numpy.std(..., ddof=1)); `--std population` gives the population one
(ddof=0, numpy.std's default, what CoOp's parse_test_res.py prints); the tables say which. With a single finished
seed no ± is shown. Expected seeds are `--seeds` (default 1 2 3, DESIGN.md "Evaluation protocol"); expected seeds
without a finished run are named as missing. With `--seeds`, only those seeds are counted; without it, every
finished seed found counts. A run folder without a seed level (CoOp's zero-shot layout) is one run, always counted.
"""
import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tools import runs as runs_mod

DEFAULT_SEEDS = (1, 2, 3)
STD_DDOF = {"sample": 1, "population": 0}  # --std: the divisor n - ddof


@dataclass
class RunSummary:
    """One (dataset, trainer, run): per-seed accuracies of finished runs and the seeds that are not there."""
    dataset: str
    trainer: str
    cfg: str
    shots: Optional[int]
    run_name: str = ""
    accuracies: Dict[Optional[int], float] = field(default_factory=dict)  # seed (None: no seed level) -> accuracy
    missing: List[int] = field(default_factory=list)  # expected seeds without a finished run
    unfinished: List[Tuple[Optional[int], str]] = field(default_factory=list)  # (seed, reason) of unfinished folders
    std_kind: str = "sample"  # sample (ddof=1) | population (ddof=0)
    backbones: Dict[Tuple[str, str], int] = field(default_factory=dict)  # (name, sha256) loaded -> finished seeds
    variants: Dict[str, int] = field(default_factory=dict)  # recorded variant (tools.runs.recorded_variant) -> seeds

    def __post_init__(self):
        if not self.run_name:
            self.run_name = runs_mod.run_name(self.cfg, self.shots)
        if self.std_kind not in STD_DDOF:
            raise ValueError(f"unknown std '{self.std_kind}' (choose from {', '.join(STD_DDOF)})")

    @property
    def key(self):
        return (self.dataset, self.trainer, self.run_name)

    @property
    def origin(self) -> str:
        return runs_mod.origin(self.trainer)

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> Optional[float]:
        vals = list(self.accuracies.values())
        return sum(vals) / len(vals) if vals else None

    @property
    def std(self) -> Optional[float]:
        """Sample (ddof=1) or population (ddof=0) standard deviation, per `std_kind`; None with fewer than two
        seeds."""
        vals = list(self.accuracies.values())
        if len(vals) < 2:
            return None
        m = sum(vals) / len(vals)
        return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - STD_DDOF[self.std_kind]))

    @property
    def backbone(self) -> Tuple[str, str]:
        """(name, sha256) the finished seeds loaded; names joined with ' | ' if seeds disagree; ("", "") unknown."""
        known = [b for b in self.backbones if b[0]]
        if not known:
            return "", ""
        if len(known) == 1:
            return known[0]
        return " | ".join(sorted({b[0] for b in known})), ""

    @property
    def variant(self) -> str:
        """What the finished seeds recorded they computed with (tools.runs.recorded_variant), e.g. `prompts clip,
        recipe official`; seeds that disagree are all named; "" when none records anything."""
        return " | ".join(sorted(v for v in self.variants if v))

    @property
    def label(self) -> str:
        """The run name with its variant, e.g. `vit_b16 [prompts clip, recipe official]`."""
        return f"{self.run_name} [{self.variant}]" if self.variant else self.run_name


def _seed_order(seed):
    return (seed is not None, seed or 0)


def aggregate(runs: Sequence["runs_mod.Run"], seeds: Optional[Sequence[int]] = None,
              std: str = "sample") -> List[RunSummary]:
    """Group run folders (tools.runs.scan) by (dataset, trainer, run).

    `seeds`: the expected seeds; when given, seed folders outside it are ignored. Missing = expected seeds with no
    finished run (whether their folder is absent or unfinished); a run without seed levels has none missing."""
    restrict = seeds is not None
    expected = sorted(set(int(s) for s in (seeds if restrict else DEFAULT_SEEDS)))
    groups: Dict[tuple, RunSummary] = {}
    for r in runs:
        if restrict and r.seed is not None and r.seed not in expected:
            continue
        s = groups.setdefault(r.key, RunSummary(r.dataset, r.trainer, r.cfg, r.shots, r.run_name, std_kind=std))
        if r.status.finished:
            s.accuracies[r.seed] = r.status.accuracy
            b = (r.backbone, r.backbone_sha256)
            s.backbones[b] = s.backbones.get(b, 0) + 1
            s.variants[r.variant] = s.variants.get(r.variant, 0) + 1
        else:
            s.unfinished.append((r.seed, r.status.reason))
    for s in groups.values():
        s.accuracies = dict(sorted(s.accuracies.items(), key=lambda kv: _seed_order(kv[0])))
        s.unfinished.sort(key=lambda u: (_seed_order(u[0]), u[1]))
        seedless = None in s.accuracies or any(seed is None for seed, _ in s.unfinished)
        s.missing = [] if seedless else [x for x in expected if x not in s.accuracies]
    return sorted(groups.values(), key=lambda s: (s.dataset, s.trainer, s.run_name))


def backbone_label(name: str, sha256: str = "") -> str:
    """How the tables show a loaded backbone: its name (a checkpoint path by its file name) and, when known, the
    first 8 hex digits of its sha256."""
    if not name:
        return ""
    if name.startswith("open_clip:"):  # open_clip:<arch>:<tag or weights file>; its identity open_clip:<arch>:<sha256>
        arch, _, weights = name[len("open_clip:"):].partition(":")
        shown = f"open_clip:{arch}:{Path(weights).name if '/' in weights else weights}"
    else:
        shown = Path(name).name if ("/" in name and Path(name).suffix) else name
    sha256 = (sha256 or "").rsplit(":", 1)[-1]
    return f"{shown} sha256:{sha256[:8]}" if sha256 else shown


def _seed_label(seed) -> str:
    return "no seed" if seed is None else f"seed{seed}"


def format_mean_std(mean: Optional[float], std: Optional[float], digits: int = 2) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_rows(summaries: Sequence[RunSummary]):
    """Header and rows of the per-run table (every format)."""
    kind = summaries[0].std_kind if summaries else "sample"
    header = ["dataset", "trainer", "origin", "run", "backbone", "shots", f"accuracy (mean ± {kind} std)",
              "n seeds", "per seed", "missing seeds", "unfinished"]
    rows = []
    for s in summaries:
        rows.append([s.dataset, s.trainer, s.origin, s.label, backbone_label(*s.backbone),
                     "" if s.shots is None else s.shots, format_mean_std(s.mean, s.std), s.n,
                     " ".join(f"{'-' if k is None else k}:{v:.2f}" for k, v in s.accuracies.items()),
                     " ".join(str(x) for x in s.missing),
                     "; ".join(f"{_seed_label(k)} ({why})" for k, why in s.unfinished)])
    return header, rows


def plot(summaries: Sequence[RunSummary], path) -> Path:
    """PNG: per-dataset accuracy bars, one bar per method (trainer + run, labelled with the backbone its runs
    loaded and what they recorded computing with), error bars = the std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [s for s in summaries if s.n > 0]
    if not done:
        raise ValueError("nothing to plot: no finished run")
    datasets = sorted({s.dataset for s in done})
    methods = sorted({(s.trainer, s.run_name) for s in done})
    by_key = {(s.dataset, s.trainer, s.run_name): s for s in done}
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(datasets) * max(1, len(methods)) ** 0.5 + 2), 4))
    for j, (trainer, run) in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, ds in enumerate(datasets):
            s = by_key.get((ds, trainer, run))
            if s is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(s.mean)
            errs.append(s.std or 0.0)
        first = next(by_key[(ds, trainer, run)] for ds in datasets if (ds, trainer, run) in by_key)
        backbone = backbone_label(*first.backbone) or "backbone unknown"
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=f"{trainer} {first.label}; {backbone}")
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, rotation=30, ha="right")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"mean over seeds, error bars: {done[0].std_kind} std")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    from tools import leaderboard

    p = argparse.ArgumentParser(prog="python -m tools.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="./output", help="output tree (default ./output)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="expected seeds (default 1 2 3; when given, only these seeds are counted)")
    p.add_argument("--format", choices=leaderboard.FORMATS, default="markdown")
    p.add_argument("--baselines", nargs="+", default=None, metavar="CSV",
                   help=f"published-baseline CSVs (default: every {leaderboard.DEFAULT_TABLES}/*.csv)")
    p.add_argument("--no-baselines", action="store_true", help="our rows only")
    p.add_argument("--protocols", nargs="+", default=None, metavar="CODE",
                   help="only published rows of these protocols (codes: baselines/protocols.csv)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a per-dataset bar plot with error bars")
    p.add_argument("--std", choices=sorted(STD_DDOF), default="sample",
                   help="std over seeds: sample (ddof=1, default) or population (ddof=0, as CoOp's "
                        "parse_test_res.py prints)")
    args = p.parse_args(argv)

    try:
        found = runs_mod.scan(args.output)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summaries = aggregate(found, args.seeds, std=args.std)
    if not summaries:
        print(f"error: no run folders (<dataset>/<TRAINER>/<run>/seed<S>/, or a folder with a log.txt) under "
              f"{args.output}", file=sys.stderr)
        return 2
    try:
        baselines = [] if args.no_baselines else leaderboard.load_baselines(args.baselines)
    except leaderboard.BaselineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # CSV and LaTeX: stdout holds the leaderboard only (one table); the per-run summary goes to stderr
    info = sys.stdout if args.format == "markdown" else sys.stderr
    header, rows = summary_rows(summaries)
    print(leaderboard.render_plain_table(header, rows, "markdown", title="Runs"), file=info)
    unfinished = [(s, seed, why) for s in summaries for seed, why in s.unfinished]
    if unfinished:
        print("\nUnfinished runs (not counted):", file=info)
        for s, seed, why in unfinished:
            where = f"{s.dataset}/{s.trainer}/{s.run_name}" + ("" if seed is None else f"/seed{seed}")
            print(f"- {where}: {why}", file=info)
    board = leaderboard.build(summaries, baselines, args.protocols)
    print(file=info)
    print(leaderboard.render(board, args.format, protocols=leaderboard.load_protocols()))
    if args.plot:
        try:
            out = plot(summaries, args.plot)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"\nplot written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
