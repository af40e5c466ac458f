"""tools.results / tools.leaderboard on output trees written here (fake CoOp logs, no Dassl): aggregation arithmetic,
missing and unfinished seeds, re-run logs, every format, Δ and best marks, protocol grouping, bad baselines rows,
the PNG."""
import csv
import io
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tools import leaderboard, results, runs


SHA = "ab" * 32  # the sha256 results.json records for the fake ViT-B/16 checkpoint


def write_log(seed_dir: Path, acc=None, *, name="log.txt", finished=True, eval_only=False, val_acc=None,
              backbone=None):
    """A CoOp-style log: optional validation result block, then (if finished) the final result block; with
    `backbone`, the results.json our trainers write beside it (backbone name and sha256)."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    if backbone:
        (seed_dir / "results.json").write_text(json.dumps({"accuracy": acc, "backbone": backbone,
                                                           "backbone_sha256": SHA}))
    lines = ["** Arguments **", f"eval_only: {eval_only}", "** Config **"]
    if not eval_only:
        lines += ["epoch [1/2] batch [1/1] loss 1.0"]
        if val_acc is not None:
            lines += ["=> result", "* total: 10", f"* accuracy: {val_acc}%"]
        if finished:
            lines += ["Finish training"]
    if finished or eval_only:
        lines += ["=> result", "* total: 100", "* correct: 50", f"* accuracy: {acc}%", "* error: 1%", "* macro_f1: 1%"]
    (seed_dir / name).write_text("\n".join(lines) + "\n")


def write_coop_log(run_dir: Path, trainer, dataset, backbone, acc, *, eval_only=False, seed=1, cfg_file="rn50"):
    """A log in CoOp's format: its `** Arguments **` and `** Config **` dumps, then (training) `Finish training`
    and the last-epoch test block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = ["***************", "** Arguments **", "***************",
             f"config_file: configs/trainers/CoOp/{cfg_file}.yaml",
             f"dataset_config_file: configs/datasets/{dataset}.yaml", f"eval_only: {eval_only}",
             f"seed: {seed}", f"trainer: {trainer}",
             "************", "** Config **", "************",
             "DATASET:", "  NAME: DescribableTextures", "  NUM_SHOTS: 16",
             "MODEL:", "  BACKBONE:", f"    NAME: {backbone}", "    PRETRAINED: True", "  HEAD:", "    NAME: ",
             "TRAINER:", "  COOP:", "    N_CTX: 16", f"  NAME: {trainer}",
             "Collecting env info ...", "** System info **"]
    if not eval_only:
        lines += ["epoch [50/50] batch [1/1] loss 0.1 acc 100.0", "Finish training",
                  "Deploy the last-epoch model"]
    lines += ["Evaluate on the *test* set", "=> result", "* total: 1,692", "* correct: 1,000",
              f"* accuracy: {acc}%", "* error: 40.9%", "* macro_f1: 58.0%"]
    (run_dir / "log.txt").write_text("\n".join(lines) + "\n")


def tree(root: Path):
    """dtd: ZS 3 seeds, FAIR 2 finished + 1 unfinished, FAIR transductive 1 seed; eurosat: DAC 4 shots with a
    re-run log; dtd ReCLIP seed 1 finished only in an older log, the newer log crashed."""
    for s, a in [(1, 40.0), (2, 41.0), (3, 45.0)]:
        write_log(root / f"dtd/ZSCLIP/vit_b16/seed{s}", a, eval_only=True, backbone="ViT-B/16")
    write_log(root / "dtd/FAIR/vit_b16/seed1", 50.5, val_acc=99.0, backbone="ViT-B/16")
    write_log(root / "dtd/FAIR/vit_b16/seed2", 52.5, backbone="ViT-B/16")
    write_log(root / "dtd/FAIR/vit_b16/seed3", val_acc=97.0, finished=False)  # a val result only: unfinished
    write_log(root / "dtd/FAIR/vit_b16_transductive/seed1", 60.0)
    write_log(root / "eurosat/DAC/vit_b16_4shots/seed1", 30.0)
    write_log(root / "eurosat/DAC/vit_b16_4shots/seed1", 70.0, name="log.txt-2026-01-02-10-00-00")  # re-run
    write_log(root / "eurosat/DAC/vit_b16_4shots/seed2", 72.0)
    write_log(root / "dtd/ReCLIP/vit_b16/seed1", 55.0)
    write_log(root / "dtd/ReCLIP/vit_b16/seed1", None, name="log.txt-2026-01-03-00-00-00", finished=False)
    return root


@pytest.fixture
def out(tmp_path):
    return tree(tmp_path / "output")


def by_key(summaries):
    return {s.key: s for s in summaries}


def test_aggregation_arithmetic_is_mean_and_sample_std(out):
    s = by_key(results.aggregate(runs.scan(out)))
    zs = s[("dtd", "ZSCLIP", "vit_b16")]
    assert zs.n == 3 and zs.mean == pytest.approx(42.0)
    assert zs.std == pytest.approx(statistics.stdev([40.0, 41.0, 45.0]))  # sample (ddof=1) ...
    assert zs.std != pytest.approx(statistics.pstdev([40.0, 41.0, 45.0]))  # ... not population
    fair = s[("dtd", "FAIR", "vit_b16")]
    assert fair.accuracies == {1: 50.5, 2: 52.5}  # the validation result (99) is not the final one
    assert fair.std == pytest.approx(math.sqrt(2.0))
    one = s[("dtd", "FAIR", "vit_b16_transductive")]
    assert one.n == 1 and one.std is None and one.missing == [2, 3]
    assert results.format_mean_std(one.mean, one.std) == "60.00"


def test_missing_and_unfinished_seeds_are_named_not_counted(out):
    s = by_key(results.aggregate(runs.scan(out)))
    fair = s[("dtd", "FAIR", "vit_b16")]
    assert fair.missing == [3]
    assert [seed for seed, _ in fair.unfinished] == [3] and "Finish training" in fair.unfinished[0][1]
    # --seeds restricts what counts and what is expected
    s12 = by_key(results.aggregate(runs.scan(out), seeds=[1, 2, 4]))
    zs = s12[("dtd", "ZSCLIP", "vit_b16")]
    assert sorted(zs.accuracies) == [1, 2] and zs.missing == [4]


def test_rerun_logs_newest_finished_log_wins(out):
    s = by_key(results.aggregate(runs.scan(out)))
    dac = s[("eurosat", "DAC", "vit_b16_4shots")]
    assert dac.accuracies == {1: 70.0, 2: 72.0}  # the re-run log (70), not the first log.txt (30)
    # a newer crashed log does not hide the finished older one
    assert s[("dtd", "ReCLIP", "vit_b16")].accuracies == {1: 55.0}


def test_leaderboard_delta_best_and_protocol_grouping(out, tmp_path):
    base = tmp_path / "pub.csv"
    base.write_text("method,protocol,backbone,source,dtd,eurosat,average\n"
                    "A,p1,ViT-B/16,Paper A Table 1,48.0,60.0,1.0\n"
                    "B,p1,ViT-B/16,Paper A Table 1,47.0,,\n"
                    "C,p2,ViT-B/16,Paper B Table 3,90.0,10.0,\n"
                    "Z,p3,ViT-B/16,Paper C,,,\n")
    board = leaderboard.build(results.aggregate(runs.scan(out)), leaderboard.load_baselines([base]))
    assert board.datasets == ["dtd", "eurosat"]
    names = [(r.method, r.protocol, r.backbone) for r in board.rows]
    assert names[0] == ("ZSCLIP", "ours", "ViT-B/16 sha256:abababab")  # our zero-shot row first, what it loaded
    assert ("Z", "p3", "ViT-B/16") not in names  # no shared dataset -> not shown
    rows = {(r.method, r.run or r.backbone, r.shots): (i, r) for i, r in enumerate(board.rows)}
    i_fair, fair = rows[("FAIR", "vit_b16", None)]
    assert fair.deltas["dtd"] == pytest.approx(51.5 - 42.0) and fair.delta_ref["dtd"].method == "ZSCLIP"
    i_tr, tr = rows[("FAIR", "vit_b16_transductive", None)]
    assert tr.backbone == ""  # no results.json, no config dump: unknown, not the cfg's name
    assert tr.deltas["dtd"] == pytest.approx(60.0 - 42.0)  # unknown backbone: the same base cfg decides
    assert "eurosat" not in rows[("DAC", "vit_b16_4shots", 4)][1].deltas  # no zero-shot run on eurosat
    assert not rows[("A", "ViT-B/16", None)][1].deltas  # published rows: no Δ across protocols
    # best per column within a protocol: C (90) is best overall but alone in p2 -> not marked; ours: FAIR beats
    # ZSCLIP (same backbone); rows of unknown backbone (transductive 60, ReCLIP 55) form a group by base cfg
    i_a, _ = rows[("A", "ViT-B/16", None)]
    i_c, _ = rows[("C", "ViT-B/16", None)]
    i_re, _ = rows[("ReCLIP", "vit_b16", None)]
    assert board.best.get((i_a, "dtd")) and not board.best.get((i_c, "dtd"))
    assert board.best.get((i_fair, "dtd")) and board.best.get((i_tr, "dtd")) and not board.best.get((i_re, "dtd"))
    # the paper's own average is not shown; Avg. is recomputed over the shown columns
    assert leaderboard.average(rows[("A", "ViT-B/16", None)][1], board.datasets) == pytest.approx(54.0)


def test_formats(out, tmp_path):
    base = tmp_path / "pub.csv"
    base.write_text("method,protocol,backbone,source,dtd\nA,p1,ViT-B/16,Paper A,48.0\nB,p1,ViT-B/16,Paper A,47.0\n")
    board = leaderboard.build(results.aggregate(runs.scan(out)), leaderboard.load_baselines([base]))
    md = leaderboard.render(board, "markdown", protocols={"p1": "protocol one"})
    assert "| FAIR" in md and "**51.50 ± 1.41** (Δ +9.50)" in md and "**48.00**" in md
    assert "**60.00** (Δ +18.00)" in md and "`p1`: protocol one" in md and "mean ± sample std" in md
    tex = leaderboard.render(board, "latex")
    assert "\\begin{tabular}" in tex and "\\textbf{48.00}" in tex and "$\\pm$" in tex and "vit\\_b16" in tex
    assert "($\\Delta$ +9.50)" in tex
    rows = list(csv.DictReader(io.StringIO(leaderboard.render(board, "csv"))))
    fair = next(r for r in rows if r["method"] == "FAIR" and r["run"] == "vit_b16")
    assert (fair["backbone"], fair["backbone_sha256"]) == ("ViT-B/16", SHA)
    assert (fair["dtd"], fair["dtd_std"], fair["dtd_n"], fair["dtd_delta"]) == ("51.50*", "1.41", "2", "+9.50")
    a = next(r for r in rows if r["method"] == "A")
    assert a["dtd"] == "48.00" + leaderboard.CSV_BEST_MARKER and a["protocol"] == "p1" and a["source"] == "Paper A"
    with pytest.raises(ValueError, match="unknown format"):
        leaderboard.render(board, "html")


def test_long_fewshot_layout_and_project_baselines_load():
    rows = leaderboard.load_baselines()  # every file under baselines/tables
    assert rows and all(r.source and r.protocol and r.backbone for r in rows)
    tip = [r for r in rows if r.method == "Tip-Adapter-F" and r.shots == 16]
    assert len(tip) == 1 and tip[0].values["dtd"] == pytest.approx(66.55)
    zs = [r for r in rows if r.method == "Zero-shot CLIP" and r.protocol == "coop"]
    assert len(zs) == 1 and len(zs[0].values) == 11
    assert all("average" not in r.values for r in rows)


@pytest.mark.parametrize("body,message", [
    ("A,p,ViT,Src,12.0\nB,p,ViT,Src,abc\n", "line 3: column 'dtd': 'abc' is not a number"),
    ("A,p,ViT,Src,12.0,13.0\n", "line 2: 6 cells, the header has 5"),
    ("A,p,ViT,Src,120\n", "line 2: column 'dtd': 120.0 is outside"),
    ("A,,ViT,Src,12\n", "line 2: column 'protocol' is empty"),
    ("A,ours,ViT,Src,12\n", "line 2: protocol 'ours' is reserved"),
])
def test_bad_baselines_row_names_file_and_line(tmp_path, body, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("method,protocol,backbone,source,dtd\n" + body)
    with pytest.raises(leaderboard.BaselineError) as e:
        leaderboard.load_baseline_file(bad)
    assert str(bad) in str(e.value) and message in str(e.value)


def test_bad_header_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,protocol,backbone,source,dtd\nA,p,ViT,Src,1\n")
    with pytest.raises(leaderboard.BaselineError, match=r"bad\.csv, line 1: the header must start with"):
        leaderboard.load_baseline_file(bad)


def test_plot_writes_a_png_whose_legend_names_the_backbone(out, tmp_path, monkeypatch):
    import matplotlib.axes

    labels, bar = [], matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", lambda self, *a, **k: labels.append(k.get("label")) or
                        bar(self, *a, **k))
    path = results.plot(results.aggregate(runs.scan(out)), tmp_path / "plots" / "acc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert labels and all("backbone unknown" in lbl or "ViT-B/16" in lbl for lbl in labels)
    assert any("ViT-B/16 sha256:" in lbl for lbl in labels)  # what the run loaded, not the cfg name


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tools.results", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONWARNINGS": "ignore"})


def test_cli_markdown_lists_unfinished_and_writes_plot(out, tmp_path):
    res = _cli("--output", str(out), "--plot", str(tmp_path / "p.png"), "--protocols", "dpa")
    assert res.returncode == 0, res.stderr
    assert "dtd/FAIR/vit_b16/seed3" in res.stdout and "Unfinished runs (not counted)" in res.stdout
    assert "DPA (Ali et al., WACV 2025), Table 1" in res.stdout and "(Δ +9.50)" in res.stdout
    assert "| lafter" not in res.stdout  # --protocols filters the published rows
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_csv_stdout_is_one_table_and_bad_baselines_exit_2(out, tmp_path):
    res = _cli("--output", str(out), "--format", "csv", "--no-baselines")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {r["protocol"] for r in rows} == {"ours"} and "Unfinished" in res.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("method,protocol,backbone,source,dtd\nA,p,ViT,Src,x\n")
    res = _cli("--output", str(out), "--baselines", str(bad))
    assert res.returncode == 2 and f"{bad}, line 2" in res.stderr
    res = _cli("--output", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_base_cfg_strips_protocol_suffixes_to_find_the_zero_shot_reference():
    from tools.runs import base_cfg

    assert base_cfg("vit_b16_transductive") == "vit_b16"
    assert base_cfg("rn50_inductive") == "rn50"
    assert base_cfg("rn50_from_imagenet") == "rn50"  # scripts/dac/ood.sh (shots already split off)
    assert base_cfg("vit_l14") == "vit_l14"


def _latex_body(stdout):
    """The non-comment lines of LaTeX output: must be exactly one tabular environment."""
    body = [line for line in stdout.splitlines() if line.strip() and not line.startswith("%")]
    assert body[0].startswith("\\begin{tabular}{") and body[-1] == "\\end{tabular}", stdout
    assert sum(line.count("\\begin{") for line in body) == 1 and sum(line.count("\\end{") for line in body) == 1
    return body


def _compile(tex_file: Path, tmp_path: Path):
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\begin{document}\n\\input{" + tex_file.name + "}\n\\end{document}\n")
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_cli_latex_stdout_is_one_tabular_with_every_special_escaped(out, tmp_path):
    write_log(out / "dtd" / "FAIR" / "vit_b16_x&y#1%" / "seed1", 58.0)  # specials in a run folder name
    base = tmp_path / "pub.csv"
    base.write_text('method,protocol,backbone,source,dtd\n'
                    '"A_b & c #1",p_1,ViT-B/16,"Paper 50% ~x^y {z} \\ w $5",48.0\n')  # one backslash
    res = _cli("--output", str(out), "--format", "latex", "--baselines", str(base))
    assert res.returncode == 0, res.stderr
    body = _latex_body(res.stdout)
    text = "\n".join(body)
    assert not re.search(r"(?<!\\)[_%#$&]", text.replace("$\\pm$", "").replace("$\\Delta$", "").replace(" & ", ""))
    header = next(line for line in body if line.strip().startswith("Method"))
    n_cols = len(re.split(r"(?<!\\)&", header))
    rows = [line for line in body if line.endswith("\\\\")]
    assert len(rows) == 1 + 7  # header + 6 of ours + 1 published
    assert all(len(re.split(r"(?<!\\)&", line)) == n_cols for line in rows)  # no `&` of a cell splits it
    assert "A\\_b \\& c \\#1" in text and "vit\\_b16\\_x\\&y\\#1\\%" in text
    assert "50\\% \\textasciitilde{}x\\textasciicircum{}y \\{z\\} \\textbackslash{} w \\$5" in text
    assert "### Runs" in res.stderr and "Unfinished runs" in res.stderr and "Unfinished" not in res.stdout
    assert any(line.startswith("% ") and "sample std" in line for line in res.stdout.splitlines())
    if shutil.which("pdflatex") is None:
        return  # the structural checks above stand; compiling needs pdflatex (apt-get install texlive-latex-base)
    for name, args in (("special.tex", ("--baselines", str(base))), ("default.tex", ())):
        tex = subprocess.run([sys.executable, "-m", "tools.results", "--output", str(out), "--format", "latex",
                              *args], cwd=REPO, capture_output=True, text=True, timeout=120).stdout
        (tmp_path / name).write_text(tex)
        _latex_body(tex)
        done = _compile(tmp_path / name, tmp_path)
        assert done.returncode == 0, f"{name}:\n{done.stdout[-3000:]}"
        assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_coop_layouts_are_found_at_any_depth_and_folded_into_the_run_name(tmp_path):
    out = tmp_path / "output"
    tree(out)
    v = "nctx16_cscFalse_ctpend"
    write_coop_log(out / f"dtd/CoOp/rn50_4shots/{v}/seed1", "CoOp", "dtd", "RN50", 60.0)  # scripts/coop/main.sh
    write_coop_log(out / f"dtd/CoOp/rn50_4shots/{v}/seed2", "CoOp", "dtd", "RN50", 61.0)
    (out / f"dtd/CoOp/rn50_4shots/{v}/seed1/prompt_learner").mkdir()  # a run folder's subfolders are its own
    write_coop_log(out / "ZeroshotCLIP/rn50/dtd", "ZeroshotCLIP", "dtd", "RN50", 42.5, eval_only=True, seed=-1)
    write_coop_log(out / f"evaluation/CoOp/rn50_16shots/{v}/imagenetv2/seed1", "CoOp", "imagenetv2", "RN50", 55.0,
                   eval_only=True)  # scripts/coop/eval.sh
    write_coop_log(out / "base2new/train_base/dtd/shots_16/CoCoOp/vit_b16_c4/seed1", "CoCoOp", "dtd", "ViT-B/16",
                   80.0)  # CoCoOp's base-to-new layout
    scanned = runs.scan(out)
    found = {}
    for r in scanned:
        found.setdefault(r.key, r)  # the first seed folder of each run
    coop = found[("dtd", "CoOp", f"rn50_4shots/{v}")]
    assert (coop.cfg, coop.shots, coop.seed, coop.backbone, coop.origin) == ("rn50", 4, 1, "RN50", "CoOp")
    zs = found[("dtd", "ZeroshotCLIP", "rn50")]
    assert zs.seed is None and zs.status.accuracy == 42.5 and zs.status.log.name == "log.txt"
    ev = found[("imagenetv2", "CoOp", f"evaluation/rn50_16shots/{v}")]
    assert (ev.cfg, ev.shots, ev.status.accuracy) == ("rn50", 16, 55.0)
    b2n = found[("dtd", "CoCoOp", "base2new/train_base/shots_16/vit_b16_c4")]
    assert b2n.shots == 16 and b2n.backbone == "ViT-B/16"
    assert ("dtd", "ZSCLIP", "vit_b16") in found and found[("dtd", "ZSCLIP", "vit_b16")].origin == "ours"
    s = by_key(results.aggregate(scanned, seeds=[1, 2, 3]))
    assert s[("dtd", "ZeroshotCLIP", "rn50")].missing == [] and s[("dtd", "ZeroshotCLIP", "rn50")].n == 1
    assert s[("dtd", "CoOp", f"rn50_4shots/{v}")].missing == [3]
    board = leaderboard.build(list(s.values()), [])
    row = next(r for r in board.rows if r.method == "CoOp" and r.run == f"rn50_4shots/{v}")
    assert row.deltas["dtd"] == pytest.approx(60.5 - 42.5) and row.delta_ref["dtd"].method == "ZeroshotCLIP"
    assert (row.protocol, row.source, row.backbone) == ("CoOp", "local run", "RN50")
    # population std (CoOp's parse_test_res.py prints numpy.std's default, ddof=0) on request
    pop = by_key(results.aggregate(scanned, std="population"))
    assert pop[("dtd", "CoOp", f"rn50_4shots/{v}")].std == pytest.approx(statistics.pstdev([60.0, 61.0]))
    assert s[("dtd", "CoOp", f"rn50_4shots/{v}")].std == pytest.approx(statistics.stdev([60.0, 61.0]))


def test_rows_name_the_prompts_and_recipe_their_results_json_records(tmp_path):
    """The template set (and ReCLIP's recipe, FAIR's template descriptions) recorded in results.json is shown with
    the run name in both tables, so rows computed with other prompts are never read as the same method."""
    for seed in (1, 2):
        for trainer, cfg, extra in (("ZSCLIP", "vit_b16_clip", {"templates": "clip"}),
                                    ("ReCLIP", "vit_b16_official", {"templates": "clip", "recipe": "official"}),
                                    ("FAIR", "vit_b16_templatedesc", {"descriptions": "template"})):
            d = tmp_path / "dtd" / trainer / cfg / f"seed{seed}"
            write_log(d, 50.0 + seed, backbone="ViT-B/16")
            data = json.loads((d / "results.json").read_text())
            (d / "results.json").write_text(json.dumps({**data, **extra}))
    s = by_key(results.aggregate(runs.scan(tmp_path)))
    assert s[("dtd", "ZSCLIP", "vit_b16_clip")].label == "vit_b16_clip [prompts clip]"
    assert s[("dtd", "ReCLIP", "vit_b16_official")].label == "vit_b16_official [prompts clip, recipe official]"
    assert s[("dtd", "FAIR", "vit_b16_templatedesc")].label == "vit_b16_templatedesc [template descriptions]"
    _, rows = results.summary_rows(list(s.values()))
    assert "vit_b16_official [prompts clip, recipe official]" in {r[3] for r in rows}
    board = leaderboard.build(list(s.values()), [])
    assert {(r.run, r.variant) for r in board.rows} >= {("vit_b16_clip", "prompts clip"),
                                                        ("vit_b16_official", "prompts clip, recipe official")}
    assert "| vit_b16_official [prompts clip, recipe official] |" in leaderboard.render(board, "markdown")
    csv_rows = list(csv.DictReader(io.StringIO(leaderboard.render(board, "csv"))))
    assert {(r["run"], r["computed_with"]) for r in csv_rows} >= {("vit_b16_official", "prompts clip, recipe official")}
