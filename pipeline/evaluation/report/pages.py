"""The HTML page of an evaluation report, ``report.html``, and the tables it shares.

``summary.md`` and the terminal's table are rendered by :mod:`pipeline.evaluation.report.text`.

See :mod:`pipeline.evaluation.report.writer` for the files and the data they are rendered
from. The HTML
page is one file, no network: inline CSS, no JS, every picture a base64 PNG data URI. All text
that comes from data (case ids, paths, error messages) is HTML-escaped. It links each case to
its slice viewer page, ``viewer/<case>.html`` (:mod:`pipeline.evaluation.report.viewer`),
when the writer found one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from pipeline.evaluation.lesions import SIZE_BINS
from pipeline.evaluation.report.figures import (
    OverlaySlice,
    burden_scatter,
    dice_bar_chart,
    dice_strip_plot,
    overlay_figure,
    png_data_uri,
    training_curves,
)
from pipeline.evaluation.report.model import CLASS_NAMES, EMPTY_CASE_POLICY, CaseEntry

__all__ = ["class_table", "fmt", "lesion_table", "render_html", "worst_first"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1300px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; }
th { background: #f0f0f0; text-align: center; } td:first-child { text-align: left; }
td { white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
td.bad { background: #f8d0d0 !important; } td.fair { background: #fbe9c6 !important; }
td.failed { background: #f8d0d0 !important; text-align: left; white-space: pre-wrap;
            font-family: monospace; font-size: 0.85em; }
td.missing { background: #eee !important; text-align: left; color: #555; }
.note { color: #555; font-size: 0.88em; max-width: 75em; }
.alert { background: #fdecea; border: 1px solid #e0a0a0; padding: 0.6em 1em; }
.alert { margin-top: 1em; } .alert .reason { white-space: pre-wrap; font-family: monospace;
       font-size: 0.85em; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
img { max-width: 100%; height: auto; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #444; }
nav a { margin-right: 1em; } code { font-size: 0.95em; }
table.prov td, table.prov th { text-align: left; white-space: normal; }
td.absent { color: #888; font-style: italic; }
"""


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``n/a`` for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _mean_sd(stats: Mapping[str, Any], digits: int, pm: str) -> str:
    if stats["mean"] is None or (isinstance(stats["mean"], float) and math.isnan(stats["mean"])):
        return "n/a"
    sd = stats["sd"]
    has_sd = sd is not None and not (isinstance(sd, float) and math.isnan(sd))
    return fmt(stats["mean"], digits) + (f" {pm} {fmt(sd, digits)}" if has_sd else "")


def class_table(summary: Mapping[str, Any], pm: str = "±") -> tuple[list[str], list[list[str]]]:
    """Header and rows (liver, tumour) of the per-class metric table.

    Args:
        summary: The summary of :func:`write_report` (``summary.json``).
        pm: The plus-minus sign between mean and standard deviation.

    Returns:
        Column names and one row of formatted strings per class. Surface metrics show
        ``(n=k)`` when defined on fewer cases than were scored.
    """
    nsd = fmt(summary["nsd_tolerance_mm"], 1)
    header = [
        "class", "n", f"Dice mean {pm} sd", "Dice median", "Dice global", "IoU", "VOE", "RVD",
        "ASSD (mm)", "HD95 (mm)", f"NSD@{nsd}mm",
    ]  # fmt: skip
    rows = []
    for name in CLASS_NAMES:
        s = summary[name]
        n = summary["n_cases"]
        row = [name, str(n), _mean_sd(s["dice"], 3, pm), fmt(s["dice"]["median"])]
        row += [fmt(s["dice_global"])] + [_mean_sd(s[k], 3, pm) for k in ("iou", "voe", "rvd")]
        for key, digits in (("assd", 2), ("hd95", 2), ("nsd", 3)):
            text = _mean_sd(s[key], digits, pm)
            defined = s[key]["n"]
            row.append(text + (f" (n={defined})" if defined < n and text != "n/a" else ""))
        rows.append(row)
    return header, rows


def lesion_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the lesion detection table (per size bin and overall).

    TP and FN count reference lesions binned by reference size; FP counts predicted
    lesions touching no reference lesion, binned by predicted size.
    """
    header = ["size", "n ref"]
    for crit in ("IoU>0.5", "any overlap"):
        header += [f"{crit} {k}" for k in ("TP", "FP", "FN", "precision", "recall", "F1")]
    lesions = summary["lesions"]
    rows = []
    for name in (*SIZE_BINS, "all"):
        row = [name]
        if name == "all":
            row.append(str(lesions["n_ref"]))
            counts = [
                (lesions[c]["tp"], lesions[c]["fp"], lesions[c]["fn"]) for c in ("iou", "any")
            ]
        else:
            b = lesions["by_size"][name]
            row.append(str(b["n_ref"]))
            counts = [(b[k], b["fp"], b["n_ref"] - b[k]) for k in ("tp_iou", "tp_any")]
        for tp, fp, fn in counts:
            precision = tp / (tp + fp) if tp + fp else math.nan
            recall = tp / (tp + fn) if tp + fn else math.nan
            f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
            row += [str(tp), str(fp), str(fn), fmt(precision), fmt(recall), fmt(f1)]
        rows.append(row)
    return header, rows


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _lesion_table_html(summary: Mapping[str, Any]) -> str:
    """The lesion table with one header group per detection criterion."""
    header, rows = lesion_table(summary)
    groups = "".join(
        f'<th colspan="6">{name}</th>' for name in ("IoU &gt; 0.5 (LiTS)", "any overlap")
    )
    sub = "".join(f"<th>{h.split()[-1]}</th>" for h in header[2:])
    head = f'<tr><th rowspan="2">size</th><th rowspan="2">n ref</th>{groups}</tr><tr>{sub}</tr>'
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{png_data_uri(png)}" alt="{escape(alt)}">'


def _case_score(entry: CaseEntry) -> float:
    values = [entry.result[f"{c}_dice"] for c in ("liver", "tumour")]
    return float(sum(values) / len(values))


def worst_first(cases: Sequence[CaseEntry]) -> list[int]:
    """Indices of ``cases`` ordered by the mean of liver and tumour Dice, lowest first."""
    return sorted(range(len(cases)), key=lambda i: (_case_score(cases[i]), cases[i].case_id))


def _dice_cell(value: Any) -> str:
    cls = "" if _nan(value) else "bad" if value < 0.5 else "fair" if value < 0.8 else ""
    return f'<td class="{cls}">{fmt(value)}</td>'


def _viewer_link(href: str | None, text: str) -> str:
    return f'<a href="{escape(href)}">{text}</a>' if href else ""


def _qc_cell(qc: Mapping[str, Any] | None) -> str:
    """The inference's quality-control verdict, its reasons on hover (empty if unknown)."""
    if not qc:
        return "<td></td>"
    verdict = str(qc.get("verdict", ""))
    reasons = escape("\n".join(qc.get("reasons", [])))
    css = {"warn": "fair", "fail": "bad"}.get(verdict, "")
    return f'<td class="{css}" title="{reasons}">{escape(verdict)}</td>'


def _case_rows(
    data: Mapping[str, Any],
    cases: Sequence[CaseEntry],
    order: Sequence[int],
    viewers: Mapping[str, str],
) -> list[str]:
    n_columns = 17
    rows = []
    # Unscored cases first: a reader scanning the top of the table sees them at once.
    for kind in ("failures", "missing"):
        for case in data[kind]:
            label = "failed" if kind == "failures" else "missing"
            rows.append(
                f"<tr><td>{escape(case['case_id'])}</td><td class='{label}' "
                f"colspan='{n_columns - 1}'>{label}: {escape(case['reason'])}</td></tr>"
            )
    for i in order:
        entry, r = cases[i], cases[i].result
        anchor = f"case-{i}"
        cells = [f'<td><a href="#{anchor}">{escape(entry.case_id)}</a></td>']
        cells += [_dice_cell(_case_score(entry)), _dice_cell(r["liver_dice"])]
        cells += [f"<td>{fmt(r[k], 2)}</td>" for k in ("liver_assd", "liver_hd95")]
        cells.append(_dice_cell(r["tumour_dice"]))
        cells += [f"<td>{fmt(r[k], 2)}</td>" for k in ("tumour_assd", "tumour_hd95")]
        cells.append(f"<td>{fmt(r['tumour_nsd'])}</td>")
        cells += [
            f"<td>{int(r[k])}</td>"
            for k in ("lesion_n_ref", "lesion_tp_iou", "lesion_tp_any", "lesion_fp")
        ]
        cells += [
            f"<td>{fmt(100 * r[k] if not _nan(r[k]) else r[k], 2)}</td>"
            for k in ("tumour_burden_ref", "tumour_burden_pred")
        ]
        cells.append(_qc_cell(entry.qc))
        cells.append(f"<td>{_viewer_link(viewers.get(entry.case_id), 'slices')}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def _provenance(prov: Mapping[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, Mapping):
            if {"path", "sha256"} <= set(v):
                return f"<code>{escape(str(v['path']))}</code> (SHA-256 {escape(str(v['sha256']))})"
            return ", ".join(f"{escape(str(k))} {escape(str(x))}" for k, x in v.items())
        if isinstance(v, list):
            return "<br>".join(value(x) for x in v)
        return f"<code>{escape(str(v))}</code>" if "/" in str(v) else escape(str(v))

    # The fields a reader looks for first, shown even when absent; the rest as recorded.
    first = ("date", "checkpoint", "checkpoint_sha256", "configs", "dataset")
    keys = [*first, *(k for k in prov if k not in first and k != "packages"), "packages"]
    rows = "".join(
        f"<tr><th>{escape(str(k))}</th>"
        + (f"<td>{value(prov[k])}</td>" if k in prov else '<td class="absent">not recorded</td>')
        + "</tr>"
        for k in keys
    )
    return f'<table class="prov">{rows}</table>'


def render_html(
    summary: Mapping[str, Any],
    data: Mapping[str, Any],
    cases: Sequence[CaseEntry],
    overlays: Sequence[OverlaySlice | None],
    viewers: Mapping[str, str] | None = None,
) -> str:
    """The report page.

    Args:
        summary: The content of ``summary.json``.
        data: The content of ``cases.json`` (provenance, failures, missing, training).
        cases: Scored cases, in ``cases.json`` order.
        overlays: One overlay slice (or None) per case, same order.
        viewers: ``{case_id: relative link}`` of the cases' slice viewer pages; a case
            without one has no link.

    Returns:
        The HTML text.
    """
    prov = data["provenance"]
    viewers = viewers or {}
    n, n_failed, n_missing = summary["n_cases"], summary["n_failed"], summary["n_missing"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Liver / tumour evaluation ({n} cases)</title><style>{_CSS}</style></head><body>",
        "<h1>Liver and liver-tumour segmentation: evaluation</h1>",
        f"<p><b>{n}</b> cases scored, <b>{n_failed}</b> failed, <b>{n_missing}</b> missing"
        f" &middot; {escape(str(prov.get('date', '')))}"
        " &middot; liver = label &ge; 1, tumour = label 2 (LiTS)</p>",
        '<nav><a href="#classes">per class</a><a href="#lesions">lesions</a>'
        '<a href="#burden">burden</a><a href="#cases">cases</a><a href="#overlays">overlays</a>'
        '<a href="#training">training</a><a href="#provenance">provenance</a></nav>',
    ]
    if n_failed or n_missing:
        items = [
            f"<li><b>{escape(c['case_id'])}</b> ({label}): "
            f"<span class='reason'>{escape(c['reason'])}</span></li>"
            for key, label in (("failures", "failed"), ("missing", "missing"))
            for c in data[key]
        ]
        out.append(
            f'<div class="alert"><b>{n_failed} failed and {n_missing} missing cases are not'
            f" in the numbers below.</b><ul>{''.join(items)}</ul></div>"
        )

    out.append('<h2 id="classes">Per-class metrics</h2>')
    out.append(_table(*class_table(summary)))
    out.append(
        '<p class="note">Mean &plusmn; sample sd over cases; Dice global pools voxels over all'
        " cases (2&Sigma;|P&cap;G| / &Sigma;(|P|+|G|)). VOE = 1 &minus; IoU; RVD = (|P| &minus;"
        " |G|) / |G|. Distances in mm from the voxel spacing; NSD counts surface voxels within"
        f" the tolerance. <b>Empty-case policy:</b> {escape(EMPTY_CASE_POLICY)}</p>"
    )
    if cases:
        dice = {c: [e.result[f"{c}_dice"] for e in cases] for c in ("liver", "tumour")}
        out.append(
            f'<div class="figs">{_img(dice_bar_chart(summary), "Dice per class")}'
            f"{_img(dice_strip_plot(dice), 'Dice per case')}</div>"
        )

    out.append('<h2 id="lesions">Lesion detection</h2>')
    out.append(_lesion_table_html(summary))
    out.append(
        '<p class="note">Lesions are 26-connected components of the tumour mask, sized by'
        " equivalent-sphere diameter. A reference lesion counts as detected (TP) when the"
        " predicted components overlapping it reach IoU &gt; 0.5 together (LiTS), or share a"
        " voxel (any overlap). TP and FN are binned by reference size, FP (predicted lesions"
        " touching no reference lesion) by predicted size.</p>"
    )

    out.append('<h2 id="burden">Tumour burden</h2>')
    rows = [
        [name]
        + [fmt(100 * s[k] if not _nan(s[k]) else None, 2) for k in ("mean", "sd", "median")]
        + [str(s["n"])]
        for name, s in (
            ("reference", summary["burden"]["ref"]),
            ("prediction", summary["burden"]["pred"]),
            ("absolute error", summary["burden"]["abs_error"]),
        )
    ]
    out.append('<div class="figs"><div>')
    out.append(_table(["tumour / liver volume (%)", "mean", "sd", "median", "n"], rows))
    out.append('<p class="note">Burden is undefined (n/a) for a case without liver.</p></div>')
    if cases:
        ref = [e.result["tumour_burden_ref"] for e in cases]
        pred = [e.result["tumour_burden_pred"] for e in cases]
        out.append(_img(burden_scatter(ref, pred), "tumour burden"))
    out.append("</div>")

    order = worst_first(cases)
    out.append('<h2 id="cases">Cases, worst first</h2>')
    out.append(
        '<p class="note">Sorted by the mean of liver and tumour Dice (lowest first); failed and'
        " missing cases on top. Red: Dice &lt; 0.5, amber: &lt; 0.8. Distances in mm, burden in"
        " % of liver volume. QC: the inference's quality-control verdict on the scan and its"
        " mask (hover for the reasons). Click a case for its overlay, <i>slices</i> to scroll"
        " through it in the slice viewer.</p>"
    )
    header = [
        "case", "mean Dice", "liver Dice", "liver ASSD", "liver HD95", "tumour Dice",
        "tumour ASSD", "tumour HD95", "tumour NSD", "ref lesions", "TP IoU>0.5",
        "TP any", "FP lesions", "burden ref %", "burden pred %", "QC", "viewer",
    ]  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in header)
    out.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
    out += _case_rows(data, cases, order, viewers)
    out.append("</tbody></table>")

    out.append('<h2 id="overlays">Overlays, worst first</h2>')
    out.append(
        '<p class="note">Axial slices in radiological convention (patient\'s right on the'
        " image left, anterior up). Green liver, red tumour; on the last panel the reference is"
        " outlined solid and the prediction dashed. Click an overlay to scroll through the"
        " case in the slice viewer (axial, coronal, sagittal).</p>"
    )
    for i in order:
        entry, overlay = cases[i], overlays[i]
        caption = f"{escape(entry.case_id)}: liver Dice {fmt(entry.result['liver_dice'])}, "
        caption += f"tumour Dice {fmt(entry.result['tumour_dice'])}"
        caption += "".join(f"; {escape(note)}" for note in entry.notes)
        href = viewers.get(entry.case_id)
        picture = (
            _img(overlay_figure(overlay, entry.case_id), f"overlay {entry.case_id}")
            if overlay is not None
            else "<p>(overlay unavailable: volumes not found)</p>"
        )
        if href:
            picture = _viewer_link(href, picture)
            caption += " &middot; " + _viewer_link(href, "open the slice viewer")
        out.append(f'<figure id="case-{i}">{picture}<figcaption>{caption}</figcaption></figure>')

    out.append('<h2 id="training">Training</h2>')
    training = data.get("training_metrics")
    if training and training.get("rows"):
        out.append(_img(training_curves(training["rows"]), "training curves"))
        out.append(f'<p class="note">From <code>{escape(training["path"])}</code>.</p>')
    elif training:
        out.append(f"<p>Training metrics <code>{escape(training['path'])}</code>: not found.</p>")
    else:
        out.append("<p>No training metrics given.</p>")

    out.append('<h2 id="provenance">Provenance</h2>')
    out.append(_provenance(prov))
    out.append("</body></html>\n")
    return "\n".join(out)
