"""The HTML report of `sgedge eval`: one bar chart (inline SVG) per metric, the tables,
and sample answers. Self-contained: no scripts, no external files."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sgedge._fs import atomic_path

METRICS = [
    ("harmful_refusal_rate", "Harmful prompts refused", True, "higher is safer"),
    ("over_refusal_rate", "Benign prompts refused (over-refusal)", True, "lower is better"),
    ("jailbreak_asr", "Jailbreak attack success", True, "lower is safer"),
    ("qa_exact_match", "Exact-match accuracy on questions", True, "utility: higher is better"),
    ("perplexity", "Perplexity on benign text", False, "utility: lower is better"),
    ("decode_tok_s", "Decode speed (tokens/s, median)", False, "higher is faster"),
    ("prefill_tok_s", "Prefill speed (tokens/s, median)", False, "higher is faster"),
]
COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#4a5568"]


def bar_chart(values: list[tuple[str, float]], percent: bool,
              intervals: list[list[float] | None] | None = None) -> str:
    """Horizontal bars with their values; a rate's 95% interval is drawn as a whisker."""
    w, bar_h, gap, left = 640, 26, 10, 170
    h = len(values) * (bar_h + gap) + gap
    top = 1.0 if percent else max([v for _, v in values] + [1e-9]) * 1.1
    scale = (w - left - 150) / top if top else 0.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">']
    for i, (name, v) in enumerate(values):
        y = gap + i * (bar_h + gap)
        bw = scale * v
        ci = intervals[i] if intervals else None
        label = f"{v:.1%}" if percent else f"{v:g}"
        if ci:
            label += f" (95% CI {ci[0]:.0%}-{ci[1]:.0%})"
        parts.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7}" text-anchor="end" font-size="13">'
                     f"{html.escape(name)}</text>")
        parts.append(f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{COLORS[i % len(COLORS)]}"/>')
        end = left + bw
        if ci:
            lo, hi, mid = left + scale * ci[0], left + scale * ci[1], y + bar_h / 2
            parts.append(f'<path class="ci" d="M{lo:.1f} {mid:.1f}H{hi:.1f}M{lo:.1f} {mid - 6:.1f}V{mid + 6:.1f}'
                         f'M{hi:.1f} {mid - 6:.1f}V{mid + 6:.1f}" stroke="#222" stroke-width="1.5" fill="none"/>')
            end = max(end, hi)
        parts.append(f'<text x="{end + 6:.1f}" y="{y + bar_h * 0.7}" font-size="13">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cell(entry: dict[str, Any], key: str) -> str:
    ci = entry.get("ci95")
    return f"{entry[key]:.1%}" + (f" <span class='n'>({ci[0]:.0%}-{ci[1]:.0%})</span>" if ci else "")


def render(results: dict[str, Any]) -> str:
    s = results["summary"]
    names = s["configs"]
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>sgedge eval</title>",
           "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
           "font-size:13px;text-align:left;vertical-align:top}h2{margin-top:1.6em}.n{color:#666}</style></head><body>",
           "<h1>sgedge eval</h1>",
           f"<p>Target: <code>{html.escape(s['target'])}</code> · backend {html.escape(s['backend'])} · "
           f"judge {html.escape(s['judge']['judge'])} · greedy, at most {s['max_tokens']} tokens · "
           f"{s['seconds']} s</p>",
           "<p class='n'>Rates show their sample size and 95% confidence interval (Wilson)"
           + ("; refusals are judged by keyword matching (refusal phrases), not by each benchmark's own grader"
              if str(s["judge"]["judge"]).startswith("keywords") else "") + ".</p>"]
    out.append("<table><tr><th>task</th><th>source</th><th>prompts</th><th>skipped (longer than the context)</th></tr>")
    for t in s["tasks"]:
        out.append(f"<tr><td>{t['kind']}</td><td>{html.escape(t['source'])}</td><td>{t['n']}</td>"
                   f"<td>{t.get('skipped_too_long', 0)}</td></tr>")
    out.append("</table>")
    for key, title, percent, hint in METRICS:
        shown = [n for n in names if s["metrics"][n][key] is not None]
        if not shown:
            continue
        vals = [(n, s["metrics"][n][key]) for n in shown]
        cis = [s["metrics"][n].get("ci95", {}).get(key) for n in shown]
        count = s["metrics"][shown[0]].get("n", {}).get(key)
        sample = f" · n={count} prompts per configuration" if count else ""
        out.append(f"<h2>{html.escape(title)}</h2><p class='n'>{hint}{sample}</p>{bar_chart(vals, percent, cis)}")
    for group, key, title in (("harmful_by_file", "refusal_rate", "Refusal rate per harmful file"),
                              ("benign_by_file", "refusal_rate", "Refusal rate per benign file"),
                              ("qa_by_file", "exact_match", "Exact match per question file")):
        srcs = list(s["metrics"][names[0]][group]) if names else []
        if not srcs:
            continue
        out.append(f"<h2>{title}</h2><table><tr><th>file</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)
                   + "</tr>")
        for src in srcs:
            cells = "".join(f"<td>{_cell(s['metrics'][n][group][src], key)}</td>" for n in names)
            out.append(f"<tr><td>{html.escape(src)} <span class='n'>(n={s['metrics'][names[0]][group][src]['n']})"
                       f"</span></td>{cells}</tr>")
        out.append("</table>")
    out.append("<h2>Sample answers</h2>")
    for task, per_cfg in results["answers"].items():
        out.append(f"<h3>{html.escape(task)}</h3><table><tr><th>prompt</th>"
                   + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
        for i in range(min(5, len(per_cfg[names[0]]))):
            out.append(f"<tr><td>{html.escape(per_cfg[names[0]][i]['prompt'][:300])}</td>"
                       + "".join(f"<td>{html.escape(per_cfg[n][i]['answer'][:300])}</td>" for n in names) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(results: dict[str, Any], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(render(results), encoding="utf-8")
