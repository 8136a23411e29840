"""The report: report.json (schema_version 2), report.md and a styled, self-contained report.html whose
plots fit a 1,200 px page and whose lesson links work from wherever the report is written."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .codes import APPLIED_TOLERANCE, LESSONS

FIGURE_WIDTH = 9.0      # inches at 80 dpi: 720 px, inside a 1,200 px page
MAX_LABELLED_LAYERS = 14


def notebooks_dir() -> Path | None:
    """The workbook's notebooks/ folder, where it exists (a source checkout)."""
    here = Path(__file__).resolve().parent.parent.parent / "notebooks"
    if here.is_dir():
        return here
    try:
        from ..workbook.committed import find_data_dir
        candidate = find_data_dir().parent / "notebooks"
        return candidate if candidate.is_dir() else None
    except Exception:  # noqa: BLE001
        return None


def lesson_link(notebook: str, section: str) -> str | None:
    """An absolute file: URI to the lesson with Jupyter's anchor (the heading, spaces as '-'), or None."""
    folder = notebooks_dir()
    if folder is None:
        return None
    return (folder / notebook).as_uri() + "#" + section.replace(" ", "-")


def lesson_label(notebook: str, section: str) -> str:
    number = section.split(".")[0] if section[0].isdigit() else section
    return f"lesson {notebook[:2]} §{number}"


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    return value


def report_json(diag) -> str:
    return json.dumps(jsonable(diag.report), indent=2, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- figures


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def make_figures(diag) -> dict[str, bytes]:
    """One PNG per applicable check, each at most FIGURE_WIDTH inches wide; titles state the finding."""
    from ..workbook.plotting import figure
    r, figs = diag.report, {}
    bn = r.get("bn_statistics")
    if bn:
        rows = bn["layers"]
        errs = [max(row["error_p90"], 1e-4) for row in rows]
        worst = bn["worst_layer"]
        title = (f"{len(bn['off_layers'])} of {len(rows)} BN layers off; culprit {worst}" if bn["off_layers"]
                 else f"BN statistics current: every layer within {APPLIED_TOLERANCE:.0%}")
        fig, ax = figure(finding=title, width=FIGURE_WIDTH)
        colors = ["tab:gray" if not row["trainable"] else "tab:red" if row["off"] else "tab:blue" for row in rows]
        ax.bar(range(len(rows)), errs, color=colors)
        ax.axhline(APPLIED_TOLERANCE, color="k", ls="--", lw=1, label=f"threshold {APPLIED_TOLERANCE:.0%}")
        ax.set_yscale("log")
        if len(rows) <= MAX_LABELLED_LAYERS:
            ax.set_xticks(range(len(rows)), [row["name"] for row in rows], rotation=30, ha="right", fontsize=8)
        else:
            ax.set_xlabel("BN layer, forward order (grey: frozen, red: off)")
            if worst is not None:
                k = [row["name"] for row in rows].index(worst)
                ax.annotate(worst, (k, errs[k]), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=8)
        ax.set_ylabel("error in what the layer applies\n(90th pct over channels)")
        ax.legend(fontsize=8)
        figs["bn_statistics"] = _png(fig)
    gap = r.get("gap")
    if gap:
        values = [gap["train_metric_training_mode"], gap["train_metric_inference_mode"], gap["test_metric_inference_mode"]]
        fig, ax = figure(finding=f"Gap: mode mismatch {gap['mode_mismatch']:+.3f}, overfitting {gap['overfitting']:+.3f}",
                         width=min(FIGURE_WIDTH, 6.0))
        ax.bar(["train\ntraining mode", "train\ninference mode", "held-out\ninference mode"], values,
               color=["tab:orange", "tab:blue", "tab:green"])
        top = max(values)
        if bn:
            ax.axhline(bn["metric_recomputed"], color="k", ls=":", lw=1, label="held-out, BN statistics recomputed")
            top = max(top, bn["metric_recomputed"])
            ax.legend(fontsize=8, loc="upper right")
        ax.set_ylim(0, top * 1.3 if top > 0 else 1)     # room for the legend above the bars
        ax.set_ylabel(r["data"]["metric"])
        figs["gap"] = _png(fig)
    noise = diag.details.get("noise") or {}
    nz = r.get("noise")
    if nz and nz.get("b_simple") is not None and noise:
        b_simple = nz["b_simple"]
        lo, hi = nz["interval"]
        fig, (ax1, ax2) = figure(ncols=2, width=FIGURE_WIDTH,
                                 finding=(f"B_simple ≈ {b_simple:.0f} (90 %: {lo:.0f}–{'∞' if hi is None else f'{hi:.0f}'})"
                                          + ("" if nz["resolved"] else ": not resolved")))
        for b, norms in ((noise["b_small"], noise["small_sq_norms"]), (noise["b_big"], noise["big_sq_norms"])):
            ax1.scatter(np.full(len(norms), 1.0 / b), norms, s=10, alpha=0.5)
            ax1.scatter([1.0 / b], [np.mean(norms)], color="k", marker="_", s=300)
        inv = np.linspace(0, 1.0 / noise["b_small"] * 1.1, 50)
        ax1.plot(inv, noise["grad_norm_sq"] + noise["trace_sigma"] * inv, "k--", lw=1, label="|G|² + tr(Σ)/B")
        ax1.set_xlabel("1 / batch size")
        ax1.set_ylabel("|g_B|²")
        ax1.legend(fontsize=8)
        bs = np.logspace(0, math.log10(max(8 * b_simple, 16)), 100)
        ax2.plot(bs, 1 + b_simple / bs)
        ax2.axvspan(lo, hi if hi is not None else bs[-1], color="tab:blue", alpha=0.15, label="90 % interval")
        ax2.axvline(b_simple, color="k", ls="--", lw=1, label=f"B_simple ≈ {b_simple:.0f}")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("batch size B")
        ax2.set_ylabel("steps / S_min")
        ax2.legend(fontsize=8)
        figs["noise"] = _png(fig)
    return figs


# ---------------------------------------------------------------- text


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "none"
    return str(value)


def _rows(report: dict) -> list[tuple[str, str]]:
    rows = []
    for key in ("model", "data"):
        rows += [(f"{key}.{k}", _fmt(v)) for k, v in report[key].items()]
    for key in ("bn_statistics", "batch1", "gap", "noise", "timestep"):
        section = report.get(key)
        if section is None:
            rows.append((key, "null"))
            continue
        for k, v in section.items():
            if k in ("layers", "single_layer_changes"):
                continue
            rows.append((f"{key}.{k}", _fmt(v)))
    return rows


def _layer_rows(report: dict) -> list[list[str]]:
    bn = report.get("bn_statistics")
    if not bn:
        return []
    return [[r["name"], "yes" if r["trainable"] else "frozen", str(r["channels"]), f"{r['error_median']:.3f}",
             f"{r['error_p90']:.3f}", f"{r['scale_error_p90']:.3f}", f"{r['mean_shift_p90']:.3f}",
             _fmt(r["variance_ratio_median"]), "OFF" if r["off"] else ""] for r in bn["layers"]]


LAYER_COLUMNS = ["layer", "trainable", "channels", "error median", "error p90", "|ln divisor ratio| p90",
                 "mean shift p90 (σ)", "stored/exact variance", "off"]


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a '|' of the text is escaped, not a column break."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(diag) -> str:
    r = diag.report
    d, mdl = r["data"], r["model"]
    lines = [f"# Diagnosis of {mdl['source']}", "", f"**Verdict:** {r['verdict']}", "",
             f"Model {mdl['parameters']:,} parameters, {mdl['bn_layers']} BatchNormalization layer(s) "
             f"({mdl['frozen_bn_layers']} frozen); data {d['source']}: {d['n_train']:,} training and {d['n_test']:,} "
             f"held-out examples, {d['label_form']}, metric {d['metric']}; batch size {d['batch_size']}.", "",
             "## Findings", "", "| severity | code | finding | lesson |", "|---|---|---|---|"]
    for f in r["findings"]:
        lesson = f["lesson"]
        link = lesson_link(lesson["notebook"], lesson["section"])
        label = lesson_label(lesson["notebook"], lesson["section"])
        cell = f"[{label}]({link})" if link else f"{label} ({lesson['notebook']})"
        lines.append(f"| {f['severity']} | `{f['code']}` | {_cell(f['message'])} | {cell} |")
    rows = _layer_rows(r)
    if rows:
        lines += ["", "## BN layers", "", "| " + " | ".join(_cell(c) for c in LAYER_COLUMNS) + " |",
                  "|" + "---|" * len(LAYER_COLUMNS)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    lines += ["", "## Numbers (report.json)", "", "| key | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in _rows(r)]
    lines += ["", "## Thresholds", "", ", ".join(f"`{k}` = {v:g}" for k, v in r["thresholds"].items()),
              "", "The plots are in report.html.", ""]
    return "\n".join(lines)


CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px;background:#fff;box-sizing:border-box}
h1{font-size:1.6em;margin:0 0 .3em;overflow-wrap:anywhere}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict{font-size:1.1em;padding:12px 16px;border-radius:6px;background:#eef4ff;border-left:5px solid #3b6fd8}
.verdict.bad{background:#fff0f0;border-left-color:#c62828}
table{border-collapse:collapse;width:100%;font-size:13px;table-layout:auto}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left;overflow-wrap:anywhere}
th{background:#f0f2f5}tr.off td{background:#fff4f4}
.sev{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.error{background:#c62828}.warning{background:#ef8f00}.info{background:#607d8b}
img{max-width:100%;height:auto;display:block;margin:8px 0}code{font-size:12px}
.scroll{max-width:100%;overflow-x:auto}
"""


def render_html(diag) -> str:
    r = diag.report
    e = html.escape
    bad = any(f["severity"] == "error" for f in r["findings"])
    d, mdl = r["data"], r["model"]
    parts = [f"<h1>Diagnosis of {e(mdl['source'])}</h1>",
             f"<p class='verdict{' bad' if bad else ''}'>{e(r['verdict'])}</p>",
             f"<p>Model: {mdl['parameters']:,} parameters, {mdl['bn_layers']} BatchNormalization layer(s) "
             f"({mdl['frozen_bn_layers']} frozen). Data: {e(d['source'])}, {d['n_train']:,} training and "
             f"{d['n_test']:,} held-out examples, {e(d['label_form'])}; metric {e(d['metric'])}; batch size "
             f"{d['batch_size']}.</p>", "<h2>Findings</h2><div class='scroll'><table>",
             "<tr><th>severity</th><th>code</th><th>finding</th><th>lesson</th></tr>"]
    for f in r["findings"]:
        lesson = f["lesson"]
        link = lesson_link(lesson["notebook"], lesson["section"])
        label = e(lesson_label(lesson["notebook"], lesson["section"]))
        cell = f"<a href='{e(link)}'>{label}</a>" if link else f"{label} <code>{e(lesson['notebook'])}</code>"
        parts.append(f"<tr><td><span class='sev {e(f['severity'])}'>{e(f['severity'])}</span></td>"
                     f"<td><code>{e(f['code'])}</code></td><td>{e(f['message'])}</td><td>{cell}</td></tr>")
    parts.append("</table></div>")
    if diag.figures:
        parts.append("<h2>Plots</h2>")
        for name, png in diag.figures.items():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<img alt="{e(name)}" src="data:image/png;base64,{data}">')
    rows = _layer_rows(r)
    if rows:
        parts.append("<h2>BN layers</h2><div class='scroll'><table><tr>"
                     + "".join(f"<th>{e(c)}</th>" for c in LAYER_COLUMNS) + "</tr>")
        parts += [f"<tr{' class=off' if row[-1] else ''}>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                  for row in rows]
        parts.append("</table></div>")
    parts.append("<h2>Numbers (report.json)</h2><div class='scroll'><table><tr><th>key</th><th>value</th></tr>")
    parts += [f"<tr><td><code>{e(k)}</code></td><td>{e(v)}</td></tr>" for k, v in _rows(r)]
    parts.append("</table></div><h2>Thresholds</h2><p>"
                 + ", ".join(f"<code>{e(k)}</code> = {v:g}" for k, v in r["thresholds"].items()) + "</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>Diagnosis of {e(mdl['source'])}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")


def write_report(diag, out_dir) -> Path:
    """Write report.json, report.md, report.html into out_dir: built in a temporary folder beside it and
    moved into place at the end, so a failure leaves out_dir as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)          # mkdtemp makes 0700: the report folder is an ordinary one
    try:
        (tmp / "report.json").write_text(report_json(diag), encoding="utf-8")
        (tmp / "report.md").write_text(diag.markdown, encoding="utf-8")
        (tmp / "report.html").write_text(diag.html, encoding="utf-8")
        if out_dir.exists():
            for name in ("report.json", "report.md", "report.html"):
                os.replace(tmp / name, out_dir / name)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
