"""The board as HTML, rendered from `Board.snapshot()` only — so the live page, the notebook
and `/board.json` can never disagree. The live page fetches `/api/board` (the snapshot plus this
fragment) and swaps the fragment in without reloading."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """<style>
.mlb { font: 14px/1.35 system-ui, sans-serif; color: #1d2430; }
.mlb table { border-collapse: collapse; }
.mlb th, .mlb td { border: 1px solid #c9ced6; padding: 6px 9px; vertical-align: top;
  text-align: left; }
.mlb thead th { background: #27324a; color: #fff; }
.mlb tbody th small, .mlb .mlb-meta { color: #5b6472; font-weight: normal; }
.mlb-cell { min-width: 13em; }
.mlb-complete { background: #d4f1d9; }
.mlb-partial { background: #fdeec8; }
.mlb-failing { background: #f9d3d0; }
.mlb-pending { background: #eceff3; color: #5b6472; }
.mlb-unreachable, .mlb-error { background: #d9dce1; color: #5a1a14; }
.mlb-count { font-weight: 600; font-size: 15px; }
.mlb ul, .mlb ol { margin: 4px 0 0 0; padding-left: 1.2em; }
.mlb code { font-size: 12px; }
.mlb-reason { color: #6b2a22; }
.mlb-since { color: #5b6472; font-style: italic; }
.mlb-fails code { color: #8a1c12; }
.mlb-fails .mlb-reason { display: block; max-width: 46em; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; font-size: 12px; }
.mlb tfoot th, .mlb tfoot td { background: #f5f6f8; }
</style>"""


def fragment(snapshot: dict[str, Any]) -> str:
    """The grid: a row per student, a column per lab, and a "stuck" row under each lab."""
    labs = snapshot["labs"]
    head = "".join(f'<th data-lab="{escape(lab["id"])}">{escape(lab["id"])}</th>'
                   for lab in labs)
    rows = "".join(_row(student, labs) for student in snapshot["students"])
    everyone = len(snapshot["students"])
    stuck = "".join(f'<td class="mlb-stuck" data-lab="{escape(lab["id"])}">'
                    f"{_stuck(lab, everyone)}</td>" for lab in labs)
    return (f'<div class="mlb"><p class="mlb-meta">{_meta(snapshot)}</p><table>'
            f"<thead><tr><th>student</th>{head}</tr></thead><tbody>{rows}</tbody>"
            f"<tfoot><tr><th>stuck<br><small>checks most students fail</small></th>{stuck}"
            "</tr></tfoot></table></div>")


def page(refresh_seconds: float) -> str:
    """The live page: empty until its script has fetched `/api/board`, then refreshed every
    `refresh_seconds` (open details stay open)."""
    script = """
const board = document.getElementById('board'), status = document.getElementById('status');
async function refresh() {
  try {
    const response = await fetch('/api/board', {cache: 'no-store'});
    const data = await response.json();
    const open = [...board.querySelectorAll('details[open]')].map(d => d.dataset.key);
    board.innerHTML = data.html;
    for (const d of board.querySelectorAll('details')) d.open = open.includes(d.dataset.key);
    status.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = 'the board server does not answer (' + error + '); retrying';
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
""".replace("REFRESH_MS", json.dumps(max(1000, int(refresh_seconds * 1000))))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>meshlab board</title>{STYLE}</head><body class=\"mlb\">"
            '<h1>meshlab — instructor board</h1><p id="status" class="mlb-meta">loading…</p>'
            f'<div id="board"></div><script>{script}</script></body></html>')


def _meta(snapshot: dict[str, Any]) -> str:
    parts = [_count(len(snapshot["students"]), "student"), _count(len(snapshot["labs"]), "lab"),
             f"as of {snapshot['generated']}"]
    if snapshot["interval"]:
        parts.append(f"re-checked every {snapshot['interval']:g}s")
    if snapshot["last_round_seconds"] is not None:
        parts.append(f"last round took {snapshot['last_round_seconds']:.1f}s")
    else:
        parts.append("first round running")
    return escape(" · ".join(parts))


def _row(student: dict[str, Any], labs: list[dict[str, Any]]) -> str:
    name = escape(student["name"])
    header = f"<th>{name}<br><small>{escape(student['target'])}</small></th>"
    if student["state"] in ("unreachable", "error"):
        return (f'<tr data-student="{name}">{header}<td class="mlb-cell mlb-{student["state"]}" '
                f'data-student="{name}" colspan="{len(labs)}">'
                f"{escape(student['reason'] or '')}</td></tr>")
    cells = "".join(_cell(name, lab["id"], student["labs"][lab["id"]]) for lab in labs)
    return f'<tr data-student="{name}">{header}{cells}</tr>'


def _cell(name: str, lab: str, cell: dict[str, Any]) -> str:
    key = escape(f"{name}/{lab}")
    attrs = f'class="mlb-cell mlb-{cell["state"]}" data-student="{name}" data-lab="{escape(lab)}"'
    if cell["state"] == "pending":
        return f"<td {attrs}>not checked yet</td>"
    summary = (f'<div class="mlb-count">{cell["passed"]}/{cell["total"]} checks</div>'
               f'<div>{cell["earned"]:g}/{cell["possible"]:g} points</div>')
    if not cell["failing"] and not cell["other"]:
        return f"<td {attrs}>{summary}</td>"
    failing = "".join(f'<li title="{escape(f["reason"])}"><code>{escape(f["id"])}</code> '
                      f'<span class="mlb-since">failing {duration(f["failing_for"])}</span>'
                      f'<span class="mlb-reason">{escape(f["reason"])}</span></li>'
                      for f in cell["failing"])
    reasons = [f"<li><code>{escape(f['id'])}</code> failing since {escape(f['since'])}: "
               f"<span class=\"mlb-reason\">{escape(f['reason'])}</span></li>"
               for f in cell["failing"]]
    reasons += [f"<li><code>{escape(o['id'])}</code> {escape(o['status'])}: "
                f"{escape(o['reason'])}</li>" for o in cell["other"]]
    tooltip = "\n".join(f"{f['id']}: {f['reason']}" for f in cell["failing"])
    return (f'<td {attrs} title="{escape(tooltip)}">{summary}'
            f'<ul class="mlb-fails">{failing}</ul><details data-key="{key}">'
            f"<summary>why</summary><ul>{''.join(reasons)}</ul></details></td>")


def _stuck(lab: dict[str, Any], students: int) -> str:
    if not lab["stuck"]:
        return "nobody is stuck"
    items = []
    for entry in lab["stuck"]:
        who = ", ".join(f"{escape(s['name'])} ({duration(s['failing_for'])})"
                        for s in entry["students"])
        items.append(f"<li title=\"{escape(entry['description'])}\"><code>"
                     f"{escape(entry['id'])}</code> — {entry['failing']} of {students}: {who}</li>")
    return f"<ol>{''.join(items)}</ol>"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def duration(seconds: float) -> str:
    """`75` → `1m 15s`; `3700` → `1h 01m`."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
