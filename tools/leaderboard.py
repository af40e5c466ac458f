"""Leaderboard: our rows (mean ± std over seeds) next to published rows from baselines/, rendered with tabulate.

Rules (baselines/README.md, DESIGN.md "Evaluation protocol"):
- every row carries its protocol: local runs of this project's trainers have protocol `ours` (source
  `this project`), local runs of any other trainer (CoOp, CoCoOp, ...) its trainer name (source `local run`);
  published rows their file's code. The best value of a column is marked only among rows of the SAME protocol and
  backbone — bold in markdown and LaTeX, a trailing `*` on the value in CSV — and only where that group has at least
  two values;
- a local row's backbone is what its runs loaded (results.json's `backbone`/`backbone_sha256`, else the log's
  config dump `MODEL.BACKBONE.NAME`), never the cfg file's name; the run (cfg) is its own column;
- rows are grouped: local rows first (zero-shot rows first), then published rows by protocol and backbone;
- Δ (local rows only) = the row's mean − the mean of a local zero-shot row (ZSCLIP, else CoOp's ZeroshotCLIP, then
  ZeroshotCLIP2, tools.runs.ZERO_SHOT_TRAINERS) that loaded the same backbone, on the same dataset; among several,
  the one whose cfg is the row's cfg without its transductive/inductive suffix (tools.runs.base_cfg), then one of
  the same origin (our rows: ZSCLIP; CoOp's rows: ZeroshotCLIP, ZeroshotCLIP2), then that order. When a
  backbone is unknown (a log without a config dump), the cfg alone decides. The notes say which row each Δ uses.
  Published rows get no Δ: it would cross protocols;
- columns are the datasets of our runs; published rows without any of them are left out; `Avg.` is the mean over
  the shown columns, only for rows that have all of them (a paper's own `average` column is never shown).
"""
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from tools.runs import OURS, ZERO_SHOT_TRAINERS, base_cfg

REPO = Path(__file__).resolve().parents[1]
BASELINES_DIR = REPO / "baselines"
DEFAULT_TABLES = BASELINES_DIR / "tables"
PROTOCOLS_FILE = BASELINES_DIR / "protocols.csv"
FORMATS = ("markdown", "latex", "csv")
OUR_SOURCE = "this project"
LOCAL_SOURCE = "local run"
LEAD_COLUMNS = ("method", "protocol", "backbone", "source")
SHOTS_COL_RE = re.compile(r"^shots_(\d+)$")
CSV_BEST_MARKER = "*"


class BaselineError(ValueError):
    """A malformed baselines file; the message names the file and line."""


@dataclass
class Row:
    method: str
    protocol: str
    backbone: str
    source: str
    shots: Optional[int] = None
    values: Dict[str, float] = field(default_factory=dict)  # dataset -> accuracy (mean for local rows)
    stds: Dict[str, Optional[float]] = field(default_factory=dict)
    ns: Dict[str, int] = field(default_factory=dict)
    deltas: Dict[str, float] = field(default_factory=dict)
    run: str = ""  # local rows: the run name (cfg and folded levels); published rows: ""
    variant: str = ""  # local rows: what results.json records the runs computed with (prompts, recipe, ...)
    local: bool = False  # a row of runs found under --output (ours or another trainer's)
    backbone_sha256: str = ""  # local rows: the loaded checkpoint's sha256 when known
    cfg: str = ""  # local rows: the cfg (shots split off), for the Δ reference
    delta_ref: Dict[str, "Row"] = field(default_factory=dict)  # dataset -> the zero-shot row its Δ is against

    @property
    def ours(self) -> bool:
        return self.protocol == OURS


@dataclass
class Board:
    datasets: List[str]
    rows: List[Row]
    best: Dict[Tuple[int, str], bool]  # (row index, column) -> best of its protocol
    std_kind: str = "sample"  # what the ± of local rows is (tools.results --std)


def _number(text: str, path, line: int, column: str) -> Optional[float]:
    text = text.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise BaselineError(f"{path}, line {line}: column '{column}': '{text}' is not a number") from None
    if not 0.0 <= value <= 100.0:
        raise BaselineError(f"{path}, line {line}: column '{column}': {value} is outside [0, 100] (top-1 %)")
    return value


def load_baseline_file(path) -> List[Row]:
    """Read one baselines CSV (layouts: baselines/README.md). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"{path}: baselines file not found")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BaselineError(f"{path}, line 1: empty file (expected a header)") from None
        if tuple(header[:4]) != LEAD_COLUMNS:
            raise BaselineError(f"{path}, line 1: the header must start with {','.join(LEAD_COLUMNS)}, "
                                f"got {','.join(header[:4])}")
        long = len(header) > 4 and header[4] == "dataset"
        data_cols = header[5:] if long else header[4:]
        if long:
            for c in data_cols:
                if c != "zero_shot" and not SHOTS_COL_RE.match(c):
                    raise BaselineError(f"{path}, line 1: column '{c}': a file with a 'dataset' column may only "
                                        f"have 'zero_shot' and 'shots_<K>' columns")
        rows: Dict[tuple, Row] = {}
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise BaselineError(f"{path}, line {line}: {len(cells)} cells, the header has {len(header)}")
            lead = [c.strip() for c in cells[:4]]
            for name, value in zip(LEAD_COLUMNS, lead):
                if not value:
                    raise BaselineError(f"{path}, line {line}: column '{name}' is empty")
            method, protocol, backbone, source = lead
            if protocol == OURS:
                raise BaselineError(f"{path}, line {line}: protocol '{OURS}' is reserved for this project's runs")
            if long:
                dataset = cells[4].strip()
                if not dataset:
                    raise BaselineError(f"{path}, line {line}: column 'dataset' is empty")
                for col, text in zip(data_cols, cells[5:]):
                    value = _number(text, path, line, col)
                    if value is None:
                        continue
                    if col == "zero_shot":
                        key, name, shots = ("zs", protocol, backbone, source), "Zero-shot CLIP", None
                    else:
                        shots = int(SHOTS_COL_RE.match(col).group(1))
                        key, name = (method, protocol, backbone, source, shots), method
                    row = rows.setdefault(key, Row(name, protocol, backbone, source, shots))
                    row.values.setdefault(dataset, value)
            else:
                row = rows.setdefault((method, protocol, backbone, source), Row(method, protocol, backbone, source))
                for col, text in zip(data_cols, cells[4:]):
                    value = _number(text, path, line, col)
                    if value is not None and col != "average":
                        row.values[col] = value
    return list(rows.values())


def load_baselines(paths: Optional[Sequence] = None) -> List[Row]:
    """Rows of the given CSVs, or of every baselines/tables/*.csv."""
    files = [Path(p) for p in paths] if paths else sorted(DEFAULT_TABLES.glob("*.csv"))
    rows = []
    for f in files:
        rows.extend(load_baseline_file(f))
    return rows


def load_protocols(path=PROTOCOLS_FILE) -> Dict[str, str]:
    """protocol code -> description (baselines/protocols.csv); empty when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["protocol"]: r["description"] for r in csv.DictReader(f)}


def our_rows(summaries) -> List[Row]:
    """One local row per (trainer, run, backbone) from tools.results summaries, with Δ (module docstring)."""
    from tools.results import backbone_label

    rows: Dict[tuple, Row] = {}
    for s in summaries:
        if s.n == 0:
            continue
        name, sha = s.backbone
        source = OUR_SOURCE if s.origin == OURS else LOCAL_SOURCE
        row = rows.setdefault((s.trainer, s.run_name, name, sha),
                              Row(s.trainer, s.origin, backbone_label(name, sha), source, s.shots, run=s.run_name,
                                  variant=s.variant,
                                  local=True, backbone_sha256=sha, cfg=s.cfg))
        row.values[s.dataset] = s.mean
        row.stds[s.dataset] = s.std
        row.ns[s.dataset] = s.n
    zero_shot = [r for r in rows.values() if r.method in ZERO_SHOT_TRAINERS]
    for row in rows.values():
        if row.method in ZERO_SHOT_TRAINERS:
            continue
        for ds, v in row.values.items():
            ref = zero_shot_reference(row, [z for z in zero_shot if ds in z.values])
            if ref is not None:
                row.deltas[ds] = v - ref.values[ds]
                row.delta_ref[ds] = ref
    def order(r):
        zs = ZERO_SHOT_TRAINERS.index(r.method) if r.method in ZERO_SHOT_TRAINERS else len(ZERO_SHOT_TRAINERS)
        return (not r.ours, zs, r.method, r.backbone, r.run, r.shots or 0)

    return sorted(rows.values(), key=order)


def _same_backbone(a: Row, b: Row) -> Optional[bool]:
    """True/False when both rows know what they loaded (sha256 compared when both have it), None when one does not."""
    if not a.backbone or not b.backbone:
        return None
    if a.backbone_sha256 and b.backbone_sha256:
        return a.backbone_sha256 == b.backbone_sha256
    return a.backbone.split(" sha256:")[0] == b.backbone.split(" sha256:")[0]


def zero_shot_reference(row: Row, candidates: Sequence[Row]) -> Optional[Row]:
    """The zero-shot row `row`'s Δ is against (module docstring), or None."""
    base = base_cfg(row.cfg)
    fits = []
    for z in candidates:
        same = _same_backbone(row, z)
        if same is False or (same is None and base_cfg(z.cfg) != base):
            continue
        fits.append(z)
    if not fits:
        return None
    return min(fits, key=lambda z: (base_cfg(z.cfg) != base, z.ours != row.ours, ZERO_SHOT_TRAINERS.index(z.method),
                                    z.run))


def _group(row: Row) -> tuple:
    if row.local and not row.backbone:
        return (row.protocol, "cfg " + base_cfg(row.cfg))
    return (row.protocol, row.backbone.split(" sha256:")[0] if row.local else row.backbone)


def build(summaries, baselines: Sequence[Row], protocols: Optional[Sequence[str]] = None) -> Board:
    """Our rows + the published rows (optionally only those of `protocols`) that share a dataset with ours."""
    ours = our_rows(summaries)
    datasets = sorted({ds for r in ours for ds in r.values})
    published = [r for r in baselines if any(ds in r.values for ds in datasets)
                 and (protocols is None or r.protocol in protocols)]
    order = {}
    for r in published:
        order.setdefault(_group(r), len(order))
    published.sort(key=lambda r: (min(v for g, v in order.items() if g[0] == r.protocol), order[_group(r)]))
    rows = ours + published
    best = {}
    for col in datasets + ["Avg."]:
        by_protocol: Dict[tuple, List[Tuple[int, float]]] = {}
        for i, r in enumerate(rows):
            v = average(r, datasets) if col == "Avg." else r.values.get(col)
            if v is not None:
                by_protocol.setdefault(_group(r), []).append((i, v))
        for vals in by_protocol.values():
            if len(vals) < 2:
                continue
            top = max(v for _, v in vals)
            for i, v in vals:
                if round(v, 2) == round(top, 2):
                    best[(i, col)] = True
    return Board(datasets, rows, best, summaries[0].std_kind if summaries else "sample")


def average(row: Row, datasets: Sequence[str]) -> Optional[float]:
    if not datasets or any(ds not in row.values for ds in datasets):
        return None
    return sum(row.values[ds] for ds in datasets) / len(datasets)


def _cell(row: Row, ds: str, bold, pm: str, delta_fmt) -> str:
    if ds not in row.values:
        return "–" if pm == "±" else "--"
    v = row.values[ds]
    text = f"{v:.2f}"
    std = row.stds.get(ds)
    if std is not None:
        text += f" {pm} {std:.2f}"
    text = bold(text)
    if ds in row.deltas:
        text += " " + delta_fmt(row.deltas[ds])
    return text


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                  "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "—": "---"}
LATEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in LATEX_SPECIALS))


def _latex_escape(text) -> str:
    """Text as LaTeX source: the ten special characters escaped, and ± Δ – — written with LaTeX commands."""
    return LATEX_SPECIALS_RE.sub(lambda m: LATEX_SPECIALS[m.group(0)], str(text))


def latex_comment(text: str) -> str:
    """A note as LaTeX comment lines (`% ...`; a line break inside it cannot end the comment)."""
    return "\n".join("% " + line for line in str(text).splitlines() or [""])


def _run_label(row: Row) -> str:
    return f"{row.method} {row.run}".strip()


def render(board: Board, fmt: str, protocols: Optional[Dict[str, str]] = None) -> str:
    """The leaderboard as markdown (README), LaTeX (paper: notes as `%` comment lines, then ONE tabular; nothing
    else) or CSV."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "csv":
        return _render_csv(board)
    md = fmt == "markdown"
    header = ["Method", "Run", "Protocol", "Backbone", "Shots", "Source"] + board.datasets + ["Avg."]
    body = []
    for i, r in enumerate(board.rows):
        def bold(t, col=None):
            if not board.best.get((i, col)):
                return t
            return f"**{t}**" if md else f"\\textbf{{{t}}}"
        esc = (lambda t: t) if md else _latex_escape
        run = f"{r.run} [{r.variant}]" if r.variant else r.run
        cells = [esc(r.method), esc(run), esc(r.protocol), esc(r.backbone), "" if r.shots is None else r.shots,
                 esc(r.source)]
        for ds in board.datasets:
            cells.append(_cell(r, ds, lambda t, ds=ds: bold(t, ds), "±" if md else "$\\pm$",
                               (lambda d: f"(Δ {d:+.2f})") if md else (lambda d: f"($\\Delta$ {d:+.2f})")))
        avg = average(r, board.datasets)
        cells.append("" if avg is None else bold(f"{avg:.2f}", "Avg."))
        body.append(cells)
    if not md:
        header = [_latex_escape(h) for h in header]
    table = tabulate(body, headers=header, tablefmt="github" if md else "latex_raw", disable_numparse=True)
    notes = _notes(board, protocols or {})
    if md:
        return "### Leaderboard\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes)
    return "\n".join(latex_comment(n) for n in notes) + "\n" + table + "\n"


def _notes(board: Board, protocols: Dict[str, str]) -> List[str]:
    notes = [f"top-1 accuracy (%) on the test split; local rows: mean ± {board.std_kind} std over seeds "
             f"(ddof={1 if board.std_kind == 'sample' else 0}), last epoch",
             "Δ: a local row minus the local zero-shot row (ZSCLIP, else ZeroshotCLIP, ZeroshotCLIP2) that loaded the "
             "same backbone, on the same dataset",
             "backbone of a local row: the checkpoint its runs loaded (name, sha256 prefix when recorded)",
             "best of a column marked among rows of the same protocol and backbone only; protocols are not comparable"]
    pairs = {}
    for r in board.rows:
        for ds, ref in r.delta_ref.items():
            pairs.setdefault((_run_label(r), _run_label(ref)), []).append(ds)
    for (row, ref), dss in pairs.items():
        notes.append(f"Δ of {row}: against {ref} ({', '.join(dss)})")
    for p in dict.fromkeys(r.protocol for r in board.rows):
        local = next((r for r in board.rows if r.protocol == p and r.local), None)
        if p == OURS:
            desc = ("local runs of this project's trainers (FAIR, ReCLIP, DAC, ZSCLIP and the baselines of "
                    "docs/BASELINES.md): CoOp/Dassl splits, last-epoch test accuracy")
        elif local is not None:
            desc = f"local runs of trainer {p} under --output"
        else:
            desc = protocols.get(p, "(no description in baselines/protocols.csv)")
        notes.append(f"protocol `{p}`: {desc}")
    return notes


def _render_csv(board: Board) -> str:
    header = ["method", "run", "computed_with", "protocol", "backbone", "backbone_sha256", "shots", "source"]
    for ds in board.datasets:
        header += [ds, f"{ds}_std", f"{ds}_n", f"{ds}_delta"]
    header.append("average")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for i, r in enumerate(board.rows):
        cells = [r.method, r.run, r.variant, r.protocol, r.backbone.split(" sha256:")[0] if r.local else r.backbone,
                 r.backbone_sha256, "" if r.shots is None else r.shots, r.source]
        for ds in board.datasets:
            v = r.values.get(ds)
            mark = CSV_BEST_MARKER if board.best.get((i, ds)) else ""
            std, delta = r.stds.get(ds), r.deltas.get(ds)
            cells += ["" if v is None else f"{v:.2f}{mark}", "" if std is None else f"{std:.2f}",
                      r.ns.get(ds, ""), "" if delta is None else f"{delta:+.2f}"]
        avg = average(r, board.datasets)
        cells.append("" if avg is None else f"{avg:.2f}" + (CSV_BEST_MARKER if board.best.get((i, "Avg.")) else ""))
        w.writerow(cells)
    return out.getvalue()


def render_plain_table(header, rows, fmt: str, title: str = "") -> str:
    """A plain table (the per-run summary) as CSV or markdown."""
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return out.getvalue()
    return (f"### {title}\n\n" if title else "") + tabulate(rows, headers=header, tablefmt="github",
                                                            disable_numparse=True)
