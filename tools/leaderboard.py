"""Leaderboard: our rows (mean ± std over seeds) next to published rows from baselines/, rendered with tabulate.

Rules (baselines/README.md, DESIGN.md "Evaluation protocol"):
- every row carries its protocol; our rows have protocol `ours`; the best value of a column is marked only among
  rows of the SAME protocol and backbone (ours: the cfg without its transductive/inductive suffix) — bold in
  markdown and LaTeX, a trailing `*` on the value in CSV — and only where that group has at least two values;
- rows are grouped: ours first, then published rows by protocol and backbone;
- Δ (our rows only) = our mean − the mean of our ZSCLIP row with the same backbone cfg (transductive/inductive
  suffixes stripped, tools.runs.base_cfg) on the same dataset. Published rows get no Δ: it would cross protocols;
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

from tools.runs import ZERO_SHOT_TRAINER, base_cfg

REPO = Path(__file__).resolve().parents[1]
BASELINES_DIR = REPO / "baselines"
DEFAULT_TABLES = BASELINES_DIR / "tables"
PROTOCOLS_FILE = BASELINES_DIR / "protocols.csv"
FORMATS = ("markdown", "latex", "csv")
OURS = "ours"
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
    values: Dict[str, float] = field(default_factory=dict)  # dataset -> accuracy (mean for our rows)
    stds: Dict[str, Optional[float]] = field(default_factory=dict)
    ns: Dict[str, int] = field(default_factory=dict)
    deltas: Dict[str, float] = field(default_factory=dict)

    @property
    def ours(self) -> bool:
        return self.protocol == OURS


@dataclass
class Board:
    datasets: List[str]
    rows: List[Row]
    best: Dict[Tuple[int, str], bool]  # (row index, column) -> best of its protocol


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
    """One row per (trainer, run) from tools.results summaries; Δ vs our ZSCLIP row of the same base cfg."""
    rows: Dict[tuple, Row] = {}
    for s in summaries:
        if s.n == 0:
            continue
        row = rows.setdefault((s.trainer, s.cfg, s.shots),
                              Row(s.trainer, OURS, s.cfg, "this project", s.shots))
        row.values[s.dataset] = s.mean
        row.stds[s.dataset] = s.std
        row.ns[s.dataset] = s.n
    for (trainer, cfg, shots), row in rows.items():
        zs = rows.get((ZERO_SHOT_TRAINER, base_cfg(cfg), None))
        if zs is None or zs is row:
            continue
        for ds, v in row.values.items():
            if ds in zs.values:
                row.deltas[ds] = v - zs.values[ds]
    order = sorted(rows.values(), key=lambda r: (r.method != ZERO_SHOT_TRAINER, r.method, r.backbone, r.shots or 0))
    return order


def _group(row: Row) -> tuple:
    return (row.protocol, base_cfg(row.backbone) if row.ours else row.backbone)


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
    return Board(datasets, rows, best)


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


def _latex_escape(text: str) -> str:
    return re.sub(r"([_%&#$])", r"\\\1", str(text))


def render(board: Board, fmt: str, protocols: Optional[Dict[str, str]] = None) -> str:
    """The leaderboard as markdown (README), LaTeX (paper) or CSV."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "csv":
        return _render_csv(board)
    md = fmt == "markdown"
    header = ["Method", "Protocol", "Backbone / cfg", "Shots", "Source"] + board.datasets + ["Avg."]
    body = []
    for i, r in enumerate(board.rows):
        def bold(t, col=None):
            if not board.best.get((i, col)):
                return t
            return f"**{t}**" if md else f"\\textbf{{{t}}}"
        esc = (lambda t: t) if md else _latex_escape
        cells = [esc(r.method), esc(r.protocol), esc(r.backbone), "" if r.shots is None else r.shots, esc(r.source)]
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
    return table + "\n" + "\n".join(f"% {n}" for n in notes)


def _notes(board: Board, protocols: Dict[str, str]) -> List[str]:
    notes = ["top-1 accuracy (%) on the test split; our rows: mean ± sample std over seeds, last epoch",
             "Δ: our row minus our ZSCLIP row of the same backbone cfg on the same dataset",
             "best of a column marked among rows of the same protocol and backbone only; protocols are not comparable"]
    for p in dict.fromkeys(r.protocol for r in board.rows):
        desc = protocols.get(p, "this project's runs" if p == OURS else "(no description in baselines/protocols.csv)")
        notes.append(f"protocol `{p}`: {desc}")
    return notes


def _render_csv(board: Board) -> str:
    header = ["method", "protocol", "backbone", "shots", "source"]
    for ds in board.datasets:
        header += [ds, f"{ds}_std", f"{ds}_n", f"{ds}_delta"]
    header.append("average")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for i, r in enumerate(board.rows):
        cells = [r.method, r.protocol, r.backbone, "" if r.shots is None else r.shots, r.source]
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
    """A plain table (the per-run summary) in the chosen format."""
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return out.getvalue()
    if fmt == "latex":
        return tabulate([[_latex_escape(c) for c in r] for r in rows], headers=[_latex_escape(h) for h in header],
                        tablefmt="latex_raw", disable_numparse=True).replace("±", "$\\pm$")
    return (f"### {title}\n\n" if title else "") + tabulate(rows, headers=header, tablefmt="github",
                                                            disable_numparse=True)
